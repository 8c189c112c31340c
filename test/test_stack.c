/*
 * test/test_stack.c - task stacks (lib/stack.c): slabs, LIFO reuse, size
 * classes, the three guard modes, canaries, releasing slabs, out-of-memory,
 * and the overflow handler.
 *
 * The guard mode is chosen once per process from NEST_STACK_GUARD, so each
 * case that needs a mode sets it before its first pool call; every case runs
 * in its own process.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "harness.h"

#include "../include/nest/alloc.h"
#include "../lib/ctx.h"
#include "../lib/stack.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define KIB ((size_t)1024)

static void use_mode(const char *mode) {
    CHECK_EQ(setenv("NEST_STACK_GUARD", mode, 1), 0);
}

/* Resident pages of [lo, lo + len), or -1 if part of it is unmapped. */
static long resident_pages(void *lo, size_t len) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = len / page;
    unsigned char *v = malloc(n);
    CHECK(v);
    if (mincore(lo, len, v) != 0) {
        CHECK_EQ(errno, ENOMEM);
        free(v);
        return -1;
    }
    long r = 0;
    for (size_t i = 0; i < n; i++) r += v[i] & 1;
    free(v);
    return r;
}

/* Sanitizer runtimes map memory of their own as they go. */
#if defined(NEST_CTX_ASAN) || defined(NEST_CTX_TSAN)
#define CHECK_MAPS_UNCHANGED(before) ((void)(before))
#else
#define CHECK_MAPS_UNCHANGED(before) CHECK_EQ(maps_lines(), before)
#endif

static long maps_lines(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f);
    long n = 0;
    int ch;
    while ((ch = getc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

/* An allocator hook that counts live bytes and can fail the Nth call. */
static long alloc_live, alloc_calls, alloc_fail_at = -1;

static void *counting_alloc(void *ud, void *p, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) {
        if (p) alloc_live -= (long)osize;
        free(p);
        return NULL;
    }
    if (alloc_calls++ == alloc_fail_at) return NULL;
    void *q = realloc(p, nsize);
    if (q) alloc_live += (long)nsize - (long)(p ? osize : 0);
    return q;
}

NEST_TEST(get_put_basic) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack *s = nest__stack_get(&p, 64 * KIB);
    CHECK(s);
    CHECK_EQ(s->size, 64 * KIB);
    CHECK_EQ((uintptr_t)s->lo % p.page, 0);
    CHECK_EQ(((uintptr_t)s->lo + s->size) % p.page, 0);
    CHECK_EQ(p.nlive, 1);
    memset(s->lo, 0xab, s->size); /* the whole stack is writable */
    CHECK_EQ(nest__stack_put(&p, s), 0);
    CHECK_EQ(p.nlive, 0);
    nest__stack_pool_destroy(&p);
}

NEST_TEST(sizes_round_up_to_pages) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack *a = nest__stack_get(&p, 1);
    nest__stack *b = nest__stack_get(&p, 5000);
    nest__stack *c = nest__stack_get(&p, 0);
    CHECK_EQ(a->size, p.page);
    CHECK_EQ(b->size, 2 * p.page);
    CHECK_EQ(c->size, p.page);
    nest__stack_put(&p, a);
    nest__stack_put(&p, b);
    nest__stack_put(&p, c);
    nest__stack_pool_destroy(&p);
}

NEST_TEST(lifo_reuse) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack *a = nest__stack_get(&p, 64 * KIB);
    nest__stack *b = nest__stack_get(&p, 64 * KIB);
    nest__stack *c = nest__stack_get(&p, 64 * KIB);
    CHECK(a != b && b != c && a != c);
    nest__stack_put(&p, a);
    nest__stack_put(&p, c);
    nest__stack_put(&p, b);
    CHECK(nest__stack_get(&p, 64 * KIB) == b);
    CHECK(nest__stack_get(&p, 64 * KIB) == c);
    CHECK(nest__stack_get(&p, 64 * KIB) == a);
    nest__stack_put(&p, a);
    nest__stack_put(&p, b);
    nest__stack_put(&p, c);
    nest__stack_pool_destroy(&p);
}

