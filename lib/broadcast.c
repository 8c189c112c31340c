/*
 * lib/broadcast.c - the broadcast channel (nest/chan.h): one sender, many
 * subscribers, each receiving every item sent after it subscribed.
 *
 * One ring buffer is shared by all subscribers.  Items are numbered by a
 * global sequence number: `head` is the number the next item will get, and
 * item s lives in slot s & mask.  Each subscriber has a cursor, the number
 * of the next item it will receive; its backlog is head - cursor.
 *
 * NEST_BCAST_BLOCK: `tail` is the smallest cursor (head when nobody is
 * subscribed), and the items tail .. head-1 are retained.  The sender may
 * publish while head - tail < capacity, i.e. while every backlog has room.
 * To find the new smallest cursor without scanning on every receive,
 * `at_tail` counts the subscribers whose cursor equals tail; only when the
 * last of them moves on is the list scanned (once per advance of tail, so
 * O(1) per item and subscriber, amortised).
 *
 * NEST_BCAST_DROP_OLDEST: the sender always publishes; the ring keeps the
 * last `capacity` items (head-capacity .. head-1).  A subscriber whose
 * cursor fell below that window learns it at its next receive
 * (NEST_ELAGGED), and its cursor jumps to the oldest retained item.
 *
 * Hand-off, as in the memory channel: a subscriber blocked in receive has
 * nothing left to read (cursor == head); the sender copies the new item
 * straight into its buffer, advances its cursor and unparks it.  A sender
 * blocked for room (BLOCK) parks with its item; whoever makes room
 * publishes that item on its behalf, in FIFO order, then unparks it.  So a
 * woken task has nothing left to do and never touches the channel again
 * (it may have been freed), and a cancelled task, taken out of its lot
 * before it wakes, did nothing.
 *
 * Invariants:
 *  - BLOCK: tail <= every cursor; at_tail == number of cursors equal to
 *    tail; tail == head and at_tail == 0 when nsubs == 0.
 *  - `senders` is non-empty only while there is no room (serve_senders()
 *    runs after everything that can make room).
 *  - `receivers` holds subscribers whose cursor == head, and is empty once
 *    the sender closed.
 *  - The channel is freed when the sender has closed and nsubs == 0.
 */
#include <string.h>

#include "core.h"

#define TX_MAGIC 0x62637478u     /* "bctx" */
#define RX_MAGIC 0x62637278u     /* "bcrx" */
#define CLOSED_MAGIC 0x62636c6fu /* "bclo" */
#define WOULD_BLOCK 1

struct nest__bcast {
    nest_parking_lot senders;    /* BLOCK: senders waiting for room; data: bsend */
    nest_parking_lot receivers;  /* subscribers waiting for an item; data: brecv */
    size_t elem_size;
    size_t capacity;             /* the largest backlog allowed / retained */
    uint64_t mask;               /* ring slots - 1 (slots: a power of two >= capacity) */
    int policy;
    int closed;                  /* the send handle was closed */
    uint64_t head;               /* sequence number of the next item */
    uint64_t tail;               /* BLOCK: smallest cursor */
    size_t at_tail;              /* BLOCK: subscribers whose cursor == tail */
    nest_bcast_rx *subs;         /* subscribers, newest first */
    size_t nsubs;
    unsigned char *ring;         /* right after this struct */
    size_t size;                 /* bytes of this allocation */
};

/* What a blocked sender offers and a blocked receiver wants. */
struct bsend {
    const void *item;
    const nest_bcast_tx *tx;
};
struct brecv {
    void *out;
    nest_bcast_rx *rx;
};

static void misuse(const char *what, const void *h) __attribute__((noreturn));
static void misuse(const char *what, const void *h) {
    nest__panic("%s(): the broadcast handle at %p was never opened (or subscribed), or is a "
                "copy of one (rule: initialise handles with nest_bcast_open(), "
                "nest_bcast_subscribe() or nest_bcast_rx_clone() and use them in place)",
                what, h);
}

