/*
 * lib/inspect.c - what each task is blocked on, the task tree dump, and
 * the dump signal (nest/inspect.h).
 *
 * Owns: the rendering of a task's state and of the scope tree, and the
 * process-wide table of dump signals.
 *
 * The tree is walked iteratively, as scope.c's delivery does, because a
 * dump may run on a task's small stack and trees can be deep and wide.
 * Children are listed in the order they were linked (the oldest first),
 * which is the reverse of the child lists' order (scope_link pushes at the
 * head).  A sleep's own scope is not listed: it is folded into its task's
 * line ("sleeping until ...").
 *
 * The dump signal: the handler only stores a flag in the runtime that took
 * the signal and wakes its loop (ev_async, async-signal-safe); the
 * scheduler sees the flag at its next poll (runtime.c) and writes the dump
 * from there, between task steps.  The table maps each signal to at most
 * one runtime.  Releasing an entry clears it and then waits until no
 * handler is running (sig_busy), so a handler never touches a runtime that
 * has ended.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>

#include "core.h"

_Static_assert(NEST_BLOCK_KINDS == NEST__BLOCK_KINDS, "block kinds");
_Static_assert((int)NEST_TASK_BLOCKED == (int)NEST__BLOCKED && (int)NEST_TASK_DONE == (int)NEST__DONE &&
                   (int)NEST_TASK_RUNNABLE == (int)NEST__RUNNABLE &&
                   (int)NEST_TASK_NEW == (int)NEST__NEW && (int)NEST_TASK_RUNNING == (int)NEST__RUNNING,
               "task states");

/* ---- small formatting helpers ------------------------------------------ */

/* A bounded string builder: appends never overflow, and len keeps the
 * length it would have had (as snprintf reports). */
