/*
 * lib/chan.c - memory channels (nest/chan.h): the channel object, its
 * buffer, its handles, send and receive.
 *
 * A channel is one allocation (struct nest__chan, followed by the buffer
 * when the capacity is bounded) shared by its handles.  Blocked tasks wait
 * in one of two parking lots; each waiter's data points at a
 * nest_choose_clause on the blocked task's stack (a lone send or receive
 * builds a one-clause choose), which says what it offers (clause->item) or
 * where the item goes (clause->out) and which handle it uses.  The task
 * that completes a blocked operation does all of its work - copies the
 * item, updates the counters - and only then unparks the waiter with the
 * result.  A woken task therefore never touches the channel again, which
 * matters because the channel may be freed before it runs (its handle is
 * closed by someone else and was the last one).
 *
 * Invariants:
 *  - count <= capacity; the buffer holds items slot head, head+1, ... (mod
 *    slots), oldest first.
 *  - A task waits in `receivers` only while the buffer is empty, and in
 *    `senders` only while it is full (count == capacity, so for capacity 0
 *    always).  Both lots hold waiters at once only when one task waits on
 *    both sides in one choose; a running task never has waiters, so a task
 *    that finds a waiter on the other side can always complete with it.
 *  - A waiter in `senders` uses an open send handle and one in `receivers`
 *    an open receive handle: closing a handle first wakes the waiters that
 *    use it (NEST_ECLOSED).  Hence ntx == 0 implies `senders` is empty and
 *    nrx == 0 implies `receivers` is empty, and when both are 0 nothing
 *    refers to the channel any more and it is freed.
 *  - ntx == 0: `receivers` is empty (closing the last send handle woke them
 *    with NEST_EEND).  nrx == 0: `senders` is empty and count == 0 (closing
 *    the last receive handle dropped the buffer and woke them with
 *    NEST_EBROKEN).
 *  - Every send and receive that is not cancelled at entry yields exactly
 *    once: through the park when it blocks, through nest__yield() after the
 *    work otherwise.  Nothing that has completed is undone by a later
 *    cancellation: the yield after the work is not abortable.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "chan.h"

#define OPEN_MAGIC 0x6368616eu   /* "chan" */
#define CLOSED_MAGIC 0x636c6f73u /* "clos" */
#define WOULD_BLOCK 1             /* internal: the operation must wait */
#define UNBOUNDED_FIRST 16        /* first buffer of an unbounded channel, in items */
#define UNBOUNDED_KEEP 64         /* an emptied buffer up to this size is kept */

struct nest__chan {
    nest_parking_lot senders;    /* blocked senders; waiter data: the clause */
    nest_parking_lot receivers;  /* blocked receivers; waiter data: the clause */
    size_t elem_size;
    size_t capacity;             /* 0, N or NEST_CHAN_UNBOUNDED */
    size_t count;                /* buffered items */
    size_t head;                 /* slot of the oldest buffered item */
    size_t slots;                /* slots in buf */
    unsigned char *buf;          /* bounded: right after this struct */
    size_t ntx;                  /* open send handles */
    size_t nrx;                  /* open receive handles */
    size_t peak;                 /* most items ever buffered */
    uint64_t sent;               /* items that entered the channel */
    uint64_t buffered_total;     /* of those, items that went through the
                                    buffer (direct = sent - this; one
                                    counter per path keeps the hand-off's
                                    update a single add) */
    size_t size;                 /* bytes of this allocation */
};

/* ---- helpers --------------------------------------------------------- */

static inline void copy_item(void *dst, const void *src, size_t n) {
    /* Small fixed sizes are the common case; a constant-size memcpy is a
     * move or two, where a variable one is a call. */
    switch (n) {
    case 0: return;
    case 4: memcpy(dst, src, 4); return;
    case 8: memcpy(dst, src, 8); return;
    case 16: memcpy(dst, src, 16); return;
    default: memcpy(dst, src, n); return;
    }
}

static inline nest_choose_clause *clause_of(const nest_waiter *w) { return w->data; }

/* The running task; aborts naming `what` outside a task.  Inline: this is
 * on the path of every send and receive. */
