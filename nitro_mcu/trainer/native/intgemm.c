/* Exact integer GEMM for the host trainer (nitro_mcu/trainer/intgemm.py; docs/arithmetic.md §2.1).
 *
 *   C[m][n] += 2**shift * sum_k A[m][k] * B[k][n]      (int16 operands, int64 C)
 *
 * A is [M][lda] int16 (row m's K values contiguous); B comes packed in K-pairs, Bp[p][n][t] = B[2p+t][n]
 * ([ceil(K/2)][ldb][2], zero where 2p+t >= K), so one 32-bit lane holds the two int16 a 16-bit multiply-add
 * (vpmaddwd, vpdpwssd) pairs with A's (A[m][2p], A[m][2p+1]).  Partial sums are int32 over chunks of
 * kcp K-pairs; the caller proves 2 * kcp * max|A| * max|B| <= INT32_MAX, so no int32 sum can overflow, and
 * that the final int64 sums stay below 2**63.  Each chunk is then added to the int64 C.  The result does not
 * depend on the variant: integer sums are exact in any order.
 *
 * Variants: AVX-512 VNNI (vpdpwssd), AVX2 (vpmaddwd + vpaddd), portable C; igemm_variant() tells which one
 * igemm() runs on this CPU (chosen once, at run time), igemm_force() pins one for the tests.
 */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NITRO_X86 1
#endif

#pragma GCC poison float double

typedef void (*kernel_fn)(int64_t, int64_t, int64_t, const int16_t *, int64_t, const int16_t *, int64_t,
                          int64_t *, int64_t, int64_t, int);

/* The two int16 of A's pair p in row `row` as one 32-bit lane (low half first, as vpmaddwd pairs them);
 * the odd last pair of an odd K carries a zero (Bp is zero there too). */
static inline int32_t a_pair(const int16_t *row, int64_t p, int64_t k)
{
    uint32_t lo = (uint16_t)row[2 * p];
    uint32_t hi = (2 * p + 1 < k) ? (uint16_t)row[2 * p + 1] : 0u;
    uint32_t v = lo | (hi << 16);
    int32_t out;
    memcpy(&out, &v, sizeof out);
    return out;
}

static void igemm_portable(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                           int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift)
{
    int64_t pairs = (k + 1) / 2;
    int64_t scale = (int64_t)1 << shift;
    for (int64_t i = 0; i < m; i++) {
        const int16_t *row = a + i * lda;
        for (int64_t p0 = 0; p0 < pairs; p0 += kcp) {
            int64_t p1 = p0 + kcp < pairs ? p0 + kcp : pairs;
            for (int64_t j = 0; j < n; j++) {
                int32_t acc = 0;
                for (int64_t p = p0; p < p1; p++) {
                    const int16_t *b2 = bp + (p * ldb + j) * 2;
                    acc += row[2 * p] * b2[0];
                    if (2 * p + 1 < k)
                        acc += row[2 * p + 1] * b2[1];
                }
                c[i * ldc + j] += (int64_t)acc * scale;
            }
        }
    }
}

#ifdef NITRO_X86
/* ---- AVX-512 VNNI: MR rows x NV vectors of 16 columns, vpdpwssd ------------------------------------- */
#define T512 __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline

T512 void flush512(__m512i acc, int64_t *c, int shift)
{
    __m128i sh = _mm_cvtsi32_si128(shift);
    __m512i lo = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)), sh);
    __m512i hi = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)), sh);
    _mm512_storeu_si512(c, _mm512_add_epi64(_mm512_loadu_si512(c), lo));
    _mm512_storeu_si512(c + 8, _mm512_add_epi64(_mm512_loadu_si512(c + 8), hi));
}

T512 void tile512(const int mr, const int nv, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                  int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift)
{
    int64_t pairs = (k + 1) / 2, full = k / 2;
    for (int64_t p0 = 0; p0 < pairs; p0 += kcp) {
        int64_t p1 = p0 + kcp < pairs ? p0 + kcp : pairs;
        __m512i acc[6][2];
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm512_setzero_si512();
        for (int64_t p = p0; p < p1; p++) {
            __m512i b[2];
            for (int v = 0; v < nv; v++)
                b[v] = _mm512_loadu_si512(bp + (p * ldb + 16 * v) * 2);
            for (int i = 0; i < mr; i++) {
                int32_t ap;
                if (p < full) /* false only at an odd K's last pair */
                    memcpy(&ap, a + i * lda + 2 * p, sizeof ap);
                else
                    ap = a_pair(a + i * lda, p, k);
                __m512i av = _mm512_set1_epi32(ap);
                for (int v = 0; v < nv; v++)
                    acc[i][v] = _mm512_dpwssd_epi32(acc[i][v], av, b[v]);
            }
        }
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < nv; v++)
                flush512(acc[i][v], c + i * ldc + 16 * v, shift);
    }
}

#define ROWS512(NV)                                                                                    \
    switch (mr) {                                                                                      \
    case 6: tile512(6, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    case 5: tile512(5, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    case 4: tile512(4, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    case 3: tile512(3, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    case 2: tile512(2, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    default: tile512(1, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    }

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void igemm_avx512vnni(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                             int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift)
{
    /* n is a multiple of 16 (the caller pads B and C) */
    for (int64_t j = 0; j < n; j += 32) {
        for (int64_t i = 0; i < m; i += 6) {
            int mr = (int)(m - i < 6 ? m - i : 6);
            if (n - j >= 32) {
                ROWS512(2)
            } else {
                ROWS512(1)
            }
        }
    }
}

/* ---- AVX2: MR rows x NV vectors of 8 columns, vpmaddwd + vpaddd ------------------------------------- */
#define T256 __attribute__((target("avx2"), always_inline)) static inline

T256 void flush256(__m256i acc, int64_t *c, int shift)
{
    __m128i sh = _mm_cvtsi32_si128(shift);
    __m256i lo = _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc)), sh);
    __m256i hi = _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc, 1)), sh);
    _mm256_storeu_si256((__m256i *)c, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)c), lo));
    _mm256_storeu_si256((__m256i *)(c + 4), _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(c + 4)), hi));
}

