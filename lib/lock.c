/*
 * lib/lock.c - nest_lock (nest/sync.h): a strictly FIFO, owned lock that
 * breaks when its owner exits holding it.
 *
 * Invariants:
 *  - owner == NULL implies lot is empty: release hands the lock to the
 *    first waiter (owner = its task, then unpark with 0, "you own it")
 *    instead of freeing it, so the lock is never free while tasks wait, and
 *    an acquirer can take a free lock without looking at the queue.
 *  - While owner != NULL, l->hook is in owner's exit hooks; it moves with
 *    ownership.  If the owner exits holding the lock, the hook breaks it.
 *  - broken implies owner == NULL and lot empty: breaking wakes every
 *    waiter with NEST_EBROKEN, and nobody parks on a broken lock.
 *  - A waiter unparked with 0 owns the lock even if it is cancelled before
 *    it runs (its park returns the unpark's result, not -ECANCELED); a
 *    waiter whose park returns -ECANCELED was removed from the lot before
 *    anyone could hand it the lock.  Hence "cancelled means it did not
 *    happen": a cancelled acquirer never held the lock.
 */
#include <stddef.h>
#include <stdio.h>

#include "core.h"
#include "nest/sync.h"

static nest__exit_hook *hook_of(nest_lock *l) { return &l->hook; }

static nest_lock *lock_of(nest__exit_hook *h) {
    return (nest_lock *)(void *)((char *)h - offsetof(nest_lock, hook));
}

/* Runs in task_done of an owner that exits holding the lock. */
static void owner_exited(nest__exit_hook *h, nest_task *t) {
    nest_lock *l = lock_of(h);
    (void)t;
    l->owner = NULL;
    l->broken = 1;
    nest_unpark_all(&l->lot, NEST_EBROKEN);
}

static void take(nest_lock *l, nest_task *t) {
    l->owner = t;
    nest__exit_hook *h = hook_of(l);
    h->fn = owner_exited;
    nest__exit_hook_add(t, h);
}

static void not_reentrant(const char *what, nest_task *self) {
    nest__panic("%s(): task '%s' (spawned at %s:%d) already holds this lock (rule: a nest_lock "
                "is not reentrant; acquiring it again would wait for itself forever)",
                what, self->name, self->file, self->line);
}

/* What a task dump says about a lock its tasks wait for: who holds it, so
 * that a cycle of tasks waiting on each other's locks can be read off. */
static void describe(const nest_parking_lot *lot, char *buf, size_t len) {
    const nest_lock *l = (const nest_lock *)(const void *)((const char *)lot -
                                                           offsetof(nest_lock, lot));
    if (l->broken)
        snprintf(buf, len, "broken: its owner exited holding it");
    else if (l->owner)
        snprintf(buf, len, "held by task #%llu '%s'", (unsigned long long)l->owner->id,
                 l->owner->name);
    else
        snprintf(buf, len, "free");
}

void nest_lock_init(nest_lock *l) {
    nest_parking_lot_init(&l->lot);
    nest_parking_lot_set_name(&l->lot, "lock", describe);
    l->owner = NULL;
    l->broken = 0;
    nest__exit_hook *h = hook_of(l);
    h->next = h->prev = NULL;
    h->fn = NULL;
}

int nest_lock_acquire(nest_lock *l) {
    nest_task *self = nest__task_self("nest_lock_acquire");
    if (l->owner && l->owner != self) {
        nest_waiter w;
        /* Contended.  nest_park checks for cancellation first (-ECANCELED,
         * w never queued).  0: release handed us the lock (owner is
         * already self).  NEST_EBROKEN: the owner exited.  -ECANCELED
         * later: w left the lot before anyone could hand it the lock. */
        return nest_park(&l->lot, &w, NULL, NULL);
    }
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    if (l->owner == self) not_reentrant("nest_lock_acquire", self);
    if (l->broken) {
        nest__yield(nest__rt_cur, self);
        return NEST_EBROKEN;
    }
    /* Free: take it first, then yield, so a cancellation arriving during
     * the yield cannot undo an acquire that already happened. */
    take(l, self);
    nest__yield(nest__rt_cur, self);
    return 0;
}

int nest_lock_try_acquire(nest_lock *l) {
    nest_task *self = nest__task_self("nest_lock_try_acquire");
    if (l->owner == self) not_reentrant("nest_lock_try_acquire", self);
    if (l->broken) return NEST_EBROKEN;
    if (l->owner) return -EAGAIN;
    take(l, self);
    return 0;
}

void nest_lock_release(nest_lock *l) {
    nest_task *self = nest__task_self("nest_lock_release");
    if (l->owner != self) {
        nest_task *o = l->owner;
        if (o)
            nest__panic("nest_lock_release(): task '%s' (spawned at %s:%d) does not hold this "
                        "lock; task '%s' (spawned at %s:%d) does (rule: a lock is released only "
                        "by the task that acquired it)",
                        self->name, self->file, self->line, o->name, o->file, o->line);
        nest__panic("nest_lock_release(): task '%s' (spawned at %s:%d) does not hold this lock; "
                    "it is %s (rule: a lock is released only by the task that acquired it)",
                    self->name, self->file, self->line,
                    l->broken ? "broken (its owner exited holding it)" : "not held");
    }
    nest__exit_hook_remove(self, hook_of(l));
    nest_waiter *w = nest_parking_lot_first(&l->lot);
    if (!w) {
        l->owner = NULL;
        return;
    }
    /* Hand-off: the first waiter owns the lock from this instant, before it
     * even runs, so nobody (this task included) can take it in between. */
    take(l, nest_waiter_task(w));
    nest_unpark_waiter(w, 0);
}

int nest_lock_locked(const nest_lock *l) {
    return l->owner != NULL;
}

void nest_lock_statistics(const nest_lock *l, nest_lock_stats *out) {
    out->locked = l->owner != NULL;
    out->broken = l->broken;
    out->owner = l->owner;
    out->waiters = nest_parking_lot_count(&l->lot);
}
