"""Integer input normalisation (docs/algorithm.md §5.1): per-channel statistics and the uint8 -> int8 lookup table.

With x = pixel - 128:  mu_c = tdiv(sum x, count),  mad_c = tdiv(sum |x - mu_c|, count), and
pixel -> clip(tdiv((pixel - 128 - mu_c) * 51, mad_c), -128, 127).  No float anywhere.

Images are uint8 pixels [N, C, H, W].  Features (a CSV's columns, a [N, F] array) are integers of any range
below 2**31, held as int64 [N, F, 1, 1]: each feature is a channel, with the same formulas (the 256-entry
table is only a shortcut for uint8), and a feature that is constant over the training part gets mad 1.

The raw input type a model was trained on (``INPUT_DTYPES``: u8, s16, s32) is recorded with its statistics;
:func:`normalize_raw` is the one normalisation of raw readings of that type, the step the generated
``<name>_normalize_<dtype>`` performs on the device (nitro_mcu/codegen/inputs.py).
"""
from __future__ import annotations

import numpy as np

from ..arith import tdiv
from .errors import DataError

NORM_CENTRE = 128  # pixel - 128
NORM_CONSTANT = 51  # 51 ~ 64 / 1.25: targets a standard deviation of ~64


FEATURE_LIMIT = 2**31  # |feature| below this: (v - 128 - mu) * 51 stays far inside int64

# raw input types: name -> (C type, smallest, largest value); the generated C has one normalize_<name>
INPUT_DTYPES = {"u8": ("uint8_t", 0, 255), "s16": ("int16_t", -2**15, 2**15 - 1), "s32": ("int32_t", -2**31, 2**31 - 1)}
STATS_LIMIT = 2**40  # |mu|, mad beyond this are no statistics of raw int32 readings: refused (keeps int64 exact)


def dtype_of_range(lo: int, hi: int) -> str:
    """The narrowest signed raw type of integer features in [lo, hi]: s16 or s32."""
    return "s16" if lo >= -2**15 and hi < 2**15 else "s32"


def wider_dtype(a: str | None, b: str | None) -> str | None:
    """The raw type that holds both (u8 < s16 < s32); None where neither is known."""
    order = [None, "u8", "s16", "s32"]
    return order[max(order.index(a), order.index(b))]


def input_dtype(norm: dict) -> str:
    """The raw input type of a model's statistics ``norm`` (a model file's ``norm``): as recorded; files of
    older versions: u8 for pixels, s32 for features (any integer below 2**31)."""
    d = norm.get("dtype") or (norm.get("load_info") or {}).get("dtype")
    if d is None:
        d = "s32" if (norm.get("load_info") or {}).get("kind") == "features" else "u8"
    if d not in INPUT_DTYPES:
        raise DataError(f"unknown raw input type {d!r} in the model's statistics (known: {', '.join(INPUT_DTYPES)})")
    return d


