/*
 * lib/scope.c - cancel scopes: the scope tree, cancellation and its
 * delivery, shields, deadlines, and the absorption rule at exit.
 *
 * Invariants:
 *  - Every entered scope is linked below its parent (nest_scope.parent,
 *    child/next/prev); exited scopes are unlinked.  A task's root scope is
 *    entered from spawn until the task finishes.
 *  - A checkpoint is cancelled iff walking up from the task's innermost
 *    scope meets a cancelled scope before a shielded one (the shielded
 *    scope's own flag counts).  This walk is the only definition of
 *    "cancelled"; delivery below is an optimisation of it for blocked tasks,
 *    and rt->ncancelled (entered scopes that are cancelled) one for
 *    checkpoints: while it is 0 the walk cannot find anything.
 *  - Delivery: when a scope becomes cancelled (or a shield drops under a
 *    cancelled parent), every task blocked abortably whose innermost scope
 *    lies in its subtree, not below a shielded scope, is woken with
 *    -ECANCELED.  Those are exactly the blocked tasks the walk above now
 *    finds cancelled, so level-triggering and wake-ups agree.
 *  - A scope with a finite deadline that is not yet cancelled is in the
 *    deadline heap (NEST__SCOPE_INHEAP); cancelling removes it.
 */
#include "core.h"

void nest__scope_init_system(nest_scope *s, nest_task *owner, const char *file) {
    s->parent = s->child = s->next = s->prev = NULL;
    s->hchild = s->hnext = s->hprev = NULL;
    s->owner = owner;
    s->deadline = NEST_FOREVER;
    s->file = file;
    s->line = 0;
    s->flags = NEST__SCOPE_ENTERED | NEST__SCOPE_SYSTEM;
    s->magic = NEST__SCOPE_MAGIC;
}

int nest__cancelled_walk(const nest_scope *s) {
    for (; s; s = s->parent) {
        if (s->flags & NEST__SCOPE_CANCELLED) return 1;
        if (s->flags & NEST__SCOPE_SHIELD) return 0;
    }
    return 0;
}

int nest__parent_cancelled(const nest_scope *s) {
    if (s->flags & NEST__SCOPE_SHIELD) return 0;
    return nest__cancelled_at(s->parent);
}

void nest__scope_link(nest_scope *s, nest_scope *parent) {
    s->parent = parent;
    s->prev = NULL;
    s->next = parent->child;
    if (parent->child) parent->child->prev = s;
    parent->child = s;
}

void nest__scope_unlink(nest_scope *s) {
    if (s->prev)
        s->prev->next = s->next;
    else if (s->parent && s->parent->child == s)
        s->parent->child = s->next;
    if (s->next) s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static nest_scope *unshielded(nest_scope *s) {
    while (s && (s->flags & NEST__SCOPE_SHIELD)) s = s->next;
    return s;
}

/* Wakes the abortably blocked tasks in top's subtree (not below shields).
 * Iterative, because a nursery can have a hundred thousand children. */
static void deliver(struct nest__rt *rt, nest_scope *top) {
    nest_scope *s = top;
    for (;;) {
        nest_task *t = s->owner;
        if (t && t->cur == s && t->state == NEST__BLOCKED && t->abort_fn) {
            int (*abort_fn)(nest_task *) = t->abort_fn;
            t->abort_fn = NULL; /* tried once: a refused abort is final */
            if (abort_fn(t) == 0) nest__wake(rt, t, -ECANCELED);
        }
        nest_scope *c = unshielded(s->child);
        if (c) {
            s = c;
            continue;
        }
        for (;;) {
            if (s == top) return;
            nest_scope *n = unshielded(s->next);
            if (n) {
                s = n;
                break;
            }
            s = s->parent;
        }
    }
}

void nest__scope_cancel(struct nest__rt *rt, nest_scope *s, unsigned why) {
    if (!(s->flags & NEST__SCOPE_ENTERED) || (s->flags & NEST__SCOPE_CANCELLED)) return;
    s->flags |= NEST__SCOPE_CANCELLED | why;
    rt->ncancelled++;
    if (s->flags & NEST__SCOPE_INHEAP) nest__deadline_remove(rt, s);
    if (NEST__UNLIKELY(rt->instr)) nest__hook_cancelled(rt, s);
    deliver(rt, s);
}

static struct nest__rt *need_rt(const char *what) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt) nest__panic("%s() called outside a runtime", what);
    return rt;
}

