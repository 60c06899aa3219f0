"""The integer arithmetic contract shared by the Python trainer and the generated C.

Every operation here has a one-line C equivalent (given in each docstring); the code generator emits
exactly those lines, so the two sides cannot drift apart.  Nothing here ever touches a float except the
guarded exact-GEMM path in :func:`matmul_exact`, whose result is proven exact before it is used.
"""
from __future__ import annotations

import os

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# float64 represents every integer of magnitude <= 2**53 exactly, and BLAS sums of such integers stay
# exact as long as every partial sum does too.  We require the bound on the *sum of magnitudes*.
_F64_EXACT = 2**53
_F32_EXACT = 2**24  # the same argument for float32 (24-bit significand)


def tdiv(n, d):
    """Division rounding toward zero: C's ``n / d`` for signed integers.

    Works on Python ints and NumPy arrays (any broadcastable mix).  A float64 ``n`` must hold exact
    integers of magnitude < 2**53 (float32: < 2**24), as :func:`matmul_exact` returns: then
    trunc(n / d) is exact, because the correctly rounded quotient cannot reach the next integer
    (|n|/d * 2**-53 < 1/d).
    Division by zero is an error: every divisor in NITRO-D is positive by construction.
    """
    if np.isscalar(n) and np.isscalar(d) and not isinstance(n, np.floating):
        n, d = int(n), int(d)
        if d == 0:
            raise ZeroDivisionError("tdiv by zero")
        q = abs(n) // abs(d)
        return q if (n >= 0) == (d > 0) else -q
    n = np.asarray(n)
    d = np.asarray(d)
    if np.any(d == 0):
        raise ZeroDivisionError("tdiv by zero")
    if n.dtype.kind == "f":
        return (n / d).astype(np.int64)  # the C-style cast truncates toward zero
    if d.ndim == 0 and int(d) > 0:
        # The common case (positive scalar divisor): |n| // d carries the sign of n.
        q = np.abs(n) // d
        return np.where(n < 0, -q, q).astype(np.result_type(n, d), copy=False)
    q = np.floor_divide(n, d)
    r = n - q * d
    return q + ((r != 0) & ((n < 0) != (d < 0)))


def saturate(x, bits: int):
    """Clip to the signed range of ``bits`` bits (C: ``nitro_sat<bits>``)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(x, lo, hi)


def wrap_int8(x):
    """Two's-complement wrap to int8 (C: ``(int8_t)(uint8_t)(x)``, done through uint8 to stay defined)."""
    x = np.asarray(x, dtype=np.int64)
    return (((x + 128) & 0xFF) - 128).astype(np.int64)


def isqrt(n: int) -> int:
    """floor(sqrt(n)) by Newton's method, as the reference (and C: ``nitro_isqrt``)."""
    if n < 0:
        raise ValueError("isqrt of a negative number")
    if n < 2:
        return n
    x = n
    y = (x + 1) // 2
    while y < x:
        x = y
        y = (x + n // x) // 2
    return x


def int_mean(x, axis=None) -> np.ndarray:
    """tdiv(sum, count) with an int64 accumulator."""
    x = np.asarray(x)
    s = np.sum(x, axis=axis, dtype=np.int64)
    count = x.size if axis is None else int(np.prod([x.shape[a] for a in np.atleast_1d(axis)]))
    return tdiv(s, count)


def max_abs(a) -> int:
    a = np.asarray(a)
    if a.size == 0:
        return 0
    return int(max(abs(int(a.max())), abs(int(a.min()))))


FORCE_INT64 = False  # tests flip this to prove the float64 path bit-identical to pure int64


def matmul_exact(a: np.ndarray, b: np.ndarray, a_max: int | None = None, b_max: int | None = None) -> np.ndarray:
    """Exact integer product ``a @ b``: float64 holding exact integers, or int64.

    Uses float32 (bound < 2**24) or float64 (bound < 2**53) BLAS when |a|max * |b|max * K proves every
    partial sum exact,
    otherwise (or with FORCE_INT64) falls back to int64, itself checked against 2**63.  Callers treat
    both results alike: :func:`tdiv`, comparisons and casts are exact on either.
    """
    k = a.shape[-1]
    a_max = max_abs(a) if a_max is None else a_max
    b_max = max_abs(b) if b_max is None else b_max
    bound = a_max * b_max * k
    if FORCE_INT64:
        pass
    elif bound < _F32_EXACT:
        return np.matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False))
    elif bound < _F64_EXACT:
        return np.matmul(a.astype(np.float64, copy=False), b.astype(np.float64, copy=False))
    if bound >= 2**63:
        raise OverflowError(f"integer product bound {bound} exceeds int64")
    return np.matmul(a.astype(np.int64, copy=False), b.astype(np.int64, copy=False))


def exact_float_dtype(bound: int):
    """The narrowest float type whose BLAS sums are exact for a product bound (|a|max*|b|max*K), else None.

    None also under FORCE_INT64, so every caller falls back to its pure-int64 code.
    """
    if FORCE_INT64:
        return None
    if bound < _F32_EXACT:
        return np.float32
    if bound < _F64_EXACT:
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
    if FORCE_INT64 or a_max * b_max * k >= _F64_EXACT:
        return None
    base = a_max * k
    for s in range(1, 31):
        if base * ((1 << s) - 1) >= _F32_EXACT:
            return None
        if base * ((b_max >> s) + 1) < _F32_EXACT:
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


