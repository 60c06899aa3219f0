/* Exact integer GEMM for the host trainer (nitro_mcu/trainer/intgemm.py; docs/arithmetic.md §2.1).
 *
 *   C[m][n] (+)= 2**shift * sum_k A[m][k] * B[k][n]      (int16 operands, int64 C; add = 0 stores)
 *
 * A is [M][lda] int16 (row m's K values contiguous); B comes packed in K-pairs, Bp[p][n][t] = B[2p+t][n]
 * ([ceil(K/2)][ldb][2], zero where 2p+t >= K), so one 32-bit lane holds the two int16 a 16-bit multiply-add
 * (vpmaddwd, vpdpwssd) pairs with A's (A[m][2p], A[m][2p+1]).  Partial sums are int32 over chunks of
 * kcp K-pairs; the caller proves 2 * kcp * max|A| * max|B| <= INT32_MAX, so no int32 sum can overflow, and
 * that the final int64 sums stay below 2**63.  Each chunk is then added to the int64 C.  The result does not
 * depend on the variant: integer sums are exact in any order.
 *
 * Variants: AMX-INT8 (tdpb*d on byte planes, below), AVX-512 VNNI (vpdpwssd), AVX2 (vpmaddwd + vpaddd), NEON on
 * AArch64 (vmlal_s16 + vpaddq_s32), portable C; igemm_variant() tells which one igemm() runs on this CPU (chosen
 * once, at run time), igemm_force() pins one for the tests.  Large products can run on several threads
 * (igemm_threads, by igemm_run).
 */
#define _POSIX_C_SOURCE 200809L /* pthreads under -std=c11 */
#include <stdint.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define NITRO_THREADS 1
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NITRO_X86 1
/* AMX needs Linux's permission (arch_prctl) and a compiler that knows the tile instructions */
#if defined(__linux__) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#include <cpuid.h>
#define NITRO_AMX 1
long syscall(long number, ...); /* <unistd.h> hides it under -std=c11 */
#endif
#endif
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h> /* NEON is part of every AArch64 core: no run-time check */
#define NITRO_NEON 1
#endif

#pragma GCC poison float double

/* The tiles' loops over rows and vectors run a compile-time count: unrolled, their accumulators stay in registers. */
#define UNROLL _Pragma("GCC unroll 8")

struct scaling;
typedef void (*kernel_fn)(int64_t, int64_t, int64_t, const int16_t *, int64_t, const int16_t *, int64_t,
                          int64_t *, int64_t, int64_t, int, int, int8_t *, const struct scaling *);

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

/* Pair blocks per pass over B: a 32-column panel of 256 K-pairs (32 KiB) stays in L1 while the rows run by. */
#define PAIR_BLOCK 256

/* NITRO-Scaling of an exact int32 sum, clip(v / sf, -127, 127) with C's truncating division, as one multiply:
 * after the clamp |v| <= lim = 128*sf - 1 < 2**31, and floor(u / sf) = (u * magic) >> (31 + l) for every
 * u < 2**31 with l = ceil(log2 sf) and magic = ceil(2**(31+l) / sf) < 2**32 (Granlund and Montgomery 1994,
 * theorem 4.2, N = 31).  scaling_init checks both premises (returns 0 where they fail). */
struct scaling {
    int32_t lim;
    uint32_t magic;
    int sh;
};

static int scaling_init(struct scaling *sc, int64_t sf)
{
    int l = 0;
    while (((int64_t)1 << l) < sf)
        l++;
    if (sf < 1 || 128 * sf > ((int64_t)1 << 31) || l > 32)
        return 0;
    uint64_t big = (uint64_t)1 << (31 + l), usf = (uint64_t)sf;
    uint64_t magic = (big + usf - 1) / usf;
    if (magic >> 32)
        return 0;
    sc->lim = (int32_t)(128 * sf - 1);
    sc->magic = (uint32_t)magic;
    sc->sh = 31 + l;
    return 1;
}

static inline int8_t scale1(int32_t v, const struct scaling *sc)
{
    int32_t c = v > sc->lim ? sc->lim : v < -sc->lim ? -sc->lim : v;
    uint32_t u = (uint32_t)(c < 0 ? -c : c);
    int32_t q = (int32_t)(((uint64_t)u * sc->magic) >> sc->sh);
    return (int8_t)(c < 0 ? -q : q);
}

static void igemm_portable(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                           int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift, int add, int8_t *o,
                           const struct scaling *sc)
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
                if (sc)
                    o[i * ldc + j] = scale1(acc, sc);
                else if (add || p0 > 0)
                    c[i * ldc + j] += (int64_t)acc * scale;
                else
                    c[i * ldc + j] = (int64_t)acc * scale;
            }
        }
    }
}

/* The driver of a SIMD variant: passes of PAIR_BLOCK K-pairs (never across an int32 chunk boundary), each over
 * column panels of NV*W columns and blocks of MR rows (the tile TILE(mr, nv, ...) per block). */
#define DRIVER(NAME, TILE, MR, W)                                                                                 \
    static void NAME(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,          \
                     int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift, int add, int8_t *o,            \
                     const struct scaling *sc)                                                                    \
    {                                                                                                            \
        int64_t pairs = (k + 1) / 2;                                                                             \
        int64_t blk = sc ? kcp : PAIR_BLOCK; /* scaling needs the whole sum at once */                           \
        for (int64_t q0 = 0; q0 < pairs; q0 += kcp) {                                                            \
            int64_t q1 = q0 + kcp < pairs ? q0 + kcp : pairs;                                                    \
            for (int64_t p0 = q0; p0 < q1; p0 += blk) {                                                          \
                int64_t p1 = p0 + blk < q1 ? p0 + blk : q1;                                                      \
                int st = !add && p0 == 0;                                                                        \
                for (int64_t j = 0; j < n; j += 2 * (W)) {                                                       \
                    int two = n - j >= 2 * (W);                                                                  \
                    for (int64_t i = 0; i < m; i += (MR)) {                                                      \
                        const int16_t *ai = a + i * lda;                                                         \
                        const int16_t *bj = bp + 2 * j;                                                          \
                        int64_t *cij = c ? c + i * ldc + j : c;                                                  \
                        int8_t *oij = o ? o + i * ldc + j : o;                                                   \
                        switch ((m - i < (MR) ? (int)(m - i) : (MR)) * 2 + two) {                               \
                        CASES(TILE)                                                                              \
                        default: break;                                                                          \
                        }                                                                                        \
                    }                                                                                            \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }
#define CASE(TILE, R)                                                                                             \
    case 2 * (R): TILE(R, 1, k, p0, p1, ai, lda, bj, ldb, cij, oij, ldc, shift, st, sc); break;                   \
    case 2 * (R) + 1: TILE(R, 2, k, p0, p1, ai, lda, bj, ldb, cij, oij, ldc, shift, st, sc); break;

/* The two int16 of A's pair p in a row as one 32-bit lane, both halves in A (p < K/2). */
static inline int32_t a_word(const int16_t *row, int64_t p)
{
    int32_t out;
    memcpy(&out, row + 2 * p, sizeof out);
    return out;
}

/* One K-pair step of a tile: NV vectors of Bp, then each row's A pair (PAIR, in terms of i) against them. */
#define TILE_STEP(OPV, W, LOADB, BCAST, DP, PAIR)                                                                \
    {                                                                                                            \
        OPV b[2];                                                                                                \
        UNROLL for (int v = 0; v < nv; v++)                                                                      \
            b[v] = LOADB(bp + (p * ldb + (W) * v) * 2);                                                          \
        UNROLL for (int i = 0; i < mr; i++) {                                                                    \
            OPV av = BCAST(PAIR);                                                                                \
            UNROLL for (int v = 0; v < nv; v++)                                                                  \
                acc[i][v] = DP(acc[i][v], av, b[v]);                                                             \
        }                                                                                                        \
    }

/* A tile: mr rows x nv vectors of W int32 columns over K-pairs [p0, p1), int32 accumulators (VEC) in registers,
 * then flushed into the int64 C or scaled into the int8 o; OPV is the operand vector (Bp's pairs, A's pair). */
#define TILE(NAME, ATTR, VEC, OPV, MAXR, W, ZERO, LOADB, BCAST, DP, FLUSH, SCALE)                               \
    ATTR void NAME(const int mr, const int nv, int64_t k, int64_t p0, int64_t p1, const int16_t *a, int64_t lda, \
                   const int16_t *bp, int64_t ldb, int64_t *c, int8_t *o, int64_t ldc, int shift, int st,       \
                   const struct scaling *sc)                                                                     \
    {                                                                                                            \
        int64_t full = k / 2;                                                                                    \
        VEC acc[MAXR][2];                                                                                        \
        UNROLL for (int i = 0; i < mr; i++)                                                                      \
            UNROLL for (int v = 0; v < nv; v++)                                                                  \
                acc[i][v] = ZERO();                                                                              \
        int64_t pe = p1 < full ? p1 : full; /* pairs with both halves in A; an odd K's last pair is the tail */  \
        for (int64_t p = p0; p < pe; p++)                                                                        \
            TILE_STEP(OPV, W, LOADB, BCAST, DP, a_word(a + i * lda, p))                                          \
        for (int64_t p = pe; p < p1; p++)                                                                        \
            TILE_STEP(OPV, W, LOADB, BCAST, DP, a_pair(a + i * lda, p, k))                                       \
        UNROLL for (int i = 0; i < mr; i++)                                                                      \
            UNROLL for (int v = 0; v < nv; v++) {                                                                \
                if (sc)                                                                                          \
                    SCALE(acc[i][v], o + i * ldc + (W) * v, sc);                                                 \
                else                                                                                             \
                    FLUSH(acc[i][v], c + i * ldc + (W) * v, shift, st);                                          \
            }                                                                                                    \
    }

#ifdef NITRO_X86
/* ---- AVX-512 VNNI: MR rows x NV vectors of 16 int32 columns, vpdpwssd -------------------------------- */
#define T512 __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline

T512 __m512i load512(const int16_t *p)
{
    return _mm512_loadu_si512(p);
}
T512 __m512i dp512(__m512i acc, __m512i a, __m512i b)
{
    return _mm512_dpwssd_epi32(acc, a, b);
}

T512 void flush512(__m512i acc, int64_t *c, int shift, int st)
{
    __m128i sh = _mm_cvtsi32_si128(shift);
    __m512i lo = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)), sh);
    __m512i hi = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)), sh);
    if (!st) {
        lo = _mm512_add_epi64(_mm512_loadu_si512(c), lo);
        hi = _mm512_add_epi64(_mm512_loadu_si512(c + 8), hi);
    }
    _mm512_storeu_si512(c, lo);
    _mm512_storeu_si512(c + 8, hi);
}

