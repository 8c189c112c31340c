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
 *    or, once DONE, the done list until the runtime reaps it - or, if its
 *    caller spins for it (job->spinning, under mu), that caller, which takes
 *    it back itself and is never woken through the loop.  rt->nforeign
 *    counts jobs submitted and not yet reaped or withdrawn: while it is not
 *    zero the runtime is not deadlocked and the loop's async watcher is
 *    referenced, so that a blocking poll waits for the completion.
 *  - At most pool->limit jobs run at once; queued jobs start in FIFO order.
 *  - Ownership of arg: the caller keeps it unless the call returns
 *    -ECANCELED; then, if the job has a release function, the pool calls
 *    release(arg) exactly once, on the runtime's thread, after fn returned
 *    (or at once if fn never ran): in reap(), from the scheduler's poll or,
 *    for a job finishing while nest_run ends, from nest__thread_close after
 *    the workers are joined.  So an abandoned job's buffers are freed
 *    through the allocator hook on the runtime's thread, never on a worker.
 *  - Spinning is bounded (WORKER_SPIN, CALLER_SPIN): an idle pool sleeps.
 *  - Workers never call into the runtime except nest__loop_wakeup()
 *    (ev_async_send, thread-safe, after mu is released) after setting
 *    rt->foreign_req; the scheduler sees the flag at its next pass
 *    (nest__foreign_drain) and wakes the tasks.  nest_run joins every worker before it closes the
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
    struct job *next;  /* mu: in the queue or the done list */
    _Atomic int state; /* enum JOB_*; written under mu, read by a spinning caller */
    int (*fn)(void *);
    void *arg;
    void (*release)(void *); /* called with arg when the caller gives it up */
    int rc;                  /* mu: fn's result once DONE */
    nest_task *task;         /* the waiting task; NULL once abandoned */
    int *result;             /* where to store rc (the task's memory) */
    int cancelled;           /* wait mode: cancellation was refused */
    int spinning;            /* mu: the caller spins for it: leave it off the done list */
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
    int nspinning;                /* mu: idle workers spinning, not asleep */
    int running;                  /* mu: RUNNING jobs */
    int queued;                   /* mu: QUEUED jobs */
    _Atomic int pending;          /* queued, for spinning workers (stored under mu) */
    int closing;                  /* mu: nest_run is ending */
    unsigned long long completed; /* mu */
    nest_time idle_timeout;
    unsigned spin_skip, spin_skipped; /* runtime thread: the caller's spin back-off */
};

/* ---- bounded spinning ----------------------------------------------------
 *
 * A round trip through the pool is two cross-thread wake-ups (the worker's
 * condition variable, the runtime's epoll_wait), and on a virtual machine
 * each costs a sleeping vCPU's wake-up: 10-50 us.  For short jobs both sides
 * spin briefly instead: a worker that finished a job watches the queue for
 * WORKER_SPIN before it sleeps, and a caller with nothing else to run
 * watches its job for CALLER_SPIN before it parks (see nest_to_thread).
 * Both spins are bounded, so an idle pool sleeps after at most
 * WORKER_SPIN of CPU per job. */
#define WORKER_SPIN NEST_USEC(20)
#define CALLER_SPIN NEST_USEC(20)
#define TOKEN_SPIN NEST_USEC(50) /* nest_token_run's requester, see submit() */
#define CALLER_SPIN_SKIP_MAX 63u /* chances skipped after misses: fn is slow */
#define CALLER_SPIN_SKIP_CPU 7u  /* ... the job did not even start */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static nest_time mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nest_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until *word is at least want or `budget` has passed; returns
 * whether it got there.  Reads the clock once per 32 pauses. */
static int spin_for(_Atomic int *word, int want, nest_time budget) {
    nest_time until = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) >= want) return 1;
        cpu_relax();
        if ((i & 31) == 31) {
            nest_time now = mono_now();
            if (!until)
                until = now + budget;
            else if (now >= until)
                return 0;
        }
    }
}

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

/* mu held.  Whether a worker may take the queue's head now. */
static int can_start(const struct pool *pl) { return pl->q_head && pl->running < pl->limit; }

/* mu held.  Removes and returns the queue's head. */
static struct job *dequeue(struct pool *pl) {
    struct job *j = pl->q_head;
    pl->q_head = j->next;
    if (!pl->q_head) pl->q_tail = NULL;
    pl->queued--;
    atomic_store_explicit(&pl->pending, pl->queued, memory_order_relaxed);
    return j;
}

/* mu held, returns with mu held.  Waits for a job the worker may start, or
 * until closing or the idle timeout: spins first, then sleeps on cv.
 * Returns whether there is one. */
