/*
 * nest/scope.h - cancel scopes: deadlines, cancellation and shields.
 *
 * A cancel scope is a region of one task's code that can be cancelled as a
 * whole.  Scopes nest: inside one task they form a stack, and the tasks of a
 * nursery hang below the scope in which the nursery was opened, so all scopes
 * of a program form one tree.  Cancelling a scope cancels everything below it
 * except what sits below a shielded scope.
 *
 * Cancellation is level-triggered and delivered only at checkpoints: once a
 * scope is cancelled, every checkpoint inside it fails with -ECANCELED (and a
 * task blocked inside it wakes with -ECANCELED) until the code leaves the
 * scope.  A scope with a deadline cancels itself when the deadline passes.
 *
 * Exiting a scope absorbs the cancellation it caused:
 *
 *     nest_scope s;
 *     nest_move_on_after(&s, NEST_SEC(2));
 *     int rc = do_work();              // -ECANCELED if 2 s pass
 *     rc = nest_scope_exit(&s, rc);    // 0 then: the scope absorbed it
 *
 * The idiom `rc = nest_scope_exit(&s, rc)` (and nest_nursery_close()) is the
 * only place a cancellation turns back into success.  A -ECANCELED that
 * belongs to an outer scope passes through unchanged, so the outer scope
 * absorbs it when it exits.
 *
 * Rules, checked at run time (a violation aborts, naming the rule and the
 * file:line where the scope was entered):
 *  - a scope is exited by the task that entered it, innermost first;
 *  - a task returns only after exiting every scope it entered;
 *  - a scope is not entered again while it is entered.
 * A scope struct may be reused (entered again) after it was exited; each
 * entry starts a fresh scope.  The struct must stay in place while entered
 * (declare it in the function that enters it).
 *
 * Thread-safety: scopes belong to one runtime; use them only from tasks of
 * the runtime that entered them.
 */
#ifndef NEST_SCOPE_H
#define NEST_SCOPE_H

#include "common.h"

NEST_BEGIN_DECLS

struct nest_task;

/* A cancel scope.  Caller-allocated; every field is private. */
typedef struct nest_scope {
    struct nest_scope *parent;     /* enclosing scope: same task, or nursery */
    struct nest_scope *child;      /* first scope directly below this one */
    struct nest_scope *next;       /* siblings below the same parent */
    struct nest_scope *prev;
    struct nest_task *owner;       /* task that entered it */
    nest_time deadline;            /* absolute; NEST_FOREVER for none */
    const char *file;              /* where it was entered */
    int line;
    struct nest_scope *hchild;     /* deadline pairing heap links; no */
    struct nest_scope *hnext;      /* allocation, so entering a scope */
    struct nest_scope *hprev;      /* never fails */
    uint64_t hseq;                 /* heap order among equal deadlines */
    unsigned flags;                /* NEST__SCOPE_* bits (lib/scope.h) */
    unsigned magic;                /* detects use of a never-entered scope */
} nest_scope;

/* Enters s with absolute deadline (NEST_FOREVER for none).  Not a checkpoint;
 * never fails.  The macro records the caller's file and line for diagnostics.
 */
#define nest_scope_enter(s, deadline) \
    nest_scope_enter_at((s), (deadline), __FILE__, __LINE__)

/* Enters s with deadline nest_now() + d: on expiry the work is abandoned and
 * nest_scope_exit() returns 0 (Trio's move_on_after). */
#define nest_move_on_after(s, d) nest_move_on_after_at((s), (d), __FILE__, __LINE__)
/* Enters s with deadline t (Trio's move_on_at). */
#define nest_move_on_at(s, t) nest_scope_enter_at((s), (t), __FILE__, __LINE__)
/* Enters s with deadline nest_now() + d: on expiry nest_scope_exit() turns
 * the absorbed cancellation into -ETIMEDOUT (Trio's fail_after). */
#define nest_fail_after(s, d) nest_fail_after_at((s), (d), __FILE__, __LINE__)
/* Enters s with deadline t, failing with -ETIMEDOUT on expiry (fail_at). */
#define nest_fail_at(s, t) nest_fail_at_at((s), (t), __FILE__, __LINE__)