static inline nest_task *self_task(const char *what) {
    struct nest__rt *rt = nest__rt_cur;
    if (__builtin_expect(!rt || !rt->current, 0)) return nest__task_self(what);
    return rt->current;
}

static void misuse(const char *what, const void *h, const char *kind) __attribute__((noreturn));
static void misuse(const char *what, const void *h, const char *kind) {
    nest__panic("%s(): the %s handle at %p was never opened, or is a copy of one (rule: "
                "initialise channel handles with the open or clone call and use them in "
                "place; copying the struct does not clone a handle)",
                what, kind, h);
}

/* The channel of an open handle; NULL for a closed one; aborts otherwise. */
static inline struct nest__chan *tx_chan(const nest_chan_tx *tx, const char *what) {
    if (__builtin_expect(tx->self == tx && tx->state == OPEN_MAGIC, 1)) return tx->ch;
    if (tx->self == tx && tx->state == CLOSED_MAGIC) return NULL;
    misuse(what, tx, "send");
}

static inline struct nest__chan *rx_chan(const nest_chan_rx *rx, const char *what) {
    if (__builtin_expect(rx->self == rx && rx->state == OPEN_MAGIC, 1)) return rx->ch;
    if (rx->self == rx && rx->state == CLOSED_MAGIC) return NULL;
    misuse(what, rx, "receive");
}

/* ---- the buffer ---------------------------------------------------- */

/* Doubles an unbounded channel's buffer.  0 or -ENOMEM (buffer unchanged). */
static int grow(struct nest__chan *ch) {
    size_t slots = ch->slots ? ch->slots * 2 : UNBOUNDED_FIRST;
    if (slots < ch->slots || slots > SIZE_MAX / ch->elem_size) return -ENOMEM;
    size_t osize = ch->slots * ch->elem_size;
    unsigned char *buf = nest__realloc(ch->buf, osize, slots * ch->elem_size);
    if (!buf) return -ENOMEM;
    /* The items that wrapped around to the front go after the old end, so
     * that they follow the others again (the new size is twice the old). */
    size_t wrapped = ch->head + ch->count > ch->slots ? ch->head + ch->count - ch->slots : 0;
    if (wrapped) memcpy(buf + osize, buf, wrapped * ch->elem_size);
    ch->buf = buf;
    ch->slots = slots;
    return 0;
}

/* Appends an item.  There is room (count < capacity).  0 or -ENOMEM. */
static inline int push(struct nest__chan *ch, const void *item) {
    if (ch->elem_size) {
        if (ch->count == ch->slots) {
            int rc = grow(ch);
            if (rc < 0) return rc;
        }
        size_t i = ch->head + ch->count;
        if (i >= ch->slots) i -= ch->slots;
        copy_item(ch->buf + i * ch->elem_size, item, ch->elem_size);
    }
    if (++ch->count > ch->peak) ch->peak = ch->count;
    ch->sent++;
    ch->buffered_total++;
    return 0;
}

/* Removes the oldest item into out.  count > 0. */
static inline void pop(struct nest__chan *ch, void *out) {
    if (ch->elem_size) {
        copy_item(out, ch->buf + ch->head * ch->elem_size, ch->elem_size);
        if (++ch->head == ch->slots) ch->head = 0;
    }
    if (--ch->count == 0) {
        ch->head = 0;
        /* An unbounded channel gives a large buffer back once drained. */
        if (ch->capacity == NEST_CHAN_UNBOUNDED && ch->slots > UNBOUNDED_KEEP) {
            nest__free(ch->buf, ch->slots * ch->elem_size);
            ch->buf = NULL;
            ch->slots = 0;
        }
    }
}

static void drop_buffer(struct nest__chan *ch) {
    ch->count = 0;
    ch->head = 0;
    if (ch->capacity == NEST_CHAN_UNBOUNDED && ch->buf) {
        nest__free(ch->buf, ch->slots * ch->elem_size);
        ch->buf = NULL;
        ch->slots = 0;
    }
}

/* ---- the operations, without blocking --------------------------------- */

