"""Datasets, integer pre-processing, batching and augmentation (algorithm.md §5).

Everything here is integer-only: images are loaded as uint8, normalised to int8 with the integer
statistics of §5.1, and augmented in int8.  All randomness comes from the project PRNG
(:class:`nitro_mcu.trainer.intmath.Rng`, stream ``STREAM_DATA``), in a documented draw order, so that C code
can reproduce every draw.

Public API
----------
- :class:`DataError` -- every data problem, as a one-line message naming the file / problem.
- :func:`load_idx`, :func:`load_cifar10`, :func:`load_dataset`, :class:`Dataset`, :data:`DATASET_NAMES`.
- :func:`compute_norm_stats`, :func:`normalize`, :func:`prepare`, :class:`Prepared`.
- :func:`one_hot`, :func:`batches`, :func:`num_batches`, :func:`augment`, :func:`augment_defaults`.
"""
from __future__ import annotations

import gzip
import importlib
import io
import os
import pickle
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from .intmath import GAMMA, MASK64, STREAM_DATA, Rng, tdiv

PathLike = Union[str, "os.PathLike[str]"]

NORM_CENTRE = 128  # pixel - 128
NORM_CONSTANT = 51  # 51 ~ 64 / 1.25: targets a standard deviation of ~64
DEFAULT_STATS_IMAGES = 25_000
DEFAULT_ONE_HOT = 32

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
}
_ALIASES = {alias: canon for canon, names in DATASET_NAMES.items() for alias in names}

# (crop_pad, flip) of the paper pipelines (§5.2): MNIST Crop(28,2); FMNIST Crop(28,2)+Flip; CIFAR Crop(32,4)+Flip
_AUGMENT_DEFAULTS = {"mnist": (2, False), "fashion-mnist": (2, True), "cifar10": (4, True), "bundled": (2, False)}

BUNDLED_RESOURCE = "mnist_small.npz"

_IDX_FILES = {  # role -> file stem (raw; '.gz' is tried too, as is the '.idx' spelling)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


class DataError(ValueError):
    """A data problem (missing/corrupt file, wrong shape or dtype, bad labels); the message is one line."""


# --------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def load_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) holding uint8 data; returns a uint8 array of its dims.

    Format: two zero bytes, a dtype code (0x08 = uint8, the only one accepted), the number of dims, then
    that many big-endian uint32 sizes, then the data in C order.  Missing file, bad magic, other dtype
    codes, truncated data and trailing bytes raise :class:`DataError`.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(buf)} bytes)")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{path}: bad IDX magic 0x{buf[0]:02x}{buf[1]:02x}{buf[2]:02x}{buf[3]:02x} "
                        "(expected 0x0000 then dtype code and ndim)")
    code, ndim = buf[2], buf[3]
    if code != 0x08:
        name = _IDX_DTYPES.get(code, "unknown")
        raise DataError(f"{path}: unsupported IDX dtype code 0x{code:02x} ({name}); only 0x08 (uint8) is accepted")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated IDX header (need {header} bytes, file has {len(buf)})")
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims, dtype=np.int64))
    have = len(buf) - header
    if have < count:
        raise DataError(f"{path}: truncated IDX data (dims {list(dims)} need {count} bytes, file has {have})")
    if have > count:
        raise DataError(f"{path}: {have - count} unexpected trailing bytes after IDX data of dims {list(dims)}")
    return np.frombuffer(buf, dtype=np.uint8, count=count, offset=header).reshape(dims).copy()


def _find_idx(directory: Path, stem: str) -> Optional[Path]:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _is_idx_dir(directory: Path) -> bool:
    return _find_idx(directory, _IDX_FILES["x_train"]) is not None


def _is_cifar_dir(directory: Path) -> bool:
    return (directory / _CIFAR_TRAIN[0]).is_file()


def _load_idx_dir(directory: Path, name: str, num_classes: Optional[int], classes) -> "Dataset":
    arrays = {}
    for role, stem in _IDX_FILES.items():
        p = _find_idx(directory, stem)
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