/* 16 int32 sums -> 16 int8 (scale1, vectorised: the magic multiply on even and odd lanes) */
T512 void scale512(__m512i v, int8_t *o, const struct scaling *sc)
{
    __m512i lim = _mm512_set1_epi32(sc->lim), magic = _mm512_set1_epi32((int32_t)sc->magic);
    __m128i sh = _mm_cvtsi32_si128(sc->sh);
    v = _mm512_max_epi32(_mm512_min_epi32(v, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
    __mmask16 neg = _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512());
    __m512i u = _mm512_abs_epi32(v);
    __m512i even = _mm512_srl_epi64(_mm512_mul_epu32(u, magic), sh);
    __m512i odd = _mm512_srl_epi64(_mm512_mul_epu32(_mm512_srli_epi64(u, 32), magic), sh);
    __m512i q = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    q = _mm512_mask_sub_epi32(q, neg, _mm512_setzero_si512(), q);
    _mm_storeu_si128((__m128i *)o, _mm512_cvtepi32_epi8(q));
}

TILE(tile512, T512, __m512i, __m512i, 6, 16, _mm512_setzero_si512, load512, _mm512_set1_epi32, dp512, flush512,
     scale512)

#define CASES(TILE) CASE(TILE, 6) CASE(TILE, 5) CASE(TILE, 4) CASE(TILE, 3) CASE(TILE, 2) CASE(TILE, 1)
__attribute__((target("avx512f,avx512bw,avx512vnni"))) DRIVER(igemm_avx512vnni, tile512, 6, 16)
#undef CASES

/* ---- AVX2: MR rows x NV vectors of 8 int32 columns, vpmaddwd + vpaddd -------------------------------- */
#define T256 __attribute__((target("avx2"), always_inline)) static inline

T256 __m256i load256(const int16_t *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}
T256 __m256i dp256(__m256i acc, __m256i a, __m256i b)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}

T256 void flush256(__m256i acc, int64_t *c, int shift, int st)
{
    __m128i sh = _mm_cvtsi32_si128(shift);
    __m256i lo = _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc)), sh);
    __m256i hi = _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc, 1)), sh);
    if (!st) {
        lo = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)c), lo);
        hi = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(c + 4)), hi);
    }
    _mm256_storeu_si256((__m256i *)c, lo);
    _mm256_storeu_si256((__m256i *)(c + 4), hi);
}

T256 void scale256(__m256i v, int8_t *o, const struct scaling *sc)
{
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, v);
    for (int t = 0; t < 8; t++)
        o[t] = scale1(lanes[t], sc);
}

TILE(tile256, T256, __m256i, __m256i, 4, 8, _mm256_setzero_si256, load256, _mm256_set1_epi32, dp256, flush256, scale256)

#define CASES(TILE) CASE(TILE, 4) CASE(TILE, 3) CASE(TILE, 2) CASE(TILE, 1)
__attribute__((target("avx2"))) DRIVER(igemm_avx2, tile256, 4, 8)
#undef CASES
#endif

#ifdef NITRO_AMX
/* ---- AMX-INT8: 16 x 16 int32 tiles, tdpb{s,u}{s,u}d over K-quads of bytes ---------------------------------------
 * Each int16 operand is cut into two exact byte planes, v = 256 h + l with l = v & 255 (unsigned) and h = (v - l) /
 * 256 in [-128, 127] (signed); where every value of a block lies in int8, l read as signed is v itself and one plane
 * does.  Each plane product runs on the tdpb variant of its two signs, and they are put together in int64:
 * 65536 hh + 256 (hl + lh) + ll.  A plane product is below 2**16 in magnitude (255 * 255), so an int32 tile sum over
 * at most AMX_KCHUNK = 2**14 K values cannot overflow, whatever kcp says; chunks add in int64.  Tiles 0-3
 * accumulate, 4-5 hold A (two row blocks of one plane, or one block's two planes), 6-7 B (likewise for columns): two
 * tiles of A against two of B, four products per K-block of 64. */
#define AMX_KCHUNK 16384
#define TAMX __attribute__((target("avx512f,avx512bw,amx-tile,amx-int8")))

struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Tile (plane, block, kblock) of a packed operand: 16 rows of 64 bytes, 1 KiB, the kblocks of a block contiguous. */
#define AMX_TILE(base, blocks, nkb, pl, blk, kb) ((base) + ((((pl) * (blocks) + (blk)) * (nkb) + (kb)) << 10))

/* The high (plane 0: floor(v / 256), vpsraw) and low (plane 1) bytes of 32 int16. */
TAMX static inline __m256i amx_plane(__m512i v, int plane)
{
    return _mm512_cvtepi16_epi8(plane == 0 ? _mm512_srai_epi16(v, 8) : v);
}

/* Whether running minima and maxima of int16 lanes lie in int8 (one byte plane then holds the values). */
TAMX static inline int amx_in_s8(__m512i mn, __m512i mx)
{
    return !_mm512_cmplt_epi16_mask(mn, _mm512_set1_epi16(-128)) &&
           !_mm512_cmpgt_epi16_mask(mx, _mm512_set1_epi16(127));
}

/* Rows [r0, r0 + 32) of A [m][lda] into both planes of two row blocks (zero past m and k); returns whether all of
 * them lie in int8. */
