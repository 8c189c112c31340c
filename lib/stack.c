/*
 * lib/stack.c - task stacks: slabs, guard pages, the stack cache, and the
 * SIGSEGV handler that reports overflows.  The contract is lib/stack.h.
 *
 * A slab is one mmap of K units; a unit is a guard page followed by one
 * stack, so every stack top is page-aligned and a task that uses less than a
 * page of stack touches exactly one page.  K is chosen so a slab is about
 * SLAB_BYTES (8 MiB; 120 stacks of the default 64 KiB), and at least 1.
 * The stack descriptors live in the slab's metadata block (allocated through
 * nest__alloc), never on the stacks, so handing a stack out touches nothing
 * on it but the canary of an unguarded stack.
 *
 * Free stacks are kept per slab, in a LIFO list, and each size class keeps
 * its slabs that have free stacks in a list ordered by the last put, most
 * recent first.  Getting takes the first free stack of the first slab, so
 * the most recently freed stack is reused first, and a put is a handful of
 * pointer operations with no system call.
 *
 * Memory goes back to the system in nest__stack_trim(), which the scheduler
 * calls when it is idle, at most once a second: a slab that was entirely
 * free at the previous trim and still is (no get took a stack from it in
 * between) is unmapped, with its guards and its metadata, as long as its
 * class keeps at least a slab's worth of free stacks elsewhere.  Never in a
 * put: a burst of exits (cancelling 100,000 tasks) would otherwise pay a
 * munmap per slab at once, and the next burst would fault every page in
 * again.  The slack of a whole slab is hysteresis against mapping and
 * unmapping at a boundary.  Because gets prefer the most recently put-to
 * slab, a slab that empties stays empty while others have room.
 *
 * Guard modes, chosen once per process (guard_init):
 *   madvise   MADV_GUARD_INSTALL on each guard page: no VMA split, so no
 *             limit.  Used when a probe shows the kernel supports it.
 *   mprotect  PROT_NONE on each guard page, which costs two map entries.
 *             The whole process may spend a quarter of vm.max_map_count
 *             (65530 if unreadable) on them, counted in map entries by an
 *             atomic budget; beyond it, stacks are unguarded.
 *   none      no guards; each stack gets a canary instead.
 * An unguarded stack (in any mode, e.g. when a guard system call fails)
 * carries a canary: NEST__STACK_CANARY_BYTES of a known pattern at lo,
 * written when it is handed out and checked by nest__stack_check/put.
 * The environment variable NEST_STACK_GUARD=auto|madvise|mprotect|none,
 * read once per process, forces a mode, so tests can exercise each on one
 * machine (madvise falls back to mprotect where unsupported; the mode in
 * force is nest__stack_guard_mode()).
 *
 * The overflow handler: SIGSEGV with SA_ONSTACK|SA_SIGINFO, installed once
 * per process; each thread that calls nest__stack_overflow_handler_install
 * gets a 64 KiB alternate signal stack unless it already has one (ASan, for
 * one, gives every thread its own).  The handler asks the function set with
 * nest__stack_set_fault_owner whether the address is in the current task's
 * guard page; if so it writes a report with write(2) and aborts, otherwise
 * it hands the signal to the handler that was there before.
 *
 * Limitation: a single frame larger than a page can jump over the guard
 * into the stack below; build with -fstack-clash-protection (the default on
 * several distributions) to have such frames probe every page.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "stack.h"

#include "alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

/* About how large a slab is; see the file comment. */
#define SLAB_BYTES ((size_t)8 << 20)

/* Bytes of the alternate signal stack each thread gets. */
#define ALTSTACK_BYTES ((size_t)64 << 10)

#define CANARY_WORDS (NEST__STACK_CANARY_BYTES / 8)
#define CANARY 0x6e6573742d73746bULL /* "nest-stk" */

struct nest__slab {
    struct nest__slab *next, *prev;   /* the pool's list of every slab */
    struct nest__slab *fnext, *fprev; /* its class's list of slabs with free
                                         stacks, most recently put-to first;
                                         unlinked while full */
    struct nest__sizeclass *cls;      /* the size class it serves */
    char *map;                        /* the mapping: nstacks units */
    size_t maplen;                    /* bytes of the mapping */
    nest__stack *free;                /* its free stacks, LIFO */
    size_t nstacks;                   /* K */
    size_t nfree;                     /* stacks on `free` */
    int idle;                         /* entirely free at the last trim and
                                         untouched by gets since */
    long budget;                      /* map entries it holds of mprotect_budget */
    nest__stack stacks[];             /* stacks[i] is unit i of the mapping */
};

