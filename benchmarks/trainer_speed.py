#!/usr/bin/env python
"""Training throughput of the NumPy trainer (samples/s, batch 64) on MNIST, fast path vs pure int64.

    python benchmarks/trainer_speed.py [--data-dir DIR] [--models mlp1,cnn_small,mcu_cnn]
                                       [--threads N] [--warmup-steps N] [--steps N] [--repeats N]

Method: each model first trains ``--warmup-steps`` steps (default: one epoch) so that its weights reach
a realistic size (forward-layer weights in the thousands, where the float32 GEMM path no longer applies
and float64 does).  That state is snapshotted; then the same ``--steps`` batches are trained from the
snapshot ``--repeats`` times and the best time is reported.  The pure-int64 path
(``gemm.FORCE_INT64 = True``) then trains the same batches from the same snapshot once, and the two
final weight sets must be bit-identical.

``--threads`` sets the OpenBLAS thread count (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, before NumPy is
imported).  The default is 1: these GEMMs are small, and on a shared 2-core machine OpenBLAS's spinning
worker threads collapse under load (2-5x slower); ``--threads 0`` keeps the environment/library default.
The benchmark opts in to :func:`nitro_mcu.trainer.malloc.tune_malloc`; ``--no-malloc-tune`` disables it
(NITRO_MCU_MALLOC_TUNE=0).
Besides the best full run, the best 10-step chunk is reported: less sensitive to other processes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.no_malloc_tune:
        os.environ["NITRO_MCU_MALLOC_TUNE"] = "0"
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    sys.path.insert(0, str(REPO))
    import numpy as np

    from nitro_mcu.spec import preset
    from nitro_mcu.trainer import gemm
    from nitro_mcu.trainer.data import load_dataset, prepare
    from nitro_mcu.trainer.malloc import tune_malloc
    from nitro_mcu.trainer.network import Model

    data_dir = Path(args.data_dir)
    if any(data_dir.glob("train-images*")):
        ds = load_dataset("mnist", data_dir)
        source = f"MNIST from {data_dir}"
    else:
        print(f"note: no MNIST under {data_dir}; using the bundled dataset instead")
        ds = load_dataset("bundled")
        source = "bundled dataset"
    data = prepare(ds, args.seed)
    n = len(data.x_train)
    bs = args.batch
    epoch_steps = n // bs
    warm = epoch_steps if args.warmup_steps is None else args.warmup_steps
    perm = data.rng.permutation(n)

    def batch(i):
        j = (i % epoch_steps) * bs
        idx = perm[j:j + bs]
        return data.x_train[idx], data.y_train[idx]

    timed = [batch(warm + i) for i in range(args.steps)]
    n64 = args.steps if args.int64_steps is None else min(args.int64_steps, args.steps)

    print(f"numpy {np.__version__}; BLAS: {_blas_info(np)}")
    print(f"BLAS threads: {_blas_threads()}  (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"cpus={os.cpu_count()}, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})")
    print(f"malloc tuning (trainer.malloc.tune_malloc): {'on' if tune_malloc() else 'off'}")
    print(f"data: {source}, {n} training images; batch {bs}; warm-up {warm} steps; "
          f"timed {args.steps} steps x {args.repeats} (best); profile {args.profile}, int{args.weight_bits} weights")

    rows = []
    all_ok = True
    for name in [m for m in args.models.split(",") if m]:
        model = Model(preset(name), args.profile, weight_bits=args.weight_bits, seed=args.seed)
        lr = model.spec["lr_inv"]
        t0 = time.perf_counter()
        for i in range(warm):
            model.train_step(*batch(i), lr)
        t_warm = time.perf_counter() - t0
        snap = ({k: v.copy() for k, v in model.weights.items()}, model.dropout_rng.state)
        wmax = max(int(np.abs(v.astype(np.int64)).max()) for k, v in model.weights.items() if k.endswith(".fwd"))

        chunk_best = [float("inf")]

        def run(steps, chunk=10):
            model.load_weights({k: v.copy() for k, v in snap[0].items()})
            model.dropout_rng.state = snap[1]
            t = time.perf_counter()
            for i in range(0, steps, chunk):
                tc = time.perf_counter()
                part = timed[i:min(i + chunk, steps)]
                for x, y in part:
                    model.train_step(x, y, lr)
                chunk_best[0] = min(chunk_best[0], (time.perf_counter() - tc) / len(part))
            return time.perf_counter() - t, {k: v.copy() for k, v in model.weights.items()}

        best = min(run(args.steps)[0] for _ in range(args.repeats))
        fast_sps = args.steps * bs / best
        chunk_sps = bs / chunk_best[0]
        row = dict(model=name, warm_sps=warm * bs / t_warm if warm else float("nan"), fast_sps=fast_sps,
                   chunk_sps=chunk_sps,
                   wmax=wmax, int64_sps=float("nan"), same="skipped")
        if not args.no_int64:
            _, w_fast = run(n64)
            old = gemm.FORCE_INT64
            gemm.FORCE_INT64 = True
            try:
                t64, w64 = run(n64)
            finally:
                gemm.FORCE_INT64 = old
            same = all(np.array_equal(w_fast[k], w64[k]) and w_fast[k].dtype == w64[k].dtype for k in w_fast)
            all_ok &= same
            row.update(int64_sps=n64 * bs / t64, same="yes" if same else "NO")
        rows.append(row)
        print(f"  {name}: {fast_sps:,.0f} samples/s (best 10-step chunk {chunk_sps:,.0f})", flush=True)

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
