#!/usr/bin/env python
"""What an exact product of a wide first layer costs on each float carrier, against plain (inexact) float32.

    python benchmarks/carriers.py [--model mlp2] [--warmup-steps 843] [--threads 1]

Trains the preset for ``--warmup-steps`` batches of 64 (one epoch by default) so the weights reach their trained
size, then times block0's forward product x @ W.T on: plain float32 (NOT exact at these bounds, shown as the
floor PyTorch runs on), float64, two float32 halves (gemm.matmul_split_f32) and float32 K-chunks of every width
(gemm.matmul_chunked_f32), each marked exact or not by the bounds of nitro_mcu/trainer/gemm.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_speed as ts  # noqa: E402  (the data and the warm-up harness)


def best_ms(f, n: int = 200, repeats: int = 5) -> float:
    f()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp2")
    p.add_argument("--warmup-steps", type=int, default=843)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=str(ts.MNIST_DIR))
    a = p.parse_args(argv)
    ts.set_threads(a.threads)
    import numpy as np

    from nitro_mcu.spec import preset
    from nitro_mcu.trainer import gemm
    from nitro_mcu.trainer.network import Model

    spec = preset(a.model)
    data, source = ts.load_images(a.data_dir, spec["input_shape"], 0)
    model = Model(spec, "default", weight_bits=32, seed=0)
    ts.IntegerRun(model, data, 64, a.warmup_steps, 0)
    w = model.weights["block0.fwd"]
    x = data.x_train[:64].reshape(64, -1)
    x_max, w_max, k = 128, int(np.abs(w.astype(np.int64)).max()), x.shape[1]
    print(ts.environment(np))
    print(f"{a.model} block0 {w.shape[1]} -> {w.shape[0]}, batch 64, {source}, after {a.warmup_steps} steps: "
          f"|W|max {w_max:,}, bound |x|max*|W|max*K = {x_max * w_max * k:,} (float32 exact below {gemm.F32_EXACT:,})")
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    print(f"  plain float32 (not exact)  {best_ms(lambda: x32 @ w32.T):.3f} ms")
    print(f"  float64                    {best_ms(lambda: x64 @ w64.T):.3f} ms  exact")
    s = gemm.split_shift(x_max, w_max, k)
    if s is not None:
        print(f"  two float32 halves (s={s})   {best_ms(lambda: gemm.matmul_split_f32(x32, w.T, s)):.3f} ms  exact")
    mag = np.abs(w.astype(np.int64))
    for kc in range(gemm.CHUNK_FINE, 129, gemm.CHUNK_FINE):
        c = -(-k // kc)
        padded = np.zeros((w.shape[0], c * kc), np.int64)
        padded[:, :k] = mag
        exact = x_max * int(padded.reshape(w.shape[0], c, kc).sum(2).max()) < gemm.F32_EXACT
        ms = best_ms(lambda: gemm.matmul_chunked_f32(x, w32, kc), n=100)
        print(f"  float32 K-chunks of {kc:3d} ({c:3d} chunks) {ms:.3f} ms  {'exact' if exact else 'NOT exact'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
