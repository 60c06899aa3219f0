#!/usr/bin/env python
"""A new class learnt on the emulated Cortex-M4, with and without rehearsal (docs/new_classes.md).

    python benchmarks/new_classes.py [--data-dir DIR] [--seeds 3] [--seed-base 42] [--new-samples 64]
                                     [--per-class 4] [--max-epochs 8] [--out benchmarks/results/new_classes]

Per seed:
1. **Factory model.** mlp1's architecture (784-100-50, int16 weights) with 9 classes trains on the host on the
   MNIST digits 0..8 of the seed's training split (batch 32, lr_inv 128, ``--pretrain-epochs`` epochs).
2. **Generated with one spare slot** (``convert(..., spare_classes=1, rehearsal=--per-class)``).  The device
   keeps ``--per-class`` exemplars of each old digit (the first of each in the training split) in its rehearsal
   flash, calls ``add_class()`` (slot 9) and meets ``--new-samples`` labelled 9s (the first of the training split).
3. **Without rehearsal**: ``train_batch`` on batches of 8 new samples.  **With rehearsal**: ``train_rehearsal``
   with 4 new samples and 4 exemplars drawn from flash per step.  Every block trains.  lr_inv (a grid) and the
   epochs over the new samples (1..``--max-epochs``) are chosen on the validation split (the mean of the
   old-digit accuracy and the new-digit accuracy) with the Python reference, which is the device's arithmetic
   bit for bit; the chosen run then executes on the emulated M4 (QEMU), its weights are compared with Python's
   and the device predicts the first ``--device-test`` test images, compared with Python's predictions.
4. The test set is read once per method, at the end: accuracy on the old digits (0..8) and on the new one (9).

Instructions are counted on the M4 per training step; flash and RAM from the ELF and the painted stack, with the
harness's RAM copy of the rehearsal flash region taken out (on a part it is flash).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nitro_mcu import api  # noqa: E402
from nitro_mcu.codegen import convert  # noqa: E402
from nitro_mcu.device.harness import rehearsal_region_bytes, run_mcu  # noqa: E402
from nitro_mcu.device.protocol import Session  # noqa: E402
from nitro_mcu.fileio import write_files  # noqa: E402
from nitro_mcu.spec import preset  # noqa: E402
from nitro_mcu.trainer.classes import Rehearsal, add_class, train_step_rehearsal, with_spare_classes  # noqa: E402
from nitro_mcu.trainer.loop import format_bp  # noqa: E402
from nitro_mcu.trainer.network import Model  # noqa: E402
from nitro_mcu.trainer.rng import Rng  # noqa: E402

OLD, NEW = 9, 9          # digits 0..8 are known, 9 is added on the device
BATCH = 8
LRS = (128, 512, 2048)
CURVE_LR = 512  # the forgetting curve's lr_inv (validation split)
STREAM_ORDER = 17


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets" / "mnist"),
                   help="folder of the MNIST IDX files (default: ../shared/datasets/mnist)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=42)
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--new-samples", type=int, default=64, help="labelled samples of the new class on the device")
    p.add_argument("--per-class", type=int, default=4, help="rehearsal exemplars per old class")
    p.add_argument("--max-epochs", type=int, default=8, help="epochs over the new samples at most")
    p.add_argument("--device-test", type=int, default=500, help="test images the device predicts (bit-exactness)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "new_classes"))
    return p.parse_args(argv)


def acc_bp(model, x, y) -> int:
    return int(np.sum(model.predict(x) == y)) * 10000 // max(1, len(y))


def split_acc(model, x, y) -> tuple[int, int]:
    """(old-class accuracy, new-class accuracy) in basis points."""
    old = y < OLD
    return acc_bp(model, x[old], y[old]), acc_bp(model, x[~old], y[~old])


def pretrain(seed, data, epochs):
    spec = dict(preset("mlp1"), num_classes=OLD)
    spec.pop("recipe", None)
    m = Model(spec, "default", 16, seed=seed)
    keep = data.y_train < OLD
    x, y = data.x_train[keep], data.y_train[keep].astype(np.int64)
    rng = Rng(seed, STREAM_ORDER + 1)
    for _ in range(epochs):
        perm = rng.permutation(len(x))
        for b in range(0, len(perm) - 31, 32):
            m.train_step(x[perm[b:b + 32]], y[perm[b:b + 32]], 128)
    return m


def steps(method, new_x, epochs):
    """The device's steps: (indices of new samples, k exemplars) in order."""
    per = BATCH if method == "plain" else BATCH // 2
    out = []
    for _ in range(epochs):
        for b in range(0, len(new_x) - per + 1, per):
            out.append((np.arange(b, b + per), 0 if method == "plain" else BATCH - per))
    return out


