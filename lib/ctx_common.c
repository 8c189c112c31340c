/*
 * lib/ctx_common.c - the C half of the assembly context backends.
 *
 * lib/ctx_x86_64.S and lib/ctx_aarch64.S provide two primitives: a raw
 * register swap and the writer of a fresh context's first frame.  This file
 * wraps them into the lib/ctx.h contract and owns everything that needs C:
 * the sanitizer fiber annotations, the valgrind stack registration, and the
 * C function every fresh context starts in (ctx_start), which finishes the
 * ASan switch before anything else runs on the new stack.
 *
 * Without sanitizers nest__ctx_switch() is the inline call in lib/ctx.h and
 * this file only adds make, exit_to, init_main and destroy.  In the ucontext
 * build (no NEST_CTX_ASM) this file compiles to nothing; lib/ctx_ucontext.c
 * is complete by itself.
 *
 * Invariant (ASan builds): every resumption of a context, including the
 * first one of a fresh context, calls __sanitizer_finish_switch_fiber before
 * any instrumented code runs, and every switch calls
 * __sanitizer_start_switch_fiber right before the raw swap.  Each switch
 * passes its `from` through the swap, so the side that resumes knows which
 * context it came from; that is how the main context's bounds, which only
 * ASan knows, are learned.
 */
#if defined(NEST_CTX_ASM)

#include "ctx.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(NEST_CTX_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(NEST_CTX_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define NEST_CTX_VALGRIND 1
#endif
#endif

typedef void ctx_start_fn(nest__ctx *self, nest__ctx *from, void (*entry)(void));

/* Writes the first frame of a fresh context below hi; the first swap into it
 * calls start(self, from, entry) from the assembly trampoline. */
void *nest__ctx_make_raw(void *hi, ctx_start_fn *start, nest__ctx *self, void (*entry)(void));

/* Runs in self right after each switch into it; from is the context that
 * switched.  Finishes ASan's switch and, the first time the main context is
 * left, records its bounds: ASan knows the thread stack, we do not, and the
 * switch back into main must name them. */
static inline void after_switch(nest__ctx *self, nest__ctx *from) {
#if defined(NEST_CTX_ASAN)
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(self->asan_fake, &lo, &size);
    self->asan_fake = NULL;
    if (from && from->stack_size == 0) {
        from->stack_lo = (void *)lo;
        from->stack_size = size;
    }
#else
    (void)self;
    (void)from;
#endif
}

/* Every fresh context starts here, on its own stack.  entry must leave with
 * nest__ctx_exit_to(); the trampoline aborts if this returns, but a message
 * first makes the bug findable. */
static void ctx_start(nest__ctx *self, nest__ctx *from, void (*entry)(void)) {
    after_switch(self, from);
    entry();
    static const char msg[] = "nest: a context's entry function returned; a task must leave "
                              "its stack with nest__ctx_exit_to()\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    abort();
}

void nest__ctx_init_main(nest__ctx *c) {
    memset(c, 0, sizeof *c);
#if defined(NEST_CTX_TSAN)
    c->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void nest__ctx_make(nest__ctx *c, void *lo, size_t size, void (*entry)(void)) {
    c->stack_lo = lo;
    c->stack_size = size;
    c->asan_fake = NULL;
    c->tsan_fiber = NULL;
    c->valgrind_id = 0;
#if defined(NEST_CTX_ASAN)
    /* A reused stack still carries the redzone poison of the frames its last
     * task never returned from; the new task's frames must not inherit it. */
    __asan_unpoison_memory_region(lo, size);
#endif
#if defined(NEST_CTX_TSAN)
    c->tsan_fiber = __tsan_create_fiber(0);
#endif
#if defined(NEST_CTX_VALGRIND)
    c->valgrind_id = VALGRIND_STACK_REGISTER(lo, (char *)lo + size);
#endif
    c->sp = nest__ctx_make_raw((char *)lo + size, ctx_start, c, entry);
}

#if defined(NEST_CTX_ASAN) || defined(NEST_CTX_TSAN)
void nest__ctx_switch(nest__ctx *from, nest__ctx *to) {
#if defined(NEST_CTX_ASAN)
    __sanitizer_start_switch_fiber(&from->asan_fake, to->stack_lo, to->stack_size);
#endif
#if defined(NEST_CTX_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    nest__ctx *prev = nest__ctx_swap_raw(&from->sp, to->sp, from);
    after_switch(from, prev);
}
#endif

void nest__ctx_exit_to(nest__ctx *from, nest__ctx *to) {
#if defined(NEST_CTX_ASAN)
    /* NULL: from's fake stack dies with it. */
    __sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
#endif
#if defined(NEST_CTX_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    nest__ctx_swap_raw(&from->sp, to->sp, from);
    /* Nothing ever switches back to a context that exited. */
    abort();
}

void nest__ctx_destroy(nest__ctx *c) {
#if defined(NEST_CTX_TSAN)
    /* The main context's fiber is the thread's own and is not ours to
     * destroy; only a made context has a stack size (ASan, which stores the
     * main stack's size, cannot be combined with TSan). */
    if (c->tsan_fiber && c->stack_size != 0) __tsan_destroy_fiber(c->tsan_fiber);
    c->tsan_fiber = NULL;
#endif
#if defined(NEST_CTX_VALGRIND)
    if (c->valgrind_id) VALGRIND_STACK_DEREGISTER(c->valgrind_id);
#endif
    c->valgrind_id = 0;
    (void)c;
}

#else

/* The ucontext backend (lib/ctx_ucontext.c) needs nothing from here; this
 * keeps the translation unit non-empty, as ISO C requires. */
typedef int nest__ctx_common_unused;

#endif
