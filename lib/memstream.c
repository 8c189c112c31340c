/*
 * lib/memstream.c - in-memory stream pairs (nest_memory_stream_pair).
 *
 * Owns: the shared block of a pair - two bounded ring buffers, one per
 * direction - and the parking lots where a reader waits for data and a
 * writer for space.
 *
 * Invariants:
 *  - End `side` writes into dir[side] and reads from dir[1 - side].
 *  - A direction's readers lot holds at most the one task receiving from
 *    it, its writers lot at most the one task sending into it (the busy
 *    check of lib/stream.c keeps others out).  Whoever changes what they
 *    wait for unparks them with 0 and they look again; close unparks them
 *    with NEST_ECLOSED (their own end) or lets them see EOF or the missing
 *    reader (the other end).  A parked task is unlinked before it wakes, so
 *    it never touches the block again after a close that may free it.
 *  - Bytes are copied only by the task that sends or receives, never by
 *    the other side: a cancelled receive therefore consumed nothing, and a
 *    cancelled send reports exactly what it copied.
 *  - The block is freed when the second end closes (refs counts open ends).
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "nest/error.h"
#include "nest/lowlevel.h"
#include "nest/stream.h"
#include "nest/time.h"

struct mem_dir {
    unsigned char *buf;        /* cap bytes, a ring */
    size_t cap;
    size_t head;               /* index of the oldest byte */
    size_t len;                /* bytes buffered */
    int eof;                   /* the writing end sent EOF or closed */
    int reader_gone;           /* the reading end closed */
    nest_parking_lot readers;  /* the receiving task, waiting for data/EOF */
    nest_parking_lot writers;  /* the sending task, waiting for space */
};

struct nest__mem_pair {
    struct mem_dir dir[2];
    int refs;                  /* open ends */
    size_t size;               /* of this allocation */
};

static nest_memory_stream *mem(nest_stream *s) { return (nest_memory_stream *)s; }

static void dir_init(struct mem_dir *d, unsigned char *buf, size_t cap) {
    memset(d, 0, sizeof *d);
    d->buf = buf;
    d->cap = cap;
    nest_parking_lot_init(&d->readers);
    nest_parking_lot_set_name(&d->readers, "memory stream receive", NULL);
    nest_parking_lot_init(&d->writers);
    nest_parking_lot_set_name(&d->writers, "memory stream send", NULL);
}

static size_t dir_put(struct mem_dir *d, const unsigned char *p, size_t n) {
    size_t room = d->cap - d->len;
    if (n > room) n = room;
    size_t tail = (d->head + d->len) % d->cap;
    size_t first = d->cap - tail < n ? d->cap - tail : n;
    memcpy(d->buf + tail, p, first);
    memcpy(d->buf, p + first, n - first);
    d->len += n;
    return n;
}

static size_t dir_take(struct mem_dir *d, unsigned char *p, size_t n) {
    if (n > d->len) n = d->len;
    size_t first = d->cap - d->head < n ? d->cap - d->head : n;
    memcpy(p, d->buf + d->head, first);
    memcpy(p + first, d->buf, n - first);
    d->head = (d->head + n) % d->cap;
    d->len -= n;
    return n;
}

static int mem_send_all(nest_stream *s, const void *buf, size_t len, size_t *sent,
                        nest_stream_op *op) {
    struct mem_dir *d = &mem(s)->pair->dir[mem(s)->side];
    const unsigned char *p = buf;
    size_t total = 0;
    int waited = 0;
    for (;;) {
        if (d->reader_gone) {
            *sent = total;
            return -EPIPE;
        }
        size_t k = dir_put(d, p + total, len - total);
        total += k;
        if (k) nest_unpark_all(&d->readers, 0);
        if (total == len) break;
        nest_waiter w;
        int rc = nest_park(&d->writers, &w, NULL, NULL);
        waited = 1;
        if (op->closed || rc < 0) {
            *sent = total;
            return rc < 0 ? rc : NEST_ECLOSED;
        }
    }
    *sent = total;
    if (!waited) (void)nest_checkpoint(); /* cannot fail: see nest_stream_vtable */
    return 0;
}

static ssize_t mem_receive_some(nest_stream *s, void *buf, size_t max, nest_stream_op *op) {
    struct mem_dir *d = &mem(s)->pair->dir[1 - mem(s)->side];
    int waited = 0;
    for (;;) {
        if (d->len > 0 || d->eof) {
            size_t n = dir_take(d, buf, max);
            if (n) nest_unpark_all(&d->writers, 0);
            if (!waited) (void)nest_checkpoint();
            return (ssize_t)n;
        }
        nest_waiter w;
        int rc = nest_park(&d->readers, &w, NULL, NULL);
        waited = 1;
        if (op->closed || rc < 0) return rc < 0 ? rc : NEST_ECLOSED;
    }
}

static int mem_send_eof(nest_stream *s, nest_stream_op *op) {
    (void)op;
    struct mem_dir *d = &mem(s)->pair->dir[mem(s)->side];
    d->eof = 1;
    nest_unpark_all(&d->readers, 0);
    return 0;
}

static int mem_close(nest_stream *s) {
    nest_memory_stream *m = mem(s);
    struct nest__mem_pair *p = m->pair;
    struct mem_dir *out = &p->dir[m->side], *in = &p->dir[1 - m->side];
    /* Our own blocked operations (their records are marked closed). */
    nest_unpark_all(&out->writers, NEST_ECLOSED);
    nest_unpark_all(&in->readers, NEST_ECLOSED);
    /* The peer: it reads what we sent, then EOF; its sends fail. */
    out->eof = 1;
    nest_unpark_all(&out->readers, 0);
    in->reader_gone = 1;
    in->len = 0;
    nest_unpark_all(&in->writers, 0);
    m->pair = NULL;
    if (--p->refs == 0) nest__free(p, p->size);
    return 0;
}

static const nest_stream_vtable mem_vt = {
    "memory", mem_send_all, mem_receive_some, mem_send_eof, mem_close,
};

int nest_memory_stream_pair(nest_memory_stream *a, nest_memory_stream *b, size_t capacity) {
    if (capacity == 0) capacity = NEST_MEMORY_STREAM_DEFAULT_CAPACITY;
    if (capacity > ((size_t)-1 - sizeof(struct nest__mem_pair)) / 2) return -ENOMEM;
    size_t size = sizeof(struct nest__mem_pair) + 2 * capacity;
    struct nest__mem_pair *p = nest__alloc(size);
    if (!p) return -ENOMEM;
    unsigned char *bufs = (unsigned char *)(p + 1);
    dir_init(&p->dir[0], bufs, capacity);
    dir_init(&p->dir[1], bufs + capacity, capacity);
    p->refs = 2;
    p->size = size;
    nest_stream_init(&a->stream, &mem_vt);
    a->pair = p;
    a->side = 0;
    nest_stream_init(&b->stream, &mem_vt);
    b->pair = p;
    b->side = 1;
    return 0;
}
