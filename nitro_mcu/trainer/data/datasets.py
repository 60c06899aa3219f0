"""Datasets by name or folder: the raw train/test container, the bundled MNIST subset and folder resolution.

Images stay uint8 NCHW and labels int64 here; normalisation and the validation split come later
(:mod:`.normalization`, :mod:`.split`).  Every problem raises a one-line :class:`DataError`.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import DataError
from .formats import (CIFAR_TEST, CIFAR_TRAIN, IDX_FILES, PathLike, cifar_batch, find_idx, is_cifar_dir, is_idx_dir,
                      load_idx, load_npz, load_pickle, pickle_key)

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

# canonical name -> accepted spellings
DATASET_NAMES = {
    "mnist": ("mnist",),
    "fashion-mnist": ("fashion-mnist", "fmnist", "fashion_mnist", "fashionmnist"),
    "cifar10": ("cifar10", "cifar-10", "cifar_10"),
    "bundled": ("bundled", "mnist-small", "mnist_small"),
    "basicmotions": ("basicmotions", "basic-motions", "basic_motions"),  # sensors.py: from the sktime package
}
_ALIASES = {alias: canon for canon, names in DATASET_NAMES.items() for alias in names}
NO_FILES = ("bundled", "basicmotions")  # datasets that need no --data-dir (in the package, or in a pip package)

BUNDLED_RESOURCE = "mnist_small.npz"


def canonical_name(name: str) -> Optional[str]:
    """The canonical dataset name of a spelling in :data:`DATASET_NAMES` (any case), else None."""
    return _ALIASES.get(str(name).lower())


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


def _load_idx_dir(directory: Path, name: str, num_classes: Optional[int], classes) -> Dataset:
    arrays = {}
    for role, stem in IDX_FILES.items():
        p = find_idx(directory, stem)
        if p is None:
            raise DataError(f"{directory}: missing IDX file {stem}[.gz] for dataset '{name}'")
        a = load_idx(p)
        if role.startswith("x"):
            if a.ndim != 3:
                raise DataError(f"{p}: image file must have 3 dims [N, H, W], has {list(a.shape)}")
            a = a[:, None, :, :]
        else:
            if a.ndim != 1:
                raise DataError(f"{p}: label file must have 1 dim [N], has {list(a.shape)}")
            a = a.astype(np.int64)
        arrays[role] = a
    if num_classes is None:
        num_classes = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))) + 1
    ds = Dataset(name=name, num_classes=num_classes, classes=classes, **arrays)
    ds.validate()
    return ds


def load_cifar10(directory: PathLike, name: str = "cifar10") -> Dataset:
    """Load CIFAR-10 from its python-batch folder (data_batch_1..5, test_batch; batches.meta optional).

    ``directory`` may also be its parent holding ``cifar-10-batches-py/``.  Images come back NCHW uint8
    [N, 3, 32, 32] (the 3072 bytes of a row are the R, G, B planes, each 32x32 row-major).
    """
    directory = Path(directory)
    if not is_cifar_dir(directory) and is_cifar_dir(directory / "cifar-10-batches-py"):
        directory = directory / "cifar-10-batches-py"
    if not directory.is_dir():
        raise DataError(f"{directory}: CIFAR-10 directory not found")
    xs, ys = [], []
    for fname in CIFAR_TRAIN:
        x, y = cifar_batch(directory / fname)
        xs.append(x)
        ys.append(y)
    x_test, y_test = cifar_batch(directory / CIFAR_TEST)
    classes: Optional[Sequence[str]] = CIFAR10_CLASSES
    meta = directory / "batches.meta"
    if meta.is_file():
        names = pickle_key(load_pickle(meta), "label_names")
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    ds = Dataset(name=name, x_train=np.concatenate(xs), y_train=np.concatenate(ys), x_test=x_test,
                 y_test=y_test, num_classes=len(classes), classes=classes)
    ds.validate()
    return ds


def _resolve_subdir(data_dir: Path, canon: str, probe) -> Path:
    """data_dir itself, or its subfolder named after the dataset (so ``--data-dir datasets/`` works)."""
    if probe(data_dir):
        return data_dir
    subs = {"mnist": ("mnist", "MNIST"), "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST", "fmnist"),
            "cifar10": ("cifar-10-batches-py", "cifar10", "cifar-10")}[canon]
    for s in subs:
        if probe(data_dir / s):
            return data_dir / s
        if canon == "cifar10" and probe(data_dir / s / "cifar-10-batches-py"):
            return data_dir / s / "cifar-10-batches-py"
    return data_dir


def load_bundled() -> Dataset:
    """The MNIST subset shipped inside the package (see nitro_mcu/datasets/ATTRIBUTION.md)."""
    try:
        blob = resources.files("nitro_mcu.datasets").joinpath(BUNDLED_RESOURCE).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError, OSError) as exc:
        raise DataError(f"bundled dataset {BUNDLED_RESOURCE} not found in the package ({exc})") from None
    z = load_npz(io.BytesIO(blob), f"bundled dataset {BUNDLED_RESOURCE}")
    try:
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise DataError(f"bundled dataset {BUNDLED_RESOURCE} lacks the array {exc}") from None
    arrays["y_train"] = arrays["y_train"].astype(np.int64)
    arrays["y_test"] = arrays["y_test"].astype(np.int64)
    return Dataset(name="bundled", num_classes=10, classes=MNIST_CLASSES, **arrays).validate()


def load_dataset(name: str, data_dir: Optional[PathLike] = None) -> Dataset:
    """Load a dataset by name: 'mnist', 'fashion-mnist' (alias 'fmnist'), 'cifar10' or 'bundled'.

    For mnist / fashion-mnist, ``data_dir`` is the folder holding the four standard IDX files (raw or
    .gz), or its parent with a ``mnist/`` / ``fashion-mnist/`` subfolder; for cifar10 the python-batch
    folder (or its parent).  If ``name`` is itself an existing directory, its format (IDX or CIFAR
    batches) is detected.  'bundled' needs no files.  Every problem raises a one-line :class:`DataError`.
    """
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name not in _ALIASES and Path(name).is_dir()):
        d = Path(name)
        label = d.name or str(d)
        if is_idx_dir(d):
            canon = canonical_name(label)
            classes = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_CLASSES}.get(canon)
            return _load_idx_dir(d, canon or label, 10 if classes else None, classes)
        if is_cifar_dir(d) or is_cifar_dir(d / "cifar-10-batches-py"):
            return load_cifar10(d, name=label)
        raise DataError(f"{d}: directory holds neither the IDX files ({IDX_FILES['x_train']}[.gz], ...) "
                        f"nor CIFAR-10 batches ({CIFAR_TRAIN[0]}, ...)")
    canon = canonical_name(name)
    if canon is None:
        raise DataError(f"unknown dataset '{name}'; valid names: {', '.join(DATASET_NAMES)} "
                        f"(aliases: fmnist, cifar-10), or a directory holding IDX or CIFAR-10 files")
    if canon == "bundled":
        return load_bundled()
    if canon == "basicmotions":
        return load_basic_motions_dataset()
    if data_dir is None:
        raise DataError(f"dataset '{canon}' needs its files: pass --data-dir (data_dir=) pointing at the folder "
                        "holding them, or use the 'bundled' dataset")
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"{d}: data directory not found")
    if canon == "cifar10":
        return load_cifar10(_resolve_subdir(d, canon, is_cifar_dir))
    classes = MNIST_CLASSES if canon == "mnist" else FASHION_CLASSES
    return _load_idx_dir(_resolve_subdir(d, canon, is_idx_dir), canon, 10, classes)


def load_basic_motions_dataset() -> Dataset:
    """BasicMotions as int16 sensor windows (features [N, 192, 1, 1]), the archive's train/test split (sensors.py)."""
    from .sensors import load_basic_motions
    from .userdata import load_source

    d = load_basic_motions()
    classes = d.pop("classes")
    ds = load_source(d, 0)
    ds.name, ds.classes = "basicmotions", tuple(classes)
    ds.load_info = {**ds.load_info, "source": "basicmotions"}  # features; eval finds them again by this name
    return ds