NEST_TEST(distinct_sizes_have_their_own_lists) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    size_t sizes[] = {16 * KIB, 64 * KIB, 1024 * KIB, 8192 * KIB, 64 * KIB + 1};
    nest__stack *s[5];
    for (int i = 0; i < 5; i++) {
        s[i] = nest__stack_get(&p, sizes[i]);
        CHECK(s[i]);
        CHECK(s[i]->size >= sizes[i] && s[i]->size < sizes[i] + p.page);
        /* Touch both ends: the whole range is ours. */
        ((volatile char *)s[i]->lo)[NEST__STACK_CANARY_BYTES] = 1;
        ((volatile char *)s[i]->lo)[s[i]->size - 1] = 1;
    }
    for (int i = 0; i < 5; i++) nest__stack_put(&p, s[i]);
    /* A freed 1 MiB stack is not handed out for a 64 KiB request. */
    nest__stack *t = nest__stack_get(&p, 64 * KIB);
    CHECK(t == s[1]);
    nest__stack *u = nest__stack_get(&p, 1024 * KIB);
    CHECK(u == s[2]);
    nest__stack_put(&p, t);
    nest__stack_put(&p, u);
    nest__stack_pool_destroy(&p);
}

/* Handing a stack out touches none of its pages (a canary stack: only the
 * page holding the canary), nor its guard. */
static void check_fresh_untouched(const char *mode) {
    use_mode(mode);
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack *s[100];
    for (int i = 0; i < 100; i++) {
        s[i] = nest__stack_get(&p, 64 * KIB);
        CHECK(s[i]);
        long want = s[i]->guarded ? 0 : 1;
        CHECK_EQ(resident_pages(s[i]->lo, s[i]->size), want);
        if (!s[i]->guarded) CHECK_EQ(resident_pages(s[i]->lo, p.page), 1);
        /* The guard: not resident (or, under qemu-user, not even inspectable). */
        CHECK(resident_pages((char *)s[i]->lo - p.page, p.page) <= 0);
    }
    for (int i = 0; i < 100; i++) nest__stack_put(&p, s[i]);
    nest__stack_pool_destroy(&p);
}

NEST_TEST(fresh_stacks_untouched_auto) {
    check_fresh_untouched("auto");
}
NEST_TEST(fresh_stacks_untouched_mprotect) {
    check_fresh_untouched("mprotect");
}
NEST_TEST(fresh_stacks_untouched_none) {
    check_fresh_untouched("none");
}

/* 10,000 live stacks, each written at both ends. */
static void check_many_live(const char *mode, int want_mode) {
    use_mode(mode);
    if (want_mode == NEST__STACK_GUARD_MADVISE && nest__stack_guard_mode() != want_mode) {
        printf("skipped: MADV_GUARD_INSTALL is not supported by this kernel\n");
        return;
    }
    CHECK_EQ(nest__stack_guard_mode(), want_mode);
    enum { N = 10000 };
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack **s = malloc(N * sizeof *s);
    CHECK(s);
    long guarded = 0;
    for (int i = 0; i < N; i++) {
        s[i] = nest__stack_get(&p, 64 * KIB);
        CHECK(s[i]);
        guarded += s[i]->guarded;
        ((volatile char *)s[i]->lo)[s[i]->size - 1] = (char)i;
    }
    for (int i = 0; i < N; i++) {
        CHECK_EQ(((volatile char *)s[i]->lo)[s[i]->size - 1], (char)i);
        CHECK_EQ(nest__stack_check(s[i]), 0);
    }
    if (want_mode == NEST__STACK_GUARD_MADVISE) CHECK_EQ(guarded, N);
    if (want_mode == NEST__STACK_GUARD_NONE) CHECK_EQ(guarded, 0);
    if (want_mode == NEST__STACK_GUARD_MPROTECT) {
        /* Two map entries per guard, a quarter of max_map_count in all: the
         * first stacks are guarded, the rest have canaries. */
        FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
        long max = 65530;
        if (f) {
            CHECK_EQ(fscanf(f, "%ld", &max), 1);
            fclose(f);
        }
        long budget = max / 4 / 2;
        CHECK(guarded > 0);
        CHECK(guarded <= budget);
        if (budget < N) CHECK(guarded >= budget - 1024);
        CHECK(maps_lines() < max / 2);
        printf("%ld of %d stacks guarded by mprotect, %ld map entries\n", guarded, N, maps_lines());
    }
    for (int i = 0; i < N; i++) CHECK_EQ(nest__stack_put(&p, s[i]), 0);
    nest__stack_pool_destroy(&p);
    free(s);
}

