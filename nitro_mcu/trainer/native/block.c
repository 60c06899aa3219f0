/* Whole steps of the trainer's MLP pieces, one call each (nitro_mcu/trainer/nativeblock.py): LinearBlock.forward,
 * Head.step and LinearBlock.step of nitro_mcu/trainer/blocks.py on intgemm.c's products and IntegerSGD (the two files
 * build into one library: intgemm.py _build).  The integers of the NumPy reference by construction: every product is
 * exact in int64 (the limbs of intgemm.py plan/limbs, each limb product on igemm_run), every division is C's
 * truncating `/`, every clip explicit (docs/arithmetic.md).  An entry returns 1, or 0 where a premise fails (a
 * product bound at or past 2**63, no memory) having written nothing the caller keeps: it then runs the NumPy route.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC poison float double

int igemm_run(int64_t m, int64_t n, int64_t k, const int16_t *a, int64_t lda, const int16_t *b, int64_t rsb,
              int64_t csb, int16_t *scratch, int64_t *c, int8_t *o, int64_t kcp, int shift, int add, int64_t sf);
void igemm_sgd_s16(int64_t rows, int64_t cols, const int16_t *w, const int64_t *g, int64_t ldg, int16_t *out,
                   int64_t d, uint64_t dm, int dl, int64_t e, uint64_t em, int el, int64_t lo, int64_t hi);
void igemm_sgd_s32(int64_t rows, int64_t cols, const int32_t *w, const int64_t *g, int64_t ldg, int32_t *out,
                   int64_t d, uint64_t dm, int dl, int64_t e, uint64_t em, int el, int64_t lo, int64_t hi);

#define NB_LIMB_PRODUCT_MAX ((int64_t)1 << 25) /* intgemm.py LIMB_PRODUCT_MAX */
#define NB_WHOLE_MAX ((int64_t)1 << 12)        /* intgemm.py WHOLE_MAX */
#define NB_MAX_LIMBS 8
#define NB_GRAD_PANEL_BYTES ((int64_t)1 << 20) /* G rows per panel of grad_update: within L2 */


/* An operand: element (i, j) at p[i * rs + j * cs], t bytes each (1, 2, 4, 8: int8 to int64). */
struct mat {
    const void *p;
    int t;
    int64_t rs, cs;
};

static int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }

/* The loops below visit x in memory order, rows outer (columns outer where x is a transposed view, rs == 1), and
 * the contiguous inner loops vectorize (-O3 for this file's functions under GCC). */
#define COLMAJOR(x) ((x)->rs == 1 && (x)->cs != 1)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

/* NB_HOT(ret, name, (params), (args), body): the function twice, for AVX-512 (F/BW/VL/DQ: int64 lanes) and for the
 * base ISA, and name() calling the one this CPU runs (the loops are the same C: same integers). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static int nb_v4 = -1;
static int has_v4(void)
{
    if (nb_v4 < 0) {
        __builtin_cpu_init();
        nb_v4 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    return nb_v4;
}
/* Pin the clones for the tests: 1 AVX-512, 0 base, -1 the best; returns the one in use, or -1 where this CPU lacks
 * AVX-512 and 1 was asked for. */
