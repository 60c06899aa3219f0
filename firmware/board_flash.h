/* nitro_mcu board flash: a NOR flash region for the checkpoint code of a generated model (docs/checkpoint.md).
 *
 * firmware/flash_file.c keeps the region in RAM and writes every change through to a host file (semihosting
 * on an emulator, stdio on the host), a half-word or a word at a time, so that a power cut at any instruction
 * leaves the file as a real flash would be.  Build with -DNITRO_FLASH_BYTES=<region> -DNITRO_FLASH_PAGE=<page>
 * (program unit) and -DNITRO_FLASH_SECTOR=<sector> (erase unit; default: the page).
 * The callbacks have the signatures of <name>_storage_t: addresses are byte offsets in the region.
 */
#ifndef NITRO_BOARD_FLASH_H
#define NITRO_BOARD_FLASH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t reads, programs, erases;       /* callback calls */
    uint32_t read_bytes, program_bytes;
    uint32_t stages;                        /* write-throughs to the file: half-words programmed, erase stages */
} board_flash_stats_t;

extern board_flash_stats_t board_flash_stats;

/* Map the file (created erased if missing); 0, or -1.  Called by the first callback if not before. */
int32_t board_flash_open(const char *path);
/* Power cut for host runs: exit (status BOARD_FLASH_CUT_STATUS) instead of write-through number n (0-based). */
void board_flash_cut_at(uint32_t n);

int32_t board_flash_read(void *ctx, uint32_t addr, void *dst, uint32_t n);
int32_t board_flash_program(void *ctx, uint32_t addr, const void *src, uint32_t n);   /* -2: a word not erased */
int32_t board_flash_erase(void *ctx, uint32_t sector);

#define BOARD_FLASH_CUT_STATUS 86

#ifdef __cplusplus
}
#endif

#endif /* NITRO_BOARD_FLASH_H */
