/*
 * test/test_ctx.c - execution contexts (lib/ctx.h): switching between main
 * and made contexts, many contexts, deep stacks, exits and stack reuse, the
 * floating-point control words, unwinding, threads, and the cost of a
 * switch.
 *
 * These run under ASan and TSan too, where they check that the fiber
 * annotations leave the sanitizers with nothing to report.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "harness.h"

#include "../lib/ctx.h"
#include "../lib/stack.h"

#include <execinfo.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define KIB ((size_t)1024)

static nest__stack_pool pool;
static nest__ctx main_ctx;

/* A context with a pool stack. */
typedef struct tctx {
    nest__ctx ctx;
    nest__stack *stack;
} tctx;

static void tctx_make(tctx *t, size_t size, void (*entry)(void)) {
    t->stack = nest__stack_get(&pool, size);
    CHECK(t->stack);
    nest__ctx_make(&t->ctx, t->stack->lo, t->stack->size, entry);
}

static void tctx_free(tctx *t) {
    nest__ctx_destroy(&t->ctx);
    nest__ctx_destroy(&t->ctx); /* idempotent */
    CHECK_EQ(nest__stack_put(&pool, t->stack), 0);
}

static void setup(void) {
    nest__stack_pool_init(&pool);
    nest__ctx_init_main(&main_ctx);
}

static void teardown(void) {
    nest__stack_pool_destroy(&pool);
}

/* ---- Ping-pong: main -> a -> b -> main, three rounds. ---- */

static tctx a, b;
static char trace[64];
static int ntrace, done;

static void note(char c) {
    CHECK(ntrace < (int)sizeof trace - 1);
    trace[ntrace++] = c;
}

static void a_entry(void) {
    while (!done) {
        note('a');
        nest__ctx_switch(&a.ctx, &b.ctx);
    }
    note('A');
    nest__ctx_exit_to(&a.ctx, &main_ctx);
}

static void b_entry(void) {
    while (!done) {
        note('b');
        nest__ctx_switch(&b.ctx, &main_ctx);
    }
    note('B');
    nest__ctx_exit_to(&b.ctx, &main_ctx);
}

NEST_TEST(ping_pong_main_and_two) {
    setup();
    tctx_make(&a, 64 * KIB, a_entry);
    tctx_make(&b, 64 * KIB, b_entry);
    for (int i = 0; i < 3; i++) {
        note('m');
        nest__ctx_switch(&main_ctx, &a.ctx);
    }
    done = 1;
    nest__ctx_switch(&main_ctx, &a.ctx);
    nest__ctx_switch(&main_ctx, &b.ctx);
    CHECK_STREQ(trace, "mabmabmabAB");
    tctx_free(&a);
    tctx_free(&b);
    teardown();
}

/* Locals survive switches, on both sides. */
static tctx c1;
static long c1_sum;

static void c1_entry(void) {
    volatile long local[64];
    for (int i = 0; i < 64; i++) local[i] = i * 3;
    for (int round = 0; round < 100; round++) {
        nest__ctx_switch(&c1.ctx, &main_ctx);
        for (int i = 0; i < 64; i++) CHECK_EQ(local[i], i * 3 + round);
        for (int i = 0; i < 64; i++) local[i]++;
    }
    for (int i = 0; i < 64; i++) c1_sum += local[i];
    nest__ctx_exit_to(&c1.ctx, &main_ctx);
}