/* Sends now if that needs no waiting: 0 or an error, or WOULD_BLOCK. */
static inline __attribute__((always_inline)) int try_send(struct nest__chan *ch, const void *item) {
    if (__builtin_expect(ch->nrx == 0, 0)) return NEST_EBROKEN;
    nest_waiter *w = ch->receivers.head;
    if (w) {
        /* Straight into the blocked receiver's buffer; the buffer is empty
         * (invariant), so this keeps FIFO order. */
        copy_item(clause_of(w)->out, item, ch->elem_size);
        ch->sent++;
        nest_unpark_waiter(w, 0);
        return 0;
    }
    if (ch->count < ch->capacity) return push(ch, item);
    return WOULD_BLOCK;
}

/* Receives now if that needs no waiting: 0 or an error, or WOULD_BLOCK. */
static inline __attribute__((always_inline)) int try_recv(struct nest__chan *ch, void *out) {
    nest_waiter *w = ch->senders.head;
    if (ch->count) {
        pop(ch, out);
        if (w) {
            /* The buffer was full: the longest-blocked sender's item takes
             * the freed place, behind every buffered item. */
            push(ch, clause_of(w)->item); /* bounded: cannot fail */
            nest_unpark_waiter(w, 0);
        }
        return 0;
    }
    if (w) { /* capacity 0: straight from the blocked sender */
        copy_item(out, clause_of(w)->item, ch->elem_size);
        ch->sent++;
        nest_unpark_waiter(w, 0);
        return 0;
    }
    if (ch->ntx == 0) return NEST_EEND;
    return WOULD_BLOCK;
}

/* ---- open, clone, close ------------------------------------------------ */

/* What a task dump says about a channel its tasks wait on. */
static void describe(const struct nest__chan *ch, char *buf, size_t len) {
    if (ch->capacity == NEST_CHAN_UNBOUNDED)
        snprintf(buf, len, "%zu buffered (unbounded), %zu/%zu handles open", ch->count, ch->ntx,
                 ch->nrx);
    else
        snprintf(buf, len, "%zu of %zu buffered, %zu/%zu handles open", ch->count, ch->capacity,
                 ch->ntx, ch->nrx);
}
static void describe_senders(const nest_parking_lot *l, char *buf, size_t len) {
    describe((const struct nest__chan *)((const char *)l - offsetof(struct nest__chan, senders)),
             buf, len);
}
static void describe_receivers(const nest_parking_lot *l, char *buf, size_t len) {
    describe((const struct nest__chan *)((const char *)l - offsetof(struct nest__chan, receivers)),
             buf, len);
}

int nest_chan_open(nest_chan_tx *tx, nest_chan_rx *rx, size_t elem_size, size_t capacity) {
    size_t bufsize = 0;
    if (capacity != NEST_CHAN_UNBOUNDED) {
        if (elem_size && capacity > (SIZE_MAX - sizeof(struct nest__chan)) / elem_size)
            return -EINVAL;
        bufsize = capacity * elem_size;
    }
    size_t size = sizeof(struct nest__chan) + bufsize;
    struct nest__chan *ch = nest__alloc(size);
    if (!ch) return -ENOMEM;
    memset(ch, 0, sizeof *ch);
    nest_parking_lot_init(&ch->senders);
    nest_parking_lot_init(&ch->receivers);
    nest_parking_lot_set_name(&ch->senders, "channel send", describe_senders);
    nest_parking_lot_set_name(&ch->receivers, "channel receive", describe_receivers);
    ch->elem_size = elem_size;
    ch->capacity = capacity;
    ch->size = size;
    if (capacity != NEST_CHAN_UNBOUNDED) {
        ch->buf = bufsize ? (unsigned char *)(ch + 1) : NULL;
        ch->slots = capacity;
    }
    ch->ntx = ch->nrx = 1;
    tx->ch = ch;
    tx->self = tx;
    tx->state = OPEN_MAGIC;
    rx->ch = ch;
    rx->self = rx;
    rx->state = OPEN_MAGIC;
    return 0;
}

int nest_chan_tx_clone(nest_chan_tx *dst, nest_chan_tx *src) {
    struct nest__chan *ch = tx_chan(src, "nest_chan_tx_clone");
    if (!ch) return NEST_ECLOSED;
    ch->ntx++;
    dst->ch = ch;
    dst->self = dst;
    dst->state = OPEN_MAGIC;
    return 0;
}