typedef struct sbuf {
    char *p;
    size_t cap;
    size_t len;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->len < b->cap ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

/* A duration: "1.500s", "2.250ms", "12.000us", "800ns". */
static void put_dur(sbuf *b, nest_time d) {
    const char *sign = d < 0 ? "-" : "";
    uint64_t a = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    if (a >= 1000000000u)
        put(b, "%s%" PRIu64 ".%03" PRIu64 "s", sign, a / 1000000000u, a / 1000000u % 1000u);
    else if (a >= 1000000u)
        put(b, "%s%" PRIu64 ".%03" PRIu64 "ms", sign, a / 1000000u, a / 1000u % 1000u);
    else if (a >= 1000u)
        put(b, "%s%" PRIu64 ".%03" PRIu64 "us", sign, a / 1000u, a % 1000u);
    else
        put(b, "%s%" PRIu64 "ns", sign, a);
}

/* A deadline relative to now: "+1.500s", "-20.000ms" (passed). */
static void put_deadline(sbuf *b, nest_time deadline, nest_time now) {
    if (deadline == NEST_FOREVER) {
        put(b, "none");
        return;
    }
    nest_time d = deadline - now;
    if (d >= 0) put(b, "+");
    put_dur(b, d);
}

/* The earliest deadline that applies at s (walking up to and including the
 * nearest shield), NEST_PAST if a cancellation reaches s. */
static nest_time effective_deadline(const nest_scope *s) {
    nest_time d = NEST_FOREVER;
    for (; s; s = s->parent) {
        if (s->flags & NEST__SCOPE_CANCELLED) return NEST_PAST;
        if (s->deadline < d) d = s->deadline;
        if (s->flags & NEST__SCOPE_SHIELD) break;
    }
    return d;
}

static int is_sleep_scope(const nest_scope *s) {
    const nest_task *t = s->owner;
    return t && t->state == NEST__BLOCKED && t->block == NEST__BLOCK_SLEEP && t->wake_ptr == s;
}

/* ---- one task ------------------------------------------------------------ */

int nest_task_state(const nest_task *t) { return t->state; }

const char *nest_task_state_name(int state) {
    static const char *const names[] = {"new", "runnable", "running", "blocked", "done"};
    return state >= 0 && state <= NEST__DONE ? names[state] : "invalid";
}

const char *nest_block_kind_name(int kind) {
    static const char *const names[] = {"none",    "sleep", "read",  "write", "park",
                                        "nursery", "start", "task",  "idle",  "other",
                                        "thread",  "process"};
    return kind >= 0 && kind < NEST__BLOCK_KINDS ? names[kind] : "invalid";
}

int nest_task_block(const nest_task *t, nest_block_info *out) {
    memset(out, 0, sizeof *out);
    out->fd = -1;
    out->deadline = NEST_FOREVER;
    if (t->state != NEST__BLOCKED) return out->kind = NEST_BLOCK_NONE;
    out->kind = t->block;
    out->since = t->block_since;
    switch (t->block) {
    case NEST__BLOCK_SLEEP:
        if (t->wake_ptr) {
            nest_time d = effective_deadline(t->wake_ptr);
            out->deadline = d == NEST_PAST ? ((const nest_scope *)t->wake_ptr)->deadline : d;
        }
        break;
    case NEST__BLOCK_READ:
    case NEST__BLOCK_WRITE:
    case NEST__BLOCK_PROCESS:
        out->fd = (int)(intptr_t)t->wake_ptr;
        break;
    case NEST__BLOCK_PARK: {
        const nest_waiter *w = t->wake_ptr;
        out->lot = nest_parking_lot_name(w->lot);
        out->nlots = w->count;
        out->object = w->lot;
        break;
    }
    default:
        out->object = t->wake_ptr;
    }
    return out->kind;
}

static void put_task_ref(sbuf *b, const nest_task *t) {
    put(b, "task #%" PRIu64 " \"%s\"", t->id, t->name);
}

/* What t waits for, e.g. "sleeping until +1.000s". */
static void put_reason(sbuf *b, const nest_task *t, nest_time now) {
    switch (t->block) {
    case NEST__BLOCK_SLEEP: {
        const nest_scope *s = t->wake_ptr;
        if (!s) {
            put(b, "sleeping forever");
            break;
        }
        put(b, "sleeping until ");
        put_deadline(b, s->deadline, now);
        nest_time eff = effective_deadline(s);
        if (eff != NEST_PAST && eff < s->deadline) {
            put(b, " (an enclosing deadline wakes it at ");
            put_deadline(b, eff, now);
            put(b, ")");
        }
        break;
    }
    case NEST__BLOCK_READ:
    case NEST__BLOCK_WRITE:
        put(b, "waiting for fd %d to be %s", (int)(intptr_t)t->wake_ptr,
            t->block == NEST__BLOCK_READ ? "readable" : "writable");
        break;
    case NEST__BLOCK_PARK: {
        const nest_waiter *base = t->wake_ptr;
        for (unsigned i = 0; i < base->count; i++) {
            const nest_parking_lot *l = base[i].lot;
            put(b, "%s%s %p (%zu waiting", i ? "; or " : "waiting on ", nest_parking_lot_name(l),
                (const void *)l, l->count);
            if (l->describe) {
                char more[160];
                more[0] = '\0';
                l->describe(l, more, sizeof more);
                if (more[0]) put(b, ", %s", more);
            }
            put(b, ")");
        }
        break;
    }
    case NEST__BLOCK_NURSERY: {
        const nest_nursery *n = t->wake_ptr;
        put(b, "in nest_nursery_close: %zu child%s left (nursery at %s:%d)", n->live + n->pending,
            n->live + n->pending == 1 ? "" : "ren", n->scope.file, n->scope.line);
        break;
    }
    case NEST__BLOCK_START:
        put(b, "in nest_start: waiting for ");
        put_task_ref(b, t->wake_ptr);
        put(b, " to call nest_started");
        break;
    case NEST__BLOCK_TASK:
        put(b, "in nest_task_wait for ");
        put_task_ref(b, t->wake_ptr);
        break;
    case NEST__BLOCK_IDLE:
        put(b, "in nest_wait_all_tasks_blocked");
        break;
    case NEST__BLOCK_THREAD:
        put(b, "in nest_to_thread: a worker thread runs the job");
        break;
    case NEST__BLOCK_PROCESS:
        put(b, "waiting for process %d to exit", (int)(intptr_t)t->wake_ptr);
        break;
    default:
        put(b, "in an internal wait");
    }
}

static void put_state(sbuf *b, const nest_task *t, nest_time now) {
    switch (t->state) {
    case NEST__NEW:
    case NEST__RUNNABLE:
        put(b, t->stack ? "runnable" : "runnable, not started yet");
        break;
    case NEST__RUNNING:
        put(b, "running (the task writing this)");
        break;
    case NEST__BLOCKED:
        put(b, "blocked ");
        put_dur(b, now - t->block_since);
        put(b, " ");
        put_reason(b, t, now);
        /* Cancellation wakes abortable waits at once, so this is a wait
         * that cannot be cut short: a nursery close, a start, a refused
         * abort.  Worth saying: the task will notice only afterwards. */
        if (nest__cancelled_at(t->cur)) put(b, "; in a cancelled scope");
        break;
    case NEST__DONE:
        put(b, "returned %d (%s)", t->rc, nest_err_name(t->rc));
        break;
    default:
        put(b, "invalid (a stale handle?)");
    }
}

int nest_task_describe(const nest_task *t, char *buf, size_t len) {
    struct nest__rt *rt = nest__rt_cur;
    sbuf b = {buf, len, 0};
    if (len) buf[0] = '\0';
    put_state(&b, t, rt ? nest__clock_read(rt) : 0);
    return (int)b.len;
}

/* ---- the tree ------------------------------------------------------------ */

/* One node's line, without the tree prefix. */
static void put_node(sbuf *b, struct nest__rt *rt, const nest_scope *s, nest_time now) {
    const nest_task *t = s->owner;
    if (s == &rt->run_scope) {
        put(b, "run (nest_run)");
        if (s->flags & NEST__SCOPE_CANCELLED)
            put(b, rt->deadlocked ? ": cancelled (deadlock)" : ": cancelled");
        return;
    }
    if (t && s == &t->root) {
        put_task_ref(b, t);
        if (t->line) put(b, " spawned at %s:%d", t->file, t->line);
        if (t->flags & NEST__TASK_STARTING)
            put(b, " (starting; moves to the nursery at %s:%d)", t->nursery->scope.file,
                t->nursery->scope.line);
        put(b, ": ");
        put_state(b, t, now);
        if (s->flags & NEST__SCOPE_CANCELLED) put(b, "; cancelled (nest_task_cancel)");
        return;
    }
    const char *sep = ": ";
    if (s->flags & NEST__SCOPE_NURSERY) {
        const nest_nursery *n = (const nest_nursery *)s; /* the scope is its first member */
        put(b, "nursery at %s:%d, %zu child%s", s->file, s->line, n->live + n->pending,
            n->live + n->pending == 1 ? "" : "ren");
        const nest_task *o = n->opener;
        if (o && o->state == NEST__BLOCKED && o->block == NEST__BLOCK_NURSERY && o->wake_ptr == n)
            put(b, ", closing");
        if (n->first_error) put(b, ", failed (%s)", nest_err_name(n->first_error));
        sep = ", ";
    } else {
        put(b, "%s at %s:%d", (s->flags & NEST__SCOPE_FAIL) ? "fail-after scope" : "scope", s->file,
            s->line);
    }
    if (s->deadline != NEST_FOREVER) {
        put(b, "%sdeadline ", sep);
        put_deadline(b, s->deadline, now);
        sep = ", ";
    }
    nest_time eff = effective_deadline(s);
    if (eff != NEST_PAST && eff != s->deadline) {
        put(b, "%seffective deadline ", sep);
        put_deadline(b, eff, now);
        sep = ", ";
    }
    if (s->flags & NEST__SCOPE_CANCELLED) {
        put(b, "%s%s", sep, (s->flags & NEST__SCOPE_EXPIRED) ? "deadline expired" : "cancel called");
        sep = ", ";
    } else if (eff == NEST_PAST) {
        put(b, "%scancelled from outside", sep);
        sep = ", ";
    }
    if (s->flags & NEST__SCOPE_SHIELD) put(b, "%sshielded", sep);
}

/* Display order: the first visible child, and the next visible sibling. */
static const nest_scope *visible_from_prev(const nest_scope *s) {
    while (s && is_sleep_scope(s)) s = s->prev;
    return s;
}
static const nest_scope *first_child(const nest_scope *s) {
    const nest_scope *c = s->child;
    if (!c) return NULL;
    while (c->next) c = c->next;
    return visible_from_prev(c);
}
static const nest_scope *next_sibling(const nest_scope *s) { return visible_from_prev(s->prev); }

#define MAX_DRAWN_DEPTH 48

/* Calls fn on every task in the tree (every task that has not returned),
 * in pre-order, without recursion.  fn must not change the tree. */
void nest__each_task(struct nest__rt *rt, void (*fn)(nest_task *t, void *arg), void *arg) {
    nest_scope *s = &rt->run_scope;
    for (;;) {
        if (s->owner && s == &s->owner->root) fn(s->owner, arg);
        if (s->child) {
            s = s->child;
            continue;
        }
        while (s != &rt->run_scope && !s->next) s = s->parent;
        if (s == &rt->run_scope) return;
        s = s->next;
    }
}

/* Blocked tasks: every living task is runnable, running or blocked (NEW
 * lasts only inside a spawn). */
size_t nest__nblocked(const struct nest__rt *rt) {
    int running = rt->current && rt->current->state == NEST__RUNNING; /* not in a hook */
    return (size_t)(rt->next_id - rt->nfinished) - rt->nrunq - (size_t)running;
}

void nest__dump_rt(struct nest__rt *rt, FILE *out, const char *header) {
    nest_time now = nest__clock_read(rt);
    size_t blocked = nest__nblocked(rt);
    if (header) fprintf(out, "%s\n", header);
    char line[1024];
    sbuf b = {line, sizeof line, 0};
    put(&b, "nest: task tree at ");
    put_dur(&b, now - rt->t0);
    put(&b, " into the run%s: %" PRIu64 " task%s, %zu runnable, %zu blocked",
        rt->clock_kind == NEST_CLOCK_MOCK ? " (mock clock)" : "", rt->next_id - rt->nfinished,
        rt->next_id - rt->nfinished == 1 ? "" : "s", rt->nrunq, blocked);
    if (rt->seed) put(&b, ", scheduling seed %" PRIu64, rt->seed);
    fprintf(out, "%s\n", line);

    /* more[d]: whether the node on the current path at depth d has a
     * visible sibling after it (draws "|" in the columns below it). */
    unsigned char more[MAX_DRAWN_DEPTH + 1];
    const nest_scope *s = &rt->run_scope;
    int depth = 0;
    for (;;) {
        b.len = 0;
        if (depth > 0) {
            more[depth <= MAX_DRAWN_DEPTH ? depth : MAX_DRAWN_DEPTH] = next_sibling(s) != NULL;
            int drawn = depth <= MAX_DRAWN_DEPTH ? depth : MAX_DRAWN_DEPTH;
            for (int k = 1; k < drawn; k++) put(&b, more[k] ? "|  " : "   ");
            if (depth > MAX_DRAWN_DEPTH) put(&b, "[depth %d] ", depth);
            put(&b, more[drawn] ? "|- " : "`- ");
        }
        put_node(&b, rt, s, now);
        if (b.len >= sizeof line) memcpy(line + sizeof line - 4, "...", 4);
        fprintf(out, "%s\n", line);
        /* Next node: first child, else the next sibling of the nearest
         * ancestor-or-self that has one. */
        const nest_scope *c = first_child(s);
        if (c) {
            s = c;
            depth++;
            continue;
        }
        while (depth > 0 && !next_sibling(s)) {
            s = s->parent;
            depth--;
        }
        if (depth == 0) break;
        s = next_sibling(s);
    }
    fflush(out);
}

void nest_dump(FILE *out) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt) {
        fprintf(out, "nest: no runtime is running on this thread\n");
        fflush(out);
        return;
    }
    nest__dump_rt(rt, out, NULL);
}

