"""Soak: long training runs on the emulated Cortex-M4 that stay bit-exact with Python at every checkpoint.

mcu_cnn (int16, batch 8) trains 10,000 steps and mlp1 (int16, batch 8) 2,000 steps, each in one continuous QEMU
run from a fresh model, starting at lr_inv 512 and 128 (a LRIV command at step 0), which the schedule multiplies
by 3 at 40 % and again at 80 % of the run (two more LRIV commands).  At every checkpoint
(every 1,000 and 250 steps) verify compares all weights and their count, the PRNG state, lr_inv and the moved
weights per tensor (counted on the device and in Python); at the end also every step's correct count and the
scores of the held-out images.  Usage: python benchmarks/soak.py [--cnn-steps 10000] [--mlp-steps 2000]
[--json FILE]  (0 steps skips a model)
"""
import argparse
import json
import sys
import time
from pathlib import Path

from nitro_mcu.device.verify import verify
from nitro_mcu.fileio import atomic_write
from nitro_mcu.spec import preset
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer.loop import format_pct
from nitro_mcu.trainer.network import Model


def soak(name: str, steps: int, every: int, lr: int, data, predictions: int = 1000):
    model = Model(preset(name), "default", 16, seed=0)
    schedule = {0: lr, steps * 2 // 5: lr * 3, steps * 4 // 5: lr * 9}
    rep = verify(model, data, "m4", steps=steps, batch=8, predictions=predictions, lr_schedule=schedule,
                 checkpoint_every=every, name=f"soak_{name}", timeout=4 * 3600)
    return rep, schedule


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cnn-steps", type=int, default=10_000)
    ap.add_argument("--mlp-steps", type=int, default=2_000)
    ap.add_argument("--json", help="also write both verdicts as JSON")
    a = ap.parse_args()
    data = D.prepare(D.load_dataset("bundled"), seed=0)
    t0 = time.perf_counter()
    out, ok = {}, True
    for name, steps, every, lr in (("mcu_cnn", a.cnn_steps, 1000, 512), ("mlp1", a.mlp_steps, 250, 128)):
        if not steps:
            continue
        print(f"soak: {name} int16, batch 8, {steps} steps on the emulated Cortex-M4, checkpoint every {every}",
              flush=True)
        rep, schedule = soak(name, steps, every, lr, data)
        print("  " + rep.table().replace("\n", "\n  "))
        lrs = ", ".join(f"{c.step}: {c.lr_inv_device}" for c in rep.checkpoints)
        print(f"  lr_inv schedule {schedule}; lr_inv on the device at the checkpoints: {lrs}")
        print(f"  held-out accuracy after {steps} device steps: {format_pct(rep.device_accuracy_bp)} on "
              f"{rep.predictions} images; {rep.seconds:.1f} s wall ({rep.device_seconds:.1f} s in QEMU)")
        print(f"  {rep.problem() or 'bit-exact at every checkpoint'}", flush=True)
        ok &= rep.passed
        out[name] = rep.to_dict()
    print(f"soak done in {time.perf_counter() - t0:.1f} s: {'PASS' if ok else 'FAIL'}")
    if a.json:
        atomic_write(Path(a.json), (json.dumps(out, indent=1) + "\n").encode())
        print(f"wrote {a.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