struct nest__sizeclass {
    struct nest__sizeclass *next; /* the pool's list of classes */
    size_t size;                  /* usable bytes of each stack */
    size_t per_slab;              /* K */
    size_t nfree;                 /* free stacks in all its slabs */
    struct nest__slab *partial;   /* slabs with free stacks (fnext) */
};

/* Process-wide state, set once by guard_init. */
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_mode;
static size_t page_size;
/* Map entries still available to mprotect guards, process-wide. */
static atomic_long mprotect_budget;

/* The test hook of nest__stack_fail_after: slab mappings left before they
 * fail, or negative for never. */
static atomic_long fail_after = -1;

static _Atomic(nest__stack_fault_owner_fn *) fault_owner;

/* Reads a small non-negative integer from a /proc file, or returns dflt. */
static long read_long(const char *path, long dflt) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dflt;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return dflt;
    buf[n] = 0;
    char *end;
    long v = strtol(buf, &end, 10);
    return end == buf || v <= 0 ? dflt : v;
}

/* Does MADV_GUARD_INSTALL work on private anonymous memory here?  Older
 * kernels reject it (EINVAL); some emulators (qemu-user) accept any advice
 * and ignore it, which would leave stacks with neither a guard nor a
 * canary.  So after installing one, have the kernel read the page: a guard
 * makes that fail with EFAULT, without a signal. */
static int probe_guard_install(void) {
    char *m = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return 0;
    int ok = madvise(m, page_size, MADV_GUARD_INSTALL) == 0;
    int fds[2];
    if (ok && pipe(fds) == 0) {
        ok = write(fds[1], m, 1) < 0 && errno == EFAULT;
        close(fds[0]);
        close(fds[1]);
    }
    munmap(m, 2 * page_size);
    return ok;
}

static void guard_init(void) {
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    atomic_store(&mprotect_budget, read_long("/proc/sys/vm/max_map_count", 65530) / 4);
    const char *force = getenv("NEST_STACK_GUARD");
    if (force && strcmp(force, "none") == 0)
        guard_mode = NEST__STACK_GUARD_NONE;
    else if (force && strcmp(force, "mprotect") == 0)
        guard_mode = NEST__STACK_GUARD_MPROTECT;
    else
        guard_mode = probe_guard_install() ? NEST__STACK_GUARD_MADVISE : NEST__STACK_GUARD_MPROTECT;
}

int nest__stack_guard_mode(void) {
    pthread_once(&guard_once, guard_init);
    return guard_mode;
}

void nest__stack_fail_after(long n) {
    atomic_store(&fail_after, n < 0 ? -1 : n);
}

/* Consumes one slab mapping from the test hook; 0 if it must fail. */
static int may_map(void) {
    long n = atomic_load(&fail_after);
    while (n > 0 && !atomic_compare_exchange_weak(&fail_after, &n, n - 1)) {
    }
    return n != 0;
}

/* Makes the page at g a guard; returns 1 if it is one, 0 if the stack above
 * it must do with a canary. */
static int guard_page(struct nest__slab *slab, char *g) {
    if (guard_mode == NEST__STACK_GUARD_MADVISE && madvise(g, page_size, MADV_GUARD_INSTALL) == 0)
        return 1;
    if (guard_mode == NEST__STACK_GUARD_NONE) return 0;
    /* Either mprotect mode, or madvise failed for this page: take two map
     * entries from the budget, and give them back if mprotect fails. */
    if (atomic_fetch_sub(&mprotect_budget, 2) < 2) {
        atomic_fetch_add(&mprotect_budget, 2);
        return 0;
    }
    if (mprotect(g, page_size, PROT_NONE) != 0) {
        atomic_fetch_add(&mprotect_budget, 2);
        return 0;
    }
    slab->budget += 2;
    return 1;
}

static void write_canary(nest__stack *s) {
    uint64_t *w = s->lo;
    for (int i = 0; i < CANARY_WORDS; i++) w[i] = CANARY;
}

int nest__stack_check(const nest__stack *s) {
    if (s->guarded) return 0;
    const uint64_t *w = s->lo;
    for (int i = 0; i < CANARY_WORDS; i++)
        if (w[i] != CANARY) return -1;
    return 0;
}

int nest__stack_in_guard(const nest__stack *s, const void *addr) {
    uintptr_t a = (uintptr_t)addr, lo = (uintptr_t)s->lo;
    return s->guarded && a < lo && a >= lo - page_size;
}

void nest__stack_pool_init(nest__stack_pool *p) {
    pthread_once(&guard_once, guard_init);
    p->page = page_size;
    p->slabs = NULL;
    p->classes = NULL;
    p->nlive = 0;
}

