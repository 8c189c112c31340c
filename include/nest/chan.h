/*
 * nest/chan.h - memory channels, choose, and the broadcast channel.
 *
 * MEMORY CHANNELS (Trio's open_memory_channel, Go's chan).  A channel
 * carries items of one fixed size, copied in by the sender and out by the
 * receiver.  Its capacity is 0 (rendezvous: a send completes only when a
 * receiver takes the item), N (a FIFO buffer of N items), or
 * NEST_CHAN_UNBOUNDED (the buffer grows as needed).
 *
 * It is used through handles: a send handle (nest_chan_tx) and a receive
 * handle (nest_chan_rx).  Both are small structs owned by the caller; the
 * channel itself is allocated by nest_chan_open() and freed when its last
 * handle is closed.  Clone a handle to give another task its own (multiple
 * producers, multiple consumers); close every handle you open or clone.
 * A handle must stay in place while open: copying the struct does not
 * clone it (nest aborts when it sees a copied handle used).
 *
 *   - The receive side ends when the last send handle is closed and the
 *     buffer is drained: receives then fail with NEST_EEND.  (Closing send
 *     handles never drops buffered items.)
 *   - Sending when every receive handle is closed fails with NEST_EBROKEN.
 *     Closing the last receive handle drops the items still buffered:
 *     nobody can receive them any more.
 *   - Using a handle you closed fails with NEST_ECLOSED.
 *   - Closing wakes blocked tasks: closing the last send handle wakes the
 *     blocked receivers with NEST_EEND, closing the last receive handle the
 *     blocked senders with NEST_EBROKEN, and a task blocked on the very
 *     handle being closed wakes with NEST_ECLOSED.
 *
 * Order: items are received in the order they were sent; blocked senders
 * and blocked receivers are served first come, first served.  A blocked
 * receiver gets the item straight from the sender (copied into its buffer,
 * never through the channel's), and with capacity 0 a blocked sender's item
 * goes straight to the receiver.
 *
 * Checkpoints: nest_chan_send(), nest_chan_recv() and nest_choose() are
 * full checkpoints.  In a cancelled scope they fail at once with -ECANCELED
 * and have no effect.  Otherwise they yield to the scheduler once, whatever
 * their outcome, even when they need not wait (a task that sends into a
 * channel with room in a loop does not starve the others).  "Cancelled means
 * it did not happen": a send that returns -ECANCELED did not enqueue its
 * item, a receive that returns -ECANCELED consumed nothing, and a task
 * cancelled while blocked is out of the channel's queue before it wakes,
 * so no item is handed to it afterwards.  Conversely, an operation that
 * completed returns success even if its scope is cancelled before the task
 * runs again.  The try_ variants and everything else here are not
 * checkpoints and never block.
 *
 * Lifetime of the item pointers: a send reads the item during the call; a
 * receive writes *out during the call.  Neither keeps the pointer.
 *
 * Thread-safety: a channel belongs to one runtime; use it only from tasks
 * of that runtime (the stats, clone and close calls also from its tasks).
 *
 * CHOOSE waits on several sends and receives at once; exactly one of them
 * completes.  See nest_choose().
 *
 * BROADCAST CHANNEL: one sender, any number of subscribers, each of which
 * receives every item sent after it subscribed.  See nest_bcast_open().
 */
#ifndef NEST_CHAN_H
#define NEST_CHAN_H

#include "common.h"

NEST_BEGIN_DECLS

struct nest__chan;
struct nest__bcast;

/* The capacity of a channel whose buffer grows without limit. */
#define NEST_CHAN_UNBOUNDED SIZE_MAX

/* A send handle.  Caller-allocated; the fields are private.  Initialise it
 * with nest_chan_open() or nest_chan_tx_clone(). */
typedef struct nest_chan_tx {
    struct nest__chan *ch; /* the channel; NULL once closed */
    const void *self;      /* == the handle's address: detects copies */
    unsigned state;        /* open or closed magic */
} nest_chan_tx;

/* A receive handle.  Caller-allocated; the fields are private. */
typedef struct nest_chan_rx {
    struct nest__chan *ch;
    const void *self;
    unsigned state;
} nest_chan_rx;