int nb_force(int v4)
{
    nb_v4 = -1;
    int best = has_v4();
    if (v4 > best)
        return -1;
    nb_v4 = v4 < 0 ? best : v4;
    return nb_v4;
}
#define NB_HOT(RET, NAME, PARAMS, ARGS, ...)                                                                   \
    static RET NAME##_v0 PARAMS __VA_ARGS__                                                                    \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static RET NAME##_v4 PARAMS __VA_ARGS__      \
    static RET NAME PARAMS { return has_v4() ? NAME##_v4 ARGS : NAME##_v0 ARGS; }
#else
int nb_force(int v4) { return v4 > 0 ? -1 : 0; }
#define NB_HOT(RET, NAME, PARAMS, ARGS, ...) static RET NAME PARAMS __VA_ARGS__
#endif

/* dst[i * drs + j * dcs] = (DT)x(i, j) for i < rows, j < cols: one loop per element type. */
#define COPY_LOOP(ST, DT)                                                                                      \
    {                                                                                                          \
        int cm = COLMAJOR(x);                                                                                  \
        int64_t outer = cm ? cols : rows, inner = cm ? rows : cols, os = cm ? x->cs : x->rs;                   \
        int64_t is = cm ? 1 : x->cs, dos = cm ? dcs : drs, dis = cm ? drs : dcs;                               \
        for (int64_t o = 0; o < outer; o++) {                                                                  \
            const ST *src = (const ST *)x->p + o * os;                                                         \
            DT *d = dst + o * dos;                                                                             \
            if (is == 1 && dis == 1)                                                                           \
                for (int64_t i = 0; i < inner; i++)                                                            \
                    d[i] = (DT)src[i];                                                                         \
            else                                                                                               \
                for (int64_t i = 0; i < inner; i++)                                                            \
                    d[i * dis] = (DT)src[i * is];                                                              \
        }                                                                                                      \
    }
#define COPY_AS(DT, NAME)                                                                                      \
    NB_HOT(void, NAME, (const struct mat *x, int64_t rows, int64_t cols, DT *dst, int64_t drs, int64_t dcs),   \
           (x, rows, cols, dst, drs, dcs), {                                                                   \
        switch (x->t) {                                                                                        \
        case 1: COPY_LOOP(int8_t, DT) break;                                                                   \
        case 2: COPY_LOOP(int16_t, DT) break;                                                                  \
        case 4: COPY_LOOP(int32_t, DT) break;                                                                  \
        default: COPY_LOOP(int64_t, DT) break;                                                                 \
        }                                                                                                      \
    })
COPY_AS(int16_t, copy16) /* only where every value fits int16 (the plan keeps such operands whole) */
COPY_AS(int64_t, copy64)

/* max |x| from the extremes of ST values (lo <= 0 <= hi, so |x| <= max(hi, -lo) without negating in ST). */
#define MAX_LOOP(ST)                                                                                           \
    {                                                                                                          \
        int cm = COLMAJOR(x);                                                                                  \
        int64_t outer = cm ? cols : rows, inner = cm ? rows : cols, os = cm ? x->cs : x->rs;                   \
        int64_t is = cm ? 1 : x->cs;                                                                           \
        ST lo = 0, hi = 0;                                                                                     \
        for (int64_t o = 0; o < outer; o++) {                                                                  \
            const ST *src = (const ST *)x->p + o * os;                                                         \
            if (is == 1)                                                                                       \
                for (int64_t i = 0; i < inner; i++) {                                                          \
                    hi = src[i] > hi ? src[i] : hi;                                                            \
                    lo = src[i] < lo ? src[i] : lo;                                                            \
                }                                                                                              \
            else                                                                                               \
                for (int64_t i = 0; i < inner; i++) {                                                          \
                    hi = src[i * is] > hi ? src[i * is] : hi;                                                  \
                    lo = src[i * is] < lo ? src[i * is] : lo;                                                  \
                }                                                                                              \
        }                                                                                                      \
        m = 0u - (uint64_t)(int64_t)lo;                                                                        \
        m = (uint64_t)(int64_t)hi > m ? (uint64_t)(int64_t)hi : m;                                             \
    }

/* max |x| over rows x cols, at most INT64_MAX (which fails every product bound); an int8 operand is bounded by 128
 * without a pass, as layers.dtype_bound does. */
NB_HOT(int64_t, max_abs, (const struct mat *x, int64_t rows, int64_t cols), (x, rows, cols), {
    uint64_t m = 0;
    switch (x->t) {
    case 1: return 128;
    case 2: MAX_LOOP(int16_t) break;
    case 4: MAX_LOOP(int32_t) break;
    default: MAX_LOOP(int64_t) break;
    }
    return m > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)m;
})

/* dst[i] = src[i] clamped to int16 for n contiguous int32, in one pass with their max |p[i]|: the whole-operand int16
 * plane of an int32 weight tensor where that max shows it fits (else the plane is not used). */
