/*
 * nest/sync.h - synchronisation primitives: Event, Lock, Semaphore,
 * CapacityLimiter, Condition and a token-bucket rate limiter (Trio's
 * trio.Event, Lock, Semaphore, CapacityLimiter, Condition; the rate limiter
 * has no Trio counterpart).
 *
 * Every primitive is built on the parking lot (nest/lowlevel.h) and follows
 * the same rules; design/07-parking-lot-and-handoff.md explains them:
 *
 *  - Caller-allocated.  Each object is a struct the caller owns, with
 *    private fields; its init function never fails.  Only the
 *    CapacityLimiter allocates (one small record per borrower, see below).
 *    An object must stay in place, and must not be re-initialised, while a
 *    task holds it or waits on it.
 *
 *  - Fair, by hand-off.  Waiters are served strictly first come, first
 *    served.  Releasing a held resource (a lock, a semaphore unit, a
 *    limiter token) while tasks wait hands it directly to the longest
 *    waiting task, which wakes up already owning it; the resource is never
 *    "free" while someone waits.  So a task that releases and at once
 *    acquires again queues behind the waiters instead of jumping ahead, and
 *    no release wakes a herd that then contends.
 *
 *  - Every blocking call is a full checkpoint, even when it need not block:
 *    in a cancelled scope it fails with -ECANCELED at once and has no
 *    effect (acquiring a free lock fails and does not take it); otherwise,
 *    when it can complete at once, it completes and then yields once, so
 *    other tasks run.  A blocking call that fails with -ECANCELED had no
 *    effect: a cancelled acquirer never held what it asked for, and it has
 *    left the queue, so the next release goes to the next live waiter.
 *
 *  - Non-blocking try_ variants are not checkpoints and return -EAGAIN when
 *    they would block - also when the resource is free but others are
 *    queued for it (they cannot jump the queue either).
 *
 *  - Misuse aborts with a message naming the rule: releasing a lock one
 *    does not hold, releasing a semaphore past its maximum, a borrower
 *    taking two limiter tokens, waiting on a condition without its lock.
 *
 * Thread-safety: an object belongs to the one runtime whose tasks use it.
 * Except for the init functions and the read-only ones (statistics,
 * is_set, locked, value, available), every function must be called from a
 * task of that runtime (calling it elsewhere aborts).  An idle object
 * (nobody holds it or waits on it) may be used by a later runtime on
 * another thread.
 */
#ifndef NEST_SYNC_H
#define NEST_SYNC_H

#include "common.h"
#include "lowlevel.h"

NEST_BEGIN_DECLS


/* ------------------------------------------------------------------------
 * Event: a flag that is set once; tasks wait for it.
 */

typedef struct nest_event {
    nest_parking_lot lot; /* tasks in nest_event_wait(), FIFO */
    int set;              /* 1 once nest_event_set() was called */
} nest_event;

typedef struct nest_event_stats {
    int set;        /* nest_event_is_set() */
    size_t waiters; /* tasks blocked in nest_event_wait() */
} nest_event_stats;

/* Initialises e, not set.  Never fails; may be called outside a task. */
NEST_API void nest_event_init(nest_event *e);

/* Sets e and wakes every waiting task (they run at the next scheduling
 * pass, in the order they started waiting).  Idempotent.  Not a checkpoint;
 * never blocks.  An event cannot be cleared: use a new one. */
NEST_API void nest_event_set(nest_event *e);

/* Whether e is set.  Not a checkpoint; may be called outside a task. */
NEST_API int nest_event_is_set(const nest_event *e);

/* Waits until e is set.  A checkpoint: returns -ECANCELED at once in a
 * cancelled scope (even when e is set), or when cancelled while waiting;
 * otherwise 0, after yielding once if e was already set. */
NEST_API int nest_event_wait(nest_event *e);

/* Fills *out with a snapshot of e's state.  Not a checkpoint; never
 * fails; may be called outside a task. */
NEST_API void nest_event_statistics(const nest_event *e, nest_event_stats *out);

