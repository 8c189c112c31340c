/*
 * lib/trace.c - recording a run as Chrome Trace Event JSON (nest/trace.h).
 *
 * A trace is an instrument (nest/instrument.h) that writes one JSON event
 * per hook, as it happens, so memory stays constant however long the run.
 * The mapping:
 *
 *   task spawned        "M" thread_name / thread_sort_index for tid = id;
 *                       a flow "s" on the spawner's track and "f" on the
 *                       child's (binding to its next slice: its first step)
 *   step begin / end    "B" / "E" named "run" on the task's track
 *   blocked             "B" at the end of the step that blocked, named after
 *                       what it waits for; "E" when the task is scheduled
 *   task exited         "i" instant: "exit", or "error <NAME>" / "cancelled"
 *   scope cancelled     "i" instant on its owner's track: "cancel ..." or
 *                       "deadline ..." (sleeps' own scopes are left out)
 *   nursery open/close  async "b" / "e", cat "nursery", on the opener's track
 *   I/O wait            "B" / "E" named "io wait" on track 0 ("scheduler")
 *
 * Invariant: on every task track, B and E alternate properly (a step, then
 * perhaps a block, then the next step), because a task is blocked only
 * between two of its steps.  A trace started or stopped in the middle of a
 * run opens (at start) and closes (at stop) the spans that are open then,
 * found by walking the scope tree, so the file always balances.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef struct trace {
    nest_instrument ins;
    struct nest__rt *rt;
    FILE *out;
    int own;       /* out was opened here (NEST_TRACE) and is closed here */
    int nevents;
    nest_time t0;  /* real clock at the start */
} trace;

#define PID 1

