/* nitro_mcu board flash backed by a host file (firmware/board_flash.h): NOR semantics, write-through.
 *
 * Erase sets a sector to 0xFF a stage at a time (a word when the sector is one page, else a page: a 128 KB sector
 * in 512 stages); program clears bits (old AND new) of whole aligned words inside one page, each word in two
 * half-word stages.  Every stage is written to the file at once (SYS_SEEK + SYS_WRITE, which QEMU performs
 * immediately), so a cut between two stages leaves a half-erased sector or a half-programmed word.
 * -DNITRO_FLASH_RAM_ONLY keeps the changes in RAM (the file is only read): for counting the instructions of
 * the checkpoint code without the cost of the write-through.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "board_flash.h"

#pragma GCC poison float double

#if !defined(NITRO_FLASH_BYTES) || !defined(NITRO_FLASH_PAGE)
#error "flash_file.c needs -DNITRO_FLASH_BYTES=<region bytes> -DNITRO_FLASH_PAGE=<page bytes>"
#endif
#ifndef NITRO_FLASH_SECTOR
#define NITRO_FLASH_SECTOR NITRO_FLASH_PAGE   /* erase unit; a part that erases pages */
#endif
#define ERASE_STAGE (NITRO_FLASH_SECTOR == NITRO_FLASH_PAGE ? 4u : (uint32_t)NITRO_FLASH_PAGE)
#ifndef NITRO_FLASH_FILE
#define NITRO_FLASH_FILE "flash.bin"
#endif

_Static_assert(NITRO_FLASH_BYTES % NITRO_FLASH_SECTOR == 0 && NITRO_FLASH_SECTOR % NITRO_FLASH_PAGE == 0 &&
               NITRO_FLASH_PAGE % 4 == 0, "flash geometry");

board_flash_stats_t board_flash_stats;
static uint8_t flash_mem[NITRO_FLASH_BYTES];
static int32_t flash_fd = -1;
static uint32_t cut_stage = 0xFFFFFFFFu;

int32_t board_flash_open(const char *path)
{
    if (flash_fd >= 0) {
        return 0;
    }
    flash_fd = board_fopen(path, BOARD_MODE_RPB);
    if (flash_fd >= 0) {
        return board_fread(flash_fd, flash_mem, NITRO_FLASH_BYTES) == (int32_t)NITRO_FLASH_BYTES ? 0 : -1;
    }
    memset(flash_mem, 0xFF, sizeof flash_mem);
    flash_fd = board_fopen(path, BOARD_MODE_WPB);
    return flash_fd >= 0 && board_fwrite(flash_fd, flash_mem, NITRO_FLASH_BYTES) == (int32_t)NITRO_FLASH_BYTES ? 0 : -1;
}

void board_flash_cut_at(uint32_t n)
{
    cut_stage = n;
}

static int32_t ready(void)
{
    return flash_fd >= 0 || board_flash_open(NITRO_FLASH_FILE) == 0;
}

/* Write bytes [addr, addr + n) of the RAM image through to the file. */
static int32_t stage(uint32_t addr, uint32_t n)
{
    if (board_flash_stats.stages++ == cut_stage) {
        board_puts("flash: power cut\n");
        board_exit(BOARD_FLASH_CUT_STATUS);
    }
#ifdef NITRO_FLASH_RAM_ONLY
    (void)addr;
    (void)n;
    return 0;
#else
    return board_fseek(flash_fd, addr) == 0 && board_fwrite(flash_fd, flash_mem + addr, n) == (int32_t)n ? 0 : -1;
#endif
}

int32_t board_flash_read(void *ctx, uint32_t addr, void *dst, uint32_t n)
{
    (void)ctx;
    board_flash_stats.reads++;
    board_flash_stats.read_bytes += n;
    if (!ready() || addr > NITRO_FLASH_BYTES || n > NITRO_FLASH_BYTES - addr) {
        return -1;
    }
    memcpy(dst, flash_mem + addr, n);
    return 0;
}

int32_t board_flash_program(void *ctx, uint32_t addr, const void *src, uint32_t n)
{
    (void)ctx;
    board_flash_stats.programs++;
    board_flash_stats.program_bytes += n;
    if (!ready() || (addr & 3u) || (n & 3u) || addr > NITRO_FLASH_BYTES || n > NITRO_FLASH_BYTES - addr ||
        (n && addr / NITRO_FLASH_PAGE != (addr + n - 1u) / NITRO_FLASH_PAGE)) {
        return -1;   /* a program stays inside one page */
    }
    const uint8_t *s = (const uint8_t *)src;
    for (uint32_t i = 0u; i < n; ++i) {
        if ((flash_mem[addr + i] & s[i]) != s[i]) {
            return -2;   /* NOR cannot set bits: the caller forgot an erase */
        }
    }
    for (uint32_t w = 0u; w < n; w += 4u) {
        for (uint32_t half = 0u; half < 4u; half += 2u) {
            flash_mem[addr + w + half] &= s[w + half];
            flash_mem[addr + w + half + 1u] &= s[w + half + 1u];
            if (stage(addr + w + half, 2u)) {
                return -1;
            }
        }
    }
    return 0;
}

int32_t board_flash_erase(void *ctx, uint32_t sector)
{
    (void)ctx;
    board_flash_stats.erases++;
    if (!ready() || sector >= NITRO_FLASH_BYTES / NITRO_FLASH_SECTOR) {
        return -1;
    }
    const uint32_t base = sector * (uint32_t)NITRO_FLASH_SECTOR;
    for (uint32_t w = 0u; w < (uint32_t)NITRO_FLASH_SECTOR; w += ERASE_STAGE) {
        memset(flash_mem + base + w, 0xFF, ERASE_STAGE);
        if (stage(base + w, ERASE_STAGE)) {
            return -1;
        }
    }
    return 0;
}