NEST_API void nest_scope_enter_at(nest_scope *s, nest_time deadline, const char *file, int line);
NEST_API void nest_fail_at_at(nest_scope *s, nest_time deadline, const char *file, int line);
NEST_API void nest_move_on_after_at(nest_scope *s, nest_time d, const char *file, int line);
NEST_API void nest_fail_after_at(nest_scope *s, nest_time d, const char *file, int line);

/* Exits s, which must be the calling task's innermost scope.  rc is the
 * result of the work done inside; the return value is:
 *  - 0 when rc is -ECANCELED caused by this scope (cancelled or expired) and
 *    no enclosing scope up to a shield is cancelled too ("absorbed": then
 *    nest_scope_cancelled_caught(s) becomes true);
 *  - -ETIMEDOUT instead of 0 for a fail-after scope whose deadline expired;
 *  - rc unchanged otherwise.
 * Not a checkpoint. */
#define nest_scope_exit(s, rc) nest_scope_exit_at((s), (rc), __FILE__, __LINE__)
NEST_API int nest_scope_exit_at(nest_scope *s, int rc, const char *file, int line);

/* Cancels s: every checkpoint inside it fails from now on, and tasks blocked
 * inside it wake with -ECANCELED at the next scheduling pass.  Idempotent;
 * a no-op on a scope that has exited.  Not a checkpoint; may be called from
 * any task of the runtime. */
NEST_API void nest_scope_cancel(nest_scope *s);

/* Moves s's deadline to t (earlier or later), also while tasks are blocked
 * inside it: they wake at the new deadline, not the old one.  A deadline in
 * the past cancels s at once.  Not a checkpoint. */
NEST_API void nest_scope_set_deadline(nest_scope *s, nest_time t);
NEST_API nest_time nest_scope_deadline(const nest_scope *s);

/* A shielded scope ignores the cancellation of enclosing scopes (its own
 * cancel and deadline still apply).  Use it for cleanup that must block, e.g.
 * a graceful close after a cancellation.  Turning the shield off while an
 * enclosing scope is cancelled delivers that cancellation. */
NEST_API void nest_scope_set_shield(nest_scope *s, int shield);
NEST_API int nest_scope_shield(const nest_scope *s);

/* Whether nest_scope_cancel() was called or the deadline expired. */
NEST_API int nest_scope_cancel_called(const nest_scope *s);
/* Whether nest_scope_exit() absorbed a cancellation of this scope (also
 * when a fail-after scope turned it into -ETIMEDOUT).  For a nursery's
 * scope: whether close absorbed the nursery's own cancellation. */
NEST_API int nest_scope_cancelled_caught(const nest_scope *s);

/* The earliest deadline among the calling task's enclosing scopes, up to and
 * including the nearest shielded one; NEST_PAST if one of them is already
 * cancelled, NEST_FOREVER if none has a deadline.  Use it to pass nest's
 * deadline to a library with a timeout parameter.  Must be called from a
 * task; not a checkpoint. */
NEST_API nest_time nest_current_effective_deadline(void);

/* Whether a checkpoint of the calling task would fail with -ECANCELED now.
 * Not a checkpoint (it does not yield). */
NEST_API int nest_cancelled(void);

/* The return-safe form (gcc and clang): a scope declared with NEST_SCOPE_AUTO
 * is exited automatically when control leaves the block, by return, break or
 * goto, so an early return cannot leave it entered:
 *
 *     nest_scope s NEST_SCOPE_AUTO;
 *     nest_move_on_after(&s, NEST_SEC(1));
 *     if (rc < 0) return rc;          // s is exited here too
 *
 * The automatic exit cannot change the value being returned, so a -ECANCELED
 * caused by s leaves the function unabsorbed: call nest_scope_exit() yourself
 * where you want the absorbed result (an explicit exit makes the automatic
 * one a no-op).  The variable is zeroed at its declaration, so leaving the
 * block before entering it is harmless too. */
#if defined(__GNUC__) || defined(__clang__)
NEST_API void nest__scope_cleanup(nest_scope *s);
#ifdef __cplusplus
#define NEST_SCOPE_AUTO __attribute__((cleanup(nest__scope_cleanup))) = {}
#else
#define NEST_SCOPE_AUTO __attribute__((cleanup(nest__scope_cleanup))) = {0}
#endif
#endif

NEST_END_DECLS

#endif