NEST_TEST(many_live_madvise) {
    check_many_live("auto", NEST__STACK_GUARD_MADVISE);
}
NEST_TEST(many_live_mprotect) {
    check_many_live("mprotect", NEST__STACK_GUARD_MPROTECT);
}
NEST_TEST(many_live_none) {
    check_many_live("none", NEST__STACK_GUARD_NONE);
}

/* A million guarded stacks without running out of kernel map entries. */
NEST_TEST(million_live_madvise) {
    use_mode("auto");
    if (nest__stack_guard_mode() != NEST__STACK_GUARD_MADVISE) {
        printf("skipped: MADV_GUARD_INSTALL is not supported by this kernel\n");
        return;
    }
    enum { N = 1000000 };
    long before = maps_lines();
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack **s = malloc(N * sizeof *s);
    CHECK(s);
    for (int i = 0; i < N; i++) {
        s[i] = nest__stack_get(&p, 64 * KIB);
        CHECK(s[i]);
        CHECK(s[i]->guarded);
    }
    /* Touch a sample, to show they are real. */
    for (int i = 0; i < N; i += 997) ((volatile char *)s[i]->lo)[s[i]->size - 1] = 1;
    long during = maps_lines();
    printf("/proc/self/maps: %ld lines before, %ld with %d live stacks\n", before, during, N);
#if defined(NEST_CTX_TSAN)
    printf("not checked: TSan maps shadow memory per mapping\n");
#else
    CHECK(during < 1000);
#endif
    for (int i = 0; i < N; i++) nest__stack_put(&p, s[i]);
    nest__stack_pool_destroy(&p);
    free(s);
}

static void check_canary(void) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack *s = nest__stack_get(&p, 64 * KIB);
    CHECK(s);
    CHECK_EQ(s->guarded, 0);
    CHECK_EQ(nest__stack_check(s), 0);
    /* Use the stack down to just above the canary: still intact. */
    memset((char *)s->lo + NEST__STACK_CANARY_BYTES, 0x55, s->size - NEST__STACK_CANARY_BYTES);
    CHECK_EQ(nest__stack_check(s), 0);
    /* One byte further, as an overflow would. */
    ((volatile char *)s->lo)[NEST__STACK_CANARY_BYTES - 1] = 0x55;
    CHECK_EQ(nest__stack_check(s), -1);
    CHECK_EQ(nest__stack_put(&p, s), -1);
    /* Back in the pool, and handed out again with a fresh canary. */
    CHECK_EQ(p.nlive, 0);
    nest__stack *t = nest__stack_get(&p, 64 * KIB);
    CHECK(t == s);
    CHECK_EQ(nest__stack_check(t), 0);
    CHECK_EQ(nest__stack_put(&p, t), 0);
    nest__stack_pool_destroy(&p);
}

NEST_TEST(canary_detects_overflow) {
    use_mode("none");
    check_canary();
}

/* Past the mprotect budget, stacks get canaries. */
NEST_TEST(canary_beyond_mprotect_budget) {
    use_mode("mprotect");
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    enum { N = 40000 };
    nest__stack **s = malloc(N * sizeof *s);
    int first_unguarded = -1;
    for (int i = 0; i < N; i++) {
        s[i] = nest__stack_get(&p, 16 * KIB);
        CHECK(s[i]);
        if (!s[i]->guarded && first_unguarded < 0) first_unguarded = i;
    }
    CHECK(first_unguarded > 0);
    nest__stack *u = s[first_unguarded];
    CHECK_EQ(nest__stack_check(u), 0);
    ((volatile uint64_t *)u->lo)[0] = 0;
    CHECK_EQ(nest__stack_check(u), -1);
    for (int i = 0; i < N; i++) CHECK_EQ(nest__stack_put(&p, s[i]), s[i] == u ? -1 : 0);
    nest__stack_pool_destroy(&p);
    free(s);
}

