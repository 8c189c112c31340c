/*
 * test/test_oom.c - running out of memory (nest/alloc.h, lib/stack.h).
 *
 * Covers: with an allocator hook that fails the Nth allocation (for every N
 * until a run needs fewer than N), a program that spawns children (some with
 * handles), starts a server, opens nested nurseries and uses deadlines and
 * fd waits either succeeds or reports -ENOMEM - never crashes, never
 * swallows the failure - and frees every byte it allocated; the same with
 * every allocation from the Nth on failing; and failing stack mappings
 * (nest__stack_fail_after): the root's makes nest_run return -ENOMEM, a
 * child's is recorded as that child's -ENOMEM failure; nothing leaks, in
 * bytes or in mappings.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

#include "harness.h"
#include "nest.h"
#include "stack.h"

/* ---- a counting, failing allocator --------------------------------------- */

/* Each block carries its size in a 16-byte header (which keeps malloc's
 * alignment), so that osize can be checked on every call. */
struct alloc_state {
    long live_blocks;
    long live_bytes;
    long calls;      /* allocation calls (nsize > 0) so far */
    long fail_at;    /* fail call number fail_at (1-based); 0: never */
    int fail_rest;   /* also fail every call after fail_at */
    long failed;     /* calls failed on purpose */
    long bad_osize;
};

static struct alloc_state st;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    struct alloc_state *s = ud;
    char *hdr = ptr ? (char *)ptr - 16 : NULL;
    if (ptr && *(size_t *)hdr != osize) s->bad_osize++;
    if (nsize == 0) {
        if (ptr) {
            s->live_blocks--;
            s->live_bytes -= (long)osize;
            free(hdr);
        }
        return NULL;
    }
    s->calls++;
    if (s->fail_at && (s->calls == s->fail_at || (s->fail_rest && s->calls > s->fail_at))) {
        s->failed++;
        return NULL; /* ptr stays untouched */
    }
    char *p = realloc(hdr, nsize + 16);
    CHECK(p != NULL);
    if (!ptr) s->live_blocks++;
    s->live_bytes += (long)nsize - (long)(ptr ? osize : 0);
    *(size_t *)p = nsize;
    return p + 16;
}

static void reset_counts(long fail_at, int fail_rest) {
    memset(&st, 0, sizeof st);
    st.fail_at = fail_at;
    st.fail_rest = fail_rest;
}

/* Lines of /proc/self/maps: the process's mappings.  Under ThreadSanitizer
 * the runtime maps and unmaps memory of its own as fibers come and go, so
 * the count says nothing about nest there and reads as 0 (every other build
 * keeps the check). */
#if defined(__SANITIZE_THREAD__)
#define MAPS_UNRELIABLE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPS_UNRELIABLE 1
#endif
#endif
static int count_maps(void) {
#ifdef MAPS_UNRELIABLE
    return 0;
#endif
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* ---- the program under test ------------------------------------------- */

static int pipe_fds[2];

/* Propagates the first error: returns rc if it is an error, else next. */
static int first_error(int rc, int next) { return rc < 0 ? rc : next; }

static int sleeper_in_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(1));
    int rc = nest_sleep_forever();
    rc = nest_scope_exit(&s, rc);
    return rc < 0 ? rc : 40;
}

static int trivial(void *arg) {
    (void)arg;
    return nest_checkpoint();
}

static int server(void *arg) {
    (void)arg;
    nest_started(NULL);
    return nest_sleep(NEST_MSEC(1));
}

static int fd_reader(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(1));
    int rc = nest_wait_readable(pipe_fds[0]); /* silent until 2 ms: times out */
    rc = nest_scope_exit(&s, rc);
    if (rc < 0) return rc;
    rc = nest_wait_readable(pipe_fds[0]);
    if (rc < 0) return rc;
    char c;
    CHECK_EQ(read(pipe_fds[0], &c, 1), 1);
    return 0;
}

static int fd_writer(void *arg) {
    (void)arg;
    int rc = nest_wait_writable(pipe_fds[1]);
    if (rc < 0) return rc;
    rc = nest_sleep(NEST_MSEC(2));
    if (rc < 0) return rc;
    CHECK_EQ(write(pipe_fds[1], "x", 1), 1);
    return 0;
}

static int middle(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, fd_reader, NULL);
    if (rc == 0) rc = nest_spawn(&n, fd_writer, NULL);
    return nest_nursery_close(&n, rc);
}

static int program(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.handle = &h;
    int rc = nest_spawn_opts(&n, sleeper_in_scope, NULL, &o);
    /* 70 more children: more than one chunk of task control blocks. */
    for (int i = 0; i < 70 && rc == 0; i++) rc = nest_spawn(&n, trivial, NULL);
    if (rc == 0) rc = nest_start(&n, server, NULL, NULL);
    if (rc == 0) rc = nest_spawn(&n, middle, NULL);
    if (rc == 0) {
        int result = 0;
        rc = nest_task_wait(h, &result);
        rc = first_error(rc, result == 40 ? 0 : result);
    }
    return nest_nursery_close(&n, rc);
}