_MALLOC_TUNED: bool | None = None


def tune_malloc() -> bool:
    """Keep freed heap memory in the process (glibc ``mallopt``); called once by ``Model.train_step``.

    A training step allocates and frees a few MB of NumPy temporaries.  With glibc's default dynamic
    thresholds those blocks are trimmed back to the OS and page-faulted in again on the next step; on
    VMs with free-page reporting (e.g. Firecracker) each refault is very expensive, and this halves the
    MLP training speed.  Setting M_MMAP_THRESHOLD = 32 MiB and M_TRIM_THRESHOLD = 256 MiB keeps up to
    256 MiB of freed memory for reuse.  Process-wide, numerically irrelevant; no-op off glibc.  Opt out
    with the environment variable NITRO_MCU_MALLOC_TUNE=0.  Returns whether the setting is active.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        if os.environ.get("NITRO_MCU_MALLOC_TUNE", "1") != "0":
            try:
                import ctypes

                mallopt = ctypes.CDLL(None).mallopt
                mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                m_trim_threshold, m_mmap_threshold = -1, -3
                _MALLOC_TUNED = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))
            except (OSError, AttributeError):
                pass
    return _MALLOC_TUNED


# --------------------------------------------------------------------------------------------------
# The project PRNG: SplitMix64 (Steele, Lea & Flood 2014), one independent stream per purpose.
#
#   state_0        = mix(seed ^ (stream * STREAM_MUL))             (all arithmetic mod 2**64)
#   next():  state = state + GAMMA;  return mix(state)
#   mix(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
#            z = (z ^ (z >> 27)) * 0x94D049BB133111EB
#            return z ^ (z >> 31)
#   below(n), 1 <= n <= 2**32:  ((next() >> 32) * n) >> 32        (Lemire's multiply-high, no rejection:
#                                                                  bias <= n / 2**32, deterministic count)
#
# The k-th output is mix(state_0 + k*GAMMA), so NumPy draws whole vectors at once and C draws one at a
# time, bit-identically.  Streams keep the device independent of host-side draws: the device only ever
# needs the dropout stream.
# --------------------------------------------------------------------------------------------------
GAMMA = 0x9E3779B97F4A7C15
STREAM_MUL = 0xD1B54A32D192ED03
MASK64 = (1 << 64) - 1

STREAM_INIT = 1  # weight initialisation
STREAM_DATA = 2  # validation split, epoch shuffles, augmentation
STREAM_DROPOUT = 3  # dropout keep-masks (the only stream the device draws from)


def _mix_scalar(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Rng:
    """SplitMix64 stream; ``state`` (a Python int < 2**64) is all there is to save or restore."""

    def __init__(self, seed: int, stream: int = 0, state: int | None = None):
        if state is None:
            state = _mix_scalar((int(seed) & MASK64) ^ ((int(stream) * STREAM_MUL) & MASK64))
        self.state = int(state) & MASK64

    def next_u64(self, n: int) -> np.ndarray:
        """The next n raw 64-bit outputs (uint64 array)."""
        if n <= 0:
            return np.zeros(0, dtype=np.uint64)
        with np.errstate(over="ignore"):
            k = np.arange(1, n + 1, dtype=np.uint64)
            z = np.uint64(self.state) + k * np.uint64(GAMMA)
            out = _mix_array(z)
        self.state = (self.state + n * GAMMA) & MASK64
        return out

    def below(self, n, count: int) -> np.ndarray:
        """``count`` integers uniform in [0, n); n may be an array of per-draw bounds (each 1..2**32)."""
        hi = self.next_u64(count) >> np.uint64(32)
        n = np.asarray(n, dtype=np.uint64)
        return ((hi * n) >> np.uint64(32)).astype(np.int64)

    def randint(self, lo: int, hi: int, shape) -> np.ndarray:
        """Integers uniform in [lo, hi] inclusive, drawn in C order."""
        count = int(np.prod(shape)) if np.ndim(shape) else int(shape)
        return (lo + self.below(hi - lo + 1, count)).reshape(shape)

    def permutation(self, n: int) -> np.ndarray:
        """Fisher-Yates: for i = n-1 .. 1, swap(p[i], p[below(i+1)]); draws in that order."""
        p = np.arange(n, dtype=np.int64)
        if n < 2:
            return p
        bounds = np.arange(n, 1, -1, dtype=np.uint64)  # i + 1 for i = n-1 .. 1
        js = self.below(bounds, n - 1).tolist()
        pl = p.tolist()
        for i, j in zip(range(n - 1, 0, -1), js):
            pl[i], pl[j] = pl[j], pl[i]
        return np.asarray(pl, dtype=np.int64)

    def keep_mask(self, rate_permille: int, shape) -> np.ndarray:
        """Dropout keep-mask: keep (1) where below(1000) >= rate_permille; drawn in C order."""
        count = int(np.prod(shape))
        return (self.below(1000, count) >= rate_permille).astype(np.int8).reshape(shape)
