/* nitro_mcu startup for Cortex-M0/M0+/M3/M4/M7/M33 (soft-float or hard-float ABI) and RV32 (ilp32).
 *
 * Cortex-M: vector table first in the code region (QEMU takes SP/PC from VTOR at reset).
 * RISC-V: an entry stub first in the code region (the reset ROM jumps there) sets sp and mtvec.
 * Then .data copy, .bss clear, stack painting, board_init(), main(), board_exit() with main's
 * return value.  Any fault or trap exits with status 0x7F.
 */
#include <stdint.h>
#include "board.h"

/* All symbols come from the linker script (ld/common.ld). */
extern uint32_t __stack_top[], __stack_limit[];
extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];

int main(void);
void on_reset(void) __attribute__((noreturn, used));
void on_fault(void) __attribute__((noreturn, used));

#define STACK_PAINT 0xA5A5A5A5u

void on_fault(void)
{
    board_exit(0x7F);
}

/* Paint [__stack_limit, sp - margin) with STACK_PAINT.  Must not itself use the
 * painted area, so it reads SP and stops a small margin below it. */
static void paint_stack(void) __attribute__((noinline));
static void paint_stack(void)
{
    uint32_t sp;
#if defined(__riscv)
    __asm__ volatile ("mv %0, sp" : "=r"(sp));
#else
    __asm__ volatile ("mov %0, sp" : "=r"(sp));
#endif
    volatile uint32_t *p = __stack_limit;
    volatile uint32_t *end = (volatile uint32_t *)(uintptr_t)((sp - 32u) & ~(uint32_t)3u);
    while (p < end) {
        *p++ = STACK_PAINT;
    }
}

uint32_t board_stack_high_water(void)
{
    const volatile uint32_t *p = __stack_limit;
    const volatile uint32_t *top = __stack_top;
    while (p < top && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)top - (uintptr_t)p);
}

uint32_t board_stack_size(void)
{
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_limit);
}

void on_reset(void)
{
#if defined(BOARD_UNALIGN_TRAP)
    /* CCR.UNALIGN_TRP: an unaligned LDR/STR/LDRH/STRH faults on ARMv7-M as on ARMv6-M (where the bit reads as
       one and ignores writes, so the same binary runs unchanged on an M0/M0+) */
    *(volatile uint32_t *)0xE000ED14u |= (1u << 3);
    __asm__ volatile ("dsb\n\tisb" ::: "memory");
#endif
#if defined(__ARM_FP)
    /* Hard-float ABI: enable CP10/CP11 before any FP instruction can run. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile ("dsb\n\tisb" ::: "memory");
#endif
    /* volatile pointers keep GCC from turning these loops into memcpy/memset calls */
    const volatile uint32_t *src = __data_load;
    for (volatile uint32_t *p = __data_start; p < __data_end; ) {
        *p++ = *src++;
    }
    for (volatile uint32_t *p = __bss_start; p < __bss_end; ) {
        *p++ = 0u;
    }
    paint_stack();
    board_init();
    board_exit(main());
}

#if defined(__riscv)
/* Entry: sp 16-byte aligned (ilp32 ABI) at the top of the stack region; every trap (illegal instruction,
 * access fault, ...) goes to a 4-byte aligned stub (mtvec direct mode) that calls on_fault. */
__asm__(
    "    .section .vectors, \"ax\"\n"
    "    .globl _start\n"
    "_start:\n"
    "    .option push\n"
    "    .option norelax\n"
    "    .option arch, +zicsr\n"
    "    la sp, __stack_top\n"
    "    andi sp, sp, -16\n"
    "    la t0, nitro_trap\n"
    "    csrw mtvec, t0\n"
    "    j on_reset\n"
    "    .balign 4\n"
    "nitro_trap:\n"
    "    j on_fault\n"
    "    .option pop\n"
    "    .text\n");
#else
typedef void (*vector_t)(void);

/* 16 system exception entries: SP, Reset, NMI, HardFault, MemManage, BusFault,
 * UsageFault, SecureFault (v8-M), 3 reserved, SVCall, DebugMon, reserved, PendSV, SysTick. */
__attribute__((section(".vectors"), used))
static const vector_t vectors[16] = {
    (vector_t)(uintptr_t)__stack_top, on_reset,
    on_fault, on_fault, on_fault, on_fault, on_fault, on_fault,
    0, 0, 0,
    on_fault, on_fault, 0, on_fault, on_fault,
};
#endif
