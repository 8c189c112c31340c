/*
 * lib/stream_check.c - the stream conformance check (nest/stream_check.h).
 *
 * Each sub-check opens a fresh pair, runs helper tasks in a nursery of its
 * own and closes both ends.  Helpers synchronise with the checking task
 * through nest_wait_all_tasks_blocked() (a quiet point: every task blocked
 * and no I/O ready), never through the clock, so the check is exact on the
 * mock clock and on real sockets alike.
 *
 * Bytes sent are a pattern of their offset in the stream (pat()), so a
 * receiver checks order and content, and a partial send that reported a
 * wrong count shows up as a wrong byte or a wrong total.
 *
 * Whether an operation yields is observed with a sibling task spawned just
 * before it: if the operation yields, the sibling may run before the
 * operation returns.  Under FIFO scheduling it always does; under a
 * randomised order (NEST_SEED) only sometimes, so that check repeats up to
 * 32 times and passes if the sibling ever ran inside the operation (an
 * operation that never yields can never let it).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "nest/error.h"
#include "nest/nursery.h"
#include "nest/runtime.h"
#include "nest/scope.h"
#include "nest/stream_check.h"
#include "nest/time.h"

#define BUF 65536
#define NBUF 4

struct chk {
    const nest_stream_check_options *o;
    char *msg;
    size_t msglen;
    int rc;                 /* the first failure, 0 so far */
    const char *what;       /* the sub-check running */
    nest_stream *a, *b;     /* the current pair, NULL when closed */
    unsigned char *buf[NBUF];
    /* Shared with helper tasks. */
    nest_scope *scope;      /* a helper's scope the checker cancels */
    int res[2];             /* helpers' results */
    size_t off;             /* bytes a helper sent */
    int ran;                /* the yield probe ran */
};

static unsigned char pat(size_t off) { return (unsigned char)((off * 2654435761u) >> 13); }

static int fail(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct chk *c, const char *fmt, ...) {
    if (c->rc == -ENOMEM) return -ENOMEM; /* a consequence of running out */
    if (c->rc == 0) {
        c->rc = -EPROTO;
        if (c->msg && c->msglen) {
            int n = snprintf(c->msg, c->msglen, "stream check '%s': ", c->what);
            if (n >= 0 && (size_t)n < c->msglen) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(c->msg + n, c->msglen - (size_t)n, fmt, ap);
                va_end(ap);
            }
        }
    }
    return -EPROTO;
}

/* Records an out-of-memory result of an operation (nest_stream_* may fail
 * with -ENOMEM, e.g. when an fd wait cannot allocate): the check then ends
 * with -ENOMEM rather than a contract violation.  Returns rc. */
static long nomem(struct chk *c, long rc) {
    if (rc == -ENOMEM && c->rc == 0) {
        c->rc = -ENOMEM;
        if (c->msg && c->msglen)
            snprintf(c->msg, c->msglen, "stream check '%s': out of memory", c->what);
    }
    return rc;
}

static int c_send(struct chk *c, nest_stream *s, const void *buf, size_t len, size_t *sent) {
    return (int)nomem(c, nest_stream_send_all(s, buf, len, sent));
}
static ssize_t c_recv(struct chk *c, nest_stream *s, void *buf, size_t max) {
    return nomem(c, nest_stream_receive_some(s, buf, max));
}
static int c_eof(struct chk *c, nest_stream *s) { return (int)nomem(c, nest_stream_send_eof(s)); }

#define EXPECT(c, cond, ...) \
    do {                                                   \
        if (!(cond)) return fail((c), __VA_ARGS__);        \
    } while (0)

/* ---- helpers ------------------------------------------------------------- */

/* Sends pattern bytes [off, off + len) on s, using scratch buffer bi;
 * *sent gets how many went out. */
static int send_pat(struct chk *c, nest_stream *s, int bi, size_t off, size_t len,
                    size_t *sent) {
    size_t done = 0;
    while (done < len) {
        size_t n = len - done < BUF ? len - done : BUF;
        for (size_t i = 0; i < n; i++) c->buf[bi][i] = pat(off + done + i);
        size_t k = 0;
        int rc = c_send(c, s, c->buf[bi], n, &k);
        done += k;
        if (rc < 0) {
            if (sent) *sent = done;
            return rc;
        }
    }
    if (sent) *sent = done;
    return 0;
}

