"""The conv block's weight gradient behind its kernel=stride head pool, summed over the argmax cells alone.

Behind such a pool the scattered error is zero except at each window's argmax (one cell per window and
channel, the windows do not overlap), and NITRO-ReLU backward keeps zeros at zero.  So
G[f, :] = sum over windows w of relu_bwd(delta[w, f], s[pos]) * cols[pos, :] with pos = pos(w, f) the
argmax row of the im2col matrix; windows whose argmax is a padded cell contribute nothing (maxpool_backward
drops them).  :func:`pooled_grad` computes that G in int64 without the dense scatter / ReLU pass of the reference
route (blocks.ConvBlock._dense_grad): on the native kernel (intgemm.gather_rows) or, without it, NumPy int64.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from . import intgemm
from . import layers as L
from .arith import max_abs

GATHER_CHUNK = 1 << 17  # int64 elements gathered per matmul of the NumPy fallback (1 MiB)


def pooled_grad(pool, pad_value, windows_real, delta, d_bound, idx, s, cols, x_max, slope_inv, asym_sat):
    """G [F, K] = the conv weight gradient in cols' column order (int64).

    ``delta`` is the head's back-propagated error (flattened NCHW [B, C, oh, ow], int64, |delta| <= d_bound),
    ``idx`` the pool's argmax offsets (NHWC), ``s`` the block's int8 pre-activation (NHWC), ``cols`` its im2col matrix and
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
    d = delta.reshape(b, c, p.oh * p.ow).transpose(1, 0, 2).reshape(c, n)
    s_at = np.take(s, row_c * c + np.arange(c)[:, None])  # s[row, f] of the NHWC map, flat
    d = L.relu_backward(d, s_at, slope_inv, asym_sat, d_bound)
    if valid is not None:
        d[~valid] = 0
    d_max = max_abs(d)
    if d_max * x_max * n >= 2**63:
        raise OverflowError(f"conv gradient bound {d_max * x_max * n} exceeds int64")
    if intgemm.lib() is not None:
        return intgemm.gather_rows(d, row_c, cols, d_max)
    return gathered_grad(d, row_c, cols)


@cache
def _window_rows(kh, kw, oh, ow, top, left, b, hh, ww):
    """(origin [B, oh, ow], offset [kh*kw]): in window (m, i, j) the cell at offset t = dy*kw + dx is NHWC row
    (m*H + i*kh - top + dy) * W + j*kw - left + dx = origin + offset[t] (cached per geometry and batch size)."""
    origin = (np.arange(b)[:, None, None] * hh + np.arange(oh)[:, None] * kh - top) * ww + np.arange(ow) * kw - left
    t = np.arange(kh * kw)
    return origin, (t // kw) * ww + t % kw


def gathered_grad(d, row_c, cols):
    """G[f, :] = d[f] @ cols[row_c[f]] in NumPy int64, a few channels at a time (one [C, n, K] block can be many MB)."""
    c, n = d.shape
    k_cols = cols.shape[1]
    out = np.empty((c, 1, k_cols), dtype=np.int64)
    step = max(1, GATHER_CHUNK // (n * k_cols))
    for f in range(0, c, step):
        g = np.take(cols, row_c[f:f + step], axis=0).astype(np.int64)  # [step, n, K]
        np.matmul(d[f:f + step, None, :].astype(np.int64), g, out=out[f:f + step])
    return out.reshape(c, k_cols)