def run_python(pre, method, lr, epochs, new, exemplars, per_class, on_epoch=None):
    m = with_spare_classes(pre, 1)
    buf = Rehearsal(m, per_class)
    for x, label in exemplars:
        buf.add(x, label)
    add_class(m)
    per_epoch = len(steps(method, new[0], 1))
    for i, (idx, k) in enumerate(steps(method, new[0], epochs)):
        if k:
            train_step_rehearsal(m, buf, new[0][idx], new[1][idx], k, lr)
        else:
            m.train_step(new[0][idx], new[1][idx], lr)
        if on_epoch and (i + 1) % per_epoch == 0:
            on_epoch((i + 1) // per_epoch, m)
    return m


def run_device(pre, method, lr, epochs, new, exemplars, per_class, x_test):
    conv = convert(pre, batch=BATCH, train=True, name=f"nc_{method}", spare_classes=1, rehearsal=per_class)
    s = Session(int(np.prod(pre.input_shape)))
    s.lr(lr)
    s.rehearsal_clear()
    for x, label in exemplars:
        s.rehearsal_add(x, label)
    s.add_class()
    s.prof(1)
    n = 0
    for idx, k in steps(method, new[0], epochs):
        if k:
            s.train_rehearsal(new[0][idx], new[1][idx], k)
        else:
            s.train(new[0][idx], new[1][idx])
        n += 1
    s.prof(0)
    s.weights()
    s.predict(x_test)
    r = run_mcu(conv, s, "m4", count_insns=True, timeout=3600)
    region = rehearsal_region_bytes(conv)
    cost = dict(flash=r.build.flash_bytes, static=r.build.static_ram_bytes - region, stack=r.stack_bytes,
                insns=r.run.insns_region // max(1, n))
    return r.results[-1][1], r.results[-2].weights, cost


def one_seed(a, seed, log):
    t0 = time.perf_counter()
    data = api.load_data("mnist", seed, a.data_dir)
    pre = pretrain(seed, data, a.pretrain_epochs)
    yt = data.y_train.astype(np.int64)
    exemplars = [(data.x_train[i], c) for c in range(OLD) for i in np.flatnonzero(yt == c)[:a.per_class]]
    new_idx = np.flatnonzero(yt == NEW)[:a.new_samples]
    new = (data.x_train[new_idx], yt[new_idx])
    xv, yv = data.x_val, data.y_val.astype(np.int64)
    row = dict(seed=seed, curves={})
    log(f"seed {seed}: pretrained on digits 0..8 in {time.perf_counter() - t0:.0f} s")
    for method in ("plain", "rehearsal"):
        best = None
        curves = row["curves"][method] = {}
        for lr in LRS:
            curves[str(lr)] = []

            def on_epoch(e, m, lr=lr):
                nonlocal best
                o, nw = split_acc(m, xv, yv)
                curves[str(lr)].append([o, nw])
                cand = ((o + nw) // 2, -e, -LRS.index(lr))
                if best is None or cand > best[0]:
                    best = (cand, lr, e, o, nw)
            run_python(pre, method, lr, a.max_epochs, new, exemplars, a.per_class, on_epoch)
        (val, _, _), lr, epochs, vo, vn = best
        twin = run_python(pre, method, lr, epochs, new, exemplars, a.per_class)
        cls, dev_w, cost = run_device(pre, method, lr, epochs, new, exemplars, a.per_class,
                                      data.x_test[:a.device_test])
        exact = all(np.array_equal(w, twin.weights[k]) for k, w in dev_w.items()) and \
            np.array_equal(cls, twin.predict(data.x_test[:a.device_test]))
        old_bp, new_bp = split_acc(twin, data.x_test, data.y_test.astype(np.int64))
        row[method] = dict(lr_inv=lr, epochs=epochs, steps=len(steps(method, new[0], epochs)), val_bp=val,
                           old_bp=old_bp, new_bp=new_bp, bit_exact=bool(exact), cost=cost)
        log(f"  {method}: lr_inv {lr}, {epochs} epoch(s), val old {format_bp(vo)} new {format_bp(vn)}; test old "
            f"{format_bp(old_bp)} % new {format_bp(new_bp)} %; bit-exact {exact}")
    row["before_old_bp"] = split_acc(pre, data.x_test[data.y_test < OLD], data.y_test[data.y_test < OLD]
                                     .astype(np.int64))[0]
    log(f"  before: old {format_bp(row['before_old_bp'])} %; {time.perf_counter() - t0:.0f} s in all")
    return row


def ms(vals):
    vals = [v / 100 for v in vals]
    return f"{statistics.mean(vals):.2f} ± {statistics.pstdev(vals) if len(vals) > 1 else 0.0:.2f}"


def markdown(rows, argv):
    lines = [f"Command: `python benchmarks/new_classes.py {' '.join(argv)}`", "",
             "| | old digits 0..8, test % (mean ± σ) | new digit 9, test % | lr_inv / epochs / steps per seed | "
             "flash B | static RAM B | stack B | instructions per step |", "|---|---|---|---|---|---|---|---|"]
    lines.append(f"| factory model, before | {ms([r['before_old_bp'] for r in rows])} | 0 (no slot active) | – | – | "
                 "– | – | – |")
    for method, label in (("plain", "new class, no rehearsal"), ("rehearsal", "new class **with rehearsal**")):
        c = rows[0][method]["cost"]
        hp = "; ".join(f"{r[method]['lr_inv']} / {r[method]['epochs']} / {r[method]['steps']}" for r in rows)
        lines.append(f"| {label} | {ms([r[method]['old_bp'] for r in rows])} | {ms([r[method]['new_bp'] for r in rows])}"
                     f" | {hp} | {c['flash']:,} | {c['static']:,} | {c['stack']:,} | {c['insns']:,} (batch {BATCH}) |")
    exact = all(r[m]["bit_exact"] for r in rows for m in ("plain", "rehearsal"))
    lines += ["", f"Forgetting as training goes on (validation split, mean over the seeds, lr_inv {CURVE_LR}): "
              "old digits / new digit after each epoch over the new samples.", "",
              "| epoch | " + " | ".join(f"{e}" for e in range(1, len(rows[0]['curves']['plain'][str(CURVE_LR)]) + 1))
              + " |", "|---|" + "---|" * len(rows[0]["curves"]["plain"][str(CURVE_LR)])]
    for method, label in (("plain", "no rehearsal"), ("rehearsal", "with rehearsal")):
        cells = []
        for e in range(len(rows[0]["curves"][method][str(CURVE_LR)])):
            o = statistics.mean(r["curves"][method][str(CURVE_LR)][e][0] for r in rows) / 100
            n = statistics.mean(r["curves"][method][str(CURVE_LR)][e][1] for r in rows) / 100
            cells.append(f"{o:.1f} / {n:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Seeds {', '.join(str(r['seed']) for r in rows)}; every device run bit-exact (weights and "
              f"predictions = Python): {exact}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(a.seeds):
        rows.append(one_seed(a, a.seed_base + k, lambda m: print(m, flush=True)))
        write_files(out.parent, {out.with_suffix(".json").name: json.dumps(dict(rows=rows, args=vars(a)), indent=1),
                                 out.with_suffix(".md").name: markdown(rows, argv)})
    print(markdown(rows, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
