"""NITRO-D layers as integer kernels (docs/algorithm.md §2).

Functions, not objects: each takes NumPy integer arrays and returns new ones, so the block code reads
like the specification and the C templates can mirror it line by line.  All products go through
:func:`nitro_mcu.trainer.gemm.matmul_exact`: exact int64 sums (the contract's accumulator).
"""
from __future__ import annotations

from functools import cache

import numpy as np

from .arith import INT16_MIN, isqrt, max_abs, tdiv
from . import gemm, intgemm
from .gemm import matmul_exact

# NITRO-ReLU mean correction mu(alpha_inv) and Kaiming gains (docs/algorithm.md §2.4, §4.4).
RELU_MEAN = {3: 31, 4: 36, 5: 38, 7: 40, 8: 42, 10: 43, 15: 44, 16: 44, 20: 45}
LEAKY_GAIN = {3: 1342, 4: 1372, 5: 1387, 7: 1400, 8: 1403, 10: 1407, 15: 1411, 16: 1411, 20: 1412}
SCALE_SHIFT = 8  # SF = 2**8 * fan_in


def check_slope(slope_inv: int) -> None:
    if slope_inv not in RELU_MEAN:
        raise ValueError(
            f"unsupported NITRO-ReLU slope_inv {slope_inv}; supported: {', '.join(map(str, RELU_MEAN))}"
        )


def scale_factor(fan_in: int) -> int:
    return fan_in << SCALE_SHIFT