/* A snapshot of a channel. */
typedef struct nest_chan_stats {
    size_t elem_size;      /* bytes per item */
    size_t capacity;       /* 0, N or NEST_CHAN_UNBOUNDED */
    size_t buffered;       /* items in the buffer now */
    size_t peak;           /* most items ever buffered at once */
    size_t tx_open;        /* open send handles */
    size_t rx_open;        /* open receive handles */
    size_t waiting_send;   /* tasks blocked sending (choose clauses count) */
    size_t waiting_recv;   /* tasks blocked receiving */
    uint64_t sent;         /* items that entered the channel so far */
    uint64_t direct;       /* of those, items handed from sender to
                              receiver without passing through the buffer */
} nest_chan_stats;

/* Opens a channel for items of elem_size bytes (0 is allowed: items carry
 * no data, only their arrival) with the given capacity (0, N, or
 * NEST_CHAN_UNBOUNDED), and initialises *tx and *rx as its first handles.
 * A bounded channel allocates its whole buffer here, so it never fails with
 * -ENOMEM later; an unbounded one grows its buffer as needed.
 * Returns 0, -ENOMEM (nothing allocated, the handles untouched) or -EINVAL
 * (elem_size * capacity overflows).  Not a checkpoint; may be called
 * outside a runtime. */
NEST_API int nest_chan_open(nest_chan_tx *tx, nest_chan_rx *rx, size_t elem_size,
                            size_t capacity);

/* Sends the elem_size bytes at item.  A checkpoint (see the file comment).
 * Hands the item to the longest-blocked receiver if there is one, else
 * buffers it if there is room, else blocks until a receiver takes it.
 * Returns 0 when the item was taken or buffered, -ECANCELED (not sent),
 * NEST_EBROKEN (every receive handle is closed, also while blocked; not
 * sent), NEST_ECLOSED (tx was closed, also while blocked; not sent), or
 * -ENOMEM (an unbounded channel could not grow; not sent). */
NEST_API int nest_chan_send(nest_chan_tx *tx, const void *item);

/* Receives the oldest item into out (elem_size bytes).  A checkpoint.
 * Returns 0, -ECANCELED (nothing consumed), NEST_EEND (every send handle is
 * closed and the buffer is empty), or NEST_ECLOSED (rx was closed, also
 * while blocked). */
NEST_API int nest_chan_recv(nest_chan_rx *rx, void *out);

/* As nest_chan_send() and nest_chan_recv(), but never block and are not
 * checkpoints (no cancellation check, no yield): -EAGAIN when the operation
 * would have to wait. */
NEST_API int nest_chan_try_send(nest_chan_tx *tx, const void *item);
NEST_API int nest_chan_try_recv(nest_chan_rx *rx, void *out);

/* Initialises *dst as a new handle of src's channel.  Returns 0, or
 * NEST_ECLOSED if src is closed (dst untouched).  Never allocates, never
 * blocks; not a checkpoint. */
NEST_API int nest_chan_tx_clone(nest_chan_tx *dst, nest_chan_tx *src);
NEST_API int nest_chan_rx_clone(nest_chan_rx *dst, nest_chan_rx *src);

/* Closes a handle (see the file comment for what that wakes).  The channel
 * is freed when its last handle is closed.  Returns 0, or NEST_ECLOSED if
 * the handle was already closed (no effect).  Never blocks; not a
 * checkpoint.  The struct may be reused (opened or cloned into) afterwards. */
NEST_API int nest_chan_tx_close(nest_chan_tx *tx);
NEST_API int nest_chan_rx_close(nest_chan_rx *rx);

/* Fills *st with a snapshot of the handle's channel.  Returns 0 or
 * NEST_ECLOSED.  Not a checkpoint. */
NEST_API int nest_chan_tx_stats(const nest_chan_tx *tx, nest_chan_stats *st);
NEST_API int nest_chan_rx_stats(const nest_chan_rx *rx, nest_chan_stats *st);

/* ---- choose ------------------------------------------------------------ */

/* nest_choose_clause.op */
enum {
    NEST_CHOOSE_NONE = 0, /* a disabled clause: never completes (Go's nil channel) */
    NEST_CHOOSE_SEND = 1, /* send *item on tx */
    NEST_CHOOSE_RECV = 2  /* receive into *out from rx */
};

