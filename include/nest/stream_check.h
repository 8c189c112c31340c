/*
 * nest/stream_check.h - a conformance check for stream implementations
 * (Trio's check_half_closeable_stream).
 *
 * nest_stream_check() runs one implementation of nest/stream.h through the
 * contract written there: data arrives intact and in order in both
 * directions whatever the read sizes, receive_some honours max, every
 * operation is a checkpoint (yields when it need not wait, fails with
 * -ECANCELED and has no effect in a cancelled scope), a cancelled receive
 * consumes nothing, a send cancelled half way reports exactly the bytes that
 * went out and the stream goes on from there, two concurrent senders (or
 * receivers) get -EBUSY, closing wakes a blocked receiver and a blocked
 * sender with NEST_ECLOSED and makes later calls fail with it, close is
 * idempotent, the peer of a closed end reads EOF (repeatedly) and its sends
 * fail with -EPIPE or -ECONNRESET, and half-close works (EOF one way, data
 * still flowing the other).
 *
 * It needs a way to make fresh connected pairs: open_pair is called (from
 * the checking task) once per sub-check; the check closes both ends when it
 * is done with them and then calls release_pair, if set, so that the maker
 * can reuse or free the storage.  Only one pair is open at a time.
 *
 * The check does not read the clock: it synchronises with
 * nest_wait_all_tasks_blocked(), so it works on the real and the mock clock.
 * The transport must buffer at least one byte, and must make a sender
 * block when the receiver does not read (a bounded buffer); sockets and
 * memory streams of any capacity do.
 */
#ifndef NEST_STREAM_CHECK_H
#define NEST_STREAM_CHECK_H

#include "common.h"
#include "stream.h"

NEST_BEGIN_DECLS

typedef struct nest_stream_check_options {
    /* Makes a connected pair: *a and *b must be two ends of one connection.
     * Returns 0 or a negative code (which ends the check with that code). */
    int (*open_pair)(void *arg, nest_stream **a, nest_stream **b);
    /* Called after both ends were closed; may be NULL. */
    void (*release_pair)(void *arg, nest_stream *a, nest_stream *b);
    void *arg;
    /* Non-zero: skip the half-close checks (the streams' send_eof returns
     * -EOPNOTSUPP). */
    int no_half_close;
} nest_stream_check_options;

/* Runs every check and returns 0 when the implementation passed them all.
 * Otherwise returns the first failure's code - -EPROTO when the stream broke
 * the contract, or the error of open_pair or of an allocation - and writes a
 * one-line explanation naming the sub-check into msg (NUL-terminated,
 * truncated to msglen; msg may be NULL).  Must be called from a task; it
 * spawns helper tasks in nurseries of its own and leaves nothing behind.
 * Not meant to run in a cancelled scope. */
NEST_API int nest_stream_check(const nest_stream_check_options *o, char *msg, size_t msglen);

NEST_END_DECLS

#endif