static void enter(struct nest_task *t, nest_scope *s, nest_time deadline, unsigned flags,
                  const char *file, int line) {
    struct nest__rt *rt = nest__rt_cur;
    /* Only a struct that looks entered can be entered now; the walk then
     * tells a live scope from stale memory that merely looks like one. */
    if (s->magic == NEST__SCOPE_MAGIC && (s->flags & NEST__SCOPE_ENTERED))
        for (nest_scope *p = t->cur; p && p->owner == t; p = p->parent)
            if (p == s)
                nest__panic("nest_scope_enter at %s:%d: this scope is already entered (at "
                            "%s:%d) (rule: a scope is entered once at a time)",
                            file, line, s->file, s->line);
    s->child = NULL;
    s->hchild = s->hnext = s->hprev = NULL;
    s->owner = t;
    s->deadline = deadline;
    s->file = file;
    s->line = line;
    s->flags = NEST__SCOPE_ENTERED | flags;
    s->magic = NEST__SCOPE_MAGIC;
    nest__scope_link(s, t->cur);
    t->cur = s;
    if (deadline != NEST_FOREVER) {
        /* rt->now is the last clock reading (nest_now() refreshes it, so a
         * relative deadline computed just now is judged exactly); a deadline
         * that passed unobserved is caught at the next poll. */
        if (deadline <= rt->now) {
            s->flags |= NEST__SCOPE_CANCELLED | NEST__SCOPE_EXPIRED;
            rt->ncancelled++;
        }
        else
            nest__deadline_add(rt, s);
    }
}

void nest_scope_enter_at(nest_scope *s, nest_time deadline, const char *file, int line) {
    enter(nest__task_self("nest_scope_enter"), s, deadline, 0, file, line);
}

void nest_fail_at_at(nest_scope *s, nest_time deadline, const char *file, int line) {
    enter(nest__task_self("nest_fail_at"), s, deadline, NEST__SCOPE_FAIL, file, line);
}

/* The relative forms read the clock here, after the task check, so that the
 * deadline is measured from entry and the cached reading is fresh. */
void nest_move_on_after_at(nest_scope *s, nest_time d, const char *file, int line) {
    nest_task *t = nest__task_self("nest_move_on_after");
    enter(t, s, nest_time_add(nest__clock_read(nest__rt_cur), d), 0, file, line);
}

void nest_fail_after_at(nest_scope *s, nest_time d, const char *file, int line) {
    nest_task *t = nest__task_self("nest_fail_after");
    enter(t, s, nest_time_add(nest__clock_read(nest__rt_cur), d), NEST__SCOPE_FAIL, file, line);
}

/* Shared by scope exit and nursery close: checks the exit rules and unlinks
 * s from the tree.  Returns whether a -ECANCELED seen inside would be
 * absorbed by s. */
int nest__scope_leave(nest_scope *s, const char *what, const char *file, int line);
int nest__scope_leave(nest_scope *s, const char *what, const char *file, int line) {
    nest_task *t = nest__task_self(what);
    struct nest__rt *rt = nest__rt_cur;
    const char *kind = (s->flags & NEST__SCOPE_NURSERY) ? "nursery opened" : "scope entered";
    if (s->magic != NEST__SCOPE_MAGIC || !(s->flags & NEST__SCOPE_ENTERED))
        nest__panic("%s at %s:%d: the scope was never entered or has already been exited "
                    "(rule: exit each scope exactly once)",
                    what, file, line);
    if (s->owner != t)
        nest__panic("%s at %s:%d: the %s at %s:%d belongs to task '%s', not to the calling "
                    "task '%s' (rule: the task that enters a scope exits it)",
                    what, file, line, kind, s->file, s->line, s->owner->name, t->name);
    if (t->cur != s) {
        nest_scope *in = t->cur;
        nest__panic("%s at %s:%d: misnested exit of the %s at %s:%d while the %s at %s:%d "
                    "is still open inside it (rule: scopes and nurseries are exited innermost "
                    "first)",
                    what, file, line, kind, s->file, s->line,
                    (in->flags & NEST__SCOPE_NURSERY) ? "nursery opened" : "scope entered",
                    in->file, in->line);
    }
    int absorbs = (s->flags & NEST__SCOPE_CANCELLED) && !nest__parent_cancelled(s);
    if (s->flags & NEST__SCOPE_INHEAP) nest__deadline_remove(rt, s);
    nest__scope_unlink(s);
    t->cur = s->parent;
    s->flags &= ~NEST__SCOPE_ENTERED;
    if (s->flags & NEST__SCOPE_CANCELLED) rt->ncancelled--;
    return absorbs;
}

