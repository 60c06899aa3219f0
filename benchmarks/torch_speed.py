#!/usr/bin/env python
"""The integer trainer against PyTorch FP32 back-propagation of the same networks, side by side on one core
(or on ``--threads`` threads each).

    pip install torch==2.13.0          # optional: without torch only the integer side runs
    python benchmarks/torch_speed.py [--models mlp1,mlp2,...] [--steps 200] [--repeats 3] [--threads 1]

PyTorch side: what a user would pick instead -- the same layers without NITRO-D's local heads
(nn.Linear / nn.Conv2d + ReLU + MaxPool2d + Dropout where the preset has it), cross-entropy, plain SGD, the
same batch size, float32, ``torch.set_num_threads(--threads)``.  Integer side: ``Model.train_step`` of the preset
(heads included), after a warm-up that lets the weights grow to their trained size (one epoch, or as much
of it as ``--warmup-budget`` seconds allow).  Both train the same batches (MNIST, or the bundled subset; a
3x32x32 input gets the digits padded on three channels), alternately, ``--repeats`` times each, and the
best time of each side is reported, so a load change on the machine hits both alike.  Then the integer
side replays ``--int64-steps`` batches with ``gemm.FORCE_INT64`` and must end with identical weights.
Heavy presets get fewer timed steps: each side is capped at ``--budget`` seconds per repeat.

"products" is the integer side's time inside native code (one more replay with every call timed): the native
kernels of nitro_mcu/trainer/intgemm.py with their operand preparation (limbs, packing), the whole block steps of
nitro_mcu/trainer/nativeblock.py (their products with the NITRO-ReLU, error and update around them), or
``numpy.matmul`` where they are not built.  "ceiling" is PyTorch's whole step over that time: the ratio the integer
trainer could reach if the Python around those calls took no time.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainer_speed as ts  # noqa: E402  (the integer timing harness and the data; threads: ts.set_threads)

DEFAULT_MODELS = "mlp1,mlp2,mlp3,cnn_small,mcu_cnn,mlp4,vgg8b"
# Quoted from the issue (issue 14), NOT measured here: the official NITRO-D code, samples/s, batch 64.
OFFICIAL_NITRO_D = {"mlp1": 6_300, "cnn_small": 540}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ts.MNIST_DIR))
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated presets (default: %(default)s)")
    p.add_argument("--profile", default="default")
    p.add_argument("--weight-bits", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS, torch and integer-kernel threads (NITRO_MCU_THREADS; default 1)")
    p.add_argument("--steps", type=int, default=200, help="most timed steps per repeat (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=20.0, help="seconds per side and repeat (fewer steps if slow)")
    p.add_argument("--warmup-steps", type=int, default=None, help="integer warm-up steps (default: one epoch)")
    p.add_argument("--warmup-budget", type=float, default=60.0, help="seconds the warm-up may take at most")
    p.add_argument("--int64-steps", type=int, default=10, help="steps of the pure-int64 comparison (at most)")
    p.add_argument("--no-torch", action="store_true", help="time the integer trainer only")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def torch_net(spec: dict, torch):
    """nn.Sequential of the same architecture as a model description, without the local heads."""
    nn = torch.nn
    layers, p = [], float(spec.get("dropout") or 0.0)
    if spec["kind"] == "cnn":
        c, h, w = spec["input_shape"]
        for f in spec["features"]:
            if f[0] == "conv":
                layers += [nn.Conv2d(c, f[1], f[2], stride=f[3], padding=f[4]), nn.ReLU()]
                c, h, w = f[1], h + 2 * f[4] - f[2] + 1, w + 2 * f[4] - f[2] + 1
            elif f[0] == "maxpool":
                layers.append(nn.MaxPool2d(f[1], f[2]))
                h, w = h // f[1], w // f[1]
            else:
                layers.append(nn.Dropout(f[1]))
        d, hidden = c * h * w, spec.get("fc_hidden", [])
    else:
        d, hidden = 1, spec["hidden"]
        for v in spec["input_shape"]:
            d *= v
    layers.append(nn.Flatten())
    for width in hidden:
        layers += [nn.Linear(d, width), nn.ReLU()] + ([nn.Dropout(p)] if p else [])
        d = width
    layers.append(nn.Linear(d, spec["num_classes"]))
    return nn.Sequential(*layers)


class TorchRun:
    """PyTorch FP32 back-propagation (cross-entropy, SGD) over the integer run's batches, as float32 tensors."""

    def __init__(self, torch, spec, batches, seed: int):
        torch.manual_seed(seed)
        self.torch, self.net = torch, torch_net(spec, torch)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.loss = torch.nn.CrossEntropyLoss()
        shape = (-1, *spec["input_shape"])
        self.batches = [(torch.from_numpy(x.astype("float32") / 64).reshape(shape), torch.from_numpy(y))
                        for x, y in batches]
        self.chunk_best = float("inf")
        self.run(min(5, len(self.batches)))  # first-call allocations and kernel selection
        self.chunk_best = float("inf")

    def run(self, steps: int, chunk: int = 10) -> float:
        """Seconds for ``steps`` batches; the best per-step time of ``chunk``-step pieces goes to chunk_best."""
        t = time.perf_counter()
        for i in range(0, steps, chunk):
            tc = time.perf_counter()
            part = self.batches[i:min(i + chunk, steps)]
            for x, y in part:
                self.opt.zero_grad(set_to_none=True)
                self.loss(self.net(x), y).backward()
                self.opt.step()
            self.chunk_best = min(self.chunk_best, (time.perf_counter() - tc) / len(part))
        return time.perf_counter() - t


