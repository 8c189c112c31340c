/*
 * 10-echo-server.c - a TCP echo server: one task per connection.
 *
 *     10-echo-server                    self-test: serve, run 1000 clients at once, exit
 *     10-echo-server --clients 10000    the same with 10,000 connections
 *     10-echo-server --self-test        the same with 50 (quick; what ctest runs)
 *     10-echo-server --port 7000 [--seconds 30]
 *                                       serve 127.0.0.1:7000 for 30 s (try: nc 127.0.0.1 7000)
 *
 * nest_serve_tcp() accepts connections and runs echo() in a new task for
 * each: plain blocking-style code, thousands of tasks on one thread.  The
 * handler's errors (a client that resets) end only that connection:
 * on_error logs the first, counts them all, and returns 0.  The server runs in a nursery, started
 * with nest_start() so that main learns the port (port 0: any free port);
 * cancelling the nursery stops the server and every connection.
 *
 * The self-test's clients connect at once and wait (in a parking lot) until
 * the server holds all N connections before their round trips start.  Each connection costs two file descriptors here (the
 * client's and the server's end): 10,000 clients need `ulimit -n` above
 * 20,000.  nest raises the soft limit to the hard one when it opens the
 * listener; raise the hard limit (as root, or in limits.conf) if it is too
 * low.  Look for: the number of connections held at once, and "ok".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nest.h>
#include <nest/net.h>
#include <nest/stream.h>

static int live, most, port, nclients = 1000, rounds = 3;
static long round_trips, failures;
static nest_parking_lot all_connected = NEST_PARKING_LOT_INIT; /* nest/lowlevel.h */

static int echo(nest_stream *s, void *arg) {
    (void)arg;
    char buf[4096];
    ssize_t n;
    if (++live > most) most = live;
    if (live == nclients) nest_unpark_all(&all_connected, 0); /* self-test: go */
    while ((n = nest_stream_receive_some(s, buf, sizeof buf)) > 0) {
        int rc = nest_stream_send_all(s, buf, (size_t)n, NULL);
        if (rc < 0) {
            n = rc;
            break;
        }
    }
    live--;
    return n < 0 ? (int)n : 0; /* 0 at EOF */
}

static int log_error(void *arg, int rc) {
    (void)arg;
    if (failures++ == 0) /* the first one; the others are counted */
        fprintf(stderr, "echo: a connection failed: %s\n", nest_strerror(rc));
    return 0; /* keep serving */
}

static int client(void *arg) {
    int id = (int)(intptr_t)arg;
    nest_socket_stream c;
    int rc = nest_tcp_connect("127.0.0.1", port, NULL, &c);
    if (rc < 0) return rc;
    nest_waiter w; /* wait until the server holds every connection */
    if (most < nclients) rc = nest_park(&all_connected, &w, NULL, NULL);
    char msg[64], back[64];
    for (int r = 0; r < rounds && rc == 0; r++) {
        int len = snprintf(msg, sizeof msg, "client %d, round %d\n", id, r);
        rc = nest_stream_send_all(&c.stream, msg, (size_t)len, NULL);
        for (int got = 0; rc == 0 && got < len;) {
            ssize_t n = nest_stream_receive_some(&c.stream, back + got, (size_t)(len - got));
            if (n <= 0) rc = n < 0 ? (int)n : -EPROTO; /* EOF before the echo */
            got += n > 0 ? (int)n : 0;
        }
        if (rc == 0 && memcmp(msg, back, (size_t)len) != 0) rc = -EPROTO;
        if (rc == 0) round_trips++;
    }
    nest_stream_close(&c.stream);
    return rc;
}

static int server(void *arg) {
    static nest_serve_options o; /* zero: the defaults */
    o.on_error = log_error;
    return nest_serve_tcp(port, "127.0.0.1", echo, arg, &o);
}

static int main_task(void *arg) {
    int seconds = *(int *)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    void *v;
    int rc = nest_start(&n, server, NULL, &v);
    if (rc == 0) {
        port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
        printf("echo server on 127.0.0.1:%d\n", port);
        fflush(stdout);
        if (seconds > 0) {
            nest_sleep(NEST_SEC(seconds));
            printf("served for %d s, at most %d connections at once, %ld failed\n", seconds,
                   most, failures);
        } else { /* self-test: every client in one nursery, 30 s for all */
            nest_time t0 = nest_now();
            nest_scope s;
            nest_fail_after(&s, NEST_SEC(30));
            nest_nursery clients;
            nest_nursery_open(&clients);
            for (int i = 0; i < nclients && rc == 0; i++)
                rc = nest_spawn(&clients, client, (void *)(intptr_t)i);
            rc = nest_nursery_close(&clients, rc);
            rc = nest_scope_exit(&s, rc); /* -ETIMEDOUT after 30 s */
            printf("%d clients, %ld round trips in %lld ms; the server held %d connections at "
                   "once: %s\n", nclients, round_trips,
                   (long long)((nest_now() - t0) / NEST_MSEC(1)), most,
                   rc == 0 ? "ok" : nest_strerror(rc));
        }
    }
    nest_nursery_cancel(&n); /* stops the server and every connection */
    return nest_nursery_close(&n, rc);
}

int main(int argc, char **argv) {
    int seconds = 0;
    if (argc > 1 && strcmp(argv[1], "--self-test") == 0) {
        /* Few enough connections for any open-file limit and a sanitizer
         * build, enough to have many tasks in flight at once. */
        nclients = 50;
        argc = 1;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--clients") == 0) nclients = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]), seconds = 30;
        else if (strcmp(argv[i], "--seconds") == 0) seconds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0) rounds = atoi(argv[i + 1]);
    }
    int rc = nest_run(main_task, &seconds);
    if (rc < 0) fprintf(stderr, "10-echo-server: %s\n", nest_strerror(rc));
    return rc < 0;
}
