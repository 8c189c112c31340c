/*
 * lib/ctx_ucontext.c - the portable context backend: getcontext,
 * makecontext and swapcontext.
 *
 * Used where there is no assembly backend (NEST_CTX_ASM undefined); it is a
 * complete implementation of lib/ctx.h by itself and compiles to nothing in
 * an assembly build.  It is slower than the assembly (swapcontext makes a
 * sigprocmask system call per switch) but needs nothing beyond POSIX.1-2001.
 *
 * A made context keeps its ucontext_t, together with its entry function, in
 * a `struct top` at the top of its stack; the main context keeps its
 * ucontext_t in nest__ctx.own.  makecontext() can only pass int arguments,
 * so the fresh context's start function receives the address of its
 * nest__ctx as two 32-bit halves, which works for any pointer width up to
 * 64 bits.
 *
 * Sanitizers: the same fiber annotations as lib/ctx_common.c.  The context
 * a switch comes from is handed to the resumed side through a thread-local
 * (swapcontext has no way to pass a value), so that ASan can learn the main
 * stack's bounds.  ASan's swapcontext interceptor clears the shadow of the
 * whole target stack named in uc_stack on every switch, which would erase
 * the redzones of the target's live frames; uc_stack is therefore emptied
 * once makecontext has used it, and make clears a fresh stack's shadow
 * itself.
 */
#if !defined(NEST_CTX_ASM)

#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif

#include "ctx.h"

#include <stdint.h>
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

/* What a made context keeps at the top of its stack. */
struct top {
    ucontext_t uc;
    void (*entry)(void);
};

#if defined(NEST_CTX_ASAN)
/* The context that is switching away, for the side that resumes. */
static _Thread_local nest__ctx *switching_from;
#endif

/* Runs in self right after each switch into it.  See after_switch in
 * lib/ctx_common.c. */
static void after_switch(nest__ctx *self) {
#if defined(NEST_CTX_ASAN)
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(self->asan_fake, &lo, &size);
    self->asan_fake = NULL;
    nest__ctx *from = switching_from;
    if (from && from->stack_size == 0) {
        from->stack_lo = (void *)lo;
        from->stack_size = size;
    }
#else
    (void)self;
#endif
}

/* Every fresh context starts here; hi and lo are the halves of its
 * nest__ctx's address. */
static void ctx_start(int hi, int lo) {
    uintptr_t addr = ((uintptr_t)(unsigned)hi << 16 << 16) | (uintptr_t)(unsigned)lo;
    nest__ctx *self = (nest__ctx *)addr;
    after_switch(self);
    ((struct top *)self->uc)->entry();
    static const char msg[] = "nest: a context's entry function returned; a task must leave "
                              "its stack with nest__ctx_exit_to()\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    abort();
}

void nest__ctx_init_main(nest__ctx *c) {
    memset(c, 0, sizeof *c);
    c->uc = &c->own;
#if defined(NEST_CTX_TSAN)
    c->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void nest__ctx_make(nest__ctx *c, void *lo, size_t size, void (*entry)(void)) {
    uintptr_t hi = ((uintptr_t)lo + size - sizeof(struct top)) & ~(uintptr_t)63;
    struct top *t = (struct top *)hi;
    c->uc = &t->uc;
    c->stack_lo = lo;
    c->stack_size = size;
    c->asan_fake = NULL;
    c->tsan_fiber = NULL;
    c->valgrind_id = 0;
#if defined(NEST_CTX_ASAN)
    __asan_unpoison_memory_region(lo, size);
#endif
#if defined(NEST_CTX_TSAN)
    c->tsan_fiber = __tsan_create_fiber(0);
#endif
#if defined(NEST_CTX_VALGRIND)
    c->valgrind_id = VALGRIND_STACK_REGISTER(lo, (char *)lo + size);
#endif
    t->entry = entry;
    /* getcontext cannot fail on an initialised ucontext_t in any libc we
     * know; if it did, makecontext would start garbage, so abort. */
    if (getcontext(&t->uc) != 0) abort();
    t->uc.uc_stack.ss_sp = lo;
    t->uc.uc_stack.ss_size = (size_t)(hi - (uintptr_t)lo);
    t->uc.uc_link = NULL;
    uintptr_t self = (uintptr_t)c;
    makecontext(&t->uc, (void (*)(void))ctx_start, 2, (int)(unsigned)(self >> 16 >> 16),
                (int)(unsigned)(self & 0xffffffffu));
    /* makecontext has built the first frame; see the file comment. */
    t->uc.uc_stack.ss_sp = NULL;
    t->uc.uc_stack.ss_size = 0;
}

void nest__ctx_switch(nest__ctx *from, nest__ctx *to) {
#if defined(NEST_CTX_ASAN)
    switching_from = from;
    __sanitizer_start_switch_fiber(&from->asan_fake, to->stack_lo, to->stack_size);
#endif
#if defined(NEST_CTX_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    /* The main context's own ucontext_t is saved here too; a made context's
     * first frame is no longer needed once it has started, so its
     * ucontext_t at the stack top is reused for its saves. */
    if (swapcontext(from->uc, to->uc) != 0) abort();
    after_switch(from);
}

void nest__ctx_exit_to(nest__ctx *from, nest__ctx *to) {
    (void)from;
#if defined(NEST_CTX_ASAN)
    switching_from = from;
    __sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
#endif
#if defined(NEST_CTX_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    setcontext(to->uc);
    abort();
}

void nest__ctx_destroy(nest__ctx *c) {
#if defined(NEST_CTX_TSAN)
    if (c->tsan_fiber && c->stack_size != 0) __tsan_destroy_fiber(c->tsan_fiber);
    c->tsan_fiber = NULL;
#endif
#if defined(NEST_CTX_VALGRIND)
    if (c->valgrind_id) VALGRIND_STACK_DEREGISTER(c->valgrind_id);
#endif
    c->valgrind_id = 0;
}

#else

/* The assembly backends use lib/ctx_common.c; this keeps the translation
 * unit non-empty, as ISO C requires. */
typedef int nest__ctx_ucontext_unused;

#endif
