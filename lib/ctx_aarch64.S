/*
 * lib/ctx_aarch64.S - the context switch for AArch64 (AAPCS64, ELF).
 *
 * Owns the layout of a saved context on its stack and the first frame of a
 * fresh one.  The C around it (sanitizer annotations, valgrind) is in
 * lib/ctx_common.c; lib/ctx.h is the contract.  The primitives and their
 * contracts are the same as in lib/ctx_x86_64.S.
 *
 * A saved context is its stack pointer; the 160 bytes at that address are,
 * from low to high:
 *
 *     sp+0    d8, d9, d10, d11, d12, d13, d14, d15
 *     sp+64   x19, x20, ..., x28
 *     sp+144  x29 (frame pointer), x30 (return address)
 *
 * Only the callee-saved registers are saved: the switch is an ordinary
 * function call, so the compiler has already spilled everything else (the
 * upper halves of v8-v15 are caller-saved).  x18, the platform register, is
 * left alone.  FPCR is not saved: unlike x86-64's MXCSR, writing it can be
 * slow, and no code in nest changes it.
 *
 * Invariant: every saved stack pointer is 16-byte aligned (the hardware
 * requires it), and sp + 160 is the stack pointer of the code that called
 * the switch.
 */

#if defined(__aarch64__) && defined(__ELF__)

/* "bti c": a landing pad for indirect calls where branch target
 * identification is on (a no-op elsewhere).  The trampoline needs none: it
 * is entered by ret. */
#define BTI_C hint #34

        .text

/*
 * void *nest__ctx_swap_raw(void **save_sp, void *load_sp, void *arg)
 *                          x0               x1             x2
 *
 * Saves the running context on its stack and stores the stack pointer in
 * *save_sp, then loads load_sp and restores the context saved there.
 * Returns arg in the resumed context.  The CFI describes both halves the
 * same way, which is right because both stacks have the same layout.
 */
        .globl  nest__ctx_swap_raw
        .hidden nest__ctx_swap_raw
        .type   nest__ctx_swap_raw, %function
        .p2align 4
nest__ctx_swap_raw:
        .cfi_startproc
        BTI_C
        sub     sp, sp, #160
        .cfi_def_cfa_offset 160
        stp     d8, d9, [sp, #0]
        stp     d10, d11, [sp, #16]
        stp     d12, d13, [sp, #32]
        stp     d14, d15, [sp, #48]
        stp     x19, x20, [sp, #64]
        stp     x21, x22, [sp, #80]
        stp     x23, x24, [sp, #96]
        stp     x25, x26, [sp, #112]
        stp     x27, x28, [sp, #128]
        stp     x29, x30, [sp, #144]
        .cfi_offset d8, -160
        .cfi_offset d9, -152
        .cfi_offset d10, -144
        .cfi_offset d11, -136
        .cfi_offset d12, -128
        .cfi_offset d13, -120
        .cfi_offset d14, -112
        .cfi_offset d15, -104
        .cfi_offset x19, -96
        .cfi_offset x20, -88
        .cfi_offset x21, -80
        .cfi_offset x22, -72
        .cfi_offset x23, -64
        .cfi_offset x24, -56
        .cfi_offset x25, -48
        .cfi_offset x26, -40
        .cfi_offset x27, -32
        .cfi_offset x28, -24
        .cfi_offset x29, -16
        .cfi_offset x30, -8
        mov     x9, sp
        str     x9, [x0]

        mov     sp, x1
        ldp     d8, d9, [sp, #0]
        ldp     d10, d11, [sp, #16]
        ldp     d12, d13, [sp, #32]
        ldp     d14, d15, [sp, #48]
        ldp     x19, x20, [sp, #64]
        ldp     x21, x22, [sp, #80]
        ldp     x23, x24, [sp, #96]
        ldp     x25, x26, [sp, #112]
        ldp     x27, x28, [sp, #128]
        ldp     x29, x30, [sp, #144]
        add     sp, sp, #160
        .cfi_def_cfa_offset 0
        .cfi_restore d8
        .cfi_restore d9
        .cfi_restore d10
        .cfi_restore d11
        .cfi_restore d12
        .cfi_restore d13
        .cfi_restore d14
        .cfi_restore d15
        .cfi_restore x19
        .cfi_restore x20
        .cfi_restore x21
        .cfi_restore x22
        .cfi_restore x23
        .cfi_restore x24
        .cfi_restore x25
        .cfi_restore x26
        .cfi_restore x27
        .cfi_restore x28
        .cfi_restore x29
        .cfi_restore x30
        mov     x0, x2
        ret
        .cfi_endproc
        .size   nest__ctx_swap_raw, .-nest__ctx_swap_raw

/*
 * void *nest__ctx_make_raw(void *hi, void (*start)(void *a, void *from, void *b),
 *                          x0        x1
 *                          void *a, void *b)
 *                          x2       x3
 *
 * Writes the first frame of a fresh context just below hi (rounded down to
 * 16 bytes) and returns its stack pointer.  The first swap into it "returns"
 * into nest__ctx_trampoline with a in x19, start in x20 and b in x21.
 */
        .globl  nest__ctx_make_raw
        .hidden nest__ctx_make_raw
        .type   nest__ctx_make_raw, %function
        .p2align 4
nest__ctx_make_raw:
        .cfi_startproc
        BTI_C
        and     x0, x0, #-16
        sub     x0, x0, #160
        stp     xzr, xzr, [x0, #0]      /* d8-d15 */
        stp     xzr, xzr, [x0, #16]
        stp     xzr, xzr, [x0, #32]
        stp     xzr, xzr, [x0, #48]
        stp     x2, x1, [x0, #64]       /* x19 = a, x20 = start */
        stp     x3, xzr, [x0, #80]      /* x21 = b */
        stp     xzr, xzr, [x0, #96]
        stp     xzr, xzr, [x0, #112]
        stp     xzr, xzr, [x0, #128]
        adr     x9, nest__ctx_trampoline
        stp     xzr, x9, [x0, #144]     /* x29 = 0 ends the frame chain */
        ret
        .cfi_endproc
        .size   nest__ctx_make_raw, .-nest__ctx_make_raw

/*
 * The first code a fresh context runs, reached by the ret at the end of
 * nest__ctx_swap_raw with sp = hi.  Calls start(a, from, b), where from is
 * the arg of the switch that came here (in x0).  start never returns; if
 * it does, abort.  The CFI marks the return address undefined: this is the
 * outermost frame of a task.
 */
        .type   nest__ctx_trampoline, %function
        .p2align 4
nest__ctx_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        mov     x1, x0
        mov     x0, x19
        mov     x2, x21
        blr     x20
        bl      abort
        brk     #1
        .cfi_endproc
        .size   nest__ctx_trampoline, .-nest__ctx_trampoline

#if defined(__ARM_FEATURE_BTI_DEFAULT)
/* Tells the linker this object has BTI landing pads, so a BTI build stays
 * one (GNU_PROPERTY_AARCH64_FEATURE_1_AND: BTI, and PAC if the compiler
 * signs return addresses; this file stores none it did not receive). */
        .pushsection .note.gnu.property, "a"
        .p2align 3
        .word   4
        .word   16
        .word   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .word   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .word   4
#if defined(__ARM_FEATURE_PAC_DEFAULT)
        .word   3
#else
        .word   1
#endif
        .word   0
        .popsection
#endif

#endif

/* Task stacks need not be executable, and neither does any other. */
        .section .note.GNU-stack,"",%progbits