NEST_TEST(locals_and_callee_saved_registers_survive) {
    setup();
    tctx_make(&c1, 64 * KIB, c1_entry);
    volatile long mine[16];
    for (int i = 0; i < 16; i++) mine[i] = -i;
    /* Keep values live in callee-saved registers across the switches. */
    long r1 = 0x1111, r2 = 0x2222, r3 = 0x3333, r4 = 0x4444, r5 = 0x5555, r6 = 0x6666;
    for (int round = 0; round <= 100; round++) {
        nest__ctx_switch(&main_ctx, &c1.ctx);
        r1 += round, r2 ^= round, r3 -= round, r4 += 2 * round, r5 ^= 3 * round, r6 += r1;
        for (int i = 0; i < 16; i++) CHECK_EQ(mine[i], -i);
    }
    long want1 = 0x1111, want2 = 0x2222, want3 = 0x3333, want4 = 0x4444, want5 = 0x5555,
         want6 = 0x6666;
    for (int round = 0; round <= 100; round++)
        want1 += round, want2 ^= round, want3 -= round, want4 += 2 * round, want5 ^= 3 * round,
            want6 += want1;
    CHECK_EQ(r1, want1);
    CHECK_EQ(r2, want2);
    CHECK_EQ(r3, want3);
    CHECK_EQ(r4, want4);
    CHECK_EQ(r5, want5);
    CHECK_EQ(r6, want6);
    long want = 0;
    for (int i = 0; i < 64; i++) want += i * 3 + 100;
    CHECK_EQ(c1_sum, want);
    tctx_free(&c1);
    teardown();
}

/* ---- Many contexts, round-robin, each finishing with exit_to. ---- */

enum { MANY = 2000, ROUNDS = 20 };
static tctx many[MANY];
static int many_count[MANY];
static int many_cur;

static void many_entry(void) {
    int me = many_cur;
    for (int r = 0; r < ROUNDS; r++) {
        CHECK_EQ(many_cur, me);
        many_count[me]++;
        nest__ctx_switch(&many[me].ctx, &main_ctx);
    }
    nest__ctx_exit_to(&many[me].ctx, &main_ctx);
}

NEST_TEST(many_contexts_round_robin) {
    setup();
    for (int i = 0; i < MANY; i++) tctx_make(&many[i], 16 * KIB, many_entry);
    for (int r = 0; r <= ROUNDS; r++)
        for (int i = 0; i < MANY; i++) {
            many_cur = i;
            nest__ctx_switch(&main_ctx, &many[i].ctx);
        }
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(many_count[i], ROUNDS);
        tctx_free(&many[i]);
    }
    teardown();
}

/* ---- Deep recursion that stays within the stack. ---- */

static tctx deep;
static long deep_result;

static long depth(int n) {
    volatile char pad[200];
    pad[0] = (char)n;
    pad[199] = (char)n;
    if (n == 0) return 0;
    return depth(n - 1) + pad[0] - pad[199] + 1;
}

#if defined(NEST_CTX_ASAN)
#define DEEP 60 /* clang's ASan frames of depth() are about 500 bytes */
#else
#define DEEP 150
#endif

static void deep_entry(void) {
    /* About 250 bytes a frame: 150 frames in 64 KiB. */
    deep_result = depth(DEEP);
    nest__ctx_exit_to(&deep.ctx, &main_ctx);
}

NEST_TEST(deep_recursion_within_stack) {
    setup();
    tctx_make(&deep, 64 * KIB, deep_entry);
    nest__ctx_switch(&main_ctx, &deep.ctx);
    CHECK_EQ(deep_result, DEEP);
    tctx_free(&deep);
    teardown();
}

static tctx big;

static void big_entry(void) {
    deep_result = depth(20000); /* several MiB */
    nest__ctx_exit_to(&big.ctx, &main_ctx);
}

NEST_TEST(deep_recursion_on_large_stack) {
    setup();
    tctx_make(&big, 16384 * KIB, big_entry);
    nest__ctx_switch(&main_ctx, &big.ctx);
    CHECK_EQ(deep_result, 20000);
    tctx_free(&big);
    teardown();
}

/* ---- Exited stacks are reused by new contexts. ---- */

static tctx reuse;
static int reuse_runs;
static volatile int reuse_never;

static void reuse_inner(int n) {
    /* Frames with arrays, left for good by exit_to: under ASan their
     * redzones stay poisoned until the stack is made again. */
    volatile char buf[512];
    buf[n % 512] = 1;
    CHECK_EQ(buf[n % 512], 1);
    if (reuse_never) return; /* not every path ends in exit_to, says gcc */
    if (n > 0) {
        reuse_inner(n - 1);
        return;
    }
    reuse_runs++;
    nest__ctx_exit_to(&reuse.ctx, &main_ctx);
}

static void reuse_entry(void) {
    volatile char big_local[4096];
    memset((char *)big_local, reuse_runs, sizeof big_local);
    reuse_inner(reuse_runs % 7 + 3);
}

