"""Exact integer matrix products: the native integer kernels (intgemm.py), NumPy int64 as reference and fallback.

Both paths return the exact int64 product, so every caller gets the same integers whichever ran.
"""
from __future__ import annotations

import numpy as np

from . import intgemm
from .arith import max_abs

# Tests and the benchmarks flip this to run the NumPy int64 reference instead of the native kernels (and prove the
# two bit-identical); every caller reads it as ``gemm.FORCE_INT64`` at call time.
FORCE_INT64 = False


def matmul_exact(a: np.ndarray, b: np.ndarray, a_max: int | None = None, b_max: int | None = None) -> np.ndarray:
    """Exact integer product ``a @ b`` (int64) for integer a [M, K], b [K, N]; ``a_max`` / ``b_max`` bound |a|, |b|.

    The native kernel (:func:`~nitro_mcu.trainer.intgemm.matmul`) where it is built and FORCE_INT64 is off, else
    NumPy's int64 product.  The bound |a|max * |b|max * K must be below 2**63 (checked; OverflowError if not).
    """
    k = a.shape[-1]
    a_max = max_abs(a) if a_max is None else a_max
    b_max = max_abs(b) if b_max is None else b_max
    if a_max * b_max * k >= 2**63:
        # a caller's bound (e.g. int16's 32768 for a Dropout output that is at most 2 560) may be loose: the
        # product is exact whenever the operands' own maxima bound it below 2**63
        a_max, b_max = max_abs(a), max_abs(b)
        if a_max * b_max * k >= 2**63:
            raise OverflowError(f"integer product bound {a_max * b_max * k} exceeds int64")
    if not FORCE_INT64 and a.ndim == 2 and b.ndim == 2 and intgemm.lib() is not None:
        return intgemm.matmul(a, b, a_max, b_max)
    return np.matmul(a.astype(np.int64, copy=False), b.astype(np.int64, copy=False))