def main(argv=None) -> int:
    a = parse_args(argv)
    ts.set_threads(a.threads)
    import numpy as np

    from nitro_mcu.spec import preset
    from nitro_mcu.trainer.malloc import tune_malloc
    from nitro_mcu.trainer.network import Model

    torch = None
    if not a.no_torch:
        try:
            import torch
        except ImportError:
            print("note: torch is not installed (pip install torch==2.13.0): integer side only")
    if torch is not None and a.threads:
        torch.set_num_threads(a.threads)
    tune_malloc()
    print(ts.environment(np))
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    from nitro_mcu.trainer import intgemm
    print(f"integer kernels: {intgemm.variant() or 'NumPy int64'}, {intgemm.set_threads(0)} thread(s)")
    print(f"batch {a.batch}; best of {a.repeats} alternating repeats per side, at most {a.steps} steps or "
          f"{a.budget:.0f} s each; profile {a.profile}, int{a.weight_bits} weights", flush=True)
    rows, ok, data_cache = [], True, {}
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        spec = preset(name)
        shape = ts.image_shape(spec["input_shape"])
        if shape not in data_cache:
            data_cache[shape] = ts.load_images(a.data_dir, spec["input_shape"], a.seed)
        data, source = data_cache[shape]
        model = Model(spec, a.profile, weight_bits=a.weight_bits, seed=a.seed)
        warm = _warmup(model, data, a)
        run = ts.IntegerRun(model, data, a.batch, warm, 0)
        steps = _steps(run, a)
        run.time_steps(steps)
        tr = TorchRun(torch, spec, run.timed, a.seed) if torch is not None else None
        t_int, t_torch = float("inf"), float("inf")
        for _ in range(a.repeats):
            if tr is not None:
                t_torch = min(t_torch, tr.run(steps))
            t_int = min(t_int, run.run(steps)[0])
        # --int64-steps 0: no comparison, and the row says so (never "identical" over no steps)
        same, sps64 = run.same_as_int64(min(a.int64_steps, steps)) if a.int64_steps > 0 else (None, float("nan"))
        products = products_time(run, steps) / steps
        ok &= same is not False
        row = dict(model=name, data=source, warm=warm, steps=steps, int_sps=steps * a.batch / t_int,
                   torch_sps=steps * a.batch / t_torch if tr is not None else float("nan"),
                   int_chunk=a.batch / run.chunk_best,
                   torch_chunk=a.batch / tr.chunk_best if tr is not None else float("nan"),
                   int64_sps=sps64, same=same, wmax=run.max_fwd_weight(), products_ms=products * 1e3,
                   ceiling=t_torch / steps / products if tr is not None and products > 0 else float("nan"))
        rows.append(row)
        print(f"  {name}: integer {row['int_sps']:,.0f} samples/s, torch {row['torch_sps']:,.0f}, "
              f"ratio {row['int_sps'] / row['torch_sps']:.2f}x (best 10-step pieces: {row['int_chunk']:,.0f} / "
              f"{row['torch_chunk']:,.0f} = {row['int_chunk'] / row['torch_chunk']:.2f}x; {steps} steps after {warm} "
              f"warm-up steps; int64 check {_same(same)}; products {row['products_ms']:.3f} ms of "
              f"{t_int / steps * 1e3:.3f} ms per step, ceiling {row['ceiling']:.2f}x)", flush=True)
    print()
    print(table(rows, a.threads))
    print("official NITRO-D: figures quoted in issue 14 (the official Python code, samples/s), not measured here")
    if not ok:
        print("ERROR: the fast path and the pure-int64 path gave different weights")
        return 1
    return 0


