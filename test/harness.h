/*
 * test/harness.h - nest's in-house test harness.
 *
 * A test file defines cases with NEST_TEST(name) { ... } and links
 * test/harness.c, which provides main():
 *
 *     ./test_scope --list        prints every case name, one a line
 *     ./test_scope NAME          runs one case in this process
 *
 * CMake reads the NEST_TEST lines of each test/test_*.c and registers every
 * case as its own ctest test, so each runs in a fresh process (crashes and
 * leaks stay contained, ctest -j parallelises).
 *
 * Checks abort at once with the file, line and both sides.  There is no
 * longjmp: unwinding across task stacks would corrupt the runtime.
 *
 * NEST_TEST_ABORTS(name, "text") declares a case that must die by SIGABRT
 * with "text" somewhere in its stderr: the runner forks, runs the body in
 * the child and checks both.  Misuse tests use it.
 */
#ifndef NEST_TEST_HARNESS_H
#define NEST_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct nest_test_case {
    const char *name;
    void (*fn)(void);
    const char *abort_text; /* NULL: must pass; else must abort with it */
    struct nest_test_case *next;
} nest_test_case;

void nest_test_register(nest_test_case *c);

#define NEST_TEST_(name, text)                                                          \
    static void test_##name(void);                                                      \
    static nest_test_case test_case_##name = {#name, test_##name, text, NULL};          \
    __attribute__((constructor)) static void test_register_##name(void) {               \
        nest_test_register(&test_case_##name);                                          \
    }                                                                                   \
    static void test_##name(void)

#define NEST_TEST(name) NEST_TEST_(name, NULL)
#define NEST_TEST_ABORTS(name, text) NEST_TEST_(name, text)

/* Ends the case as skipped (exit status 77, which ctest reports as "Not
 * Run" with the reason), for a case that cannot apply to this build. */
#define NEST_SKIP(reason)                                                               \
    do {                                                                                \
        fprintf(stderr, "skipped: %s\n", reason);                                       \
        exit(77);                                                                       \
    } while (0)

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#define CHECK_EQ(a, b)                                                                  \
    do {                                                                                \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                 \
        if (check_a_ != check_b_) {                                                     \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld vs %lld)\n",        \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);                    \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#define CHECK_STREQ(a, b)                                                               \
    do {                                                                                \
        const char *check_a_ = (a), *check_b_ = (b);                                    \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                \
            fprintf(stderr, "%s:%d: CHECK_STREQ failed: %s == %s (\"%s\" vs \"%s\")\n", \
                    __FILE__, __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",         \
                    check_b_ ? check_b_ : "(null)");                                    \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#endif