TAMX static int amx_pack_a(int64_t m, int64_t k, const int16_t *a, int64_t lda, int64_t r0, int64_t nkb,
                           uint8_t *out)
{
    __m512i mn = _mm512_setzero_si512(), mx = mn;
    for (int64_t r = 0; r < 32; r++)
        for (int64_t kb = 0; kb < nkb; kb++)
            for (int h = 0; h < 2; h++) { /* K values kb*64 + 32h .. + 31 */
                int64_t at = kb * 64 + 32 * h, len = r0 + r >= m || k <= at ? 0 : k - at < 32 ? k - at : 32;
                __mmask32 mk = (__mmask32)(len == 32 ? ~0u : (1u << len) - 1u);
                __m512i v = _mm512_maskz_loadu_epi16(mk, a + (len ? (r0 + r) * lda + at : 0));
                mn = _mm512_min_epi16(mn, v);
                mx = _mm512_max_epi16(mx, v);
                for (int pl = 0; pl < 2; pl++)
                    _mm256_storeu_si256((__m256i *)(AMX_TILE(out, 2, nkb, pl, r / 16, kb) + (r % 16) * 64 + 32 * h),
                                        amx_plane(v, pl));
            }
    return amx_in_s8(mn, mx);
}

/* B from its K-pairs (Bp[p][j][t] = B[2p+t][j], ldb) into both planes of `blocks` column blocks (zero past n and
 * k): row q of a tile, bytes 4 jj .. 4 jj + 3 = B[kb*64 + 4q .. + 3][block*16 + jj] (the K-quad tdpb*d multiplies
 * with A's row): pairs 2q and 2q+1 of 16 columns, their 16-bit units interleaved.  Returns whether B lies in int8. */
TAMX static int amx_pack_b(int64_t n, int64_t k, const int16_t *bp, int64_t ldb, int64_t blocks, int64_t nkb,
                           uint8_t *out)
{
    int64_t pairs = (k + 1) / 2;
    const __m512i zip = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512i mn = _mm512_setzero_si512(), mx = mn;
    for (int64_t p = 0; p < nkb * 32; p += 2)
        for (int64_t j = 0; j < blocks * 16; j += 16) {
            int64_t cols = n - j < 0 ? 0 : n - j < 16 ? n - j : 16;
            __mmask32 mk = (__mmask32)(cols == 16 ? ~0u : (1u << (2 * cols)) - 1u);
            __m512i p0 = _mm512_maskz_loadu_epi16(p < pairs ? mk : 0, bp + (p < pairs && cols ? (p * ldb + j) * 2 : 0));
            __m512i p1 = _mm512_maskz_loadu_epi16(p + 1 < pairs ? mk : 0,
                                                  bp + (p + 1 < pairs && cols ? ((p + 1) * ldb + j) * 2 : 0));
            mn = _mm512_min_epi16(mn, _mm512_min_epi16(p0, p1));
            mx = _mm512_max_epi16(mx, _mm512_max_epi16(p0, p1));
            for (int pl = 0; pl < 2; pl++) {
                __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(amx_plane(p0, pl)), amx_plane(p1, pl), 1);
                _mm512_storeu_si512(AMX_TILE(out, blocks, nkb, pl, j / 16, p / 32) + (p % 32) / 2 * 64,
                                    _mm512_permutexvar_epi16(zip, both));
            }
        }
    return amx_in_s8(mn, mx);
}

/* K-blocks [kb0, kb1) of the four products: tile 2i+j += A tile i . B tile j, OPij the signs' tdpb*d. */
#define AMX_STEPS(O00, O01, O10, O11)                                                                            \
    for (int64_t kb = kb0; kb < kb1; kb++) {                                                                     \
        _tile_loadd(4, a0 + (kb << 10), 64);                                                                     \
        _tile_loadd(5, a1 + (kb << 10), 64);                                                                     \
        _tile_loadd(6, b0 + (kb << 10), 64);                                                                     \
        _tile_loadd(7, b1 + (kb << 10), 64);                                                                     \
        O00(0, 4, 6);                                                                                            \
        O01(1, 4, 7);                                                                                            \
        O10(2, 5, 6);                                                                                            \
        O11(3, 5, 7);                                                                                            \
    }

/* One operand's side of a group: tiles 0 and 1 (kblock 0; the rest follow), and whether tile 1 is tile 0's low plane
 * (split) rather than the next block's. */
struct amx_side {
    const uint8_t *t0, *t1;
    int split;
};

/* The four products of a group over all of K into sums[4][256] (int64, per output block 2i+j: i the row block if
 * A's tiles are two blocks, j likewise), each plane product weighted 256 per high plane in it. */
TAMX static void amx_group(const struct amx_side *as, const struct amx_side *bs, int64_t nkb, int64_t sum[4][256])
{
    const uint8_t *a0 = as->t0, *a1 = as->t1, *b0 = bs->t0, *b1 = bs->t1;
    int32_t tile[4][256];
    for (int64_t kb0 = 0; kb0 < nkb; kb0 += AMX_KCHUNK / 64) {
        int64_t kb1 = kb0 + AMX_KCHUNK / 64 < nkb ? kb0 + AMX_KCHUNK / 64 : nkb;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        if (!as->split && !bs->split)
            AMX_STEPS(_tile_dpbssd, _tile_dpbssd, _tile_dpbssd, _tile_dpbssd)
        else if (!bs->split) /* A's high plane (signed) in tile 4, its low plane (unsigned) in 5 */
            AMX_STEPS(_tile_dpbssd, _tile_dpbssd, _tile_dpbusd, _tile_dpbusd)
        else if (!as->split)
            AMX_STEPS(_tile_dpbssd, _tile_dpbsud, _tile_dpbssd, _tile_dpbsud)
        else
            AMX_STEPS(_tile_dpbssd, _tile_dpbsud, _tile_dpbusd, _tile_dpbuud)
        _tile_stored(0, tile[0], 64);
        _tile_stored(1, tile[1], 64);
        _tile_stored(2, tile[2], 64);
        _tile_stored(3, tile[3], 64);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                int out = (as->split ? 0 : 2 * i) + (bs->split ? 0 : j);
                int64_t w = (int64_t)1 << (8 * ((as->split && i == 0) + (bs->split && j == 0)));
                int first = kb0 == 0 && (as->split ? i == 0 : 1) && (bs->split ? j == 0 : 1);
                if (first)
                    for (int e = 0; e < 256; e++)
                        sum[out][e] = tile[2 * i + j][e] * w;
                else
                    for (int e = 0; e < 256; e++)
                        sum[out][e] += tile[2 * i + j][e] * w;
            }
    }
}

/* Below these the tile set-up and the int64 sums cost more than VNNI's products: AVX-512 VNNI runs them. */
#define AMX_MIN_K 128
#define AMX_MIN_M 16
/* A packed whole (all row groups, then B in panels of AMX_PANEL bytes) where that takes at most AMX_WHOLE_A bytes,
 * else 32 rows at a time against all of B (mlp4's 3 000 x 3 072 weights by a 64-column batch). */
#define AMX_WHOLE_A ((int64_t)4 << 20)
#define AMX_PANEL ((int64_t)512 << 10)