/* Guard pages fault; the memory right above them does not. */
static void check_guard_faults(const char *mode) {
    use_mode(mode);
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack *s = nest__stack_get(&p, 64 * KIB);
    CHECK(s->guarded);
    CHECK(nest__stack_in_guard(s, (char *)s->lo - 1));
    CHECK(nest__stack_in_guard(s, (char *)s->lo - p.page));
    CHECK(!nest__stack_in_guard(s, s->lo));
    CHECK(!nest__stack_in_guard(s, (char *)s->lo - p.page - 1));
    ((volatile char *)s->lo)[0] = 1;
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGSEGV, SIG_DFL);
        ((volatile char *)s->lo)[-1] = 1;
        _exit(0);
    }
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ(WTERMSIG(status), SIGSEGV);
    nest__stack_put(&p, s);
    nest__stack_pool_destroy(&p);
}

NEST_TEST(guard_faults_auto) {
    check_guard_faults("auto");
}
NEST_TEST(guard_faults_mprotect) {
    check_guard_faults("mprotect");
}

/* Whole free slabs go back to the system at the second trim that finds
 * them free (never in a put), once their class has a slab's worth of free
 * stacks elsewhere; the last free slab stays. */
NEST_TEST(free_slabs_are_unmapped) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    enum { MAX = 4096 };
    nest__stack **s = malloc(MAX * sizeof *s);
    /* Learn K, the stacks per slab: where the second slab starts. */
    size_t n = 0, k;
    s[n++] = nest__stack_get(&p, 64 * KIB);
    while ((s[n] = nest__stack_get(&p, 64 * KIB))->slab == s[0]->slab) n++;
    k = n++;
    CHECK(k >= 60 && k <= 250); /* a slab of 4 to 16 MiB */
    CHECK_EQ((uintptr_t)s[k - 1]->lo - (uintptr_t)s[0]->lo, (k - 1) * (s[0]->size + p.page));
    while (n < 3 * k) s[n++] = nest__stack_get(&p, 64 * KIB);
    for (size_t i = 0; i < n; i++) ((volatile char *)s[i]->lo)[s[i]->size - 1] = 1;
    /* Free the first slab, then the others: only the first stays mapped.
     * (A released slab's descriptors go with it: remember the addresses.) */
    void **lo = malloc(n * sizeof *lo);
    for (size_t i = 0; i < n; i++) lo[i] = s[i]->lo;
    for (size_t i = 0; i < n; i++) nest__stack_put(&p, s[i]);
    size_t mapped = 0;
    for (size_t i = 0; i < n; i++) mapped += resident_pages(lo[i], p.page) >= 0;
    CHECK_EQ(mapped, n); /* puts release nothing */
    CHECK_EQ(nest__stack_trim(&p), 0); /* the first trim only notes them */
    CHECK_EQ(nest__stack_trim(&p), 2);
    mapped = 0;
    for (size_t i = 0; i < n; i++) mapped += resident_pages(lo[i], p.page) >= 0;
    CHECK_EQ(mapped, k);
    for (size_t i = 0; i < k; i++) CHECK(resident_pages(lo[i], p.page) >= 0);
    free(lo);
    nest__stack_pool_destroy(&p);
    free(s);
}