static double ts(const trace *tr) { return (double)(nest__monotonic() - tr->t0) / 1e3; }

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Starts an event object: the separator, then {"ph":..,"pid":..,"tid":..,"ts":..
 * The caller adds its fields and calls end(). */
static FILE *begin(trace *tr, const char *ph, uint64_t tid) {
    FILE *f = tr->out;
    fputs(tr->nevents++ ? ",\n" : "\n", f);
    fprintf(f, "{\"ph\":\"%s\",\"pid\":%d,\"tid\":%" PRIu64 ",\"ts\":%.3f", ph, PID, tid, ts(tr));
    return f;
}
static void end(FILE *f) { fputc('}', f); }

static void name_field(FILE *f, const char *prefix, const char *name, const char *file, int line) {
    char buf[256];
    if (file)
        snprintf(buf, sizeof buf, "%s%s%s:%d", prefix, name ? name : "", file, line);
    else
        snprintf(buf, sizeof buf, "%s%s", prefix, name ? name : "");
    fputs(",\"name\":", f);
    json_str(f, buf);
}

static void task_names(trace *tr, const nest_task *t) {
    char buf[200];
    snprintf(buf, sizeof buf, "#%" PRIu64 " %s", t->id, t->name);
    FILE *f = begin(tr, "M", t->id);
    fputs(",\"name\":\"thread_name\",\"args\":{\"name\":", f);
    json_str(f, buf);
    fputs("}", f);
    end(f);
    f = begin(tr, "M", t->id);
    fprintf(f, ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":%" PRIu64 "}", t->id);
    end(f);
}

/* The short name of what t is blocked on, for its slice. */
static void block_name(const nest_task *t, char *buf, size_t len) {
    switch (t->block) {
    case NEST__BLOCK_SLEEP:
        snprintf(buf, len, t->wake_ptr ? "sleep" : "sleep forever");
        break;
    case NEST__BLOCK_READ:
    case NEST__BLOCK_WRITE:
        snprintf(buf, len, "%s fd %d", t->block == NEST__BLOCK_READ ? "read" : "write",
                 (int)(intptr_t)t->wake_ptr);
        break;
    case NEST__BLOCK_PARK:
        snprintf(buf, len, "%s", nest_parking_lot_name(((const nest_waiter *)t->wake_ptr)->lot));
        break;
    case NEST__BLOCK_NURSERY:
        snprintf(buf, len, "nursery close");
        break;
    case NEST__BLOCK_START:
        snprintf(buf, len, "start #%" PRIu64, ((const nest_task *)t->wake_ptr)->id);
        break;
    case NEST__BLOCK_TASK:
        snprintf(buf, len, "wait #%" PRIu64, ((const nest_task *)t->wake_ptr)->id);
        break;
    case NEST__BLOCK_IDLE:
        snprintf(buf, len, "wait_all_tasks_blocked");
        break;
    case NEST__BLOCK_THREAD:
        snprintf(buf, len, "to_thread");
        break;
    case NEST__BLOCK_PROCESS:
        snprintf(buf, len, "wait pid %d", (int)(intptr_t)t->wake_ptr);
        break;
    default:
        snprintf(buf, len, "blocked");
    }
}

static void open_block(trace *tr, nest_task *t) {
    char name[128], what[512];
    block_name(t, name, sizeof name);
    nest_task_describe(t, what, sizeof what);
    FILE *f = begin(tr, "B", t->id);
    fputs(",\"cat\":\"blocked\"", f);
    name_field(f, "", name, NULL, 0);
    fputs(",\"args\":{\"what\":", f);
    json_str(f, what);
    fputs("}", f);
    end(f);
}

static void step(trace *tr, nest_task *t, const char *ph) {
    FILE *f = begin(tr, ph, t->id);
    fputs(",\"cat\":\"step\",\"name\":\"run\"", f);
    end(f);
}

static void nursery_event(trace *tr, nest_nursery *n, const char *ph, int rc) {
    FILE *f = begin(tr, ph, n->opener ? n->opener->id : 0);
    fprintf(f, ",\"cat\":\"nursery\",\"id\":\"%p\"", (void *)n);
    name_field(f, "nursery ", "", n->scope.file, n->scope.line);
    if (ph[0] == 'e') fprintf(f, ",\"args\":{\"rc\":%d,\"result\":\"%s\"}", rc, nest_err_name(rc));
    end(f);
}

/* ---- hooks --------------------------------------------------------------- */

static void on_spawned(void *arg, nest_task *t) {
    trace *tr = arg;
    task_names(tr, t);
    nest_task *parent = tr->rt->current;
    if (!parent) return;
    FILE *f = begin(tr, "s", parent->id);
    fprintf(f, ",\"cat\":\"spawn\",\"name\":\"spawn\",\"id\":%" PRIu64, t->id);
    end(f);
    f = begin(tr, "f", t->id);
    fprintf(f, ",\"cat\":\"spawn\",\"name\":\"spawn\",\"id\":%" PRIu64, t->id);
    fputs(",\"args\":{\"spawned_at\":", f);
    char site[200];
    snprintf(site, sizeof site, "%s:%d", t->file, t->line);
    json_str(f, site);
    fputs("}", f);
    end(f);
}

static void on_scheduled(void *arg, nest_task *t) {
    if (t->state != NEST__BLOCKED) return;
    trace *tr = arg;
    FILE *f = begin(tr, "E", t->id);
    fprintf(f, ",\"cat\":\"blocked\",\"args\":{\"woke_with\":\"%s\"}", nest_err_name(t->wake_rc));
    end(f);
}

static void on_step_begin(void *arg, nest_task *t) { step(arg, t, "B"); }

static void on_step_end(void *arg, nest_task *t) {
    trace *tr = arg;
    step(tr, t, "E");
    if (t->state == NEST__BLOCKED) open_block(tr, t);
}

static void on_exited(void *arg, nest_task *t) {
    trace *tr = arg;
    FILE *f = begin(tr, "i", t->id);
    char name[64];
    if (t->rc >= 0)
        snprintf(name, sizeof name, "exit");
    else if (t->rc == -ECANCELED)
        snprintf(name, sizeof name, "cancelled");
    else
        snprintf(name, sizeof name, "error %s", nest_err_name(t->rc));
    fprintf(f, ",\"s\":\"t\",\"cat\":\"exit\",\"name\":\"%s\",\"args\":{\"rc\":%d}", name, t->rc);
    end(f);
}

static void on_io(void *arg, nest_time timeout, const char *ph) {
    trace *tr = arg;
    FILE *f = begin(tr, ph, 0);
    fputs(",\"cat\":\"io\",\"name\":\"io wait\"", f);
    if (ph[0] == 'B') fprintf(f, ",\"args\":{\"timeout_ns\":%" PRId64 "}", timeout);
    end(f);
}
static void on_io_before(void *arg, nest_time timeout) { on_io(arg, timeout, "B"); }
static void on_io_after(void *arg, nest_time timeout) { on_io(arg, timeout, "E"); }

static void on_cancelled(void *arg, const nest_scope *s, int expired) {
    trace *tr = arg;
    const nest_task *o = s->owner;
    if (o && o->state == NEST__BLOCKED && o->block == NEST__BLOCK_SLEEP && o->wake_ptr == s)
        return; /* a sleep ending: its block slice says it all */
    FILE *f = begin(tr, "i", o ? o->id : 0);
    fputs(",\"s\":\"t\",\"cat\":\"cancel\"", f);
    const char *what = expired ? "deadline " : "cancel ";
    if (s == &tr->rt->run_scope)
        name_field(f, what, tr->rt->deadlocked ? "run (deadlock)" : "run", NULL, 0);
    else if (o && s == &o->root)
        name_field(f, what, "task", NULL, 0);
    else
        name_field(f, what, (s->flags & NEST__SCOPE_NURSERY) ? "nursery " : "scope ", s->file,
                   s->line);
    fprintf(f, ",\"args\":{\"run_time_ns\":%" PRId64 "}", tr->rt->now - tr->rt->t0);
    end(f);
}

static void on_nursery_opened(void *arg, nest_nursery *n) { nursery_event(arg, n, "b", 0); }
static void on_nursery_closed(void *arg, nest_nursery *n, int rc) {
    nursery_event(arg, n, "e", rc);
}

/* ---- start and stop ------------------------------------------------------ */

/* Opens (at start) or closes (at stop) the spans that are open in the
 * middle of a run: the running task's step, blocked tasks' blocks, open
 * nurseries; at start also names every living task. */
static void open_spans(trace *tr, int opening) {
    struct nest__rt *rt = tr->rt;
    const nest_scope *s = &rt->run_scope;
    for (;;) {
        nest_task *t = s->owner;
        if (t && s == &t->root) {
            /* A NEW task is between creation and its spawn hook, which names it. */
            if (opening && t->state != NEST__NEW) task_names(tr, t);
            if (t->state == NEST__BLOCKED) {
                if (opening)
                    open_block(tr, t);
                else {
                    FILE *f = begin(tr, "E", t->id);
                    fputs(",\"cat\":\"blocked\",\"args\":{\"still\":\"blocked at the end\"}", f);
                    end(f);
                }
            }
            if (t == rt->current) step(tr, t, opening ? "B" : "E");
        } else if (s->flags & NEST__SCOPE_NURSERY) {
            nursery_event(tr, (nest_nursery *)s, opening ? "b" : "e", 0);
        }
        if (s->child) {
            s = s->child;
            continue;
        }
        while (s != &rt->run_scope && !s->next) s = s->parent;
        if (s == &rt->run_scope) break;
        s = s->next;
    }
}

static void trace_free(trace *tr) {
    if (tr->own)
        fclose(tr->out);
    else
        fflush(tr->out);
    nest__free(tr, sizeof *tr);
}

static void on_after_run(void *arg) {
    trace *tr = arg;
    fputs("\n],\"displayTimeUnit\":\"ns\",\"otherData\":{\"generator\":\"nest\"}}\n", tr->out);
    trace_free(tr);
}

static trace *find(struct nest__rt *rt) {
    for (nest_instrument *i = rt->instr; i; i = i->next_)
        if (i->after_run == on_after_run) return i->arg;
    return NULL;
}

static int start(struct nest__rt *rt, FILE *out, int own) {
    if (find(rt)) return -EBUSY;
    trace *tr = nest__alloc(sizeof *tr);
    if (!tr) return -ENOMEM;
    memset(tr, 0, sizeof *tr);
    tr->rt = rt;
    tr->out = out;
    tr->own = own;
    tr->t0 = nest__monotonic();
    nest_instrument *i = &tr->ins;
    i->arg = tr;
    i->task_spawned = on_spawned;
    i->task_scheduled = on_scheduled;
    i->before_task_step = on_step_begin;
    i->after_task_step = on_step_end;
    i->task_exited = on_exited;
    i->before_io_wait = on_io_before;
    i->after_io_wait = on_io_after;
    i->scope_cancelled = on_cancelled;
    i->nursery_opened = on_nursery_opened;
    i->nursery_closed = on_nursery_closed;
    i->after_run = on_after_run;
    fputs("{\"traceEvents\":[", out);
    FILE *f = begin(tr, "M", 0);
    fputs(",\"name\":\"process_name\",\"args\":{\"name\":\"nest\"}", f);
    end(f);
    f = begin(tr, "M", 0);
    fputs(",\"name\":\"thread_name\",\"args\":{\"name\":\"scheduler\"}", f);
    end(f);
    open_spans(tr, 1);
    nest_instrument_add(i);
    return 0;
}

int nest_trace_start(FILE *out) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt || !out) return -EINVAL;
    return start(rt, out, 0);
}

int nest_trace_stop(void) {
    struct nest__rt *rt = nest__rt_cur;
    trace *tr = rt ? find(rt) : NULL;
    if (!tr) return -EINVAL;
    nest_instrument_remove(&tr->ins);
    open_spans(tr, 0);
    on_after_run(tr);
    return 0;
}

void nest__trace_from_env(struct nest__rt *rt) {
    const char *path = getenv("NEST_TRACE");
    if (!path || !*path) return;
    FILE *f = fopen(path, "w");
    if (!f) {
        if (!rt->quiet) fprintf(stderr, "nest: NEST_TRACE: cannot open %s for writing\n", path);
        return;
    }
    if (start(rt, f, 1) < 0) fclose(f);
}