TAMX static void igemm_amx(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *bp,
                           int64_t ldb, int64_t *c, int64_t ldc, int64_t kcp, int shift, int add, int8_t *o,
                           const struct scaling *sc)
{
    int64_t nkb = (k + 63) / 64, cblocks = (n + 31) / 32 * 2; /* even: a group's second block exists, zero */
    int64_t groups = (m + 31) / 32, group_bytes = (4 * nkb) << 10;
    int whole = groups * group_bytes <= AMX_WHOLE_A;
    uint8_t *pa = k < AMX_MIN_K || m < AMX_MIN_M ? NULL : malloc((size_t)(whole ? groups * group_bytes : group_bytes));
    uint8_t *pb = pa ? malloc((size_t)(2 * cblocks * nkb) << 10) : NULL;
    int8_t *fits = pa ? malloc((size_t)groups) : NULL;
    if (!pa || !pb || !fits) { /* small, or no memory for the byte planes: the same sums on AVX-512 VNNI */
        free(pa);
        free(pb);
        free(fits);
        igemm_avx512vnni(m, n, k, a, lda, bp, ldb, c, ldc, kcp, shift, add, o, sc);
        return;
    }
    int b_s8 = amx_pack_b(n, k, bp, ldb, cblocks, nkb, pb);
    if (whole)
        for (int64_t g = 0; g < groups; g++)
            fits[g] = (int8_t)amx_pack_a(m, k, a, lda, 32 * g, nkb, pa + g * group_bytes);
    struct amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++)
        cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    int64_t scale = (int64_t)1 << shift, cstep = b_s8 ? 2 : 1;
    int64_t panel = whole ? AMX_PANEL / ((2 * nkb) << 10) / 2 * 2 : cblocks;
    panel = panel > 2 ? panel : 2;
    int64_t sum[4][256];
    for (int64_t c0 = 0; c0 < cblocks && 16 * c0 < n; c0 += panel)
        for (int64_t g = 0; g < groups; g++) {
            const uint8_t *ga = whole ? pa + g * group_bytes : pa;
            int a_s8 = whole ? fits[g] : amx_pack_a(m, k, a, lda, 32 * g, nkb, pa);
            for (int64_t rb = 0; rb < 2 && 32 * g + 16 * rb < m; rb += a_s8 ? 2 : 1) {
                struct amx_side as = {AMX_TILE(ga, 2, nkb, a_s8, rb, 0), AMX_TILE(ga, 2, nkb, 1, rb + a_s8, 0),
                                      !a_s8};
                for (int64_t cb = c0; cb < c0 + panel && cb < cblocks && 16 * cb < n; cb += cstep) {
                    struct amx_side bs = {AMX_TILE(pb, cblocks, nkb, b_s8, cb, 0),
                                          AMX_TILE(pb, cblocks, nkb, 1, cb + b_s8, 0), !b_s8};
                    amx_group(&as, &bs, nkb, sum);
                    for (int ob = 0; ob < 4; ob++) {
                        if ((ob / 2 && as.split) || (ob % 2 && bs.split))
                            continue; /* a split operand's group fills block 0 of its side alone */
                        int64_t i0 = 32 * g + 16 * (rb + ob / 2), j0 = 16 * (cb + ob % 2);
                        int64_t rows = m - i0 < 16 ? m - i0 : 16, cols = n - j0 < 16 ? n - j0 : 16;
                        for (int64_t r = 0; r < rows; r++) {
                            const int64_t *s = sum[ob] + 16 * r;
                            if (o)
                                for (int64_t jj = 0; jj < cols; jj++)
                                    o[(i0 + r) * ldc + j0 + jj] = scale1((int32_t)s[jj], sc);
                            else if (add)
                                for (int64_t jj = 0; jj < cols; jj++)
                                    c[(i0 + r) * ldc + j0 + jj] += s[jj] * scale;
                            else
                                for (int64_t jj = 0; jj < cols; jj++)
                                    c[(i0 + r) * ldc + j0 + jj] = s[jj] * scale;
                        }
                    }
                }
            }
        }
    _tile_release();
    free(pa);
    free(pb);
    free(fits);
}
#endif

#ifdef NITRO_NEON
/* ---- NEON (AArch64): MR rows x NV vectors of 4 int32 columns, vmlal_s16 / vmlal_high_s16 ---------------------
 * NEON has no pairwise 16-bit multiply-add, so a vector keeps the pair's two halves apart: lanes (column, t) of
 * lo = columns 0-1 and hi = columns 2-3, each summing the products of one half.  The flush adds the halves with
 * vpaddq_s32, an int32 add like vpmaddwd's: every int32 sum (a half's, the pair's) is the x86 sum of its chunk or
 * a part of it, so the chunk bound of the top covers them, and past it they wrap the same way. */
#define TNEON __attribute__((always_inline)) static inline
typedef struct {
    int32x4_t lo, hi;
} acc_neon;

TNEON acc_neon zero_neon(void)
{
    acc_neon z = {vdupq_n_s32(0), vdupq_n_s32(0)};
    return z;
}
TNEON int16x8_t bcast_neon(int32_t pair)
{
    return vreinterpretq_s16_s32(vdupq_n_s32(pair));
}
TNEON acc_neon dp_neon(acc_neon acc, int16x8_t a, int16x8_t b)
{
    acc.lo = vmlal_s16(acc.lo, vget_low_s16(a), vget_low_s16(b));
    acc.hi = vmlal_high_s16(acc.hi, a, b);
    return acc;
}

TNEON void flush_neon(acc_neon acc, int64_t *c, int shift, int st)
{
    int32x4_t sum = vpaddq_s32(acc.lo, acc.hi);
    int64x2_t sh = vdupq_n_s64(shift);
    int64x2_t lo = vshlq_s64(vmovl_s32(vget_low_s32(sum)), sh), hi = vshlq_s64(vmovl_high_s32(sum), sh);
    if (!st) {
        lo = vaddq_s64(vld1q_s64(c), lo);
        hi = vaddq_s64(vld1q_s64(c + 2), hi);
    }
    vst1q_s64(c, lo);
    vst1q_s64(c + 2, hi);
}

TNEON void scale_neon(acc_neon acc, int8_t *o, const struct scaling *sc)
{
    int32_t lanes[4];
    vst1q_s32(lanes, vpaddq_s32(acc.lo, acc.hi));
    for (int t = 0; t < 4; t++)
        o[t] = scale1(lanes[t], sc);
}

TILE(tile_neon, TNEON, acc_neon, int16x8_t, 6, 4, zero_neon, vld1q_s16, bcast_neon, dp_neon, flush_neon, scale_neon)

#define CASES(TILE) CASE(TILE, 6) CASE(TILE, 5) CASE(TILE, 4) CASE(TILE, 3) CASE(TILE, 2) CASE(TILE, 1)
DRIVER(igemm_neon, tile_neon, 6, 4)
#undef CASES
#endif

/* Bp[p][j][t] = B[(2p+t)*rs + j*cs] for j < n, zero for n <= j < width and for 2p+t >= k (see the top); a thread
 * packs its own window of columns (b and bp offset to the window's first column, width its columns). */
static void pack_b(int64_t k, int64_t n, const int16_t *b, int64_t rs, int64_t cs, int16_t *bp, int64_t ldb,
                   int64_t width)
{
    int64_t pairs = (k + 1) / 2, full = k / 2;
    if (rs == 1) { /* B = W^T: pair p of column j is one 32-bit word of W's row j; blocks of 16 columns keep the 16
                    * rows read and the pair rows written in L1 (a whole pair row per p misses on every row of W) */
        for (int64_t j0 = 0; j0 < n; j0 += 16) {
            int64_t j1 = j0 + 16 < n ? j0 + 16 : n;
            for (int64_t p = 0; p < full; p++)
                for (int64_t j = j0; j < j1; j++)
                    memcpy(bp + (p * ldb + j) * 2, b + j * cs + 2 * p, 4);
        }
    } else if (cs == 1) { /* B row-major (an activation): two rows interleaved, as 32-bit words */
        for (int64_t p = 0; p < full; p++) {
            const int16_t *r0 = b + 2 * p * rs, *r1 = r0 + rs;
            int16_t *out = bp + p * ldb * 2;
            for (int64_t j = 0; j < n; j++) {
                uint32_t v = (uint32_t)(uint16_t)r0[j] | ((uint32_t)(uint16_t)r1[j] << 16);
                memcpy(out + 2 * j, &v, 4);
            }
        }
    } else {
        for (int64_t p = 0; p < full; p++) {
            const int16_t *r0 = b + 2 * p * rs, *r1 = r0 + rs;
            int16_t *out = bp + p * ldb * 2;
            for (int64_t j = 0; j < n; j++) {
                out[2 * j] = r0[j * cs];
                out[2 * j + 1] = r1[j * cs];
            }
        }
    }
    for (int64_t p = full; p < pairs; p++) { /* an odd K's last pair: its second half is zero */
        int16_t *out = bp + p * ldb * 2;
        for (int64_t j = 0; j < n; j++) {
            out[2 * j] = b[2 * p * rs + j * cs];
            out[2 * j + 1] = 0;
        }
    }
    for (int64_t p = 0; p < pairs; p++)
        memset(bp + (p * ldb + n) * 2, 0, (size_t)(2 * (width - n)) * sizeof *bp);
}

/* The conv weight gradient behind a head pool (nitro_mcu/trainer/convgrad.py): for every channel f < c,
 * G[f][:] = sum_{i<n} d[f][i] * X[row[f][i]][:], X [rows][k] with row stride ldx, int64 sums (the caller checks
 * max|d| * max|X| * n < 2**63).  The AVX-512 variant multiplies with vpmuldq (32 x 32 -> 64 bits), so it takes
 * |d| < 2**31 (narrow != 0, the caller's check); 32 columns of G stay in four registers while the rows run by. */
