/*
 * 11-fetch-many.c - fetching from many servers with a deadline per request
 * and one for the whole batch.
 *
 * The program starts four small local servers that answer "GET n" after a
 * fixed think time (10, 120, 230 and 400 ms) and finds a fifth port where
 * nothing listens.  Then it fetches five pages from each, one after another
 * per server and all servers at once:
 *
 *   - every request (connect, send, read the reply to EOF) gets 300 ms:
 *     nest_fail_after turns its expiry into -ETIMEDOUT;
 *   - the batch gets 1 s: a deadline on the nursery's own scope cancels
 *     whatever is still running then, and the nursery absorbs it.
 *
 * Neither deadline is a parameter of any call: the scopes around the calls
 * carry them, and the innermost one wins.  Look for: the 10 ms and 120 ms
 * servers deliver every page; the 400 ms server times out on each request
 * until the batch deadline cuts its fourth; the 230 ms server gets four
 * pages before the batch ends; the closed port is refused at once; the
 * batch ends at 1000 ms.
 *
 * The run succeeds when the outcomes that do not depend on how busy the
 * machine is came out as described: every fast page, no slow one, every
 * request to the closed port refused.
 */
#include <stdio.h>
#include <string.h>

#include <nest.h>
#include <nest/net.h>
#include <nest/stream.h>

struct target {
    const char *name;
    int think_ms;             /* the server's; -1: no server at all */
    int port;
    int ok, timed_out, cut, failed;
};

static struct target targets[] = {
    {"fast (10 ms)", 10, 0, 0, 0, 0, 0},      {"medium (120 ms)", 120, 0, 0, 0, 0, 0},
    {"steady (230 ms)", 230, 0, 0, 0, 0, 0},  {"slow (400 ms)", 400, 0, 0, 0, 0, 0},
    {"nobody listening", -1, 0, 0, 0, 0, 0},
};
#define NTARGETS (int)(sizeof targets / sizeof targets[0])

/* Server side: read "GET n\n", think, answer, close (nest closes the stream). */
static int answer(nest_stream *s, void *arg) {
    struct target *t = arg;
    char req[32];
    ssize_t n = nest_stream_receive_some(s, req, sizeof req - 1);
    if (n <= 0) return 0;
    int rc = nest_sleep(NEST_MSEC(t->think_ms));
    if (rc < 0) return rc;
    char reply[64];
    int len = snprintf(reply, sizeof reply, "%.*s from %s\n", (int)n - 1, req, t->name);
    nest_stream_send_all(s, reply, (size_t)len, NULL);
    return 0;
}

static int serve(void *arg) { return nest_serve_tcp(0, "127.0.0.1", answer, arg, NULL); }

/* Client side: one request, to EOF. */
static int fetch(struct target *t, int page) {
    nest_socket_stream c;
    int rc = nest_tcp_connect("127.0.0.1", t->port, NULL, &c);
    if (rc < 0) return rc;
    char buf[128];
    int len = snprintf(buf, sizeof buf, "GET %d\n", page);
    rc = nest_stream_send_all(&c.stream, buf, (size_t)len, NULL);
    ssize_t n = 1;
    while (rc == 0 && n > 0)
        if ((n = nest_stream_receive_some(&c.stream, buf, sizeof buf)) < 0) rc = (int)n;
    nest_stream_close(&c.stream);
    return rc;
}

static int fetch_pages(void *arg) {
    struct target *t = arg;
    for (int page = 1; page <= 5; page++) {
        nest_scope s;
        nest_fail_after(&s, NEST_MSEC(300));
        int rc = fetch(t, page);
        rc = nest_scope_exit(&s, rc); /* -ETIMEDOUT if *this* request ran out */
        if (rc == 0) t->ok++;
        else if (rc == -ETIMEDOUT) t->timed_out++;
        else if (rc == -ECANCELED) return t->cut++, rc; /* the batch ran out */
        else t->failed++;
        if (rc < 0 && rc != -ETIMEDOUT && t->failed == 1) printf("  %s: %s\n", t->name, nest_strerror(rc));
    }
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    nest_nursery servers;
    nest_nursery_open(&servers);
    int rc = 0;
    for (int i = 0; i < NTARGETS && rc == 0; i++) {
        void *v;
        if (targets[i].think_ms < 0) { /* a port nobody listens on */
            nest_listener l;
            if ((rc = nest_tcp_listen("127.0.0.1", 0, NULL, &l, 1)) < 0) break;
            targets[i].port = nest_listener_port(&l);
            nest_listener_close(&l), rc = 0;
        } else if ((rc = nest_start(&servers, serve, &targets[i], &v)) == 0) {
            targets[i].port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
        }
    }
    if (rc == 0) {
        nest_time t0 = nest_now();
        nest_nursery batch;
        nest_nursery_open(&batch);
        nest_scope_set_deadline(nest_nursery_scope(&batch), t0 + NEST_SEC(1));
        for (int i = 0; i < NTARGETS && rc == 0; i++) rc = nest_spawn(&batch, fetch_pages, &targets[i]);
        rc = nest_nursery_close(&batch, rc); /* absorbs the batch deadline */
        printf("batch done after %lld ms\n", (long long)((nest_now() - t0) / NEST_MSEC(1)));
        for (int i = 0; i < NTARGETS; i++)
            printf("  %-17s %d ok, %d timed out, %d failed, %d cut by the batch deadline\n",
                   targets[i].name, targets[i].ok, targets[i].timed_out, targets[i].failed,
                   targets[i].cut);
        int ok = targets[0].ok == 5 && targets[3].ok == 0 && targets[3].timed_out >= 1 &&
                 targets[4].failed == 5;
        printf("%s\n", ok ? "ok" : "FAILED: not the outcomes described at the top");
        if (rc == 0 && !ok) rc = -EPROTO;
    }
    nest_nursery_cancel(&servers);
    return nest_nursery_close(&servers, rc);
}

int main(void) { return nest_run(main_task, NULL) < 0; }
