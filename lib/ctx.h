/*
 * lib/ctx.h - execution contexts and the switch between them.
 *
 * A context is a saved machine state on some stack.  The runtime has one
 * "main" context (the thread's own stack, where the scheduler runs) and one
 * per task.  The backend is chosen at configure time: hand-written assembly
 * for x86-64 and AArch64 (lib/ctx_x86_64.S, lib/ctx_aarch64.S, with the C
 * around them in lib/ctx_common.c), otherwise ucontext (lib/ctx_ucontext.c,
 * which is complete by itself).  NEST_CTX_ASM is defined for the assembly
 * backends.
 *
 * The switch carries the sanitizer fiber annotations (ASan's
 * __sanitizer_start/finish_switch_fiber, TSan's __tsan_switch_to_fiber) and
 * registers task stacks with valgrind, so that sanitizers and valgrind
 * understand task code.  These cost nothing in a normal build: there,
 * with an assembly backend, nest__ctx_switch() is an inline call of the
 * assembly primitive and nothing else.
 *
 * Invariants: a context is either running (on exactly one thread) or saved;
 * nest__ctx_switch() is only called from the running context `from`; a
 * context made by nest__ctx_make() starts in `entry`, which never returns
 * (a task leaves its stack with nest__ctx_exit_to(); if entry returns
 * anyway, the process aborts).
 */
#ifndef NEST_LIB_CTX_H
#define NEST_LIB_CTX_H

#include <stddef.h>

#if !defined(NEST_CTX_ASM)
#include <ucontext.h>
#endif

/* NEST_CTX_ASAN / NEST_CTX_TSAN are 1 when this translation unit is built
 * with AddressSanitizer / ThreadSanitizer (clang's __has_feature, gcc's
 * __SANITIZE_*__).  The whole library and its users must agree, since the
 * switch is inline in a normal build. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NEST_CTX_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define NEST_CTX_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(NEST_CTX_ASAN)
#define NEST_CTX_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(NEST_CTX_TSAN)
#define NEST_CTX_TSAN 1
#endif

typedef struct nest__ctx {
#if defined(NEST_CTX_ASM)
    void *sp; /* saved stack pointer; registers are on the stack */
#else
    ucontext_t *uc; /* ucontext_t lives at the top of the stack, or in
                       `own` for the main context */
    ucontext_t own;
#endif
    void *stack_lo;       /* lowest usable address of the stack */
    size_t stack_size;    /* usable bytes; 0 for the main context, except
                             that an ASan build stores the thread stack's
                             bounds here (in stack_lo too) once it has
                             learned them at the first switch away from it */
    void *asan_fake;      /* ASan fake-stack handle while switched out */
    void *tsan_fiber;     /* TSan fiber; the thread's own for main */
    unsigned valgrind_id; /* valgrind stack id, 0 if none */
} nest__ctx;

/* Initialises the main context: the thread's current stack. */
void nest__ctx_init_main(nest__ctx *c);

/* Makes c a fresh context on the stack [lo, lo + size) that will start by
 * calling entry() when first switched to.  Nothing is run here.  lo + size
 * should be 16-byte aligned (it is rounded down if not); the context writes
 * its first frame (64 to 160 bytes; a ucontext_t in the ucontext backend)
 * just below lo + size. */
void nest__ctx_make(nest__ctx *c, void *lo, size_t size, void (*entry)(void));

#if defined(NEST_CTX_ASM)
/* The assembly primitive under nest__ctx_switch(): pushes the callee-saved
 * registers (on x86-64 also the floating-point control words) on the
 * current stack, stores the stack pointer in *save_sp, loads load_sp and
 * pops the state saved there.  Returns, in the resumed context, the arg
 * that the switch into it passed (a fresh context receives it as its start
 * function's second argument).  Not for use outside lib/ctx_*. */
void *nest__ctx_swap_raw(void **save_sp, void *load_sp, void *arg);
#endif

/* Saves the running state into from and resumes to.  Returns when something
 * switches back to from. */
#if defined(NEST_CTX_ASM) && !defined(NEST_CTX_ASAN) && !defined(NEST_CTX_TSAN)
static inline void nest__ctx_switch(nest__ctx *from, nest__ctx *to) {
    nest__ctx_swap_raw(&from->sp, to->sp, from);
}
#else
void nest__ctx_switch(nest__ctx *from, nest__ctx *to);
#endif

/* Like nest__ctx_switch() but from will never be resumed (its task has
 * finished): tells the sanitizers the fiber is gone.  Does not return.  The
 * caller frees from's stack only after this switch, from another context. */
void nest__ctx_exit_to(nest__ctx *from, nest__ctx *to) __attribute__((noreturn));

/* Releases per-context sanitizer/valgrind state of a context that will not
 * run again (after nest__ctx_exit_to, from another context).  Idempotent. */
void nest__ctx_destroy(nest__ctx *c);

#endif