/* Receives exactly len pattern bytes starting at stream offset off, with
 * read sizes cycling through a few values (step != 0) or BUF. */
static int recv_pat(struct chk *c, nest_stream *s, int bi, size_t off, size_t len, int step) {
    static const size_t sizes[] = {1, 7, 100, 4096, BUF, 3, 1500};
    size_t got = 0;
    unsigned k = 0;
    while (got < len) {
        size_t max = step ? sizes[k++ % (sizeof sizes / sizeof sizes[0])] : BUF;
        if (max > len - got) max = len - got;
        ssize_t n = c_recv(c, s, c->buf[bi], max);
        if (n < 0) return n == -ECANCELED ? (int)n : fail(c, "receive_some failed with %s after %zu of %zu bytes", nest_err_name((int)n), got, len);
        EXPECT(c, n > 0, "EOF after %zu of %zu bytes", got, len);
        EXPECT(c, (size_t)n <= max, "receive_some(max=%zu) returned %zd bytes", max, n);
        for (ssize_t i = 0; i < n; i++)
            EXPECT(c, c->buf[bi][i] == pat(off + got + (size_t)i),
                   "wrong byte at stream offset %zu", off + got + (size_t)i);
        got += (size_t)n;
    }
    return 0;
}

/* Receives exactly len bytes into buf. */
static int recv_exact(struct chk *c, nest_stream *s, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = c_recv(c, s, (char *)buf + got, len - got);
        if (n < 0) return fail(c, "receive_some failed with %s", nest_err_name((int)n));
        EXPECT(c, n > 0, "EOF after %zu of %zu bytes", got, len);
        got += (size_t)n;
    }
    return 0;
}

static int send_str(struct chk *c, nest_stream *s, const char *str) {
    int rc = c_send(c, s, str, strlen(str), NULL);
    EXPECT(c, rc == 0, "send_all of \"%s\" failed with %s", str, nest_err_name(rc));
    return 0;
}

struct sender {
    struct chk *c;
    nest_stream *s;
    const char *str;
};

static int sender_task(void *arg) {
    struct sender *t = arg;
    return send_str(t->c, t->s, t->str);
}

static int expect_str(struct chk *c, nest_stream *s, const char *str);

/* Sends str on from while receiving it on to, so that it need not fit in
 * the transport's buffer. */
static int exchange(struct chk *c, nest_stream *from, nest_stream *to, const char *str) {
    struct sender t = {c, from, str};
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, sender_task, &t);
    if (rc == 0) rc = expect_str(c, to, str);
    return nest_nursery_close(&n, rc);
}

static int expect_str(struct chk *c, nest_stream *s, const char *str) {
    char got[64];
    size_t n = strlen(str);
    int rc = recv_exact(c, s, got, n);
    if (rc < 0) return rc;
    EXPECT(c, memcmp(got, str, n) == 0, "expected \"%s\", got \"%.*s\"", str, (int)n, got);
    return 0;
}

static int quiet(struct chk *c) {
    int rc = nest_wait_all_tasks_blocked();
    return rc < 0 ? rc : c->rc;
}

/* ---- 1. transfer: both directions at once, any read size ----------------- */

static int t_send_ab(void *arg) {
    struct chk *c = arg;
    int rc = send_pat(c, c->a, 0, 0, 300000, NULL);
    return rc < 0 ? fail(c, "send_all a->b failed with %s", nest_err_name(rc)) : 0;
}
static int t_recv_ab(void *arg) {
    struct chk *c = arg;
    return recv_pat(c, c->b, 1, 0, 300000, 1);
}
static int t_send_ba(void *arg) {
    struct chk *c = arg;
    int rc = send_pat(c, c->b, 2, 0, 100000, NULL);
    return rc < 0 ? fail(c, "send_all b->a failed with %s", nest_err_name(rc)) : 0;
}
static int t_recv_ba(void *arg) {
    struct chk *c = arg;
    return recv_pat(c, c->a, 3, 0, 100000, 1);
}

