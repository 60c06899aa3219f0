"""Tall conv GEMMs cut into pieces that OpenBLAS runs with its small-matrix kernels.

OpenBLAS (0.3.x, x86-64) multiplies products of up to about 100**3 multiply-adds without packing its
operands; the conv products here (tens of thousands of im2col rows, a few dozen columns) run 25-40 % faster
as a batch of such pieces than as one GEMM.  The pieces change which partial sums BLAS forms, never the
operands: the callers' bounds (|a|max * |b|max * K below the carrier's exact range) make every partial sum
exact in any order, so the results equal the one-GEMM product bit for bit.
"""
from __future__ import annotations

import numpy as np

SMALL_MACS = 10**6  # multiply-adds per piece: OpenBLAS's small-matrix kernels take about 100**3


def _pieces(rows: int, macs_per_row: int) -> int:
    """How many equal pieces to cut ``rows`` into (a divisor of rows; 1 = do not cut)."""
    want = -(-rows * macs_per_row // SMALL_MACS)
    if want <= 1:
        return 1
    for nb in range(want, min(rows, 4 * want) + 1):
        if rows % nb == 0:
            return nb
    return 1


def matmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a [M, K], b [K, N] (same float dtype), run as row blocks of a: each output row is the same
    dot product either way."""
    m, k = a.shape
    nb = _pieces(m, k * b.shape[1])
    if nb == 1 or not a.flags.c_contiguous:
        return np.matmul(a, b)
    return np.matmul(a.reshape(nb, m // nb, k), b).reshape(m, b.shape[1])


def matmul_inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a [M, R], b [R, N] with a long inner dimension R, run as R-blocks whose products are summed
    (in the operands' dtype: exact when the caller's bound holds for the whole sum)."""
    m, r = a.shape
    nb = _pieces(r, m * b.shape[1])
    if nb == 1 or not b.flags.c_contiguous:
        return np.matmul(a, b)
    rc = r // nb
    parts = np.matmul(a.reshape(m, nb, rc).transpose(1, 0, 2), b.reshape(nb, rc, b.shape[1]))
    return parts.sum(axis=0)
