/*
 * lib/thread.c - the worker-thread pool behind nest_to_thread().
 *
 * Owns one pool per runtime (rt->tpool, created by the first job), its
 * worker threads and its job records; and the runtime's token (rt->token,
 * see the second half of the file), through which other threads call in.
 *
 * Invariants:
 *  - Every field of struct pool marked "mu" is read and written only with
 *    pool->mu held; the rest belong to the runtime's thread.
 *  - A job record is allocated and freed by the runtime's thread only (so
 *    the allocator hook never runs on a worker), and is owned by the pool,
 *    not by the waiting task: an abandoned job may outlive its task.
 *  - A job is in exactly one place: the queue (QUEUED), a worker (RUNNING),
 *    or the done list (DONE) until the runtime reaps it.  rt->nforeign
 *    counts jobs submitted and not yet reaped or withdrawn: while it is not
 *    zero the runtime is not deadlocked and the loop's async watcher is
 *    referenced, so that a blocking poll waits for the completion.
 *  - At most pool->limit jobs run at once; queued jobs start in FIFO order.
 *  - Workers never call into the runtime except nest__loop_wakeup()
 *    (ev_async_send, thread-safe) after setting rt->foreign_req; the
 *    scheduler sees the flag at its next pass (nest__foreign_drain) and
 *    wakes the tasks.  nest_run joins every worker before it closes the
 *    loop (nest__thread_close), so no worker outlives what it touches.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "nest/thread.h"

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct job {
    struct job *next; /* mu: in the queue or the done list */
    int state;        /* mu: enum JOB_* */
    int (*fn)(void *);
    void *arg;
    int rc;          /* mu: fn's result once DONE */
    nest_task *task; /* the waiting task; NULL once abandoned */
    int *result;     /* where to store rc (the task's memory) */
    int cancelled;   /* wait mode: cancellation was refused */
};

struct worker {
    pthread_t thread;
    struct worker *next, *prev; /* mu: pool->all, or pool->dead once exited */
    struct pool *pool;
};

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* workers wait here for jobs */
    struct nest__rt *rt;
    struct job *q_head, *q_tail;  /* mu: QUEUED jobs, FIFO */
    struct job *d_head, *d_tail;  /* mu: DONE jobs, not yet reaped */
    struct worker *all;           /* mu: live workers */
    struct worker *dead;          /* mu: workers that exited, to join */
    int limit;                    /* mu: jobs run at once at most */
    int nworkers;                 /* mu: live workers */
    int nidle;                    /* mu: live workers without a job */
    int running;                  /* mu: RUNNING jobs */
    int queued;                   /* mu: QUEUED jobs */
    int closing;                  /* mu: nest_run is ending */
    unsigned long long completed; /* mu */
    nest_time idle_timeout;
};

static void *worker_main(void *p);

/* mu held.  Starts one worker; returns 0 or a negative errno. */
static int spawn_worker(struct pool *pl, struct worker *w) {
    w->pool = pl;
    int err = pthread_create(&w->thread, NULL, worker_main, w);
    if (err) return -err;
    w->prev = NULL;
    w->next = pl->all;
    if (pl->all) pl->all->prev = w;
    pl->all = w;
    pl->nworkers++;
    pl->nidle++;
    return 0;
}

/* mu held.  How many more workers the queue could use now. */
static int workers_wanted(const struct pool *pl) {
    int free_slots = pl->limit - pl->running;
    int want = pl->queued < free_slots ? pl->queued : free_slots;
    int more = want - pl->nidle;
    if (more > pl->limit - pl->nworkers) more = pl->limit - pl->nworkers;
    return more > 0 ? more : 0;
}

