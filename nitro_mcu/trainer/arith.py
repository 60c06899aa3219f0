"""The integer arithmetic contract shared by the Python trainer and the generated C (docs/arithmetic.md).

Every operation here has a one-line C equivalent (given in each docstring); the code generator emits
exactly those lines, so the two sides cannot drift apart.
"""
from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def tdiv(n, d):
    """Division rounding toward zero: C's ``n / d`` for signed integers.

    Works on Python ints and NumPy arrays (any broadcastable mix).  A float64 ``n`` must hold exact
    integers of magnitude < 2**53 (float32: < 2**24): then trunc(n / d) is exact, because the correctly rounded
    quotient cannot reach the next integer (|n|/d * 2**-53 < 1/d; docs/arithmetic.md §2.1).
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
    # the ufuncs' reduce directly: ndarray.max / min add a Python wrapper each (this runs ~10 times a step)
    return max(abs(int(np.maximum.reduce(a, axis=None))), abs(int(np.minimum.reduce(a, axis=None))))
