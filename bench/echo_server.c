/*
 * bench/echo_server.c - a single-threaded nest TCP echo server, one task
 * per connection: the peers' echo benchmark (../shared/peers/README.md,
 * "echo"; same protocol as peers/src/libev/echo_server.c).
 *
 *     bench_echo_server PORT [SECONDS] [THREADS]
 *
 * Listens on 127.0.0.1:PORT with nest_serve_tcp (SO_REUSEADDR, default
 * backlog), prints READY once listening, and runs each connection's
 * handler in its own task: receive_some into a 16 KiB buffer on the task's
 * stack, send_all it back, until EOF.  Runs until killed (the peers' driver
 * sends SIGTERM), or for SECONDS if given.  Drive it with the common load
 * client, pinned as the peers do:
 *
 *     taskset -c 0 bench_echo_server 47000 &
 *     taskset -c 1 loadclient 47000 100 5 64 0.5 $!
 *
 * (build loadclient from ../shared/peers/src/libev/loadclient.c with
 * gcc -O2 ... -lev, outside the repository).
 *
 * With THREADS >= 1 the same handler is served by nest_serve_tcp_threads:
 * THREADS threads, each with its own runtime and its own SO_REUSEPORT
 * listener on PORT (0 for SECONDS: until killed).  Pin it to as many CPUs
 * as it has threads (taskset -c 0,1) to compare with the one-thread server.
 */
#include "bench.h" /* first: it defines _GNU_SOURCE */

#include <nest/net.h>
#include <nest/stream.h>

static int echo(nest_stream *s, void *arg) {
    (void)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = nest_stream_receive_some(s, buf, sizeof buf);
        if (n <= 0) return 0; /* EOF, or the client reset: not the server's failure */
        if (nest_stream_send_all(s, buf, (size_t)n, NULL) < 0) return 0;
    }
}

static int port, seconds, threads;

static int server(void *arg) {
    (void)arg;
    if (threads > 0) return nest_serve_tcp_threads(threads, port, "127.0.0.1", echo, NULL, NULL);
    return nest_serve_tcp(port, "127.0.0.1", echo, NULL, NULL);
}

static int main_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_start(&n, server, NULL, NULL);
    if (rc == 0) {
        /* nest_serve_tcp has listened before nest_start returned. */
        printf("READY\n");
        fflush(stdout);
        if (seconds > 0) {
            nest_sleep(NEST_SEC(seconds));
            nest_nursery_cancel(&n);
        }
    }
    return nest_nursery_close(&n, rc);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [SECONDS] [THREADS]\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    seconds = argc > 2 ? atoi(argv[2]) : 0;
    threads = argc > 3 ? atoi(argv[3]) : 0;
    int rc = nest_run(main_task, NULL);
    if (rc < 0) fprintf(stderr, "bench_echo_server: %s\n", nest_strerror(rc));
    return rc < 0;
}