static void *worker_main(void *p) {
    struct worker *w = p;
    struct pool *pl = w->pool;
    struct nest__rt *rt = pl->rt;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        nest_time t = (nest_time)until.tv_sec * 1000000000 + until.tv_nsec + pl->idle_timeout;
        until.tv_sec = (time_t)(t / 1000000000);
        until.tv_nsec = (long)(t % 1000000000);
        int timed_out = 0;
        while (!(pl->q_head && pl->running < pl->limit) && !pl->closing && !timed_out)
            timed_out = pthread_cond_timedwait(&pl->cv, &pl->mu, &until) != 0;
        if (!(pl->q_head && pl->running < pl->limit)) break; /* closing or idle too long */
        struct job *j = pl->q_head;
        pl->q_head = j->next;
        if (!pl->q_head) pl->q_tail = NULL;
        pl->queued--;
        j->state = JOB_RUNNING;
        pl->running++;
        pl->nidle--;
        pthread_mutex_unlock(&pl->mu);
        int rc = j->fn(j->arg);
        pthread_mutex_lock(&pl->mu);
        j->rc = rc;
        j->state = JOB_DONE;
        j->next = NULL;
        if (pl->d_tail)
            pl->d_tail->next = j;
        else
            pl->d_head = j;
        pl->d_tail = j;
        pl->running--;
        pl->nidle++;
        pl->completed++;
        /* Why under mu: nest__thread_close sets closing and then joins, so
         * the loop cannot be closed while a worker that holds mu wakes it. */
        atomic_store_explicit(&rt->foreign_req, 1, memory_order_release);
        nest__loop_wakeup(rt);
    }
    /* Exit: move to the dead list, which the runtime joins. */
    if (w->prev)
        w->prev->next = w->next;
    else
        pl->all = w->next;
    if (w->next) w->next->prev = w->prev;
    w->next = pl->dead;
    pl->dead = w;
    pl->nworkers--;
    pl->nidle--;
    if (!pl->closing) { /* the runtime may want to reap the dead worker */
        atomic_store_explicit(&rt->foreign_req, 1, memory_order_release);
        nest__loop_wakeup(rt);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

static struct pool *pool_get(struct nest__rt *rt) {
    if (rt->tpool) return rt->tpool;
    struct pool *pl = nest__alloc(sizeof *pl);
    if (!pl) return NULL;
    memset(pl, 0, sizeof *pl);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pl->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&pl->mu, NULL);
    pl->rt = rt;
    pl->limit = rt->thread_limit > 0 ? rt->thread_limit : NEST_THREAD_LIMIT_DEFAULT;
    pl->idle_timeout = NEST_THREAD_IDLE_TIMEOUT;
    if (nest__loop_wakeup_enable(rt) < 0) {
        pthread_cond_destroy(&pl->cv);
        pthread_mutex_destroy(&pl->mu);
        nest__free(pl, sizeof *pl);
        return NULL;
    }
    rt->tpool = pl;
    return pl;
}

static void foreign_add(struct nest__rt *rt) {
    if (rt->nforeign++ == 0) nest__loop_wakeup_hold(rt, 1);
}

static void foreign_done(struct nest__rt *rt) {
    if (--rt->nforeign == 0) nest__loop_wakeup_hold(rt, 0);
}

/* Joins the workers that exited; mu not held. */
static void join_dead(struct worker *dead) {
    while (dead) {
        struct worker *next = dead->next;
        pthread_join(dead->thread, NULL);
        nest__free(dead, sizeof *dead);
        dead = next;
    }
}

/* Hands finished jobs to their tasks.  Runtime thread. */
static void reap(struct nest__rt *rt, struct pool *pl) {
    pthread_mutex_lock(&pl->mu);
    struct job *j = pl->d_head;
    pl->d_head = pl->d_tail = NULL;
    struct worker *dead = pl->dead;
    pl->dead = NULL;
    pthread_mutex_unlock(&pl->mu);
    join_dead(dead);
    while (j) {
        struct job *next = j->next;
        if (j->task) {
            if (j->result) *j->result = j->rc;
            j->task->wake_ptr = NULL;
            nest__wake(rt, j->task, j->cancelled ? -ECANCELED : 0);
        }
        nest__free(j, sizeof *j);
        foreign_done(rt);
        j = next;
    }
}

static void token_drain(struct nest__rt *rt, struct nest_token *tok);

