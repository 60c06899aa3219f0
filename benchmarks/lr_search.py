#!/usr/bin/env python
"""The old defaults against the lr_inv search on raw int16 windows (docs/own_data.md, "Learning rates").

    python benchmarks/lr_search.py [--seeds 3] [--out benchmarks/results/lr_search.md]

Per data seed, examples/motion/make_motion.py writes the 3-motion CSV and `nitro-mcu train motion.json --data
motion.csv` runs twice: with the old defaults (``--lr-inv 512 --epochs 10``) and with the new ones (no option:
lr_inv searched on the validation split, epochs by early stopping).  Validation and held-out test accuracy of
the kept model, the lr_inv and epochs each used, and the seconds (a loaded shared machine: indicative only).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nitro_mcu as nm  # noqa: E402
from nitro_mcu.cli import main  # noqa: E402
from nitro_mcu.trainer.loop import format_pct  # noqa: E402


def _make_motion():
    spec = importlib.util.spec_from_file_location("make_motion", REPO / "examples" / "motion" / "make_motion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(d: Path, *opts) -> dict:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = main(["train", str(d / "motion.json"), "--data", str(d / "motion.csv"), "--out", str(d), "--quiet",
                   *opts])
    if rc != 0:
        raise SystemExit(f"training failed: {out.getvalue()}")
    t = nm.load(d / "motion.nitro")[1]["training"]
    chosen = [ln for ln in out.getvalue().splitlines() if ln.startswith("chose lr_inv")]
    lr = int(chosen[0].split()[2].rstrip(",")) if chosen else int(opts[opts.index("--lr-inv") + 1])
    return dict(val=t["best_monitor_bp"], test=t["test_at_best_bp"], lr_inv=lr, epochs=t["epochs_run"],
                seconds=t["seconds"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "lr_search.md"))
    a = ap.parse_args()
    mm = _make_motion()
    rows = ["| data seed | run | lr_inv | epochs | validation | test | seconds |", "|---|---|---|---|---|---|---|"]
    for seed in range(a.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            mm.write_csv(d / "motion.csv", *mm.motion_windows(seed=seed))
            (d / "motion.json").write_text(json.dumps(mm.MODEL))
            for what, opts in (("old defaults (--lr-inv 512 --epochs 10)", ("--lr-inv", "512", "--epochs", "10")),
                               ("defaults (searched, early stop)", ())):
                r = run(d, *opts)
                rows.append(f"| {seed} | {what} | {r['lr_inv']} | {r['epochs']} | {format_pct(r['val'])} | "
                            f"{format_pct(r['test'])} | {r['seconds']} |")
                print(rows[-1], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(rows) + "\n")
    print(f"wrote {a.out}")