/* ------------------------------------------------------------------------
 * Lock: mutual exclusion between tasks, strictly FIFO, with an owner.
 *
 * The lock is owned by the task that acquired it; only that task may
 * release it.  Waiters are served in arrival order by hand-off (see the
 * file comment), so this Lock is already what Trio calls StrictFIFOLock:
 * nest has no separate type for it.
 *
 * A lock whose owner task exits while holding it becomes *broken*: the data
 * it protects may be half-updated, so rather than hand it to the next task
 * (or let everyone wait forever), every task waiting for it wakes with
 * NEST_EBROKEN, and every later acquire fails with NEST_EBROKEN.  A broken
 * lock stays broken until re-initialised (when nobody waits on it).
 *
 * Not reentrant: acquiring a lock the calling task already holds aborts
 * (it would wait for itself forever).
 */

typedef struct nest_lock {
    nest_parking_lot lot;    /* tasks in nest_lock_acquire(), FIFO */
    struct nest_task *owner; /* the holder; NULL when free (or broken) */
    int broken;              /* 1 once the owner exited holding it */
    nest__exit_hook hook;    /* in owner's exit hooks while held */
} nest_lock;

typedef struct nest_lock_stats {
    int locked;              /* held by a task */
    int broken;              /* its owner exited while holding it */
    struct nest_task *owner; /* the holder, or NULL */
    size_t waiters;          /* tasks blocked in nest_lock_acquire() */
} nest_lock_stats;

/* Initialises l, free and not broken.  Never fails; may be called outside a
 * task.  Must not be called on a lock that is held or waited on. */
NEST_API void nest_lock_init(nest_lock *l);

/* Acquires l for the calling task, waiting (FIFO) while another task holds
 * it.  A checkpoint.  Returns:
 *  - 0: the calling task owns l (after yielding once if l was free);
 *  - -ECANCELED: cancelled, before or while waiting; l was not taken;
 *  - NEST_EBROKEN: l is broken (also when it breaks while we wait).
 * Aborts if the calling task already holds l. */
NEST_API int nest_lock_acquire(nest_lock *l);

/* Acquires l if it is free, without blocking.  Not a checkpoint.  Returns
 * 0, -EAGAIN when another task holds it, or NEST_EBROKEN.  Aborts if the
 * calling task already holds l. */
NEST_API int nest_lock_try_acquire(nest_lock *l);

/* Releases l, which the calling task must hold (otherwise this aborts,
 * naming the rule).  If tasks wait, ownership passes directly to the one
 * that has waited longest: it wakes owning l.  Not a checkpoint; never
 * blocks. */
NEST_API void nest_lock_release(nest_lock *l);

/* Whether l is held.  Not a checkpoint. */
NEST_API int nest_lock_locked(const nest_lock *l);

/* Fills *out with a snapshot of l's state.  Not a checkpoint; never
 * fails; may be called outside a task. */
NEST_API void nest_lock_statistics(const nest_lock *l, nest_lock_stats *out);

/* ------------------------------------------------------------------------
 * Semaphore: a counter of units; acquire takes one (waiting while there are
 * none), release gives one back.  Units have no owner: any task may
 * release.  An optional maximum catches unbalanced releases.
 */

/* No maximum value. */
#define NEST_SEMAPHORE_NO_MAX SIZE_MAX

typedef struct nest_semaphore {
    nest_parking_lot lot; /* tasks in nest_semaphore_acquire(), FIFO */
    size_t value;         /* units available; 0 whenever tasks wait */
    size_t max;           /* NEST_SEMAPHORE_NO_MAX for none */
} nest_semaphore;

typedef struct nest_semaphore_stats {
    size_t value;   /* units available now */
    size_t max;     /* NEST_SEMAPHORE_NO_MAX for none */
    size_t waiters; /* tasks blocked in nest_semaphore_acquire() */
} nest_semaphore_stats;

/* Initialises s with initial units and maximum max (NEST_SEMAPHORE_NO_MAX
 * for none).  Never fails; aborts if initial > max (a programming error).
 * May be called outside a task. */
