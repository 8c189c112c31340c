/*
 * nest/nursery.h - nurseries: where tasks are spawned and waited for.
 *
 * Every task is spawned into a nursery, and a nursery closes only when all of
 * its tasks have finished, so a function that opens and closes a nursery
 * never leaves work running behind it:
 *
 *     nest_nursery n;
 *     nest_nursery_open(&n);
 *     for (int i = 0; i < 100; i++) nest_spawn(&n, fetch, &jobs[i]);
 *     rc = nest_nursery_close(&n, rc);   // waits for all 100
 *
 * The code between open and close is the nursery's body.  A nursery has its
 * own cancel scope, entered at open and exited at close, covering the body
 * and every child.  When a child fails (returns a negative code other than a
 * cancellation this nursery caused), or the body's rc passed to close is a
 * failure, the nursery cancels that scope: the body and all siblings are
 * cancelled, and close returns the first failure.  Every failure is kept:
 * nest_nursery_failure_count() counts them all, the first
 * NEST_NURSERY_FAILURES are stored in the struct, and an optional callback
 * sees each one as it happens.
 *
 * Children inherit the cancel scopes in effect where the nursery was opened,
 * not where nest_spawn was called; a nursery may be handed to other tasks,
 * which may spawn into it while it is open or closing.
 *
 * Rules, checked at run time (a violation aborts, naming the rule and the
 * file:line where the nursery was opened):
 *  - the nursery is closed by the task that opened it, and follows the same
 *    nesting rules as a cancel scope (see nest/scope.h);
 *  - spawning into a nursery whose close has returned is an error;
 *  - the struct stays in place from open until close returns.
 *
 * Thread-safety: a nursery belongs to one runtime.
 */
#ifndef NEST_NURSERY_H
#define NEST_NURSERY_H

#include "common.h"
#include "scope.h"

NEST_BEGIN_DECLS

/* One failure recorded by a nursery.  Strings point at the task's name and
 * spawn site, which live as long as the strings given to nest_spawn (string
 * literals in the usual case). */
typedef struct nest_failure {
    const char *task; /* the task's name; "<body>" for the nursery's body */
    const char *file; /* where the task was spawned (or the nursery opened) */
    int line;
    int code;         /* the negative code it returned */
} nest_failure;

/* How many failures a nursery stores inline. */
#define NEST_NURSERY_FAILURES 4

/* Called, in the task that failed, for each failure as it is recorded. */
typedef void (*nest_failure_fn)(void *arg, const nest_failure *f);

/* A nursery.  Caller-allocated; every field is private. */
typedef struct nest_nursery {
    nest_scope scope;                /* the nursery's cancel scope */
    struct nest_task *opener;       /* task that opened it (closes it) */
    struct nest_task *waiter;       /* opener, while blocked in close */
    struct nest_task *retained;     /* finished children with live handles */
    size_t live;                     /* children not yet finished */
    size_t pending;                  /* nest_start() calls not yet started */
    int state;                       /* open / closing / closed */
    int first_error;                 /* first failure, 0 if none */
    int outer_cancelled;             /* saw a -ECANCELED from outside */
    int nfailures;                   /* all failures, stored or not */
    nest_failure failures[NEST_NURSERY_FAILURES];
    nest_failure_fn on_failure;
    void *on_failure_arg;
    unsigned magic;
} nest_nursery;

/* Options for a spawn; zero-initialise, then set what you need. */
typedef struct nest_spawn_options {
    const char *name;    /* NULL: the function's name (from the macro) */
    size_t stack_size;   /* 0: the runtime's default */
    nest_task **handle;  /* non-NULL: receives a handle to the child, valid
                            until the nursery's close returns */
} nest_spawn_options;

/* Opens n in the calling task and enters its cancel scope.  Not a
 * checkpoint; never fails.  Must be called from a task. */
#define nest_nursery_open(n) nest_nursery_open_at((n), __FILE__, __LINE__)
NEST_API void nest_nursery_open_at(nest_nursery *n, const char *file, int line);

/* Closes n: rc is the result of the body.  If rc is a failure it is recorded
 * and the nursery is cancelled.  Then waits for every child (a nursery never
 * abandons a child, so cancellation of the caller cannot cut this wait
 * short: it cancels the children instead), exits the nursery's scope and
 * returns:
 *  - the first failure of the body or a child, if any (a -ECANCELED caused by
 *    this nursery's own cancellation is not a failure);
 *  - else -ECANCELED if the body or a child was cancelled from outside the
 *    nursery (an enclosing scope will absorb it);
 *  - else 0.
 * Must be called by the task that opened n, with n its innermost scope.
 * Blocks, but is not a checkpoint: it does not fail just because the caller
 * is cancelled.  After it returns, the failure accessors stay valid. */
