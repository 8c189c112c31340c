/*
 * lib/testing.c - helpers for users' test suites (nest/testing.h):
 * checkpoint checks and the sequencer.
 *
 * nest_testing_yields counts the calling task's step ends with a temporary
 * instrument (a step ends exactly when the task yields or blocks), so the
 * scheduler carries no per-task counter for it.
 *
 * Sequencer invariants: positions run in order 0, 1, 2, ...; seq->next is
 * the position whose turn it is and seq->inside says whether its section
 * has been entered and not yet exited.  A task waiting for a later
 * position is parked in seq->lot with its position as the waiter's data;
 * exit hands the turn to the waiter for next (if any) directly, marking
 * the section entered on its behalf, so no third task can slip in between.
 */
#include <string.h>

#include "core.h"

/* ---- checkpoint checks --------------------------------------------------- */

typedef struct yield_probe {
    nest_task *task;
    int count;
} yield_probe;

static void probe_step_end(void *arg, nest_task *t) {
    yield_probe *p = arg;
    if (t == p->task) p->count++;
}

int nest_testing_yields(nest_fn fn, void *arg, int *rc) {
    nest_task *self = nest__task_self("nest_testing_yields");
    yield_probe p = {self, 0};
    nest_instrument ins;
    memset(&ins, 0, sizeof ins);
    ins.arg = &p;
    ins.after_task_step = probe_step_end;
    nest_instrument_add(&ins);
    int r = fn(arg);
    nest_instrument_remove(&ins);
    if (rc) *rc = r;
    return p.count;
}

int nest_testing_cancels(nest_fn fn, void *arg) {
    nest__task_self("nest_testing_cancels");
    nest_scope s;
    nest_scope_enter_at(&s, NEST_FOREVER, "nest_testing_cancels", 0);
    nest_scope_cancel(&s);
    int rc = fn(arg);
    nest_scope_exit_at(&s, rc, "nest_testing_cancels", 0);
    return rc == -ECANCELED;
}

int nest_testing_checkpoints(nest_fn fn, void *arg) {
    int rc;
    if (nest_testing_yields(fn, arg, &rc) == 0) return 0;
    return nest_testing_cancels(fn, arg);
}

/* ---- the sequencer ------------------------------------------------------- */

void nest_sequencer_init(nest_sequencer *seq) {
    nest_parking_lot_init(&seq->lot);
    nest_parking_lot_set_name(&seq->lot, "sequencer", NULL);
    seq->next = 0;
    seq->inside = 0;
    seq->broken = 0;
}

static int waiting_for(const nest_sequencer *seq, int position) {
    for (nest_waiter *w = nest_parking_lot_first(&seq->lot); w; w = w->next)
        if ((int)(intptr_t)w->data == position) return 1;
    return 0;
}

int nest_sequencer_enter(nest_sequencer *seq, int position) {
    nest__task_self("nest_sequencer_enter");
    if (seq->broken) return NEST_EBROKEN;
    if (position < 0 || position < seq->next || (position == seq->next && seq->inside) ||
        waiting_for(seq, position))
        return -EINVAL;
    if (position == seq->next) {
        seq->inside = 1;
        return 0;
    }
    nest_waiter w;
    int rc = nest_park(&seq->lot, &w, (void *)(intptr_t)position, NULL);
    if (rc == -ECANCELED) {
        seq->broken = 1;
        nest_unpark_all(&seq->lot, NEST_EBROKEN);
    }
    return rc;
}

void nest_sequencer_exit(nest_sequencer *seq, int position) {
    if (!seq->inside || position != seq->next)
        nest__panic("nest_sequencer_exit(%d): that position is not the one entered (rule: exit "
                    "the position you entered, once)",
                    position);
    seq->inside = 0;
    seq->next = position + 1;
    for (nest_waiter *w = nest_parking_lot_first(&seq->lot); w; w = w->next) {
        if ((int)(intptr_t)w->data == seq->next) {
            seq->inside = 1;
            nest_unpark_waiter(w, 0);
            break;
        }
    }
}
