/* nitro_mcu firmware self-test: integer arithmetic, semihosting file I/O, sentinel.
 * Builds for every target and for the host (with board_host.c); everything printed
 * before the "stack" line must match byte for byte between host and target. */
#include <stdint.h>
#include "board.h"

#pragma GCC poison float double

#if !defined(SELFTEST_NO_FILE) && !defined(BOARD_NO_SEMIHOST)   /* the file names of the file I/O below */
#ifndef SELFTEST_INPUT
#define SELFTEST_INPUT "selftest_input.bin"
#endif
#ifndef SELFTEST_OUTPUT
#define SELFTEST_OUTPUT "selftest_output.txt"
#endif
#endif

static volatile int32_t v_a = -7, v_b = 2, v_c = 70000, v_d = -123456789, v_e = 1000;
static volatile int64_t v_big = -9876543210LL;
static uint32_t lcg_state = 12345u;   /* .data */
static int64_t lcg_acc;               /* .bss */

static void line_i32(const char *label, int32_t v)
{
    board_puts(label);
    board_putc(' ');
    board_put_i32(v);
    board_putc('\n');
}

static void line_i64(const char *label, int64_t v)
{
    board_puts(label);
    board_putc(' ');
    board_put_i64(v);
    board_putc('\n');
}

static uint32_t lcg_next(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

/* a little recursion so the stack high-water mark is visibly non-zero */
static int32_t depth_sum(int32_t n)
{
    volatile int32_t pad[8];
    for (int32_t i = 0; i < 8; i++) {
        pad[i] = n + i;
    }
    return n <= 0 ? 0 : pad[n & 7] + depth_sum(n - 1);
}

int main(void)
{
    board_init();
    board_puts("NITRO selftest\n");

    int32_t a = v_a, b = v_b, c = v_c, d = v_d, e = v_e;
    line_i32("div", a / b);                       /* -3: truncation toward zero */
    line_i32("mod", a % b);                       /* -1 */
    line_i32("div2", d / e);
    line_i32("mod2", d % e);
    line_i32("div3", -d / -e);
    line_i32("shr", a >> 1);                      /* arithmetic: -4 */
    line_i32("wrapmul", (int32_t)((uint32_t)c * (uint32_t)c));
    line_i32("min", INT32_MIN);
    line_i32("max", INT32_MAX);
    line_i64("mul64", (int64_t)c * (int64_t)d);
    line_i64("div64", v_big / (int64_t)e);
    line_i64("mod64", v_big % (int64_t)e);
    line_i64("big", v_big * 3);
    line_i64("min64", INT64_MIN);

    prof_start();
    for (int32_t i = 0; i < 10000; i++) {
        uint32_t r = lcg_next();
        lcg_acc += (int64_t)(int32_t)r / 1024;
    }
    prof_stop();
    board_puts("lcg ");
    board_put_hex32(lcg_state);
    board_putc('\n');
    line_i64("lcgacc", lcg_acc);

    prof_start();
    int32_t ds = depth_sum(20);
    prof_stop();
    line_i32("depth", ds);

#if !defined(SELFTEST_NO_FILE) && !defined(BOARD_NO_SEMIHOST)   /* no file I/O without semihosting */
    /* semihosting file input: length and byte sum */
    int32_t fd = board_fopen(SELFTEST_INPUT, BOARD_MODE_RB);
    if (fd < 0) {
        board_puts("file open failed\n");
        board_puts("NITRO-DONE 2\n");
        return 2;
    }
    int32_t flen = board_flen(fd);
    uint8_t buf[64];
    uint32_t sum = 0u;
    int32_t total = 0;
    for (;;) {
        int32_t n = board_fread(fd, buf, (uint32_t)sizeof buf);
        if (n <= 0) {
            break;
        }
        for (int32_t i = 0; i < n; i++) {
            sum += buf[i];
        }
        total += n;
    }
    (void)board_fclose(fd);
    line_i32("flen", flen);
    line_i32("fread", total);
    board_puts("fsum ");
    board_put_u32(sum);
    board_putc('\n');

    /* semihosting file output */
    fd = board_fopen(SELFTEST_OUTPUT, BOARD_MODE_WB);
    if (fd >= 0) {
        static const char msg[] = "written by selftest\n";
        line_i32("fwrite", board_fwrite(fd, msg, (uint32_t)(sizeof msg - 1u)));
        (void)board_fclose(fd);
    }
#endif

    board_puts("stack ");
    board_put_u32(board_stack_high_water());
    board_putc(' ');
    board_put_u32(board_stack_size());
    board_putc('\n');
    board_puts("NITRO-DONE 0\n");
    return 0;
}