static int check_transfer(struct chk *c) {
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, t_send_ab, c);
    if (rc == 0) rc = nest_spawn(&n, t_recv_ab, c);
    if (rc == 0) rc = nest_spawn(&n, t_send_ba, c);
    if (rc == 0) rc = nest_spawn(&n, t_recv_ba, c);
    rc = nest_nursery_close(&n, rc);
    if (rc < 0) return rc;
    /* receive_some honours max even when more is available. */
    struct sender t = {c, c->a, "0123456789"};
    nest_nursery_open(&n);
    rc = nest_spawn(&n, sender_task, &t);
    if (rc == 0) rc = quiet(c); /* as much as the transport holds is there */
    if (rc == 0) {
        char b3[3];
        ssize_t got = c_recv(c, c->b, b3, 3);
        if (got < 1 || got > 3) rc = fail(c, "receive_some(max=3) returned %zd", got);
        else if (memcmp(b3, "012", (size_t)got) != 0) rc = fail(c, "receive_some(max=3) got the wrong bytes");
        else rc = expect_str(c, c->b, &"0123456789"[got]);
    }
    return nest_nursery_close(&n, rc);
}

/* ---- 2. checkpoints ------------------------------------------------------ */

static int probe(void *arg) {
    ((struct chk *)arg)->ran = 1;
    return 0;
}

/* Whether op (one of the calls below) lets a sibling run; see the file
 * comment. */
enum { OP_SEND, OP_RECV, OP_SEND0 };

static int run_op(struct chk *c, int op) {
    char ch;
    switch (op) {
    case OP_SEND: return c_send(c, c->a, "y", 1, NULL);
    case OP_SEND0: return c_send(c, c->a, "", 0, NULL);
    default: {
        ssize_t n = c_recv(c, c->b, &ch, 1);
        return n == 1 && ch == 'y' ? 0 : n < 0 ? (int)n : fail(c, "received the wrong byte");
    }
    }
}

static int check_yields(struct chk *c, int op, const char *name) {
    for (int trial = 0; trial < 32; trial++) {
        int rc;
        if (op == OP_RECV && (rc = send_str(c, c->a, "y")) < 0) return rc;
        /* Let everything settle, so the byte is there and the probe is the
         * only other runnable task. */
        if ((rc = quiet(c)) < 0) return rc;
        nest_nursery n;
        nest_nursery_open(&n);
        c->ran = 0;
        rc = nest_spawn(&n, probe, c);
        int ran = 0;
        if (rc == 0) {
            rc = run_op(c, op);
            ran = c->ran;
            if (rc < 0 && c->rc == 0) fail(c, "%s failed with %s", name, nest_err_name(rc));
        }
        rc = nest_nursery_close(&n, rc);
        if (rc < 0) return rc;
        if (op == OP_SEND && (rc = expect_str(c, c->b, "y")) < 0) return rc;
        if (ran) return 0;
    }
    return fail(c, "%s completed without yielding (every call must be a checkpoint)", name);
}

static int check_checkpoints(struct chk *c) {
    int rc;
    if ((rc = check_yields(c, OP_SEND, "send_all")) < 0) return rc;
    if ((rc = check_yields(c, OP_SEND0, "send_all of 0 bytes")) < 0) return rc;
    if ((rc = check_yields(c, OP_RECV, "receive_some")) < 0) return rc;
    char ch;
    ssize_t n = c_recv(c, c->b, &ch, 0);
    EXPECT(c, n == -EINVAL, "receive_some(max=0) returned %zd, expected -EINVAL", n);

    /* In a cancelled scope every operation fails at once, with no effect. */
    if ((rc = send_str(c, c->a, "Q")) < 0) return rc;
    if ((rc = quiet(c)) < 0) return rc;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    size_t sent = 99;
    int r1 = c_send(c, c->a, "X", 1, &sent);
    ssize_t r2 = c_recv(c, c->b, &ch, 1);
    int r3 = c_eof(c, c->a);
    nest_scope_exit(&s, -ECANCELED);
    EXPECT(c, r1 == -ECANCELED && sent == 0,
           "send_all in a cancelled scope returned %s, sent %zu", nest_err_name(r1), sent);
    EXPECT(c, r2 == -ECANCELED, "receive_some in a cancelled scope returned %zd", r2);
    EXPECT(c, r3 == -ECANCELED, "send_eof in a cancelled scope returned %s", nest_err_name(r3));
    /* The 'Q' is still there (nothing was consumed), no 'X' went out, and
     * no EOF: the next bytes are 'Q' then 'Z'. */
    if ((rc = expect_str(c, c->b, "Q")) < 0) return rc;
    return exchange(c, c->a, c->b, "Z");
}

