/*
 * lib/guest.c - guest mode: a runtime driven by a host's libev loop
 * (nest/guest.h), and the plain-C bridge nest_guest_call().
 *
 * A guest runtime is an ordinary runtime (lib/runtime.c creates and
 * destroys it) whose scheduler loop is cut into slices: the host's loop
 * calls nest__guest_check after every poll (one turn of nest_run's loop,
 * nest__rt_guest_slice) and nest__guest_prepare before it blocks
 * (nest__rt_guest_plan: how long it may block).  The watchers that do so
 * live in lib/evloop.c, the only file that knows libev.
 *
 * Invariants:
 *  - nest__rt_cur is the guest's runtime only while guest code runs (a
 *    slice, a plan, a cancel, the spawning of a bridge task) and is restored
 *    afterwards, so host code between slices runs outside any runtime and
 *    several guests can share a thread.
 *  - The nest_guest handle is the runtime itself; it is freed, after every
 *    task has finished and the watchers are off the loop, right before the
 *    completion callback runs - so nothing here touches rt after that.
 *  - A bridge call's record lives on the stack of the host code that waits
 *    in nest_guest_call; its task marks it done and never touches it again.
 */
#include <string.h>

#include "core.h"
#include "nest/guest.h"

static struct nest__rt *as_rt(nest_guest *g) { return (struct nest__rt *)g; }

static void host_only(const char *what) {
    if (nest__rt_cur)
        nest__panic("%s() called from inside a task (rule: guest-mode calls are made by the "
                    "host's code, between the guest's slices)",
                    what);
}

int nest_guest_start(void *loop, nest_fn fn, void *arg, const nest_run_options *o,
                     nest_guest_done_fn done, void *ud, nest_guest **out) {
    host_only("nest_guest_start");
    if (out) *out = NULL;
    nest_run_options opts;
    if (o)
        opts = *o;
    else
        nest_run_options_init(&opts);
    if (!loop || !fn || (opts.loop && opts.loop != loop)) return -EINVAL;
    opts.loop = loop;
    opts.no_ctrl_c = 1;
    struct nest__rt *rt;
    int rc = nest__rt_create(fn, arg, &opts, &rt);
    nest__rt_cur = NULL;
    if (rc < 0) return rc;
    rt->guest_done = done;
    rt->guest_ud = ud;
    nest__loop_guest_start(rt);
    if (out) *out = (nest_guest *)rt;
    return 0;
}

int nest__guest_check(struct nest__rt *rt) {
    struct nest__rt *prev = nest__rt_cur;
    nest__rt_cur = rt;
    if (!nest__rt_guest_slice(rt)) {
        nest__rt_cur = prev;
        return 0;
    }
    nest_guest_done_fn done = rt->guest_done;
    void *ud = rt->guest_ud;
    int rc = nest__rt_destroy(rt);
    nest__rt_cur = prev;
    if (done) done(ud, rc);
    return 1;
}

nest_time nest__guest_prepare(struct nest__rt *rt) {
    struct nest__rt *prev = nest__rt_cur;
    nest__rt_cur = rt;
    nest_time t = nest__rt_guest_plan(rt);
    nest__rt_cur = prev;
    return t;
}

void nest_guest_cancel(nest_guest *g) {
    host_only("nest_guest_cancel");
    struct nest__rt *rt = as_rt(g);
    nest__rt_cur = rt;
    nest__scope_cancel(rt, &rt->run_scope, 0);
    nest__rt_cur = NULL;
    nest__loop_guest_kick(rt); /* the woken tasks run at the next turn */
}

/* ---- the plain-C bridge ---------------------------------------------------- */

struct call {
    nest_fn fn;
    void *arg;
    int rc;
    int done;
};

static int call_task(void *arg) {
    struct call *c = arg;
    c->rc = c->fn(c->arg);
    c->done = 1; /* the waiter's stack frame: not touched after this */
    return 0;
}

int nest_guest_call(nest_guest *g, nest_fn fn, void *arg, int *result) {
    host_only("nest_guest_call");
    if (!g || !fn) return -EINVAL;
    struct nest__rt *rt = as_rt(g);
    if (rt->root_done) return NEST_ECLOSED;
    struct call c = {.fn = fn, .arg = arg};
    nest__rt_cur = rt;
    nest_task *t = nest__task_new_system(rt, call_task, &c, "nest_guest_call");
    if (t) nest__loop_guest_kick(rt);
    nest__rt_cur = NULL;
    if (!t) return -ENOMEM;
    /* While tasks are runnable, run them right here: a call that never
     * waits for I/O, time or a thread finishes without turning the host's
     * loop, so no host callback runs inside it.  Otherwise turn the loop.
     * rt may be destroyed in the last slice or turn (the run ends as c
     * finishes); c, on this stack, tells when to stop.  A turn that leaves
     * the loop with nothing active means nothing can ever finish c: that is
     * a deadlock, handled as nest_run handles one (the run is cancelled and
     * ends with NEST_EDEADLOCK). */
    while (!c.done) {
        if (rt->runq_head || rt->foreign_req) {
            nest__guest_check(rt);
            continue;
        }
        if (nest__loop_run_host_once(rt) || c.done) continue;
        nest__rt_cur = rt;
        nest__rt_deadlock(rt);
        nest__rt_cur = NULL;
    }
    if (result) *result = c.rc;
    return 0;
}
