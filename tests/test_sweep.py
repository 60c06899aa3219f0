"""Sweeps on a local Ray: a tiny sweep (2 seeds x 1 epoch, bundled data), a killed run reported and re-run alone."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from nitro_mcu import cli, sweep

REPO = Path(__file__).resolve().parents[1]
import ray  # a test extra (pyproject, scripts/setup.sh): CI must run these tests, not skip them


def die_on_seed_2(cfg: dict) -> dict:
    """A task whose worker process dies (as if killed) for seed 2 and trains normally otherwise."""
    if cfg["seed"] == 2:
        os._exit(9)
    return sweep.run_one(cfg)


def test_tiny_sweep_on_local_ray_then_a_killed_run_is_reported_and_rerun_alone(tmp_path):
    out = tmp_path / "sw"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "nitro_mcu.cli", "sweep", "mlp1", "--seeds", "2", "--epochs", "1",
                        "--num-cpus", "2", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "as Ray tasks (local Ray)" in r.stdout
    rows = (out / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("key,model,dataset")
    run = next(csv.DictReader(rows))  # mlp1's recipe refits: the test set is read once, by the refit model
    assert run["epochs"] == "1" and run["test_acc"] == "" and float(run["refit_test_acc"]) > 0 and run["val_acc"]
    assert "| mlp1 | bundled | default | int32 | 1 | val | 2 |" in (out / "sweep.md").read_text()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert len(first) == 2

    # seed 2 joins the sweep and its worker dies: reported, the finished runs are neither redone nor lost
    configs = [sweep.RunConfig("mlp1", s, 1) for s in (0, 1, 2)]
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    lines = []
    res = sweep.run_sweep(configs, out, num_cpus=2, echo=lines.append, task=die_on_seed_2)
    assert not ray.is_initialized()  # the sweep shut its local Ray down
    assert res.reused == 2 and len(res.records) == 2 and list(res.failures) == [configs[2].key()]
    assert any("mlp1 seed 2: FAILED" in s for s in lines)
    failed = json.loads((out / "runs" / f"{configs[2].key()}.failed.json").read_text())
    assert failed["config"] == asdict(configs[2])
    assert "1 failed or not run yet" in (out / "sweep.md").read_text()

    # the same sweep again runs only the failed one
    lines.clear()
    res = sweep.run_sweep(configs, out, serial=True, echo=lines.append)
    assert res.ok and res.reused == 2 and len(res.records) == 3
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json") if p.name in first} == first
    assert not list((out / "runs").glob("*.failed.json"))
    assert "| 3 |" in sweep.table(res.records) and len((out / "sweep.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("data", ["empty", "garbage.npz"])
def test_bad_data_stops_a_sweep_before_its_first_task_and_writes_nothing(data, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    extra = ["--data", "mnist", "--data-dir", str(tmp_path / "empty")] if data == "empty" else \
        ["--data", str(tmp_path / data)]
    r = subprocess.run([sys.executable, "-m", "nitro_mcu.cli", "sweep", "mlp1", "--seeds", "2", "--epochs", "1",
                        *extra, "--serial", "--out", str(tmp_path / "sw")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1 and ("missing IDX file" in r.stderr or "not a readable .npz" in r.stderr)
    assert not (tmp_path / "sw").exists()
    bad = subprocess.run([sys.executable, "-m", "nitro_mcu.cli", "sweep", "mlp9", "--serial"], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "unknown preset 'mlp9'" in bad.stderr


def test_a_refit_asked_where_the_test_set_drives_the_run_is_refused():
    cfg = asdict(sweep.RunConfig("mlp1", 0, 1, profile="reference", refit=True))  # Q10: the test set drives
    with pytest.raises(ValueError, match="refit needs a validation split"):
        sweep.run_one(cfg)


def test_summary_statistics():
    recs = [dict(model="m", dataset="d", profile="p", weight_bits=32, epochs=1, monitor="val", seed=s, test_acc_bp=t,
                 val_acc_bp=None, refit_test_acc_bp=None, epochs_run=1, seconds=1.0) for s, t in ((0, 9000), (1, 9100))]
    (row,) = sweep.summarize(recs)
    assert row["runs"] == 2 and row["test"] == dict(n=2, mean=90.5, std=0.5, lo=90.0, hi=91.0)
    assert row["val"] is None and "90.50 ± 0.50 (90.00–91.00)" in sweep.table(recs)


class FakeRay:
    """Stands in for the ray module: records how the sweep joins a cluster and runs each task here."""

    def __init__(self):
        self.inits, self.up, self.options = [], False, []

    def is_initialized(self):
        return self.up

    def init(self, **kw):
        self.inits.append(kw)
        self.up = True

    def shutdown(self):
        self.up = False

    def remote(self, **opts):
        self.options.append(opts)
        return lambda fn: type("Remote", (), {"remote": staticmethod(lambda cfg: FakeRef(fn(cfg)))})

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value


class FakeRef:
    def __init__(self, value):
        self.value = value


def test_address_joins_that_cluster_and_ships_the_package(tmp_path, monkeypatch, capsys):
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    rc = cli.main(["sweep", "mlp1", "--seeds", "1", "--epochs", "1", "--address", "ray://head:10001",
                   "--out", str(tmp_path / "sw")])
    assert rc == 0 and "as Ray tasks (cluster ray://head:10001)" in capsys.readouterr().out
    (kw,) = fake.inits
    assert kw["address"] == "ray://head:10001" and kw["num_cpus"] is None
    assert kw["runtime_env"]["py_modules"] == [str(REPO / "nitro_mcu")]
    assert kw["runtime_env"]["env_vars"]["OPENBLAS_NUM_THREADS"] and fake.options == [dict(num_cpus=1, max_retries=0)]
    assert not fake.up and len((tmp_path / "sw" / "sweep.csv").read_text().splitlines()) == 2