void nest__foreign_drain(struct nest__rt *rt) {
    atomic_store_explicit(&rt->foreign_req, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (rt->ctrl_c) nest__ctrl_c_check(rt);
    if (rt->tpool) reap(rt, rt->tpool);
    if (rt->token) token_drain(rt, rt->token);
}

/* abort_fn of a task in nest_to_thread(). */
static int abort_job(nest_task *t) {
    struct nest__rt *rt = nest__rt_cur;
    struct pool *pl = rt->tpool;
    struct job *j = t->wake_ptr;
    pthread_mutex_lock(&pl->mu);
    if (j->state == JOB_QUEUED) { /* withdraw it: it never runs */
        struct job *prev = NULL;
        for (struct job *q = pl->q_head; q != j; prev = q, q = q->next) {
        }
        if (prev)
            prev->next = j->next;
        else
            pl->q_head = j->next;
        if (pl->q_tail == j) pl->q_tail = prev;
        pl->queued--;
        pthread_mutex_unlock(&pl->mu);
        nest__free(j, sizeof *j);
        foreign_done(rt);
        return 0;
    }
    pthread_mutex_unlock(&pl->mu);
    if (t->wake_val & NEST_THREAD_ABANDON) { /* the pool frees it when it finishes */
        j->task = NULL;
        j->result = NULL;
        return 0;
    }
    j->cancelled = 1; /* wait for fn: it may use arg, on the task's stack */
    return 1;
}

int nest_to_thread(int (*fn)(void *arg), void *arg, int *result, unsigned flags) {
    nest_task *self = nest__task_self("nest_to_thread");
    struct nest__rt *rt = nest__rt_cur;
    if (!fn || (flags & ~(unsigned)NEST_THREAD_ABANDON)) return -EINVAL;
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    struct pool *pl = pool_get(rt);
    if (!pl) return -ENOMEM;
    struct job *j = nest__alloc(sizeof *j);
    if (!j) return -ENOMEM;
    struct worker *w = nest__alloc(sizeof *w); /* in case a thread is needed */
    if (!w) {
        nest__free(j, sizeof *j);
        return -ENOMEM;
    }
    memset(j, 0, sizeof *j);
    j->fn = fn;
    j->arg = arg;
    j->task = self;
    j->result = result;
    j->state = JOB_QUEUED;
    pthread_mutex_lock(&pl->mu);
    if (pl->q_tail)
        pl->q_tail->next = j;
    else
        pl->q_head = j;
    pl->q_tail = j;
    pl->queued++;
    if (workers_wanted(pl) > 0) {
        int rc = spawn_worker(pl, w);
        if (rc < 0) {
            nest__free(w, sizeof *w);
            if (pl->nworkers == 0) { /* nobody would ever run it */
                pl->q_head = pl->q_tail = NULL;
                pl->queued = 0;
                pthread_mutex_unlock(&pl->mu);
                nest__free(j, sizeof *j);
                return -EAGAIN;
            }
        }
        w = NULL;
    }
    pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    if (w) nest__free(w, sizeof *w);
    foreign_add(rt);
    self->wake_val = (int)flags; /* abort_job reads the mode here */
    return nest__park_on(rt, self, abort_job, NEST__BLOCK_THREAD, j);
}

int nest_thread_set_limit(int n) {
    nest__task_self("nest_thread_set_limit");
    struct nest__rt *rt = nest__rt_cur;
    if (n < 1) return -EINVAL;
    struct pool *pl = pool_get(rt);
    if (!pl) {
        rt->thread_limit = n;
        return 0;
    }
    rt->thread_limit = n;
    pthread_mutex_lock(&pl->mu);
    pl->limit = n;
    for (int more = workers_wanted(pl); more > 0; more--) {
        struct worker *w = nest__alloc(sizeof *w);
        if (!w || spawn_worker(pl, w) < 0) {
            nest__free(w, sizeof *w);
            break; /* the jobs wait for a running worker instead */
        }
    }
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    return 0;
}

void nest_thread_statistics(nest_thread_stats *out) {
    nest__task_self("nest_thread_statistics");
    struct nest__rt *rt = nest__rt_cur;
    struct pool *pl = rt->tpool;
    memset(out, 0, sizeof *out);
    if (!pl) {
        out->limit = rt->thread_limit > 0 ? rt->thread_limit : NEST_THREAD_LIMIT_DEFAULT;
        return;
    }
    pthread_mutex_lock(&pl->mu);
    out->limit = pl->limit;
    out->threads = pl->nworkers;
    out->running = pl->running;
    out->queued = pl->queued;
    out->completed = pl->completed;
    pthread_mutex_unlock(&pl->mu);
}

void nest__thread_close(struct nest__rt *rt) {
    struct pool *pl = rt->tpool;
    if (!pl) return;
    pthread_mutex_lock(&pl->mu);
    pl->closing = 1;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    /* Only abandoned jobs can still run: every waiting task has returned.
     * Wait for them; the loop stays open until every worker is joined. */
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        struct worker *w = pl->all;
        pthread_mutex_unlock(&pl->mu);
        if (!w) break;
        pthread_join(w->thread, NULL); /* it moved itself to pl->dead */
        pthread_mutex_lock(&pl->mu);
        for (struct worker **p = &pl->dead; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
        pthread_mutex_unlock(&pl->mu);
        nest__free(w, sizeof *w);
    }
    reap(rt, pl);
    pthread_cond_destroy(&pl->cv);
    pthread_mutex_destroy(&pl->mu);
    nest__free(pl, sizeof *pl);
    rt->tpool = NULL;
}

/* ---- tokens: calls into the runtime from other threads ------------------
 *
 * A token's state is shared with other threads and may outlive the run, so
 * it is reference-counted: the runtime holds one reference until nest_run
 * ends, each nest_token_get() adds one.  It is allocated with calloc, not
 * the allocator hook, because its last reference may be dropped by another
 * thread after the run.  Every field but rt_counted is guarded by mu.
 *
 * A request lives on the stack of the thread that made it, which sleeps on
 * cv until the runtime marks it done (holding a reference meanwhile, so
 * that a runner finishing after the run can still signal cv); the runtime
 * never touches it after that.  A run request is executed by a system task (a task in no nursery,
 * linked under the run scope; rt->nsystem counts them): fn is user code,
 * which must run in a task, never in a libev callback or the scheduler.
 * While another thread holds a reference the runtime is not deadlocked:
 * that thread may call in at any time (rt_counted adds one to nforeign). */

enum { REQ_RUN, REQ_CANCEL };

struct treq {
    struct treq *next;      /* in token->head */
    struct nest_token *tok; /* the requester holds a reference meanwhile */
    int kind;               /* REQ_RUN or REQ_CANCEL */
    int (*fn)(void *);
    void *arg;
    nest_scope *scope;
    int rc;     /* fn's result */
    int status; /* 0, NEST_ECLOSED or -ENOMEM */
    int done;
};

struct nest_token {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* requesters wait here */
    int refs;
    int closed;               /* nest_run has ended (or is ending) */
    struct nest__rt *rt;      /* valid while !closed */
    struct treq *head, *tail; /* pending requests, FIFO */
    int rt_counted;           /* runtime thread only: counted in nforeign */
};

nest_token *nest_token_get(void) {
    nest__task_self("nest_token_get");
    struct nest__rt *rt = nest__rt_cur;
    nest_token *tok = rt->token;
    if (!tok) {
        if (nest__loop_wakeup_enable(rt) < 0) return NULL;
        tok = calloc(1, sizeof *tok);
        if (!tok) return NULL;
        pthread_mutex_init(&tok->mu, NULL);
        pthread_cond_init(&tok->cv, NULL);
        tok->refs = 1;
        tok->rt = rt;
        rt->token = tok;
    }
    pthread_mutex_lock(&tok->mu);
    tok->refs++;
    pthread_mutex_unlock(&tok->mu);
    if (!tok->rt_counted) {
        tok->rt_counted = 1;
        foreign_add(rt);
    }
    return tok;
}

static void token_free(nest_token *tok) {
    pthread_cond_destroy(&tok->cv);
    pthread_mutex_destroy(&tok->mu);
    free(tok);
}

/* mu held: tell the runtime to look at the token. */
static void token_poke(nest_token *tok) {
    atomic_store_explicit(&tok->rt->foreign_req, 1, memory_order_release);
    nest__loop_wakeup(tok->rt);
}

void nest_token_release(nest_token *tok) {
    if (!tok) return;
    pthread_mutex_lock(&tok->mu);
    int left = --tok->refs;
    if (left == 1 && !tok->closed) token_poke(tok); /* maybe nobody can call in now */
    pthread_mutex_unlock(&tok->mu);
    if (left == 0) token_free(tok);
}

static int submit(nest_token *tok, struct treq *r) {
    if (!tok) return -EINVAL;
    pthread_mutex_lock(&tok->mu);
    if (tok->closed) {
        pthread_mutex_unlock(&tok->mu);
        return NEST_ECLOSED;
    }
    if (nest__rt_cur == tok->rt) { /* it would wait for itself */
        pthread_mutex_unlock(&tok->mu);
        return -EDEADLK;
    }
    tok->refs++; /* a runner may still finish r after the run closed tok */
    r->tok = tok;
    if (tok->tail)
        tok->tail->next = r;
    else
        tok->head = r;
    tok->tail = r;
    token_poke(tok);
    while (!r->done) pthread_cond_wait(&tok->cv, &tok->mu);
    int left = --tok->refs;
    if (left == 1 && !tok->closed) token_poke(tok); /* as nest_token_release */
    pthread_mutex_unlock(&tok->mu);
    if (left == 0) token_free(tok);
    return r->status;
}

int nest_token_run(nest_token *tok, int (*fn)(void *arg), void *arg, int *result) {
    if (!fn) return -EINVAL;
    struct treq r = {.kind = REQ_RUN, .fn = fn, .arg = arg};
    int rc = submit(tok, &r);
    if (rc == 0 && result) *result = r.rc;
    return rc;
}

int nest_token_cancel(nest_token *tok, nest_scope *s) {
    if (!s) return -EINVAL;
    struct treq r = {.kind = REQ_CANCEL, .scope = s};
    return submit(tok, &r);
}

static void req_finish(nest_token *tok, struct treq *r, int status) {
    pthread_mutex_lock(&tok->mu);
    r->status = status;
    r->done = 1;
    pthread_cond_broadcast(&tok->cv);
    pthread_mutex_unlock(&tok->mu); /* r may be gone from here on */
}

static int runner(void *arg) {
    struct treq *r = arg;
    r->rc = r->fn(r->arg); /* r stays valid: its thread waits for done */
    req_finish(r->tok, r, 0);
    return 0;
}

/* Starts a system task for r; returns 0 or -ENOMEM. */
static int spawn_runner(struct nest__rt *rt, struct treq *r) {
    nest_task *t = nest__task_new(rt, runner, r, "nest_token_run", "nest_token_run", 0, 0);
    if (!t) return -ENOMEM;
    t->nursery = NULL;
    t->locals = NULL;
    nest__scope_link(&t->root, &rt->run_scope);
    rt->nsystem++;
    nest__schedule_new(rt, t);
    return 0;
}

static void token_drain(struct nest__rt *rt, nest_token *tok) {
    pthread_mutex_lock(&tok->mu);
    struct treq *r = tok->head;
    tok->head = tok->tail = NULL;
    int foreign = tok->refs > 1;
    pthread_mutex_unlock(&tok->mu);
    if (tok->rt_counted && !foreign) {
        tok->rt_counted = 0;
        foreign_done(rt);
    }
    while (r) {
        struct treq *next = r->next;
        if (r->kind == REQ_CANCEL) {
            nest__scope_cancel(rt, r->scope, 0);
            req_finish(tok, r, 0);
        } else if (spawn_runner(rt, r) < 0) {
            req_finish(tok, r, -ENOMEM);
        }
        r = next;
    }
}

void nest__token_close(struct nest__rt *rt) {
    nest_token *tok = rt->token;
    if (!tok) return;
    token_drain(rt, tok); /* requests that arrived before the end still run */
    pthread_mutex_lock(&tok->mu);
    tok->closed = 1;
    for (struct treq *r = tok->head; r; r = r->next) { /* none, but be safe */
        r->status = NEST_ECLOSED;
        r->done = 1;
    }
    tok->head = tok->tail = NULL;
    pthread_cond_broadcast(&tok->cv);
    tok->rt = NULL;
    int left = --tok->refs;
    pthread_mutex_unlock(&tok->mu);
    if (tok->rt_counted) {
        tok->rt_counted = 0;
        foreign_done(rt);
    }
    rt->token = NULL;
    if (left == 0) token_free(tok);
}