static struct nest__bcast *tx_bcast(const nest_bcast_tx *tx, const char *what) {
    if (tx->self == tx && tx->state == TX_MAGIC) return tx->b;
    if (tx->self == tx && tx->state == CLOSED_MAGIC) return NULL;
    misuse(what, tx);
}

static struct nest__bcast *rx_bcast(const nest_bcast_rx *rx, const char *what) {
    if (rx->self == rx && rx->state == RX_MAGIC) return rx->b;
    if (rx->self == rx && rx->state == CLOSED_MAGIC) return NULL;
    misuse(what, rx);
}

static inline void copy_item(void *dst, const void *src, size_t n) {
    if (n) memcpy(dst, src, n);
}

static inline unsigned char *slot(const struct nest__bcast *b, uint64_t seq) {
    return b->ring + (size_t)(seq & b->mask) * b->elem_size;
}

/* ---- cursors and room (BLOCK) ------------------------------------------ */

/* Recomputes tail and at_tail from the subscribers' cursors. */
static void retail(struct nest__bcast *b) {
    uint64_t min = b->head;
    size_t n = 0;
    for (nest_bcast_rx *r = b->subs; r; r = r->next) {
        if (r->cursor < min) {
            min = r->cursor;
            n = 1;
        } else if (r->cursor == min) {
            n++;
        }
    }
    b->tail = min;
    b->at_tail = n;
}

/* Moves rx past one item. */
static void advance(struct nest__bcast *b, nest_bcast_rx *rx) {
    uint64_t c = rx->cursor++;
    if (b->policy == NEST_BCAST_BLOCK && c == b->tail && --b->at_tail == 0) retail(b);
}

static int room(const struct nest__bcast *b) {
    return b->policy == NEST_BCAST_DROP_OLDEST || b->head - b->tail < b->capacity;
}

/* Appends an item (there is room) and hands it to every blocked receiver. */
static void publish(struct nest__bcast *b, const void *item) {
    copy_item(slot(b, b->head), item, b->elem_size);
    b->head++;
    if (b->nsubs == 0) b->tail = b->head;
    nest_waiter *w;
    while ((w = b->receivers.head)) {
        struct brecv *r = w->data;
        copy_item(r->out, item, b->elem_size);
        advance(b, r->rx);
        nest_unpark_waiter(w, 0);
    }
}

/* Completes blocked sends, first come first served, while there is room. */
static void serve_senders(struct nest__bcast *b) {
    nest_waiter *w;
    while ((w = b->senders.head) && room(b)) {
        publish(b, ((struct bsend *)w->data)->item);
        nest_unpark_waiter(w, 0);
    }
}

/* Wakes every waiter of l whose handle is h with NEST_ECLOSED. */
static void wake_users(nest_parking_lot *l, const void *h, int is_tx) {
    nest_waiter *w = l->head;
    while (w) {
        nest_waiter *next = w->next;
        const void *wh = is_tx ? (const void *)((struct bsend *)w->data)->tx
                               : (const void *)((struct brecv *)w->data)->rx;
        if (wh == h) nest_unpark_waiter(w, NEST_ECLOSED);
        w = next;
    }
}

static void bcast_free(struct nest__bcast *b) { nest__free(b, b->size); }

/* ---- open, close, subscribe --------------------------------------------- */