def check_stats(mu, mad) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``mu``, ``mad`` [C], or a DataError: integers, same length, mad >= 1, magnitudes below STATS_LIMIT."""
    mu, mad = np.asarray(mu), np.asarray(mad)
    for what, a in (("mu", mu), ("mad", mad)):
        if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1 or not len(a):
            raise DataError(f"normalisation {what} must be a non-empty list of integers")
    if len(mu) != len(mad):
        raise DataError(f"normalisation mu has {len(mu)} entries, mad {len(mad)}")
    if int(mad.min()) < 1:
        raise DataError(f"normalisation mad must be positive, got {int(mad.min())}")
    if max(int(np.abs(mu).max()), int(mad.max())) >= STATS_LIMIT:
        raise DataError("normalisation statistics beyond 2**40 cannot come from raw int32 readings")
    return mu.astype(np.int64), mad.astype(np.int64)


def normalize_raw(raw, mu, mad, dtype: str, input_size: int) -> np.ndarray:
    """Raw readings of type ``dtype`` -> the int8 model inputs, as the generated C does it.

    ``raw``: integers, any shape whose size is a multiple of ``input_size`` (samples back to back, C order);
    channel c of C covers input_size / C consecutive values of a sample.  Per value:
    clip(tdiv((raw - 128 - mu_c) * 51, mad_c), -128, 127), in int64: |raw| <= 2**31, |mu_c| < 2**40, so every
    intermediate stays below 2**47.  The result has raw's shape, int8.
    """
    ctype, lo, hi = INPUT_DTYPES[dtype]
    arr = np.asarray(raw)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"raw readings must be integers ({ctype}), got {arr.dtype}")
    if arr.size == 0 or arr.size % input_size:
        raise DataError(f"raw readings: {arr.size} values are not whole samples of {input_size}")
    if int(arr.min()) < lo or int(arr.max()) > hi:
        bad = int(arr.min()) if int(arr.min()) < lo else int(arr.max())
        raise DataError(f"raw reading {bad} does not fit {ctype}, the model's input type ({dtype}: {lo}..{hi})")
    mu, mad = check_stats(mu, mad)
    c = len(mu)
    if input_size % c:
        raise DataError(f"normalisation statistics of {c} channel(s) do not fit an input of {input_size} values")
    v = arr.astype(np.int64).reshape(-1, c, input_size // c)
    out = np.clip(tdiv((v - NORM_CENTRE - mu[None, :, None]) * NORM_CONSTANT, mad[None, :, None]), -128, 127)
    return out.astype(np.int8).reshape(arr.shape)


def _check_images(x, what: str = "images") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DataError(f"{what} must be a NumPy uint8 array, got {type(x).__name__}")
    if x.dtype != np.uint8 and x.dtype != np.int64:
        kind = "float" if np.issubdtype(x.dtype, np.floating) else str(x.dtype)
        raise DataError(f"{what} must be uint8 pixels (or int64 features), got {kind} ({x.dtype}); no floats in "
                        "the data path")
    if x.ndim != 4:
        raise DataError(f"{what} must be 4-D [N, C, H, W], have shape {list(x.shape)}")
    return x


def compute_norm_stats(x_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel integer statistics of uint8 images [N, C, H, W] (§5.1), as int64 arrays [C].

    With x = pixel - 128:  mu_c = int_mean(x over N,H,W) = tdiv(sum x, count);
    mad_c = int_mean(|x - mu_c|).  Sums are exact (int64); computed from a 256-bin pixel histogram,
    which gives the same sums as the element-wise definition.
    """
    x = _check_images(x_uint8)
    n, c = x.shape[0], x.shape[1]
    if n == 0:
        raise DataError("cannot compute normalisation statistics of 0 images")
    count = n * x.shape[2] * x.shape[3]
    if x.dtype != np.uint8:  # features: the same sums, element-wise in int64
        v = x.transpose(1, 0, 2, 3).reshape(c, -1) - NORM_CENTRE
        mu = tdiv(v.sum(axis=1), count)
        mad = tdiv(np.abs(v - mu[:, None]).sum(axis=1), count)
        return mu.astype(np.int64), np.maximum(mad, 1).astype(np.int64)
    centred = np.arange(256, dtype=np.int64) - NORM_CENTRE
    mu = np.zeros(c, dtype=np.int64)
    mad = np.zeros(c, dtype=np.int64)
    for ch in range(c):
        hist = np.bincount(x[:, ch].reshape(-1), minlength=256).astype(np.int64)
        m = tdiv(int(hist @ centred), count)
        mu[ch] = m
        mad[ch] = tdiv(int(hist @ np.abs(centred - m)), count)
    return mu, mad


def _as_stats(v, c: int, what: str) -> np.ndarray:
    a = np.asarray(v)
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"normalisation {what} must be integers, got {a.dtype}")
    a = a.astype(np.int64).reshape(-1)
    if a.shape[0] != c:
        raise DataError(f"normalisation {what} has {a.shape[0]} entries for {c} channels")
    return a


def normalization_lut(mu, mad) -> np.ndarray:
    """int8 table [C, 256]: lut[c, p] = clip(tdiv((p - 128 - mu_c) * 51, mad_c), -128, 127)."""
    mu = np.asarray(mu, dtype=np.int64).reshape(-1)
    mad = np.asarray(mad, dtype=np.int64).reshape(-1)
    if np.any(mad <= 0):
        raise DataError(f"normalisation mad must be positive, got {mad.tolist()} (constant images?)")
    centred = np.arange(256, dtype=np.int64)[None, :] - NORM_CENTRE - mu[:, None]
    return np.clip(tdiv(centred * NORM_CONSTANT, mad[:, None]), -128, 127).astype(np.int8)


def normalize(x_uint8: np.ndarray, mu, mad) -> np.ndarray:
    """uint8 images [N, C, H, W] -> int8: clip(tdiv((pixel - 128 - mu_c) * 51, mad_c), -128, 127).

    tdiv truncates toward zero (C ``/``).  Implemented as a per-channel 256-entry lookup table.
    """
    x = _check_images(x_uint8)
    c = x.shape[1]
    if x.dtype != np.uint8:  # features: the formula itself
        mu, mad = _as_stats(mu, c, "mu")[None, :, None, None], _as_stats(mad, c, "mad")[None, :, None, None]
        if np.any(mad <= 0):
            raise DataError(f"normalisation mad must be positive, got {mad.reshape(-1).tolist()}")
        return np.clip(tdiv((x - NORM_CENTRE - mu) * NORM_CONSTANT, mad), -128, 127).astype(np.int8)
    lut = normalization_lut(_as_stats(mu, c, "mu"), _as_stats(mad, c, "mad"))
    out = np.empty(x.shape, dtype=np.int8)
    for ch in range(c):
        out[:, ch] = lut[ch][x[:, ch]]
    return out
