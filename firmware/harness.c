/* nitro_mcu harness: drives a generated model from a command file and writes the results back.
 *
 * Runs unchanged on the host (board_host.c: stdio files) and on Cortex-M (semihosting file I/O).
 * Build with -DNITRO_MODEL=<name> -DNH_UPPER=<NAME> -DNH_HEADER='"<name>.h"'.
 *
 * Input file (NITRO_HARNESS_IN, default "cmd.bin"): commands, each a 4-byte tag then its payload,
 * all integers little-endian:
 *   "LRIV" int32 lr_inv                         set the schedule value
 *   "PROF" int32 mode                           count instructions of: 0 nothing, 1 training, 2 predictions,
 *                                               1000 + op: one op of the model (builds with NITRO_PROFILE_OPS)
 *   "MASK" int32 sites, per site int32 n + n bytes   keep-masks for the next TRAN (test hook builds)
 *   "TRAN" int32 b, b*INPUT bytes x, b bytes labels -> out "TRAN" int32 correct
 *   "PRED" int32 n, n*INPUT bytes x             -> out "PRED" int32 n, n*CLASSES bytes scores, n bytes class
 *   "WGHT"                                      -> out "WGHT" int32 n, n*int32 weights, uint64 rng, int32 lr_inv
 *   "DONE"                                      end
 * Output file (NITRO_HARNESS_OUT, default "res.bin").  The console gets a few text lines and, last,
 * the sentinel "NITRO-DONE <status>"; status 0 = every command ran.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include NH_HEADER

#pragma GCC poison float double

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define M(f) CAT(NH_NAME, CAT(_, f))
#define MU(f) CAT(NH_UPPER, CAT(_, f))

#ifndef NITRO_HARNESS_IN
#define NITRO_HARNESS_IN "cmd.bin"
#endif
#ifndef NITRO_HARNESS_OUT
#define NITRO_HARNESS_OUT "res.bin"
#endif

enum { ERR_IO = 2, ERR_PROTOCOL = 3, ERR_MODEL = 4 };

static int32_t fd_in = -1, fd_out = -1;
static int32_t prof_mode;
#if MU(TRAINABLE)
static int8_t xbuf[MU(MAX_BATCH) * MU(INPUT_SIZE)];
static uint8_t ybuf[MU(MAX_BATCH)];
#define WCHUNK 256
static int32_t wbuf[WCHUNK];   /* weights go out in chunks: small enough for a 16 KB M0 */
#else
static int8_t xbuf[MU(INPUT_SIZE)];
#endif
static int8_t scores[MU(NUM_CLASSES)];

#if MU(TRAINABLE) && defined(NITRO_TEST_HOOKS) && defined(NITRO_MAX_MASK_BYTES)
static uint8_t mask_store[NITRO_MAX_MASK_BYTES];
static const uint8_t *mask_ptrs[8];
static int32_t masks_pending;
#endif

#ifdef NITRO_PROFILE_OPS
/* Per-op instruction counts: the generated model calls these around every op. */
static int32_t prof_op = -1;
void nitro_op_begin(int32_t op);
void nitro_op_end(int32_t op);
void nitro_op_begin(int32_t op)
{
    if (op == prof_op) {
        prof_start();
    }
}
void nitro_op_end(int32_t op)
{
    if (op == prof_op) {
        prof_stop();
    }
}
#endif

static int read_exact(void *dst, uint32_t n)
{
    return board_fread(fd_in, dst, n) == (int32_t)n;
}

static int write_exact(const void *src, uint32_t n)
{
    return board_fwrite(fd_out, src, n) == (int32_t)n;
}

static int read_i32(int32_t *v)
{
    uint8_t b[4];
    if (!read_exact(b, 4)) {
        return 0;
    }
    *v = (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24));
    return 1;
}

static int write_u32(uint32_t v)
{
    const uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return write_exact(b, 4);
}

static int write_i32(int32_t v)
{
    return write_u32((uint32_t)v);
}

static int fail(int status, const char *what)
{
    board_puts("harness error: ");
    board_puts(what);
    board_putc('\n');
    return status;
}

static int cmd_predict(void)
{
    int32_t n;
    if (!read_i32(&n) || n < 0) {
        return fail(ERR_PROTOCOL, "PRED count");
    }
    if (!write_exact("PRED", 4) || !write_i32(n)) {
        return fail(ERR_IO, "write");
    }
    for (int32_t i = 0; i < n; ++i) {
        if (!read_exact(xbuf, MU(INPUT_SIZE))) {
            return fail(ERR_PROTOCOL, "PRED data");
        }
        if (prof_mode == 2) {
            prof_start();
        }
        const int32_t cls = M(predict)(xbuf, scores);
        if (prof_mode == 2) {
            prof_stop();
        }
        const uint8_t c8 = (uint8_t)cls;
        if (!write_exact(scores, MU(NUM_CLASSES)) || !write_exact(&c8, 1)) {
            return fail(ERR_IO, "write");
        }
    }
    return 0;
}