NEST_TEST(exit_and_reuse_stack) {
    setup();
    void *lo = NULL;
    for (int i = 0; i < 100; i++) {
        tctx_make(&reuse, 64 * KIB, reuse_entry);
        if (lo) CHECK(reuse.stack->lo == lo); /* LIFO: the same stack */
        lo = reuse.stack->lo;
        nest__ctx_switch(&main_ctx, &reuse.ctx);
        tctx_free(&reuse);
    }
    CHECK_EQ(reuse_runs, 100);
    teardown();
}

/* ---- Memory: a fresh context touches one page. ---- */

static tctx small;

static void small_entry(void) {
    volatile char buf[1000];
    buf[0] = 1;
    CHECK_EQ(buf[0], 1);
    nest__ctx_switch(&small.ctx, &main_ctx);
    nest__ctx_exit_to(&small.ctx, &main_ctx);
}

static long resident(void *lo, size_t len) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = len / page;
    unsigned char v[4096];
    CHECK(n <= sizeof v);
    CHECK_EQ(mincore(lo, len, v), 0);
    long r = 0;
    for (size_t i = 0; i < n; i++) r += v[i] & 1;
    return r;
}

NEST_TEST(parked_context_touches_one_page) {
    setup();
    tctx_make(&small, 64 * KIB, small_entry);
    if (!small.stack->guarded) {
        printf("skipped: the stack has a canary, which touches its lowest page\n");
        tctx_free(&small);
        teardown();
        return;
    }
    /* The assembly backends' first frame and a small task fit in the top
     * page; the ucontext backend keeps a ucontext_t there too. */
    long most = 1;
#if !defined(NEST_CTX_ASM)
    most += (long)((sizeof(ucontext_t) + 2048) / (size_t)sysconf(_SC_PAGESIZE));
#endif
#if defined(NEST_CTX_ASAN) || defined(NEST_CTX_TSAN)
    most += 1; /* instrumented frames are larger */
#endif
    char *top_page = (char *)small.stack->lo + small.stack->size - sysconf(_SC_PAGESIZE);
    CHECK(resident(small.stack->lo, small.stack->size) <= most); /* make writes the top */
    CHECK_EQ(resident(top_page, (size_t)sysconf(_SC_PAGESIZE)), 1);
    nest__ctx_switch(&main_ctx, &small.ctx);
    CHECK(resident(small.stack->lo, small.stack->size) <= most);
    CHECK_EQ(resident(top_page, (size_t)sysconf(_SC_PAGESIZE)), 1);
    nest__ctx_switch(&main_ctx, &small.ctx);
    tctx_free(&small);
    teardown();
}

/* RSS per parked context: its one stack page plus the stack descriptor
 * and the nest__ctx; the runtime adds its task control block. */
static tctx *parked;
static int parked_cur;

static void parked_entry(void) {
    int me = parked_cur;
    nest__ctx_switch(&parked[me].ctx, &main_ctx);
    nest__ctx_exit_to(&parked[me].ctx, &main_ctx);
}

static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f);
    long size, res;
    CHECK_EQ(fscanf(f, "%ld %ld", &size, &res), 2);
    fclose(f);
    return res * sysconf(_SC_PAGESIZE);
}

NEST_TEST(rss_per_parked_context) {
#if defined(NEST_CTX_TSAN)
    enum { N = 4000 }; /* each fiber is a TSan thread; it has 8128 of them */
#else
    enum { N = 20000 };
#endif
    setup();
    long before = rss_bytes();
    parked = calloc(N, sizeof *parked);
    CHECK(parked);
    for (int i = 0; i < N; i++) {
        tctx_make(&parked[i], 64 * KIB, parked_entry);
        parked_cur = i;
        nest__ctx_switch(&main_ctx, &parked[i].ctx);
    }
    long per = (rss_bytes() - before) / N;
    printf("RSS per parked context: %ld bytes (stack %s)\n", per,
           parked[0].stack->guarded ? "guarded" : "with canary");
#if defined(NEST_CTX_ASM) && !defined(NEST_CTX_ASAN) && !defined(NEST_CTX_TSAN)
    /* 4 KiB pages: 4096 for the page, 40 for the stack descriptor, 48
     * for the nest__ctx, and malloc's and the slab's overheads. */
    if (parked[0].stack->guarded) CHECK(per <= sysconf(_SC_PAGESIZE) + 204);
#endif
    for (int i = 0; i < N; i++) {
        nest__ctx_switch(&main_ctx, &parked[i].ctx);
        tctx_free(&parked[i]);
    }
    free(parked);
    teardown();
}

