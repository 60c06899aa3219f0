"""Your own data as a :class:`~.datasets.Dataset`: NumPy arrays, an ``.npz``, a CSV of features, a folder of images.

- Arrays: ``(x, y)``, or a dict with ``x_train, y_train[, x_test, y_test]`` (the keys an ``.npz`` holds too; ``x, y``
  for a single part).  ``x`` is images of integers in [0, 255] ([N, H, W], [N, C, H, W] or [N, H, W, C] with C 1
  or 3) or integer features [N, F] (any range below 2**31); floats are refused, as the data path is integer-only.
- A CSV: one sample per row, the features then the label: the last column, or the one named label / class /
  target / y in a header row.  Numbers with up to MAX_DECIMALS decimals are read exactly, as fixed point (``1.25``
  with two decimals is 125); the decimals per column are kept in the model file so that later data reads alike.
- A folder of images: one sub-folder per class (or ``train/`` and ``test/`` each holding them), read with Pillow.
- Labels are integers 0..K-1 or names (sorted names are the classes 0..K-1).

A source without a test part gets one held out: ``test_size`` samples (default a sixth) drawn with
``Rng(seed, STREAM_HOLDOUT)``, so the same seed holds out the same samples in training and in evaluation.
Features become channels of an int64 [N, F, 1, 1] array: normalised per feature (:mod:`.normalization`), an MLP
sees F inputs.  ``load_info["dtype"]`` is the raw input type (u8, s16, s32; :func:`_raw_dtype`, a CSV by the range
of its fixed-point integers): the generated C normalises readings of that type.  Every problem raises a one-line
:class:`DataError`.
"""
from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...checks import MAX_VALUES_PER_SAMPLE
from ..rng import STREAM_HOLDOUT, Rng
from .dataset import Dataset
from .errors import DataError
from .formats import load_npz
from .normalization import FEATURE_LIMIT, dtype_of_range, wider_dtype

MAX_DECIMALS = 6
LABEL_NAMES = ("label", "class", "target", "y")
SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}  # other programs' CSV separators, named in the refusal
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")


def is_user_source(source) -> bool:
    """Arrays, a dict of arrays, an .npz / .csv file or a folder of class sub-folders (not IDX / CIFAR)."""
    if isinstance(source, (tuple, list, dict, np.ndarray)):
        return True
    p = Path(str(source))
    if p.suffix.lower() in (".npz", ".csv"):
        return True
    return p.is_dir() and not _is_standard_dir(p) and any(c.is_dir() for c in p.iterdir())


def _is_standard_dir(p: Path) -> bool:
    from .formats import is_cifar_dir, is_idx_dir

    return is_idx_dir(p) or is_cifar_dir(p) or is_cifar_dir(p / "cifar-10-batches-py")


