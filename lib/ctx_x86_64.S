/*
 * lib/ctx_x86_64.S - the context switch for x86-64 (System V ABI).
 *
 * Owns the layout of a saved context on its stack and the first frame of a
 * fresh one.  The C around it (sanitizer annotations, valgrind) is in
 * lib/ctx_common.c; lib/ctx.h is the contract.
 *
 * A saved context is its stack pointer; the words at that address are, from
 * low to high:
 *
 *     sp+0   MXCSR (4 bytes), x87 control word (2 bytes), 2 bytes unused
 *     sp+8   r15, r14, r13, r12, rbx, rbp
 *     sp+56  return address
 *
 * Only the callee-saved registers are saved: the switch is an ordinary
 * function call, so the compiler has already spilled everything else.  The
 * two control words are callee-saved too (the ABI makes them so), and a task
 * that changes its rounding mode must not change the scheduler's.  Saving
 * them costs about 2.5 ns of a 10 ns switch (stmxcsr is slow on AMD Zen),
 * so a build whose code never changes the rounding mode or the exception
 * masks may define NEST_CTX_NO_FPCTRL to skip them; the slot stays in the
 * layout either way.
 *
 * The switch moves return addresses between stacks, which CET shadow stacks
 * forbid, so this file carries no .note.gnu.property: a binary built with
 * -fcf-protection loses its SHSTK marking, as it must.
 *
 * Invariant: every saved stack pointer is 16-byte aligned, and sp + 64 is the
 * stack pointer of the code that called the switch as it was before the
 * call, so the resumed code sees its stack as after an ordinary return.
 */

#if defined(__x86_64__) && defined(__ELF__)

        .text

/*
 * void *nest__ctx_swap_raw(void **save_sp, void *load_sp, void *arg)
 *                          rdi              rsi            rdx
 *
 * Saves the running context on its stack and stores the stack pointer in
 * *save_sp, then loads load_sp and restores the context saved there.
 * Returns arg in the resumed context (rax).  The CFI describes both halves
 * the same way, which is right because both stacks have the same layout:
 * before the switch the unwinder finds from's caller, after it to's.
 */
        .globl  nest__ctx_swap_raw
        .hidden nest__ctx_swap_raw
        .type   nest__ctx_swap_raw, @function
        .p2align 4
nest__ctx_swap_raw:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
#if !defined(NEST_CTX_NO_FPCTRL)
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
#endif
        movq    %rsp, (%rdi)

        movq    %rsi, %rsp
        movq    %rdx, %rax
#if !defined(NEST_CTX_NO_FPCTRL)
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
#endif
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
        /* A ret, not pop and jmp: it mispredicts when the two sides
         * called the switch from different places, but it keeps the
         * return-stack predictor balanced, so the rets that follow in the
         * resumed code are predicted whenever the two sides' call chains
         * match (a jmp made a scheduler-shaped benchmark 25% slower). */
        ret
        .cfi_endproc
        .size   nest__ctx_swap_raw, .-nest__ctx_swap_raw

/*
 * void *nest__ctx_make_raw(void *hi, void (*start)(void *a, void *from, void *b),
 *                          rdi       rsi
 *                          void *a, void *b)
 *                          rdx      rcx
 *
 * Writes the first frame of a fresh context just below hi (rounded down to
 * 16 bytes) and returns its stack pointer.  The first swap into it "returns"
 * into nest__ctx_trampoline with a in rbx, start in r12 and b in r13.  The
 * control words are the caller's, as a new thread inherits its creator's.
 */
        .globl  nest__ctx_make_raw
        .hidden nest__ctx_make_raw
        .type   nest__ctx_make_raw, @function
        .p2align 4
nest__ctx_make_raw:
        .cfi_startproc
        andq    $-16, %rdi
        leaq    -64(%rdi), %rax
        stmxcsr (%rax)
        fnstcw  4(%rax)
        movw    $0, 6(%rax)
        movq    $0, 8(%rax)             /* r15 */
        movq    $0, 16(%rax)            /* r14 */
        movq    %rcx, 24(%rax)          /* r13 = b */
        movq    %rsi, 32(%rax)          /* r12 = start */
        movq    %rdx, 40(%rax)          /* rbx = a */
        movq    $0, 48(%rax)            /* rbp: ends the frame-pointer chain */
        leaq    nest__ctx_trampoline(%rip), %rdx
        movq    %rdx, 56(%rax)
        ret
        .cfi_endproc
        .size   nest__ctx_make_raw, .-nest__ctx_make_raw

/*
 * The first code a fresh context runs, reached by the return at the end of
 * nest__ctx_swap_raw with rsp = hi, 16-byte aligned as a call requires.
 * Calls start(a, from, b), where from is the arg of the switch that came
 * here.  start never returns; if it does, the stack holds nothing to return
 * to, so abort.  The CFI marks the return address undefined: this is the
 * outermost frame of a task, and debuggers stop unwinding here.
 */
        .type   nest__ctx_trampoline, @function
        .p2align 4
nest__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined %rip
        movq    %rbx, %rdi
        movq    %rax, %rsi
        movq    %r13, %rdx
        callq   *%r12
        callq   abort@PLT
        hlt
        .cfi_endproc
        .size   nest__ctx_trampoline, .-nest__ctx_trampoline

#endif

/* Task stacks need not be executable, and neither does any other. */
        .section .note.GNU-stack,"",@progbits
