"""Dataset file formats read as raw arrays: IDX (MNIST, FashionMNIST), CIFAR-10's python pickles and .npz.

Files may be gzip-compressed whatever their name.  Every problem raises a one-line :class:`DataError`
naming the file; CIFAR pickles are unpickled by an allow-list that admits only what the batches contain.
Sizes are bounded before anything is allocated: a file (decompressed) or an .npz's arrays (from their
headers) may hold at most MAX_DATA_BYTES.
"""
from __future__ import annotations

import gzip
import importlib
import io
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

IDX_FILES = {  # role -> file stem (raw; '.gz' is tried too, as is the '.idx' spelling)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"

MAX_DATA_BYTES = 4 << 30  # one data file decompressed, or all arrays of one .npz

_IDX_DTYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_DATA_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, over the limit of {MAX_DATA_BYTES} for one data file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                out = g.read(MAX_DATA_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None
        if len(out) > MAX_DATA_BYTES:
            raise DataError(f"{path}: decompresses to over {MAX_DATA_BYTES} bytes, the limit for one data file")
        return out
    return raw


# --------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------
def load_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) holding uint8 data; returns a uint8 array of its dims.

    Format: two zero bytes, a dtype code (0x08 = uint8, the only one accepted), the number of dims, then
    that many big-endian uint32 sizes, then the data in C order.  Missing file, bad magic, other dtype
    codes, truncated data and trailing bytes raise :class:`DataError`.
    """
    path = Path(path)
    buf = read_bytes(path)
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


def find_idx(directory: Path, stem: str) -> Optional[Path]:
    """The IDX file of ``stem`` in ``directory``: raw, .gz, or with the ``.idx`` spelling; None if absent."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def find_idx_files(directory: Path) -> dict:
    """role (x_train, y_train, x_test, y_test) -> path of its IDX file in ``directory``, or None."""
    return {role: find_idx(directory, stem) for role, stem in IDX_FILES.items()}


def is_idx_dir(directory: Path) -> bool:
    return find_idx(directory, IDX_FILES["x_train"]) is not None


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


def load_pickle(path: Path) -> dict:
    """A CIFAR-10 pickle (batch or batches.meta) as a dict, through the allow-listed unpickler."""
    buf = read_bytes(path)
    try:
        obj = _SafeUnpickler(io.BytesIO(buf), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data problem
        raise DataError(f"{path}: cannot unpickle CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: CIFAR batch is a {type(obj).__name__}, expected a dict")
    return obj


def pickle_key(d: dict, key: str):
    """``d[key]`` under its bytes or str spelling, else None."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 [N, 3, 32, 32] (R, G, B planes) and labels int64 [N]."""
    d = load_pickle(path)
    data, labels = pickle_key(d, "data"), pickle_key(d, "labels")
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


def is_cifar_dir(directory: Path) -> bool:
    return (directory / CIFAR_TRAIN[0]).is_file()


# --------------------------------------------------------------------------------------------------
# .npz (NumPy arrays, no pickles)
# --------------------------------------------------------------------------------------------------
def load_npz(source, label: str) -> dict:
    """The arrays of an .npz (a path or a binary file object) as name -> array.  Each member's .npy header is read
    first (numpy.lib.format): object dtypes, shapes whose data the member does not hold and arrays of more than
    MAX_DATA_BYTES in all are refused before any array is allocated; a damaged zip is a :class:`DataError`."""
    try:
        with zipfile.ZipFile(source) as z:
            total, arrays = 0, {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                with z.open(info) as f:
                    shape, dtype = _npy_header(f, f"{label}: array {name!r}")
                    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    total += need
                    if total > MAX_DATA_BYTES:
                        raise DataError(f"{label}: array {name!r} declares shape {list(shape)} ({need} bytes); the "
                                        f"arrays of one file may hold at most {MAX_DATA_BYTES} bytes")
                    if need > info.file_size - f.tell():
                        raise DataError(f"{label}: array {name!r} declares shape {list(shape)} ({need} bytes) but "
                                        f"holds {info.file_size - f.tell()}: truncated or damaged")
                with z.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{label}: file not found") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{label}: not a readable .npz (damaged or truncated zip: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - ValueError, OSError, NotImplementedError (compression), ...
        raise DataError(f"{label}: unreadable .npz ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") \
            from None


def _npy_header(f, what: str):
    """(shape, dtype) from an .npy header, without reading its data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(f)
    except ValueError as exc:
        raise DataError(f"{what}: bad .npy header ({str(exc).splitlines()[0]})") from None
    if dtype.hasobject:
        raise DataError(f"{what}: holds Python objects; only numeric arrays are read")
    return shape, dtype