T256 void tile256(const int mr, const int nv, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                  int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift)
{
    int64_t pairs = (k + 1) / 2, full = k / 2;
    for (int64_t p0 = 0; p0 < pairs; p0 += kcp) {
        int64_t p1 = p0 + kcp < pairs ? p0 + kcp : pairs;
        __m256i acc[4][2];
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm256_setzero_si256();
        for (int64_t p = p0; p < p1; p++) {
            __m256i b[2];
            for (int v = 0; v < nv; v++)
                b[v] = _mm256_loadu_si256((const __m256i *)(bp + (p * ldb + 8 * v) * 2));
            for (int i = 0; i < mr; i++) {
                int32_t ap;
                if (p < full) /* false only at an odd K's last pair */
                    memcpy(&ap, a + i * lda + 2 * p, sizeof ap);
                else
                    ap = a_pair(a + i * lda, p, k);
                __m256i av = _mm256_set1_epi32(ap);
                for (int v = 0; v < nv; v++)
                    acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(av, b[v]));
            }
        }
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < nv; v++)
                flush256(acc[i][v], c + i * ldc + 8 * v, shift);
    }
}

#define ROWS256(NV)                                                                                    \
    switch (mr) {                                                                                      \
    case 4: tile256(4, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    case 3: tile256(3, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    case 2: tile256(2, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    default: tile256(1, NV, k, a + i * lda, lda, bp + 2 * j, ldb, c + i * ldc + j, ldc, kcp, shift); break; \
    }

__attribute__((target("avx2")))
static void igemm_avx2(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                       int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift)
{
    /* n is a multiple of 16 (the caller pads B and C) */
    for (int64_t j = 0; j < n; j += 16) {
        for (int64_t i = 0; i < m; i += 4) {
            int mr = (int)(m - i < 4 ? m - i : 4);
            ROWS256(2)
        }
    }
}
#endif

/* Bp[p][j][t] = B[(2p+t)*rs + j*cs] for j < n, zero for n <= j < ldb and for 2p+t >= k (see the top). */
void igemm_pack_b(int64_t k, int64_t n, const int16_t *b, int64_t rs, int64_t cs, int16_t *bp, int64_t ldb)
{
    int64_t pairs = (k + 1) / 2;
    memset(bp, 0, (size_t)(pairs * ldb * 2) * sizeof *bp);
    if (rs == 1) { /* K contiguous in the source (B = W^T): read along K */
        for (int64_t j = 0; j < n; j++)
            for (int64_t kk = 0; kk < k; kk++)
                bp[((kk / 2) * ldb + j) * 2 + kk % 2] = b[kk + j * cs];
    } else {
        for (int64_t kk = 0; kk < k; kk++)
            for (int64_t j = 0; j < n; j++)
                bp[((kk / 2) * ldb + j) * 2 + kk % 2] = b[kk * rs + j * cs];
    }
}

/* The conv weight gradient behind a head pool (nitro_mcu/trainer/convgrad.py): for every channel f < c,
 * G[f][:] = sum_{i<n} d[f][i] * X[row[f][i]][:], X [rows][k] with row stride ldx, int64 sums (the caller checks
 * max|d| * max|X| * n < 2**63). */
#define GATHER(NAME, T)                                                                                        \
    void NAME(int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const T *x, int64_t ldx,   \
              int64_t *g)                                                                                      \
    {                                                                                                          \
        for (int64_t f = 0; f < c; f++) {                                                                      \
            int64_t *gf = g + f * k;                                                                           \
            memset(gf, 0, (size_t)k * sizeof *gf);                                                             \
            for (int64_t i = 0; i < n; i++) {                                                                  \
                int64_t dv = d[f * n + i];                                                                     \
                const T *xr = x + row[f * n + i] * ldx;                                                        \
                if (dv != 0)                                                                                   \
                    for (int64_t j = 0; j < k; j++)                                                            \
                        gf[j] += dv * xr[j];                                                                   \
            }                                                                                                  \
        }                                                                                                      \
    }
GATHER(igemm_gather_s8, int8_t)
GATHER(igemm_gather_s16, int16_t)

static const char *const names[] = {"portable", "avx2", "avx512vnni"};
static const kernel_fn kernels[] = {
    igemm_portable,
#ifdef NITRO_X86
    igemm_avx2, igemm_avx512vnni,
#endif
};
static int chosen = -1;

/* The best variant this CPU runs: 2 avx512vnni, 1 avx2, 0 portable. */
static int best_variant(void)
{
#ifdef NITRO_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        return 2;
    if (__builtin_cpu_supports("avx2"))
        return 1;
#endif
    return 0;
}

/* Pin a variant (0 portable, 1 avx2, 2 avx512vnni; -1: the best this CPU has); returns the one in use, or -1
 * if this CPU cannot run the one asked for. */
int igemm_force(int variant)
{
    int best = best_variant();
    if (variant > best)
        return -1;
    chosen = variant < 0 ? best : variant;
    return chosen;
}

const char *igemm_variant(void)
{
    if (chosen < 0)
        chosen = best_variant();
    return names[chosen];
}

void igemm(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp, int64_t ldb,
           int64_t *c, int64_t ldc, int64_t kcp, int shift)
{
    if (chosen < 0)
        chosen = best_variant();
    kernels[chosen](m, n, k, a, lda, bp, ldb, c, ldc, kcp, shift);
}