static int wait_for_job(struct pool *pl) {
    if (!can_start(pl) && !pl->closing) {
        pl->nspinning++;
        pthread_mutex_unlock(&pl->mu);
        spin_for(&pl->pending, 1, WORKER_SPIN);
        pthread_mutex_lock(&pl->mu);
        pl->nspinning--;
    }
    struct timespec until;
    nest_time t = mono_now() + pl->idle_timeout;
    until.tv_sec = (time_t)(t / 1000000000);
    until.tv_nsec = (long)(t % 1000000000);
    int timed_out = 0;
    while (!can_start(pl) && !pl->closing && !timed_out)
        timed_out = pthread_cond_timedwait(&pl->cv, &pl->mu, &until) != 0;
    return can_start(pl);
}

static void *worker_main(void *p) {
    struct worker *w = p;
    struct pool *pl = w->pool;
    struct nest__rt *rt = pl->rt;
    pthread_mutex_lock(&pl->mu);
    while (wait_for_job(pl)) {
        struct job *j = dequeue(pl);
        j->state = JOB_RUNNING;
        pl->running++;
        pl->nidle--;
        pthread_mutex_unlock(&pl->mu);
        int rc = j->fn(j->arg);
        pthread_mutex_lock(&pl->mu);
        j->rc = rc;
        pl->running--;
        pl->nidle++;
        pl->completed++;
        int wake = !j->spinning;
        if (wake) { /* for reap(); a spinning caller takes it itself */
            j->next = NULL;
            if (pl->d_tail)
                pl->d_tail->next = j;
            else
                pl->d_head = j;
            pl->d_tail = j;
        }
        atomic_store_explicit(&j->state, JOB_DONE, memory_order_release);
        pthread_mutex_unlock(&pl->mu); /* j may be freed from here on */
        if (wake) {
            /* Outside mu, so that the woken runtime does not block on it at
             * once.  Safe: nest__thread_close joins this thread before the
             * loop is closed, and the wake-up comes before the join. */
            atomic_store_explicit(&rt->foreign_req, 1, memory_order_release);
            nest__loop_wakeup(rt);
        }
        pthread_mutex_lock(&pl->mu);
    }
    /* Exit (closing or idle too long): move to the dead list, which the
     * runtime joins. */
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

/* Frees a job record that is no longer in any list, first handing arg to
 * release if the caller gave it up (release_arg).  Runtime thread. */
static void job_free(struct nest__rt *rt, struct job *j, int release_arg) {
    if (release_arg && j->release) j->release(j->arg);
    nest__free(j, sizeof *j);
    foreign_done(rt);
}

/* Hands finished jobs to their tasks; releases the arguments of abandoned
 * ones.  Runtime thread. */
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
        int gave_up = !j->task || j->cancelled; /* the call returns -ECANCELED */
        if (j->task) {
            if (j->result) *j->result = j->rc;
            j->task->wake_ptr = NULL;
            nest__wake(rt, j->task, j->cancelled ? -ECANCELED : 0);
        }
        job_free(rt, j, gave_up);
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
        atomic_store_explicit(&pl->pending, pl->queued, memory_order_relaxed);
        pthread_mutex_unlock(&pl->mu);
        job_free(rt, j, 1);
        return 0;
    }
    pthread_mutex_unlock(&pl->mu);
    if (t->wake_val & NEST_THREAD_ABANDON) { /* reap() frees it when it finishes */
        j->task = NULL;
        j->result = NULL;
        return 0;
    }
    j->cancelled = 1; /* wait for fn: it may use arg, on the task's stack */
    return 1;
}

/* The caller spins for its job (see "bounded spinning") only when no other
 * task is runnable - the runtime would go idle anyway - and a worker is
 * spinning, free for this job: that worker is on a CPU and starts the job
 * at once, whereas waking a sleeping one takes longer than the spin.  And
 * not while recent spins kept missing: a job that blocks (a file read, a
 * lookup) or a worker that lost its CPU to other processes would only waste
 * the spin.  After a miss the next 1, 3, 7, ... such chances are skipped (up
 * to 63 when fn was still running, 7 when the job had not even started: a
 * busy machine changes quickly); a hit resets the back-off. */
/* mu held. */
static int caller_should_spin(struct nest__rt *rt, struct pool *pl) {
    if (rt->runq_head || pl->nspinning <= pl->queued || pl->running + pl->queued >= pl->limit)
        return 0;
    if (pl->spin_skipped < pl->spin_skip) {
        pl->spin_skipped++;
        return 0;
    }
    pl->spin_skipped = 0;
    return 1;
}

/* The spin of nest_to_thread: returns 1 if the job finished and was taken
 * back (its result stored and its record freed), else 0 with the job left
 * for reap().  Runtime thread, mu not held. */