#define GATHER_PORTABLE(NAME, T)                                                                               \
    static void NAME(int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const T *x,        \
                     int64_t ldx, int64_t *g)                                                                  \
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
GATHER_PORTABLE(gather_s8_portable, int8_t)
GATHER_PORTABLE(gather_s16_portable, int16_t)

#ifdef NITRO_X86
#define TG512 __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline
TG512 __m512i widen_s8(const int8_t *p, __mmask8 mask)
{
    return _mm512_cvtepi8_epi64(_mm_maskz_loadu_epi8((__mmask16)mask, p));
}
TG512 __m512i widen_s16(const int16_t *p, __mmask8 mask)
{
    return _mm512_cvtepi16_epi64(_mm_maskz_loadu_epi16(mask, p));
}

#define GATHER_AVX512(NAME, T, WIDEN)                                                                          \
    __attribute__((target("avx512f,avx512bw,avx512vl"))) static void NAME(                                     \
        int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const T *x, int64_t ldx,        \
        int64_t *g)                                                                                            \
    {                                                                                                          \
        for (int64_t f = 0; f < c; f++) {                                                                      \
            for (int64_t j0 = 0; j0 < k; j0 += 32) {                                                           \
                int64_t r = k - j0 < 32 ? k - j0 : 32;                                                         \
                __mmask8 mk[4];                                                                                \
                for (int v = 0; v < 4; v++) {                                                                  \
                    int64_t w = r - 8 * v < 0 ? 0 : r - 8 * v > 8 ? 8 : r - 8 * v;                             \
                    mk[v] = (__mmask8)((1u << w) - 1u);                                                        \
                }                                                                                              \
                __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                  \
                for (int64_t i = 0; i < n; i++) {                                                              \
                    int64_t dv = d[f * n + i];                                                                 \
                    if (dv == 0)                                                                               \
                        continue;                                                                              \
                    const T *xr = x + row[f * n + i] * ldx + j0;                                               \
                    __m512i dd = _mm512_set1_epi64(dv);                                                        \
                    acc0 = _mm512_add_epi64(acc0, _mm512_mul_epi32(dd, WIDEN(xr, mk[0])));                     \
                    if (r > 8)                                                                                 \
                        acc1 = _mm512_add_epi64(acc1, _mm512_mul_epi32(dd, WIDEN(xr + 8, mk[1])));             \
                    if (r > 16)                                                                                \
                        acc2 = _mm512_add_epi64(acc2, _mm512_mul_epi32(dd, WIDEN(xr + 16, mk[2])));            \
                    if (r > 24)                                                                                \
                        acc3 = _mm512_add_epi64(acc3, _mm512_mul_epi32(dd, WIDEN(xr + 24, mk[3])));            \
                }                                                                                              \
                int64_t *gf = g + f * k + j0;                                                                  \
                _mm512_mask_storeu_epi64(gf, mk[0], acc0);                                                     \
                _mm512_mask_storeu_epi64(gf + 8, mk[1], acc1);                                                 \
                _mm512_mask_storeu_epi64(gf + 16, mk[2], acc2);                                                \
                _mm512_mask_storeu_epi64(gf + 24, mk[3], acc3);                                                \
            }                                                                                                  \
        }                                                                                                      \
    }
GATHER_AVX512(gather_s8_avx512, int8_t, widen_s8)
GATHER_AVX512(gather_s16_avx512, int16_t, widen_s16)
#endif

#ifdef NITRO_NEON
/* 8 columns of X as int32 (two vectors), for vmlal_s32 / vmlal_high_s32 (32 x 32 -> 64 bits, as vpmuldq) */
TNEON int32x4x2_t widen8_s16(int16x8_t v)
{
    int32x4x2_t w = {{vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v)}};
    return w;
}
#define WIDEN_S8(p) widen8_s16(vmovl_s8(vld1_s8(p)))
#define WIDEN_S16(p) widen8_s16(vld1q_s16(p))

#define GATHER_NEON(NAME, T, WIDEN)                                                                            \
    static void NAME(int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const T *x,        \
                     int64_t ldx, int64_t *g)                                                                  \
    {                                                                                                          \
        int64_t k8 = k / 8 * 8;                                                                                \
        for (int64_t f = 0; f < c; f++) {                                                                      \
            int64_t *gf = g + f * k;                                                                           \
            for (int64_t j0 = 0; j0 < k8; j0 += 8) {                                                           \
                int64x2_t acc0 = vdupq_n_s64(0), acc1 = acc0, acc2 = acc0, acc3 = acc0;                        \
                for (int64_t i = 0; i < n; i++) {                                                              \
                    int64_t dv = d[f * n + i];                                                                 \
                    if (dv == 0)                                                                               \
                        continue;                                                                              \
                    int32x4x2_t xv = WIDEN(x + row[f * n + i] * ldx + j0);                                     \
                    int32x4_t dd = vdupq_n_s32((int32_t)dv);                                                   \
                    acc0 = vmlal_s32(acc0, vget_low_s32(xv.val[0]), vget_low_s32(dd));                         \
                    acc1 = vmlal_high_s32(acc1, xv.val[0], dd);                                                \
                    acc2 = vmlal_s32(acc2, vget_low_s32(xv.val[1]), vget_low_s32(dd));                         \
                    acc3 = vmlal_high_s32(acc3, xv.val[1], dd);                                                \
                }                                                                                              \
                vst1q_s64(gf + j0, acc0);                                                                      \
                vst1q_s64(gf + j0 + 2, acc1);                                                                  \
                vst1q_s64(gf + j0 + 4, acc2);                                                                  \
                vst1q_s64(gf + j0 + 6, acc3);                                                                  \
            }                                                                                                  \
            for (int64_t j = k8; j < k; j++) { /* the last k % 8 columns */                                    \
                int64_t s = 0;                                                                                 \
                for (int64_t i = 0; i < n; i++)                                                                \
                    s += d[f * n + i] * x[row[f * n + i] * ldx + j];                                           \
                gf[j] = s;                                                                                     \
            }                                                                                                  \
        }                                                                                                      \
    }
GATHER_NEON(gather_s8_neon, int8_t, WIDEN_S8)
GATHER_NEON(gather_s16_neon, int16_t, WIDEN_S16)
#endif

static const char *const names[] = {"portable", "avx2", "avx512vnni", "neon", "amx"};
#ifdef NITRO_X86
#ifdef NITRO_AMX
static const kernel_fn kernels[] = {igemm_portable, igemm_avx2, igemm_avx512vnni, NULL, igemm_amx};
#else
static const kernel_fn kernels[] = {igemm_portable, igemm_avx2, igemm_avx512vnni, NULL, NULL};
#endif
#elif defined(NITRO_NEON)
static const kernel_fn kernels[] = {igemm_portable, NULL, NULL, igemm_neon, NULL};
#else
static const kernel_fn kernels[] = {igemm_portable, NULL, NULL, NULL, NULL};
#endif
/* Atomic: Python threads (ctypes drops the GIL) may make the first call at once. */
static _Atomic int chosen = -1;
#ifdef NITRO_X86
static int avx512_sgd = 0; /* set by find_best: AVX-512 F/BW/VL/DQ for the update, while a SIMD variant runs */
#endif

#ifdef NITRO_AMX
/* AMX-TILE and AMX-INT8 in CPUID leaf 7 (EDX bits 24, 25), and Linux's leave to use the tile data (asked once per
 * process: ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; kernels before 5.16 refuse it). */
static int amx_usable(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) || !(edx & (1u << 25)))
        return 0;
    return syscall(158 /* SYS_arch_prctl */, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}
#endif

/* The best variant this CPU runs: 4 amx, 3 neon (every AArch64 core), 2 avx512vnni, 1 avx2, 0 portable. */
static int best_variant_probe(void)
{
#ifdef NITRO_X86
    __builtin_cpu_init();
    avx512_sgd = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni")) {
#ifdef NITRO_AMX
        if (amx_usable())
            return 4;
#endif
        return 2;
    }
    if (__builtin_cpu_supports("avx2"))
        return 1;
#elif defined(NITRO_NEON)
    return 3;
#endif
    return 0;
}

static int best = 0;

static void find_best(void)
{
    best = best_variant_probe();
}

