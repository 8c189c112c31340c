/*
 * 12-to-thread.c - calling blocking code without blocking the other tasks.
 *
 * A blocking call (a slow file read, a library with no non-blocking API,
 * a long computation) would stop every task of the runtime, since they all
 * share one thread.  nest_to_thread() runs it on a worker thread instead
 * and parks only the calling task until it returns.
 *
 * Three tasks each hash a large buffer on a worker thread while a fourth
 * prints a heartbeat every 20 ms: the heartbeats keep coming.  Then a
 * deadline cancels a slow job: by default the task waits for the job to
 * finish (its buffer lives on the task's stack), and only then reports
 * -ECANCELED.  Finally another thread calls into the runtime through a
 * token (nest_token_run): the function runs as a task of the runtime.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include <nest.h>
#include <nest/thread.h>

static nest_time start;
static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

/* Blocking work: about 60 ms of sleeping and a checksum. */
static int checksum(void *arg) {
    unsigned char *buf = arg;
    unsigned sum = 0;
    usleep(60000);
    for (int i = 0; i < 4096; i++) sum = sum * 31 + buf[i];
    return (int)(sum & 0x7fffffff);
}

static int hasher(void *arg) {
    unsigned char buf[4096];
    for (int i = 0; i < 4096; i++) buf[i] = (unsigned char)(i * (int)(intptr_t)arg);
    int sum = 0;
    int rc = nest_to_thread(checksum, buf, &sum, 0);
    printf("%4lld ms  hasher %d: %s, checksum %d\n", ms(), (int)(intptr_t)arg, nest_err_name(rc),
           sum);
    return rc;
}

static int heartbeat(void *arg) {
    (void)arg;
    for (int i = 0; i < 4; i++) {
        printf("%4lld ms  heartbeat\n", ms());
        nest_sleep(NEST_MSEC(20));
    }
    return 0;
}

static int cancelled_job(void) {
    unsigned char buf[4096] = {0};
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(10));
    int sum = 0;
    int rc = nest_to_thread(checksum, buf, &sum, 0); /* waits for the job */
    printf("%4lld ms  cancelled after 10 ms, returned at job end: %s (result kept: %d)\n", ms(),
           nest_err_name(rc), sum);
    return nest_scope_exit(&s, rc);
}

static nest_token *tok;

static int in_runtime(void *arg) {
    printf("%4lld ms  in the runtime, as task '%s', asked by %s\n", ms(),
           nest_task_name(nest_current_task()), (const char *)arg);
    return 99;
}

static void *foreign(void *arg) {
    (void)arg;
    int r = 0;
    int rc = nest_token_run(tok, in_runtime, "a plain pthread", &r);
    printf("         the pthread got %s, %d\n", nest_err_name(rc), r);
    return NULL;
}

static int join(void *arg) {
    return pthread_join(*(pthread_t *)arg, NULL);
}

static int run(void *arg) {
    (void)arg;
    start = nest_now();
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 1; i <= 3; i++) nest_spawn(&n, hasher, (void *)i);
    nest_spawn(&n, heartbeat, NULL);
    int rc = nest_nursery_close(&n, 0);
    if (rc < 0) return rc;
    start = nest_now();
    if ((rc = cancelled_job()) < 0) return rc;
    tok = nest_token_get();
    pthread_t th;
    pthread_create(&th, NULL, foreign, NULL);
    rc = nest_to_thread(join, &th, NULL, 0); /* joining blocks too */
    nest_token_release(tok);
    return rc;
}

int main(void) {
    int rc = nest_run(run, NULL);
    printf("nest_run: %s\n", nest_err_name(rc));
    return rc < 0;
}