/* A task count that hovers at a slab boundary does not map and unmap. */
NEST_TEST(no_unmap_churn_at_slab_boundary) {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    enum { MAX = 4096 };
    nest__stack **s = malloc(MAX * sizeof *s);
    size_t n = 0;
    s[n++] = nest__stack_get(&p, 64 * KIB);
    while ((s[n] = nest__stack_get(&p, 64 * KIB))->slab == s[0]->slab) n++;
    nest__stack *last = s[n++]; /* alone in the second slab */
    /* A few free stacks in the first slab: less than a slab's worth. */
    for (size_t i = 0; i < 10; i++) nest__stack_put(&p, s[i]);
    for (int round = 0; round < 1000; round++) {
        nest__stack_put(&p, last);
        CHECK_EQ(nest__stack_trim(&p), 0);
        CHECK(resident_pages(last->lo, p.page) >= 0);
        CHECK(nest__stack_get(&p, 64 * KIB) == last);
    }
    for (size_t i = 10; i < n; i++) nest__stack_put(&p, s[i]);
    nest__stack_pool_destroy(&p);
    free(s);
}

/* The (n+1)-th slab mapping fails: get returns NULL, and destroying the
 * pool leaves no memory behind. */
NEST_TEST(out_of_memory_slab_mapping) {
    nest_set_allocator(counting_alloc, NULL);
    long maps_before = maps_lines();
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    nest__stack_fail_after(1);
    nest__stack **s = malloc(100000 * sizeof *s);
    int n = 0;
    while ((s[n] = nest__stack_get(&p, 64 * KIB)) != NULL) n++;
    CHECK(n > 0 && n < 100000);
    /* A different size needs a new slab too, and fails the same way. */
    CHECK(nest__stack_get(&p, 128 * KIB) == NULL);
    CHECK_EQ(p.nlive, (size_t)n);
    /* After a free, the slab has room again. */
    nest__stack_put(&p, s[--n]);
    CHECK((s[n] = nest__stack_get(&p, 64 * KIB)) != NULL);
    n++;
    void *lo = s[0]->lo;
    while (n > 0) nest__stack_put(&p, s[--n]);
    nest__stack_pool_destroy(&p);
    nest__stack_fail_after(-1);
    free(s);
    CHECK_EQ(alloc_live, 0);
    CHECK_EQ(resident_pages(lo, p.page), -1); /* unmapped */
    CHECK_MAPS_UNCHANGED(maps_before);
    nest_set_allocator(NULL, NULL);
}

/* Failing the allocator hook at each possible call. */
NEST_TEST(out_of_memory_allocator) {
    nest_set_allocator(counting_alloc, NULL);
    long maps_before = maps_lines();
    for (long fail = 0; fail < 10; fail++) {
        alloc_calls = 0;
        alloc_fail_at = fail;
        nest__stack_pool p;
        nest__stack_pool_init(&p);
        nest__stack *a = nest__stack_get(&p, 64 * KIB);
        nest__stack *b = nest__stack_get(&p, 32 * KIB);
        nest__stack *c = nest__stack_get(&p, 64 * KIB);
        if (fail >= 4) CHECK(a && b && c);
        void *lo[3] = {a ? a->lo : NULL, b ? b->lo : NULL, c ? c->lo : NULL};
        if (a) nest__stack_put(&p, a);
        if (b) nest__stack_put(&p, b);
        if (c) nest__stack_put(&p, c);
        nest__stack_pool_destroy(&p);
        CHECK_EQ(alloc_live, 0);
        for (int i = 0; i < 3; i++)
            if (lo[i]) CHECK_EQ(resident_pages(lo[i], p.page), -1);
        CHECK_MAPS_UNCHANGED(maps_before);
    }
    alloc_fail_at = -1;
    nest_set_allocator(NULL, NULL);
}

NEST_TEST_ABORTS(destroy_with_live_stack_aborts, "stacks are still in use") {
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    CHECK(nest__stack_get(&p, 64 * KIB));
    nest__stack_pool_destroy(&p);
}

/* ---- The overflow handler. ---- */

static nest__stack *overflow_stack;
static nest__ctx main_ctx, task_ctx;
static volatile int stop_at = -1;

/* Stands in for the runtime's lookup (lib/task.c). */
static int fake_owner(void *addr, const char **name, const char **file, int *line, size_t *size) {
    if (!overflow_stack || !nest__stack_in_guard(overflow_stack, addr)) return -1;
    *name = "overflower";
    *file = "test_stack.c";
    *line = 42;
    *size = overflow_stack->size;
    return 0;
}