/* best_variant_probe once per process (the AMX permission is asked once), whichever thread calls first. */
static int best_variant(void)
{
#ifdef NITRO_THREADS
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, find_best);
#else
    static int probed = 0;
    if (!probed) {
        find_best();
        probed = 1;
    }
#endif
    return best;
}

/* Pin a variant (0 portable, 1 avx2, 2 avx512vnni, 3 neon, 4 amx; -1: the best this CPU has); returns the one in
 * use, or -1 if this build or CPU cannot run the one asked for (x86: the variants up to the best, which imply the
 * lower). */
int igemm_force(int variant)
{
    const int top = best_variant();
    if (variant > 4 || (variant > 0 && (kernels[variant] == NULL || variant > top)))
        return -1;
    chosen = variant < 0 ? top : variant;
    return variant < 0 ? top : variant;
}

const char *igemm_variant(void)
{
    int c = chosen;
    if (c < 0) {
        int unset = -1;
        c = best_variant();
        if (!atomic_compare_exchange_strong(&chosen, &unset, c))
            c = unset; /* another thread chose first, or igemm_force pinned one */
    }
    return names[c];
}

/* One product's share of the work: columns [j0, j1) of the output (packing those columns of B first, b != NULL) and
 * rows [i0, i1) of A. */
struct part {
    int64_t m, n, k, lda, rsb, csb, ldb, kcp, i0, i1, j0, j1;
    const int16_t *a, *b;
    int16_t *scratch;
    int64_t *c;
    int8_t *o;
    int shift, add;
    const struct scaling *sc;
};

static void run_part(const struct part *w)
{
    int64_t cols = w->j1 - w->j0, have = w->n - w->j0;
    if (w->b)
        pack_b(w->k, have < 0 ? 0 : have < cols ? have : cols, w->b + w->j0 * w->csb, w->rsb, w->csb,
               w->scratch + 2 * w->j0, w->ldb, cols);
    const int16_t *a = w->a + w->i0 * w->lda, *bp = w->scratch + 2 * w->j0;
    int64_t off = w->i0 * w->ldb + w->j0;
    if (w->o)
        kernels[chosen](w->i1 - w->i0, cols, w->k, a, w->lda, bp, w->ldb, NULL, w->ldb, (w->k + 1) / 2 + 1, 0, 0,
                        w->o + off, w->sc);
    else
        kernels[chosen](w->i1 - w->i0, cols, w->k, a, w->lda, bp, w->ldb, w->c + off, w->ldb, w->kcp, w->shift,
                        w->add, NULL, NULL);
}

/* Threads for one product (igemm_threads; 1 by default): a product of at least THREAD_MACS multiply-adds is cut into
 * that many parts, by columns where each part gets 32 or more (B's panels apart, each thread packs its own), else
 * by rows (B packed first); on AMX by rows where A has more rows than B columns (each part packs the other operand's
 * byte planes whole: the smaller one then).  The parts write disjoint outputs from the same integer sums, so the
 * result is the same for any thread count. */
#define MAX_THREADS 8
#define THREAD_MACS ((int64_t)1 << 24)
static int n_threads = 1;

/* Set the thread count (1..MAX_THREADS, more is MAX_THREADS; 0 or less leaves it) and return the one in force. */
int igemm_threads(int threads)
{
    if (threads >= 1)
        n_threads = threads < MAX_THREADS ? threads : MAX_THREADS;
    return n_threads;
}

#ifdef NITRO_THREADS
static void *part_thread(void *w)
{
    run_part(w);
    return NULL;
}
#endif

/* Run the parts, the last one on the calling thread; a part whose thread cannot start runs here too. */
static void run_parts(struct part *w, int parts)
{
#ifdef NITRO_THREADS
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t + 1 < parts; t++)
        started[t] = pthread_create(&tid[t], NULL, part_thread, &w[t]) == 0;
    run_part(&w[parts - 1]);
    for (int t = 0; t + 1 < parts; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            run_part(&w[t]);
    }
#else
    for (int t = 0; t < parts; t++)
        run_part(&w[t]);
#endif
}

/* The entry point: pack B [k][n] (element strides rsb, csb) into scratch (ceil(k/2) * ldb * 2 int16, ldb = n rounded
 * up to 16; b == NULL: scratch holds this B packed already, from the previous call), then
 *   o == NULL:  C [m][ldb] (+)= 2**shift * A B  (int64; add = 0 stores; int32 chunks of kcp K-pairs), returns 1;
 *   o != NULL:  o [m][ldb] = NITRO-Scaling(A B, sf) as int8, one int32 chunk over all of K (the caller checks
 *               that it cannot overflow); returns 0 and writes nothing to o where scaling_init refuses sf.
 * Columns n..ldb-1 of the output are padding (zero products). */
int igemm_run(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *b, int64_t rsb,
              int64_t csb, int16_t *scratch, int64_t *c, int8_t *o, int64_t kcp, int shift, int add, int64_t sf)
{
    struct scaling sc;
    int64_t ldb = (n + 15) / 16 * 16;
    if (o && !scaling_init(&sc, sf))
        return 0;
    igemm_variant();
    struct part w[MAX_THREADS];
    struct part one = {.m = m, .n = n, .k = k, .lda = lda, .rsb = rsb, .csb = csb, .ldb = ldb, .kcp = kcp,
                       .i0 = 0, .i1 = m, .j0 = 0, .j1 = ldb, .a = a, .b = b, .scratch = scratch, .c = c, .o = o,
                       .shift = shift, .add = add, .sc = &sc};
    int parts = m * ldb * k < THREAD_MACS ? 1 : n_threads;
    int by_cols = ldb / 32 >= parts && !(chosen == 4 && m > ldb); /* AMX: each part packs all of the other side */
    int64_t groups = by_cols ? ldb / 16 : m;
    parts = parts < groups ? parts : (int)groups;
    if (parts <= 1) {
        run_part(&one);
        return 1;
    }
    if (!by_cols && b) { /* row parts share all of B: pack it once, first */
        pack_b(k, n, b, rsb, csb, scratch, ldb, ldb);
        one.b = NULL;
    }
    for (int t = 0; t < parts; t++) {
        int64_t lo = groups * t / parts, hi = groups * (t + 1) / parts;
        w[t] = one;
        if (by_cols)
            w[t].j0 = 16 * lo, w[t].j1 = 16 * hi;
        else
            w[t].i0 = lo, w[t].i1 = hi;
    }
    run_parts(w, parts);
    return 1;
}

/* The gradient of a conv block behind its head pool (see GATHER_PORTABLE) for int8 or int16 X: AVX-512 or NEON where
 * the kernels run on it and |d| < 2**31 (narrow), else portable C. */
#ifdef NITRO_X86
#define GATHER_FAST(T)                                                                                           \
    if (narrow && (chosen == 2 || chosen == 4)) { /* AMX cores have AVX-512 */                                   \
        gather_##T##_avx512(c, n, k, d, row, x, ldx, g);                                                         \
        return;                                                                                                  \
    }
#elif defined(NITRO_NEON)
#define GATHER_FAST(T) if (narrow && chosen == 3) { gather_##T##_neon(c, n, k, d, row, x, ldx, g); return; }
#else
#define GATHER_FAST(T) (void)narrow;
#endif
#define GATHER_ENTRY(T, XT)                                                                                      \
    void igemm_gather_##T(int64_t c, int64_t n, int64_t k, const int64_t *d, const int64_t *row, const XT *x,   \
                          int64_t ldx, int64_t *g, int narrow)                                                   \
    {                                                                                                            \
        igemm_variant();                                                                                         \
        GATHER_FAST(T)                                                                                           \
        gather_##T##_portable(c, n, k, d, row, x, ldx, g);                                                       \
    }
GATHER_ENTRY(s8, int8_t)
GATHER_ENTRY(s16, int16_t)

