"""The conv block's weight gradient behind its kernel=stride head pool, exact on float BLAS.

Behind such a pool the scattered error is zero except at each window's argmax (one cell per window and
channel, the windows do not overlap), and NITRO-ReLU backward keeps zeros at zero.  So
G[f, :] = sum over windows w of relu_bwd(delta[w, f], s[pos]) * cols[pos, :] with pos = pos(w, f) the
argmax row of the im2col matrix; windows whose argmax is a padded cell contribute nothing (maxpool_backward
drops them).  :func:`pooled_grad` computes that G without the dense scatter / ReLU pass of the reference
route (blocks.ConvBlock._dense_grad), and returns None where no float carrier is proven exact.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from . import gemm
from . import layers as L
from .arith import max_abs
from .smallgemm import matmul_inner

# Head-pool windows larger than this use the gathered gradient; smaller ones scatter into a dense error
# and run one GEMM (gathering K values per non-zero costs ~8x a BLAS multiply-add).
SPARSE_MIN_WINDOW = 8
GATHER_CHUNK = 1 << 17  # float64 elements gathered per matmul in the gathered gradient (1 MiB)


def pooled_grad(pool, pad_value, windows_real, delta, idx, s, cols, x_max, slope_inv, asym_sat):
    """G [F, K] = the conv weight gradient in cols' column order (float64 holding exact integers), or None if not
    float-exact.

    ``delta`` is the head's back-propagated error (flattened NCHW [B, C, oh, ow], a float carrier), ``idx`` the
    pool's argmax offsets (NHWC), ``s`` the block's int8 pre-activation (NHWC), ``cols`` its im2col matrix and
    ``x_max`` a bound on |cols|.
    """
    p = pool
    b, hh, ww, c = s.shape
    n = b * p.oh * p.ow
    # channel-major [C, B, oh, ow] throughout: delta arrives flattened NCHW [B, C, oh, ow]
    t = idx.transpose(3, 0, 1, 2)  # window offset of the argmax, dy * kw + dx
    origin, offset = _window_rows(p.kh, p.kw, p.oh, p.ow, p.top, p.left, b, hh, ww)
    row_c = origin + offset.take(t)
    valid = None
    if not (pad_value == L.PAD_NEG_INF and windows_real):  # else a -infinity pad never wins a real window
        r = np.arange(p.oh)[:, None] * p.kh + t // p.kw - p.top
        q = np.arange(p.ow) * p.kw + t % p.kw - p.left
        valid = (r >= 0) & (r < hh) & (q >= 0) & (q < ww)
        if valid.all():
            valid = None
        else:
            row_c[~valid] = 0
            valid = valid.reshape(c, n)
    row_c = row_c.reshape(c, n)
    d = delta.reshape(b, c, p.oh * p.ow).transpose(1, 0, 2).reshape(c, n).astype(np.float64)
    s_at = np.take(s, row_c * c + np.arange(c)[:, None])  # s[row, f] of the NHWC map, flat
    d = L.relu_backward(d, s_at, slope_inv, asym_sat, overwrite=True)
    if valid is not None:
        d[~valid] = 0
    if p.kh * p.kw > SPARSE_MIN_WINDOW:
        return gathered_grad(d, row_c, cols, x_max)
    return scattered_grad(d, row_c, valid, cols, x_max)


@cache
def _window_rows(kh, kw, oh, ow, top, left, b, hh, ww):
    """(origin [B, oh, ow], offset [kh*kw]): in window (m, i, j) the cell at offset t = dy*kw + dx is NHWC row
    (m*H + i*kh - top + dy) * W + j*kw - left + dx = origin + offset[t] (cached per geometry and batch size)."""
    origin = (np.arange(b)[:, None, None] * hh + np.arange(oh)[:, None] * kh - top) * ww + np.arange(ow) * kw - left
    t = np.arange(kh * kw)
    return origin, (t // kw) * ww + t % kw


def gathered_grad(d, row_c, cols, x_max):
    """G[f, :] = d[f] @ cols[row_c[f]] in float64: exact because |d|max * |x|max * n < 2**53 is checked."""
    c, n = d.shape
    if max_abs(d) * x_max * n >= gemm.F64_EXACT:
        return None
    # Gather and widen a few channels at a time: one [C, n, K] float64 block can be many MB, and
    # streaming it through memory cost ~3x more than chunks that stay in cache (1 MiB each).
    k_cols = cols.shape[1]
    out = np.empty((c, 1, k_cols), dtype=np.float64)
    step = max(1, GATHER_CHUNK // (n * k_cols))
    for f in range(0, c, step):
        g = np.take(cols, row_c[f:f + step], axis=0).astype(np.float64)  # [step, n, K]
        np.matmul(d[f:f + step, None, :], g, out=out[f:f + step])
    return out.reshape(c, k_cols)


def scattered_grad(d, row_c, valid, cols, x_max):
    """Scatter the few non-zeros into a dense channel-major error [C, rows] and run one float64 GEMM against
    cols: exact because |d|max * |x|max * rows < 2**53 is checked.  (Float32 row chunks would need the chunk
    sums of |d| * |x| below 2**24: trained errors reach ~1e5, so a chunk could hold about one non-zero.)"""
    c, n = d.shape
    rows = cols.shape[0]
    flat = row_c + (np.arange(c) * rows)[:, None]
    if valid is not None:  # invalid entries all point at row 0: leave them out, they must not overwrite a value
        flat, d = flat[valid], d[valid]
    if max_abs(d) * x_max * rows >= gemm.F64_EXACT:
        return None
    dense = np.zeros(c * rows, dtype=np.float64)
    dense[flat.ravel()] = d.ravel()
    return matmul_inner(dense.reshape(c, rows), cols.astype(np.float64))
