#!/usr/bin/env python
"""Training throughput of the NumPy trainer (samples/s, batch 64) on MNIST, fast path vs pure int64.

    python benchmarks/trainer_speed.py [--data-dir DIR] [--models mlp1,cnn_small,mcu_cnn]
                                       [--threads N] [--warmup-steps N] [--steps N] [--repeats N]

Method: each model first trains ``--warmup-steps`` steps (default: one epoch) so that its weights reach
a realistic size (forward-layer weights in the thousands, errors past 2**15: the native kernels' limbs).  That
state is snapshotted; then the same ``--steps`` batches are trained from the
snapshot ``--repeats`` times and the best time is reported.  The pure-int64 path
(``gemm.FORCE_INT64 = True``) then trains the same batches from the same snapshot once, and the two
final weight sets must be bit-identical.

``--threads`` sets the OpenBLAS thread count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, before NumPy is
imported) and the native integer kernels' (NITRO_MCU_THREADS, nitro_mcu/trainer/intgemm.py: each large product
split over that many threads).  The default is 1: these GEMMs are small, and on a shared 2-core machine OpenBLAS's
spinning worker threads collapse under load (2-5x slower); ``--threads 0`` keeps the environment/library default.
The benchmark opts in to :func:`nitro_mcu.trainer.malloc.tune_malloc`; ``--no-malloc-tune`` disables it
(NITRO_MCU_MALLOC_TUNE=0).
Besides the best full run, the best 10-step chunk is reported: less sensitive to other processes.
benchmarks/torch_speed.py reuses the pieces below to time PyTorch FP32 back-propagation side by side.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "datasets" / "mnist"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(MNIST_DIR))
    p.add_argument("--models", default="mlp1,cnn_small,mcu_cnn")
    p.add_argument("--profile", default="default")
    p.add_argument("--weight-bits", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1; 0 = environment / library)")
    p.add_argument("--no-malloc-tune", action="store_true", help="run with NITRO_MCU_MALLOC_TUNE=0")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: one epoch")
    p.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--int64-steps", type=int, default=None,
                   help="steps for the FORCE_INT64 comparison (default: --steps)")
    p.add_argument("--no-int64", action="store_true", help="skip the pure-int64 comparison")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def set_threads(threads: int, no_malloc_tune: bool = False) -> None:
    """Fix the BLAS and integer-kernel thread counts before NumPy and the kernels load (0 keeps the environment's)
    and put the repo on the path."""
    if no_malloc_tune:
        os.environ["NITRO_MCU_MALLOC_TUNE"] = "0"
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NITRO_MCU_THREADS"):
            os.environ[var] = str(threads)
    sys.path.insert(0, str(REPO))


def load_images(data_dir, input_shape, seed: int):
    """Prepared int8 data of the model's input shape: MNIST (else the bundled subset), or for a [3, 32, 32] input
    the same digits padded to 32 x 32 on three channels (no CIFAR-10 on disk; the trainer's cost does not depend on
    what the pictures show).  Returns (Prepared, description)."""
    import numpy as np

    from nitro_mcu.trainer.data import Dataset, load_dataset, prepare

    data_dir = Path(data_dir)
    if any(data_dir.glob("train-images*")):
        ds, source = load_dataset("mnist", data_dir), f"MNIST from {data_dir}"
    else:
        ds, source = load_dataset("bundled"), "bundled dataset"
    c, h, w = image_shape(input_shape)
    if (c, h, w) != (1, 28, 28):
        def fit(x):
            ph, pw = (h - 28) // 2, (w - 28) // 2
            out = np.zeros((len(x), c, h, w), np.uint8)
            out[:, :, ph:ph + 28, pw:pw + 28] = x
            return out
        ds = Dataset(f"{ds.name}-{c}x{h}x{w}", fit(ds.x_train), ds.y_train, fit(ds.x_test), ds.y_test, ds.num_classes)
        source += f", padded to {c}x{h}x{w}"
    return prepare(ds, seed), source


def image_shape(input_shape) -> tuple:
    """[C, H, W] of a CNN input; an MLP's flat 784 / 3072 inputs are the 1x28x28 / 3x32x32 pictures they see."""
    if len(input_shape) == 3:
        return tuple(input_shape)
    return {784: (1, 28, 28), 3072: (3, 32, 32)}[int(input_shape[0])]


class IntegerRun:
    """One model's timing harness: warm-up, snapshot, timed replays of fixed batches, the pure-int64 check."""

    def __init__(self, model, data, batch: int, warm: int, steps: int):
        n = len(data.x_train)
        self.model, self.bs, self.epoch_steps = model, batch, n // batch
        self.perm = data.rng.permutation(n)
        self.data = data
        self.lr = model.spec["lr_inv"]
        t0 = time.perf_counter()
        for i in range(warm):
            model.train_step(*self.batch(i), self.lr)
        self.warm_sps = warm * batch / (time.perf_counter() - t0) if warm else float("nan")
        self.snap = ({k: v.copy() for k, v in model.weights.items()}, model.dropout_rng.state)
        self.warm = warm
        self.time_steps(steps)

    def time_steps(self, steps: int) -> None:
        """The batches every timed run trains: the ``steps`` after the warm-up's."""
        self.timed = [self.batch(self.warm + i) for i in range(steps)]
        self.chunk_best = float("inf")

    def batch(self, i):
        j = (i % self.epoch_steps) * self.bs
        idx = self.perm[j:j + self.bs]
        return self.data.x_train[idx], self.data.y_train[idx]

    def run(self, steps: int, chunk: int = 10):
        """Train ``steps`` timed batches from the snapshot -> (seconds, final weights)."""
        m = self.model
        m.load_weights({k: v.copy() for k, v in self.snap[0].items()})
        m.dropout_rng.state = self.snap[1]
        t = time.perf_counter()
        for i in range(0, steps, chunk):
            tc = time.perf_counter()
            part = self.timed[i:min(i + chunk, steps)]
            for x, y in part:
                m.train_step(x, y, self.lr)
            self.chunk_best = min(self.chunk_best, (time.perf_counter() - tc) / len(part))
        return time.perf_counter() - t, {k: v.copy() for k, v in m.weights.items()}

    def same_as_int64(self, steps: int):
        """(identical?, int64 samples/s): the fast path against ``gemm.FORCE_INT64`` over ``steps`` batches."""
        import numpy as np

        from nitro_mcu.trainer import gemm

        _, w_fast = self.run(steps)
        old = gemm.FORCE_INT64
        gemm.FORCE_INT64 = True
        try:
            t64, w64 = self.run(steps)
        finally:
            gemm.FORCE_INT64 = old
        same = all(np.array_equal(w_fast[k], w64[k]) and w_fast[k].dtype == w64[k].dtype for k in w_fast)
        return same, steps * self.bs / t64

    def max_fwd_weight(self) -> int:
        import numpy as np

        return max(int(np.abs(v.astype(np.int64)).max()) for k, v in self.snap[0].items() if k.endswith(".fwd"))


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads, args.no_malloc_tune)
    import numpy as np

    from nitro_mcu.spec import preset
    from nitro_mcu.trainer.malloc import tune_malloc
    from nitro_mcu.trainer.network import Model

    data, source = load_images(args.data_dir, [1, 28, 28], args.seed)
    bs = args.batch
    epoch_steps = len(data.x_train) // bs
    warm = epoch_steps if args.warmup_steps is None else args.warmup_steps
    n64 = args.steps if args.int64_steps is None else min(args.int64_steps, args.steps)
    print(environment(np))
    print(f"malloc tuning (trainer.malloc.tune_malloc): {'on' if tune_malloc() else 'off'}")
    print(f"data: {source}, {len(data.x_train)} training images; batch {bs}; warm-up {warm} steps; "
          f"timed {args.steps} steps x {args.repeats} (best); profile {args.profile}, int{args.weight_bits} weights")

    rows = []
    all_ok = True
    for name in [m for m in args.models.split(",") if m]:
        model = Model(preset(name), args.profile, weight_bits=args.weight_bits, seed=args.seed)
        run = IntegerRun(model, data, bs, warm, args.steps)
        best = min(run.run(args.steps)[0] for _ in range(args.repeats))
        row = dict(model=name, warm_sps=run.warm_sps, fast_sps=args.steps * bs / best, chunk_sps=bs / run.chunk_best,
                   wmax=run.max_fwd_weight(), int64_sps=float("nan"), same="skipped")
        if not args.no_int64:
            same, sps64 = run.same_as_int64(n64)
            all_ok &= same
            row.update(int64_sps=sps64, same="yes" if same else "NO")
        rows.append(row)
        print(f"  {name}: {row['fast_sps']:,.0f} samples/s (best 10-step chunk {row['chunk_sps']:,.0f})", flush=True)

    print()
    hdr = f"{'model':<10} {'fast samples/s':>15} {'best chunk':>11} {'int64 samples/s':>16} {'speed-up':>9} {'warm-up sps':>12} " \
          f"{'max|W_fwd|':>11} {'identical':>10}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['model']:<10} {r['fast_sps']:>15,.0f} {r['chunk_sps']:>11,.0f} {r['int64_sps']:>16,.0f} "
              f"{r['fast_sps'] / r['int64_sps']:>8.2f}x {r['warm_sps']:>12,.0f} {r['wmax']:>11,d} {r['same']:>10}")
    if not all_ok:
        print("ERROR: the fast path and the pure-int64 path gave different weights")
        return 1
    return 0