/* ---- 3. two at once: -EBUSY ---------------------------------------------- */

struct helper {
    struct chk *c;
    int i; /* which of c->res it reports in */
};

static int busy_sender(void *arg) {
    struct helper *h = arg;
    h->c->res[h->i] = c_send(h->c, h->c->a, "s", 1, NULL);
    return 0;
}

static int busy_receiver(void *arg) {
    struct helper *h = arg;
    char ch = 0;
    ssize_t n = c_recv(h->c, h->c->b, &ch, 1);
    h->c->res[h->i] = n == 1 ? (ch == 'r' ? 0 : fail(h->c, "wrong byte")) : (int)n;
    return 0;
}

static int check_busy(struct chk *c) {
    for (int kind = 0; kind < 2; kind++) {
        struct helper h[2] = {{c, 0}, {c, 1}};
        c->res[0] = c->res[1] = 1;
        nest_nursery n;
        nest_nursery_open(&n);
        nest_fn fn = kind == 0 ? busy_sender : busy_receiver;
        int rc = nest_spawn(&n, fn, &h[0]);
        if (rc == 0) rc = nest_spawn(&n, fn, &h[1]);
        if (rc == 0 && kind == 1) { /* one receiver is blocked, one got -EBUSY */
            rc = quiet(c);
            if (rc == 0) rc = send_str(c, c->a, "r");
        }
        rc = nest_nursery_close(&n, rc);
        if (rc < 0) return rc;
        const char *what = kind == 0 ? "send_all" : "receive_some";
        EXPECT(c, (c->res[0] == 0 && c->res[1] == -EBUSY) || (c->res[0] == -EBUSY && c->res[1] == 0),
               "two concurrent %s calls returned %s and %s; expected one 0 and one -EBUSY", what,
               nest_err_name(c->res[0]), nest_err_name(c->res[1]));
        if (kind == 0 && (rc = expect_str(c, c->b, "s")) < 0) return rc;
    }
    return 0;
}

/* ---- 4. a cancelled receive consumed nothing ----------------------------- */

static int cancelled_receiver(void *arg) {
    struct chk *c = arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    c->scope = &s;
    char ch;
    ssize_t n = c_recv(c, c->b, &ch, 1);
    c->scope = NULL;
    int rc = nest_scope_exit(&s, (int)n);
    if (n != -ECANCELED || rc != 0)
        return fail(c, "receive_some cancelled while blocked returned %zd", n);
    return expect_str(c, c->b, "abc"); /* the stream goes on */
}

static int check_cancel_receive(struct chk *c) {
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, cancelled_receiver, c);
    if (rc == 0) rc = quiet(c);
    if (rc == 0) {
        if (c->scope) nest_scope_cancel(c->scope);
        else rc = fail(c, "the receiver did not block");
    }
    if (rc == 0) rc = quiet(c); /* it has seen -ECANCELED and waits again */
    if (rc == 0) rc = send_str(c, c->a, "abc");
    return nest_nursery_close(&n, rc);
}

/* ---- 5. a send cancelled half way reports what went out ------------------ */

static int clogged_sender(void *arg) {
    struct chk *c = arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    c->scope = &s;
    size_t off = 0, sent = 0;
    int rc;
    while ((rc = send_pat(c, c->a, 0, off, BUF, &sent)) == 0) off += BUF;
    c->scope = NULL;
    off += sent;
    rc = nest_scope_exit(&s, rc);
    if (rc != 0) return fail(c, "a clogged send_all, cancelled, returned %s", nest_err_name(rc));
    /* Resume where the cancelled send stopped: the receiver must see one
     * unbroken pattern. */
    rc = send_pat(c, c->a, 0, off, 1000, NULL);
    if (rc < 0) return fail(c, "send_all after a cancelled send_all failed with %s", nest_err_name(rc));
    c->off = off + 1000;
    rc = c_eof(c, c->a);
    if (rc == -EOPNOTSUPP) rc = nest_stream_close(c->a);
    return rc < 0 ? fail(c, "send_eof failed with %s", nest_err_name(rc)) : 0;
}

