/*
 * lib/choose.c - nest_choose(): wait on several channel operations at
 * once, complete exactly one (nest/chan.h).
 *
 * Two phases.  First, in array order, each clause is tried without
 * waiting (nest__chan_clause_try in chan.c); the first that can complete
 * does, and choose yields once (its checkpoint) and returns.  Nothing runs
 * between the tries, so no clause after the winner was touched.  Otherwise
 * the task parks once, as one group (nest_park_group), with a waiter in the
 * lot of every enabled clause, each waiter's data pointing at its clause.
 * The task on the other side of whichever channel is first ready finds that
 * waiter like any other, completes the operation through the clause (copies
 * the item into clause->out, or takes it from clause->item) and unparks it;
 * the unpark takes every other member of the group out of its lot at once,
 * so no second clause can complete.  Cancellation takes the whole group out
 * before the task wakes, with no clause done.
 *
 * Why the first ready clause wins (libdill's rule) rather than a random one
 * (Go's): it makes programs deterministic - the same inputs, the same
 * schedule, the same choice, which the mock-clock tests rely on - and it
 * lets the caller express priority (a cancel or control channel first).
 * Go randomises to prevent starvation of later clauses when an early one is
 * always ready; a caller who wants that rotates the array.  Once parked,
 * the order is the channels': the first channel that becomes ready wins,
 * and each channel serves its waiters first come, first served, whether
 * they are in a choose or not.
 *
 * Invariant: the waiters live on this function's stack (or, beyond
 * INLINE_WAITERS clauses, in one allocation freed before return), and are
 * all out of their lots when nest_park_group returns.
 */
#include "chan.h"
#include "core.h"

#define INLINE_WAITERS 8

int nest_choose(nest_choose_clause *c, size_t n) {
    nest_task *self = nest__task_self("nest_choose");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    if (n > INT32_MAX) return -EINVAL; /* the index must fit the result */
    size_t enabled = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].op == NEST_CHOOSE_SEND || c[i].op == NEST_CHOOSE_RECV)
            enabled++;
        else if (c[i].op != NEST_CHOOSE_NONE)
            return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (c[i].op != NEST_CHOOSE_NONE && nest__chan_clause_try(&c[i])) {
            nest__yield(nest__rt_cur, self);
            return (int)i;
        }
    }
    if (enabled == 0) return nest_sleep_forever();

    nest_waiter inline_ws[INLINE_WAITERS];
    nest_waiter *ws = inline_ws;
    if (enabled > INLINE_WAITERS) {
        ws = nest__alloc(enabled * sizeof *ws);
        if (!ws) return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].op != NEST_CHOOSE_NONE) nest_waiter_init(&ws[k++], nest__chan_clause_lot(&c[i]), &c[i]);
    int rc = nest_park_group(ws, (unsigned)enabled, NULL);
    int index = rc; /* -ECANCELED: no member fired */
    for (k = 0; k < enabled; k++) {
        if (ws[k].fired) {
            nest_choose_clause *won = ws[k].data;
            won->result = rc;
            index = (int)(won - c);
            break;
        }
    }
    if (ws != inline_ws) nest__free(ws, enabled * sizeof *ws);
    return index;
}