def environment(np) -> str:
    """Two lines: NumPy and its BLAS, the BLAS thread count, the CPUs and the load average."""
    return (f"numpy {np.__version__}; BLAS: {_blas_info(np)}\n"
            f"BLAS threads: {_blas_threads()}  (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
            f"integer kernels NITRO_MCU_THREADS={os.environ.get('NITRO_MCU_THREADS')}, "
            f"cpus={os.cpu_count()}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})")


def _blas_info(np) -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def _openblas():
    """ctypes handle on the OpenBLAS that NumPy loaded (wheel: numpy.libs/; else the configured lib dir)."""
    import ctypes

    import numpy as np

    dirs = [Path(np.__file__).resolve().parent.parent / "numpy.libs"]
    try:
        dirs.append(Path(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["lib directory"]))
    except Exception:  # noqa: BLE001
        pass
    for d in dirs:
        for lib in sorted(d.glob("lib*openblas*.so*")):
            try:
                return ctypes.CDLL(str(lib))
            except OSError:
                continue
    return None


def _blas_call(kind: str, *args):
    h = _openblas()
    if h is None:
        return None
    for sym in (f"scipy_openblas_{kind}_num_threads64_", f"openblas_{kind}_num_threads64_",
                f"openblas_{kind}_num_threads"):
        fn = getattr(h, sym, None)
        if fn is not None:
            return fn(*args)
    return None


def _blas_threads() -> str:
    """The OpenBLAS thread count, read from the loaded library itself where possible."""
    try:
        n = _blas_call("get")
        if n is not None:
            return str(n)
    except Exception:  # noqa: BLE001
        pass
    return os.environ.get("OPENBLAS_NUM_THREADS", "library default")


if __name__ == "__main__":
    sys.exit(main())
