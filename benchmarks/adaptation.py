#!/usr/bin/env python
"""On-device adaptation: an MNIST-pretrained mcu_cnn meets FashionMNIST on the emulated Cortex-M4 (docs/adaptation.md).

    python benchmarks/adaptation.py [--data-dir DIR] [--seeds 3] [--seed-base 42] [--src-epochs 10]
                                    [--device-samples 4000] [--max-epochs 10] [--host-epochs 15]
                                    [--out benchmarks/results/adaptation] [--resume]

Per seed:
1. **Source.** mcu_cnn (int16 weights) trains on the host on MNIST (batch 64, the preset's hyper-parameters, a
   validation split driving the schedule and the kept epoch).
2. **Target.** FashionMNIST's training images are split by the seed into a validation split (the last 10 %)
   and a pool; the device collects the first ``--device-samples`` images of the pool.  The device's inputs are
   the raw pixels normalised with the *source* model's statistics: the integers the generated
   ``normalize_u8`` computes from raw bytes (tests/test_adaptation.py checks the two agree), so every device
   method sees the target through the source statistics.  The 10,000 test images are read once per method, at the end.
3. **No adaptation**: the pretrained model on the target test set.
4. **Tail-only on the device**: fc0 and output train (``trainable=["fc0", "output"]``), the conv blocks are
   frozen constants in flash; batch 8.  **Full on-device training**: every block trains from the
   pretrained weights, batch 8.  For both, lr_inv (a grid) and the number of epochs (1..``--max-epochs``) are
   chosen on the validation split with the Python trainer, which computes the device's arithmetic bit for bit
   on the same batches; then the chosen run executes on the emulated M4 (QEMU), its final weights are compared
   with Python's, and the device itself predicts the whole target test set.
5. **Full host training**: mcu_cnn from scratch on the whole pool with the target's own statistics, batch 64,
   at most ``--host-epochs`` epochs, the preset's lr_inv with the plateau schedule and the kept epoch chosen
   on the validation split: the ceiling.

Reported per method: target test accuracy (mean ± population std over the seeds), and on the M4 the flash,
RAM (static from the ELF + the painted stack) and instructions per training step (per inference without
adaptation).  The recovery is (tail - none) / (host - none), per seed and of the means; the target is >= 0.5
within 64 KB of RAM, bit-exact.  Results go to ``<out>.md`` and ``<out>.json`` after every seed; ``--resume``
keeps the seeds ``<out>.json`` already holds (when it was run with the same settings) and runs only the rest.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nitro_mcu import api  # noqa: E402
from nitro_mcu.codegen import convert  # noqa: E402
from nitro_mcu.device.harness import run_mcu  # noqa: E402
from nitro_mcu.device.protocol import Session  # noqa: E402
from nitro_mcu.device.report import report  # noqa: E402
from nitro_mcu.fileio import write_files  # noqa: E402
from nitro_mcu.trainer import data as D  # noqa: E402
from nitro_mcu.trainer.loop import format_bp, prefix_cache  # noqa: E402
from nitro_mcu.trainer.malloc import tune_malloc  # noqa: E402
from nitro_mcu.trainer.rng import Rng  # noqa: E402

TAIL = ["fc0", "output"]
DEVICE_BATCH = 8
TAIL_LRS = (32, 64, 128, 256, 512)
FULL_LRS = (128, 256, 512, 1024)
STREAM_ORDER = 17  # the PRNG stream of the device's batch order (any stream the trainer does not use)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"),
                   help="folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-base", type=int, default=42)
    p.add_argument("--src-epochs", type=int, default=10, help="source (MNIST) pretraining epochs at most")
    p.add_argument("--device-samples", type=int, default=4000, help="target images the device trains on")
    p.add_argument("--max-epochs", type=int, default=10, help="device epochs at most (chosen on validation)")
    p.add_argument("--host-epochs", type=int, default=15, help="full host training epochs at most")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "adaptation"))
    p.add_argument("--resume", action="store_true", help="keep the seeds <out>.json holds; run only the missing ones")
    return p.parse_args(argv)


SETTINGS = ("data_dir", "src_epochs", "device_samples", "max_epochs", "host_epochs")  # what a kept seed must share


def resumed(a, path: Path) -> tuple[list[dict], dict]:
    """The rows and costs of an earlier run with the same settings (empty without --resume or a file)."""
    if not (a.resume and path.exists()):
        return [], {}
    old = json.loads(path.read_text())
    diff = [k for k in SETTINGS if old["args"].get(k) != getattr(a, k)]
    if diff:
        sys.exit(f"adaptation: cannot resume {path}: it was run with other {', '.join(diff)}")
    return old["rows"], old["costs"]


def epoch_order(seed: int, n: int, epochs: int) -> list[np.ndarray]:
    """The device's batch order: one permutation of its n samples per epoch (full batches only)."""
    rng = Rng(seed, STREAM_ORDER)
    return [rng.permutation(n)[: n // DEVICE_BATCH * DEVICE_BATCH] for _ in range(epochs)]


def accuracy(model, x, y, features=False) -> int:
    pred = np.concatenate([np.argmax(model.forward(x[i:i + 512], features=features), axis=1)
                           for i in range(0, len(x), 512)])
    return int(np.sum(pred == y)) * 10000 // len(y)


def search(pre, trainable, lrs, dev, val, order, max_epochs):
    """Train the Python twin of the device for every lr_inv, evaluating the validation split after every
    epoch; returns the best (val_bp, lr_inv, epochs, weights) (ties: fewer epochs, then the earlier lr)."""
    best = None
    for lr in lrs:
        m = copy.deepcopy(pre).set_trainable(trainable)
        fx, fv = prefix_cache(m, dev[0]), prefix_cache(m, val[0])
        feats = fx is not None
        xs, xv = (fx, fv) if feats else (dev[0], val[0])
        for e in range(max_epochs):
            perm = order[e]
            for b in range(0, len(perm), DEVICE_BATCH):
                idx = perm[b:b + DEVICE_BATCH]
                m.train_step(xs[idx], dev[1][idx], lr, features=feats)
            v = accuracy(m, xv, val[1], feats)
            cand = (v, -(e + 1), -lrs.index(lr))
            if best is None or cand > best[0]:
                best = (cand, lr, e + 1, {k: w.copy() for k, w in m.weights.items()})
    (v, _, _), lr, epochs, weights = best
    return v, lr, epochs, weights


def run_on_device(pre, trainable, lr, epochs, dev, order, test, norm, name):
    """The chosen adaptation on the emulated M4, then the device predicts the whole test set."""
    m = copy.deepcopy(pre).set_trainable(trainable)
    conv = convert(m, batch=DEVICE_BATCH, train=True, name=name, norm=norm)
    s = Session(int(np.prod(m.input_shape)))
    s.lr(lr)
    for e in range(epochs):
        for b in range(0, len(order[e]), DEVICE_BATCH):
            idx = order[e][b:b + DEVICE_BATCH]
            s.train(dev[0][idx], dev[1][idx])
    s.weights()
    s.predict(test[0])
    t0 = time.perf_counter()
    res = run_mcu(conv, s, "m4", timeout=3600).results
    return res[-1][1], res[-2].weights, time.perf_counter() - t0, len(order[0]) // DEVICE_BATCH * epochs


def device_costs(pre, norm, sample) -> dict:
    """Flash, RAM (static + stack) and instructions on the M4 of each device method (seed-independent)."""
    out = {}
    for key, trainable in (("tail", TAIL), ("full_device", None)):
        r = report(pre, "m4", DEVICE_BATCH, sample, steps=2, predictions=2, per_layer=False, name=f"cost_{key}",
                   trainable=trainable)
        out[key] = dict(flash=r["flash_bytes"], ram=r["total_ram_bytes"], static=r["static_ram_bytes"],
                        stack=r["stack_bytes"], model_ram=r["model_ram_bytes"], insns=r["insns_per_train_step"])
    conv = convert(pre, name="cost_none", norm=norm)
    s = Session(int(np.prod(pre.input_shape)))
    s.prof(2)
    s.predict(sample.x_test[:4])
    r = run_mcu(conv, s, "m4", count_insns=True)
    out["none"] = dict(flash=r.build.flash_bytes, ram=r.build.static_ram_bytes + (r.stack_bytes or 0),
                       static=r.build.static_ram_bytes, stack=r.stack_bytes, model_ram=conv.plan.ram_bytes,
                       insns=r.run.insns_region // max(1, r.run.regions))
    return out


def one_seed(a, seed: int, log, costs: dict) -> dict:
    """One seed's row; fills ``costs`` (the device costs, the same for every seed) when it is empty."""
    t0 = time.perf_counter()
    dd = Path(a.data_dir)
    src = api.load_data("mnist", seed, dd / "mnist")
    pre = api.build("mcu_cnn", seed=seed)
    hist = api.train(pre, src, epochs=a.src_epochs, batch_size=64, progress=False)
    log(f"seed {seed}: source MNIST val {format_bp(hist.best_monitor_bp)} % (epoch {hist.best_epoch}), "
        f"{time.perf_counter() - t0:.0f} s")
    norm = dict(mu=[int(v) for v in src.mu], mad=[int(v) for v in src.mad])

    # the target through the source statistics (what the device's normalize_u8 gives)
    ds = D.load_dataset("fashion-mnist", dd / "fashion-mnist")
    host = D.prepare(ds, seed)  # the split (and the host ceiling's own statistics)
    pool = host.train_index
    dev_idx = pool[: a.device_samples]

    def src_norm(x):
        return D.normalize(x, src.mu, src.mad)

    dev = (src_norm(ds.x_train[dev_idx]), ds.y_train[dev_idx].astype(np.int64))
    val = (src_norm(ds.x_train[host.val_index]), ds.y_train[host.val_index].astype(np.int64))
    test = (src_norm(ds.x_test), ds.y_test.astype(np.int64))
    order = epoch_order(seed, len(dev_idx), a.max_epochs)
    row = dict(seed=seed, src_val_bp=hist.best_monitor_bp, src_epoch=hist.best_epoch, device_samples=len(dev_idx))
    row["none_bp"] = accuracy(pre, *test)

    for key, trainable, lrs in (("tail", TAIL, TAIL_LRS), ("full_device", None, FULL_LRS)):
        t1 = time.perf_counter()
        v, lr, epochs, twin = search(pre, trainable, lrs, dev, val, order, a.max_epochs)
        cls, dev_w, secs, steps = run_on_device(pre, trainable, lr, epochs, dev, order, test, norm, f"ad_{key}")
        exact = all(np.array_equal(w, twin[k]) for k, w in dev_w.items())
        twin_m = copy.deepcopy(pre)
        twin_m.weights = twin
        exact = exact and np.array_equal(cls, np.concatenate(
            [np.argmax(twin_m.forward(test[0][i:i + 512]), axis=1) for i in range(0, len(test[0]), 512)]))
        row[key] = dict(val_bp=v, lr_inv=lr, epochs=epochs, steps=steps, test_bp=int(np.sum(cls == test[1])) * 10000
                        // len(test[1]), bit_exact=bool(exact), emulator_s=round(secs, 1),
                        seconds=round(time.perf_counter() - t1, 1))
        log(f"  {key}: lr_inv {lr}, {epochs} epoch(s) ({steps} steps) on val {format_bp(v)} %; device test "
            f"{format_bp(row[key]['test_bp'])} %, bit-exact {exact}, emulator {secs:.0f} s")

    t1 = time.perf_counter()
    x_test, y_test = host.x_test, host.y_test
    host.x_test, host.y_test = x_test[:0], y_test[:0]  # the test set is read once, below
    full = api.build("mcu_cnn", seed=seed)
    h = api.train(full, host, epochs=a.host_epochs, batch_size=64, progress=False)
    host.x_test, host.y_test = x_test, y_test
    row["host"] = dict(val_bp=h.best_monitor_bp, epochs=h.best_epoch, test_bp=accuracy(full, x_test, y_test),
                       seconds=round(time.perf_counter() - t1, 1))
    gap = row["host"]["test_bp"] - row["none_bp"]
    row["recovery"] = round((row["tail"]["test_bp"] - row["none_bp"]) / gap, 3) if gap else None
    log(f"  host: val {format_bp(h.best_monitor_bp)} % (epoch {h.best_epoch}), test "
        f"{format_bp(row['host']['test_bp'])} %; none {format_bp(row['none_bp'])} %; recovery {row['recovery']}; "
        f"{time.perf_counter() - t0:.0f} s in all")
    if not costs:
        costs.update(device_costs(pre, norm, SimpleNamespace(x_train=dev[0], y_train=dev[1], x_test=test[0])))
    return row


def mean_std(vals) -> str:
    vals = [v / 100 for v in vals]
    sd = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} % ± {sd:.2f}"


def markdown(rows: list[dict], costs: dict, argv: list[str]) -> str:
    kb = 1024
    methods = [("none", "no adaptation", lambda r: r["none_bp"]),
               ("tail", "tail-only on the device (fc0, output)", lambda r: r["tail"]["test_bp"]),
               ("full_device", "full on-device training", lambda r: r["full_device"]["test_bp"]),
               ("host", "full host training (the ceiling)", lambda r: r["host"]["test_bp"])]
    lines = [f"Command: `python benchmarks/adaptation.py {' '.join(argv)}`", "",
             "| method | target test accuracy, mean ± σ | per seed | flash B | RAM B (static + stack) | "
             "instructions per step |", "|---|---|---|---|---|---|"]
    for key, label, get in methods:
        c = costs.get(key)
        cells = (f"{c['flash']:,} | **{c['ram']:,}** ({c['ram'] / kb:.1f} KiB) | {c['insns']:,}"
                 + (" per inference" if key == "none" else f" (batch {DEVICE_BATCH})")) if c else "– | – | – (host)"
        lines.append(f"| {label} | {mean_std([get(r) for r in rows])} | "
                     f"{' / '.join(format_bp(get(r)) for r in rows)} | {cells} |")
    means = {k: statistics.mean(get(r) for r in rows) for k, _, get in methods}
    rec = (means["tail"] - means["none"]) / (means["host"] - means["none"])
    lines += ["", f"Recovery of the gap by tail-only adaptation, (tail - none) / (host - none): **{rec:.3f}** of the "
              f"means; per seed {', '.join(str(r['recovery']) for r in rows)}.  Bit-exact (device weights and "
              f"all test predictions = Python): tail {all(r['tail']['bit_exact'] for r in rows)}, full "
              f"{all(r['full_device']['bit_exact'] for r in rows)}.", "",
              "| seed | source val | tail lr_inv / epochs / val | full lr_inv / epochs / val | host epochs / val | "
              "emulator s (tail, full) |", "|---|---|---|---|---|---|"]
    for r in rows:
        t, f, h = r["tail"], r["full_device"], r["host"]
        lines.append(f"| {r['seed']} | {format_bp(r['src_val_bp'])} | {t['lr_inv']} / {t['epochs']} / "
                     f"{format_bp(t['val_bp'])} | {f['lr_inv']} / {f['epochs']} / {format_bp(f['val_bp'])} | "
                     f"{h['epochs']} / {format_bp(h['val_bp'])} | {t['emulator_s']}, {f['emulator_s']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    tune_malloc()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept, costs = resumed(a, out.with_suffix(".json"))
    seeds = [a.seed_base + k for k in range(a.seeds)]
    rows = [r for r in kept if r["seed"] in seeds]
    shown = [x for x in argv if x != "--resume"]  # the table's command: what a fresh run would be

    def log(msg):
        print(msg, flush=True)

    for seed in seeds:
        if any(r["seed"] == seed for r in rows):
            log(f"seed {seed}: kept from {out.with_suffix('.json')}")
            continue
        rows.append(one_seed(a, seed, log, costs))
        rows.sort(key=lambda r: r["seed"])
        write_files(out.parent, {out.with_suffix(".json").name: json.dumps(dict(rows=rows, costs=costs, args=vars(a)),
                                                                              indent=1),
                                 out.with_suffix(".md").name: markdown(rows, costs, shown)})
    print(markdown(rows, costs, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