def init_bound(fan_in: int, slope_inv: int = 4) -> int:
    """Integer Kaiming-uniform bound for a leaky ReLU: min(gain*128*1732 // (isqrt(fan_in)*1e6), 64)."""
    return min((LEAKY_GAIN[slope_inv] * 128 * 1732) // (isqrt(fan_in) * 10**6), 64)


# ---- Linear -----------------------------------------------------------------------------------------
def linear_forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """z[m, o] = sum_i x[m, i] * W[o, i]  (int64)."""
    return matmul_exact(x, w.T)


def dtype_bound(x: np.ndarray) -> int | None:
    """|x| bound from an int8 / int16 activation dtype, so product bounds need no pass over x."""
    return _DTYPE_BOUND.get(x.dtype)


def abs_bound(x: np.ndarray) -> int:
    """A bound on |x|: the dtype's (:func:`dtype_bound`), else one pass over x."""
    return dtype_bound(x) or max_abs(x)


_DTYPE_BOUND = {np.dtype(np.int8): 128}


def linear_scaled(x: np.ndarray, w: np.ndarray, sf: int, w_max: int | None = None) -> np.ndarray:
    """scaling(linear_forward(x, w), sf) as int8."""
    return matmul_scaled(x, w.T, sf, abs_bound(x), max_abs(w) if w_max is None else w_max)


def matmul_scaled(a: np.ndarray, b: np.ndarray, sf: int, a_max: int, b_max: int) -> np.ndarray:
    """``scaling(matmul_exact(a, b), sf)`` (int8), fused into the native kernel where it applies
    (:func:`~nitro_mcu.trainer.intgemm.matmul_scaled`)."""
    if not gemm.FORCE_INT64 and intgemm.lib() is not None:
        out = intgemm.matmul_scaled(a, b, a_max, b_max, sf)
        if out is not None:
            return out
    return scaling(matmul_exact(a, b, a_max, b_max), sf)


# ---- Conv2d (stride 1, zero padding, cross-correlation) ----------------------------------------------
def im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """NHWC [B, H, W, C] -> [B*Ho*Wo, C*k*k], columns in :func:`conv_weight_cols`' order for x's dtype.

    Built from k*k shifted slices (a strided-window copy is several times slower).  Where a pixel's C values
    fill a copy word (:func:`cols_by_pixel`) each slice moves whole pixels, one opaque element apiece, and the
    column order is (ky, kx, c); otherwise values move one by one in column order (c, ky, kx).
    """
    b, h, w, c = x.shape
    if pad:
        xp = np.zeros((b, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype)
        xp[:, pad:pad + h, pad:pad + w, :] = x
    else:
        xp = np.ascontiguousarray(x)
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    if cols_by_pixel(c, x.dtype):
        src = xp.view(np.dtype((np.void, c * x.itemsize)))[..., 0]
        cols = dst = np.empty((b, ho, wo, k, k), dtype=src.dtype)
    else:
        src, cols = xp, np.empty((b, ho, wo, c, k, k), dtype=x.dtype)
        dst = cols.transpose(0, 1, 2, 4, 5, 3)
    for ky in range(k):
        for kx in range(k):
            dst[:, :, :, ky, kx] = src[:, ky:ky + ho, kx:kx + wo]
    return cols.view(x.dtype).reshape(b * ho * wo, c * k * k)


def cols_by_pixel(c: int, dtype) -> bool:
    """Whether :func:`im2col` copies whole pixels (C values of ``dtype`` filling a multiple of 4 bytes, C > 1:
    several times faster than value by value; other sizes copy slower as opaque elements)."""
    return c > 1 and (c * np.dtype(dtype).itemsize) % 4 == 0


def conv_weight_cols(w: np.ndarray, dtype) -> np.ndarray:
    """W [F, C, k, k] as [F, C*k*k] in :func:`im2col`'s column order for an input of ``dtype``."""
    f, c = w.shape[:2]
    return w.transpose(0, 2, 3, 1).reshape(f, -1) if cols_by_pixel(c, dtype) else w.reshape(f, -1)


def conv_grad_from_cols(g: np.ndarray, w_shape, dtype) -> np.ndarray:
    """A weight gradient [F, C*k*k] in :func:`im2col`'s column order (input ``dtype``) as [F, C, k, k]."""
    f, c, k, _ = w_shape
    return g.reshape(f, k, k, c).transpose(0, 3, 1, 2) if cols_by_pixel(c, dtype) else g.reshape(w_shape)


def conv_forward_cols(cols: np.ndarray, w: np.ndarray, batch: int, ho: int, wo: int, a_max=None) -> np.ndarray:
    """z in NHWC [B, Ho, Wo, F]: z[m,i,j,f] = sum_{c,k,l} W[f,c,k,l] * xp[m,c,i+k,j+l]."""
    f = w.shape[0]
    return matmul_exact(cols, conv_weight_cols(w, cols.dtype).T, a_max=a_max).reshape(batch, ho, wo, f)


def conv_scaled_cols(cols: np.ndarray, w: np.ndarray, sf: int, batch: int, ho: int, wo: int, a_max: int):
    """scaling(conv_forward_cols(...), sf) as int8 NHWC [B, Ho, Wo, F]."""
    f = w.shape[0]
    return matmul_scaled(cols, conv_weight_cols(w, cols.dtype).T, sf, a_max, max_abs(w)).reshape(batch, ho, wo, f)


def conv_grad_cols(delta: np.ndarray, cols: np.ndarray, w_shape, b_max=None) -> np.ndarray:
    """G[f, c, k, l] = sum_{m,i,j} delta[m, i, j, f] * xp[m, c, i+k, j+l]  (delta in NHWC)."""
    g = matmul_exact(delta.reshape(-1, w_shape[0]).T, cols, b_max=b_max)
    return conv_grad_from_cols(g, w_shape, cols.dtype)


# ---- NITRO-Scaling and NITRO-ReLU ---------------------------------------------------------------------
def scaling(z: np.ndarray, sf: int) -> np.ndarray:
    """clip(tdiv(z, SF), -127, 127) as int8; backward is the identity.

    Two passes over the exact integer z: clip to +-(128*SF - 1), then divide and let the float->int8 cast
    truncate toward zero (C semantics).  Exact because (1) tdiv is monotone and the clip bounds are integers, so
    clipping z first to the widest range whose quotient still truncates into [-127, 127] changes nothing after
    the final clip; (2) the clipped |z| < 128*SF < 2**53, so trunc(z / SF) of the correctly rounded float64
    quotient is tdiv (the proof in :func:`~nitro_mcu.trainer.arith.tdiv`), and the quotient lies in (-128, 128),
    so the cast is defined.  Under ``gemm.FORCE_INT64`` it is the int64 definition.
    """
    b = 128 * sf - 1
    if b >= 2**53 or gemm.FORCE_INT64:
        return np.clip(tdiv(np.asarray(z), sf), -127, 127).astype(np.int8)
    z = np.clip(z, -b, b)
    out = np.empty(z.shape, dtype=np.int8)
    np.divide(z, sf, out=out, casting="unsafe", dtype=np.float64)
    return out


@cache
def _relu_lut(slope_inv: int) -> np.ndarray:
    v = np.arange(-128, 128, dtype=np.int64)
    return (np.maximum(v, 0) + tdiv(np.clip(v, -127, 0), slope_inv) - RELU_MEAN[slope_inv]).astype(np.int8)


@cache
def _relu_lut_u8(slope_inv: int) -> np.ndarray:
    """The same table indexed by the int8 bit pattern (a uint8 view): no widening pass over s."""
    return _relu_lut(slope_inv)[(np.arange(256) + 128) & 0xFF]


@cache
def _relu_lut_pairs(slope_inv: int) -> np.ndarray:
    """65536-entry table mapping two adjacent int8 inputs (one uint16 load) to their two outputs."""
    pairs = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)  # memory order: any endianness
    return np.ascontiguousarray(_relu_lut_u8(slope_inv)[pairs]).view(np.uint16).ravel()


def relu_forward(s: np.ndarray, slope_inv: int) -> np.ndarray:
    """clip(s, 0, 127) + tdiv(clip(s, -127, 0), alpha_inv) - mu, as a 256-entry table on the int8 input."""
    lut = _relu_lut(slope_inv)
    if s.dtype == np.int8:
        if s.size % 2 == 0 and s.flags.c_contiguous and s.size >= 4096:
            # Two elements per lookup (take's index conversion dominates): half the work on big maps.
            return _relu_lut_pairs(slope_inv).take(s.reshape(-1).view(np.uint16)).view(np.int8).reshape(s.shape)
        return _relu_lut_u8(slope_inv).take(s.view(np.uint8))
    return lut[s.astype(np.int16) + 128]


def relu_backward(delta: np.ndarray, s: np.ndarray, slope_inv: int, asymmetric_sat: bool,
                  bound: int | None = None) -> np.ndarray:
    """tdiv(delta, slope(s)): 1 on [0, 126], alpha_inv below 0, zero at 127 (and at -127 unless Q5).

    The reference divides by 2**31 - 1 at x = 127; that equals 0 for every |delta| < 2**31 - 1, which
    the forward bounds guarantee.

    With ``bound`` (|delta| <= bound < 2**53) and an int8 s the division runs in float64: delta is exact there,
    trunc(delta * factor(s)) with factor 1, 1/alpha_inv or 0 (a 256-entry table on s's bit pattern; 1/alpha_inv
    exact for a power of two) or trunc(delta / alpha_inv) is tdiv by the argument in
    :func:`~nitro_mcu.trainer.arith.tdiv`, and the cast back to int64 truncates.  Same integers, no int64 division
    (and not under ``gemm.FORCE_INT64``: the int64 definition is the reference).
    """
    if bound is not None and bound < 2**53 and s.dtype == np.int8 and not gemm.FORCE_INT64:
        f = delta.astype(np.float64)
        if slope_inv & (slope_inv - 1) == 0:
            np.multiply(f, _relu_grad_factor(slope_inv, asymmetric_sat).take(s.view(np.uint8)), out=f)
        else:
            np.divide(f, slope_inv, out=f, where=s < 0)
            f[(s == 127) if asymmetric_sat else ((s == 127) | (s == -127))] = 0
        return f.astype(np.int64)
    out = np.where(s < 0, tdiv(delta, slope_inv), delta)
    blocked = (s == 127) if asymmetric_sat else ((s == 127) | (s == -127))
    out[blocked] = 0
    return out


@cache
def _relu_grad_factor(slope_inv: int, asymmetric_sat: bool) -> np.ndarray:
    """Table over the int8 bit pattern of s: 0 where the gradient is blocked, 1/alpha_inv below 0, else 1."""
    v = ((np.arange(256) + 128) & 0xFF) - 128  # the value of each uint8 bit pattern as int8
    f = np.where(v < 0, 1.0 / slope_inv, 1.0)
    f[(v == 127) | ((v == -127) & (not asymmetric_sat))] = 0.0
    return f


# ---- MaxPool ------------------------------------------------------------------------------------------
def pool_geometry(h: int, k: int, pad: int, one_sided: bool, out: int | None = None):
    """(out_size, top_offset) of a kernel=stride pool along one axis.

    one_sided (Q14, reference): windows start at -pad and out = floor((h + 2*pad - k)/k) + 1.
    otherwise: out = ceil(h/k) (given) and the total padding out*k - h is split floor-half on top.
    """
    if one_sided or out is None:
        return (h + 2 * pad - k) // k + 1, pad
    return out, (out * k - h) // 2


def _pool_slices(h, w, kh, kw, oh, ow, top, left):
    """(padded-buffer slices, real-map slices) of the real cells the windows cover."""
    r0, r1 = max(0, -top), min(h, oh * kh - top)
    c0, c1 = max(0, -left), min(w, ow * kw - left)
    return (slice(r0 + top, r1 + top), slice(c0 + left, c1 + left)), (slice(r0, r1), slice(c0, c1))


def maxpool_forward(x: np.ndarray, kh: int, kw: int, oh: int, ow: int, top: int, left: int, pad_value: int,
                    with_idx: bool = False):
    """Max over kernel=stride windows of a padded NHWC map -> (y, argmax offset in the window or None).

    Windows cover padded rows [0, oh*kh) where real row r sits at r + top.  Ties go to the first element
    in row-major window order: the running maximum only moves on a strictly greater value.
    """
    b, h, w, c = x.shape
    covered = top == 0 and left == 0 and oh * kh <= h and ow * kw <= w
    if not with_idx and covered:
        return _pool_max_nopad(x, kh, kw, oh, ow), None
    if with_idx and x.dtype.kind == "i" and x.dtype.itemsize <= 2:
        r = _pool_argmax_keys(x, kh, kw, oh, ow, top, left, pad_value)
        if r is not None:
            return r
    buf = np.full((b, oh * kh, ow * kw, c), pad_value, dtype=np.int16)
    dst, src = _pool_slices(h, w, kh, kw, oh, ow, top, left)
    buf[:, dst[0], dst[1], :] = x[:, src[0], src[1], :]
    view = buf.reshape(buf.shape[0], oh, kh, ow, kw, buf.shape[3])
    best = view[:, :, 0, :, 0, :].copy()
    idx = np.zeros(best.shape, dtype=np.int16) if with_idx else None
    for t in range(1, kh * kw):
        v = view[:, :, t // kw, :, t % kw, :]
        if with_idx:
            better = v > best
            np.copyto(best, v, where=better)
            np.copyto(idx, t, where=better)
        else:
            np.maximum(best, v, out=best)
    return best.astype(x.dtype), idx


def _pool_max_nopad(x, kh, kw, oh, ow):
    """Window maxima when the windows lie inside the map (no padding; trailing rows/columns dropped)."""
    b, c = x.shape[0], x.shape[3]
    v = x[:, :oh * kh, :ow * kw, :].reshape(b, oh, kh, ow * kw * c)
    m = v[:, :, 0].copy()
    for dy in range(1, kh):
        np.maximum(m, v[:, :, dy], out=m)
    m = m.reshape(b, oh, ow, kw * c)
    best = m[..., :c].copy()
    for dx in range(1, kw):
        np.maximum(best, m[..., dx * c:(dx + 1) * c], out=best)
    return best


@cache
def _window_offsets(kh: int, kw: int, ow: int, c: int, t_n: int, kdt) -> np.ndarray:
    """The tie-break offsets (t_n - 1 - dy*kw - dx) of every cell, laid out over a band of kh rows."""
    t = (t_n - 1 - np.arange(kh * kw)).reshape(kh, 1, kw, 1)
    return np.broadcast_to(t, (kh, ow, kw, c)).reshape(kh, ow * kw * c).astype(kdt)


def _pool_argmax_keys(x, kh, kw, oh, ow, top, left, pad_value):
    """(max, first argmax) of every window through one max-reduction of packed keys, or None.

    key = v * T + (T - 1 - t) with t = dy*kw + dx the row-major window offset and T >= kh*kw a power of
    two: keys order by value first and, among equal values, by the smaller t, so the maximum key holds
    the window maximum (key >> log2 T, an arithmetic floor shift) and its first occurrence
    (T - 1 - (key & (T - 1))) -- the same tie rule as the compare-and-move loop.  A pad value below
    the input dtype's range (PAD_NEG_INF) is replaced by dtype_min - 1: it still loses to every real
    cell and every window holds a real cell (checked; else None and the caller's general loop runs).
    """
    b, h, w, c = x.shape
    info = np.iinfo(x.dtype)
    # every window must contain a real cell
    if not (top < kh and left < kw and (oh - 1) * kh - top < h and (ow - 1) * kw - left < w):
        return None
    if (oh * kh - top) <= 0 or (ow * kw - left) <= 0:
        return None
    pad = max(int(pad_value), info.min - 1)
    bits = max(1, (kh * kw - 1).bit_length())
    t_n = 1 << bits
    lo, hi = min(info.min, pad) * t_n, (max(info.max, pad) + 1) * t_n - 1
    kdt = np.int16 if -(2**15) <= lo and hi < 2**15 else np.int32
    if not (-(2**31) <= lo and hi < 2**31):
        return None
    kb = np.empty((b, oh * kh, ow * kw, c), dtype=kdt)
    dst, src = _pool_slices(h, w, kh, kw, oh, ow, top, left)
    if not (top == 0 and left == 0 and oh * kh <= h and ow * kw <= w):
        kb.fill(pad * t_n)
    np.multiply(x[:, src[0], src[1], :], t_n, out=kb[:, dst[0], dst[1], :], dtype=kdt)
    # offsets over a band of kh rows: the add and the max over dy run on long contiguous rows
    kb3 = kb.reshape(b * oh, kh, ow * kw * c)
    kb3 += _window_offsets(kh, kw, ow, c, t_n, kdt)
    m = kb3[:, 0]
    for dy in range(1, kh):
        np.maximum(m, kb3[:, dy], out=m)
    # max over dx by halving (keys are distinct within a window: any order finds the same maximum)
    m = m.reshape(b * oh, ow, kw * c)
    width = kw
    while width > 1:
        half = width // 2
        np.maximum(m[:, :, :half * c], m[:, :, (width - half) * c:width * c], out=m[:, :, :half * c])
        width -= half
    key = m[:, :, :c].reshape(b, oh, ow, c)
    best = (key >> bits).astype(x.dtype)
    idx = ((t_n - 1) - (key & (t_n - 1))).astype(np.int16)
    return best, idx


def maxpool_backward(delta: np.ndarray, idx: np.ndarray, in_shape, kh: int, kw: int, top: int, left: int):
    """Scatter NHWC delta to each window's argmax; gradients on padded cells are dropped."""
    b, oh, ow, c = delta.shape
    dst, src = _pool_slices(in_shape[1], in_shape[2], kh, kw, oh, ow, top, left)
    # One scatter: flat position of each window's argmax in the padded NHWC buffer.
    dy, dx = idx // kw, idx % kw
    r = np.arange(oh, dtype=np.int64)[None, :, None, None] * kh + dy
    q = np.arange(ow, dtype=np.int64)[None, None, :, None] * kw + dx
    pos = ((np.arange(b, dtype=np.int64)[:, None, None, None] * (oh * kh) + r) * (ow * kw) + q) * c \
        + np.arange(c, dtype=np.int64)
    gbuf = np.zeros(b * oh * kh * ow * kw * c, dtype=delta.dtype)
    gbuf[pos.ravel()] = delta.ravel()
    gbuf = gbuf.reshape(b, oh * kh, ow * kw, c)
    out = np.zeros((b, in_shape[1], in_shape[2], c), dtype=delta.dtype)
    out[:, src[0], src[1], :] = gbuf[:, dst[0], dst[1], :]
    return out


PAD_NEG_INF = INT16_MIN  # below every int8/int16 activation: a padded cell never wins


# ---- Dropout ------------------------------------------------------------------------------------------
def dropout_rescale(rate_permille: int) -> int:
    """R_p = floor(1000 / (1 - p)), p = rate_permille / 1000 (docs/algorithm.md §2.9 table)."""
    return (1000 * 1000) // (1000 - rate_permille)


def check_dropout_rate(rate) -> int:
    """Rates are multiples of 0.05 in [0.05, 0.95]; returns the rate in permille."""
    permille = int(round(float(rate) * 1000))
    if permille % 50 or not 50 <= permille <= 950 or abs(float(rate) * 1000 - permille) > 1e-6:
        raise ValueError(f"unsupported dropout rate {rate}; use a multiple of 0.05 in [0.05, 0.95]")
    return permille


def dropout_forward(x: np.ndarray, mask: np.ndarray, rate_permille: int) -> np.ndarray:
    """tdiv(x * mask * R_p, 1000) as int16."""
    return tdiv(x.astype(np.int32) * mask * dropout_rescale(rate_permille), 1000).astype(np.int16)