/* ---- The floating-point control words belong to each context. ---- */

#if defined(NEST_CTX_ASM) && defined(__x86_64__) && !defined(NEST_CTX_NO_FPCTRL)
static unsigned get_mxcsr(void) {
    unsigned v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}
static void set_mxcsr(unsigned v) {
    __asm__ volatile("ldmxcsr %0" : : "m"(v));
}
static unsigned short get_fpucw(void) {
    unsigned short v;
    __asm__ volatile("fnstcw %0" : "=m"(v));
    return v;
}
static void set_fpucw(unsigned short v) {
    __asm__ volatile("fldcw %0" : : "m"(v));
}

static tctx fp;
static unsigned fp_seen_mxcsr;

static void fp_entry(void) {
    fp_seen_mxcsr = get_mxcsr();
    set_mxcsr((get_mxcsr() & ~0x6000u) | 0x4000u); /* round up */
    set_fpucw((unsigned short)((get_fpucw() & ~0x0c00u) | 0x0800u));
    unsigned mine = get_mxcsr();
    unsigned short mine_cw = get_fpucw();
    nest__ctx_switch(&fp.ctx, &main_ctx);
    CHECK_EQ(get_mxcsr(), mine);
    CHECK_EQ(get_fpucw(), mine_cw);
    nest__ctx_exit_to(&fp.ctx, &main_ctx);
}

#endif

/* Registered in every build; only the x86-64 assembly backend saves the
 * control words, so elsewhere the case is skipped, not silently absent. */
NEST_TEST(fp_control_words_are_per_context) {
#if defined(NEST_CTX_ASM) && defined(__x86_64__) && !defined(NEST_CTX_NO_FPCTRL)
    setup();
    unsigned m = get_mxcsr();
    unsigned short cw = get_fpucw();
    tctx_make(&fp, 64 * KIB, fp_entry);
    nest__ctx_switch(&main_ctx, &fp.ctx);
    CHECK_EQ(fp_seen_mxcsr, m); /* a fresh context starts with its maker's */
    CHECK_EQ(get_mxcsr(), m);
    CHECK_EQ(get_fpucw(), cw);
    nest__ctx_switch(&main_ctx, &fp.ctx);
    CHECK_EQ(get_mxcsr(), m);
    tctx_free(&fp);
    teardown();
#else
    NEST_SKIP("the floating-point control words are saved by the x86-64 assembly backend only");
#endif
}


/* ---- Unwinding stops cleanly at the bottom of a context. ---- */

static tctx bt;
static int bt_frames;

__attribute__((noinline)) static void bt_leaf(void) {
    void *frames[64];
    bt_frames = backtrace(frames, 64);
    __asm__ volatile("" ::: "memory");
}

static void bt_entry(void) {
    bt_leaf();
    nest__ctx_switch(&bt.ctx, &main_ctx);
    bt_leaf(); /* after a switch, too */
    nest__ctx_exit_to(&bt.ctx, &main_ctx);
}

NEST_TEST(backtrace_ends_at_context_start) {
    setup();
    tctx_make(&bt, 64 * KIB, bt_entry);
    nest__ctx_switch(&main_ctx, &bt.ctx);
    /* bt_leaf, bt_entry, the start function, the trampoline, maybe a frame
     * of the sanitizer runtime: a handful, not a walk off the stack. */
    CHECK(bt_frames >= 2 && bt_frames <= 8);
    nest__ctx_switch(&main_ctx, &bt.ctx);
    CHECK(bt_frames >= 2 && bt_frames <= 8);
    tctx_free(&bt);
    teardown();
}

/* ---- Misuse: an entry that returns aborts the process. ---- */

static tctx ret;

