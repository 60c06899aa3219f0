"""The generated input pipeline: a model's raw input type and statistics -> what the C templates need for
``<name>_normalize_<dtype>`` and the ``<name>_window_*`` stream helper (templates/input.h.j2, input.c.j2).

One normalisation exists, ``normalize_raw`` in nitro_mcu/trainer/data/normalization.py; this module only proves
the C integer widths for it: every intermediate of ``((acc)raw - 128 - mu_c) * 51`` is bounded by
``(max|raw| + 128 + max|mu|) * 51``, and the accumulator (and the statistics tables) are int32_t where that bound
fits int32, else int64_t (it always fits int64: |raw| <= 2**31 and |mu| < 2**40).  uint8 pixels keep the
256-entry table per channel (one load per pixel); features of any type use the formula per value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..trainer.data.errors import DataError
from ..trainer.data.normalization import (INPUT_DTYPES, NORM_CENTRE, NORM_CONSTANT, check_stats, input_dtype,
                                          normalization_lut)
from .ops import INT32_MAX, INT64_MAX
from .plan import CodegenError


@dataclass
class InputNorm:
    dtype: str                 # u8, s16, s32 (normalization.INPUT_DTYPES)
    ctype: str                 # the C type of one raw reading
    mu: list
    mad: list
    per_channel: int           # consecutive input values of one channel (1 for features)
    acc: str                   # int32_t or int64_t: accumulator and statistics tables
    bound: int                 # the largest |intermediate| of the formula, proven to fit ``acc``
    lut: list | None = None    # [C][256] int8 for uint8 pixels, else None
    decimals: list | None = None  # a CSV's decimals per column: the C reads value * 10**decimals

    @property
    def channels(self) -> int:
        return len(self.mu)

    @property
    def raw_bytes(self) -> int:
        return {"u8": 1, "s16": 2, "s32": 4}[self.dtype]

    @property
    def lo(self) -> int:
        return INPUT_DTYPES[self.dtype][1]

    @property
    def hi(self) -> int:
        return INPUT_DTYPES[self.dtype][2]


def input_norm(model, norm) -> InputNorm:
    """The input pipeline of ``model`` from statistics ``norm`` (a model file's ``norm`` dict: mu, mad and the raw
    type; or an object with ``mu`` and ``mad``, read as uint8 pixels)."""
    if not isinstance(norm, dict):
        norm = {"mu": getattr(norm, "mu", None), "mad": getattr(norm, "mad", None),
                "load_info": getattr(norm, "load_info", None) or {}}
    if norm.get("mu") is None or norm.get("mad") is None:
        raise CodegenError("normalisation statistics need 'mu' and 'mad' (one integer per channel)")
    try:
        mu, mad = check_stats(np.asarray(norm["mu"]).reshape(-1), np.asarray(norm["mad"]).reshape(-1))
        dtype = input_dtype(norm)
    except (DataError, TypeError) as e:
        raise CodegenError(f"bad normalisation statistics: {e}") from None
    n = int(np.prod(model.input_shape))
    channels = model.input_shape[0] if model.spec["kind"] == "cnn" else None  # an MLP's input is C-order values
    if n % len(mu) or channels not in (None, len(mu)):
        raise CodegenError(f"normalisation statistics of {len(mu)} channel(s) do not fit an input of {n} values")
    ctype, lo, hi = INPUT_DTYPES[dtype]
    bound = (max(-lo, hi) + NORM_CENTRE + int(np.abs(mu).max())) * NORM_CONSTANT
    acc = "int32_t" if bound <= INT32_MAX and int(mad.max()) <= INT32_MAX else "int64_t"
    assert bound <= INT64_MAX  # check_stats: |mu| < 2**40
    info = norm.get("load_info") or {}
    pixels = dtype == "u8" and info.get("kind") != "features"
    lut = [[int(v) for v in row] for row in normalization_lut(mu, mad)] if pixels else None
    return InputNorm(dtype, ctype, [int(v) for v in mu], [int(v) for v in mad], n // len(mu), acc, bound, lut,
                     info.get("decimals"))