# --------------------------------------------------------------------------------------------------
# CIFAR-10 (python batches)
# --------------------------------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, bytes, str, ints, NumPy arrays)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module.startswith("numpy.") and module.endswith(".multiarray"):
            for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(mod), name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    buf = _read_bytes(path)
    try:
        obj = _SafeUnpickler(io.BytesIO(buf), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data problem
        raise DataError(f"{path}: cannot unpickle CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: CIFAR batch is a {type(obj).__name__}, expected a dict")
    return obj


def _get(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def _cifar_batch(path: Path):
    d = _load_pickle(path)
    data, labels = _get(d, "data"), _get(d, "labels")
    if data is None or labels is None:
        raise DataError(f"{path}: CIFAR batch lacks the b'data' or b'labels' key")
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise DataError(f"{path}: CIFAR data must be uint8, is {data.dtype}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: CIFAR data must be [N, 3072], is {list(data.shape)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: CIFAR labels must be a 1-D list of integers")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(directory: PathLike, name: str = "cifar10") -> "Dataset":
    """Load CIFAR-10 from its python-batch folder (data_batch_1..5, test_batch; batches.meta optional).

    ``directory`` may also be its parent holding ``cifar-10-batches-py/``.  Images come back NCHW uint8
    [N, 3, 32, 32] (the 3072 bytes of a row are the R, G, B planes, each 32x32 row-major).
    """
    directory = Path(directory)
    if not _is_cifar_dir(directory) and _is_cifar_dir(directory / "cifar-10-batches-py"):
        directory = directory / "cifar-10-batches-py"
    if not directory.is_dir():
        raise DataError(f"{directory}: CIFAR-10 directory not found")
    xs, ys = [], []
    for fname in _CIFAR_TRAIN:
        x, y = _cifar_batch(directory / fname)
        xs.append(x)
        ys.append(y)
    x_test, y_test = _cifar_batch(directory / _CIFAR_TEST)
    classes: Optional[Sequence[str]] = CIFAR10_CLASSES
    meta = directory / "batches.meta"
    if meta.is_file():
        names = _get(_load_pickle(meta), "label_names")
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    ds = Dataset(name=name, x_train=np.concatenate(xs), y_train=np.concatenate(ys), x_test=x_test,
                 y_test=y_test, num_classes=len(classes), classes=classes)
    ds.validate()
    return ds


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Raw images (uint8 NCHW) and labels (int64) of a train/test pair."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    classes: Optional[Sequence[str]] = None

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.x_train.shape[1:])

    def validate(self) -> "Dataset":
        """Check dtypes, shapes, counts and label ranges; raise a one-line DataError on the first problem."""
        n = self.name
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
            raise DataError(f"dataset '{n}': num_classes must be an integer >= 2, is {self.num_classes!r}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise DataError(f"dataset '{n}': {len(self.classes)} class names for {self.num_classes} classes")
        for split in ("train", "test"):
            x, y = getattr(self, "x_" + split), getattr(self, "y_" + split)
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
                raise DataError(f"dataset '{n}': x_{split} must be a uint8 array, is "
                                f"{getattr(x, 'dtype', type(x).__name__)}")
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
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset '{n}': train images {list(self.x_train.shape[1:])} and test images "
                            f"{list(self.x_test.shape[1:])} differ in shape")
        self.y_train = self.y_train.astype(np.int64, copy=False)
        self.y_test = self.y_test.astype(np.int64, copy=False)
        return self


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
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"bundled dataset {BUNDLED_RESOURCE} is unreadable ({exc})") from None
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
        if _is_idx_dir(d):
            canon = _ALIASES.get(label.lower())
            classes = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_CLASSES}.get(canon)
            return _load_idx_dir(d, canon or label, 10 if classes else None, classes)
        if _is_cifar_dir(d) or _is_cifar_dir(d / "cifar-10-batches-py"):
            return load_cifar10(d, name=label)
        raise DataError(f"{d}: directory holds neither the IDX files ({_IDX_FILES['x_train']}[.gz], ...) "
                        f"nor CIFAR-10 batches ({_CIFAR_TRAIN[0]}, ...)")
    canon = _ALIASES.get(str(name).lower())
    if canon is None:
        raise DataError(f"unknown dataset '{name}'; valid names: {', '.join(DATASET_NAMES)} "
                        f"(aliases: fmnist, cifar-10), or a directory holding IDX or CIFAR-10 files")
    if canon == "bundled":
        return load_bundled()
    if data_dir is None:
        raise DataError(f"dataset '{canon}' needs its files: pass --data-dir (data_dir=) pointing at the folder "
                        "holding them, or use the 'bundled' dataset")
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"{d}: data directory not found")
    if canon == "cifar10":
        return load_cifar10(_resolve_subdir(d, canon, _is_cifar_dir))
    classes = MNIST_CLASSES if canon == "mnist" else FASHION_CLASSES
    return _load_idx_dir(_resolve_subdir(d, canon, _is_idx_dir), canon, 10, classes)


# --------------------------------------------------------------------------------------------------
# Normalisation (§5.1)
# --------------------------------------------------------------------------------------------------
def _check_images(x, what: str = "images") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DataError(f"{what} must be a NumPy uint8 array, got {type(x).__name__}")
    if x.dtype != np.uint8:
        kind = "float" if np.issubdtype(x.dtype, np.floating) else str(x.dtype)
        raise DataError(f"{what} must be uint8 pixels, got {kind} ({x.dtype}); no floats in the data path")
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
    lut = normalization_lut(_as_stats(mu, c, "mu"), _as_stats(mad, c, "mad"))
    out = np.empty(x.shape, dtype=np.int8)
    for ch in range(c):
        out[:, ch] = lut[ch][x[:, ch]]
    return out


