"""The train/test pair every loader returns (named datasets: datasets.py; your own data: userdata.py): a leaf of
the data package, so both loaders import it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import DataError


@dataclass
class Dataset:
    """Raw images (uint8 NCHW) or features (int64 [N, F, 1, 1]) and labels (int64) of a train/test pair."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    classes: Optional[Sequence[str]] = None
    load_info: dict = field(default_factory=dict)  # how your own data was read (userdata.py), for the model file

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.x_train.shape[1:])

    def validate(self) -> Dataset:
        """Check dtypes, shapes, counts and label ranges; raise a one-line DataError on the first problem."""
        n = self.name
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
            raise DataError(f"dataset '{n}': num_classes must be an integer >= 2, is {self.num_classes!r}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise DataError(f"dataset '{n}': {len(self.classes)} class names for {self.num_classes} classes")
        for split in ("train", "test"):
            x, y = getattr(self, "x_" + split), getattr(self, "y_" + split)
            if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int64):
                raise DataError(f"dataset '{n}': x_{split} must be a uint8 (pixels) or int64 (features) array, "
                                f"is {getattr(x, 'dtype', type(x).__name__)}")
            if x.ndim != 4:
                raise DataError(f"dataset '{n}': x_{split} must be 4-D [N, C, H, W], has shape {list(x.shape)}")
            if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"dataset '{n}': y_{split} must be an integer array, is "
                                f"{getattr(y, 'dtype', type(y).__name__)}")
            if y.ndim != 1:
                raise DataError(f"dataset '{n}': y_{split} must be 1-D, has shape {list(y.shape)}")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"dataset '{n}': {x.shape[0]} {split} images but {y.shape[0]} {split} labels")
            if x.shape[0] == 0:
                raise DataError(f"dataset '{n}': the {split} set is empty")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise DataError(f"dataset '{n}': {split} label {bad} outside [0, {self.num_classes})")
        if self.x_train.dtype != self.x_test.dtype:
            raise DataError(f"dataset '{n}': train and test samples differ in kind ({self.x_train.dtype}, "
                            f"{self.x_test.dtype})")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset '{n}': train images {list(self.x_train.shape[1:])} and test images "
                            f"{list(self.x_test.shape[1:])} differ in shape")
        self.y_train = self.y_train.astype(np.int64, copy=False)
        self.y_test = self.y_test.astype(np.int64, copy=False)
        return self
