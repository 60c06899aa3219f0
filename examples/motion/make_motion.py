"""Synthetic raw int16 accelerometer windows of 3 motions, as a CSV a firmware engineer would log.

Each row is one window of 16 samples of (x, y, z) interleaved (48 int16 readings: x0, y0, z0, x1, ...), then the
label: 0 still (gravity on z), 1 a slow shake along x, 2 a fast wave along y with the board tilted; sensor noise,
clipped to int16 as a sensor does.  The classes are clearly separable.  NumPy's generator with a fixed seed.

    python3 examples/motion/make_motion.py OUT_DIR [--seed S]   # writes OUT_DIR/motion.csv and OUT_DIR/motion.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

STEPS = 16
MODEL = {"kind": "mlp", "input_shape": [3 * STEPS], "num_classes": 3, "hidden": [32]}  # no lr_inv: searched


def motion_windows(n_per: int = 150, steps: int = STEPS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x int64 [3 * n_per, 3 * steps] raw int16 readings, y [3 * n_per] labels 0..2)."""
    r = np.random.default_rng(seed)
    t = np.arange(steps)
    rows, labels = [], []
    for k in range(3):
        for _ in range(n_per):
            ax = np.zeros((steps, 3))
            ax[:, 2] = 16384  # 1 g at +-2 g full scale
            ph = r.uniform(0, 2 * np.pi)
            if k == 1:
                ax[:, 0] += 12000 * np.sin(2 * np.pi * t / 8 + ph)
            elif k == 2:
                ax[:, 1] += 9000 * np.sin(2 * np.pi * t / 4 + ph)
                ax[:, 2] -= 6000
            ax += r.normal(0, 1500, ax.shape)
            rows.append(np.clip(np.round(ax), -32768, 32767).astype(np.int64).reshape(-1))
            labels.append(k)
    return np.array(rows), np.array(labels)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    path.write_text("".join(",".join(map(str, row)) + f",{lab}\n" for row, lab in zip(x.tolist(), y.tolist())))
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "motion.csv", *motion_windows(seed=a.seed))
    (out / "motion.json").write_text(json.dumps(MODEL) + "\n")
    print(f"wrote {out / 'motion.csv'} (450 windows of 48 raw int16 readings, 3 motions), {out / 'motion.json'}")