NEST_API void nest_semaphore_init(nest_semaphore *s, size_t initial, size_t max);

/* Takes one unit, waiting (FIFO) while there are none.  A checkpoint.
 * Returns 0 (after yielding once if a unit was available), or -ECANCELED:
 * cancelled, before or while waiting, and no unit was taken. */
NEST_API int nest_semaphore_acquire(nest_semaphore *s);

/* Takes one unit if one is available, without blocking.  Not a checkpoint.
 * Returns 0 or -EAGAIN. */
NEST_API int nest_semaphore_try_acquire(nest_semaphore *s);

/* Gives one unit back: to the longest waiting task if any (it wakes owning
 * it), otherwise to the counter.  Aborts if that would raise the value
 * above the maximum.  Not a checkpoint; never blocks. */
NEST_API void nest_semaphore_release(nest_semaphore *s);

/* Units available now.  Not a checkpoint. */
NEST_API size_t nest_semaphore_value(const nest_semaphore *s);

/* Fills *out with a snapshot of s's state.  Not a checkpoint; never
 * fails; may be called outside a task. */
NEST_API void nest_semaphore_statistics(const nest_semaphore *s, nest_semaphore_stats *out);

/* ------------------------------------------------------------------------
 * CapacityLimiter: at most `total` borrowers at a time (Trio's
 * CapacityLimiter), e.g. at most 10 concurrent requests to one server.
 *
 * Each token is borrowed by a *borrower*: by default the calling task; with
 * the _on_behalf_of variants, any non-NULL pointer that identifies the
 * borrower (a request, a connection).  A borrower holds at most one token
 * at a time: borrowing a second one, or waiting for one while holding or
 * waiting for one, aborts.  A token is released by naming the same
 * borrower; releasing for a borrower that holds no token aborts.
 *
 * A token borrowed by a task for itself (nest_limiter_acquire, or
 * _on_behalf_of with the calling task as borrower) is released
 * automatically when that task exits holding it, and counted in the
 * statistics as reclaimed; Trio keeps it borrowed forever.  Tokens
 * borrowed on behalf of other pointers are never released automatically.
 *
 * total may change at run time (nest_limiter_set_total): growing it hands
 * the new tokens to waiters, FIFO; shrinking it takes effect as tokens come
 * back (borrowed may exceed total meanwhile).
 *
 * Memory: the limiter keeps one small record per borrower holding or
 * waiting for a token, and a hash table of them, allocated through the
 * allocator hook (nest/alloc.h); it frees all of it whenever no token is
 * borrowed or awaited, so a limiter needs no destroy call.  The acquire
 * functions may therefore fail with -ENOMEM, with no effect.
 */

typedef struct nest_limiter {
    nest_parking_lot lot;          /* tasks waiting for a token, FIFO */
    size_t total;                  /* tokens in all */
    size_t borrowed;               /* tokens held */
    size_t nrecs;                  /* records: borrowers holding or waiting */
    size_t nbuckets;               /* size of buckets (a power of two), or 0 */
    struct nest__borrow **buckets; /* hash table of records, by borrower */
    uint64_t reclaimed;            /* tokens released by their task's exit */
} nest_limiter;

typedef struct nest_limiter_stats {
    size_t borrowed;    /* tokens held */
    size_t total;       /* tokens in all */
    size_t available;   /* total - borrowed, or 0 when borrowed >= total */
    size_t waiters;     /* tasks blocked in an acquire */
    uint64_t reclaimed; /* tokens released because their task exited */
} nest_limiter_stats;

/* Initialises l with total tokens (0 is allowed: every acquire then waits
 * until set_total grows it).  Never fails, allocates nothing; may be called
 * outside a task.  Must not be called while tokens are borrowed or awaited
 * (the limiter's memory would leak). */
NEST_API void nest_limiter_init(nest_limiter *l, size_t total);

