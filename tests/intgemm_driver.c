/* Every entry point of nitro_mcu/trainer/native/intgemm.c behind a pipe, so a build for another architecture
 * (tests/test_intgemm_aarch64.py: aarch64 under qemu-user) answers the calls intgemm.py makes on the host.
 *
 * Request: int64 op, int64 arguments, operand bytes; reply: int64 result, output bytes (all little-endian, as on
 * both ends).  The packed-B scratch lives here, so a call with b == NULL reuses the previous call's packing as
 * igemm_run expects. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int igemm_run(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *b, int64_t rsb,
              int64_t csb, int16_t *scratch, int64_t *c, int8_t *o, int64_t kcp, int shift, int add, int64_t sf);
const char *igemm_variant(void);
int igemm_force(int variant);
void igemm_gather_s8(int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const int8_t *x,
                     int64_t ldx, int64_t *g, int narrow);
void igemm_gather_s16(int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const int16_t *x,
                      int64_t ldx, int64_t *g, int narrow);
#define SGD_PROTO(NAME, T)                                                                                     \
    void NAME(int64_t rows, int64_t cols, const T *w, const int64_t *g, int64_t ldg, T *out, int64_t d,        \
              uint64_t dm, int dl, int64_t e, uint64_t em, int el, int64_t lo, int64_t hi);
SGD_PROTO(igemm_sgd_s16, int16_t)
SGD_PROTO(igemm_sgd_s32, int32_t)
int igemm_sgd_simd(void);
int igemm_threads(int threads);

static void die(const char *why)
{
    fprintf(stderr, "intgemm_driver: %s\n", why);
    exit(1);
}

static int64_t arg(void)
{
    int64_t v;
    if (fread(&v, sizeof v, 1, stdin) != 1)
        exit(0); /* the pipe closed: done */
    return v;
}

/* a zeroed buffer of n bytes (16 more, so an empty one still has an address) */
static void *alloc(int64_t n)
{
    void *p = calloc((size_t)n + 16, 1);
    if (p == NULL)
        die("out of memory");
    return p;
}

/* n bytes from stdin into a fresh buffer */
static void *take(int64_t n)
{
    void *p = alloc(n);
    if (n > 0 && fread(p, 1, (size_t)n, stdin) != (size_t)n)
        die("short read");
    return p;
}

static void reply(int64_t result, const void *p, int64_t n)
{
    fwrite(&result, sizeof result, 1, stdout);
    if (n > 0)
        fwrite(p, 1, (size_t)n, stdout);
    fflush(stdout);
}

enum { RUN = 1, VARIANT, FORCE, GATHER, SGD, SGD_SIMD, THREADS };

int main(void)
{
    int16_t *scratch = NULL;
    int64_t scratch_len = 0;
    for (;;) {
        int64_t op = arg();
        if (op == RUN) { /* m n k lda rsb csb kcp shift add sf a_len b_len has_c has_o, a, b, c (o is output only) */
            int64_t m = arg(), n = arg(), k = arg(), lda = arg(), rsb = arg(), csb = arg(), kcp = arg();
            int64_t shift = arg(), add = arg(), sf = arg(), a_len = arg(), b_len = arg(), has_c = arg(), has_o = arg();
            int64_t ldb = (n + 15) / 16 * 16, need = (k + 1) / 2 * ldb * 2, out = m * ldb;
            int16_t *a = take(2 * a_len), *b = b_len ? take(2 * b_len) : NULL;
            int64_t *c = has_c ? take(8 * out) : NULL;
            int8_t *o = has_o ? alloc(out) : NULL;
            if (need > scratch_len) { /* grown only for a new B: a call with b == NULL has the previous shapes */
                scratch = realloc(scratch, (size_t)need * sizeof *scratch);
                scratch_len = need;
                if (scratch == NULL)
                    die("out of memory");
            }
            int r = igemm_run(m, n, k, a, lda, b, rsb, csb, scratch, c, o, kcp, (int)shift, (int)add, sf);
            reply(r, has_c ? (void *)c : (void *)o, has_c ? 8 * out : has_o ? out : 0);
            free(a), free(b), free(c), free(o);
        } else if (op == VARIANT) {
            const char *name = igemm_variant();
            reply((int64_t)strlen(name), name, (int64_t)strlen(name));
        } else if (op == FORCE) {
            reply(igemm_force((int)arg()), NULL, 0);
        } else if (op == GATHER) { /* itemsize c n k ldx narrow x_len, d, row, x */
            int64_t size = arg(), c = arg(), n = arg(), k = arg(), ldx = arg(), narrow = arg(), x_len = arg();
            int64_t *d = take(8 * c * n), *row = take(8 * c * n);
            void *x = take(size * x_len);
            int64_t *g = alloc(8 * c * k);
            if (size == 1)
                igemm_gather_s8(c, n, k, d, row, x, ldx, g, (int)narrow);
            else
                igemm_gather_s16(c, n, k, d, row, x, ldx, g, (int)narrow);
            reply(0, g, 8 * c * k);
            free(d), free(row), free(x), free(g);
        } else if (op == SGD) { /* itemsize rows cols ldg d dm dl e em el lo hi g_len, w, g */
            int64_t size = arg(), rows = arg(), cols = arg(), ldg = arg(), d = arg(), dm = arg(), dl = arg();
            int64_t e = arg(), em = arg(), el = arg(), lo = arg(), hi = arg(), g_len = arg();
            void *w = take(size * rows * cols), *out = alloc(size * rows * cols);
            int64_t *g = take(8 * g_len);
            uint64_t udm, uem;
            memcpy(&udm, &dm, sizeof udm);
            memcpy(&uem, &em, sizeof uem);
            if (size == 2)
                igemm_sgd_s16(rows, cols, w, g, ldg, out, d, udm, (int)dl, e, uem, (int)el, lo, hi);
            else
                igemm_sgd_s32(rows, cols, w, g, ldg, out, d, udm, (int)dl, e, uem, (int)el, lo, hi);
            reply(0, out, size * rows * cols);
            free(w), free(out), free(g);
        } else if (op == SGD_SIMD) {
            reply(igemm_sgd_simd(), NULL, 0);
        } else if (op == THREADS) {
            reply(igemm_threads((int)arg()), NULL, 0);
        } else {
            die("unknown request");
        }
    }
}
