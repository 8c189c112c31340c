/*
 * lib/nursery.c - nurseries: spawn, start/started, close, failures.
 *
 * Invariants:
 *  - n->live counts children spawned or started into n that have not
 *    finished; n->pending counts nest_start() children that have not yet
 *    called nest_started() (they hang below the starter's scope, not n's).
 *    close returns only when both are zero, so no child outlives n.
 *  - A child's -ECANCELED is "this nursery's own" (not a failure) when the
 *    child's root scope or n's scope was cancelled and no cancellation is
 *    visible from above n's scope; it is an outer cancellation (close
 *    returns -ECANCELED for the enclosing scope to absorb) when one is
 *    visible from above.  Any other negative code is a failure: the first
 *    one cancels n's scope and becomes close's result.
 *  - Children retained for a handle are freed when close returns.
 */
#include "core.h"

enum { NURSERY_OPEN = 1, NURSERY_CLOSING = 2, NURSERY_CLOSED = 3 };

int nest__scope_leave(nest_scope *s, const char *what, const char *file, int line);

static void record(struct nest__rt *rt, nest_nursery *n, const char *name, const char *file,
                   int line, int rc) {
    nest_failure f = {name, file, line, rc};
    if (n->nfailures < NEST_NURSERY_FAILURES) n->failures[n->nfailures] = f;
    n->nfailures++;
    if (n->on_failure) n->on_failure(n->on_failure_arg, &f);
    if (n->first_error == 0) {
        n->first_error = rc;
        nest__scope_cancel(rt, &n->scope, 0);
    }
}

/* Sorts a negative result into absorbed / outer cancellation / failure.
 * inner_cancelled: whether a scope between the code and n's scope (the
 * child's root scope) was cancelled. */
static void classify(struct nest__rt *rt, nest_nursery *n, int rc, int inner_cancelled,
                     const char *name, const char *file, int line) {
    if (rc >= 0) return;
    if (rc == -ECANCELED) {
        if (nest__parent_cancelled(&n->scope)) {
            n->outer_cancelled = 1;
            return;
        }
        if (inner_cancelled || (n->scope.flags & NEST__SCOPE_CANCELLED)) return;
        /* A -ECANCELED no scope explains is a bug in the child; report it. */
    }
    record(rt, n, name, file, line, rc);
}

void nest__nursery_child_done(struct nest__rt *rt, nest_task *t) {
    nest_nursery *n = t->nursery;
    if (t->flags & NEST__TASK_STARTING) {
        t->flags &= ~NEST__TASK_STARTING;
        n->pending--;
        nest_task *s = t->starter;
        t->starter = NULL;
        nest__wake(rt, s, t->rc < 0 ? t->rc : NEST_ENOTSTARTED);
    } else {
        n->live--;
        classify(rt, n, t->rc, !!(t->root.flags & NEST__SCOPE_CANCELLED), t->name, t->file,
                 t->line);
    }
    if (t->flags & NEST__TASK_RETAINED) {
        t->retained_next = n->retained;
        n->retained = t;
    }
    if (!n->live && !n->pending && n->waiter) {
        nest_task *w = n->waiter;
        n->waiter = NULL;
        nest__wake(rt, w, 0);
    }
}

void nest_nursery_open_at(nest_nursery *n, const char *file, int line) {
    nest_scope_enter_at(&n->scope, NEST_FOREVER, file, line);
    n->scope.flags |= NEST__SCOPE_NURSERY;
    n->opener = n->scope.owner;
    n->waiter = NULL;
    n->retained = NULL;
    n->live = 0;
    n->pending = 0;
    n->state = NURSERY_OPEN;
    n->first_error = 0;
    n->outer_cancelled = 0;
    n->nfailures = 0;
    n->on_failure = NULL;
    n->on_failure_arg = NULL;
    n->magic = NEST__NURSERY_MAGIC;
    struct nest__rt *rt = nest__rt_cur;
    if (NEST__UNLIKELY(rt->instr)) nest__hook_nursery(rt, n, 0, 0);
}

static void check_spawnable(nest_nursery *n, const char *what, const char *file, int line) {
    if (n->magic != NEST__NURSERY_MAGIC || n->state < NURSERY_OPEN || n->state > NURSERY_CLOSED)
        nest__panic("%s at %s:%d: the nursery was never opened (rule: open a nursery with "
                    "nest_nursery_open before spawning into it)",
                    what, file, line);
    if (n->state == NURSERY_CLOSED)
        nest__panic("%s at %s:%d: the nursery opened at %s:%d is closed (rule: spawn into a "
                    "nursery only between its open and the return of its close)",
                    what, file, line, n->scope.file, n->scope.line);
}

static nest_task *make_child(struct nest__rt *rt, nest_nursery *n, nest_fn fn, void *arg,
                             const nest_spawn_options *o, const char *fname, const char *file,
                             int line) {
    const char *name = (o && o->name) ? o->name : fname;
    nest_task *t = nest__task_new(rt, fn, arg, name, file, line, o ? o->stack_size : 0);
    if (!t) return NULL;
    t->nursery = n;
    t->locals = nest__locals_inherit(rt->current);
    if (o && o->handle) {
        t->flags |= NEST__TASK_RETAINED;
        *o->handle = t;
    }
    return t;
}

