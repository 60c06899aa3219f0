#!/usr/bin/env python
"""Screen a training recipe on the validation split only: the test set is dropped before training starts.

    python benchmarks/recipe_screen.py mlp1 [--seed 42] [--epochs 150] [--lr-inv 128] [--crop-pad 1] [--flip]
                                       [--milestones 30,50,70] [--factor 3] [--dataset NAME] [--data-dir DIR]

Trains a preset with the default profile and split (the last N//10 images of the seed-shuffled training set
are the validation split) and the recipe given by the options (nitro_mcu/trainer/recipes.py; no milestones:
the paper's plateau / early-stop rule), and prints one line per epoch and a final JSON line: best validation
accuracy and its epoch, the final and last-5-epoch mean validation accuracy, the final training accuracy.
Recipes are compared on these figures only (docs/profiles.md, "Training recipes"); the test accuracy of a
recipe is measured once, by benchmarks/accuracy.py, after it is chosen.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--dataset", default=None, help="default: the preset's")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--weights", type=int, choices=[16, 32], default=None, help="default: the preset's")
    p.add_argument("--lr-inv", type=int, default=None, help="default: the description's")
    p.add_argument("--crop-pad", type=int, default=0, help="data.augment crop pad, p = 1/2 (0: no crop)")
    p.add_argument("--flip", action="store_true", help="data.augment horizontal flip, p = 1/2")
    p.add_argument("--milestones", default="", help="lr_inv x factor after these epochs (comma-separated)")
    p.add_argument("--factor", type=int, default=3)
    a = p.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    sys.path.insert(0, str(REPO))
    from nitro_mcu import api
    from nitro_mcu.trainer.loop import format_bp
    from nitro_mcu.trainer.recipes import recipe_from_dict

    _, defaults = api.resolve_spec(a.model)
    model = api.build(a.model, "default", a.weights, a.seed)
    data = api.load_data(a.dataset or defaults.get("dataset") or "mnist", a.seed, a.data_dir)
    data.x_test, data.y_test = data.x_test[:0], data.y_test[:0]  # never read while screening
    milestones = [int(m) for m in a.milestones.split(",") if m]
    rec = recipe_from_dict(dict(epochs=a.epochs, lr_inv=a.lr_inv, crop_pad=a.crop_pad, flip=a.flip,
                                milestones=milestones, factor=a.factor))

    def on_epoch(r):
        print(f"  epoch {r.epoch:3d}  lr_inv {r.lr_inv:6d}  train {format_bp(r.train_acc_bp)}  "
              f"val {format_bp(r.monitor_acc_bp)}  {r.seconds:.1f} s", flush=True)

    t0 = time.perf_counter()
    hist = api.train(model, data, rec.epochs, 64, progress=False, on_epoch=on_epoch, recipe=rec, test_reads="never")
    vals = [r.monitor_acc_bp for r in hist.records]
    print(json.dumps(dict(model=a.model, dataset=data.name, seed=a.seed, weights=model.weight_bits,
                          recipe=rec.to_dict(), epochs_run=len(vals), stopped_early=hist.stopped_early,
                          best_val=format_bp(hist.best_monitor_bp), best_epoch=hist.best_epoch,
                          final_val=format_bp(vals[-1]), last5_val=round(sum(vals[-5:]) / len(vals[-5:]) / 100, 2),
                          final_train=format_bp(hist.records[-1].train_acc_bp),
                          seconds=round(time.perf_counter() - t0))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
