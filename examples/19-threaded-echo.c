/*
 * 19-threaded-echo.c - one echo server on several threads: one runtime per
 * thread, all listening on the same port (SO_REUSEPORT).
 *
 *     19-threaded-echo                      self-test: 2 threads, 1000 clients, exit
 *     19-threaded-echo --threads 4 --clients 5000
 *     19-threaded-echo --port 7000 [--threads 2] [--seconds 30]
 *                                           serve 127.0.0.1:7000 (try: nc 127.0.0.1 7000)
 *
 * nest_serve_tcp_threads() starts N threads, each running its own nest
 * runtime with its own listener on the port, and serves each connection
 * in a task of the thread whose listener the kernel picked - the same
 * echo() as in 10-echo-server, now on N cores.  What changes for the
 * handler: it runs on several threads at once, so anything it shares
 * across threads must be thread-safe.  Here each thread gets its own
 * counters through thread_init (no locks: only that thread touches them),
 * and the one process-wide total is an atomic.
 *
 * The server is started with nest_start(), so main learns the port; the
 * clients run as tasks in main's runtime (a third runtime, on the main
 * thread).  Cancelling the server's nursery stops every thread; the call
 * returns once they have all finished, and thread_fini prints each
 * thread's share.  Look for: every client's round trips, the connections
 * spread over the threads, and "ok".
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nest.h>
#include <nest/net.h>
#include <nest/stream.h>

#define MAX_THREADS 64

/* One thread's state: only that thread's tasks touch it. */
struct thread_state {
    int index;
    long connections, bytes;
};

static struct thread_state states[MAX_THREADS];
static atomic_long total_connections; /* shared by every thread */
static int port, nthreads = 2, nclients = 1000, rounds = 3;

static int thread_init(void *arg, int index, void **handler_arg) {
    (void)arg;
    states[index].index = index;
    *handler_arg = &states[index]; /* this thread's handlers get their own */
    return 0;
}

static void thread_fini(void *arg, int index, void *handler_arg) {
    (void)arg;
    struct thread_state *st = handler_arg;
    printf("  thread %d served %ld connections, %ld bytes\n", index, st->connections,
           st->bytes);
}

static int echo(nest_stream *s, void *arg) {
    struct thread_state *st = arg;
    st->connections++;
    atomic_fetch_add(&total_connections, 1);
    char buf[4096];
    ssize_t n;
    while ((n = nest_stream_receive_some(s, buf, sizeof buf)) > 0) {
        st->bytes += n;
        int rc = nest_stream_send_all(s, buf, (size_t)n, NULL);
        if (rc < 0) return 0; /* the client went away: not the server's failure */
    }
    return 0;
}

static int server(void *arg) {
    (void)arg;
    nest_serve_threads_options o;
    nest_serve_threads_options_init(&o);
    o.thread_init = thread_init;
    o.thread_fini = thread_fini;
    return nest_serve_tcp_threads(nthreads, port, "127.0.0.1", echo, NULL, &o);
}

static long round_trips;

static int client(void *arg) {
    int id = (int)(intptr_t)arg;
    nest_socket_stream c;
    int rc = nest_tcp_connect("127.0.0.1", port, NULL, &c);
    if (rc < 0) return rc;
    char msg[64], back[64];
    for (int r = 0; r < rounds && rc == 0; r++) {
        int len = snprintf(msg, sizeof msg, "client %d, round %d\n", id, r);
        rc = nest_stream_send_all(&c.stream, msg, (size_t)len, NULL);
        for (int got = 0; rc == 0 && got < len;) {
            ssize_t n = nest_stream_receive_some(&c.stream, back + got, (size_t)(len - got));
            if (n <= 0) rc = n < 0 ? (int)n : -EPROTO;
            got += n > 0 ? (int)n : 0;
        }
        if (rc == 0 && memcmp(msg, back, (size_t)len) != 0) rc = -EPROTO;
        if (rc == 0) round_trips++; /* main's runtime only: no atomic needed */
    }
    nest_stream_close(&c.stream);
    return rc;
}

static int main_task(void *arg) {
    int seconds = *(int *)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    void *v;
    int rc = nest_start(&n, server, NULL, &v);
    if (rc == 0) {
        port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
        printf("echo server on 127.0.0.1:%d, %d threads\n", port, nthreads);
        fflush(stdout);
        if (seconds > 0) {
            nest_sleep(NEST_SEC(seconds));
        } else { /* self-test: every client at once, 30 s for all */
            nest_scope s;
            nest_fail_after(&s, NEST_SEC(30));
            nest_nursery clients;
            nest_nursery_open(&clients);
            for (int i = 0; i < nclients && rc == 0; i++)
                rc = nest_spawn(&clients, client, (void *)(intptr_t)i);
            rc = nest_nursery_close(&clients, rc);
            rc = nest_scope_exit(&s, rc);
            printf("%d clients, %ld round trips: %s\n", nclients, round_trips,
                   rc == 0 ? "ok" : nest_strerror(rc));
        }
    }
    nest_nursery_cancel(&n); /* stops every thread; thread_fini prints below */
    rc = nest_nursery_close(&n, rc);
    printf("server stopped; %ld connections in all\n", atomic_load(&total_connections));
    return rc;
}

int main(int argc, char **argv) {
    int seconds = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) nthreads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--clients") == 0) nclients = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]), seconds = 30;
        else if (strcmp(argv[i], "--seconds") == 0) seconds = atoi(argv[i + 1]);
    }
    if (nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "19-threaded-echo: --threads must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    int rc = nest_run(main_task, &seconds);
    if (rc < 0) fprintf(stderr, "19-threaded-echo: %s\n", nest_strerror(rc));
    return rc < 0;
}