int nest_chan_rx_clone(nest_chan_rx *dst, nest_chan_rx *src) {
    struct nest__chan *ch = rx_chan(src, "nest_chan_rx_clone");
    if (!ch) return NEST_ECLOSED;
    ch->nrx++;
    dst->ch = ch;
    dst->self = dst;
    dst->state = OPEN_MAGIC;
    return 0;
}

/* Wakes, with NEST_ECLOSED, every waiter of l that uses handle h. */
static void wake_users(nest_parking_lot *l, const void *h) {
    nest_waiter *w = l->head;
    while (w) {
        nest_waiter *next = w->next;
        nest_choose_clause *c = clause_of(w);
        if ((const void *)c->tx == h || (const void *)c->rx == h) {
            /* The unpark unlinks w's whole group; members of it that follow
             * w directly must be skipped here (a member further on is
             * unlinked before the walk gets to it). */
            while (next && next->task == w->task) next = next->next;
            nest_unpark_waiter(w, NEST_ECLOSED);
        }
        w = next;
    }
}

static void chan_free(struct nest__chan *ch) {
    if (ch->capacity == NEST_CHAN_UNBOUNDED && ch->buf)
        nest__free(ch->buf, ch->slots * ch->elem_size);
    nest__free(ch, ch->size);
}

int nest_chan_tx_close(nest_chan_tx *tx) {
    struct nest__chan *ch = tx_chan(tx, "nest_chan_tx_close");
    if (!ch) return NEST_ECLOSED;
    tx->ch = NULL;
    tx->state = CLOSED_MAGIC;
    wake_users(&ch->senders, tx);
    if (--ch->ntx == 0) {
        /* The buffer is empty whenever receivers wait (invariant). */
        nest_unpark_all(&ch->receivers, NEST_EEND);
        if (ch->nrx == 0) chan_free(ch);
    }
    return 0;
}

int nest_chan_rx_close(nest_chan_rx *rx) {
    struct nest__chan *ch = rx_chan(rx, "nest_chan_rx_close");
    if (!ch) return NEST_ECLOSED;
    rx->ch = NULL;
    rx->state = CLOSED_MAGIC;
    wake_users(&ch->receivers, rx);
    if (--ch->nrx == 0) {
        drop_buffer(ch); /* nobody can receive these any more */
        nest_unpark_all(&ch->senders, NEST_EBROKEN);
        if (ch->ntx == 0) chan_free(ch);
    }
    return 0;
}

/* ---- send and receive --------------------------------------------------- */

/* The one place where a send or receive leaves the CPU: parks w (when the
 * operation must wait) or yields (when it is done).  Both go through this
 * one call site, and both tail-call the runtime, so that the task switched
 * to - which left through here too, in the other role as often as not -
 * returns along the same addresses the task switched from called through:
 * the return-stack predictor then misses only where the two tasks' own
 * code differs (and, today, at the runtime's own park/yield split).  The
 * ping-pong benchmark went from ~80 to ~70 ns per hand-off with this (see
 * design/08-channels.md). */
static __attribute__((noinline)) int leave(nest_task *self, nest_waiter *w) {
    if (!w) return nest__yield(nest__rt_cur, self);
    return nest_park_group(w, 1, NULL);
}

/* A send (op == SEND: h is the send handle, p the item) or a receive (h the
 * receive handle, p the output).  nest_chan_send() and nest_chan_recv()
 * tail-call this, so that both return from here straight to the user.
 * The park is this checkpoint's yield; whoever completes a blocked
 * operation has done all of its work when the task wakes, and after any
 * result the channel may be gone. */