static int recurse(int n) {
    volatile char buf[256];
    buf[0] = (char)n;
    if (n == stop_at) return 0;
    return recurse(n + 1) + buf[0];
}

static void overflow_entry(void) {
    recurse(0);
    nest__ctx_exit_to(&task_ctx, &main_ctx);
}

static void run_overflowing_task(const char *mode) {
    use_mode(mode);
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    CHECK_EQ(nest__stack_overflow_handler_install(), 0);
    nest__stack_set_fault_owner(fake_owner);
    overflow_stack = nest__stack_get(&p, 64 * KIB);
    CHECK(overflow_stack->guarded);
    nest__ctx_init_main(&main_ctx);
    nest__ctx_make(&task_ctx, overflow_stack->lo, overflow_stack->size, overflow_entry);
    nest__ctx_switch(&main_ctx, &task_ctx);
}

NEST_TEST_ABORTS(overflow_reported_auto,
                 "nest: stack overflow in task 'overflower' (spawned at test_stack.c:42): "
                 "it used all of its 65536-byte stack; give it a larger stack") {
    run_overflowing_task("auto");
}

NEST_TEST_ABORTS(overflow_reported_mprotect, "stack overflow in task 'overflower'") {
    run_overflowing_task("mprotect");
}

/* The handler works on a thread's stack too (its own alternate stack). */
static void *overflow_thread(void *arg) {
    (void)arg;
    run_overflowing_task("auto");
    return NULL;
}

NEST_TEST_ABORTS(overflow_reported_in_thread, "stack overflow in task 'overflower'") {
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, overflow_thread, NULL), 0);
    pthread_join(t, NULL);
}

static void previous_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    static const char msg[] = "previous handler saw the fault\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    abort();
}

/* A fault the runtime does not claim goes to the handler installed before. */
NEST_TEST_ABORTS(unclaimed_fault_goes_to_previous_handler, "previous handler saw the fault") {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = previous_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
    nest__stack_pool p;
    nest__stack_pool_init(&p);
    CHECK_EQ(nest__stack_overflow_handler_install(), 0);
    nest__stack_set_fault_owner(fake_owner);
    nest__stack *s = nest__stack_get(&p, 64 * KIB);
    CHECK(s->guarded);
    /* overflow_stack is NULL: fake_owner claims nothing. */
    ((volatile char *)s->lo)[-1] = 1;
}

/* With the default action before us, an unclaimed fault still kills the
 * process by SIGSEGV, both a real fault and one sent with kill. */
static void check_default_chain(int by_kill) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        nest__stack_pool p;
        nest__stack_pool_init(&p);
        CHECK_EQ(nest__stack_overflow_handler_install(), 0);
        CHECK_EQ(nest__stack_overflow_handler_install(), 0);
        nest__stack *s = nest__stack_get(&p, 64 * KIB);
        if (by_kill) kill(getpid(), SIGSEGV);
        ((volatile char *)s->lo)[-1] = 1;
        _exit(0);
    }
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
#if defined(NEST_CTX_ASAN) || defined(NEST_CTX_TSAN)
    /* The sanitizer's own handler comes next: it reports and exits. */
    CHECK(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
#else
    CHECK(WIFSIGNALED(status));
    CHECK_EQ(WTERMSIG(status), SIGSEGV);
#endif
}

NEST_TEST(unclaimed_fault_takes_default_action) {
    check_default_chain(0);
}
NEST_TEST(unclaimed_kill_takes_default_action) {
    check_default_chain(1);
}

NEST_TEST(altstack_installed_per_thread) {
    CHECK_EQ(nest__stack_overflow_handler_install(), 0);
    stack_t ss;
    CHECK_EQ(sigaltstack(NULL, &ss), 0);
    CHECK(!(ss.ss_flags & SS_DISABLE));
    struct sigaction sa;
    CHECK_EQ(sigaction(SIGSEGV, NULL, &sa), 0);
    CHECK(sa.sa_flags & SA_ONSTACK);
    CHECK(sa.sa_flags & SA_SIGINFO);
}