static int run_program(void) {
    CHECK_EQ(pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC), 0);
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    int rc = nest_run_opts(program, NULL, &o);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return rc;
}

/* Fails allocation number N (and, with fail_rest, every later one) for
 * N = 1, 2, ... until a run needs fewer than N allocations. */
static void nth_allocation_loop(int fail_rest) {
    nest_set_allocator(failing_alloc, &st);
    reset_counts(0, 0);
    CHECK_EQ(run_program(), 0); /* warm-up: per-process and per-thread setup */
    int maps = count_maps();
    long total = -1;
    for (long n = 1; n < 100000; n++) {
        reset_counts(n, fail_rest);
        int rc = run_program();
        if (st.failed == 0) {
            CHECK_EQ(rc, 0);
            total = st.calls;
            break;
        }
        if (rc != -ENOMEM) {
            fprintf(stderr, "failing allocation %ld of a run: nest_run returned %d (%s), "
                            "expected -ENOMEM\n", n, rc, nest_strerror(rc));
            abort();
        }
        if (st.live_blocks != 0 || st.live_bytes != 0) {
            fprintf(stderr, "failing allocation %ld of a run leaked %ld blocks, %ld bytes\n", n,
                    st.live_blocks, st.live_bytes);
            abort();
        }
        CHECK_EQ(st.bad_osize, 0);
        CHECK_EQ(count_maps(), maps);
    }
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    CHECK_EQ(st.bad_osize, 0);
    CHECK_EQ(count_maps(), maps);
    /* The runtime, the loop, two chunks of tasks, the fd table, two fd
     * entries: at least six allocation sites were failed one by one. */
    CHECK(total >= 6);
    fprintf(stderr, "a run makes %ld allocations; each one was failed in turn\n", total);
    nest_set_allocator(NULL, NULL);
}

NEST_TEST(failing_the_nth_allocation_for_every_n) { nth_allocation_loop(0); }

/* The same, but once the allocator starts failing it never recovers: the
 * cleanup paths must need no memory. */
NEST_TEST(failing_every_allocation_from_the_nth_on) { nth_allocation_loop(1); }

/* ---- stack mappings ---------------------------------------------------- */

static int return_zero(void *arg) {
    (void)arg;
    return 0;
}

/* The root task's stack cannot be mapped: nest_run returns -ENOMEM. */
NEST_TEST(root_stack_mapping_failure_returns_enomem) {
    nest_set_allocator(failing_alloc, &st);
    reset_counts(0, 0);
    CHECK_EQ(nest_run(return_zero, NULL), 0); /* warm-up */
    int maps = count_maps();
    nest__stack_fail_after(0);
    CHECK_EQ(nest_run(return_zero, NULL), -ENOMEM);
    nest__stack_fail_after(-1);
    CHECK_EQ(st.live_blocks, 0);
    CHECK_EQ(st.live_bytes, 0);
    CHECK_EQ(count_maps(), maps);
    CHECK_EQ(nest_run(return_zero, NULL), 0); /* and it works again */
    nest_set_allocator(NULL, NULL);
}

static int big_child(void *arg) {
    (void)arg;
    return nest_sleep(NEST_MSEC(1)); /* all of them hold their stacks at once */
}

static int big_failures;
static nest_failure big_first;

static int big_stacks_program(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn_options o = {0};
    o.stack_size = (size_t)8 << 20;
    o.name = "big";
    int rc = 0;
    for (int i = 0; i < 16 && rc == 0; i++) rc = nest_spawn_opts(&n, big_child, NULL, &o);
    rc = nest_nursery_close(&n, rc);
    big_failures = nest_nursery_failure_count(&n);
    if (big_failures > 0) CHECK_EQ(nest_nursery_failure(&n, 0, &big_first), 0);
    return rc;
}

/* Sixteen children with 8 MiB stacks alive at once; the kth stack mapping
 * fails for k = 1, 2, ...: a child that gets no stack fails with -ENOMEM,
 * recorded by its nursery under its name; nothing leaks. */
NEST_TEST(child_stack_mapping_failure_is_a_recorded_failure) {
    nest_set_allocator(failing_alloc, &st);
    reset_counts(0, 0);
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    CHECK_EQ(nest_run_opts(big_stacks_program, NULL, &o), 0); /* warm-up */
    int maps = count_maps();
    int child_failures_seen = 0;
    long k;
    for (k = 1; k < 1000; k++) {
        reset_counts(0, 0);
        big_failures = 0;
        nest__stack_fail_after(k);
        int rc = nest_run_opts(big_stacks_program, NULL, &o);
        nest__stack_fail_after(-1);
        CHECK_EQ(st.live_blocks, 0);
        CHECK_EQ(st.live_bytes, 0);
        CHECK_EQ(count_maps(), maps);
        if (rc == 0) {
            CHECK_EQ(big_failures, 0);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
        CHECK(big_failures >= 1);
        CHECK_STREQ(big_first.task, "big");
        CHECK_EQ(big_first.code, -ENOMEM);
        child_failures_seen++;
    }
    CHECK(k < 1000);
    CHECK(child_failures_seen >= 1);
    nest_set_allocator(NULL, NULL);
}
