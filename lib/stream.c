/*
 * lib/stream.c - the stream interface (nest/stream.h): the checks every
 * operation makes before an implementation runs, and close.
 *
 * Owns: the rules common to all streams - checkpoint first, then closed,
 * then busy, then arguments - and the operation records that make close
 * safe while other tasks are blocked on the stream.
 *
 * Invariants:
 *  - s->send_op (s->recv_op) points at the nest_stream_op on the stack of
 *    the task inside send_all or send_eof (receive_some), and is NULL when
 *    no such task is: that is the busy check.
 *  - nest_stream_close() marks both records closed and drops the pointers
 *    before the implementation's close wakes the blocked tasks.  An
 *    operation clears its pointer on return only if its record was not
 *    marked: a marked record means the stream may already be freed (the
 *    closer may free it the moment close returns, before the woken task
 *    runs), so nothing here or in an implementation touches s after a
 *    blocking call without first reading op->closed.
 */
#include <errno.h>

#include "nest/error.h"
#include "nest/stream.h"
#include "nest/scope.h"
#include "nest/time.h"

enum {
    STREAM_CLOSED = 1u << 0,   /* nest_stream_close() was called */
    STREAM_EOF_SENT = 1u << 1, /* nest_stream_send_eof() succeeded */
};

void nest_stream_init(nest_stream *s, const nest_stream_vtable *vt) {
    s->vt = vt;
    s->send_op = NULL;
    s->recv_op = NULL;
    s->flags = 0;
}

const char *nest_stream_kind(const nest_stream *s) { return s->vt->kind; }

int nest_stream_send_all(nest_stream *s, const void *buf, size_t len, size_t *sent) {
    size_t dummy;
    if (!sent) sent = &dummy;
    *sent = 0;
    if (nest_cancelled()) return -ECANCELED;
    if (s->flags & (STREAM_CLOSED | STREAM_EOF_SENT)) return NEST_ECLOSED;
    if (s->send_op) return -EBUSY;
    nest_stream_op op = {0};
    s->send_op = &op;
    int rc = s->vt->send_all(s, buf, len, sent, &op);
    if (!op.closed) s->send_op = NULL;
    return rc;
}

ssize_t nest_stream_receive_some(nest_stream *s, void *buf, size_t max) {
    if (nest_cancelled()) return -ECANCELED;
    if (s->flags & STREAM_CLOSED) return NEST_ECLOSED;
    if (s->recv_op) return -EBUSY;
    if (max == 0) return -EINVAL;
    nest_stream_op op = {0};
    s->recv_op = &op;
    ssize_t rc = s->vt->receive_some(s, buf, max, &op);
    if (!op.closed) s->recv_op = NULL;
    return rc;
}

int nest_stream_send_eof(nest_stream *s) {
    if (nest_cancelled()) return -ECANCELED;
    if (s->flags & STREAM_CLOSED) return NEST_ECLOSED;
    if (s->send_op) return -EBUSY;
    if (!s->vt->send_eof) return -EOPNOTSUPP;
    nest_stream_op op = {0};
    s->send_op = &op;
    int rc = 0;
    if (!(s->flags & STREAM_EOF_SENT)) {
        rc = s->vt->send_eof(s, &op);
        if (rc == 0 && !op.closed) s->flags |= STREAM_EOF_SENT;
    }
    /* The checkpoint's yield.  It cannot fail: cancellation was checked
     * above and nothing has run since.  The EOF is sent whatever happens
     * while we yield, as the contract's "did happen" requires. */
    if (rc == 0 && !op.closed) (void)nest_checkpoint();
    if (!op.closed) s->send_op = NULL;
    return rc;
}

int nest_stream_close(nest_stream *s) {
    if (s->flags & STREAM_CLOSED) return 0;
    s->flags |= STREAM_CLOSED;
    if (s->send_op) {
        s->send_op->closed = 1;
        s->send_op = NULL;
    }
    if (s->recv_op) {
        s->recv_op->closed = 1;
        s->recv_op = NULL;
    }
    return s->vt->close(s);
}
