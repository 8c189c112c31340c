/*
 * nest/stream.h - byte streams: one small interface, several transports.
 *
 * A stream carries bytes both ways between two ends (Trio's
 * HalfCloseableStream).  The interface has four operations:
 *
 *     nest_stream_send_all(s, buf, len, &sent)   blocks until all is written
 *     nest_stream_receive_some(s, buf, max)      returns what arrived, 0 at EOF
 *     nest_stream_send_eof(s)                    half-close: no more sending
 *     nest_stream_close(s)                       releases the stream
 *
 * and three transports implement it: socket streams over TCP and Unix
 * sockets (nest_socket_stream, below; connecting and listening are in
 * nest/net.h), and in-memory pairs for tests (nest_memory_stream_pair).
 * Code written against nest_stream works with all of them, and with any
 * other implementation of the vtable; nest/stream_check.h checks that an
 * implementation keeps the contract below.
 *
 * The contract, for every implementation:
 *
 *  - Every operation except close is a checkpoint (nest/time.h): in a
 *    cancelled scope it returns -ECANCELED at once and has no effect;
 *    otherwise it yields at least once, even when it does not need to
 *    wait.  There are no timeout parameters: put the call in a scope with a
 *    deadline (nest_move_on_after, nest_fail_after).
 *  - Cancellation means "did not happen" for receive_some: a receive that
 *    returns -ECANCELED consumed nothing, and a later receive gets the data.
 *    send_all may be cancelled half way; it then reports exactly how many
 *    bytes went out through its `sent` argument, and the stream stays
 *    usable: sending buf + sent later continues the byte stream.
 *  - One task at a time may send (send_all, send_eof) and one at a time may
 *    receive: a second task that tries while one is inside gets -EBUSY
 *    (Trio's BusyResourceError).  Sending and receiving at the same time,
 *    from two tasks, is fine.
 *  - Operations on a closed stream return NEST_ECLOSED.  Closing a stream
 *    that another task is blocked on wakes that task with NEST_ECLOSED.
 *    Once nest_stream_close() has returned, nest never touches the
 *    stream's memory again - not even from the woken tasks, which return
 *    without looking at it - so the caller may free it at once.
 *  - Errors are negative codes: the transport's (-ECONNRESET, -EPIPE, ...)
 *    or nest's.  Sending to a peer that has closed fails with -EPIPE or
 *    -ECONNRESET, for sockets and memory streams alike.
 *
 * Every operation must be called from a task (nest_stream_close() also
 * outside one, once no task uses the stream).  A stream belongs to one
 * runtime.
 */
#ifndef NEST_STREAM_H
#define NEST_STREAM_H

#include <sys/types.h>

#include "common.h"

NEST_BEGIN_DECLS

typedef struct nest_stream nest_stream;

/* A stream operation in progress.  It lives on the stack of the task that
 * performs the operation; the stream points at it while the operation runs
 * (that is how a second caller gets -EBUSY), and nest_stream_close() sets
 * `closed` in it so that the operation, when its task wakes, knows not to
 * touch the stream again.  Implementations read `closed` after every
 * blocking call (see nest_stream_vtable). */
typedef struct nest_stream_op {
    int closed;      /* set by nest_stream_close() while the op runs */
} nest_stream_op;

/* What an implementation provides.  The public functions below check
 * cancellation, closed state, concurrent use and arguments before calling
 * these, so an implementation only moves bytes.  Rules for implementors:
 *  - send_all and receive_some must yield at least once when they succeed
 *    (a wait that blocked counts; otherwise call nest_checkpoint(), which
 *    cannot fail there because the caller checked for cancellation and
 *    nothing has run since).  send_eof need not yield (the caller does).
 *  - After every blocking call, if op->closed is set, return at once
 *    without touching s: the wait's own error if it failed, else
 *    NEST_ECLOSED.  (send_all stores the bytes written so far in *sent.)
 *  - close releases the transport and wakes every task blocked in an
 *    operation on s (their op->closed is already set).  It must not block.
 *    It is called once.
 * send_eof may be NULL when the transport cannot half-close. */
typedef struct nest_stream_vtable {
    const char *kind; /* "socket", "memory", ...: for diagnostics */
    int (*send_all)(nest_stream *s, const void *buf, size_t len, size_t *sent,
                    nest_stream_op *op);
    ssize_t (*receive_some)(nest_stream *s, void *buf, size_t max, nest_stream_op *op);
    int (*send_eof)(nest_stream *s, nest_stream_op *op);
    int (*close)(nest_stream *s);
} nest_stream_vtable;

/* The common part of every stream; embed it as the first member of an
 * implementation's struct.  Fields are private. */
struct nest_stream {
    const nest_stream_vtable *vt;
    nest_stream_op *send_op;  /* send_all or send_eof in progress, or NULL */
    nest_stream_op *recv_op;  /* receive_some in progress, or NULL */
    unsigned flags;           /* closed, EOF sent */
};

/* Prepares s for use with implementation vt.  For implementors; never
 * fails, not a checkpoint. */
NEST_API void nest_stream_init(nest_stream *s, const nest_stream_vtable *vt);

