/* nitro_mcu board API for host builds (gcc/clang on the build machine), so that
 * firmware C (selftest, generated code) can be compiled and diffed against the
 * emulator output.  Stack high-water and profiling markers are stubs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "board.h"

#define MAX_FILES 16
static FILE *files[MAX_FILES];

void board_init(void) { }
void board_putc(char c) { (void)putchar((unsigned char)c); }
void board_puts(const char *s) { (void)fputs(s, stdout); }
void board_put_u32(uint32_t v) { printf("%lu", (unsigned long)v); }
void board_put_i32(int32_t v) { printf("%ld", (long)v); }
void board_put_i64(int64_t v) { printf("%lld", (long long)v); }
void board_put_hex32(uint32_t v) { printf("%08lx", (unsigned long)v); }
void board_exit(int status) { (void)fflush(stdout); exit(status); }
uint32_t board_stack_high_water(void) { return 0u; }
uint32_t board_stack_size(void) { return 0u; }
void prof_start(void) { }
void prof_stop(void) { }
uint32_t board_semihost(uint32_t op, const void *arg) { (void)op; (void)arg; return 0xFFFFFFFFu; }

int32_t board_fopen(const char *path, int mode)
{
    static const char *const modes[] = { "r", "rb", "r+", "r+b", "w", "wb", "w+", "w+b", "a", "ab", "a+", "a+b" };
    if (mode < 0 || mode > 11) {
        return -1;
    }
    for (int32_t i = 0; i < MAX_FILES; i++) {
        if (files[i] == NULL) {
            files[i] = fopen(path, modes[mode]);
            return files[i] != NULL ? i : -1;
        }
    }
    return -1;
}

int32_t board_fread(int32_t fd, void *buf, uint32_t len)
{
    if (fd < 0 || fd >= MAX_FILES || files[fd] == NULL) return -1;
    return (int32_t)fread(buf, 1u, len, files[fd]);
}

int32_t board_fwrite(int32_t fd, const void *buf, uint32_t len)
{
    if (fd < 0 || fd >= MAX_FILES || files[fd] == NULL) return -1;
    return (int32_t)fwrite(buf, 1u, len, files[fd]);
}

int32_t board_fclose(int32_t fd)
{
    if (fd < 0 || fd >= MAX_FILES || files[fd] == NULL) return -1;
    int rc = fclose(files[fd]);
    files[fd] = NULL;
    return rc == 0 ? 0 : -1;
}

int32_t board_fseek(int32_t fd, uint32_t pos)
{
    if (fd < 0 || fd >= MAX_FILES || files[fd] == NULL) return -1;
    return fseek(files[fd], (long)pos, SEEK_SET) == 0 ? 0 : -1;
}

int32_t board_flen(int32_t fd)
{
    if (fd < 0 || fd >= MAX_FILES || files[fd] == NULL) return -1;
    long pos = ftell(files[fd]);
    if (fseek(files[fd], 0L, SEEK_END) != 0) return -1;
    long len = ftell(files[fd]);
    (void)fseek(files[fd], pos, SEEK_SET);
    return (int32_t)len;
}