# --------------------------------------------------------------------------------------------------
# Train / validation / test preparation
# --------------------------------------------------------------------------------------------------
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
        raise DataError(f"val_size must be in [0, {n}) for {n} training images, got {val_size}")
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
        classes=dataset.classes, train_index=train_index, val_index=val_index,
    )


# --------------------------------------------------------------------------------------------------
# Targets, batches, augmentation
# --------------------------------------------------------------------------------------------------
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


def augment_defaults(name: str) -> tuple[int, bool]:
    """(crop_pad, flip) of the paper pipeline for a dataset (§5.2): MNIST (2, no flip), FMNIST (2, flip),
    CIFAR-10 (4, flip); unknown names get (0, False)."""
    return _AUGMENT_DEFAULTS.get(_ALIASES.get(str(name).lower(), ""), (0, False))


def _below(raw: int, n: int) -> int:
    return ((raw >> 32) * n) >> 32


def augment(x_int8: np.ndarray, rng: Rng, crop_pad: int, flip: bool, per_batch: bool = False) -> np.ndarray:
    """RandomCrop(H x W, pad) with p = 0.5, then RandomHorizontalFlip with p = 0.5 (§5.2); returns int8.

    Draw order (every draw is ``rng.below(n)``, one 64-bit output each):

    per_batch=True (reference, Q8) -- once for the whole batch:
        if crop_pad > 0:  c = below(2);  if c == 1:  top = below(2*pad+1);  left = below(2*pad+1)
        if flip:          f = below(2)
      A crop pads all four sides of every image with the batch minimum value (over all samples and
      channels) and takes the H x W window at (top, left) of the padded image -- the same offset for
      every sample.  f == 1 mirrors every image along W.

    per_batch=False (default) -- the same sequence for each sample in turn, sample 0 first:
        for i in 0 .. B-1:
            if crop_pad > 0:  c_i = below(2);  if c_i == 1:  top_i = below(2*pad+1);  left_i = below(2*pad+1)
            if flip:          f_i = below(2)
      with pad value = that sample's minimum (over its channels).

    top/left are drawn only when the crop applies; (top, left) = (pad, pad) is the identity.
    """
    x = np.asarray(x_int8)
    if x.dtype != np.int8 or x.ndim != 4:
        raise DataError(f"augment needs int8 [B, C, H, W], got {x.dtype} of shape {list(x.shape)}")
    pad = int(crop_pad)
    if pad < 0:
        raise DataError(f"crop_pad must be >= 0, got {crop_pad}")
    b, _, h, w = x.shape
    if b == 0 or (pad == 0 and not flip):
        return x.copy()
    span = 2 * pad + 1
    per_draw = (3 if pad else 0) + (1 if flip else 0)  # most draws one decision can take

    # Draw the worst-case count in one vectorised call, use what the sequence consumes, rewind the rest.
    start = rng.state
    groups = 1 if per_batch else b
    raw = rng.next_u64(per_draw * groups).tolist()
    k = 0
    crop = [False] * groups
    tops = [pad] * groups
    lefts = [pad] * groups
    flips = [False] * groups
    for g in range(groups):
        if pad:
            crop[g] = _below(raw[k], 2) == 1
            k += 1
            if crop[g]:
                tops[g] = _below(raw[k], span)
                lefts[g] = _below(raw[k + 1], span)
                k += 2
        if flip:
            flips[g] = _below(raw[k], 2) == 1
            k += 1
    rng.state = (start + k * GAMMA) & MASK64

    out = x.copy()
    if per_batch:
        if crop[0]:
            padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=x.min())
            out = padded[:, :, tops[0]: tops[0] + h, lefts[0]: lefts[0] + w].copy()
        if flips[0]:
            out = out[:, :, :, ::-1].copy()
        return out
    sel = np.flatnonzero(crop)
    if sel.size:
        xs = x[sel]
        mins = xs.reshape(sel.size, -1).min(axis=1)
        padded = np.empty((sel.size, x.shape[1], h + 2 * pad, w + 2 * pad), dtype=np.int8)
        padded[...] = mins[:, None, None, None]
        padded[:, :, pad: pad + h, pad: pad + w] = xs
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # [S, C, span, span, h, w]
        out[sel] = windows[np.arange(sel.size), :, np.asarray(tops)[sel], np.asarray(lefts)[sel]]
    if flip:
        sel = np.flatnonzero(flips)
        if sel.size:
            out[sel] = out[sel][:, :, :, ::-1]
    return out