int nest_spawn_at(nest_nursery *n, nest_fn fn, void *arg, const nest_spawn_options *o,
                  const char *fname, const char *file, int line) {
    nest__task_self("nest_spawn");
    struct nest__rt *rt = nest__rt_cur;
    check_spawnable(n, "nest_spawn", file, line);
    nest_task *t = make_child(rt, n, fn, arg, o, fname, file, line);
    if (!t) return -ENOMEM;
    nest__scope_link(&t->root, &n->scope);
    n->live++;
    nest__schedule_new(rt, t);
    return 0;
}

int nest_start_at(nest_nursery *n, nest_fn fn, void *arg, const nest_spawn_options *o,
                  void **value, const char *fname, const char *file, int line) {
    nest_task *self = nest__task_self("nest_start");
    struct nest__rt *rt = nest__rt_cur;
    check_spawnable(n, "nest_start", file, line);
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    nest_task *t = make_child(rt, n, fn, arg, o, fname, file, line);
    if (!t) return -ENOMEM;
    /* Until it starts, the child runs under the starter's scopes. */
    nest__scope_link(&t->root, self->cur);
    t->flags |= NEST__TASK_STARTING;
    t->starter = self;
    n->pending++;
    nest__schedule_new(rt, t);
    int rc = nest__park_on(rt, self, NULL, NEST__BLOCK_START, t);
    if (rc == 0 && value) *value = self->wake_ptr;
    return rc;
}

void nest_started(void *value) {
    nest_task *t = nest__task_self("nest_started");
    struct nest__rt *rt = nest__rt_cur;
    if (t->flags & NEST__TASK_STARTED)
        nest__panic("nest_started() called twice by task '%s' (spawned at %s:%d) (rule: a "
                    "started task reports ready once)",
                    t->name, t->file, t->line);
    if (!(t->flags & NEST__TASK_STARTING)) return; /* spawned, not started: no-op */
    nest_nursery *n = t->nursery;
    t->flags = (t->flags & ~NEST__TASK_STARTING) | NEST__TASK_STARTED;
    nest__scope_unlink(&t->root);
    nest__scope_link(&t->root, &n->scope);
    n->pending--;
    n->live++;
    nest_task *s = t->starter;
    t->starter = NULL;
    s->wake_ptr = value;
    nest__wake(rt, s, 0);
}

int nest_nursery_close_at(nest_nursery *n, int rc, const char *file, int line) {
    nest_task *self = nest__task_self("nest_nursery_close");
    struct nest__rt *rt = nest__rt_cur;
    if (n->magic == NEST__NURSERY_MAGIC && n->state == NURSERY_CLOSED)
        nest__panic("nest_nursery_close at %s:%d: the nursery opened at %s:%d is already "
                    "closed (rule: close each nursery exactly once)",
                    file, line, n->scope.file, n->scope.line);
    if (n->magic != NEST__NURSERY_MAGIC || n->state != NURSERY_OPEN)
        nest__panic("nest_nursery_close at %s:%d: the nursery was never opened (rule: close "
                    "each nursery exactly once, after nest_nursery_open)",
                    file, line);
    if (n->opener != self)
        nest__panic("nest_nursery_close at %s:%d: the nursery opened at %s:%d by task '%s' is "
                    "closed by task '%s' (rule: the task that opens a nursery closes it)",
                    file, line, n->scope.file, n->scope.line, n->opener->name, self->name);
    /* Report misnesting now, not after waiting for the children. */
    if (self->cur != &n->scope) nest__scope_leave(&n->scope, "nest_nursery_close", file, line);
    if (rc < 0) classify(rt, n, rc, 0, "<body>", n->scope.file, n->scope.line);
    n->state = NURSERY_CLOSING;
    while (n->live || n->pending) {
        n->waiter = self;
        nest__park_on(rt, self, NULL, NEST__BLOCK_NURSERY, n);
    }
    int absorbs = nest__scope_leave(&n->scope, "nest_nursery_close", file, line);
    nest_task *r = n->retained;
    while (r) {
        nest_task *next = r->retained_next;
        nest__task_free(rt, r);
        r = next;
    }
    n->retained = NULL;
    n->state = NURSERY_CLOSED;
    if (n->first_error)
        rc = n->first_error;
    else if (n->outer_cancelled)
        rc = -ECANCELED;
    else {
        rc = 0;
        if (absorbs) n->scope.flags |= NEST__SCOPE_CAUGHT;
    }
    if (NEST__UNLIKELY(rt->instr)) nest__hook_nursery(rt, n, rc, 1);
    return rc;
}

void nest__nursery_cleanup(nest_nursery *n) {
    if (n->magic == NEST__NURSERY_MAGIC && n->state == NURSERY_OPEN)
        nest_nursery_close_at(n, 0, n->scope.file, n->scope.line);
}

void nest_nursery_cancel(nest_nursery *n) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt) nest__panic("nest_nursery_cancel() called outside a runtime");
    nest__scope_cancel(rt, &n->scope, 0);
}

nest_scope *nest_nursery_scope(nest_nursery *n) { return &n->scope; }

void nest_nursery_on_failure(nest_nursery *n, nest_failure_fn fn, void *arg) {
    n->on_failure = fn;
    n->on_failure_arg = arg;
}

int nest_nursery_failure_count(const nest_nursery *n) { return n->nfailures; }

int nest_nursery_failure(const nest_nursery *n, int i, nest_failure *out) {
    int stored = n->nfailures < NEST_NURSERY_FAILURES ? n->nfailures : NEST_NURSERY_FAILURES;
    if (i < 0 || i >= stored) return -EINVAL;
    *out = n->failures[i];
    return 0;
}
