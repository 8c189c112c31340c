/*
 * lib/stack.h - task stacks: slabs, guard pages, the stack cache, overflow
 * reports.
 *
 * Stacks are carved from large anonymous mappings ("slabs") reserved with
 * MAP_NORESERVE, so a stack costs address space until a task touches its
 * pages.  Each stack has a guard page below it.  Where the kernel supports
 * MADV_GUARD_INSTALL (Linux 6.13+), guards are page-table markers that do
 * not split the mapping, so a million guarded stacks cost a few hundred
 * kernel map entries.  Elsewhere guards are made with mprotect, which splits
 * the mapping (two map entries per stack); those are limited to a budget of
 * a quarter of vm.max_map_count shared by the whole process, and stacks
 * beyond the budget have no guard page but a canary word at their low end,
 * checked whenever their task switches out or finishes.
 *
 * A pool hands out stacks of one runtime (one thread, no locking).  Freed
 * stacks are reused last-in first-out, because the most recently used stack
 * is the one whose pages are still committed and cached.
 *
 * A SIGSEGV handler on an alternate signal stack (installed once per
 * process, chaining to any previous handler; each thread that runs a runtime
 * gets its own alternate stack) recognises a fault in the current task's
 * guard page and prints the task's name, spawn site and stack size before
 * aborting, instead of leaving a bare segfault.
 */
#ifndef NEST_LIB_STACK_H
#define NEST_LIB_STACK_H

#include <stddef.h>

/* One stack.  Descriptors live in their slab's metadata, not on the stack,
 * so handing a stack out touches none of its pages. */
typedef struct nest__stack {
    void *lo;                 /* lowest usable address */
    size_t size;              /* usable bytes (page multiple) */
    struct nest__stack *next; /* free list link while free */
    struct nest__slab *slab;  /* owning slab */
    int guarded;              /* 1: guard page below lo; 0: canary at lo
                                 (its NEST__STACK_CANARY_BYTES are the
                                 only bytes of an unguarded stack written
                                 when it is handed out) */
} nest__stack;

/* Bytes of the canary at the low end of an unguarded stack. */
#define NEST__STACK_CANARY_BYTES 32

typedef struct nest__stack_pool {
    size_t page;                     /* page size */
    struct nest__slab *slabs;        /* every slab of this pool */
    struct nest__sizeclass *classes; /* free lists, one per stack size */
    size_t nlive;                    /* stacks handed out */
} nest__stack_pool;

/* Initialises an empty pool.  Never fails (maps nothing yet). */
void nest__stack_pool_init(nest__stack_pool *p);

/* Returns a stack of at least size usable bytes (rounded up to pages), or
 * NULL if memory (mmap or the allocator hook) is exhausted. */
nest__stack *nest__stack_get(nest__stack_pool *p, size_t size);

/* Returns s to the pool.  Checks the canary of an unguarded stack first and
 * reports an overflow (returns -1) if it is damaged; 0 otherwise.  The stack
 * goes back to the pool either way (its canary is rewritten when it is next
 * handed out). */
int nest__stack_put(nest__stack_pool *p, nest__stack *s);

/* Checks the canary of an unguarded stack: 0 if intact (or guarded), -1 if
 * it was overwritten. */
int nest__stack_check(const nest__stack *s);

/* Gives memory back: unmaps the slabs that were entirely free at the
 * previous trim and still are, keeping a slab's worth of free stacks per
 * size.  Returns how many slabs were released.  The scheduler calls it when
 * idle, at most once a second; it walks every slab. */
size_t nest__stack_trim(nest__stack_pool *p);

/* Unmaps every slab and frees all metadata.  Every stack must be back
 * (aborts otherwise). */
void nest__stack_pool_destroy(nest__stack_pool *p);

/* Installs the process-wide overflow handler (once) and this thread's
 * alternate signal stack (once per thread).  Returns 0 or -ENOMEM. */
int nest__stack_overflow_handler_install(void);

/* The overflow handler asks this for the current task's identity.  Returns
 * 0 and fills the fields when addr lies in the guard page of the calling
 * thread's current task stack (nest__stack_in_guard() tells), -1 otherwise.
 * Must be async-signal-safe. */
typedef int nest__stack_fault_owner_fn(void *addr, const char **name, const char **file, int *line,
                                       size_t *size);

/* Sets the function the overflow handler asks.  NULL, the initial value,
 * claims no fault, so every SIGSEGV goes to the previous handler.
 * Process-wide; the runtime sets nest__stack_fault_owner, tests a stub. */
void nest__stack_set_fault_owner(nest__stack_fault_owner_fn *fn);

/* The runtime's fault owner (lib/task.c), a nest__stack_fault_owner_fn.
 * lib/stack.c never calls it by name, only through the pointer set above,
 * so that tests can link the library and still use a stub. */
int nest__stack_fault_owner(void *addr, const char **name, const char **file, int *line,
                            size_t *size);

/* 1 if addr lies in the guard page below the guarded stack s, else 0.
 * Async-signal-safe. */
int nest__stack_in_guard(const nest__stack *s, const void *addr);

/* The guard mode of this process, chosen once (see lib/stack.c): */
enum {
    NEST__STACK_GUARD_MADVISE = 1, /* MADV_GUARD_INSTALL markers */
    NEST__STACK_GUARD_MPROTECT,    /* mprotect while the budget lasts, then
                                      canaries */
    NEST__STACK_GUARD_NONE         /* canaries only */
};
int nest__stack_guard_mode(void);

/* Test hook: make the next n slab mappings succeed and every later one fail
 * (n < 0: never fail).  Used by the out-of-memory tests. */
void nest__stack_fail_after(long n);

#endif
