#!/usr/bin/env python
"""The trainer's exact integer products on the native kernels against float BLAS on the same shapes.

    OPENBLAS_NUM_THREADS=1 python benchmarks/intgemm_speed.py [--repeats 200]

Shapes of mlp2's and mlp4's first layers and the CNN presets' convolutions (batch 64); operands as after a one-epoch
warm-up (|W| ~ 10 000, int8 activations, errors ~ 83 000, so the gradient needs two 16-bit limbs).  "kernel" is
nitro_mcu/trainer/intgemm.py's exact product (operand preparation and packing included; "scaled" with
NITRO-Scaling fused); "float32" is plain float32 BLAS, not exact at these sizes (the floor PyTorch runs on);
"float64" the exact float carrier the trainer used before.  One "kernel" column per SIMD variant the CPU runs
(amx, avx512vnni, avx2 on x86; neon on AArch64).  Best of ``--repeats`` calls each, in microseconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def best_us(fn, repeats: int) -> float:
    """Best of ``repeats`` calls (fewer where one call takes over 0.1 s: at least 3), in microseconds."""
    t = time.perf_counter()
    fn()
    repeats = max(3, min(repeats, int(0.5 / max(time.perf_counter() - t, 1e-9))))
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
    best = intgemm.variant()
    # every SIMD variant this CPU runs, best first (the portable C is for CPUs without one: not timed)
    variants = [v for v in reversed(intgemm.VARIANTS) if v != "portable" and intgemm.force_variant(v)]
    print(f"kernel variant in use: {best}; timed: {', '.join(variants)}")
    print(f"{'product':<44} " + " ".join(f"{v:>10}" for v in variants) + f" {'float32':>10} {'float64':>10}"
          f"   (us, best of up to {a.repeats})")
    cases = [("mlp2 forward 64x784 @ 784x200, scaled", 64, 784, 200, 128, 10_000, True),
             ("mlp2 gradient 200x64 @ 64x784", 200, 64, 784, 83_000, 128, False),
             ("mlp4 forward 3000x3072 @ 3072x64", 3000, 3072, 64, 13_000, 128, False),
             ("cnn conv1 forward 50176x9 @ 9x8, scaled", 50176, 9, 8, 128, 10_000, True),
             ("cnn conv2 forward 12544x72 @ 72x16, scaled", 12544, 72, 16, 128, 10_000, True),
             ("vgg8b conv3 forward 12544x2304 @ 2304x512", 12544, 2304, 512, 128, 10_000, False)]
    try:
        for label, m, k, n, a_max, b_max, scaled in cases:
            x = rng.integers(-a_max, a_max + 1, (m, k))
            w = rng.integers(-b_max, b_max + 1, (k, n))
            x = x.astype(np.int8) if a_max <= 128 else x.astype(np.int16) if a_max < 2**15 else x
            if scaled:
                def run():
                    return intgemm.matmul_scaled(x, w, a_max, b_max, 256 * k)
            else:
                def run():
                    return intgemm.matmul(x, w, a_max, b_max)
            times = []
            for v in variants:
                intgemm.force_variant(v)
                times.append(best_us(run, a.repeats))
            x32, w32, x64, w64 = (x.astype(np.float32), w.astype(np.float32), x.astype(np.float64),
                                  w.astype(np.float64))
            print(f"{label:<44} " + " ".join(f"{t:>10.1f}" for t in times) +
                  f" {best_us(lambda: x32 @ w32, a.repeats):>10.1f} {best_us(lambda: x64 @ w64, a.repeats):>10.1f}")
    finally:
        intgemm.force_variant(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
