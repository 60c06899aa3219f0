"""The project PRNG: SplitMix64 (Steele, Lea & Flood 2014), one independent stream per purpose.

  state_0        = mix(seed ^ (stream * STREAM_MUL))             (all arithmetic mod 2**64)
  next():  state = state + GAMMA;  return mix(state)
  mix(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
           z = (z ^ (z >> 27)) * 0x94D049BB133111EB
           return z ^ (z >> 31)
  below(n), 1 <= n <= 2**32:  ((next() >> 32) * n) >> 32        (Lemire's multiply-high, no rejection:
                                                                 bias <= n / 2**32, deterministic count)

The k-th output is mix(state_0 + k*GAMMA), so NumPy draws whole vectors at once and C draws one at a
time, bit-identically.  Streams keep the device independent of host-side draws: the device only ever
needs the dropout stream.
"""
from __future__ import annotations

import numpy as np

GAMMA = 0x9E3779B97F4A7C15
STREAM_MUL = 0xD1B54A32D192ED03
MASK64 = (1 << 64) - 1

STREAM_INIT = 1  # weight initialisation
STREAM_DATA = 2  # validation split, epoch shuffles, augmentation
STREAM_DROPOUT = 3  # dropout keep-masks (the only stream the device draws from)
STREAM_HOLDOUT = 4  # the test part held out of your own data (trainer/data/userdata.py; host only)


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
