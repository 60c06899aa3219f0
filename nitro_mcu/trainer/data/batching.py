"""Targets and batches: int8 one-hot targets and one epoch of shuffled index batches."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..rng import Rng
from .errors import DataError

DEFAULT_ONE_HOT = 32


def one_hot(y, num_classes: int, value: int = DEFAULT_ONE_HOT) -> np.ndarray:
    """int8 targets [N, num_classes]: ``value`` (32) at the true class, 0 elsewhere."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(f"labels must be a 1-D integer array, got {y.dtype} of shape {list(y.shape)}")
    if not -128 <= int(value) <= 127:
        raise DataError(f"one-hot value {value} does not fit int8")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"label outside [0, {num_classes}) in one_hot")
    out = np.zeros((y.shape[0], int(num_classes)), dtype=np.int8)
    out[np.arange(y.shape[0]), y.astype(np.int64)] = value
    return out


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(n: int, batch_size: int, rng: Rng, drop_last: bool = True) -> Iterator[np.ndarray]:
    """One epoch of index batches: ``perm = rng.permutation(n)`` is drawn NOW (eagerly, before any
    augmentation draws of the epoch), then batch b is ``perm[b*bs:(b+1)*bs]``; the last partial batch is
    dropped when drop_last (reference Q9)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    perm = rng.permutation(n)
    count = num_batches(n, batch_size, drop_last)
    return (perm[b * batch_size: (b + 1) * batch_size] for b in range(count))