/* IntegerSGD (optim.sgd_update; docs/algorithm.md §4.1): for W [rows][cols] (contiguous) and G [rows][ldg],
 *   out = sat(W - (tdiv(G, d) + tdiv(W, e)), lo, hi)      (e = 0: no decay term)
 * in one pass.  tdiv(n, d) for d > 0 is C's `n / d` as a multiply: with u = |n| <= 2**63, l = ceil(log2 d) >= 1
 * and m = ceil(2**(63+l) / d) < 2**64 (intgemm.magic), floor(u / d) = floor(u * m / 2**(63+l)) (Granlund and
 * Montgomery 1994, theorem 4.2, N = 63; the error u * (m*d - 2**(63+l)) / (d * 2**(63+l)) < u / (d * 2**63) <= 1/d
 * also at u = 2**63) = (high 64 bits of u * m) >> (l - 1), the sign put back; d = 1 (m = 0, one = all ones) is u
 * itself.  The high product is built from four 32 x 32 -> 64-bit products (vpmuludq on AVX-512).  The quotient is
 * clamped to +-2**40 before the sum: |W| and |tdiv(W, e)| are below 2**31, so a clamped quotient saturates the
 * result exactly as the unclamped one does, and no int64 sum can overflow.  The SIMD loop divides by the short
 * route below where every lane allows it. */
struct divisor {
    uint64_t m, one;
    int sh;
    /* the short route of the SIMD loop: d = 2**t * d' (d' odd < 2**31), so floor(u / d) = floor((u >> t) / d'), and
     * for u' = u >> t <= 2**31 that is (u' * m32) >> sh32 with sh32 = 31 + ceil(log2 d') and m32 = ceil(2**sh32 / d')
     * < 2**32 (the same theorem, N = 31): one 32 x 32 -> 64-bit product.  short_ok = 0 where d' >= 2**31. */
    int t, sh32, short_ok;
    uint32_t m32;
};

