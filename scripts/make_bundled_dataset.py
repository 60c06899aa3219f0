#!/usr/bin/env python3
"""Build nitro_mcu/datasets/mnist_small.npz: a class-balanced, deterministic subset of MNIST.

Selection: for each class 0..9, the first ``--train-per-class`` images of that class in the IDX file
order of train-images-idx3-ubyte, and the first ``--test-per-class`` of t10k-images-idx3-ubyte; the
chosen images keep their file order.  The archive holds uint8 arrays ``x_train`` [N,1,28,28],
``y_train`` [N], ``x_test``, ``y_test`` and the uint16 source indices ``train_index``/``test_index``.
It is written as a deflate-compressed .npz (what np.savez_compressed writes) with fixed zip
timestamps, so the file is byte-for-byte reproducible.

    python scripts/make_bundled_dataset.py [--src ../shared/datasets/mnist] [--out nitro_mcu/datasets/mnist_small.npz]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nitro_mcu.trainer.data.formats import find_idx_files, load_idx  # noqa: E402


def first_per_class(y: np.ndarray, per_class: int, num_classes: int = 10) -> np.ndarray:
    idx = []
    for c in range(num_classes):
        where = np.flatnonzero(y == c)
        if where.size < per_class:
            raise SystemExit(f"class {c} has only {where.size} images, need {per_class}")
        idx.append(where[:per_class])
    return np.sort(np.concatenate(idx))


def write_npz(path: Path, arrays: dict) -> None:
    """Deterministic equivalent of np.savez_compressed (fixed member timestamps)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "datasets" / "mnist")
    ap.add_argument("--out", type=Path, default=REPO / "nitro_mcu" / "datasets" / "mnist_small.npz")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    args = ap.parse_args(argv)

    files = find_idx_files(args.src)
    missing = [r for r, p in files.items() if p is None]
    if missing:
        raise SystemExit(f"{args.src}: missing MNIST IDX files for {missing}")
    x_train, y_train = load_idx(files["x_train"]), load_idx(files["y_train"])
    x_test, y_test = load_idx(files["x_test"]), load_idx(files["y_test"])
    tr = first_per_class(y_train, args.train_per_class)
    te = first_per_class(y_test, args.test_per_class)
    arrays = {
        "x_train": x_train[tr][:, None], "y_train": y_train[tr],
        "x_test": x_test[te][:, None], "y_test": y_test[te],
        "train_index": tr.astype(np.uint16), "test_index": te.astype(np.uint16),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.out, arrays)
    for role, p in files.items():
        print(f"source {role}: {p.name} sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}")
    print(f"wrote {args.out}: train {arrays['x_train'].shape}, test {arrays['x_test'].shape}, "
          f"{args.out.stat().st_size} bytes, sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}")
    print(f"train indices {tr[0]}..{tr[-1]}, test indices {te[0]}..{te[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