/* One alternative of nest_choose().  Fill op, tx and item (SEND) or rx and
 * out (RECV), e.g. with the initialisers below; result is written by
 * nest_choose() for the clause that completed. */
typedef struct nest_choose_clause {
    int op;             /* NEST_CHOOSE_SEND, NEST_CHOOSE_RECV or NEST_CHOOSE_NONE */
    nest_chan_tx *tx;   /* SEND: the handle to send on */
    const void *item;   /* SEND: the item, read during the call */
    nest_chan_rx *rx;   /* RECV: the handle to receive from */
    void *out;          /* RECV: receives the item */
    int result;         /* out: what a lone send/recv would have returned */
} nest_choose_clause;

#define NEST_CHOOSE_SEND_CLAUSE(tx, item) {NEST_CHOOSE_SEND, (tx), (item), NULL, NULL, 0}
#define NEST_CHOOSE_RECV_CLAUSE(rx, out) {NEST_CHOOSE_RECV, NULL, NULL, (rx), (out), 0}

/* Waits until one of the n clauses can complete, completes exactly that
 * one, and returns its index; the others have no effect.  A checkpoint.
 *
 * A clause is ready when the lone operation would not block: a send with a
 * blocked receiver or room in the buffer, a receive with a buffered item or
 * a blocked sender, and any operation that would fail at once (closed
 * handle, NEST_EBROKEN, NEST_EEND).  Its outcome - 0 or the error the lone
 * operation would have returned - is stored in clauses[i].result.
 *
 * Preference: when several clauses are ready at entry, the first in the
 * array wins (libdill's rule; Go picks at random).  Order the clauses by
 * priority; to be fair among equals, rotate the array between calls.  While
 * blocked, the clause whose channel becomes ready first wins, and each
 * channel serves its waiters, choose or not, first come first served.
 *
 * Returns the index i >= 0, or without any clause having had an effect:
 * -ECANCELED (cancelled, at entry or while blocked), -EINVAL (an unknown
 * op), or -ENOMEM (more than 8 clauses to wait on and their waiters could
 * not be allocated).  With no enabled clause (n == 0 or all NONE) it waits
 * until cancelled.  The same handle may appear in several clauses. */
NEST_API int nest_choose(nest_choose_clause *clauses, size_t n);

/* ---- broadcast channel ------------------------------------------------- */

/* What the sender does when a subscriber's backlog is full. */
enum {
    /* Block until the slowest subscriber has room: no subscriber ever
     * misses an item, and a slow one slows the sender down. */
    NEST_BCAST_BLOCK = 0,
    /* Never block: the oldest item is overwritten.  A subscriber that fell
     * behind gets NEST_ELAGGED once from its next receive (the number of
     * items it lost is in its stats), then continues with the oldest item
     * still retained. */
    NEST_BCAST_DROP_OLDEST = 1
};

/* The send handle of a broadcast channel.  Caller-allocated; private. */
typedef struct nest_bcast_tx {
    struct nest__bcast *b; /* NULL once closed */
    const void *self;
    unsigned state;
} nest_bcast_tx;

/* A subscription.  Caller-allocated; the fields are private. */
typedef struct nest_bcast_rx {
    struct nest__bcast *b;     /* NULL once unsubscribed */
    const void *self;
    unsigned state;
    struct nest_bcast_rx *next; /* in b's list of subscribers */
    struct nest_bcast_rx *prev;
    uint64_t cursor;           /* sequence number of its next item */
    uint64_t lost;             /* items it lost to DROP_OLDEST, in total */
    uint64_t lagged;           /* items lost reported by its last NEST_ELAGGED */
} nest_bcast_rx;

typedef struct nest_bcast_stats {
    size_t elem_size;
    size_t capacity;       /* the backlog a subscriber may have */
    int policy;            /* NEST_BCAST_BLOCK or NEST_BCAST_DROP_OLDEST */
    int closed;            /* the send handle is closed */
    size_t subscribers;
    size_t waiting_send;   /* tasks blocked in nest_bcast_send() */
    size_t waiting_recv;   /* subscribers blocked in nest_bcast_recv() */
    uint64_t sent;         /* items sent so far */
    size_t max_backlog;    /* the largest backlog among the subscribers */
} nest_bcast_stats;