static __attribute__((noinline)) int chan_op(int op, void *h, void *p) {
    nest_task *self = self_task(op == NEST_CHOOSE_SEND ? "nest_chan_send" : "nest_chan_recv");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    nest_choose_clause c;
    nest_waiter w, *wp = NULL;
    int rc;
    if (op == NEST_CHOOSE_SEND) {
        struct nest__chan *ch = tx_chan(h, "nest_chan_send");
        rc = ch ? try_send(ch, p) : NEST_ECLOSED;
        if (rc == WOULD_BLOCK) {
            c = (nest_choose_clause){NEST_CHOOSE_SEND, h, p, NULL, NULL, 0};
            nest_waiter_init(wp = &w, &ch->senders, &c);
        }
    } else {
        struct nest__chan *ch = rx_chan(h, "nest_chan_recv");
        rc = ch ? try_recv(ch, p) : NEST_ECLOSED;
        if (rc == WOULD_BLOCK) {
            c = (nest_choose_clause){NEST_CHOOSE_RECV, NULL, NULL, h, p, 0};
            nest_waiter_init(wp = &w, &ch->receivers, &c);
        }
    }
    /* One call site (see leave()): hide wp from the optimiser, which would
     * otherwise copy the call into each branch above. */
    __asm__("" : "+r"(wp));
    int prc = leave(self, wp);
    return wp ? prc : rc;
}

int nest_chan_send(nest_chan_tx *tx, const void *item) {
    return chan_op(NEST_CHOOSE_SEND, tx, (void *)(uintptr_t)item);
}

int nest_chan_recv(nest_chan_rx *rx, void *out) { return chan_op(NEST_CHOOSE_RECV, rx, out); }

int nest_chan_try_send(nest_chan_tx *tx, const void *item) {
    struct nest__chan *ch = tx_chan(tx, "nest_chan_try_send");
    if (!ch) return NEST_ECLOSED;
    int rc = try_send(ch, item);
    return rc == WOULD_BLOCK ? -EAGAIN : rc;
}

int nest_chan_try_recv(nest_chan_rx *rx, void *out) {
    struct nest__chan *ch = rx_chan(rx, "nest_chan_try_recv");
    if (!ch) return NEST_ECLOSED;
    int rc = try_recv(ch, out);
    return rc == WOULD_BLOCK ? -EAGAIN : rc;
}

/* ---- for choose.c (declared in lib/chan.h) ------------------------------- */

/* Completes clause c if it can complete without waiting: returns 1 with
 * c->result set, or 0.  c->op is SEND or RECV. */
int nest__chan_clause_try(nest_choose_clause *c) {
    int rc;
    if (c->op == NEST_CHOOSE_SEND) {
        struct nest__chan *ch = tx_chan(c->tx, "nest_choose");
        rc = ch ? try_send(ch, c->item) : NEST_ECLOSED;
    } else {
        struct nest__chan *ch = rx_chan(c->rx, "nest_choose");
        rc = ch ? try_recv(ch, c->out) : NEST_ECLOSED;
    }
    if (rc == WOULD_BLOCK) return 0;
    c->result = rc;
    return 1;
}

/* The lot a clause that could not complete waits in (its handle is open). */
nest_parking_lot *nest__chan_clause_lot(nest_choose_clause *c) {
    return c->op == NEST_CHOOSE_SEND ? &c->tx->ch->senders : &c->rx->ch->receivers;
}

/* ---- statistics ------------------------------------------------------- */

static void fill_stats(const struct nest__chan *ch, nest_chan_stats *st) {
    st->elem_size = ch->elem_size;
    st->capacity = ch->capacity;
    st->buffered = ch->count;
    st->peak = ch->peak;
    st->tx_open = ch->ntx;
    st->rx_open = ch->nrx;
    st->waiting_send = ch->senders.count;
    st->waiting_recv = ch->receivers.count;
    st->sent = ch->sent;
    st->direct = ch->sent - ch->buffered_total;
}

int nest_chan_tx_stats(const nest_chan_tx *tx, nest_chan_stats *st) {
    struct nest__chan *ch = tx_chan(tx, "nest_chan_tx_stats");
    if (!ch) return NEST_ECLOSED;
    fill_stats(ch, st);
    return 0;
}

int nest_chan_rx_stats(const nest_chan_rx *rx, nest_chan_stats *st) {
    struct nest__chan *ch = rx_chan(rx, "nest_chan_rx_stats");
    if (!ch) return NEST_ECLOSED;
    fill_stats(ch, st);
    return 0;
}