/* ---- the dump signal ----------------------------------------------------- */

#define MAX_SIGNO 65

static _Atomic(struct nest__rt *) sig_owner[MAX_SIGNO];
static _Atomic int sig_busy; /* handlers running now */
static struct sigaction sig_old[MAX_SIGNO];

static void on_dump_signal(int signo) {
    int saved = errno;
    atomic_fetch_add(&sig_busy, 1);
    struct nest__rt *rt = signo > 0 && signo < MAX_SIGNO ? atomic_load(&sig_owner[signo]) : NULL;
    if (rt) {
        atomic_store(&rt->dump_req, 1);
        nest__loop_wakeup(rt);
    }
    atomic_fetch_sub(&sig_busy, 1);
    errno = saved;
}

void nest__dump_signal_release(struct nest__rt *rt) {
    int signo = rt->dump_signo;
    if (!signo) return;
    atomic_store(&sig_owner[signo], NULL);
    while (atomic_load(&sig_busy)) sched_yield();
    sigaction(signo, &sig_old[signo], NULL);
    rt->dump_signo = 0;
}

void nest__dump_signalled(struct nest__rt *rt) {
    atomic_store(&rt->dump_req, 0);
    char header[64];
    snprintf(header, sizeof header, "nest: task tree on signal %d:", rt->dump_signo);
    nest__dump_rt(rt, rt->dump_out ? rt->dump_out : stderr, header);
}

int nest_dump_on_signal(int signo, FILE *out) {
    nest__task_self("nest_dump_on_signal");
    struct nest__rt *rt = nest__rt_cur;
    if (signo == 0) {
        nest__dump_signal_release(rt);
        return 0;
    }
    if (signo < 1 || signo >= MAX_SIGNO || signo == SIGKILL || signo == SIGSTOP) return -EINVAL;
    if (signo == rt->dump_signo) {
        rt->dump_out = out;
        return 0;
    }
    struct nest__rt *expected = NULL;
    if (!atomic_compare_exchange_strong(&sig_owner[signo], &expected, rt)) return -EBUSY;
    int rc = nest__loop_wakeup_enable(rt);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_dump_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (rc == 0 && sigaction(signo, &sa, &sig_old[signo]) < 0) rc = -EINVAL;
    if (rc < 0) {
        atomic_store(&sig_owner[signo], NULL);
        return rc;
    }
    nest__dump_signal_release(rt); /* the previous signal, if any */
    rt->dump_signo = signo;
    rt->dump_out = out;
    return 0;
}