static int scope_exit(nest_scope *s, int rc, const char *what, const char *file, int line) {
    int absorbs = nest__scope_leave(s, what, file, line);
    if (rc == -ECANCELED && absorbs) {
        s->flags |= NEST__SCOPE_CAUGHT;
        if ((s->flags & NEST__SCOPE_FAIL) && (s->flags & NEST__SCOPE_EXPIRED)) return -ETIMEDOUT;
        return 0;
    }
    return rc;
}

int nest_scope_exit_at(nest_scope *s, int rc, const char *file, int line) {
    return scope_exit(s, rc, "nest_scope_exit", file, line);
}

/* NEST_SCOPE_AUTO's exit has no call site of its own; the message says so
 * and names the block's scope by its entry. */
void nest__scope_cleanup(nest_scope *s) {
    if (s->magic == NEST__SCOPE_MAGIC && (s->flags & NEST__SCOPE_ENTERED))
        scope_exit(s, 0, "the automatic exit (NEST_SCOPE_AUTO) of the scope", s->file, s->line);
}

void nest_scope_cancel(nest_scope *s) {
    nest__scope_cancel(need_rt("nest_scope_cancel"), s, 0);
}

void nest_scope_set_deadline(nest_scope *s, nest_time t) {
    s->deadline = t;
    if (!(s->flags & NEST__SCOPE_ENTERED) || (s->flags & NEST__SCOPE_CANCELLED)) return;
    struct nest__rt *rt = need_rt("nest_scope_set_deadline");
    if (s->flags & NEST__SCOPE_INHEAP) nest__deadline_remove(rt, s);
    if (t == NEST_FOREVER) return;
    if (t <= nest__clock_read(rt))
        nest__scope_cancel(rt, s, NEST__SCOPE_EXPIRED);
    else
        nest__deadline_add(rt, s);
}

nest_time nest_scope_deadline(const nest_scope *s) { return s->deadline; }

void nest_scope_set_shield(nest_scope *s, int shield) {
    if (shield) {
        s->flags |= NEST__SCOPE_SHIELD;
        return;
    }
    if (!(s->flags & NEST__SCOPE_SHIELD)) return;
    s->flags &= ~NEST__SCOPE_SHIELD;
    if ((s->flags & NEST__SCOPE_ENTERED) && nest__cancelled_at(s->parent))
        deliver(need_rt("nest_scope_set_shield"), s);
}

int nest_scope_shield(const nest_scope *s) { return !!(s->flags & NEST__SCOPE_SHIELD); }
int nest_scope_cancel_called(const nest_scope *s) {
    return !!(s->flags & NEST__SCOPE_CANCELLED);
}
int nest_scope_cancelled_caught(const nest_scope *s) { return !!(s->flags & NEST__SCOPE_CAUGHT); }

nest_time nest_current_effective_deadline(void) {
    nest_task *t = nest__task_self("nest_current_effective_deadline");
    nest_time d = NEST_FOREVER;
    for (nest_scope *s = t->cur; s; s = s->parent) {
        if (s->flags & NEST__SCOPE_CANCELLED) return NEST_PAST;
        if (s->deadline < d) d = s->deadline;
        if (s->flags & NEST__SCOPE_SHIELD) break;
    }
    return d;
}

int nest_cancelled(void) { return nest__cancelled_at(nest__task_self("nest_cancelled")->cur); }
