/*
 * lib/instrument.c - the instrument registry and the hook dispatchers
 * (nest/instrument.h).
 *
 * Owns rt->instr, a singly linked list of registered instruments in
 * registration order, and the nest__hook_* functions the core calls.
 *
 * Invariants:
 *  - ins->rt_ == rt iff ins is in rt's list.  The list is empty at the end
 *    of every run (nest__hook_run(rt, 1) empties it).
 *  - The core calls a hook only after testing rt->instr, so with nothing
 *    registered no code here runs at all; this file is free to be plain.
 *  - A dispatcher reads the next link before each call, so a callback may
 *    remove its own instrument (or add one, which sees later events).
 */
#include "core.h"

int nest_instrument_add(nest_instrument *ins) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt) return -EINVAL;
    if (ins->rt_) return -EBUSY;
    ins->next_ = NULL;
    ins->rt_ = rt;
    nest_instrument **p = &rt->instr;
    while (*p) p = &(*p)->next_;
    *p = ins;
    return 0;
}

int nest_instrument_remove(nest_instrument *ins) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt || ins->rt_ != rt) return -ENOENT;
    for (nest_instrument **p = &rt->instr; *p; p = &(*p)->next_) {
        if (*p == ins) {
            *p = ins->next_;
            break;
        }
    }
    ins->next_ = NULL;
    ins->rt_ = NULL;
    return 0;
}

/* Calls field(arg, ...) on every instrument that has it. */
#define DISPATCH(rt, field, ...)                                                \
    do {                                                                        \
        nest_instrument *i_ = (rt)->instr, *n_;                                 \
        for (; i_; i_ = n_) {                                                   \
            n_ = i_->next_;                                                     \
            if (i_->field) i_->field(i_->arg, __VA_ARGS__);                     \
        }                                                                       \
    } while (0)

void nest__hook_spawned(struct nest__rt *rt, nest_task *t) { DISPATCH(rt, task_spawned, t); }
void nest__hook_scheduled(struct nest__rt *rt, nest_task *t) { DISPATCH(rt, task_scheduled, t); }
void nest__hook_step_begin(struct nest__rt *rt, nest_task *t) {
    DISPATCH(rt, before_task_step, t);
}
void nest__hook_step_end(struct nest__rt *rt, nest_task *t) { DISPATCH(rt, after_task_step, t); }
void nest__hook_exited(struct nest__rt *rt, nest_task *t) { DISPATCH(rt, task_exited, t); }

void nest__hook_io_wait(struct nest__rt *rt, nest_time timeout, int after) {
    if (after)
        DISPATCH(rt, after_io_wait, timeout);
    else
        DISPATCH(rt, before_io_wait, timeout);
}

void nest__hook_cancelled(struct nest__rt *rt, nest_scope *s) {
    DISPATCH(rt, scope_cancelled, s, !!(s->flags & NEST__SCOPE_EXPIRED));
}

void nest__hook_nursery(struct nest__rt *rt, nest_nursery *n, int rc, int closed) {
    if (closed)
        DISPATCH(rt, nursery_closed, n, rc);
    else
        DISPATCH(rt, nursery_opened, n);
}

void nest__hook_run(struct nest__rt *rt, int after) {
    if (!after) {
        for (nest_instrument *i = rt->instr, *n; i; i = n) {
            n = i->next_;
            if (i->before_run) i->before_run(i->arg);
        }
        return;
    }
    /* Unregister first: after_run may free the instrument. */
    while (rt->instr) {
        nest_instrument *i = rt->instr;
        rt->instr = i->next_;
        i->next_ = NULL;
        i->rt_ = NULL;
        if (i->after_run) i->after_run(i->arg);
    }
}

/* Accessors for callbacks. */

int nest_task_result(const nest_task *t) { return t->state == NEST__DONE ? t->rc : 0; }
const char *nest_scope_file(const nest_scope *s) { return s->file; }
int nest_scope_line(const nest_scope *s) { return s->line; }
int nest_scope_is_nursery(const nest_scope *s) { return !!(s->flags & NEST__SCOPE_NURSERY); }
nest_task *nest_scope_owner(const nest_scope *s) { return s->owner; }
