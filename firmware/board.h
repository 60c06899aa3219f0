/* nitro_mcu board API: tiny, integer-only, no printf.
 *
 * Output channel is chosen at compile time:
 *   -DBOARD_IO_SEMIHOST (default)  semihosting console (SYS_WRITE0/SYS_WRITEC)
 *   -DBOARD_IO_UART                memory-mapped UART; select the kind with
 *                                  -DBOARD_UART_CMSDK, _NRF51, _STM32 or _NS16550 and
 *                                  the base with -DBOARD_UART_BASE=0x40004000u
 * Exit and file I/O use semihosting (Cortex-M bkpt 0xAB, RISC-V ebreak sequence), except with
 * -DBOARD_NO_SEMIHOST (a real part): no file I/O, and board_exit prints "NITRO-EXIT <status>".
 * -DBOARD_UNALIGN_TRAP (rp2040): startup.c sets CCR.UNALIGN_TRP, so unaligned accesses fault as on ARMv6-M.
 */
#ifndef NITRO_BOARD_H
#define NITRO_BOARD_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void board_init(void);
void board_putc(char c);
void board_puts(const char *s);            /* no newline appended */
void board_put_i32(int32_t v);
void board_put_i64(int64_t v);
void board_put_u32(uint32_t v);
void board_put_hex32(uint32_t v);          /* 8 lower-case hex digits, no prefix */
void board_exit(int status) __attribute__((noreturn));

/* Semihosting file I/O. mode: 0 = "r", 1 = "rb", 4 = "w", 5 = "wb", 8 = "a", 9 = "ab"
 * (ISO C fopen mode index). Paths are relative to the emulator's working directory. */
enum { BOARD_MODE_RB = 1, BOARD_MODE_RPB = 3, BOARD_MODE_WB = 5, BOARD_MODE_WPB = 7, BOARD_MODE_AB = 9 };
int32_t board_fopen(const char *path, int mode);     /* handle >= 0, or -1 */
int32_t board_fread(int32_t fd, void *buf, uint32_t len);        /* bytes read, or -1 */
int32_t board_fwrite(int32_t fd, const void *buf, uint32_t len); /* bytes written, or -1 */
int32_t board_fclose(int32_t fd);                                /* 0, or -1 */
int32_t board_flen(int32_t fd);                                  /* file length, or -1 */
int32_t board_fseek(int32_t fd, uint32_t pos);                   /* 0, or -1; pos from the start */

/* Stack usage in bytes since reset (startup.c paints the stack with 0xA5A5A5A5). */
uint32_t board_stack_high_water(void);
uint32_t board_stack_size(void);

/* Instruction-count region markers (the QEMU plugin and the Unicorn runner look them up by name). */
void prof_start(void);
void prof_stop(void);

/* Low-level semihosting call (r0 = op, r1 = arg block). */
uint32_t board_semihost(uint32_t op, const void *arg);

#ifdef __cplusplus
}
#endif

#endif /* NITRO_BOARD_H */