static int caller_spin(struct nest__rt *rt, struct pool *pl, struct job *j, int *result) {
    spin_for(&j->state, JOB_DONE, CALLER_SPIN);
    pthread_mutex_lock(&pl->mu);
    int state = j->state; /* decided under mu: see worker_main */
    if (state != JOB_DONE) j->spinning = 0;
    pthread_mutex_unlock(&pl->mu);
    if (state != JOB_DONE) { /* fn is slow, or the worker lost its CPU */
        unsigned max = state == JOB_RUNNING ? CALLER_SPIN_SKIP_MAX : CALLER_SPIN_SKIP_CPU;
        pl->spin_skip = pl->spin_skip * 2 + 1;
        if (pl->spin_skip > max) pl->spin_skip = max;
        return 0;
    }
    pl->spin_skip = 0;
    if (result) *result = j->rc;
    job_free(rt, j, 0);
    return 1;
}

int nest_to_thread_owned(int (*fn)(void *arg), void *arg, void (*release)(void *arg),
                         int *result, unsigned flags) {
    nest_task *self = nest__task_self("nest_to_thread");
    struct nest__rt *rt = nest__rt_cur;
    if (!fn || (flags & ~(unsigned)NEST_THREAD_ABANDON)) return -EINVAL;
    if (nest__cancelled_at(self->cur)) {
        if (release) release(arg); /* -ECANCELED: the call took arg */
        return -ECANCELED;
    }
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
    j->release = release;
    j->task = self;
    j->result = result;
    j->state = JOB_QUEUED;
    pthread_mutex_lock(&pl->mu);
    j->spinning = caller_should_spin(rt, pl);
    if (pl->q_tail)
        pl->q_tail->next = j;
    else
        pl->q_head = j;
    pl->q_tail = j;
    pl->queued++;
    atomic_store_explicit(&pl->pending, pl->queued, memory_order_release);
    if (workers_wanted(pl) > 0) {
        int rc = spawn_worker(pl, w);
        if (rc < 0) {
            nest__free(w, sizeof *w);
            if (pl->nworkers == 0) { /* nobody would ever run it */
                pl->q_head = pl->q_tail = NULL;
                pl->queued = 0;
                atomic_store_explicit(&pl->pending, 0, memory_order_relaxed);
                pthread_mutex_unlock(&pl->mu);
                nest__free(j, sizeof *j);
                return -EAGAIN;
            }
        }
        w = NULL;
    }
    /* A spinning worker will see the job without a signal; a signal would
     * wake a sleeping one for nothing. */
    if (pl->queued > pl->nspinning) pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    if (w) nest__free(w, sizeof *w);
    foreign_add(rt);
    if (j->spinning && caller_spin(rt, pl, j, result)) {
        /* Finished while nothing else could run.  Still yield once, as a
         * call that blocked would have: the scheduler polls I/O and other
         * tasks get their turn.  No cancellation can have arrived: nothing
         * ran since the check above. */
        nest__yield(rt, self);
        return 0;
    }
    self->wake_val = (int)flags; /* abort_job reads the mode here */
    return nest__park_on(rt, self, abort_job, NEST__BLOCK_THREAD, j);
}

int nest_to_thread(int (*fn)(void *arg), void *arg, int *result, unsigned flags) {
    return nest_to_thread_owned(fn, arg, NULL, result, flags);
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
    _Atomic int done; /* written under mu; the requester may spin on it */
};

struct nest_token {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* requesters wait here */
    int refs;
    int closed;               /* nest_run has ended (or is ending) */
    struct nest__rt *rt;      /* valid while !closed */
    pthread_t rt_thread;      /* the thread that runs rt */
    struct treq *head, *tail; /* pending requests, FIFO */
    int rt_counted;           /* runtime thread only: counted in nforeign */
    unsigned spin_skip;       /* requests left that do not spin (back-off) */
    unsigned spin_backoff;    /* how many to skip after the next miss */
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
        tok->rt_thread = pthread_self();
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
    /* From the runtime's own thread the call would wait for itself: from a
     * task, or from host code between a guest runtime's slices. */
    if (nest__rt_cur == tok->rt || pthread_equal(pthread_self(), tok->rt_thread)) {
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
    /* A function that returns at once is usually done within a few
     * microseconds of the runtime waking: watch for that, without the
     * lock, before sleeping on the condition variable (which would cost
     * the runtime's thread a futex wake and this one a reschedule).  A spin
     * that misses (fn blocks, or the runtime is busy) makes the next 1, 3,
     * 7, ... requests (up to 63) sleep at once, as nest_to_thread's
     * caller does; a hit resets that. */
    if (tok->spin_skip) {
        tok->spin_skip--;
    } else {
        pthread_mutex_unlock(&tok->mu);
        int hit = spin_for(&r->done, 1, TOKEN_SPIN);
        pthread_mutex_lock(&tok->mu);
        if (hit) {
            tok->spin_backoff = 0;
        } else {
            tok->spin_backoff = tok->spin_backoff * 2 + 1;
            if (tok->spin_backoff > CALLER_SPIN_SKIP_MAX) tok->spin_backoff = CALLER_SPIN_SKIP_MAX;
            tok->spin_skip = tok->spin_backoff;
        }
    }
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
    return nest__task_new_system(rt, runner, r, "nest_token_run") ? 0 : -ENOMEM;
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
