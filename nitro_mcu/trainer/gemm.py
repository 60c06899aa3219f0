"""Exact integer matrix products on float BLAS: the carriers and the proofs that make them exact.

float64 represents every integer of magnitude <= 2**53 exactly, and BLAS sums of such integers stay exact
as long as every partial sum does too; we require the bound on the *sum of magnitudes* (|a|max * |b|max * K).
float32 gives the same argument below 2**24.  Every result here is an exact integer (or, for
:func:`matmul_split_f32_sat`, exact wherever a saturating consumer can tell), so :func:`~nitro_mcu.trainer.arith.tdiv`,
comparisons and casts treat it like int64.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from .arith import max_abs

F64_EXACT = 2**53
F32_EXACT = 2**24

# Tests and benchmarks/trainer_speed.py flip this to prove the float paths bit-identical to pure int64; every
# caller reads it as ``gemm.FORCE_INT64`` at call time.
FORCE_INT64 = False


def matmul_exact(a: np.ndarray, b: np.ndarray, a_max: int | None = None, b_max: int | None = None) -> np.ndarray:
    """Exact integer product ``a @ b``: float64 holding exact integers, or int64.

    Uses float32 (bound < 2**24) or float64 (bound < 2**53) BLAS when |a|max * |b|max * K proves every
    partial sum exact,
    otherwise (or with FORCE_INT64) falls back to int64, itself checked against 2**63.  Callers treat
    both results alike: :func:`~nitro_mcu.trainer.arith.tdiv`, comparisons and casts are exact on either.
    """
    k = a.shape[-1]
    a_max = max_abs(a) if a_max is None else a_max
    b_max = max_abs(b) if b_max is None else b_max
    bound = a_max * b_max * k
    if FORCE_INT64:
        pass
    elif bound < F32_EXACT:
        return np.matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False))
    elif bound < F64_EXACT:
        return np.matmul(a.astype(np.float64, copy=False), b.astype(np.float64, copy=False))
    if bound >= 2**63:
        # a caller's bound (e.g. int16's 32768 for a Dropout output that is at most 2 560) may be loose: the
        # int64 product is exact whenever the operands' own maxima bound it below 2**63
        bound = max_abs(a) * max_abs(b) * k
    if bound >= 2**63:
        raise OverflowError(f"integer product bound {bound} exceeds int64")
    return np.matmul(a.astype(np.int64, copy=False), b.astype(np.int64, copy=False))


CHUNK_FINE = 8  # K-chunks of matmul_chunked_f32 are cut at multiples of this many columns
CHUNK_MAX = 10  # with more chunks the batched float32 GEMM is about as slow as one float64 GEMM


def l1_chunk_width(a_max: int, bt32: np.ndarray) -> int | None:
    """Width kc of the widest K-chunks (a multiple of CHUNK_FINE, at most CHUNK_MAX chunks, the last one zero-padded)
    with ``a_max * sum(|bt[n, chunk]|) < 2**24`` for every row n and chunk; None if there is none (or FORCE_INT64).

    Then every float32 chunk product of :func:`matmul_chunked_f32` is exact for any ``|a| <= a_max``: each product
    and each partial sum of a[m, chunk] . bt[n, chunk] is an integer of magnitude <= a_max * sum(|bt[n, chunk]|).
    The sums of |bt| over CHUNK_FINE columns (integers in float32) are exact while below 2**24 and come out >= 2**24
    otherwise (rounding is monotone, 2**24 is representable, the terms are non-negative); their sums per candidate
    chunking (one float64 GEMM against 0/1 columns) are exact or >= 2**24 alike, so the test is never fooled.
    """
    if FORCE_INT64:
        return None
    n, k = bt32.shape
    groups = -(-k // CHUNK_FINE)
    mag = np.abs(bt32)
    if k != groups * CHUNK_FINE:
        mag = np.concatenate([mag, np.zeros((n, groups * CHUNK_FINE - k), np.float32)], axis=1)
    fine = (mag.reshape(-1, CHUNK_FINE) @ np.ones(CHUNK_FINE, np.float32)).reshape(n, groups).astype(np.float64)
    pers, starts, ind = _chunk_candidates(groups)
    worst = np.maximum.reduceat((fine @ ind).max(axis=0), starts)  # per candidate: its largest chunk sum
    for per, s in zip(pers, worst.tolist()):
        if a_max * s < F32_EXACT:
            return per * CHUNK_FINE
    return None


class ChunkMemo:
    """One layer's memory of a refused :func:`l1_chunk_width`: the next ``RETRY_AFTER`` products skip the test
    and take the exact fallback at once.  Weights move slowly, so a test refused once is refused for a while;
    skipping it changes only the speed, never a result (every path is exact)."""

    RETRY_AFTER = 32

    def __init__(self):
        self.skip = 0

    def due(self) -> bool:
        """Is the chunk test worth running for this product?"""
        if self.skip:
            self.skip -= 1
            return False
        return True

    def refused(self) -> None:
        self.skip = self.RETRY_AFTER


@cache
def _chunk_candidates(groups: int):
    """For K of ``groups`` fine groups: the chunkings tried (groups per chunk, fewest chunks first), where each
    one's columns start in the 0/1 matrix [groups, total chunks] that sums fine groups into chunks."""
    pers = sorted({-(-groups // c) for c in range(1, min(CHUNK_MAX, groups) + 1)}, reverse=True)
    cols, starts = [], []
    for per in pers:
        starts.append(len(cols))
        for c0 in range(0, groups, per):
            col = np.zeros(groups)
            col[c0:c0 + per] = 1.0
            cols.append(col)
    return pers, np.array(starts), np.stack(cols, axis=1)


def matmul_chunked_f32(a: np.ndarray, bt32: np.ndarray, kc: int) -> np.ndarray:
    """Exact ``a @ bt.T`` for an integer ``a`` [M, K] and float32 ``bt32`` [N, K] holding integers: float64 (float32
    for a single chunk), the sum of float32 chunk products over K-chunks of width ``kc`` from
    :func:`l1_chunk_width` (computed with ``|a|max``), run as one batched GEMM.

    Each chunk product is exact (see :func:`l1_chunk_width`; zero padding adds nothing), and their float64 sum is
    exact when |a|max * |bt|max * K < 2**53, which the caller must ensure.
    """
    m, k = a.shape
    c = -(-k // kc)
    if c * kc == k:
        a32 = a.astype(np.float32)
    else:
        a32 = np.zeros((m, c * kc), np.float32)
        a32[:, :k] = a
        bt = np.zeros((bt32.shape[0], c * kc), np.float32)
        bt[:, :k] = bt32
        bt32 = bt
    if c == 1:
        return np.matmul(a32, bt32.T)
    parts = np.matmul(a32.reshape(m, c, kc).transpose(1, 0, 2), bt32.reshape(-1, c, kc).transpose(1, 2, 0))
    return parts.sum(axis=0, dtype=np.float64)


def exact_float_dtype(bound: int):
    """The narrowest float type whose BLAS sums are exact for a product bound (|a|max*|b|max*K), else None.

    None also under FORCE_INT64, so every caller falls back to its pure-int64 code.
    """
    if FORCE_INT64:
        return None
    if bound < F32_EXACT:
        return np.float32
    if bound < F64_EXACT:
        return np.float64
    return None


def split_shift(a_max: int, b_max: int, k: int) -> int | None:
    """A shift s for the two-GEMM float32 product of :func:`matmul_split_f32`, or None.

    With hi = b >> s (floor) and lo = b - hi * 2**s (so 0 <= lo < 2**s), both partial products
    a @ hi and a @ lo are float32-exact when a_max * k * max(|hi|max, |lo|max) < 2**24, i.e. when
    a_max * k * (2**s - 1) < 2**24 and a_max * k * ((b_max >> s) + 1) < 2**24.  The smallest such s
    is returned.  The recombination hi_res * 2**s + lo_res is done in float64 and is exact because
    |a @ b| <= a_max * b_max * k < 2**53 (also required here).
    """
    if FORCE_INT64 or a_max * b_max * k >= F64_EXACT:
        return None
    base = a_max * k
    for s in range(1, 31):
        if base * ((1 << s) - 1) >= F32_EXACT:
            return None
        if base * ((b_max >> s) + 1) < F32_EXACT:
            return s
    return None


def matmul_split_f32(a32: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """Exact ``a @ b`` as float64 from ONE float32 GEMM against [hi | lo] (see :func:`split_shift`).

    ``a32`` is float32 holding exact integers, ``b`` an integer matrix [K, N]; ``s`` must come from
    ``split_shift(|a32|max, |b|max, K)``.  Float32 BLAS is several times faster than float64 for the
    narrow conv GEMMs, so two exact float32 halves beat one float64 product.
    """
    r, n = _split_gemm(a32, b, s)
    z = np.multiply(r[..., :n], float(1 << s), dtype=np.float64)
    z += r[..., n:]
    return z


def _split_gemm(a32: np.ndarray, b: np.ndarray, s: int) -> tuple[np.ndarray, int]:
    """One float32 GEMM of ``a32`` against [hi | lo] of b (hi = b >> s, lo = b - hi * 2**s); -> (result, N)."""
    bi = b.astype(np.int64)
    hi = bi >> s
    lo = bi - (hi << s)
    return np.matmul(a32, np.concatenate([hi, lo], axis=1).astype(np.float32)), b.shape[1]


def matmul_split_f32_sat(a32: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """``a @ b`` as float32 from one GEMM against [hi | lo]: exact where |a @ b| < 2**24, else of the right
    sign and magnitude >= 2**24.  Only for a consumer that saturates below 2**24 (NITRO-Scaling with
    128 * SF <= 2**24): to it the result is as good as the exact product.

    hi_res * 2**s is exact (a power-of-two scaling of an exact integer below 2**24 * 2**s, no overflow)
    and so is lo_res; their float32 sum is correctly rounded, hence exact whenever the true sum is an
    integer below 2**24, and rounding is monotone with 2**24 representable, so a true sum at or beyond
    2**24 cannot round to below it.  Saves the float64 recombination of :func:`matmul_split_f32`.
    """
    r, n = _split_gemm(a32, b, s)
    z = np.multiply(r[..., :n], np.float32(1 << s))
    z += r[..., n:]
    return z