NB_HOT(int64_t, narrow16, (const int32_t *src, int64_t n, int16_t *dst), (src, n, dst), {
    int32_t lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t v = src[i];
        hi = v > hi ? v : hi;
        lo = v < lo ? v : lo;
        dst[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
    uint64_t m = 0u - (uint64_t)(int64_t)lo;
    return (int64_t)((uint64_t)(int64_t)hi > m ? (uint64_t)(int64_t)hi : m);
})

/* a_max * b_max * k < 2**63 (matmul_exact's premise). */
static int bound_ok(int64_t a_max, int64_t b_max, int64_t k)
{
    if (a_max == 0 || b_max == 0 || k == 0)
        return 1;
    if (a_max > INT64_MAX / b_max)
        return 0;
    return a_max * b_max <= INT64_MAX / k;
}

static int bitlen(int64_t v)
{
    int n = 0;
    while (v > 0) {
        v /= 2;
        n++;
    }
    return n;
}

/* intgemm.py plan: limb widths (0 keeps an operand whole). */
static void plan(int64_t a_max, int64_t b_max, int *sa, int *sb)
{
    *sa = *sb = 0;
    if (a_max < 32768 && b_max < 32768 && a_max * b_max <= NB_LIMB_PRODUCT_MAX)
        return;
    int64_t lo = a_max < b_max ? a_max : b_max;
    if (lo <= NB_WHOLE_MAX) {
        int s = bitlen(NB_LIMB_PRODUCT_MAX / (lo > 1 ? lo : 1));
        s = s < 16 ? s : 16;
        if (a_max <= b_max)
            *sb = s;
        else
            *sa = s;
        return;
    }
    *sa = *sb = 13;
}

static int64_t chunk_pairs(int64_t la, int64_t lb)
{
    int64_t p = INT32_MAX / (2 * (la > 1 ? la : 1) * (lb > 1 ? lb : 1));
    return p > 1 ? p : 1;
}

/* An operand as int16 limb planes, x = sum_l plane_l * 2**exp_l with |plane_l| <= bound_l (intgemm.py limbs: balanced
 * s-bit limbs, each the remainder in [-2**(s-1), 2**(s-1)) of the rest, which is then divided exactly). */
struct limbs {
    int n;
    int16_t *plane[NB_MAX_LIMBS];
    int64_t bound[NB_MAX_LIMBS];
    int exp[NB_MAX_LIMBS];
    int16_t *mem;
};

/* One limb: pl = rest mod 2**s in [-2**(s-1), 2**(s-1)), rest = (rest - pl) / 2**s exactly (rest - pl has rest's
 * sign or is 0 and its magnitude fits uint64, so the quotient comes from an unsigned shift, the sign put back). */
NB_HOT(void, limb_step, (int64_t *rest, int16_t *pl, int64_t size, int s), (rest, pl, size, s), {
    uint64_t mask = ((uint64_t)1 << s) - 1, half = (uint64_t)1 << (s - 1);
    for (int64_t i = 0; i < size; i++) {
        int64_t v = rest[i];
        uint64_t u = (uint64_t)v, low = u & mask;
        int64_t limb = (int64_t)low - (low >= half ? (int64_t)mask + 1 : 0);
        uint64_t t = v >= 0 ? u - (uint64_t)limb : (uint64_t)limb - u;
        int64_t q = (int64_t)(t >> s);
        pl[i] = (int16_t)limb;
        rest[i] = v >= 0 ? q : -q;
    }
})

/* Planes [rows][cols] row-major, or column-major where colmajor (B = W^T: pack_b reads its K-pairs as words). */
static int split(const struct mat *x, int64_t rows, int64_t cols, int64_t x_max, int s, int colmajor,
                 struct limbs *out)
{
    int64_t size = rows * cols, drs = colmajor ? 1 : cols, dcs = colmajor ? rows : 1;
    int64_t half = s ? (int64_t)1 << (s - 1) : 0, m = x_max;
    out->n = 1;
    if (s)
        while (m > half - 1) {
            m = (int64_t)(((uint64_t)m + (uint64_t)half) >> s);
            out->n++;
        }
    if (out->n > NB_MAX_LIMBS)
        return 0;
    out->mem = malloc((size_t)(size * out->n + 1) * sizeof(int16_t));
    if (!out->mem)
        return 0;
    for (int l = 0; l < out->n; l++) {
        out->plane[l] = out->mem + l * size;
        out->bound[l] = l + 1 < out->n ? half : m;
        out->exp[l] = s * l;
    }
    if (!s) {
        out->bound[0] = x_max;
        copy16(x, rows, cols, out->plane[0], drs, dcs);
        return 1;
    }
    int64_t *rest = malloc((size_t)(size + 1) * sizeof(int64_t));
    if (!rest) {
        free(out->mem);
        return 0;
    }
    copy64(x, rows, cols, rest, drs, dcs);
    for (int l = 0; l < out->n; l++) {
        int16_t *pl = out->plane[l];
        if (l + 1 == out->n) {
            for (int64_t i = 0; i < size; i++)
                pl[i] = (int16_t)rest[i];
            break;
        }
        limb_step(rest, pl, size, s);
    }
    free(rest);
    return 1;
}

/* B's limb planes (plan's sb-bit limbs of b [k][n], column-major where b is a transposed view) and the scratch that
 * igemm_run packs them into, holding plane `packed` (-1: none yet): made once for any number of xmm_b calls on row
 * ranges of A. */
struct bside {
    struct limbs l;
    int bcol, packed;
    int16_t *scratch;
};

/* C [m][pad16(n)] = A [m][k] B [k][n], exact (intgemm.py matmul: A's upper limbs run only on their nonzero rows when
 * those are at most half), A split into sa-bit limbs (plan's), B from bs (its packed plane may change).  0: no
 * memory. */
static int xmm_b(int64_t m, int64_t n, int64_t k, const struct mat *a, int64_t a_max, int sa, struct bside *bs,
                 int64_t *c)
{
    const struct limbs *lb = &bs->l;
    int bcol = bs->bcol, *packed = &bs->packed;
    int16_t *scratch = bs->scratch;
    int64_t ldc = pad16(n);
    struct limbs la;
    if (!split(a, m, k, a_max, sa, 0, &la))
        return 0;
    int16_t *rows_a = la.n > 1 ? malloc((size_t)(m * k) * sizeof(int16_t)) : NULL;
    int64_t *part = la.n > 1 ? malloc((size_t)(m * ldc) * sizeof(int64_t)) : NULL;
    int64_t *idx = la.n > 1 ? malloc((size_t)m * sizeof(int64_t)) : NULL;
    int ok = 0;
    if (la.n > 1 && (!rows_a || !part || !idx))
        goto done;
    int first = 1;
    for (int ib = 0; ib < lb->n; ib++) {
        const int16_t *bp = *packed == ib ? NULL : lb->plane[ib];
        int64_t brs = bcol ? 1 : n, bcs = bcol ? k : 1;
        for (int ia = 0; ia < la.n; ia++) {
            const int16_t *ap = la.plane[ia];
            int64_t kcp = chunk_pairs(la.bound[ia], lb->bound[ib]);
            int shift = la.exp[ia] + lb->exp[ib];
            if (ia) {
                int64_t cnt = 0;
                for (int64_t i = 0; i < m; i++) {
                    int nz = 0;
                    for (int64_t j = 0; j < k && !nz; j++)
                        nz = ap[i * k + j] != 0;
                    if (nz)
                        idx[cnt++] = i;
                }
                if (cnt <= m / 2) {
                    if (cnt) {
                        for (int64_t r = 0; r < cnt; r++)
                            memcpy(rows_a + r * k, ap + idx[r] * k, (size_t)k * sizeof(int16_t));
                        igemm_run(cnt, n, k, rows_a, k, bp, brs, bcs, scratch, part, NULL, kcp, shift, 0, 0);
                        bp = NULL, *packed = ib;
                        for (int64_t r = 0; r < cnt; r++)
                            for (int64_t j = 0; j < ldc; j++)
                                c[idx[r] * ldc + j] += part[r * ldc + j];
                    }
                    continue;
                }
            }
            igemm_run(m, n, k, ap, k, bp, brs, bcs, scratch, c, NULL, kcp, shift, !first, 0);
            bp = NULL, *packed = ib;
            first = 0;
        }
    }
    ok = 1;
done:
    free(rows_a);
    free(part);
    free(idx);
    free(la.mem);
    return ok;
}

static int bside_make(int64_t n, int64_t k, const struct mat *b, int64_t b_max, int sb, struct bside *out)
{
    out->bcol = b->rs == 1 && b->cs != 1;
    out->packed = -1;
    if (!split(b, k, n, b_max, sb, out->bcol, &out->l))
        return 0;
    out->scratch = malloc((size_t)((k + 1) / 2 * pad16(n) * 2) * sizeof(int16_t));
    if (!out->scratch)
        free(out->l.mem);
    return out->scratch != NULL;
}

static void bside_free(struct bside *x)
{
    free(x->scratch);
    free(x->l.mem);
}

/* C [m][pad16(n)] = A [m][k] B [k][n], exact; |A| <= a_max, |B| <= b_max.  0: the bound fails or no memory. */
static int xmm(int64_t m, int64_t n, int64_t k, const struct mat *a, int64_t a_max, const struct mat *b,
               int64_t b_max, int64_t *c)
{
    if (!bound_ok(a_max, b_max, k))
        return 0;
    if (m == 0 || n == 0)
        return 1;
    if (k == 0) {
        memset(c, 0, (size_t)(m * pad16(n)) * sizeof *c);
        return 1;
    }
    int sa, sb;
    struct bside bs;
    plan(a_max, b_max, &sa, &sb);
    if (!bside_make(n, k, b, b_max, sb, &bs))
        return 0;
    int ok = xmm_b(m, n, k, a, a_max, sa, &bs, c);
    bside_free(&bs);
    return ok;
}

/* NITRO-Scaling of one exact sum: clip(tdiv(z, sf), -127, 127) (C's `/` truncates). */
static int8_t scale64(int64_t z, int64_t sf)
{
    int64_t q = z / sf;
    return (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
}

/* out [m][n] = NITRO-Scaling(A B, sf) = clip(A B / sf, -127, 127) (layers.matmul_scaled): fused into the kernel where
 * both operands stay whole and one int32 chunk covers K (intgemm.py matmul_scaled), else from the exact product.
 * bplane (or NULL): B as split would lay out its whole int16 plane, made by the caller; with B = W^T both routes
 * run on W's rows in place. */
static int scaled(int64_t m, int64_t n, int64_t k, const struct mat *a, int64_t a_max, const struct mat *b,
                  int64_t b_max, int64_t sf, int8_t *out, const int16_t *bplane)
{
    int64_t ldc = pad16(n);
    int sa, sb;
    plan(a_max, b_max, &sa, &sb);
    int bcol = b->rs == 1 && b->cs != 1, fused = chunk_pairs(a_max, b_max) >= (k + 1) / 2;
    if (sa == 0 && sb == 0 && m && k && bplane && bcol) {
        /* B = W^T with W's int16 rows given: C^T = W A^T reads them in place and packs only A, into int8 sums where
         * one chunk covers K, else into int64 sums scaled here */
        struct limbs la;
        if (!split(a, m, k, a_max, 0, 0, &la))
            return 0;
        int64_t ldm = pad16(m);
        int16_t *scratch = malloc((size_t)((k + 1) / 2 * ldm * 2) * sizeof(int16_t));
        int8_t *o = fused ? malloc((size_t)(n * ldm)) : NULL;
        int64_t *c = fused ? NULL : malloc((size_t)(n * ldm) * sizeof(int64_t));
        int done = scratch && (o || c) &&
                   igemm_run(n, m, k, bplane, k, la.plane[0], 1, k, scratch, c, o, chunk_pairs(a_max, b_max), 0, 0,
                             fused ? sf : 0);
        if (done)
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < m; i++)
                    out[i * n + j] = o ? o[j * ldm + i] : scale64(c[j * ldm + i], sf);
        free(scratch);
        free(o);
        free(c);
        free(la.mem);
        if (done)
            return 1;
        goto exact;
    }
    if (sa == 0 && sb == 0 && m && k && fused) {
        struct limbs la, lb;
        int done = 0;
        if (!split(a, m, k, a_max, 0, 0, &la))
            return 0;
        if (!split(b, k, n, b_max, 0, bcol, &lb)) { /* a given bplane is W^T's: the route above took it */
            free(la.mem);
            return 0;
        }
        int16_t *scratch = malloc((size_t)((k + 1) / 2 * ldc * 2) * sizeof(int16_t));
        int8_t *o = malloc((size_t)(m * ldc));
        if (scratch && o &&
            igemm_run(m, n, k, la.plane[0], k, lb.plane[0], bcol ? 1 : n, bcol ? k : 1, scratch, NULL, o, 0, 0, 0, sf))
        {
            for (int64_t i = 0; i < m; i++)
                memcpy(out + i * n, o + i * ldc, (size_t)n);
            done = 1;
        }
        free(scratch);
        free(o);
        free(la.mem);
        free(lb.mem);
        if (done)
            return 1;
    }
exact:;
    int64_t *c = malloc((size_t)(m * ldc + 1) * sizeof(int64_t));
    if (!c)
        return 0;
    int ok = xmm(m, n, k, a, a_max, b, b_max, c);
    if (ok)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                out[i * n + j] = scale64(c[i * ldc + j], sf);
    free(c);
    return ok;
}

/* One IntegerSGD (optim.sgd_update) of W [rows][cols] (t = 2 or 4 bytes) by G [rows][ldg] into out; p holds
 * (lr_inv * amp, its magic, shift, decay_inv, its magic, shift, lo, hi) as intgemm.py sgd passes them. */
static void sgd(int t, int64_t rows, int64_t cols, const void *w, const int64_t *g, int64_t ldg, void *out,
                const int64_t *p)
{
    if (t == 2)
        igemm_sgd_s16(rows, cols, w, g, ldg, out, p[0], (uint64_t)p[1], (int)p[2], p[3], (uint64_t)p[4], (int)p[5],
                      p[6], p[7]);
    else
        igemm_sgd_s32(rows, cols, w, g, ldg, out, p[0], (uint64_t)p[1], (int)p[2], p[3], (uint64_t)p[4], (int)p[5],
                      p[6], p[7]);
}

static int64_t grad_panel = NB_GRAD_PANEL_BYTES;

/* Set grad_update's panel bytes for the tests (0: the default, below 0: leave it); returns the one in
 * force.  Any panel gives the same integers: each row of G is the same exact product. */
int64_t nb_grad_panel(int64_t bytes)
{
    if (bytes >= 0)
        grad_panel = bytes ? bytes : NB_GRAD_PANEL_BYTES;
    return grad_panel;
}

/* W [rows][cols]'s update into w_out by G = A X (k terms; A rows the errors, X the layer's input), G made and
 * consumed panel by panel: a panel of rows of G stays in cache between its product and its update, and no whole int64
 * G (74 MB for a 3000 x 3072 layer, a fresh mmap and page faults every step) exists.  X is split and packed once. */
static int grad_update(int64_t rows, int64_t cols, int64_t k, const struct mat *a, int64_t a_max, const struct mat *x,
                       int64_t x_max, int tw, const void *w, void *w_out, const int64_t *upd)
{
    if (!bound_ok(a_max, x_max, k))
        return 0;
    if (rows == 0 || cols == 0)
        return 1;
    /* one thread per panel: a panel's product is below igemm_run's threading threshold at every preset's shapes, and
     * panels enlarged to reach it made mlp3/mlp4 slower on two threads than on one (a new thread per product, the
     * update on one thread, panels past L2) */
    int64_t ldg = pad16(cols), pr = grad_panel / (ldg * (int64_t)sizeof(int64_t));
    pr = pr < 1 ? 1 : pr > rows ? rows : pr;
    int sa, sb, ok = 1;
    plan(a_max, x_max, &sa, &sb);
    struct bside bs;
    int64_t *g = malloc((size_t)(pr * ldg) * sizeof(int64_t));
    if (!g || (k && !bside_make(cols, k, x, x_max, sb, &bs))) {
        free(g);
        return 0;
    }
    for (int64_t r0 = 0; ok && r0 < rows; r0 += pr) {
        int64_t m = rows - r0 < pr ? rows - r0 : pr, off = r0 * cols * tw;
        struct mat ap = *a;
        ap.p = (const char *)a->p + r0 * a->rs * a->t;
        if (k)
            ok = xmm_b(m, cols, k, &ap, a_max, sa, &bs, g);
        else
            memset(g, 0, (size_t)(m * ldg) * sizeof *g);
        if (ok)
            sgd(tw, m, cols, (const char *)w + off, g, ldg, (char *)w_out + off, upd);
    }
    if (k)
        bside_free(&bs);
    free(g);
    return ok;
}

/* LinearBlock.forward (slope > 0) or Head.forward (slope 0) on x [b][d_in] (tx bytes) and W [d_out][d_in] (tw):
 * s = NITRO-Scaling(x W^T, sf) int8 [b][d_out]; with slope > 0, h = NITRO-ReLU(s) = clip(s, 0, 127) +
 * clip(s, -127, 0) / slope - mu (layers.relu_forward's table).  Returns max|W|, or -1 (declined). */
int64_t nb_forward(int64_t b, int64_t d_in, int64_t d_out, const void *x, int tx, const void *w, int tw, int64_t sf,
                   int64_t slope, int64_t mu, int8_t *s, int8_t *h)
{
    struct mat xa = {x, tx, d_in, 1}, wt = {w, tw, 1, d_in}; /* W^T: W's memory order, as split lays it out */
    struct mat wr = {w, tw, d_in, 1};
    /* int16 weights are their own int16 plane; int32 ones are narrowed into a copy (used where they fit) */
    int16_t *wp = tw == 2 ? NULL : malloc((size_t)(d_in * d_out + 1) * sizeof(int16_t));
    if (tw != 2 && !wp)
        return -1;
    int64_t wm = tw == 2 ? max_abs(&wr, d_out, d_in) : narrow16(w, d_in * d_out, wp);
    const int16_t *plane = tw == 2 ? w : wp;
    int ok = scaled(b, d_out, d_in, &xa, max_abs(&xa, b, d_in), &wt, wm, sf, s, wm < 32768 ? plane : NULL);
    free(wp);
    if (!ok)
        return -1;
    if (slope > 0) {
        int8_t lut[256];
        for (int64_t v = -128; v < 128; v++)
            lut[v + 128] = (int8_t)(v >= 0 ? v - mu : (v < -127 ? -127 : v) / slope - mu);
        for (int64_t i = 0; i < b * d_out; i++)
            h[i] = lut[s[i] + 128];
    }
    return wm;
}

/* Head.step on x [b][d] (tx bytes), W [nc][d] (tw bytes), target [b][nc]: y_hat (given where have_y, else
 * computed: Head.forward), e = y_hat - target (wrapped to int8 where wrap: ((e + 128) mod 256) - 128),
 * delta = e W with the pre-update W (where delta != NULL: [b][pad16(d)], or transposed [d][pad16(b)] where
 * transposed), G = e^T x, W's update into w_out. */
static int head(int64_t b, int64_t d, int64_t nc, const struct mat *xa, int64_t x_max, const void *w, int tw,
                int64_t sf, const int64_t *target, int8_t *y_hat, int have_y, int wrap, const int64_t *upd,
                void *w_out, int64_t *delta, int transposed)
{
    struct mat wt = {w, tw, 1, d}, wr = {w, tw, d, 1};
    int64_t wm = max_abs(&wr, nc, d), em = 0;
    if (!have_y && !scaled(b, nc, d, xa, x_max, &wt, wm, sf, y_hat, NULL))
        return 0;
    int64_t *e = malloc((size_t)(b * nc + 1) * sizeof(int64_t));
    int ok = 0;
    if (!e)
        goto done;
    for (int64_t i = 0; i < b * nc; i++) {
        int64_t v = (int64_t)y_hat[i] - target[i];
        if (wrap)
            v = (int64_t)(((uint64_t)v + 128u) & 0xffu) - 128;
        e[i] = v;
        int64_t u = v < 0 ? -v : v;
        em = u > em ? u : em;
    }
    struct mat ea = {e, 8, nc, 1}, et = {e, 8, 1, nc};
    if (delta && !(transposed ? xmm(d, b, nc, &wt, wm, &et, em, delta) : xmm(b, d, nc, &ea, em, &wr, wm, delta)))
        goto done;
    ok = grad_update(nc, d, b, &et, em, xa, x_max, tw, w, w_out, upd);
done:
    free(e);
    return ok;
}

/* Head.step as an entry (the output layer, a conv block's head): delta [b][d] contiguous where not NULL. */
int nb_head(int64_t b, int64_t d, int64_t nc, const void *x, int tx, const void *w, int tw, int64_t sf,
            const int64_t *target, int8_t *y_hat, int have_y, int wrap, const int64_t *upd, void *w_out,
            int64_t *delta)
{
    struct mat xa = {x, tx, d, 1};
    int64_t ldd = pad16(d);
    int64_t *dp = delta ? malloc((size_t)(b * ldd + 1) * sizeof(int64_t)) : NULL;
    if (delta && !dp)
        return 0;
    int ok = head(b, d, nc, &xa, max_abs(&xa, b, d), w, tw, sf, target, y_hat, have_y, wrap, upd, w_out, dp, 0);
    if (ok && delta)
        for (int64_t i = 0; i < b; i++)
            memcpy(delta + i * d, dp + i * ldd, (size_t)d * sizeof(int64_t));
    free(dp);
    return ok;
}

/* NITRO-ReLU backward (layers.relu_backward) in place on dt [d_out][ldt] (delta transposed: the rows of the
 * gradient's A) with st [d_out][b] (s transposed); returns max |dt|. */
#define RELU_BACK(DIV)                                                                                         \
    for (int64_t j = 0; j < d_out; j++)                                                                        \
        for (int64_t i = 0; i < b; i++) {                                                                      \
            int64_t sv = st[j * b + i], v = dt[j * ldt + i];                                                   \
            v = (sv == 127 || (sv == -127 && !asym)) ? 0 : sv < 0 ? v / (DIV) : v;                             \
            dt[j * ldt + i] = v;                                                                               \
            int64_t u = v < 0 ? -v : v;                                                                        \
            dm = u > dm ? u : dm;                                                                              \
        }
NB_HOT(int64_t, relu_back, (int64_t b, int64_t d_out, const int8_t *st, int64_t *dt, int64_t ldt, int asym,
                            int64_t slope), (b, d_out, st, dt, ldt, asym, slope), {
    int64_t dm = 0;
    switch (slope) { /* a constant divisor per common slope: the compiler divides by multiplying */
    case 4: RELU_BACK(4) break;
    case 8: RELU_BACK(8) break;
    case 16: RELU_BACK(16) break;
    case 3: RELU_BACK(3) break;
    case 5: RELU_BACK(5) break;
    case 10: RELU_BACK(10) break;
    default: RELU_BACK(slope) break;
    }
    return dm;
})

/* LinearBlock.step: the head's step on h (its update into wh_out), then NITRO-ReLU backward on delta
 * (delta / slope below 0, zero at s = 127 and, unless asym, at s = -127; else delta), G = delta^T x and the forward
 * update of W [d_out][d_in] into w_out.  x [b][d_in] (tx bytes), s and h int8 [b][d_out]. */
int nb_linear_step(int64_t b, int64_t d_in, int64_t d_out, int64_t nc, const void *x, int tx, const int8_t *s,
                   const int8_t *h, const void *w, const void *wh, int tw, int64_t sf_head, const int64_t *target,
                   int wrap, int64_t slope, int asym, const int64_t *upd_head, const int64_t *upd, void *wh_out,
                   void *w_out)
{
    struct mat ha = {h, 1, d_out, 1}, xa = {x, tx, d_in, 1};
    int64_t ldt = pad16(b), dm = 0;
    int64_t *dt = malloc((size_t)(d_out * ldt + 1) * sizeof(int64_t));
    int8_t *st = malloc((size_t)(d_out * b + 1));
    int8_t *y_hat = malloc((size_t)(b * nc + 1));
    int ok = 0;
    if (!dt || !st || !y_hat)
        goto done;
    if (!head(b, d_out, nc, &ha, 128, wh, tw, sf_head, target, y_hat, 0, wrap, upd_head, wh_out, dt, 1))
        goto done;
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < d_out; j++)
            st[j * b + i] = s[i * d_out + j];
    dm = relu_back(b, d_out, st, dt, ldt, asym, slope);
    struct mat da = {dt, 8, ldt, 1};
    ok = grad_update(d_out, d_in, b, &da, dm, &xa, max_abs(&xa, b, d_in), tw, w, w_out, upd);
done:
    free(dt);
    free(st);
    free(y_hat);
    return ok;
}