/* Borrows a token for the calling task, waiting (FIFO) while none is
 * available.  A checkpoint.  Returns 0 (after yielding once if a token was
 * available), -ECANCELED (cancelled before or while waiting: no token was
 * taken) or -ENOMEM (no token was taken).  Aborts if the calling task holds
 * or waits for a token of l already. */
NEST_API int nest_limiter_acquire(nest_limiter *l);

/* As nest_limiter_acquire(), for borrower (non-NULL; it stays the caller's
 * and is only compared, never dereferenced). */
NEST_API int nest_limiter_acquire_on_behalf_of(nest_limiter *l, const void *borrower);

/* Borrows a token for the calling task if one is available and nobody
 * waits, without blocking.  Not a checkpoint.  Returns 0, -EAGAIN or
 * -ENOMEM.  Aborts if the calling task already holds a token of l. */
NEST_API int nest_limiter_try_acquire(nest_limiter *l);
NEST_API int nest_limiter_try_acquire_on_behalf_of(nest_limiter *l, const void *borrower);

/* Returns the calling task's token: to the longest waiting task if any
 * (while borrowed < total; it wakes holding it).  Aborts if the calling
 * task holds no token of l.  Not a checkpoint; never blocks. */
NEST_API void nest_limiter_release(nest_limiter *l);

/* Returns borrower's token, as nest_limiter_release().  Any task may
 * release on behalf of any borrower. */
NEST_API void nest_limiter_release_on_behalf_of(nest_limiter *l, const void *borrower);

/* Sets the number of tokens.  Growing it hands the new tokens to the
 * waiting tasks in FIFO order (they wake holding them).  Not a checkpoint;
 * never blocks, never fails. */
NEST_API void nest_limiter_set_total(nest_limiter *l, size_t total);

/* Tokens available now (see nest_limiter_stats.available).  Not a
 * checkpoint. */
NEST_API size_t nest_limiter_available(const nest_limiter *l);

/* Fills *out with a snapshot of l's state.  Not a checkpoint; never
 * fails; may be called outside a task. */
NEST_API void nest_limiter_statistics(const nest_limiter *l, nest_limiter_stats *out);

/* ------------------------------------------------------------------------
 * Condition: a queue of tasks waiting, with a lock held, for some state
 * (protected by that lock) to change (Trio's Condition).
 *
 *     nest_lock_acquire(&lock);
 *     while (!ready && rc == 0) rc = nest_condition_wait(&cond);
 *     ... // the lock is held here whatever rc is (unless NEST_EBROKEN)
 *     nest_lock_release(&lock);
 *
 * wait releases the lock and sleeps; notify moves sleepers to the lock's
 * wait queue, unchanged in order, so they acquire the lock one by one as
 * it is released (no herd contends for it).  A notified task therefore runs
 * only after the notifier releases the lock.
 */

typedef struct nest_condition {
    nest_parking_lot lot; /* tasks in nest_condition_wait(), FIFO */
    nest_lock *lock;      /* the associated lock (the caller's) */
} nest_condition;

typedef struct nest_condition_stats {
    size_t waiters;       /* tasks waiting for a notify */
    nest_lock_stats lock; /* the associated lock's statistics */
} nest_condition_stats;

/* Initialises c with its lock (which must outlive c's use).  Never fails;
 * may be called outside a task. */
NEST_API void nest_condition_init(nest_condition *c, nest_lock *lock);

/* The associated lock.  Not a checkpoint. */
NEST_API nest_lock *nest_condition_lock(const nest_condition *c);

/* Releases the lock, which the calling task must hold (otherwise this
 * aborts), waits for a notify, and re-acquires the lock before returning -
 * also when cancelled.  A checkpoint.  Returns:
 *  - 0: notified; the lock is held;
 *  - -ECANCELED: cancelled, the lock is held again (in a cancelled scope
 *    this returns at once without ever releasing the lock; when cancelled
 *    while waiting, it re-acquires the lock in a shielded scope, waiting
 *    its turn behind the tasks already queued for the lock);
 *  - NEST_EBROKEN: the lock broke while this task waited to get it back;
 *    the lock is not held (nobody can hold a broken lock).
 * Waiters are not woken when the lock breaks (nobody can notify them
 * without the lock); cancel them. */