static inline uint64_t mulhi64(uint64_t u, uint64_t m)
{
    uint64_t u0 = u & 0xffffffffu, u1 = u >> 32, m0 = m & 0xffffffffu, m1 = m >> 32;
    uint64_t p01 = u0 * m1, p10 = u1 * m0;
    uint64_t mid = ((u0 * m0) >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    return u1 * m1 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

static inline int64_t tdiv_magic(int64_t n, const struct divisor *dv)
{
    uint64_t u = n < 0 ? 0u - (uint64_t)n : (uint64_t)n;
    uint64_t q = (mulhi64(u, dv->m) >> dv->sh) | (u & dv->one);
    uint64_t v = n < 0 ? 0u - q : q; /* -q in two's complement, read back as int64 below */
    int64_t out;
    memcpy(&out, &v, sizeof out);
    return out;
}

#define SGD_QMAX ((int64_t)1 << 40)
#define SGD_ARGS(T)                                                                                            \
    (int64_t rows, int64_t cols, const T *w, const int64_t *g, int64_t ldg, T *out, int64_t d, uint64_t dm,    \
     int dl, int64_t e, uint64_t em, int el, int64_t lo, int64_t hi)

static inline void divisor_init(struct divisor *dv, uint64_t m, int l, int64_t d)
{
    dv->m = l ? m : 0u;
    dv->one = l ? 0u : ~(uint64_t)0;
    dv->sh = l ? l - 1 : 0;
    dv->t = 0;
    while (d > 0 && !(d & 1)) {
        d >>= 1;
        dv->t++;
    }
    int lo = 0;
    while (lo < 40 && ((int64_t)1 << lo) < d)
        lo++;
    dv->short_ok = d > 0 && d < ((int64_t)1 << 31);
    dv->sh32 = 31 + lo;
    dv->m32 = dv->short_ok ? (uint32_t)((((uint64_t)1 << dv->sh32) + (uint64_t)d - 1) / (uint64_t)d) : 0u;
}

#define SGD_ROW_PORTABLE(T)                                                                                    \
    static void sgd_row_##T(int64_t j0, int64_t cols, const T *wr, const int64_t *gr, T *orow,                \
                            const struct divisor *dd, const struct divisor *de, int64_t e, int64_t lo, int64_t hi) \
    {                                                                                                          \
        for (int64_t j = j0; j < cols; j++) {                                                                  \
            int64_t q = tdiv_magic(gr[j], dd);                                                                 \
            q = q > SGD_QMAX ? SGD_QMAX : q < -SGD_QMAX ? -SGD_QMAX : q;                                       \
            int64_t wd = e ? tdiv_magic(wr[j], de) : 0;                                                    \
            int64_t v = (int64_t)wr[j] - (q + wd);                                                             \
            orow[j] = (T)(v > hi ? hi : v < lo ? lo : v);                                                      \
        }                                                                                                      \
    }
SGD_ROW_PORTABLE(int16_t)
SGD_ROW_PORTABLE(int32_t)

#ifdef NITRO_X86
#define TS512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline)) static inline
/* floor(u / d) for u = |n| in 8 lanes: the short route where every lane has u >> t <= 2**31, else the 64-bit one;
 * the sign put back. */
struct divisor512 {
    __m512i m0, m1, one, m32, lim;
    __m128i sh, t, sh32;
    int short_ok;
};

TS512 void divisor512_init(struct divisor512 *v, const struct divisor *dv)
{
    v->m0 = _mm512_set1_epi64((int64_t)(dv->m & 0xffffffffu));
    v->m1 = _mm512_set1_epi64((int64_t)(dv->m >> 32));
    v->one = _mm512_set1_epi64((int64_t)dv->one);
    v->m32 = _mm512_set1_epi64((int64_t)dv->m32);
    v->lim = _mm512_set1_epi64((int64_t)1 << 31);
    v->sh = _mm_cvtsi32_si128(dv->sh);
    v->t = _mm_cvtsi32_si128(dv->t);
    v->sh32 = _mm_cvtsi32_si128(dv->sh32);
    v->short_ok = dv->short_ok;
}

TS512 __m512i tdiv512(__m512i n, const struct divisor512 *v)
{
    __m512i u = _mm512_abs_epi64(n), q;
    __m512i us = _mm512_srl_epi64(u, v->t);
    if (v->short_ok && !_mm512_cmpgt_epu64_mask(us, v->lim)) {
        q = _mm512_srl_epi64(_mm512_mul_epu32(us, v->m32), v->sh32);
    } else {
        __m512i lo32 = _mm512_set1_epi64(0xffffffff), u1 = _mm512_srli_epi64(u, 32);
        __m512i p01 = _mm512_mul_epu32(u, v->m1), p10 = _mm512_mul_epu32(u1, v->m0);
        __m512i mid = _mm512_add_epi64(_mm512_srli_epi64(_mm512_mul_epu32(u, v->m0), 32),
                                       _mm512_add_epi64(_mm512_and_si512(p01, lo32), _mm512_and_si512(p10, lo32)));
        __m512i hi = _mm512_add_epi64(_mm512_add_epi64(_mm512_mul_epu32(u1, v->m1), _mm512_srli_epi64(p01, 32)),
                                      _mm512_add_epi64(_mm512_srli_epi64(p10, 32), _mm512_srli_epi64(mid, 32)));
        q = _mm512_or_si512(_mm512_srl_epi64(hi, v->sh), _mm512_and_si512(u, v->one));
    }
    return _mm512_mask_sub_epi64(q, _mm512_cmplt_epi64_mask(n, _mm512_setzero_si512()), _mm512_setzero_si512(), q);
}

#define SGD_AVX512(T, LOADW, STOREW)                                                                           \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static void sgd_avx512_##T SGD_ARGS(T)      \
    {                                                                                                          \
        struct divisor dd, de;                                                                                 \
        struct divisor512 vd, ve;                                                                              \
        divisor_init(&dd, dm, dl, d);                                                                          \
        divisor_init(&de, em, el, e);                                                                          \
        divisor512_init(&vd, &dd);                                                                             \
        divisor512_init(&ve, &de);                                                                             \
        __m512i qmax = _mm512_set1_epi64(SGD_QMAX), qmin = _mm512_set1_epi64(-SGD_QMAX);                       \
        __m512i vlo = _mm512_set1_epi64(lo), vhi = _mm512_set1_epi64(hi);                                      \
        for (int64_t r = 0; r < rows; r++) {                                                                   \
            const T *wr = w + r * cols;                                                                        \
            const int64_t *gr = g + r * ldg;                                                                   \
            T *orow = out + r * cols;                                                                          \
            int64_t j = 0;                                                                                     \
            for (; j + 8 <= cols; j += 8) {                                                                    \
                __m512i wv = LOADW(wr + j);                                                                    \
                __m512i q = tdiv512(_mm512_loadu_si512(gr + j), &vd);                                          \
                q = _mm512_max_epi64(_mm512_min_epi64(q, qmax), qmin);                                         \
                if (e)                                                                                         \
                    q = _mm512_add_epi64(q, tdiv512(wv, &ve));                                                 \
                STOREW(orow + j, _mm512_max_epi64(_mm512_min_epi64(_mm512_sub_epi64(wv, q), vhi), vlo));        \
            }                                                                                                  \
            sgd_row_##T(j, cols, wr, gr, orow, &dd, &de, e, lo, hi);                                           \
        }                                                                                                      \
    }
#define LOADW32(p) _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(p)))
#define LOADW16(p) _mm512_cvtepi16_epi64(_mm_loadu_si128((const __m128i *)(p)))
#define STOREW32(p, v) _mm256_storeu_si256((__m256i *)(p), _mm512_cvtepi64_epi32(v))
#define STOREW16(p, v) _mm_storeu_si128((__m128i *)(p), _mm512_cvtepi64_epi16(v))
SGD_AVX512(int16_t, LOADW16, STOREW16)
SGD_AVX512(int32_t, LOADW32, STOREW32)
#define SGD_FAST(T)                                                                                            \
    if (avx512_sgd && chosen >= 1) {                                                                           \
        sgd_avx512_##T(rows, cols, w, g, ldg, out, d, dm, dl, e, em, el, lo, hi);                              \
        return;                                                                                                \
    }
#elif defined(NITRO_NEON)
/* The same pass on NEON, 4 weights per step as two vectors of 2 int64 lanes (NEON has no 64-bit min/max: compare
 * and select). */
TNEON int64x2_t min64(int64x2_t a, int64x2_t b)
{
    return vbslq_s64(vcltq_s64(a, b), a, b);
}
TNEON int64x2_t max64(int64x2_t a, int64x2_t b)
{
    return vbslq_s64(vcgtq_s64(a, b), a, b);
}

/* tdiv_magic in 2 lanes: the short route where both lanes have u >> t <= 2**31, else the four 32 x 32 -> 64-bit
 * products of mulhi64; the sign put back. */
TNEON int64x2_t tdiv_neon(int64x2_t n, const struct divisor *dv)
{
    uint64x2_t u = vreinterpretq_u64_s64(vabsq_s64(n)), q; /* |INT64_MIN| reads as 2**63 */
    uint64x2_t us = vshlq_u64(u, vdupq_n_s64(-dv->t));
    if (dv->short_ok && !vmaxvq_u32(vreinterpretq_u32_u64(vcgtq_u64(us, vdupq_n_u64((uint64_t)1 << 31))))) {
        q = vshlq_u64(vmull_u32(vmovn_u64(us), vdup_n_u32(dv->m32)), vdupq_n_s64(-dv->sh32));
    } else {
        uint32x2_t u0 = vmovn_u64(u), u1 = vshrn_n_u64(u, 32);
        uint32x2_t m0 = vdup_n_u32((uint32_t)dv->m), m1 = vdup_n_u32((uint32_t)(dv->m >> 32));
        uint64x2_t lo32 = vdupq_n_u64(0xffffffffu), p01 = vmull_u32(u0, m1), p10 = vmull_u32(u1, m0);
        uint64x2_t mid = vaddq_u64(vshrq_n_u64(vmull_u32(u0, m0), 32),
                                   vaddq_u64(vandq_u64(p01, lo32), vandq_u64(p10, lo32)));
        uint64x2_t hi = vaddq_u64(vaddq_u64(vmull_u32(u1, m1), vshrq_n_u64(p01, 32)),
                                  vaddq_u64(vshrq_n_u64(p10, 32), vshrq_n_u64(mid, 32)));
        q = vorrq_u64(vshlq_u64(hi, vdupq_n_s64(-dv->sh)), vandq_u64(u, vdupq_n_u64(dv->one)));
    }
    int64x2_t sq = vreinterpretq_s64_u64(q);
    return vbslq_s64(vcltzq_s64(n), vnegq_s64(sq), sq);
}

/* out = sat(W - (clamp(tdiv(G, d)) + tdiv(W, e))) for 2 lanes */
TNEON int64x2_t sgd2_neon(int64x2_t wv, int64x2_t gv, const struct divisor *dd, const struct divisor *de, int64_t e,
                          int64_t lo, int64_t hi)
{
    int64x2_t q = max64(min64(tdiv_neon(gv, dd), vdupq_n_s64(SGD_QMAX)), vdupq_n_s64(-SGD_QMAX));
    if (e)
        q = vaddq_s64(q, tdiv_neon(wv, de));
    return max64(min64(vsubq_s64(wv, q), vdupq_n_s64(hi)), vdupq_n_s64(lo));
}

#define SGD_NEON(T, LOADW, STOREW)                                                                             \
    static void sgd_neon_##T SGD_ARGS(T)                                                                       \
    {                                                                                                          \
        struct divisor dd, de;                                                                                 \
        divisor_init(&dd, dm, dl, d);                                                                          \
        divisor_init(&de, em, el, e);                                                                          \
        for (int64_t r = 0; r < rows; r++) {                                                                   \
            const T *wr = w + r * cols;                                                                        \
            const int64_t *gr = g + r * ldg;                                                                   \
            T *orow = out + r * cols;                                                                          \
            int64_t j = 0;                                                                                     \
            for (; j + 4 <= cols; j += 4) {                                                                    \
                int32x4_t w32 = LOADW(wr + j);                                                                 \
                int64x2_t lo2 = sgd2_neon(vmovl_s32(vget_low_s32(w32)), vld1q_s64(gr + j), &dd, &de, e, lo, hi); \
                int64x2_t hi2 = sgd2_neon(vmovl_high_s32(w32), vld1q_s64(gr + j + 2), &dd, &de, e, lo, hi);     \
                STOREW(orow + j, vcombine_s32(vmovn_s64(lo2), vmovn_s64(hi2))); /* in [lo, hi]: exact */       \
            }                                                                                                  \
            sgd_row_##T(j, cols, wr, gr, orow, &dd, &de, e, lo, hi);                                           \
        }                                                                                                      \
    }
#define LOADW32N(p) vld1q_s32(p)
#define LOADW16N(p) vmovl_s16(vld1_s16(p))
#define STOREW32N(p, v) vst1q_s32(p, v)
#define STOREW16N(p, v) vst1_s16(p, vmovn_s32(v))
SGD_NEON(int16_t, LOADW16N, STOREW16N)
SGD_NEON(int32_t, LOADW32N, STOREW32N)
#define SGD_FAST(T)                                                                                            \
    if (chosen == 3) {                                                                                         \
        sgd_neon_##T(rows, cols, w, g, ldg, out, d, dm, dl, e, em, el, lo, hi);                                \
        return;                                                                                                \
    }
#else
#define SGD_FAST(T)
#endif

/* The update's entry points (int16 and int32 W): AVX-512 where the CPU has F/BW/VL/DQ and a SIMD GEMM variant runs,
 * NEON where the neon variant runs, else portable C (intgemm.sgd uses these only on a SIMD loop: on x86 the NumPy
 * routes are faster than scalar C). */
#define SGD_ENTRY(NAME, T)                                                                                     \
    void NAME SGD_ARGS(T)                                                                                      \
    {                                                                                                          \
        igemm_variant();                                                                                       \
        SGD_FAST(T)                                                                                            \
        struct divisor dd, de;                                                                                 \
        divisor_init(&dd, dm, dl, d);                                                                          \
        divisor_init(&de, em, el, e);                                                                          \
        for (int64_t r = 0; r < rows; r++)                                                                     \
            sgd_row_##T(0, cols, w + r * cols, g + r * ldg, out + r * cols, &dd, &de, e, lo, hi);              \
    }
SGD_ENTRY(igemm_sgd_s16, int16_t)
SGD_ENTRY(igemm_sgd_s32, int32_t)

/* 1 where igemm_sgd_* runs its AVX-512 or NEON loop (see above). */
int igemm_sgd_simd(void)
{
    igemm_variant();
#ifdef NITRO_X86
    return avx512_sgd && chosen >= 1;
#elif defined(NITRO_NEON)
    return chosen == 3;
#else
    return 0;
#endif
}