def load_source(source, seed: int = 0, test=None, test_size: Optional[int] = None,
                info: Optional[dict] = None, num_classes: Optional[int] = None) -> Dataset:
    """A Dataset from your own data (see the module docstring); ``test`` is a separate source for the test part.

    ``info`` is what a trained model recorded about its data (``load_info``: kind, CSV decimals and label
    column, class names): given, the data is read the same way and must match it.  ``num_classes`` (a model's)
    lets integer labels be any of 0..num_classes-1, whether or not every class occurs.
    """
    info = dict(info or {})
    part = _read(source, info)
    if test is not None:
        tpart = _read(test, {**info, **part.info})
        if "x_test" in tpart.arrays:
            raise DataError(f"{_label(test)}: a test source must hold one part (x, y), not a train/test pair")
        part.arrays["x_test"], part.arrays["y_test"] = tpart.arrays["x_train"], tpart.arrays["y_train"]
        part.info["dtype"] = wider_dtype(part.info.get("dtype"), tpart.info.get("dtype"))
    arrays, name = part.arrays, part.name
    y_all = [arrays["y_train"]] + ([arrays["y_test"]] if "y_test" in arrays else [])
    labels, classes = _labels(y_all, info.get("classes"), name)
    k = len(classes) if classes else num_classes or _count_classes(labels, name)
    for y in labels:
        if len(y) and int(y.max()) >= k:
            raise DataError(f"{name}: label {int(y.max())} is outside the {k} classes 0..{k - 1}")
    arrays["y_train"] = labels[0]
    if "x_test" in arrays:
        arrays["y_test"] = labels[1]
        if test_size:
            raise DataError(f"{name}: test_size applies only to data without a test part")
    else:
        test_size = info.get("held_out") if test_size is None else test_size
        arrays = _hold_out(arrays["x_train"], arrays["y_train"], seed, test_size, name)
        part.info["held_out"] = len(arrays["x_test"])
    info_out = {**part.info, **({"classes": list(classes)} if classes and not _numeric(classes) else {})}
    for key, src in (("source", source), ("test_source", test)):
        if src is not None and not isinstance(src, (tuple, list, dict, np.ndarray)):
            info_out[key] = str(Path(str(src)).resolve())  # where a later evaluation finds the data by default
    return Dataset(name=name, num_classes=k, classes=classes, load_info=info_out, **arrays).validate()


class _Part:
    def __init__(self, name: str, arrays: dict, info: dict):
        self.name, self.arrays, self.info = name, arrays, info


def _label(source) -> str:
    return "arrays" if isinstance(source, (tuple, list, dict, np.ndarray)) else str(source)


def _read(source, info: dict) -> _Part:
    if isinstance(source, (tuple, list)):
        if len(source) != 2:
            raise DataError(f"arrays must be a pair (x, y), got {len(source)} items")
        return _from_dict({"x": source[0], "y": source[1]}, "arrays", info)
    if isinstance(source, dict):
        return _from_dict(source, "arrays", info)
    if isinstance(source, np.ndarray):
        raise DataError("pass the labels too: (x, y)")
    p = Path(str(source))
    if p.suffix.lower() == ".npz":
        return _from_dict(_read_npz(p), p.stem, info)
    if p.suffix.lower() == ".csv":
        return _read_csv(p, info)
    if p.is_dir():
        return _read_image_folder(p, info)
    raise DataError(f"{p}: not a .npz, a .csv or a folder of images")


def _read_npz(p: Path) -> dict:
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return load_npz(p, str(p))


def _from_dict(d: dict, name: str, info: dict) -> _Part:
    keys = set(d)
    if {"x_train", "y_train"} <= keys:
        pairs = [("train", "_train", d["x_train"], d["y_train"])]
        if {"x_test", "y_test"} <= keys:
            pairs.append(("test", "_test", d["x_test"], d["y_test"]))
        elif keys & {"x_test", "y_test"}:
            raise DataError(f"{name}: x_test and y_test go together, only one is given")
    elif {"x", "y"} <= keys:
        pairs = [("train", "", d["x"], d["y"])]
    else:
        raise DataError(f"{name}: expected arrays x_train, y_train[, x_test, y_test] (or x, y), got "
                        f"{', '.join(sorted(map(str, keys))) or 'none'}")
    arrays, kind, dtype = {}, info.get("kind"), None
    for split, suffix, x, y in pairs:
        dtype = wider_dtype(dtype, _raw_dtype(x))
        x, k = _samples(x, f"{name}: x{suffix}")
        if kind is not None and k != kind:
            raise DataError(f"{name}: x{suffix} holds {k}, expected {kind}")
        kind = k
        arrays["x_" + split], arrays["y_" + split] = x, _label_array(y, f"{name}: y{suffix}", len(x))
    return _Part(name, arrays, {"kind": kind, "dtype": "u8" if kind == "pixels" else dtype})