int nest_bcast_open(nest_bcast_tx *tx, size_t elem_size, size_t capacity, int policy) {
    if (capacity == 0 || (policy != NEST_BCAST_BLOCK && policy != NEST_BCAST_DROP_OLDEST))
        return -EINVAL;
    size_t slots = 1;
    while (slots < capacity) {
        if (slots > SIZE_MAX / 2) return -EINVAL;
        slots *= 2;
    }
    if (elem_size && slots > (SIZE_MAX - sizeof(struct nest__bcast)) / elem_size) return -EINVAL;
    size_t size = sizeof(struct nest__bcast) + slots * elem_size;
    struct nest__bcast *b = nest__alloc(size);
    if (!b) return -ENOMEM;
    memset(b, 0, sizeof *b);
    nest_parking_lot_init(&b->senders);
    nest_parking_lot_init(&b->receivers);
    nest_parking_lot_set_name(&b->senders, "broadcast send", NULL);
    nest_parking_lot_set_name(&b->receivers, "broadcast receive", NULL);
    b->elem_size = elem_size;
    b->capacity = capacity;
    b->mask = slots - 1;
    b->policy = policy;
    b->ring = (unsigned char *)(b + 1);
    b->size = size;
    tx->b = b;
    tx->self = tx;
    tx->state = TX_MAGIC;
    return 0;
}

int nest_bcast_tx_close(nest_bcast_tx *tx) {
    struct nest__bcast *b = tx_bcast(tx, "nest_bcast_tx_close");
    if (!b) return NEST_ECLOSED;
    tx->b = NULL;
    tx->state = CLOSED_MAGIC;
    b->closed = 1;
    wake_users(&b->senders, tx, 1);
    nest_unpark_all(&b->receivers, NEST_EEND); /* they had received everything */
    if (b->nsubs == 0) bcast_free(b);
    return 0;
}

static void link_sub(struct nest__bcast *b, nest_bcast_rx *rx, uint64_t cursor) {
    rx->b = b;
    rx->self = rx;
    rx->state = RX_MAGIC;
    rx->cursor = cursor;
    rx->lost = 0;
    rx->lagged = 0;
    rx->prev = NULL;
    rx->next = b->subs;
    if (b->subs) b->subs->prev = rx;
    b->subs = rx;
    b->nsubs++;
    if (b->policy == NEST_BCAST_BLOCK && cursor == b->tail) b->at_tail++;
}

int nest_bcast_subscribe(nest_bcast_tx *tx, nest_bcast_rx *rx) {
    struct nest__bcast *b = tx_bcast(tx, "nest_bcast_subscribe");
    if (!b) return NEST_ECLOSED;
    link_sub(b, rx, b->head);
    return 0;
}

int nest_bcast_rx_clone(nest_bcast_rx *dst, nest_bcast_rx *src) {
    struct nest__bcast *b = rx_bcast(src, "nest_bcast_rx_clone");
    if (!b) return NEST_ECLOSED;
    link_sub(b, dst, src->cursor);
    return 0;
}

int nest_bcast_unsubscribe(nest_bcast_rx *rx) {
    struct nest__bcast *b = rx_bcast(rx, "nest_bcast_unsubscribe");
    if (!b) return NEST_ECLOSED;
    wake_users(&b->receivers, rx, 0);
    if (rx->prev)
        rx->prev->next = rx->next;
    else
        b->subs = rx->next;
    if (rx->next) rx->next->prev = rx->prev;
    rx->next = rx->prev = NULL;
    rx->b = NULL;
    rx->state = CLOSED_MAGIC;
    b->nsubs--;
    if (b->policy == NEST_BCAST_BLOCK) {
        /* The slowest subscriber may be gone: the sender may have room. */
        if (rx->cursor == b->tail && --b->at_tail == 0) retail(b);
        serve_senders(b);
    }
    if (b->closed && b->nsubs == 0) bcast_free(b);
    return 0;
}

/* ---- send and receive --------------------------------------------------- */

static int try_send(struct nest__bcast *b, const void *item) {
    if (!room(b)) return WOULD_BLOCK;
    publish(b, item);
    return 0;
}

