/*
 * bench/sleepers.c - many concurrent sleeping tasks (the peers' sleepers and
 * 3b "parked").
 *
 *     bench_sleepers [N] [mode] [reps=K]      driver: REPS fresh processes
 *     bench_sleepers [N] [mode] --one         one run in this process
 *
 * Modes:
 *   sleep (default, N=100000)  N tasks in one nursery; task i sleeps
 *       ((i*48271) mod N) * 100 ms / N relative to when it starts (the
 *       peers' permutation of an even 0..100 ms spread).  wall = first spawn
 *       .. close returns; overhead = wall - 100 ms (the peers' "ms past the
 *       last deadline").  past_last_deadline_ms is the stricter figure: close
 *       return minus the latest deadline any task actually had (which is
 *       later than 100 ms when tasks start late).
 *   park (N=100000)  every task sleeps 1 h; once all are asleep
 *       (nest_wait_all_tasks_blocked) the nursery is cancelled and closed.
 *       wall = spawn + park + cancel + close, also split into its phases.
 *   million (N=1000000)  as sleep, with a 0..1000 ms spread: a million
 *       concurrent sleeping tasks must complete.
 *
 * The driver runs every repetition as a fresh process (posix_spawn of itself
 * with --one) and, to get RSS per task, the same program with N=0 right
 * after it; peak RSS is the child's ru_maxrss from wait4() (what GNU time -v
 * reports for the peers).  RSS/task = (peak RSS - median peak RSS at N=0)
 * / N.  max_alive counts tasks started and not yet finished at once: when
 * it is below N, early sleepers finished before the last ones started.
 */
#include "bench.h" /* first: it defines _GNU_SOURCE */

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { M_SLEEP, M_PARK, M_MILLION };
static const char *mode_name[] = {"sleep", "park", "million"};

/* ------------------------------------------------------------------ one run */

static long N;
static int mode;
static nest_time spread;
static long alive, max_alive;
static nest_time last_start, last_deadline;

static int sleeper(void *arg) {
    long i = (long)(intptr_t)arg;
    if (++alive > max_alive) max_alive = alive;
    nest_time start = nest_now();
    if (start > last_start) last_start = start;
    int rc;
    if (mode == M_PARK) {
        rc = nest_sleep_until(start + NEST_SEC(3600)); /* -ECANCELED */
    } else {
        nest_time dl = start + (nest_time)((i * 48271L) % N) * spread / N;
        if (dl > last_deadline) last_deadline = dl;
        rc = nest_sleep_until(dl);
    }
    alive--;
    return rc;
}

/* One round: spawn N sleepers into a nursery and close it.  prefix ("" or
 * "warm_") goes before every key printed. */
static void one_round(const char *prefix) {
    alive = max_alive = 0;
    last_start = last_deadline = 0;
    struct rusage ru0, ru;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t t0 = bench_now_ns();
    nest_nursery n;
    nest_nursery_open(&n);
    for (long i = 0; i < N; i++) {
        int rc = nest_spawn(&n, sleeper, (void *)(intptr_t)i);
        if (rc < 0) {
            printf("error=nest_spawn_failed_at_%ld_%s\n", i, nest_err_name(rc));
            exit(2);
        }
    }
    int64_t t1 = bench_now_ns(), t2 = t1;
    if (mode == M_PARK) {
        bench_check(nest_wait_all_tasks_blocked(), "nest_wait_all_tasks_blocked");
        t2 = bench_now_ns();
        if (alive != N) {
            printf("error=only_%ld_of_%ld_asleep\n", alive, N);
            exit(2);
        }
        nest_nursery_cancel(&n);
    }
    int rc = nest_nursery_close(&n, 0);
    int64_t t3 = bench_now_ns();
    if (rc < 0) {
        printf("error=nest_nursery_close_%s\n", nest_err_name(rc));
        exit(2);
    }
    getrusage(RUSAGE_SELF, &ru);
    const char *p = prefix;
    printf("%swall_ms=%.2f %sspawn_ms=%.2f", p, (t3 - t0) / 1e6, p, (t1 - t0) / 1e6);
    if (mode == M_PARK)
        printf(" %spark_ms=%.2f %scancel_ms=%.2f", p, (t2 - t1) / 1e6, p, (t3 - t2) / 1e6);
    else if (N > 0)
        printf(" %slast_start_ms=%.2f %spast_last_deadline_ms=%.2f", p, (last_start - t0) / 1e6,
               p, (t3 - last_deadline) / 1e6);
    printf(" %smax_alive=%ld %sminflt=%ld ", p, max_alive, p, ru.ru_minflt - ru0.ru_minflt);
}