NEST_API int nest_condition_wait(nest_condition *c);

/* Wakes up to n waiters, longest waiting first: they move to the lock's
 * wait queue and each returns from wait once it gets the lock.  The calling
 * task must hold the lock (otherwise this aborts).  Returns how many were
 * moved.  Not a checkpoint; never blocks. */
NEST_API size_t nest_condition_notify(nest_condition *c, size_t n);

/* nest_condition_notify(c, SIZE_MAX). */
NEST_API size_t nest_condition_notify_all(nest_condition *c);

/* Fills *out with a snapshot of c's state.  Not a checkpoint; never
 * fails; may be called outside a task. */
NEST_API void nest_condition_statistics(const nest_condition *c, nest_condition_stats *out);

/* ------------------------------------------------------------------------
 * Rate limiter: a token bucket.  Tokens accrue one per `interval` (a
 * duration: NEST_MSEC(100) is 10 tokens per second), up to `burst` tokens;
 * the bucket starts full.  acquire(n) takes n tokens, waiting until they
 * have accrued.  Waiters are served strictly FIFO: a later request for one
 * token cannot overtake an earlier one waiting for three, and try_acquire
 * fails while anyone waits.  Only the longest waiting task sleeps (until
 * the time its tokens will have accrued, on the runtime clock, so the mock
 * clock drives it exactly); the others wait behind it in the queue.
 *
 * Time is exact integer arithmetic on nest_time (the generic cell rate
 * algorithm): the bucket state is the time `base` such that
 * min(burst, (now - base) / interval) tokens are available; taking n tokens
 * adds n * interval to base.  So tokens never drift, whatever the calls'
 * timing.
 */

typedef struct nest_ratelimit {
    nest_parking_lot lot; /* tasks queued behind the head waiter, FIFO */
    nest_time interval;   /* time for one token to accrue (> 0) */
    size_t burst;         /* bucket capacity in tokens (>= 1) */
    nest_time base;       /* see above; NEST_PAST: full */
    size_t head;          /* tokens the head waiter (sleeping) needs; 0: none */
} nest_ratelimit;

typedef struct nest_ratelimit_stats {
    size_t available;   /* tokens in the bucket now */
    size_t burst;       /* bucket capacity */
    nest_time interval; /* time per token */
    nest_time next_at;  /* when the next token accrues; NEST_FOREVER while
                           the bucket is full */
    size_t waiters;     /* tasks blocked in nest_ratelimit_acquire() */
} nest_ratelimit_stats;

/* Initialises r, full, with one token per interval (> 0) and capacity
 * burst (>= 1).  Never fails; aborts on an interval <= 0, a burst of 0, or
 * a burst * interval that does not fit in nest_time.  May be called outside
 * a task (the bucket reads the clock only when used). */
NEST_API void nest_ratelimit_init(nest_ratelimit *r, nest_time interval, size_t burst);

/* Takes n tokens, waiting (FIFO) until they have accrued.  A checkpoint.
 * Returns 0 (after yielding once if the tokens were there), -ECANCELED
 * (cancelled before or while waiting, e.g. by a deadline: no token was
 * taken, and the task has left the queue), or -EINVAL when n is 0 or
 * greater than burst (it could never be served). */
NEST_API int nest_ratelimit_acquire(nest_ratelimit *r, size_t n);

/* Takes n tokens if they are there and nobody waits, without blocking.
 * Not a checkpoint.  Returns 0, -EAGAIN, or -EINVAL (n is 0 or > burst). */
NEST_API int nest_ratelimit_try_acquire(nest_ratelimit *r, size_t n);

/* Fills *out with a snapshot of r's state, reading the clock (nest_now()).
 * Not a checkpoint; never fails. */
NEST_API void nest_ratelimit_statistics(const nest_ratelimit *r, nest_ratelimit_stats *out);

NEST_END_DECLS

#endif