static void returning_entry(void) {}

NEST_TEST_ABORTS(entry_that_returns_aborts, "entry function returned") {
    setup();
    tctx_make(&ret, 64 * KIB, returning_entry);
    nest__ctx_switch(&main_ctx, &ret.ctx);
}

/* ---- Contexts in several threads at once. ---- */

enum { THREADS = 4, PER_THREAD = 50 };
static _Thread_local nest__ctx thread_main;
static _Thread_local nest__ctx *thread_cur;
static _Thread_local long thread_counter;
static long shared_total[THREADS];

static void thread_entry(void) {
    nest__ctx *me = thread_cur;
    for (int i = 0; i < 100; i++) {
        thread_counter++;
        nest__ctx_switch(me, &thread_main);
    }
    nest__ctx_exit_to(me, &thread_main);
}

static void *thread_body(void *arg) {
    long id = (long)(intptr_t)arg;
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    CHECK_EQ(nest__stack_overflow_handler_install(), 0);
    nest__ctx_init_main(&thread_main);
    nest__ctx ctxs[PER_THREAD];
    nest__stack *stacks[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        stacks[i] = nest__stack_get(&p, 32 * KIB);
        CHECK(stacks[i]);
        nest__ctx_make(&ctxs[i], stacks[i]->lo, stacks[i]->size, thread_entry);
    }
    for (int r = 0; r <= 100; r++)
        for (int i = 0; i < PER_THREAD; i++) {
            thread_cur = &ctxs[i];
            nest__ctx_switch(&thread_main, &ctxs[i]);
        }
    for (int i = 0; i < PER_THREAD; i++) {
        nest__ctx_destroy(&ctxs[i]);
        CHECK_EQ(nest__stack_put(&p, stacks[i]), 0);
    }
    nest__stack_pool_destroy(&p);
    shared_total[id] = thread_counter;
    return NULL;
}

NEST_TEST(contexts_in_threads) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, thread_body, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++) CHECK_EQ(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++) CHECK_EQ(shared_total[i], 100L * PER_THREAD);
}

/* ---- Data handed between contexts through the stack. ---- */

static tctx prod;
static int *volatile mailbox;

static void prod_entry(void) {
    int local[32]; /* lives on the producer's stack */
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 32; i++) local[i] = round + i;
        mailbox = local;
        nest__ctx_switch(&prod.ctx, &main_ctx);
    }
    mailbox = NULL;
    nest__ctx_exit_to(&prod.ctx, &main_ctx);
}

NEST_TEST(stack_memory_shared_between_contexts) {
    setup();
    tctx_make(&prod, 64 * KIB, prod_entry);
    for (int round = 0;; round++) {
        nest__ctx_switch(&main_ctx, &prod.ctx);
        if (!mailbox) break;
        for (int i = 0; i < 32; i++) CHECK_EQ(mailbox[i], round + i);
    }
#if defined(NEST_CTX_ASAN)
    /* ASan learned the main stack's bounds at the first switch. */
    CHECK(main_ctx.stack_size != 0);
    CHECK((char *)&prod < (char *)main_ctx.stack_lo ||
          (char *)&prod >= (char *)main_ctx.stack_lo + main_ctx.stack_size);
#endif
    tctx_free(&prod);
    teardown();
}

/* ---- The cost of a switch (reported, not checked: machines vary). ---- */

static tctx bench;

static void bench_entry(void) {
    for (;;) nest__ctx_switch(&bench.ctx, &main_ctx);
}

NEST_TEST(switch_cost) {
    setup();
    tctx_make(&bench, 64 * KIB, bench_entry);
    long iters = 1000000;
    const char *env = getenv("NEST_SWITCH_ITERS");
    if (env) iters = atol(env);
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long i = 0; i < iters; i++) nest__ctx_switch(&main_ctx, &bench.ctx);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        if (ns < best) best = ns;
    }
    printf("switch: %.2f ns (best of 5 runs of %ld round trips main <-> context)\n",
           best / (double)iters / 2, iters);
    /* bench's stack is never left with exit_to; it is abandoned here, which
     * the contract allows once nothing will switch to it again. */
    tctx_free(&bench);
    teardown();
}
