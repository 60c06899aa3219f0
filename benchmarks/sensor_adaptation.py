#!/usr/bin/env python
"""A changed mounting met on the device: BasicMotions activity windows, the watch turned by 90 degrees
(docs/sensors.md).  Shares its search and device runs with benchmarks/adaptation.py.

    python benchmarks/sensor_adaptation.py [--seeds 3] [--seed-base 42] [--out benchmarks/results/sensor_adaptation]

Data: BasicMotions (nitro_mcu/trainer/data/sensors.py; pip install sktime), 80 recordings of 4 activities, int16
fixed-point windows of 6 channels x 32 samples (5 per recording).  Splits are by recording, stratified by class,
drawn by the seed; windows of one recording never straddle two splits.

Per seed:
1. **Factory model** (host): ``motion_mlp`` (192-64-32-4, int16) on the archive's TRAIN recordings in the
   original mounting, 32 for training and 8 for validation; lr_inv and the epoch count chosen on validation.
2. **The product meets a new mounting**: the archive's TEST recordings, rotated ((x, y, z) -> (y, -x, z) for
   the accelerometer and the gyroscope), split into 12 recordings the device collects (labelled), 8 for
   validation and 20 for the test, normalised with the factory statistics (what the device's normalisation
   of raw int16 readings computes).
3. **No adaptation**; **tail-only on the device** (block1, output train; block0 is a constant in flash);
   **full on the device** (every block); batch 8; lr_inv and epochs chosen on the validation recordings with
   the Python reference (the device's arithmetic bit for bit); the chosen run executes on the emulated M4, its
   weights are compared with Python's and the device predicts the test windows.
4. **Host** (the ceiling): ``motion_mlp`` from scratch on the rotated training + device recordings with their
   own statistics, lr_inv and epochs chosen on the validation recordings.
The test windows are read once per method, at the end.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from adaptation import accuracy, epoch_order, mean_std, run_on_device, search  # noqa: E402
from nitro_mcu.codegen import convert  # noqa: E402
from nitro_mcu.device.harness import run_mcu  # noqa: E402
from nitro_mcu.device.protocol import Session  # noqa: E402
from nitro_mcu.fileio import write_files  # noqa: E402
from nitro_mcu.spec import preset  # noqa: E402
from nitro_mcu.trainer import data as D  # noqa: E402
from nitro_mcu.trainer.data.sensors import load_recordings, rotate_mounting, windows  # noqa: E402
from nitro_mcu.trainer.loop import format_bp  # noqa: E402
from nitro_mcu.trainer.network import Model  # noqa: E402
from nitro_mcu.trainer.rng import Rng  # noqa: E402

PRESET = "motion_mlp"
TAIL = ["block1", "output"]
HOST_LRS = (8, 16, 32, 64, 128)
TAIL_LRS = (8, 16, 32, 64, 128, 256)
FULL_LRS = (16, 32, 64, 128, 256, 512)
STREAM_SPLIT = 18


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=42)
    p.add_argument("--host-epochs", type=int, default=40)
    p.add_argument("--max-epochs", type=int, default=20, help="device epochs at most")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sensor_adaptation"))
    return p.parse_args(argv)


def stratified(rng: Rng, idx: np.ndarray, y: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Recordings ``idx`` split into parts of ``sizes`` recordings per class, shuffled by ``rng``."""
    parts = [[] for _ in sizes]
    for c in range(int(y.max()) + 1):
        mine = idx[y[idx] == c]
        mine = mine[rng.permutation(len(mine))]
        o = 0
        for k, n in enumerate(sizes):
            parts[k] += mine[o:o + n].tolist()
            o += n
    return [np.asarray(sorted(p)) for p in parts]


def as_windows(rec, ids, rotate=False):
    x = rec["x"][ids]
    x = rotate_mounting(x) if rotate else x
    w, y, _ = windows(x, rec["y"][ids])
    return w.astype(np.int64)[:, :, None, None], y


