/* nitro_mcu board: semihosting core (exit, file I/O), integer formatting,
 * profiling markers, and the semihosting console (unless BOARD_IO_UART).
 *
 * Semihosting call: Cortex-M "bkpt 0xAB"; RISC-V the uncompressed sequence slli/ebreak/srai
 * (RISC-V semihosting spec), aligned so that it never straddles a page.
 * BOARD_NO_SEMIHOST (a real part, no debugger attached): no semihosting at all, so no file I/O;
 * board_exit prints the exit line "NITRO-EXIT <status>" on the console and halts the core; the
 * host watches for that line and then stops the emulator. */
#include <stdint.h>
#include <stddef.h>
#include "board.h"

enum {
    SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITEC = 0x03, SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05, SYS_READ = 0x06, SYS_SEEK = 0x0A, SYS_FLEN = 0x0C, SYS_EXIT_EXTENDED = 0x20
};

#if defined(BOARD_NO_SEMIHOST)
#if !defined(BOARD_IO_UART)
#error "BOARD_NO_SEMIHOST needs the UART console (BOARD_IO_UART)"
#endif
void board_exit(int status)
{
    board_puts("NITRO-EXIT ");
    board_put_i32((int32_t)status);
    board_putc('\n');
    for (;;) {
        __asm__ volatile ("wfi");
    }
}
#else
uint32_t board_semihost(uint32_t op, const void *arg)
{
#if defined(__riscv)
    register uint32_t a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = arg;
    __asm__ volatile (".option push\n\t.option norvc\n\t.balign 16\n\t"
                      "slli zero, zero, 0x1f\n\tebreak\n\tsrai zero, zero, 7\n\t.option pop"
                      : "+r"(a0) : "r"(a1) : "memory");
    return a0;
#else
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile ("bkpt #0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
#endif
}

void board_exit(int status)
{
    const uint32_t block[2] = { 0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)status };
    (void)board_semihost(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

static uint32_t str_len(const char *s)
{
    uint32_t n = 0u;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}

int32_t board_fopen(const char *path, int mode)
{
    const uint32_t block[3] = { (uint32_t)(uintptr_t)path, (uint32_t)mode, str_len(path) };
    return (int32_t)board_semihost(SYS_OPEN, block);
}

/* SYS_READ returns the number of bytes NOT read (0 = buffer filled, len = EOF). */
int32_t board_fread(int32_t fd, void *buf, uint32_t len)
{
    const uint32_t block[3] = { (uint32_t)fd, (uint32_t)(uintptr_t)buf, len };
    uint32_t not_read = board_semihost(SYS_READ, block);
    if (not_read > len) {
        return -1;
    }
    return (int32_t)(len - not_read);
}

/* SYS_WRITE returns the number of bytes NOT written (0 = success). */
int32_t board_fwrite(int32_t fd, const void *buf, uint32_t len)
{
    const uint32_t block[3] = { (uint32_t)fd, (uint32_t)(uintptr_t)buf, len };
    uint32_t not_written = board_semihost(SYS_WRITE, block);
    if (not_written > len) {
        return -1;
    }
    return (int32_t)(len - not_written);
}

int32_t board_fclose(int32_t fd)
{
    const uint32_t block[1] = { (uint32_t)fd };
    return (int32_t)board_semihost(SYS_CLOSE, block);
}

int32_t board_fseek(int32_t fd, uint32_t pos)
{
    const uint32_t block[2] = { (uint32_t)fd, pos };
    return board_semihost(SYS_SEEK, block) == 0u ? 0 : -1;
}

int32_t board_flen(int32_t fd)
{
    const uint32_t block[1] = { (uint32_t)fd };
    return (int32_t)board_semihost(SYS_FLEN, block);
}
#endif /* BOARD_NO_SEMIHOST */

__attribute__((noinline, used)) void prof_start(void) { __asm__ volatile ("" ::: "memory"); }
__attribute__((noinline, used)) void prof_stop(void)  { __asm__ volatile ("" ::: "memory"); }

#if !defined(BOARD_IO_UART)
void board_init(void)
{
}

void board_putc(char c)
{
    const char ch = c;
    (void)board_semihost(SYS_WRITEC, &ch);
}

void board_puts(const char *s)
{
    (void)board_semihost(SYS_WRITE0, s);
}
#endif

/* ---- integer formatting (no printf) ---- */

static void put_u64_digits(uint64_t u)
{
    char buf[21];
    uint32_t i = sizeof buf - 1u;
    buf[i] = '\0';
    do {
        i--;
        buf[i] = (char)('0' + (uint32_t)(u % 10u));
        u /= 10u;
    } while (u != 0u);
    board_puts(&buf[i]);
}

static void put_u32_digits(uint32_t u)
{
    char buf[11];
    uint32_t i = sizeof buf - 1u;
    buf[i] = '\0';
    do {
        i--;
        buf[i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u != 0u);
    board_puts(&buf[i]);
}

void board_put_u32(uint32_t v)
{
    put_u32_digits(v);
}

void board_put_i32(int32_t v)
{
    if (v < 0) {
        board_putc('-');
        put_u32_digits(0u - (uint32_t)v);
    } else {
        put_u32_digits((uint32_t)v);
    }
}

void board_put_i64(int64_t v)
{
    if (v < 0) {
        board_putc('-');
        put_u64_digits(0u - (uint64_t)v);
    } else {
        put_u64_digits((uint64_t)v);
    }
}

void board_put_hex32(uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    char buf[9];
    for (uint32_t i = 0u; i < 8u; i++) {
        buf[i] = digits[(v >> (28u - 4u * i)) & 0xFu];
    }
    buf[8] = '\0';
    board_puts(buf);
}