static int drainer(void *arg) {
    struct chk *c = arg;
    size_t total = 0;
    for (;;) {
        ssize_t n = c_recv(c, c->b, c->buf[1], BUF);
        if (n < 0) return fail(c, "receive_some failed with %s", nest_err_name((int)n));
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++)
            if (c->buf[1][i] != pat(total + (size_t)i))
                return fail(c, "wrong byte at stream offset %zu: a cancelled send_all reported "
                               "a wrong count, or lost or repeated bytes",
                            total + (size_t)i);
        total += (size_t)n;
    }
    c->res[0] = 1;
    EXPECT(c, total == c->off, "received %zu bytes, the sender reported %zu", total, c->off);
    return 0;
}

static int check_cancel_send(struct chk *c) {
    c->res[0] = 0;
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, clogged_sender, c);
    if (rc == 0) rc = quiet(c); /* the sender is blocked: the transport is full */
    if (rc == 0) {
        if (c->scope) nest_scope_cancel(c->scope);
        else rc = fail(c, "the sender never blocked: does the transport have a bounded buffer?");
    }
    if (rc == 0) rc = nest_spawn(&n, drainer, c);
    rc = nest_nursery_close(&n, rc);
    if (rc == 0 && !c->res[0]) rc = fail(c, "the receiver did not finish");
    return rc;
}

/* ---- 6. close while another task is blocked ------------------------------ */

static int blocked_receiver(void *arg) {
    struct chk *c = arg;
    char ch;
    c->res[0] = (int)c_recv(c, c->a, &ch, 1);
    return 0;
}

static int blocked_sender(void *arg) {
    struct chk *c = arg;
    size_t off = 0, sent;
    int rc;
    while ((rc = send_pat(c, c->a, 0, off, BUF, &sent)) == 0) off += BUF;
    c->res[1] = rc;
    return 0;
}

static int check_close_blocked(struct chk *c) {
    c->res[0] = c->res[1] = 1;
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, blocked_receiver, c);
    if (rc == 0) rc = nest_spawn(&n, blocked_sender, c);
    if (rc == 0) rc = quiet(c);
    if (rc == 0) {
        /* Close a under both tasks blocked on it: one receiving (nothing
         * comes from b), one sending (b does not read). */
        rc = nest_stream_close(c->a);
        if (rc < 0) rc = fail(c, "close returned %s", nest_err_name(rc));
    }
    rc = nest_nursery_close(&n, rc);
    if (rc < 0) return rc;
    EXPECT(c, c->res[0] == NEST_ECLOSED, "a receive_some blocked when its stream was closed "
           "returned %s, expected NEST_ECLOSED", nest_err_name(c->res[0]));
    EXPECT(c, c->res[1] == NEST_ECLOSED, "a send_all blocked when its stream was closed "
           "returned %s, expected NEST_ECLOSED", nest_err_name(c->res[1]));
    char ch;
    size_t sent = 7;
    int r1 = c_send(c, c->a, "x", 1, &sent);
    ssize_t r2 = c_recv(c, c->a, &ch, 1);
    int r3 = c_eof(c, c->a);
    int r4 = nest_stream_close(c->a);
    EXPECT(c, r1 == NEST_ECLOSED && sent == 0, "send_all on a closed stream returned %s",
           nest_err_name(r1));
    EXPECT(c, r2 == NEST_ECLOSED, "receive_some on a closed stream returned %zd", r2);
    EXPECT(c, r3 == NEST_ECLOSED, "send_eof on a closed stream returned %s", nest_err_name(r3));
    EXPECT(c, r4 == 0, "closing twice returned %s", nest_err_name(r4));
    return 0;
}

/* ---- 7. the peer closes: EOF, and sends fail ----------------------------- */