@contextlib.contextmanager
def _timed_products(total: list):
    """Every call into native code (the kernels' entry points, the whole block steps) and ``numpy.matmul`` (the NumPy
    path) adds its seconds to total[0]."""
    import numpy as np

    from nitro_mcu.trainer import intgemm, nativeblock

    targets = [(np, "matmul"), (intgemm, "matmul"), (intgemm, "gather_rows"), (nativeblock, "forward"),
               (nativeblock, "head_step"), (nativeblock, "linear_step")]
    inner = [getattr(mod, name) for mod, name in targets]

    def timed(fn):
        def call(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                total[0] += time.perf_counter() - t
        return call

    nested = [0]  # a timed call may call another (intgemm.matmul numpy.matmul): count the outermost call only

    def outer(fn):
        def call(*args, **kw):
            nested[0] += 1
            try:
                return timed(fn)(*args, **kw) if nested[0] == 1 else fn(*args, **kw)
            finally:
                nested[0] -= 1
        return call

    for (mod, name), fn in zip(targets, inner):
        setattr(mod, name, outer(fn))
    try:
        yield
    finally:
        for (mod, name), fn in zip(targets, inner):
            setattr(mod, name, fn)


def products_time(run, steps: int) -> float:
    """Seconds the integer side spends in its matrix products over ``steps`` timed batches (best of 2 replays)."""
    best = float("inf")
    for _ in range(2):
        total = [0.0]
        with _timed_products(total):
            run.run(steps)
        best = min(best, total[0])
    return best


def _warmup(model, data, a) -> int:
    """Warm-up steps: --warmup-steps, else one epoch cut to what --warmup-budget seconds allow (probed)."""
    epoch = len(data.x_train) // a.batch
    if a.warmup_steps is not None:
        return min(a.warmup_steps, epoch)
    probe = ts.IntegerRun(model, data, a.batch, 0, 2)
    t, _ = probe.run(2)
    model.load_weights(probe.snap[0])
    return max(1, min(epoch, int(a.warmup_budget / max(t / 2, 1e-6))))


def _steps(run, a) -> int:
    """Timed steps: --steps, or fewer so that one repeat of a side takes about --budget seconds."""
    per_step = a.batch / run.warm_sps if run.warm_sps > 0 else 1.0
    return max(3, min(a.steps, int(a.budget / per_step)))


def _same(same, yes="identical", no="DIFFERENT", none="not run (--int64-steps 0)") -> str:
    return none if same is None else yes if same else no


def _rate(sps: float) -> str:
    """Samples/s as a whole number, with two decimals below 10 (vgg8b's pure-int64 path)."""
    return "-" if sps != sps else f"{sps:,.0f}" if sps >= 10 else f"{sps:.2f}"


def table(rows, threads: int = 1) -> str:
    hdr = (f"{'model':<10} {'PyTorch FP32':>13} {'integer':>10} {'ratio':>7} {'torch best10':>13} {'int best10':>11} "
           f"{'ratio':>7} {'int64':>8} {'identical':>9} {'steps':>6} {'warm-up':>8} {'max|W_fwd|':>10} "
           f"{'products ms':>11} {'ceiling':>8} {'official NITRO-D (quoted)':>26}")
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        off = OFFICIAL_NITRO_D.get(r["model"])
        lines.append(f"{r['model']:<10} {r['torch_sps']:>13,.0f} {r['int_sps']:>10,.0f} "
                     f"{r['int_sps'] / r['torch_sps']:>6.2f}x {r['torch_chunk']:>13,.0f} {r['int_chunk']:>11,.0f} "
                     f"{r['int_chunk'] / r['torch_chunk']:>6.2f}x {_rate(r['int64_sps']):>8} "
                     f"{_same(r['same'], 'yes', 'NO', 'not run'):>9} {r['steps']:>6} {r['warm']:>8} {r['wmax']:>10,d} "
                     f"{r['products_ms']:>11.3f} {r['ceiling']:>7.2f}x {f'{off:,}' if off else '-':>26}")
    where = "one core" if threads == 1 else f"{threads} threads each side"
    return "\n".join(lines) + (f"\n(samples/s, batch 64, {where}; best10: the best 10-step piece of any repeat;\n"
                               " products: ms per integer step in native code; ceiling: PyTorch's step / products)")


if __name__ == "__main__":
    sys.exit(main())