typedef struct nest_bcast_sub_stats {
    size_t backlog;        /* items it can still receive */
    uint64_t lost;         /* items it lost (DROP_OLDEST), in total */
    uint64_t lagged;       /* items reported lost by its last NEST_ELAGGED */
} nest_bcast_sub_stats;

/* Opens a broadcast channel for items of elem_size bytes in which each
 * subscriber may be at most capacity (>= 1) items behind, with the given
 * policy, and initialises *tx as its send handle.  The buffer (one ring
 * shared by all subscribers) is allocated here.  The channel is freed when
 * tx is closed and the last subscriber unsubscribed.  Returns 0, -ENOMEM,
 * or -EINVAL (capacity 0, an unknown policy, or a size overflow).  Not a
 * checkpoint. */
NEST_API int nest_bcast_open(nest_bcast_tx *tx, size_t elem_size, size_t capacity, int policy);

/* Sends an item to every current subscriber.  A checkpoint.  With
 * NEST_BCAST_BLOCK it blocks while some subscriber's backlog is full (and
 * completes in FIFO order among blocked senders); with
 * NEST_BCAST_DROP_OLDEST it never blocks.  Subscribers blocked in receive
 * get the item copied straight into their buffer.  With no subscriber the
 * item reaches nobody (that is not an error).  Returns 0, -ECANCELED (not
 * sent), or NEST_ECLOSED (tx closed, also while blocked; not sent). */
NEST_API int nest_bcast_send(nest_bcast_tx *tx, const void *item);

/* As nest_bcast_send(), not a checkpoint: -EAGAIN instead of blocking. */
NEST_API int nest_bcast_try_send(nest_bcast_tx *tx, const void *item);

/* Closes the send handle: subscribers receive what is left, then
 * NEST_EEND; blocked subscribers wake with NEST_EEND, tasks blocked sending
 * on tx with NEST_ECLOSED.  Returns 0 or NEST_ECLOSED (already closed).
 * Never blocks; not a checkpoint. */
NEST_API int nest_bcast_tx_close(nest_bcast_tx *tx);

/* Subscribes *rx: it will receive every item sent from now on.  Returns 0
 * or NEST_ECLOSED (tx closed).  Never allocates; not a checkpoint. */
NEST_API int nest_bcast_subscribe(nest_bcast_tx *tx, nest_bcast_rx *rx);

/* Subscribes *dst at src's position: dst will receive exactly what src
 * has still to receive, and then every later item.  Works after the sender
 * closed (dst then drains what is left).  Returns 0 or NEST_ECLOSED. */
NEST_API int nest_bcast_rx_clone(nest_bcast_rx *dst, nest_bcast_rx *src);

/* Ends the subscription: a task blocked receiving on rx wakes with
 * NEST_ECLOSED, and with NEST_BCAST_BLOCK the sender no longer waits for
 * it.  Returns 0 or NEST_ECLOSED (already unsubscribed).  Not a checkpoint. */
NEST_API int nest_bcast_unsubscribe(nest_bcast_rx *rx);

/* Receives the next item into out.  A checkpoint.  Returns 0,
 * -ECANCELED (nothing consumed), NEST_ELAGGED (DROP_OLDEST: items were
 * overwritten before rx received them; nothing is copied, the count is in
 * nest_bcast_rx_stats().lagged, and the next receive continues with the
 * oldest item retained), NEST_EEND (the sender closed and rx has received
 * everything), or NEST_ECLOSED (rx unsubscribed, also while blocked). */
NEST_API int nest_bcast_recv(nest_bcast_rx *rx, void *out);

/* As nest_bcast_recv(), not a checkpoint: -EAGAIN instead of blocking. */
NEST_API int nest_bcast_try_recv(nest_bcast_rx *rx, void *out);

/* Snapshots of the channel (through the send handle or a subscription)
 * and of one subscription; either pointer of nest_bcast_rx_stats() may be
 * NULL.  Return 0 or NEST_ECLOSED (closed / unsubscribed).  Not
 * checkpoints. */
NEST_API int nest_bcast_tx_stats(const nest_bcast_tx *tx, nest_bcast_stats *st);
NEST_API int nest_bcast_rx_stats(const nest_bcast_rx *rx, nest_bcast_sub_stats *sub,
                                 nest_bcast_stats *st);

NEST_END_DECLS

#endif