def host_train(seed, train, val, lrs, max_epochs):
    """``motion_mlp`` from scratch, batch 8; (val_bp, lr, epochs, model) chosen on ``val``."""
    pre = Model(preset(PRESET), "default", 16, seed=seed)
    order = epoch_order(seed, len(train[0]), max_epochs)
    v, lr, epochs, weights = search(pre, None, lrs, train, val, order, max_epochs)
    pre.weights = weights
    return v, lr, epochs, pre


def device_cost(pre, trainable, sample_x, sample_y, name):
    """Flash, RAM (static + stack) and instructions per step (or per inference) on the M4."""
    train = trainable is not False
    m = copy.deepcopy(pre).set_trainable(trainable if train else None)
    conv = convert(m, batch=8, train=train, name=name)
    s = Session(int(np.prod(pre.input_shape)))
    if train:
        s.prof(1)
        for _ in range(2):
            s.train(sample_x[:8], sample_y[:8])
    else:
        s.prof(2)
        s.predict(sample_x[:4])
    r = run_mcu(conv, s, "m4", count_insns=True)
    return dict(flash=r.build.flash_bytes, ram=r.build.static_ram_bytes + (r.stack_bytes or 0),
                static=r.build.static_ram_bytes, stack=r.stack_bytes, model_ram=conv.plan.ram_bytes,
                insns=r.run.insns_region // max(1, r.run.regions))


def one_seed(a, seed, log, costs):
    t0 = time.perf_counter()
    rec = load_recordings()
    rng = Rng(seed, STREAM_SPLIT)
    tr_ids, te_ids = np.flatnonzero(rec["part"] == "train"), np.flatnonzero(rec["part"] == "test")
    src_tr, src_val = stratified(rng, tr_ids, rec["y"], [8, 2])
    dev_ids, val_ids, test_ids = stratified(rng, te_ids, rec["y"], [3, 2, 5])

    # the factory model, original mounting, its own statistics
    xs, ys = as_windows(rec, src_tr)
    mu, mad = D.compute_norm_stats(xs)
    src_norm = lambda x: D.normalize(x, mu, mad)  # noqa: E731
    xv, yv = as_windows(rec, src_val)
    sv, slr, sep, pre = host_train(seed, (src_norm(xs), ys), (src_norm(xv), yv), HOST_LRS, a.host_epochs)
    log(f"seed {seed}: factory model val {format_bp(sv)} % (lr_inv {slr}, {sep} epochs), "
        f"{time.perf_counter() - t0:.0f} s")

    # the rotated mounting, through the factory statistics
    dx, dy = as_windows(rec, dev_ids, True)
    vx, vy = as_windows(rec, val_ids, True)
    tx, ty = as_windows(rec, test_ids, True)
    dev, val, test = (src_norm(dx), dy), (src_norm(vx), vy), (src_norm(tx), ty)
    order = epoch_order(seed, len(dev[0]), a.max_epochs)
    row = dict(seed=seed, src_val_bp=sv, src_lr_inv=slr, src_epochs=sep, none_bp=accuracy(pre, *test),
               original_test_bp=accuracy(pre, *(lambda w: (src_norm(w[0]), w[1]))(as_windows(rec, test_ids))))
    for key, trainable, lrs in (("tail", TAIL, TAIL_LRS), ("full_device", None, FULL_LRS)):
        v, lr, epochs, twin = search(pre, trainable, lrs, dev, val, order, a.max_epochs)
        cls, dev_w, secs, steps = run_on_device(pre, trainable, lr, epochs, dev, order, test, None, f"sa_{key}")
        twin_m = copy.deepcopy(pre)
        twin_m.weights = twin
        exact = all(np.array_equal(w, twin[k]) for k, w in dev_w.items()) and \
            np.array_equal(cls, np.argmax(twin_m.forward(test[0]), axis=1))
        row[key] = dict(val_bp=v, lr_inv=lr, epochs=epochs, steps=steps,
                        test_bp=int(np.sum(cls == test[1])) * 10000 // len(test[1]), bit_exact=bool(exact),
                        emulator_s=round(secs, 1))
        log(f"  {key}: lr_inv {lr}, {epochs} epoch(s) ({steps} steps), val {format_bp(v)} %; device test "
            f"{format_bp(row[key]['test_bp'])} %, bit-exact {exact}")

    # the ceiling: the rotated data from scratch, its own statistics
    hx = np.concatenate([as_windows(rec, src_tr, True)[0], dx])
    hy = np.concatenate([as_windows(rec, src_tr, True)[1], dy])
    hmu, hmad = D.compute_norm_stats(hx)
    hv, hlr, hep, host = host_train(seed, (D.normalize(hx, hmu, hmad), hy), (D.normalize(vx, hmu, hmad), vy),
                                    HOST_LRS, a.host_epochs)
    row["host"] = dict(val_bp=hv, lr_inv=hlr, epochs=hep, test_bp=accuracy(host, D.normalize(tx, hmu, hmad), ty))
    log(f"  none {format_bp(row['none_bp'])} % (original mounting {format_bp(row['original_test_bp'])} %), host "
        f"{format_bp(row['host']['test_bp'])} %; {time.perf_counter() - t0:.0f} s in all")
    if not costs:
        costs["none"] = device_cost(pre, False, test[0], test[1], "sa_cost_none")
        costs["tail"] = device_cost(pre, TAIL, dev[0], dev[1], "sa_cost_tail")
        costs["full_device"] = device_cost(pre, None, dev[0], dev[1], "sa_cost_full")
    return row


def markdown(rows, costs, argv):
    methods = [("none", "no adaptation", lambda r: r["none_bp"]),
               ("tail", "tail-only on the device (block1, output)", lambda r: r["tail"]["test_bp"]),
               ("full_device", "full on-device training", lambda r: r["full_device"]["test_bp"]),
               ("host", "host, from scratch on the new mounting (the ceiling)", lambda r: r["host"]["test_bp"])]
    lines = [f"Command: `{' '.join(['python benchmarks/sensor_adaptation.py', *argv])}`", "",
             "| method | rotated-mounting test accuracy, mean ± σ | per seed | flash B | RAM B (static + stack) | "
             "instructions |", "|---|---|---|---|---|---|"]
    for key, label, get in methods:
        c = costs.get(key)
        cells = (f"{c['flash']:,} | {c['ram']:,} | {c['insns']:,}" +
                 (" per inference" if key == "none" else " per step (batch 8)")) if c else "– | – | – (host)"
        lines.append(f"| {label} | {mean_std([get(r) for r in rows])} | "
                     f"{' / '.join(format_bp(get(r)) for r in rows)} | {cells} |")
    lines += ["", "Factory model on the same test recordings in the original mounting: "
              f"{mean_std([r['original_test_bp'] for r in rows])}.  Every device run bit-exact (weights and test "
              f"predictions = Python): {all(r[k]['bit_exact'] for r in rows for k in ('tail', 'full_device'))}.", "",
              "| seed | factory lr_inv / epochs / val | tail lr_inv / epochs / val | full lr_inv / epochs / val | "
              "host lr_inv / epochs / val |", "|---|---|---|---|---|"]
    for r in rows:
        t, f, h = r["tail"], r["full_device"], r["host"]
        lines.append(f"| {r['seed']} | {r['src_lr_inv']} / {r['src_epochs']} / {format_bp(r['src_val_bp'])} | "
                     f"{t['lr_inv']} / {t['epochs']} / {format_bp(t['val_bp'])} | {f['lr_inv']} / {f['epochs']} / "
                     f"{format_bp(f['val_bp'])} | {h['lr_inv']} / {h['epochs']} / {format_bp(h['val_bp'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, costs = [], {}
    for k in range(a.seeds):
        rows.append(one_seed(a, a.seed_base + k, lambda m: print(m, flush=True), costs))
        write_files(out.parent, {out.with_suffix(".json").name: json.dumps(dict(rows=rows, costs=costs,
                                                                                 args=vars(a)), indent=1),
                                 out.with_suffix(".md").name: markdown(rows, costs, argv)})
    print(markdown(rows, costs, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
