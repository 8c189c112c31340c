/*
 * lib/ratelimit.c - nest_ratelimit (nest/sync.h): a FIFO token bucket.
 *
 * The bucket is one number, base (the generic cell rate algorithm): at time
 * t it holds min(burst, (t - base) / interval) tokens.  Taking n tokens
 * adds n * interval to base; n tokens are there from time base + n *
 * interval on.  Before reading it, base is clamped up to t - burst *
 * interval (a full bucket gains nothing), which also turns the initial
 * NEST_PAST into "full".  Integer nanoseconds: no drift, exact mock times.
 *
 * Waiting, FIFO: at most one task, the *head*, sleeps (nest_sleep_until the
 * time its n tokens will be there); every later arrival parks in r->lot
 * behind it.  r->head != 0 while there is a head, from the moment it is
 * chosen (not from when it runs), so an arrival in between sees a queue
 * and cannot jump it; nobody but the head takes tokens while it exists.
 *
 * Invariants:
 *  - r->head == 0 implies lot is empty: whoever stops being the head (it
 *    took its tokens, or was cancelled) promotes the first parked waiter
 *    (head = its n, then unpark with PROMOTED).
 *  - Tokens are taken only by the head, or by an arrival when there is no
 *    head (so no queue).  A cancelled task took none: a cancelled head
 *    promotes the next waiter without touching base, a cancelled parked
 *    waiter was unlinked from the lot by the parking lot.
 *  - A waiter unparked with PROMOTED but cancelled before it runs still
 *    becomes the head (its park returns PROMOTED), finds itself cancelled
 *    at its sleep, and passes the head on: promotions are never lost.
 */
#include "core.h"
#include "nest/sync.h"

/* Unpark result: "you are the head now". */
#define PROMOTED 1

void nest_ratelimit_init(nest_ratelimit *r, nest_time interval, size_t burst) {
    if (interval <= 0 || burst == 0 || burst > (uint64_t)(INT64_MAX / interval))
        nest__panic("nest_ratelimit_init(): interval %lld ns, burst %zu (rule: the interval is "
                    "positive, the burst at least 1, and burst * interval fits in nest_time)",
                    (long long)interval, burst);
    nest_parking_lot_init(&r->lot);
    nest_parking_lot_set_name(&r->lot, "rate limiter", NULL);
    r->interval = interval;
    r->burst = burst;
    r->base = NEST_PAST;
    r->head = 0;
}

/* base, clamped for time now (see the file comment). */
static nest_time base_at(const nest_ratelimit *r, nest_time now) {
    nest_time full = nest_time_add(now, -(nest_time)r->burst * r->interval);
    return r->base < full ? full : r->base;
}

static size_t tokens_at(const nest_ratelimit *r, nest_time now) {
    return (size_t)((now - base_at(r, now)) / r->interval);
}

static void take(nest_ratelimit *r, nest_time now, size_t n) {
    r->base = base_at(r, now) + (nest_time)n * r->interval;
}

/* The head is leaving (done or cancelled): the first parked waiter becomes
 * the head at once, before it runs. */
static void pass_head(nest_ratelimit *r) {
    nest_waiter *w = nest_parking_lot_first(&r->lot);
    if (!w) {
        r->head = 0;
        return;
    }
    r->head = *(const size_t *)w->data;
    nest_unpark_waiter(w, PROMOTED);
}

int nest_ratelimit_acquire(nest_ratelimit *r, size_t n) {
    nest_task *self = nest__task_self("nest_ratelimit_acquire");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    if (n == 0 || n > r->burst) return -EINVAL;
    nest_time now = nest_now();
    if (!r->head) {
        if (tokens_at(r, now) >= n) {
            take(r, now, n); /* taken before the yield: a cancellation cannot undo it */
            return nest__yield(nest__rt_cur, self);
        }
        r->head = n; /* nobody queued: we are the head */
    } else {
        nest_waiter w;
        int rc = nest_park(&r->lot, &w, &n, NULL);
        if (rc != PROMOTED) return rc; /* -ECANCELED: unlinked, took nothing */
    }
    /* The head: only we take tokens now, so the time they will be there is
     * fixed; sleep until then.  A deadline or cancel ends the sleep early. */
    int rc;
    for (;;) {
        now = nest_now();
        if (tokens_at(r, now) >= n) break;
        rc = nest_sleep_until(base_at(r, now) + (nest_time)n * r->interval);
        if (rc < 0) {
            pass_head(r);
            return rc;
        }
    }
    take(r, now, n);
    pass_head(r);
    return 0;
}

int nest_ratelimit_try_acquire(nest_ratelimit *r, size_t n) {
    nest__task_self("nest_ratelimit_try_acquire");
    if (n == 0 || n > r->burst) return -EINVAL;
    if (r->head) return -EAGAIN;
    nest_time now = nest_now();
    if (tokens_at(r, now) < n) return -EAGAIN;
    take(r, now, n);
    return 0;
}

void nest_ratelimit_statistics(const nest_ratelimit *r, nest_ratelimit_stats *out) {
    nest_time now = nest_now();
    size_t avail = tokens_at(r, now);
    out->available = avail;
    out->burst = r->burst;
    out->interval = r->interval;
    out->next_at =
        avail >= r->burst ? NEST_FOREVER : base_at(r, now) + (nest_time)(avail + 1) * r->interval;
    out->waiters = nest_parking_lot_count(&r->lot) + (r->head ? 1 : 0);
}
