/*
 * lib/limiter.c - nest_limiter (nest/sync.h): Trio's CapacityLimiter, with
 * per-borrower tokens, FIFO hand-off and a total adjustable at run time.
 *
 * Each borrower that holds or waits for a token has one record (struct
 * nest__borrow), allocated when it asks and freed when it gives the token
 * back (or stops waiting); the records are chained in a hash table keyed by
 * the borrower pointer, so "does this borrower hold a token?" is O(1).
 *
 * Invariants:
 *  - borrowed < total implies lot is empty: a returned token, or one added
 *    by set_total, goes straight to the first waiter (grant, then unpark
 *    with 0, "you hold it") while borrowed < total.  So an acquirer may
 *    take a token whenever borrowed < total, without looking at the queue.
 *  - Every record is in the table; nrecs counts them; nbuckets >= nrecs
 *    (the table grows before a record is added, in the acquirer, so a
 *    grant never allocates).  With no records the table is freed: an idle
 *    limiter owns no memory.
 *  - A waiting record is the data of exactly one waiter in lot; a holding
 *    record counts in borrowed.
 *  - A record whose borrower is a task (rec->task) is in that task's exit
 *    hooks while it holds the token; if the task exits holding it, the hook
 *    returns the token (see design/07 for why, unlike a lock, it does not
 *    break anything).
 *  - A waiter unparked with 0 holds its token even if cancelled before it
 *    runs; a park that returns -ECANCELED left the lot before any grant.
 */
#include <stddef.h>

#include "core.h"
#include "nest/sync.h"

struct nest__borrow {
    struct nest__borrow *hnext; /* chain in l->buckets */
    const void *borrower;       /* the key */
    nest_limiter *limiter;      /* for the exit hook */
    nest_task *task;            /* the borrower, when it is the task that asked */
    nest__exit_hook hook;       /* in task's exit hooks while holding */
    int holding;                /* 1: holds a token; 0: waits for one */
};

typedef struct nest__borrow borrow;

static size_t bucket_of(const nest_limiter *l, const void *p) {
    uint64_t h = (uint64_t)(uintptr_t)p * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & (l->nbuckets - 1);
}

static borrow *find(const nest_limiter *l, const void *p) {
    if (!l->nbuckets) return NULL;
    for (borrow *b = l->buckets[bucket_of(l, p)]; b; b = b->hnext)
        if (b->borrower == p) return b;
    return NULL;
}

/* Makes room for one more record.  Returns 0 or -ENOMEM (nothing changed). */
static int grow(nest_limiter *l) {
    if (l->nrecs < l->nbuckets) return 0;
    size_t n = l->nbuckets ? 2 * l->nbuckets : 8;
    borrow **nb = nest__alloc(n * sizeof *nb);
    if (!nb) return -ENOMEM;
    for (size_t i = 0; i < n; i++) nb[i] = NULL;
    borrow **ob = l->buckets;
    size_t on = l->nbuckets;
    l->buckets = nb;
    l->nbuckets = n;
    for (size_t i = 0; i < on; i++) {
        for (borrow *b = ob[i], *next; b; b = next) {
            next = b->hnext;
            size_t k = bucket_of(l, b->borrower);
            b->hnext = nb[k];
            nb[k] = b;
        }
    }
    if (ob) nest__free(ob, on * sizeof *ob);
    return 0;
}

/* A new waiting record for borrower, in the table.  NULL: out of memory. */
static borrow *reserve(nest_limiter *l, const void *borrower, nest_task *self) {
    if (grow(l) < 0) return NULL;
    borrow *b = nest__alloc(sizeof *b);
    if (!b) {
        if (l->nrecs == 0 && l->buckets) { /* keep "idle owns no memory" */
            nest__free(l->buckets, l->nbuckets * sizeof *l->buckets);
            l->buckets = NULL;
            l->nbuckets = 0;
        }
        return NULL;
    }
    b->borrower = borrower;
    b->limiter = l;
    b->task = borrower == (const void *)self ? self : NULL;
    b->hook.next = b->hook.prev = NULL;
    b->hook.fn = NULL;
    b->holding = 0;
    size_t k = bucket_of(l, borrower);
    b->hnext = l->buckets[k];
    l->buckets[k] = b;
    l->nrecs++;
    return b;
}

/* Removes b from the table and frees it (and the table, when empty). */
static void drop(nest_limiter *l, borrow *b) {
    borrow **p = &l->buckets[bucket_of(l, b->borrower)];
    while (*p != b) p = &(*p)->hnext;
    *p = b->hnext;
    nest__free(b, sizeof *b);
    if (--l->nrecs == 0) {
        nest__free(l->buckets, l->nbuckets * sizeof *l->buckets);
        l->buckets = NULL;
        l->nbuckets = 0;
    }
}

static void release_rec(nest_limiter *l, borrow *b);

/* Runs in task_done of a borrower task that exits holding its token (the
 * hook is already unlinked). */
static void borrower_exited(nest__exit_hook *h, nest_task *t) {
    borrow *b = (borrow *)(void *)((char *)h - offsetof(borrow, hook));
    (void)t;
    b->task = NULL; /* its hook is gone: release_rec must not unlink it */
    b->limiter->reclaimed++;
    release_rec(b->limiter, b);
}