static int check_peer_closed(struct chk *c) {
    int rc;
    if ((rc = send_str(c, c->a, "!")) < 0) return rc; /* buffered, then EOF */
    rc = nest_stream_close(c->a);
    EXPECT(c, rc == 0, "close returned %s", nest_err_name(rc));
    if ((rc = expect_str(c, c->b, "!")) < 0) return rc;
    char ch;
    for (int i = 0; i < 2; i++) {
        ssize_t n = c_recv(c, c->b, &ch, 1);
        EXPECT(c, n == 0, "receive_some after the peer closed returned %zd, expected 0 (EOF) "
               "every time", n);
    }
    /* Sending to a closed peer fails, soon. */
    for (int i = 0; i < 64; i++) {
        rc = send_pat(c, c->b, 0, 0, 4096, NULL);
        if (rc < 0) break;
    }
    EXPECT(c, rc == -EPIPE || rc == -ECONNRESET,
           "send_all to a closed peer returned %s, expected -EPIPE or -ECONNRESET",
           nest_err_name(rc));
    return 0;
}

/* ---- 8. half-close ------------------------------------------------------- */

static int check_half_close(struct chk *c) {
    int rc;
    if ((rc = send_str(c, c->a, "L")) < 0) return rc;
    rc = c_eof(c, c->a);
    EXPECT(c, rc == 0, "send_eof returned %s", nest_err_name(rc));
    rc = c_eof(c, c->a);
    EXPECT(c, rc == 0, "a second send_eof returned %s", nest_err_name(rc));
    size_t sent = 5;
    rc = c_send(c, c->a, "x", 1, &sent);
    EXPECT(c, rc == NEST_ECLOSED && sent == 0, "send_all after send_eof returned %s",
           nest_err_name(rc));
    if ((rc = expect_str(c, c->b, "L")) < 0) return rc;
    char ch;
    ssize_t n = c_recv(c, c->b, &ch, 1);
    EXPECT(c, n == 0, "receive_some after the peer's send_eof returned %zd, expected 0", n);
    /* The other direction still works. */
    if ((rc = exchange(c, c->b, c->a, "still here")) < 0) return rc;
    rc = c_eof(c, c->b);
    EXPECT(c, rc == 0, "send_eof returned %s", nest_err_name(rc));
    n = c_recv(c, c->a, &ch, 1);
    EXPECT(c, n == 0, "receive_some after the peer's send_eof returned %zd, expected 0", n);
    return 0;
}

/* ---- driver -------------------------------------------------------------- */

static int run(struct chk *c, const char *what, int (*fn)(struct chk *)) {
    c->what = what;
    c->scope = NULL;
    int rc = c->o->open_pair(c->o->arg, &c->a, &c->b);
    if (rc < 0) {
        if (c->rc == 0) {
            c->rc = rc;
            if (rc == -ENOMEM) return rc;
            if (c->msg && c->msglen)
                snprintf(c->msg, c->msglen, "stream check '%s': open_pair failed with %s", what,
                         nest_err_name(rc));
        }
        return rc;
    }
    rc = fn(c);
    nomem(c, rc);
    nest_stream_close(c->a);
    nest_stream_close(c->b);
    if (c->o->release_pair) c->o->release_pair(c->o->arg, c->a, c->b);
    c->a = c->b = NULL;
    if (c->rc) return c->rc;
    if (rc < 0) return fail(c, "failed with %s", nest_err_name(rc));
    return 0;
}

int nest_stream_check(const nest_stream_check_options *o, char *msg, size_t msglen) {
    struct chk c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.msg = msg;
    c.msglen = msglen;
    if (msg && msglen) msg[0] = '\0';
    int rc = 0;
    for (int i = 0; i < NBUF; i++)
        if (!(c.buf[i] = nest__alloc(BUF))) rc = -ENOMEM;
    if (rc == 0) rc = run(&c, "transfer", check_transfer);
    if (rc == 0) rc = run(&c, "checkpoints", check_checkpoints);
    if (rc == 0) rc = run(&c, "busy", check_busy);
    if (rc == 0) rc = run(&c, "cancelled receive", check_cancel_receive);
    if (rc == 0) rc = run(&c, "cancelled send", check_cancel_send);
    if (rc == 0) rc = run(&c, "close while blocked", check_close_blocked);
    if (rc == 0) rc = run(&c, "peer closed", check_peer_closed);
    if (rc == 0 && !o->no_half_close) rc = run(&c, "half-close", check_half_close);
    for (int i = 0; i < NBUF; i++) nest__free(c.buf[i], BUF);
    if (rc == -ENOMEM && msg && msglen && !msg[0])
        snprintf(msg, msglen, "stream check: out of memory");
    return rc;
}
