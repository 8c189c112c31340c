/*
 * test/support.h - helpers shared by several test files.
 *
 * A test file that includes this header (after harness.h) gets:
 *
 *   - an event log: `events`, a string that note() appends to, one
 *     printf-style entry at a time, separated by spaces;
 *   - ms(), the mock clock in whole milliseconds (it checks that the time
 *     is a whole number of milliseconds);
 *   - run_mock(fn, arg), which runs fn as the root task on the mock clock
 *     with autojump 0, and spawn_children(), a root task that runs the
 *     tasks listed in `children`;
 *   - spawn_named(), which spawns a named task and returns its handle;
 *   - a counting allocator that can be told to fail (`mem`,
 *     counting_alloc(), fail_allocations()) and run_counted(fn), which runs
 *     fn like run_mock() under that allocator and checks that no block and
 *     no byte was leaked;
 *   - expect_abort(task, texts), which runs a task in a forked child and
 *     checks that the child dies by SIGABRT with the given texts in stderr.
 *
 * CMake links test/support.c into every test executable, as it does
 * test/harness.c.  Each test case runs in its own process, so the shared
 * state below starts empty in every case.
 */
#ifndef NEST_TEST_SUPPORT_H
#define NEST_TEST_SUPPORT_H

#include <stddef.h>

#include "nest.h"

/* ---- the event log ------------------------------------------------------ */

/* The log that note() appends to; a case may clear it with events[0] = 0. */
extern char events[16384];

/* Appends one event (printf-style) to `events`, space-separated. */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Returns the mock clock in whole milliseconds and checks that it is one. */
long long ms(void);

/* ---- running on the mock clock ------------------------------------------ */

/* Runs fn(arg) as the root task on the mock clock with autojump 0 and
 * returns what nest_run_opts() returns. */
int run_mock(nest_fn fn, void *arg);

/* The tasks that spawn_children() runs: at most 8, NULL-terminated. */
extern nest_fn children[9];

/* A root task that spawns every task of `children` in order into one
 * nursery, each with its index as arg, and returns what closing the nursery
 * returns. */
int spawn_children(void *arg);

/* Spawns fn(arg) into n under name, checks that the spawn succeeded and
 * returns the task's handle. */
nest_task *spawn_named(nest_nursery *n, nest_fn fn, void *arg, const char *name);

/* ---- a counting allocator that can fail --------------------------------- */

/* What the counting allocator has seen since the last run_counted(). */
struct support_mem {
    long live_bytes;  /* bytes allocated and not yet freed */
    long live_blocks; /* blocks allocated and not yet freed */
    long calls;       /* allocation calls (not frees) so far */
    long fail_from;   /* every allocation call numbered >= this fails; 0: none */
};

extern struct support_mem mem;

/* An allocator hook for nest_set_allocator() that keeps `mem` up to date
 * and fails the calls that mem.fail_from selects. */
void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Makes every allocation from the next one on fail (on != 0), or stops
 * failing (on == 0). */
void fail_allocations(int on);

/* Clears `mem` and `events`, runs fn(NULL) as run_mock() does under the
 * counting allocator, restores the default allocator, checks that no byte
 * and no block is still live, and returns the run's result. */
int run_counted(nest_fn fn);

/* ---- misuse that must abort --------------------------------------------- */

/* Runs task under nest_run() in a forked child and checks that the child
 * dies by SIGABRT with every one of texts (a NULL-terminated array) in its
 * stderr, which is copied to this process's stderr. */
void expect_abort(nest_fn task, const char *const *texts);

/* The process's open file descriptors (from /proc/self/fd), for tests
 * that check nothing is left open. */
int count_fds(void);

/* Whether this machine can bind a socket of `type` (SOCK_STREAM,
 * SOCK_DGRAM) to the IPv6 loopback address ::1: tests that need it skip
 * without it (containers often have no IPv6). */
int have_ipv6_loopback(int type);

#endif