#define nest_nursery_close(n, rc) nest_nursery_close_at((n), (rc), __FILE__, __LINE__)
NEST_API int nest_nursery_close_at(nest_nursery *n, int rc, const char *file, int line);

/* Spawns fn(arg) as a child of n.  The child is queued and runs at the next
 * scheduling pass; it never runs inside this call.  The task's name is the
 * function's name.  Returns 0, or -ENOMEM (then nothing was spawned).  Not a
 * checkpoint.  Must be called from a task of n's runtime, while n is open or
 * closing.  arg is owned by the caller and must outlive the child. */
#define nest_spawn(n, fn, arg) nest_spawn_at((n), (fn), (arg), NULL, #fn, __FILE__, __LINE__)
/* nest_spawn() with options (o may be NULL). */
#define nest_spawn_opts(n, fn, arg, o) nest_spawn_at((n), (fn), (arg), (o), #fn, __FILE__, __LINE__)
NEST_API int nest_spawn_at(nest_nursery *n, nest_fn fn, void *arg, const nest_spawn_options *o,
                           const char *fname, const char *file, int line);

/* Starts fn(arg) and waits until it reports that it is ready by calling
 * nest_started(value) (e.g. once a server listens), then moves it into n and
 * returns 0 with *value set (value may be NULL).  Until then the child runs
 * under the caller's cancel scopes, so cancelling the caller cancels it.
 * Returns:
 *  - the child's error code if it failed before calling nest_started();
 *  - NEST_ENOTSTARTED if it returned >= 0 without calling it;
 *  - -ECANCELED if the caller was cancelled before the child started (the
 *    child is cancelled and waited for first);
 *  - -ENOMEM if the child could not be created.
 * A checkpoint.  Must be called from a task while n is open or closing. */
#define nest_start(n, fn, arg, value) nest_start_at((n), (fn), (arg), NULL, (value), #fn, __FILE__, __LINE__)
#define nest_start_opts(n, fn, arg, o, value) nest_start_at((n), (fn), (arg), (o), (value), #fn, __FILE__, __LINE__)
NEST_API int nest_start_at(nest_nursery *n, nest_fn fn, void *arg, const nest_spawn_options *o,
                           void **value, const char *fname, const char *file, int line);

/* Called by a task launched with nest_start() to hand value to the starter
 * and move into the target nursery.  A no-op in a task launched with
 * nest_spawn(), so one function can serve both.  A task launched with
 * nest_start() that calls it a second time aborts.  Not a checkpoint. */
NEST_API void nest_started(void *value);

/* Cancels the nursery's scope: the body and every child. */
NEST_API void nest_nursery_cancel(nest_nursery *n);

/* The nursery's cancel scope, e.g. to set a deadline on the whole nursery. */
NEST_API nest_scope *nest_nursery_scope(nest_nursery *n);

/* Installs a callback that sees each failure as it is recorded (before the
 * nursery cancels its other tasks).  It runs in the failing task; it must not
 * block.  fn NULL removes it. */
NEST_API void nest_nursery_on_failure(nest_nursery *n, nest_failure_fn fn, void *arg);

/* The number of failures recorded so far (all of them, stored or not). */
NEST_API int nest_nursery_failure_count(const nest_nursery *n);

/* Copies failure i (0 = first) to *out.  Returns 0, or -EINVAL when i is not
 * below min(count, NEST_NURSERY_FAILURES). */
NEST_API int nest_nursery_failure(const nest_nursery *n, int i, nest_failure *out);

/* The return-safe form (gcc and clang): a nursery declared with
 * NEST_NURSERY_AUTO is closed with rc 0 when control leaves the block, if it
 * was not closed already.  Its result is then lost, so prefer an explicit
 * nest_nursery_close() on the normal path. */
#if defined(__GNUC__) || defined(__clang__)
NEST_API void nest__nursery_cleanup(nest_nursery *n);
#ifdef __cplusplus
#define NEST_NURSERY_AUTO __attribute__((cleanup(nest__nursery_cleanup))) = {}
#else
#define NEST_NURSERY_AUTO __attribute__((cleanup(nest__nursery_cleanup))) = {0}
#endif
#endif

NEST_END_DECLS

#endif