def _raw_dtype(x) -> str | None:
    """The raw input type of integer samples (normalization.INPUT_DTYPES): uint8 -> u8; int8 / int16 -> s16;
    (u)int32, uint16 -> s32; (u)int64 -> s16 or s32 by the values' range (Python ints land there)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer) or x.dtype == bool or not x.size:
        return None  # refused by _samples
    if x.dtype == np.uint8:
        return "u8"
    if x.dtype in (np.int8, np.int16):
        return "s16"
    if x.dtype.itemsize < 8:
        return "s32"
    return dtype_of_range(int(x.min()), int(x.max()))


def _samples(x, what: str) -> tuple[np.ndarray, str]:
    """Integer images -> uint8 NCHW ('pixels'), or integer features [N, F] -> int64 [N, F, 1, 1] ('features')."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.integer):
        kind = "floats" if np.issubdtype(x.dtype, np.floating) else str(x.dtype)
        raise DataError(f"{what} holds {kind}: pass integers (pixels 0..255, or features quantised to integers, "
                        "e.g. np.round(x * 100).astype(np.int32)); the data path is integer-only")
    if x.ndim < 2 or x.ndim > 4 or x.shape[0] == 0:
        raise DataError(f"{what} must be [N, F] features or [N, H, W] / [N, C, H, W] / [N, H, W, C] images, has "
                        f"shape {list(x.shape)}")
    lo, hi = int(x.min()), int(x.max())
    if x.ndim == 2:
        if max(-lo, hi) >= FEATURE_LIMIT:
            raise DataError(f"{what}: features must lie in (-2**31, 2**31), found {lo if -lo > hi else hi}")
        return x.astype(np.int64).reshape(*x.shape, 1, 1), "features"
    if lo < 0 or hi > 255:
        raise DataError(f"{what}: pixels must lie in [0, 255], found {lo if lo < 0 else hi} (windows of readings are "
                        "features: x.reshape(len(x), -1) makes them [N, F])")
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    return np.ascontiguousarray(x, dtype=np.uint8), "pixels"


