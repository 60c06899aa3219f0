"""A public motion-sensor dataset read offline from a registry package: BasicMotions (docs/sensors.md).

BasicMotions (UEA multivariate time-series archive, Bagnall et al. 2018): four students wore a smart watch and
performed four activities (standing, running, walking, badminton) five times each; each of the 80 recordings is
10 s of a 3-axis accelerometer and a 3-axis gyroscope at 10 Hz (6 channels x 100 samples).  The files ship inside
the ``sktime`` wheel (BSD-3-Clause) as ``sktime/datasets/data/BasicMotions/BasicMotions_{TRAIN,TEST}.ts``; this
module reads them without importing sktime (nor its dependencies): only the package's folder is looked up.

Readings become integers as a sensor delivers them: fixed point with SCALE units per unit of the file (milli-g
and milli-rad/s), exactly (decimal parsing, half to even), saturated to int16.  A window is ``length``
consecutive samples of the 6 channels, laid out channel-major ([6, length] in C order), taken every ``stride``
samples; all windows of one recording stay together (the recording index comes with them).
"""
from __future__ import annotations

import importlib.util
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from .errors import DataError

PACKAGE = "sktime"          # the pip package that carries the files
SUBDIR = ("datasets", "data", "BasicMotions")
SCALE = 1000                # fixed-point units per unit of the file
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
WINDOW, STRIDE = 32, 16     # 3.2 s windows every 1.6 s: 5 per 10 s recording
INT16 = (-32768, 32767)


def data_dir() -> Path:
    """The folder of the BasicMotions files inside the installed package; DataError naming it when absent."""
    spec = importlib.util.find_spec(PACKAGE)
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        d = Path(loc).joinpath(*SUBDIR)
        if (d / "BasicMotions_TRAIN.ts").is_file():
            return d
    raise DataError(f"the BasicMotions dataset comes with the '{PACKAGE}' package: pip install {PACKAGE} "
                    "(or pip install 'nitro_mcu[test]')")


def read_ts(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """A .ts file of equal-length multivariate series -> (int16 [N, C, T] fixed point, labels, class names)."""
    classes, rows, labels, in_data = [], [], [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                classes = line.split()[2:]
            in_data = low == "@data"
            continue
        *chans, label = line.split(":")
        try:
            vals = [[int((Decimal(v) * SCALE).to_integral_value(ROUND_HALF_EVEN)) for v in c.split(",")] for c in chans]
        except InvalidOperation:
            raise DataError(f"{path}:{n}: a value is not a decimal number") from None
        rows.append(vals)
        labels.append(label.strip())
    if not rows or len({(len(r), *map(len, r)) for r in rows}) != 1:
        raise DataError(f"{path}: no data, or series of unequal length")
    x = np.clip(np.asarray(rows, dtype=np.int64), *INT16).astype(np.int16)
    return x, labels, classes


def load_recordings() -> dict:
    """All 80 recordings: ``x`` int16 [80, 6, 100], ``y`` class indices, ``part`` ("train"/"test", the archive's
    split), ``classes`` (names, in the order of the file header)."""
    d = data_dir()
    xs, ys, parts, classes = [], [], [], None
    for part in ("TRAIN", "TEST"):
        x, labels, cls = read_ts(d / f"BasicMotions_{part}.ts")
        classes = classes or cls
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise DataError(f"BasicMotions_{part}.ts: labels {unknown} not in the header's classes {classes}")
        xs.append(x)
        ys += [classes.index(v) for v in labels]
        parts += [part.lower()] * len(labels)
    return dict(x=np.concatenate(xs), y=np.asarray(ys, dtype=np.int64), part=np.asarray(parts),
                classes=list(classes))


def windows(x: np.ndarray, y: np.ndarray, length: int = WINDOW, stride: int = STRIDE):
    """Recordings [N, C, T] -> (windows [N * W, C * length], labels, recording index of each window)."""
    starts = range(0, x.shape[2] - length + 1, stride)
    w = np.stack([x[:, :, s:s + length] for s in starts], axis=1)  # [N, W, C, length]
    n, k = w.shape[:2]
    return w.reshape(n * k, -1), np.repeat(y, k), np.repeat(np.arange(n), k)


def rotate_mounting(x: np.ndarray) -> np.ndarray:
    """The watch turned by 90 degrees about its z axis: (x, y, z) -> (y, -x, z) for both sensors (int16 kept)."""
    out = x.astype(np.int32).copy()
    for a in (0, 3):
        out[:, a], out[:, a + 1] = x[:, a + 1], -x[:, a].astype(np.int32)
    return np.clip(out, *INT16).astype(np.int16)


def load_basic_motions() -> dict:
    """The archive's train/test split as int16 windows: a dict for :func:`~.userdata.load_source`."""
    r = load_recordings()
    tr, te = r["part"] == "train", r["part"] == "test"
    xtr, ytr, _ = windows(r["x"][tr], r["y"][tr])
    xte, yte, _ = windows(r["x"][te], r["y"][te])
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=r["classes"])