static void grant(nest_limiter *l, borrow *b) {
    b->holding = 1;
    l->borrowed++;
    if (b->task) {
        b->hook.fn = borrower_exited;
        nest__exit_hook_add(b->task, &b->hook);
    }
}

/* Hands available tokens to the waiters, first come first served. */
static void hand_out(nest_limiter *l) {
    while (l->borrowed < l->total) {
        nest_waiter *w = nest_parking_lot_first(&l->lot);
        if (!w) return;
        grant(l, w->data);
        nest_unpark_waiter(w, 0);
    }
}

static void release_rec(nest_limiter *l, borrow *b) {
    if (b->task) nest__exit_hook_remove(b->task, &b->hook);
    l->borrowed--;
    drop(l, b);
    hand_out(l);
}

static void check_new_borrower(const nest_limiter *l, const void *borrower, const char *what,
                               nest_task *self) {
    if (!borrower)
        nest__panic("%s(): the borrower is NULL (rule: a borrower is identified by a non-NULL "
                    "pointer)",
                    what);
    borrow *b = find(l, borrower);
    if (!b) return;
    if (borrower == (const void *)self)
        nest__panic("%s(): task '%s' (spawned at %s:%d) already %s a token of this limiter "
                    "(rule: a borrower holds at most one token of a CapacityLimiter)",
                    what, self->name, self->file, self->line, b->holding ? "holds" : "waits for");
    nest__panic("%s(): borrower %p already %s a token of this limiter (rule: a borrower holds "
                "at most one token of a CapacityLimiter)",
                what, borrower, b->holding ? "holds" : "waits for");
}

static int acquire(nest_limiter *l, const void *borrower, const char *what) {
    nest_task *self = nest__task_self(what);
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    check_new_borrower(l, borrower, what, self);
    borrow *b = reserve(l, borrower, self);
    if (!b) return -ENOMEM;
    if (l->borrowed < l->total) {
        grant(l, b); /* taken before the yield: a cancellation cannot undo it */
        return nest__yield(nest__rt_cur, self);
    }
    nest_waiter w;
    int rc = nest_park(&l->lot, &w, b, NULL);
    /* 0: hand_out granted b.  -ECANCELED: w left the lot ungranted. */
    if (rc < 0) drop(l, b);
    return rc;
}

static int try_acquire(nest_limiter *l, const void *borrower, const char *what) {
    nest_task *self = nest__task_self(what);
    check_new_borrower(l, borrower, what, self);
    if (l->borrowed >= l->total) return -EAGAIN;
    borrow *b = reserve(l, borrower, self);
    if (!b) return -ENOMEM;
    grant(l, b);
    return 0;
}

static void release(nest_limiter *l, const void *borrower, const char *what) {
    nest_task *self = nest__task_self(what);
    borrow *b = borrower ? find(l, borrower) : NULL;
    if (!b || !b->holding) {
        const char *state = b ? "is still waiting for one" : "holds none";
        if (borrower == (const void *)self)
            nest__panic("%s(): task '%s' (spawned at %s:%d) holds no token of this limiter (it "
                        "%s) (rule: only a borrower releases its token, once)",
                        what, self->name, self->file, self->line, state);
        nest__panic("%s(): borrower %p holds no token of this limiter (it %s) (rule: only a "
                    "borrower releases its token, once)",
                    what, borrower, state);
    }
    release_rec(l, b);
}

void nest_limiter_init(nest_limiter *l, size_t total) {
    nest_parking_lot_init(&l->lot);
    nest_parking_lot_set_name(&l->lot, "capacity limiter", NULL);
    l->total = total;
    l->borrowed = 0;
    l->nrecs = 0;
    l->nbuckets = 0;
    l->buckets = NULL;
    l->reclaimed = 0;
}

int nest_limiter_acquire(nest_limiter *l) {
    return acquire(l, nest__task_self("nest_limiter_acquire"), "nest_limiter_acquire");
}

int nest_limiter_acquire_on_behalf_of(nest_limiter *l, const void *borrower) {
    return acquire(l, borrower, "nest_limiter_acquire_on_behalf_of");
}

int nest_limiter_try_acquire(nest_limiter *l) {
    return try_acquire(l, nest__task_self("nest_limiter_try_acquire"), "nest_limiter_try_acquire");
}

int nest_limiter_try_acquire_on_behalf_of(nest_limiter *l, const void *borrower) {
    return try_acquire(l, borrower, "nest_limiter_try_acquire_on_behalf_of");
}

void nest_limiter_release(nest_limiter *l) {
    release(l, nest__task_self("nest_limiter_release"), "nest_limiter_release");
}

void nest_limiter_release_on_behalf_of(nest_limiter *l, const void *borrower) {
    release(l, borrower, "nest_limiter_release_on_behalf_of");
}

void nest_limiter_set_total(nest_limiter *l, size_t total) {
    nest__task_self("nest_limiter_set_total");
    l->total = total;
    hand_out(l);
}

size_t nest_limiter_available(const nest_limiter *l) {
    return l->borrowed < l->total ? l->total - l->borrowed : 0;
}

void nest_limiter_statistics(const nest_limiter *l, nest_limiter_stats *out) {
    out->borrowed = l->borrowed;
    out->total = l->total;
    out->available = nest_limiter_available(l);
    out->waiters = nest_parking_lot_count(&l->lot);
    out->reclaimed = l->reclaimed;
}
