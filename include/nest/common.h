/*
 * nest/common.h - types and conventions shared by every nest header.
 *
 * Time is a signed 64-bit count of nanoseconds on a monotonic clock
 * (nest_time).  Deadlines are absolute times; NEST_FOREVER means "no
 * deadline".  Functions that can fail return an int: zero or a positive
 * value on success, a negative error code on failure (see nest/error.h).
 * errno is never part of the contract.
 */
#ifndef NEST_COMMON_H
#define NEST_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define NEST_BEGIN_DECLS extern "C" {
#define NEST_END_DECLS }
#else
#define NEST_BEGIN_DECLS
#define NEST_END_DECLS
#endif

/* Marks the functions the shared library exports; everything else is hidden. */
#if defined(NEST_STATIC_BUILD)
#define NEST_API
#elif defined(__GNUC__) || defined(__clang__)
#define NEST_API __attribute__((visibility("default")))
#else
#define NEST_API
#endif

NEST_BEGIN_DECLS

/* Monotonic nanoseconds.  Only differences and comparisons are meaningful. */
typedef int64_t nest_time;

/* The deadline that never comes.  Also "no limit" for durations. */
#define NEST_FOREVER INT64_MAX
/* A time before every other time: what a cancelled scope's effective
 * deadline reports (see nest_current_effective_deadline()). */
#define NEST_PAST INT64_MIN

#define NEST_NSEC(n) ((nest_time)(n))
#define NEST_USEC(n) ((nest_time)(n) * 1000)
#define NEST_MSEC(n) ((nest_time)(n) * 1000000)
#define NEST_SEC(n) ((nest_time)(n) * 1000000000)

/* The body of every task: returns 0 (or any value >= 0) on success and a
 * negative error code on failure.  A failure cancels the task's siblings and
 * surfaces where its nursery closes. */
typedef int (*nest_fn)(void *arg);

/* A task, as seen by user code.  Opaque; see nest/task.h. */
typedef struct nest_task nest_task;

/* Saturating a + b for times and durations, so that now + NEST_FOREVER
 * stays NEST_FOREVER instead of wrapping into the past. */
static inline nest_time nest_time_add(nest_time a, nest_time b) {
    if (b > 0 && a > INT64_MAX - b) return NEST_FOREVER;
    if (b < 0 && a < INT64_MIN - b) return NEST_PAST;
    return a + b;
}

NEST_END_DECLS

#endif
