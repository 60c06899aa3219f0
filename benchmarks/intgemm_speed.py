#!/usr/bin/env python
"""The trainer's exact integer products on the native kernels against float BLAS on the same shapes.

    OPENBLAS_NUM_THREADS=1 python benchmarks/intgemm_speed.py [--repeats 200]

Shapes of mlp2's first layer and the CNN presets' convolutions (batch 64); operands as after a one-epoch warm-up
(|W| ~ 10 000, int8 activations, errors ~ 83 000, so the gradient needs two 16-bit limbs).  "kernel" is
nitro_mcu/trainer/intgemm.py's exact product (operand preparation and packing included; "scaled" with
NITRO-Scaling fused); "float32" is plain float32 BLAS, not exact at these sizes (the floor PyTorch runs on);
"float64" the exact float carrier the trainer used before.  Best of ``--repeats`` calls each, in microseconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def best_us(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(argv)
    from nitro_mcu.trainer import intgemm

    if intgemm.lib() is None:
        print("the native kernels are not built here (no C compiler): nothing to time")
        return 1
    rng = np.random.default_rng(0)
    print(f"kernel variant: {intgemm.variant()}")
    print(f"{'product':<38} {'kernel':>9} {'float32':>9} {'float64':>9}   (us, best of {a.repeats})")
    cases = [("mlp2 forward 64x784 @ 784x200, scaled", 64, 784, 200, 128, 10_000, True),
             ("mlp2 gradient 200x64 @ 64x784", 200, 64, 784, 83_000, 128, False),
             ("cnn conv1 forward 50176x9 @ 9x8, scaled", 50176, 9, 8, 128, 10_000, True),
             ("cnn conv2 forward 12544x72 @ 72x16, scaled", 12544, 72, 16, 128, 10_000, True)]
    for label, m, k, n, a_max, b_max, scaled in cases:
        x = rng.integers(-a_max, a_max + 1, (m, k))
        w = rng.integers(-b_max, b_max + 1, (k, n))
        x = x.astype(np.int8) if a_max <= 128 else x
        if scaled:
            def run():
                return intgemm.matmul_scaled(x, w, a_max, b_max, 256 * k)
        else:
            def run():
                return intgemm.matmul(x, w, a_max, b_max)
        x32, w32, x64, w64 = x.astype(np.float32), w.astype(np.float32), x.astype(np.float64), w.astype(np.float64)
        print(f"{label:<38} {best_us(run, a.repeats):>9.1f} {best_us(lambda: x32 @ w32, a.repeats):>9.1f} "
              f"{best_us(lambda: x64 @ w64, a.repeats):>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