static size_t slab_meta_bytes(size_t n) {
    return sizeof(struct nest__slab) + n * sizeof(nest__stack);
}

static void partial_push(struct nest__sizeclass *c, struct nest__slab *s) {
    s->fprev = NULL;
    s->fnext = c->partial;
    if (c->partial) c->partial->fprev = s;
    c->partial = s;
}

static void partial_unlink(struct nest__sizeclass *c, struct nest__slab *s) {
    if (s->fprev)
        s->fprev->fnext = s->fnext;
    else
        c->partial = s->fnext;
    if (s->fnext) s->fnext->fprev = s->fprev;
}

/* Maps a new slab for class c, with every stack free, and puts it first in
 * c's list.  NULL if the mapping or its metadata cannot be had. */
static struct nest__slab *slab_new(nest__stack_pool *p, struct nest__sizeclass *c) {
    if (!may_map()) return NULL;
    size_t n = c->per_slab, unit = p->page + c->size;
    struct nest__slab *s = nest__alloc(slab_meta_bytes(n));
    if (!s) return NULL;
    s->maplen = n * unit;
    s->map = mmap(NULL, s->maplen, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->map == MAP_FAILED) {
        nest__free(s, slab_meta_bytes(n));
        return NULL;
    }
    s->cls = c;
    s->nstacks = s->nfree = n;
    s->idle = 0;
    s->budget = 0;
    for (size_t i = 0; i < n; i++) {
        nest__stack *st = &s->stacks[i];
        st->lo = s->map + i * unit + p->page;
        st->size = c->size;
        st->slab = s;
        st->next = i + 1 < n ? &s->stacks[i + 1] : NULL;
        st->guarded = guard_page(s, s->map + i * unit);
    }
    s->free = &s->stacks[0];
    s->prev = NULL;
    s->next = p->slabs;
    if (p->slabs) p->slabs->prev = s;
    p->slabs = s;
    c->nfree += n;
    partial_push(c, s);
    return s;
}

/* Unmaps s and frees its metadata.  Its stacks must all be free; the caller
 * has unlinked it from its class's list. */
static void slab_free(nest__stack_pool *p, struct nest__slab *s) {
    if (s->prev)
        s->prev->next = s->next;
    else
        p->slabs = s->next;
    if (s->next) s->next->prev = s->prev;
    munmap(s->map, s->maplen);
    /* Only after the unmap: the entries are free once the VMAs are gone. */
    if (s->budget) atomic_fetch_add(&mprotect_budget, s->budget);
    nest__free(s, slab_meta_bytes(s->nstacks));
}

nest__stack *nest__stack_get(nest__stack_pool *p, size_t size) {
    if (size > SIZE_MAX / 4) return NULL; /* no such mapping; keeps the sums below exact */
    size = size ? (size + p->page - 1) / p->page * p->page : p->page;
    struct nest__sizeclass *c = p->classes;
    while (c && c->size != size) c = c->next;
    if (!c) {
        c = nest__alloc(sizeof *c);
        if (!c) return NULL;
        c->size = size;
        c->per_slab = SLAB_BYTES / (size + p->page);
        if (c->per_slab == 0) c->per_slab = 1;
        c->nfree = 0;
        c->partial = NULL;
        c->next = p->classes;
        p->classes = c;
    }
    struct nest__slab *s = c->partial;
    if (!s && !(s = slab_new(p, c))) return NULL;
    nest__stack *st = s->free;
    s->free = st->next;
    s->idle = 0;
    if (--s->nfree == 0) partial_unlink(c, s);
    c->nfree--;
    p->nlive++;
    st->next = NULL;
    if (!st->guarded) write_canary(st);
    return st;
}

int nest__stack_put(nest__stack_pool *p, nest__stack *st) {
    int rc = nest__stack_check(st);
    struct nest__slab *s = st->slab;
    struct nest__sizeclass *c = s->cls;
    st->next = s->free;
    s->free = st;
    if (s->nfree++ == 0) {
        partial_push(c, s);
    } else if (c->partial != s) {
        partial_unlink(c, s);
        partial_push(c, s);
    }
    c->nfree++;
    p->nlive--;
    return rc;
}

size_t nest__stack_trim(nest__stack_pool *p) {
    size_t released = 0;
    struct nest__slab *s = p->slabs;
    while (s) {
        struct nest__slab *next = s->next;
        struct nest__sizeclass *c = s->cls;
        if (s->nfree != s->nstacks) {
            s->idle = 0;
        } else if (!s->idle) {
            s->idle = 1; /* first seen free: release at the next trim */
        } else if (c->nfree - s->nfree >= s->nstacks) {
            partial_unlink(c, s);
            c->nfree -= s->nstacks;
            slab_free(p, s);
            released++;
        }
        s = next;
    }
    return released;
}