/* Round 1 is the figure (a fresh process, as the peers).  With rounds=2
 * (the default except for million) a second round follows in the same
 * runtime, reported with warm_ keys: what nest costs once the memory its
 * tasks need has been faulted in before (as far as nest's stack cache keeps
 * it). */
static int rounds;

static int one_run(void *arg) {
    (void)arg;
    for (int r = 0; r < rounds; r++) one_round(r == 0 ? "" : "warm_");
    printf("self_rss_kib=%ld\n", bench_peak_rss_kib());
    return 0;
}

/* ------------------------------------------------------------------ driver */

/* Runs this program with --one; fills out (its stdout) and *rss_kib. */
static int run_child(long n, char *out, size_t outsz, long *rss_kib) {
    char nbuf[32], rbuf[32];
    snprintf(nbuf, sizeof nbuf, "%ld", n);
    snprintf(rbuf, sizeof rbuf, "rounds=%d", rounds);
    char *argv[] = {"bench_sleepers", nbuf, (char *)mode_name[mode], rbuf, "--one", NULL};
    int p[2];
    if (pipe(p) < 0) return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        return -rc;
    }
    size_t len = 0;
    ssize_t k;
    while ((k = read(p[0], out + len, outsz - 1 - len)) > 0) len += (size_t)k;
    out[len] = 0;
    close(p[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return -errno;
    *rss_kib = ru.ru_maxrss;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -ECHILD;
    return 0;
}

/* The value of key=... in s, or NAN-like -1 when absent. */
static double kv(const char *s, const char *key) {
    size_t kl = strlen(key);
    for (const char *p = s; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p == s || p[-1] == ' ' || p[-1] == '\n') && p[kl] == '=') return atof(p + kl + 1);
    }
    return -1;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    int one = 0;
    long n = -1;
    mode = M_SLEEP;
    for (int i = 0; i < a.npos; i++) {
        const char *s = a.pos[i];
        if (strcmp(s, "--one") == 0)
            one = 1;
        else if (strcmp(s, "park") == 0)
            mode = M_PARK;
        else if (strcmp(s, "million") == 0)
            mode = M_MILLION;
        else if (strcmp(s, "sleep") == 0)
            mode = M_SLEEP;
        else if (strncmp(s, "rounds=", 7) == 0)
            rounds = atoi(s + 7);
        else {
            bench_args t = {1, {s}, 1};
            n = bench_count(&t, 0, -1);
            if (n < 0) {
                fprintf(stderr, "usage: bench_sleepers [N] [sleep|park|million] [reps=K] [--one]\n");
                return 2;
            }
        }
    }
    if (n < 0) n = mode == M_MILLION ? 1000000 : 100000;
    spread = mode == M_MILLION ? NEST_MSEC(1000) : NEST_MSEC(100);
    if (rounds <= 0) rounds = mode == M_MILLION ? 1 : 2;

    if (one) {
        N = n;
        int rc = nest_run(one_run, NULL);
        if (rc < 0) {
            printf("error=nest_run_%s\n", nest_err_name(rc));
            return 1;
        }
        return 0;
    }

    static double wall[BENCH_MAX_REPS], over[BENCH_MAX_REPS], past[BENCH_MAX_REPS],
        rss[BENCH_MAX_REPS], base[BENCH_MAX_REPS], alivev[BENCH_MAX_REPS],
        ph_spawn[BENCH_MAX_REPS], ph_park[BENCH_MAX_REPS], ph_cancel[BENCH_MAX_REPS],
        per_task[BENCH_MAX_REPS], last[BENCH_MAX_REPS], warm[BENCH_MAX_REPS],
        warm_over[BENCH_MAX_REPS], warm_park[BENCH_MAX_REPS], warm_cancel[BENCH_MAX_REPS],
        warm_flt[BENCH_MAX_REPS];
    static char out[4096];
    double spread_ms = (double)spread / 1e6;
    for (int r = 0; r < a.reps; r++) {
        long rss_n, rss_0;
        int rc = run_child(n, out, sizeof out, &rss_n);
        if (rc < 0 || kv(out, "wall_ms") < 0) {
            printf("rep=%d error=child_failed_%s %s\n", r + 1, nest_err_name(rc), out);
            return 1;
        }
        wall[r] = kv(out, "wall_ms");
        over[r] = wall[r] - spread_ms;
        past[r] = kv(out, "past_last_deadline_ms");
        alivev[r] = kv(out, "max_alive");
        ph_spawn[r] = kv(out, "spawn_ms");
        ph_park[r] = kv(out, "park_ms");
        ph_cancel[r] = kv(out, "cancel_ms");
        last[r] = kv(out, "last_start_ms");
        warm[r] = kv(out, "warm_wall_ms");
        warm_over[r] = warm[r] - spread_ms;
        warm_park[r] = kv(out, "warm_park_ms");
        warm_cancel[r] = kv(out, "warm_cancel_ms");
        warm_flt[r] = kv(out, "warm_minflt");
        static char out0[4096];
        rc = run_child(0, out0, sizeof out0, &rss_0);
        if (rc < 0) {
            printf("rep=%d error=baseline_child_failed_%s\n", r + 1, nest_err_name(rc));
            return 1;
        }
        rss[r] = (double)rss_n;
        base[r] = (double)rss_0;
        per_task[r] = n > 0 ? (rss[r] - base[r]) / (double)n : 0;
        printf("rep=%d mode=%s n=%ld wall_ms=%.1f", r + 1, mode_name[mode], n, wall[r]);
        if (mode == M_PARK)
            printf(" spawn_ms=%.1f park_ms=%.1f cancel_ms=%.1f", ph_spawn[r], ph_park[r],
                   ph_cancel[r]);
        else
            printf(" overhead_ms=%.1f past_last_deadline_ms=%.1f spawn_ms=%.1f last_start_ms=%.1f",
                   over[r], past[r], ph_spawn[r], last[r]);
        printf(" max_alive=%.0f peak_rss_kib=%.0f base_rss_kib=%.0f rss_per_task_kib=%.2f"
               " minflt=%.0f",
               alivev[r], rss[r], base[r], per_task[r], kv(out, "minflt"));
        if (rounds > 1) {
            printf(" warm_wall_ms=%.1f", warm[r]);
            if (mode == M_PARK)
                printf(" warm_park_ms=%.1f warm_cancel_ms=%.1f", warm_park[r], warm_cancel[r]);
            else
                printf(" warm_overhead_ms=%.1f", warm_over[r]);
            printf(" warm_minflt=%.0f", warm_flt[r]);
        }
        printf("\n");
        fflush(stdout);
    }
    /* As the peers: RSS/task of each run against the median baseline. */
    double bmed = bench_stats_of(base, a.reps).median;
    for (int r = 0; r < a.reps; r++) per_task[r] = n > 0 ? (rss[r] - bmed) / (double)n : 0;
    printf("mode=%s n=%ld", mode_name[mode], n);
    bench_print_stats("wall_ms", wall, a.reps, 1);
    if (mode == M_PARK) {
        bench_print_stats("spawn_ms", ph_spawn, a.reps, 1);
        bench_print_stats("park_ms", ph_park, a.reps, 1);
        bench_print_stats("cancel_ms", ph_cancel, a.reps, 1);
    } else {
        bench_print_stats("overhead_ms", over, a.reps, 1);
        bench_print_stats("past_last_deadline_ms", past, a.reps, 1);
        bench_print_stats("last_start_ms", last, a.reps, 1);
    }
    if (rounds > 1) {
        bench_print_stats("warm_wall_ms", warm, a.reps, 1);
        if (mode == M_PARK) {
            bench_print_stats("warm_park_ms", warm_park, a.reps, 1);
            bench_print_stats("warm_cancel_ms", warm_cancel, a.reps, 1);
        } else {
            bench_print_stats("warm_overhead_ms", warm_over, a.reps, 1);
        }
        bench_print_stats("warm_minflt", warm_flt, a.reps, 0);
    }
    bench_print_stats("max_alive", alivev, a.reps, 0);
    bench_print_stats("peak_rss_kib", rss, a.reps, 0);
    printf(" base_rss_kib_median=%.0f", bmed);
    bench_print_stats("rss_per_task_kib", per_task, a.reps, 2);
    printf("\n");
    return 0;
}