/* Sends the len bytes at buf, blocking while the transport cannot take
 * more (for sockets: while the kernel's send buffer is full), and returns
 * 0 once every byte went out.  A checkpoint.
 *
 * *sent (sent may be NULL) receives the number of bytes that went out -
 * handed to the transport, for sockets copied into the kernel's send
 * buffer; whether the peer has read them is not known - also when the call
 * fails: on -ECANCELED it is how far the send got before the cancellation
 * (0 when the scope was already cancelled on entry), and the stream stays
 * usable, so a caller may resume with buf + *sent.  len 0 sends nothing
 * and returns 0 (still a checkpoint).
 *
 * Returns 0; -ECANCELED; NEST_ECLOSED if the stream is closed (also when
 * closed by another task during the call) or send_eof was called; -EBUSY
 * if another task is sending on s; -EPIPE or -ECONNRESET when the peer is
 * gone; another negated errno from the transport; -ENOMEM. */
NEST_API int nest_stream_send_all(nest_stream *s, const void *buf, size_t len, size_t *sent);

/* Waits until at least one byte has arrived or the peer has sent EOF, and
 * moves up to max bytes into buf.  A checkpoint.  Returns the number of
 * bytes (>= 1), 0 at end of file (and again on every later call), or:
 * -ECANCELED (nothing was consumed); NEST_ECLOSED; -EBUSY if another task
 * is receiving on s; -EINVAL if max is 0; -ECONNRESET and other negated
 * errno values from the transport; -ENOMEM. */
NEST_API ssize_t nest_stream_receive_some(nest_stream *s, void *buf, size_t max);

/* Half-closes s: the peer's receive_some returns 0 once it has read what
 * was sent before, while s can still receive.  After it, send_all returns
 * NEST_ECLOSED; a second send_eof does nothing and returns 0.  A checkpoint
 * (in a cancelled scope it returns -ECANCELED without sending EOF).
 * Returns 0; -ECANCELED; NEST_ECLOSED; -EBUSY if another task is sending;
 * -EOPNOTSUPP if the transport cannot half-close; a negated errno. */
NEST_API int nest_stream_send_eof(nest_stream *s);

/* Closes s and releases its transport (a socket stream closes its fd).
 * Tasks blocked in an operation on s wake with NEST_ECLOSED; later calls
 * on s return NEST_ECLOSED.  Closing twice is harmless (returns 0).  The
 * peer of a socket stream sees EOF (or a reset, if unread data was pending
 * here); the peer of a memory stream reads what is buffered, then EOF, and
 * its sends fail with -EPIPE.
 *
 * Not a checkpoint: it never blocks and works in a cancelled scope, which
 * is where cleanup usually runs (Trio's aclose is a checkpoint; in C that
 * would make every cleanup path handle a -ECANCELED that means nothing).
 * The stream is closed whatever the result; returns 0, or an error the
 * transport reported while closing. */
NEST_API int nest_stream_close(nest_stream *s);

/* The implementation's kind ("socket", "memory", ...). */
NEST_API const char *nest_stream_kind(const nest_stream *s);

/* ---- socket streams ------------------------------------------------------ */

/* A stream over a connected stream socket (TCP or Unix).  Caller-allocated;
 * pass &s.stream wherever a nest_stream * is wanted.  Obtained from
 * nest_tcp_connect(), nest_unix_connect(), nest_listener_accept() (see
 * nest/net.h) or from any connected socket with nest_socket_stream_init().
 * Other fields are private. */
typedef struct nest_socket_stream {
    nest_stream stream;
    int fd;          /* owned; -1 once closed */
    unsigned waited; /* directions waited on (lib/socket.c) */
} nest_socket_stream;

/* Makes s a stream over the connected stream socket fd and takes ownership
 * of fd (nest_stream_close() closes it).  Sets O_NONBLOCK, TCP_NODELAY for
 * TCP (small writes go out at once; set it back with setsockopt on the fd
 * if you want Nagle's algorithm) and, where the system has it,
 * SO_NOSIGPIPE.  Sends use MSG_NOSIGNAL, so writing to a closed peer
 * returns -EPIPE instead of raising SIGPIPE.  Not a checkpoint.  Returns
 * 0, or a negated errno (then fd stays the caller's and s is unusable). */
NEST_API int nest_socket_stream_init(nest_socket_stream *s, int fd);

/* The socket of a socket stream (for getsockopt, getpeername, ...), or
 * -EINVAL when s is not a socket stream, or NEST_ECLOSED once closed.
 * Do not close it yourself: close the stream. */
NEST_API int nest_stream_socket(const nest_stream *s);

/* ---- memory streams ------------------------------------------------------ */

/* One end of an in-memory stream pair.  Caller-allocated; pass &m.stream.
 * Other fields are private. */
typedef struct nest_memory_stream {
    nest_stream stream;
    struct nest__mem_pair *pair; /* shared by both ends */
    int side;                    /* 0 or 1 */
} nest_memory_stream;

/* The buffer size per direction when nest_memory_stream_pair() is given 0. */
#define NEST_MEMORY_STREAM_DEFAULT_CAPACITY ((size_t)65536)

/* Connects a and b: what one end sends, the other receives.  Each
 * direction buffers up to capacity bytes (0: the default); send_all blocks
 * while the buffer is full, which makes flow control and partial sends
 * testable without sockets.  Memory streams keep the whole contract above,
 * including half-close.  The shared buffers are freed when both ends are
 * closed, so close both.  Not a checkpoint; may be called outside a task.
 * Returns 0 or -ENOMEM (then nothing was allocated). */
NEST_API int nest_memory_stream_pair(nest_memory_stream *a, nest_memory_stream *b,
                                     size_t capacity);

NEST_END_DECLS

#endif