def _label_array(y, what: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{what} must be 1-D (one label per sample), has shape {list(y.shape)}")
    if len(y) != n:
        raise DataError(f"{what}: {len(y)} labels for {n} samples")
    if np.issubdtype(y.dtype, np.floating) or y.dtype == bool:
        raise DataError(f"{what} holds {y.dtype}: labels are integers 0..K-1 or class names")
    return y


def _numeric(classes) -> bool:
    return all(str(c).isdigit() for c in classes) and [int(c) for c in classes] == list(range(len(classes)))


def _labels(ys: list, classes: Optional[Sequence[str]], name: str) -> tuple[list, Optional[tuple]]:
    """Integer labels of every part, and the class names (None for integer labels)."""
    if classes is None and all(np.issubdtype(y.dtype, np.integer) for y in ys):
        for y in ys:
            if len(y) and int(y.min()) < 0:
                raise DataError(f"{name}: label {int(y.min())} is negative: labels are 0..K-1 or class names")
        return [y.astype(np.int64) for y in ys], None
    strs = [np.array([str(v) for v in y.tolist()]) for y in ys]
    # the training part names the classes: a test part's other labels are refused below, not made new classes
    names = tuple(classes) if classes is not None else tuple(sorted(set(strs[0].tolist())))
    index = {c: i for i, c in enumerate(names)}
    out = []
    for s in strs:
        unknown = sorted(set(s.tolist()) - set(index))
        if unknown:
            raise DataError(f"{name}: label {unknown[0]!r} is not one of the classes {', '.join(names)}")
        out.append(np.array([index[v] for v in s.tolist()], dtype=np.int64))
    return out, names


def _count_classes(labels: list, name: str) -> int:
    seen = np.unique(np.concatenate(labels))
    k = int(seen.max()) + 1 if seen.size else 0
    if k < 2:
        raise DataError(f"{name}: the labels name {k} class(es); training needs at least 2")
    missing = sorted(set(range(k)) - set(seen.tolist()))
    if missing:
        raise DataError(f"{name}: labels go up to {k - 1} but class {missing[0]} has no sample: number the classes "
                        "0..K-1 without gaps (or use class names)")
    return k


def _hold_out(x, y, seed: int, test_size: Optional[int], name: str) -> dict:
    n = len(x)
    t = max(1, n // 6) if test_size is None else int(test_size)
    if not 1 <= t < n:
        raise DataError(f"{name}: test_size must be in [1, {n}) for {n} samples, got {t}")
    perm = Rng(seed, STREAM_HOLDOUT).permutation(n)
    tr, te = np.sort(perm[: n - t]), np.sort(perm[n - t:])
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


# ---- CSV -----------------------------------------------------------------------------------------------
def _read_csv(p: Path, info: dict) -> _Part:
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{p}: unreadable CSV ({e})") from None
    if not rows:
        raise DataError(f"{p}: the CSV is empty")
    header = None
    if any(_number(c) is None for c in rows[0]) and not _first_row_is_a_sample(rows):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    width = len(rows[0]) if rows else len(header)
    sep = next((name for c, name in SEPARATORS.items() if width == 1 and c in (rows or [header])[0][0]), None)
    if sep:  # csv reads commas only: a whole row in one cell
        raise DataError(f"{p}: one column per row, its cells separated by {sep}: separate the values with commas")
    if width < 2 or not rows:
        raise DataError(f"{p}: need at least one row of features and a label")
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{p}: row {i + 1 + (header is not None)} has {len(r)} columns, the first has {width}")
    lab = _label_column(p, header, width, info.get("label_column"))
    feats = [j for j in range(width) if j != lab]
    names = [header[j] if header else f"column {j + 1}" for j in feats]
    cols = [[r[j].strip() for r in rows] for j in feats]
    known = info.get("decimals")
    if known is not None and len(known) != len(feats):
        raise DataError(f"{p}: {len(feats)} feature columns, the model was trained on {len(known)}")
    x = np.empty((len(rows), len(feats)), dtype=np.int64)
    decimals = []
    for j, (col, cname) in enumerate(zip(cols, names)):
        vals = [_number(c) for c in col]
        bad = next((i for i, v in enumerate(vals) if v is None), None)
        if bad is not None:
            raise DataError(f"{p}: row {bad + 1 + (header is not None)}, {cname}: {col[bad]!r} is not a number")
        big = next((i for i, v in enumerate(vals) if v and v.adjusted() >= 10), None)  # |v| >= 1e10 > 2**31
        if big is not None:
            raise DataError(f"{p}: row {big + 1 + (header is not None)}, {cname}: {col[big][:40]!r} is beyond 2**31: "
                            "rescale it")
        d = max(max(0, -v.as_tuple().exponent) for v in vals) if known is None else int(known[j])  # 0 <= d
        if d > MAX_DECIMALS:
            raise DataError(f"{p}: {cname} has values with more than {MAX_DECIMALS} decimals: round them first")
        scaled = [v.scaleb(d) for v in vals]
        frac = next((i for i, v in enumerate(scaled) if v != v.to_integral_value()), None)
        if frac is not None:
            raise DataError(f"{p}: {cname}: {col[frac]!r} has more decimals than the model's data ({d})")
        ints = [int(v) for v in scaled]
        if max(abs(v) for v in ints) >= FEATURE_LIMIT:
            raise DataError(f"{p}: {cname} holds values beyond 2**31 once read with {d} decimal(s): rescale it")
        x[:, j] = ints
        decimals.append(d)
    y = np.array([r[lab].strip() for r in rows])
    if all(v.lstrip("-").isdigit() for v in y.tolist()) and info.get("classes") is None:
        y = y.astype(np.int64)
    return _Part(p.stem, {"x_train": x.reshape(*x.shape, 1, 1), "y_train": y},
                 {"kind": "features", "decimals": decimals, "label_column": header[lab] if header else lab,
                  "dtype": dtype_of_range(int(x.min()), int(x.max()))})  # fixed point: value * 10**decimals


def _first_row_is_a_sample(rows: list) -> bool:
    """Numbers, then a label that recurs in the last column below: a sample with a class name, not a header."""
    first = rows[0]
    return (all(_number(c) is not None for c in first[:-1])
            and any(r[-1].strip() == first[-1].strip() for r in rows[1:] if r))


def _number(cell: str):
    try:
        v = Decimal(cell.strip())
    except InvalidOperation:
        return None
    return v if v.is_finite() else None


def _label_column(p: Path, header, width: int, asked) -> int:
    if asked is None:
        if header:
            for j, h in enumerate(header):
                if h.lower() in LABEL_NAMES:
                    return j
        return width - 1
    if isinstance(asked, int):
        if not 0 <= asked < width:
            raise DataError(f"{p}: label column {asked} is outside the {width} columns")
        return asked
    if not header or asked not in header:
        raise DataError(f"{p}: no column named {asked!r} (the label column of the model's data)")
    return header.index(asked)


# ---- a folder of images ----------------------------------------------------------------------------------
def _read_image_folder(root: Path, info: dict) -> _Part:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{root}: reading a folder of images needs Pillow: pip install 'nitro-mcu[images]' "
                        "(or pip install pillow)") from None
    parts = {"train": root / "train", "test": root / "test"}
    if not all(d.is_dir() for d in parts.values()):
        parts = {"train": root}
    arrays, classes = {}, info.get("classes")
    channels = info.get("channels")
    files = {split: _class_files(d) for split, d in parts.items()}
    if classes is None:
        classes = sorted(set().union(*(set(f) for f in files.values())))
    for split, per_class in files.items():
        unknown = sorted(set(per_class) - set(classes))
        if unknown:
            raise DataError(f"{parts[split]}: class folder {unknown[0]!r} is not one of the classes {classes}")
        items = [(c, f) for c in classes for f in per_class.get(c, [])]
        if not items:
            raise DataError(f"{parts[split]}: no images (.png, .jpg, ...) in its class folders")
        imgs = [_open_rgb(Image, f) for _, f in items]
        size = imgs[0].shape
        for (_, f), im in zip(items, imgs):
            if im.shape != size:
                raise DataError(f"{f}: {im.shape[1]}x{im.shape[0]} pixels, {items[0][1].name} has "
                                f"{size[1]}x{size[0]}: resize the images to one size")
        x = np.stack(imgs).transpose(0, 3, 1, 2)
        if channels is None:
            channels = 1 if all(np.array_equal(x[:, 0], x[:, k]) for k in (1, 2)) else 3
        arrays["x_" + split] = np.ascontiguousarray(x[:, :channels])
        arrays["y_" + split] = np.array([c for c, _ in items])
    return _Part(root.name, arrays, {"kind": "pixels", "channels": channels, "classes": list(classes),
                                     "dtype": "u8"})


def _class_files(d: Path) -> dict:
    out = {}
    for c in sorted(p for p in d.iterdir() if p.is_dir()):
        fs = sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if fs:
            out[c.name] = fs
    if not out:
        raise DataError(f"{d}: no class sub-folders holding images (one folder per class, e.g. {d}/cat/1.png)")
    return out


def _open_rgb(image_module, f: Path) -> np.ndarray:
    """One image as RGB uint8 [H, W, 3]; its size is read from the header and bounded before decoding."""
    try:
        with image_module.open(f) as im:
            w, h = im.size
            if w * h > MAX_VALUES_PER_SAMPLE:
                raise DataError(f"{f}: {w}x{h} pixels, over the limit of {MAX_VALUES_PER_SAMPLE} pixels per image "
                                "(a model takes at most that many values per sample): resize the images")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, Image.DecompressionBombError, SyntaxError (bad headers), ...
        raise DataError(f"{f}: unreadable image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