static int try_recv(struct nest__bcast *b, nest_bcast_rx *rx, void *out) {
    if (rx->cursor == b->head) return b->closed ? NEST_EEND : WOULD_BLOCK;
    if (b->policy == NEST_BCAST_DROP_OLDEST && b->head - rx->cursor > b->capacity) {
        uint64_t lost = b->head - b->capacity - rx->cursor;
        rx->cursor += lost;
        rx->lost += lost;
        rx->lagged = lost;
        return NEST_ELAGGED;
    }
    copy_item(out, slot(b, rx->cursor), b->elem_size);
    advance(b, rx);
    serve_senders(b);
    return 0;
}

int nest_bcast_send(nest_bcast_tx *tx, const void *item) {
    nest_task *self = nest__task_self("nest_bcast_send");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    struct nest__bcast *b = tx_bcast(tx, "nest_bcast_send");
    int rc = b ? try_send(b, item) : NEST_ECLOSED;
    if (rc == WOULD_BLOCK) {
        struct bsend d = {item, tx};
        nest_waiter w;
        return nest_park(&b->senders, &w, &d, NULL); /* the checkpoint's yield */
    }
    nest__yield(nest__rt_cur, self);
    return rc;
}

int nest_bcast_try_send(nest_bcast_tx *tx, const void *item) {
    struct nest__bcast *b = tx_bcast(tx, "nest_bcast_try_send");
    if (!b) return NEST_ECLOSED;
    int rc = try_send(b, item);
    return rc == WOULD_BLOCK ? -EAGAIN : rc;
}

int nest_bcast_recv(nest_bcast_rx *rx, void *out) {
    nest_task *self = nest__task_self("nest_bcast_recv");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    struct nest__bcast *b = rx_bcast(rx, "nest_bcast_recv");
    int rc = b ? try_recv(b, rx, out) : NEST_ECLOSED;
    if (rc == WOULD_BLOCK) {
        struct brecv d = {out, rx};
        nest_waiter w;
        return nest_park(&b->receivers, &w, &d, NULL);
    }
    nest__yield(nest__rt_cur, self);
    return rc;
}

int nest_bcast_try_recv(nest_bcast_rx *rx, void *out) {
    struct nest__bcast *b = rx_bcast(rx, "nest_bcast_try_recv");
    if (!b) return NEST_ECLOSED;
    int rc = try_recv(b, rx, out);
    return rc == WOULD_BLOCK ? -EAGAIN : rc;
}

/* ---- statistics --------------------------------------------------------- */

static size_t backlog_of(const struct nest__bcast *b, const nest_bcast_rx *rx) {
    uint64_t n = b->head - rx->cursor;
    return n > b->capacity ? b->capacity : (size_t)n;
}

static void fill_stats(const struct nest__bcast *b, nest_bcast_stats *st) {
    st->elem_size = b->elem_size;
    st->capacity = b->capacity;
    st->policy = b->policy;
    st->closed = b->closed;
    st->subscribers = b->nsubs;
    st->waiting_send = b->senders.count;
    st->waiting_recv = b->receivers.count;
    st->sent = b->head;
    st->max_backlog = 0;
    for (const nest_bcast_rx *r = b->subs; r; r = r->next) {
        size_t n = backlog_of(b, r);
        if (n > st->max_backlog) st->max_backlog = n;
    }
}

int nest_bcast_tx_stats(const nest_bcast_tx *tx, nest_bcast_stats *st) {
    struct nest__bcast *b = tx_bcast(tx, "nest_bcast_tx_stats");
    if (!b) return NEST_ECLOSED;
    fill_stats(b, st);
    return 0;
}

int nest_bcast_rx_stats(const nest_bcast_rx *rx, nest_bcast_sub_stats *sub, nest_bcast_stats *st) {
    struct nest__bcast *b = rx_bcast(rx, "nest_bcast_rx_stats");
    if (!b) return NEST_ECLOSED;
    if (sub) {
        sub->backlog = backlog_of(b, rx);
        sub->lost = rx->lost;
        sub->lagged = rx->lagged;
    }
    if (st) fill_stats(b, st);
    return 0;
}
