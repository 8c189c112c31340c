/*
 * bench/bench.h - helpers shared by nest's benchmark programs.
 *
 * Every program times only its measured region with CLOCK_MONOTONIC (the
 * same clock as the peers' common/clock.h), repeats it REPS times and
 * prints one `key=value ...` line per repetition, then a summary line whose
 * keys end in `_median`, `_min` and `_max`.  REPS comes from the command
 * line (`reps=K`, any position) or the environment (REPS=K); default 5.
 * Other arguments are positional, as in the peers' programs: a task count
 * first, then a mode word.
 */
#ifndef NEST_BENCH_H
#define NEST_BENCH_H

/* Include this header first: the programs use POSIX/GNU interfaces. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <nest.h>

#define BENCH_MAX_REPS 1000

static inline int64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Peak resident set size of this process so far, KiB (Linux ru_maxrss). */
static inline long bench_peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* The positional arguments (argv without reps=K), and REPS. */
typedef struct bench_args {
    int npos;
    const char *pos[8];
    int reps;
} bench_args;

static inline void bench_parse(bench_args *a, int argc, char **argv) {
    const char *env = getenv("REPS");
    a->npos = 0;
    a->reps = env && *env ? atoi(env) : 5;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "reps=", 5) == 0)
            a->reps = atoi(argv[i] + 5);
        else if (a->npos < 8)
            a->pos[a->npos++] = argv[i];
    }
    if (a->reps < 1) a->reps = 1;
    if (a->reps > BENCH_MAX_REPS) a->reps = BENCH_MAX_REPS;
}

/* Positional argument i as a count (default def); accepts 1e6, 100k, 1M. */
static inline long bench_count(const bench_args *a, int i, long def) {
    if (i >= a->npos) return def;
    char *end;
    double v = strtod(a->pos[i], &end);
    if (*end == 'k' || *end == 'K') v *= 1e3;
    if (*end == 'm' || *end == 'M') v *= 1e6;
    return (long)v;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median (mean of the middle two for an even count), min and max of v[0..n). */
typedef struct bench_stats {
    double median, min, max;
} bench_stats;

static inline bench_stats bench_stats_of(const double *v, int n) {
    bench_stats s = {0, 0, 0};
    if (n <= 0) return s;
    double tmp[BENCH_MAX_REPS];
    memcpy(tmp, v, (size_t)n * sizeof *v);
    qsort(tmp, (size_t)n, sizeof *tmp, bench_cmp_double);
    s.median = n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
    s.min = tmp[0];
    s.max = tmp[n - 1];
    return s;
}

/* Prints " key_median=M key_min=m key_max=M" (no newline). */
static inline void bench_print_stats(const char *key, const double *v, int n, int decimals) {
    bench_stats s = bench_stats_of(v, n);
    printf(" %s_median=%.*f %s_min=%.*f %s_max=%.*f", key, decimals, s.median, key, decimals,
           s.min, key, decimals, s.max);
}

/* Dies with a message when a nest call that must succeed fails. */
static inline void bench_check(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "bench: %s failed: %s (%s)\n", what, nest_strerror(rc),
                nest_err_name(rc));
        printf("error=%s_%s\n", what, nest_err_name(rc));
        exit(2);
    }
}

#endif
