"""The validation split and pre-processing of a dataset: shuffle, split, statistics, normalise (docs/algorithm.md §5.1).

The split draws from the data stream of the project PRNG (``Rng(seed, STREAM_DATA)``); the returned
:class:`Prepared` carries that stream on for epoch shuffles and augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..rng import STREAM_DATA, Rng
from .dataset import Dataset
from .errors import DataError
from .normalization import compute_norm_stats, normalize

DEFAULT_STATS_IMAGES = 25_000


@dataclass
class Prepared:
    """Normalised int8 splits, their labels and statistics, plus the data Rng (state continues)."""

    name: str
    x_train: np.ndarray  # int8 [N_train, C, H, W], in permuted order
    y_train: np.ndarray  # int64
    x_val: np.ndarray  # int8 [N_val, C, H, W] (N_val may be 0)
    y_val: np.ndarray
    x_test: np.ndarray  # int8, file order
    y_test: np.ndarray
    mu: np.ndarray  # int64 [C]
    mad: np.ndarray  # int64 [C]
    num_classes: int
    rng: Rng
    monitor: str = "val"
    classes: Optional[Sequence[str]] = None
    train_index: np.ndarray = field(default=None, repr=False)  # indices into dataset.x_train
    val_index: np.ndarray = field(default=None, repr=False)
    source: tuple = field(default=None, repr=False)  # (name, data_dir) it was loaded from, for a refit
    reload: dict = field(default_factory=dict, repr=False)  # the other load_data arguments, for a refit
    load_info: dict = field(default_factory=dict, repr=False)  # how your own data was read (userdata.py)

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.x_train.shape[1:])

    def monitor_set(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the split that drives the schedule and model selection: validation or test (Q10)."""
        if self.monitor == "test":
            return self.x_test, self.y_test
        if self.x_val.shape[0] == 0:
            raise DataError("monitor='val' but the validation split is empty (val_size=0); use monitor='test'")
        return self.x_val, self.y_val


def prepare(dataset: Dataset, seed: int, val_size: Optional[int] = None, monitor: str = "val",
            stats_images: int = DEFAULT_STATS_IMAGES, shuffle: bool = True) -> Prepared:
    """Shuffle, split, compute statistics and normalise (§5.1, with a clean validation split).

    1. ``rng = Rng(seed, STREAM_DATA)``; ``perm = rng.permutation(N_train)`` (skipped if shuffle=False,
       which keeps file order -- the golden vectors' setting -- and draws nothing).
    2. monitor='val': the LAST ``val_size`` images of the permuted set are the validation split
       (default N_train // 10; 0 allowed).  monitor='test': no split, the test set drives the
       schedule (reference Q10); val_size must then be None or 0.
    3. (mu, mad) from the first min(N_part, stats_images) images of the permuted training part.
    4. Train, validation and test images are normalised with those statistics.
    The returned ``rng`` continues the same stream (epoch shuffles, augmentation).
    """
    dataset.validate()
    if monitor not in ("val", "test"):
        raise DataError(f"monitor must be 'val' or 'test', got {monitor!r}")
    n = dataset.x_train.shape[0]
    if monitor == "test":
        if val_size:
            raise DataError(f"monitor='test' uses no validation split, but val_size={val_size} was given")
        val_size = 0
    elif val_size is None:
        val_size = n // 10
    val_size = int(val_size)
    if val_size < 0 or val_size >= n:
        raise DataError(f"val_size must be in [0, {n}) for {n} training samples, got {val_size}")
    if int(stats_images) < 1:
        raise DataError(f"stats_images must be >= 1, got {stats_images}")
    rng = Rng(seed, STREAM_DATA)
    perm = rng.permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    train_index, val_index = perm[: n - val_size], perm[n - val_size:]
    x_tr = dataset.x_train[train_index]
    mu, mad = compute_norm_stats(x_tr[: min(x_tr.shape[0], int(stats_images))])
    return Prepared(
        name=dataset.name,
        x_train=normalize(x_tr, mu, mad), y_train=dataset.y_train[train_index].astype(np.int64),
        x_val=normalize(dataset.x_train[val_index], mu, mad), y_val=dataset.y_train[val_index].astype(np.int64),
        x_test=normalize(dataset.x_test, mu, mad), y_test=dataset.y_test.astype(np.int64),
        mu=mu, mad=mad, num_classes=int(dataset.num_classes), rng=rng, monitor=monitor,
        classes=dataset.classes, train_index=train_index, val_index=val_index, load_info=dict(dataset.load_info),
    )