#if MU(TRAINABLE)
static int cmd_train(void)
{
    int32_t b;
    if (!read_i32(&b) || b < 1 || b > MU(MAX_BATCH)) {
        return fail(ERR_PROTOCOL, "TRAN batch size");
    }
    if (!read_exact(xbuf, (uint32_t)b * MU(INPUT_SIZE)) || !read_exact(ybuf, (uint32_t)b)) {
        return fail(ERR_PROTOCOL, "TRAN data");
    }
#if defined(NITRO_TEST_HOOKS) && defined(NITRO_MAX_MASK_BYTES)
    M(force_dropout_masks)(masks_pending ? mask_ptrs : NULL);
#endif
    if (prof_mode == 1) {
        prof_start();
    }
    const int32_t correct = M(train_batch)(xbuf, ybuf, b);
    if (prof_mode == 1) {
        prof_stop();
    }
#if defined(NITRO_TEST_HOOKS) && defined(NITRO_MAX_MASK_BYTES)
    M(force_dropout_masks)(NULL);
    masks_pending = 0;
#endif
    if (correct < 0) {
        return fail(ERR_MODEL, "train_batch rejected the batch");
    }
    if (!write_exact("TRAN", 4) || !write_i32(correct)) {
        return fail(ERR_IO, "write");
    }
    return 0;
}

static int cmd_weights(void)
{
    const int32_t n = MU(NUM_WEIGHTS);
    if (!write_exact("WGHT", 4) || !write_i32(n)) {
        return fail(ERR_IO, "write");
    }
    /* export in chunks through a small buffer: walk the tensors directly */
    int32_t done = 0;
    for (int32_t t = 0; t < M(num_tensors)(); ++t) {
        const M(tensor_t) *tt = M(tensor)(t);
        for (int32_t i = 0; i < tt->count; ++i) {
#if MU(WEIGHT_BITS) == 16
            wbuf[done % WCHUNK] = (int32_t)((const int16_t *)tt->data)[i];
#else
            wbuf[done % WCHUNK] = ((const int32_t *)tt->data)[i];
#endif
            ++done;
            if (done % WCHUNK == 0 && !write_exact(wbuf, WCHUNK * 4u)) {
                return fail(ERR_IO, "write");
            }
        }
    }
    if (done % WCHUNK && !write_exact(wbuf, (uint32_t)(done % WCHUNK) * 4u)) {
        return fail(ERR_IO, "write");
    }
    const uint64_t rng = M(get_rng_state)();
    if (!write_u32((uint32_t)rng) || !write_u32((uint32_t)(rng >> 32)) || !write_i32(M(get_lr_inv)())) {
        return fail(ERR_IO, "write");
    }
    return 0;
}
#endif

static int run(void)
{
    for (;;) {
        char tag[4];
        if (!read_exact(tag, 4)) {
            return fail(ERR_PROTOCOL, "truncated command file");
        }
        int status = 0;
        if (!memcmp(tag, "DONE", 4)) {
            return 0;
        } else if (!memcmp(tag, "PRED", 4)) {
            status = cmd_predict();
        } else if (!memcmp(tag, "PROF", 4)) {
            status = read_i32(&prof_mode) ? 0 : fail(ERR_PROTOCOL, "PROF");
#ifdef NITRO_PROFILE_OPS
            if (prof_mode >= 1000) {   /* count one op: 1000 + op id */
                prof_op = prof_mode - 1000;
                prof_mode = 0;
            }
#endif
#if MU(TRAINABLE)
        } else if (!memcmp(tag, "TRAN", 4)) {
            status = cmd_train();
        } else if (!memcmp(tag, "WGHT", 4)) {
            status = cmd_weights();
        } else if (!memcmp(tag, "LRIV", 4)) {
            int32_t v;
            status = (read_i32(&v) && M(set_lr_inv)(v) == 0) ? 0 : fail(ERR_PROTOCOL, "LRIV");
#if defined(NITRO_TEST_HOOKS) && defined(NITRO_MAX_MASK_BYTES)
        } else if (!memcmp(tag, "MASK", 4)) {
            int32_t sites;
            uint32_t used = 0;
            status = (read_i32(&sites) && sites > 0 && sites <= 8) ? 0 : fail(ERR_PROTOCOL, "MASK sites");
            for (int32_t s = 0; !status && s < sites; ++s) {
                int32_t n;
                if (!read_i32(&n) || n < 0 || used + (uint32_t)n > NITRO_MAX_MASK_BYTES ||
                    !read_exact(mask_store + used, (uint32_t)n)) {
                    status = fail(ERR_PROTOCOL, "MASK data");
                    break;
                }
                mask_ptrs[s] = mask_store + used;
                used += (uint32_t)n;
            }
            masks_pending = 1;
#endif
#endif
        } else {
            status = fail(ERR_PROTOCOL, "unknown command");
        }
        if (status) {
            return status;
        }
    }
}

int main(void)
{
    board_init();
    M(init)();
    fd_in = board_fopen(NITRO_HARNESS_IN, BOARD_MODE_RB);
    fd_out = board_fopen(NITRO_HARNESS_OUT, BOARD_MODE_WB);
    int status = (fd_in < 0 || fd_out < 0) ? fail(ERR_IO, "cannot open the command or result file") : run();
    if (fd_in >= 0) {
        (void)board_fclose(fd_in);
    }
    if (fd_out >= 0 && board_fclose(fd_out) != 0 && status == 0) {
        status = ERR_IO;
    }
    board_puts("stack ");
    board_put_u32(board_stack_high_water());
    board_putc('\n');
    board_puts("NITRO-DONE ");
    board_put_i32(status);
    board_putc('\n');
    return status;
}
