"""Datasets by name or folder: the raw train/test container, the bundled MNIST subset and folder resolution.

Images stay uint8 NCHW and labels int64 here; normalisation and the validation split come later
(:mod:`.normalization`, :mod:`.split`).  Every problem raises a one-line :class:`DataError`.
"""
from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .dataset import Dataset
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
    if canon is None and (Path(name).suffix or "/" in name or os.sep in name):  # a path, not a dataset's name
        if not Path(name).exists():
            raise DataError(f"{name}: no such file or folder")
        raise DataError(f"{name}: your own data is an .npz (np.savez(file, x=x, y=y)), a .csv or a folder of class "
                        "folders (docs/own_data.md)")
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