void nest__stack_pool_destroy(nest__stack_pool *p) {
    if (p->nlive != 0) {
        fprintf(stderr, "%s:%d: nest__stack_pool_destroy: %zu stacks are still in use\n", __FILE__,
                __LINE__, p->nlive);
        abort();
    }
    while (p->slabs) slab_free(p, p->slabs);
    while (p->classes) {
        struct nest__sizeclass *c = p->classes;
        p->classes = c->next;
        nest__free(c, sizeof *c);
    }
}

/* ---- The overflow handler. ---- */

static struct sigaction prev_segv;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_rc;
static pthread_key_t altstack_key;
static _Thread_local int altstack_ready;

void nest__stack_set_fault_owner(nest__stack_fault_owner_fn *fn) {
    atomic_store(&fault_owner, fn);
}

/* Appends s to buf[*len .. cap - 1), truncating; async-signal-safe. */
static void put_str(char *buf, size_t *len, size_t cap, const char *s) {
    while (*s && *len + 1 < cap) buf[(*len)++] = *s++;
}

static void put_num(char *buf, size_t *len, size_t cap, unsigned long long v) {
    char d[24];
    int n = 0;
    do d[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0 && *len + 1 < cap) buf[(*len)++] = d[--n];
}

static void report_overflow(const char *name, const char *file, int line, size_t size) {
    char buf[1024];
    size_t n = 0;
    put_str(buf, &n, sizeof buf, "nest: stack overflow in task '");
    put_str(buf, &n, sizeof buf, name ? name : "(unnamed)");
    put_str(buf, &n, sizeof buf, "' (spawned at ");
    put_str(buf, &n, sizeof buf, file ? file : "?");
    put_str(buf, &n, sizeof buf, ":");
    put_num(buf, &n, sizeof buf, line > 0 ? (unsigned long long)line : 0);
    put_str(buf, &n, sizeof buf, "): it used all of its ");
    put_num(buf, &n, sizeof buf, size);
    put_str(buf, &n, sizeof buf,
            "-byte stack; give it a larger stack with nest_spawn_options.stack_size or "
            "nest_run_options.stack_size\n");
    for (size_t off = 0; off < n;) {
        ssize_t w = write(2, buf + off, n - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
    int saved_errno = errno;
    nest__stack_fault_owner_fn *owner = atomic_load(&fault_owner);
    const char *name = NULL, *file = NULL;
    int line = 0;
    size_t size = 0;
    if (owner && owner(si->si_addr, &name, &file, &line, &size) == 0) {
        report_overflow(name, file, line, size);
        abort();
    }
    if (prev_segv.sa_flags & SA_SIGINFO) {
        prev_segv.sa_sigaction(sig, si, uc);
    } else if (prev_segv.sa_handler == SIG_DFL || prev_segv.sa_handler == SIG_IGN) {
        /* Returning re-executes the faulting instruction, which now meets
         * the default action (a SIGSEGV cannot be ignored usefully).  A
         * SIGSEGV sent with kill has no instruction to repeat: re-raise it;
         * it is blocked until we return. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(SIGSEGV, &dfl, NULL);
        if (si->si_code <= 0) raise(SIGSEGV);
    } else {
        prev_segv.sa_handler(sig);
    }
    errno = saved_errno;
}

static void altstack_free(void *mem) {
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    munmap(mem, ALTSTACK_BYTES);
}

static void handler_init(void) {
    if (pthread_key_create(&altstack_key, altstack_free) != 0) {
        handler_rc = -ENOMEM;
        return;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_ONSTACK | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &prev_segv) != 0) handler_rc = -errno;
}

int nest__stack_overflow_handler_install(void) {
    pthread_once(&guard_once, guard_init);
    pthread_once(&handler_once, handler_init);
    if (handler_rc < 0) return handler_rc;
    if (altstack_ready) return 0;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) {
        altstack_ready = 1;
        return 0;
    }
    void *mem = mmap(NULL, ALTSTACK_BYTES, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return -ENOMEM;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = mem;
    ss.ss_size = ALTSTACK_BYTES;
    if (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(altstack_key, mem) != 0) {
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, NULL);
        munmap(mem, ALTSTACK_BYTES);
        return -ENOMEM;
    }
    altstack_ready = 1;
    return 0;
}
