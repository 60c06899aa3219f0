"""The nitro-mcu command line: the three verbs on real files, and one-line errors (exit 2) for bad input."""
from __future__ import annotations

import csv
import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nitro_mcu import cli
from nitro_mcu.spec import PRESETS

REPO = Path(__file__).resolve().parents[1]


def run_proc(*args, timeout=120):
    # One BLAS thread: on a loaded 2-core machine a multi-threaded OpenBLAS runs these small GEMMs ~4x slower.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "nitro_mcu.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=env)


def run_main(capsys, *args):
    """cli.main in-process; returns (exit status, stdout, stderr).  argparse errors exit via SystemExit."""
    try:
        rc = cli.main(list(args))
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("nitro-mcu: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


# ------------------------------------------------------------------------------------------------ happy path
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`nitro-mcu train mlp1 --epochs 2 --quiet` on the bundled data, in a real process."""
    out = tmp_path_factory.mktemp("run")
    r = run_proc("train", "mlp1", "--epochs", "2", "--quiet", "--seed", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r


def test_train_writes_model_csv_and_png(trained):
    out, r = trained
    # mlp1's recipe refits on train + validation by default (nitro_mcu/trainer/recipes.py)
    assert sorted(p.name for p in out.iterdir()) == ["mlp1.nitro", "mlp1_curves.png", "mlp1_metrics.csv",
                                                     "mlp1_refit_metrics.csv"]
    assert "refit: a fresh model on all 5000 training images" in r.stdout
    assert (out / "mlp1_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "mlp1_metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "lr_inv", "train_acc", "train_loss", "val_acc", "test_acc", "seconds"]
    assert all(0 <= float(row["test_acc"]) <= 100 and row["val_acc"] for row in rows)
    assert "training mlp1" in r.stdout and "bundled" in r.stdout and "best epoch" in r.stdout
    assert "Traceback" not in r.stderr
    # --quiet: no progress bar on stderr
    assert "batch/s" not in r.stderr and "it/s" not in r.stderr


def test_eval_and_summary_on_the_written_file(trained, capsys):
    out, _ = trained
    model = str(out / "mlp1.nitro")
    rc, text, err = run_main(capsys, "eval", model, "--json")
    assert rc == 0, err
    ev = json.loads(text)
    assert ev["test_images"] == 1000 and 0 <= ev["test_accuracy"] <= 1 and "test_acc_bp" not in ev
    rc, text, err = run_main(capsys, "eval", model)
    assert rc == 0 and "test accuracy" in text and "bundled" in text
    rc, text, err = run_main(capsys, "summary", model)
    assert rc == 0, err
    assert "block0.fwd" in text and "output" in text and "85400" in text and "profile default" in text
    rc, text, err = run_main(capsys, "summary", model, "--json")
    rows = json.loads(text)
    assert sum(r["weights"] for r in rows) == 85_400


def test_eval_matches_the_training_report(trained, capsys):
    """The test accuracy printed by train equals what eval recomputes from the file (same normalisation)."""
    out, r = trained
    rc, text, _ = run_main(capsys, "eval", str(out / "mlp1.nitro"), "--json")
    acc = json.loads(text)["test_accuracy"]
    assert f"test {100 * acc:.2f} %" in r.stdout


def test_summary_of_presets(capsys):
    rc, text, err = run_main(capsys, "summary", "mcu_cnn", "--json", "--weights", "int32")
    assert rc == 0, err
    rows = json.loads(text)
    assert rows[0]["name"] == "conv0.fwd" and rows[-1]["name"] == "output"
    assert {"name", "shape", "weights", "macs", "bytes", "sf", "bound", "amp", "decay"} <= set(rows[0])
    rc16, text16, _ = run_main(capsys, "summary", "mcu_cnn", "--json", "--weights", "int16")
    assert sum(r["bytes"] for r in json.loads(text16)) * 2 == sum(r["bytes"] for r in rows)
    assert run_main(capsys, "summary", "mcu_cnn", "--json")[1] == text16  # the preset is sized for int16
    rc, text, err = run_main(capsys, "summary", "vgg8b", "--profile", "reference")
    assert rc == 0 and "7559296" in text and "240640 weights in heads" in text and "profile reference" in text


def test_train_json_description_with_options(tmp_path, capsys):
    spec = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[16], dataset="mnist", augment=False)
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    rc, text, err = run_main(capsys, "train", str(tmp_path / "tiny.json"), "--epochs", "1", "--quiet",
                             "--weights", "int16", "--profile", "reference", "--batch", "32", "--out",
                             str(tmp_path / "o"), "--name", "t")
    assert rc == 0, err
    assert "bundled" in text  # a preset/JSON dataset of 'mnist' without --data-dir falls back to the bundled set
    assert "profile reference" in text and "int16" in text
    assert (tmp_path / "o" / "t.nitro").is_file()
    rows = list(csv.DictReader((tmp_path / "o" / "t_metrics.csv").open()))
    assert rows[0]["val_acc"] == ""  # reference profile: the test set is the monitor (Q10)
    rc, text, _ = run_main(capsys, "summary", str(tmp_path / "o" / "t.nitro"))
    assert "int16 weights" in text and "profile reference" in text


def test_train_refit_saves_the_model_retrained_on_train_plus_val(tmp_path, capsys):
    out = tmp_path / "o"
    rc, text, err = run_main(capsys, "train", "mlp1", "--epochs", "2", "--quiet", "--seed", "1", "--refit",
                             "--val-size", "1000", "--out", str(out))
    assert rc == 0, err
    assert "4000 train / 1000 val" in text and "refit: a fresh model on all 5000 training images" in text
    assert sorted(p.name for p in out.iterdir()) == ["mlp1.nitro", "mlp1_curves.png", "mlp1_metrics.csv",
                                                     "mlp1_refit_metrics.csv"]
    first = list(csv.DictReader((out / "mlp1_metrics.csv").open()))
    refit = list(csv.DictReader((out / "mlp1_refit_metrics.csv").open()))
    from nitro_mcu import api

    _, meta = api.load(out / "mlp1.nitro")
    info = meta["training"]["refit"]
    best = meta["training"]["refit"]["val_best_epoch"]
    assert len(first) == 2 and 1 <= best <= 2 and len(refit) == best == info["epochs"]
    assert [int(r["lr_inv"]) for r in refit] == info["lr_schedule"] == [int(r["lr_inv"]) for r in first[:best]]
    assert all(r["val_acc"] == "" for r in refit) and meta["training"]["monitor"] == "none"
    assert meta["training"]["best_monitor_bp"] is None and meta["training"]["best_epoch"] == best
    # the saved weights are the refit's final ones: eval reproduces its last logged test accuracy
    rc, js, _ = run_main(capsys, "eval", str(out / "mlp1.nitro"), "--json")
    acc = json.loads(js)["test_accuracy"]
    assert f"{100 * acc:.2f}" == refit[-1]["test_acc"] and f"refit: test {refit[-1]['test_acc']} %" in text


# ------------------------------------------------------------------------------------------------ errors
def _truncated_idx_dir(d: Path) -> Path:
    d.mkdir()
    imgs = np.zeros((8, 28, 28), np.uint8)
    labs = np.arange(8, dtype=np.uint8)

    def idx(a):
        return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape) + a.tobytes()

    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(imgs)[:-100]))  # truncated data
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labs)))
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(imgs)))
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labs)))
    return d


def _corrupt_model(tmp_path: Path) -> Path:
    from nitro_mcu import modelfile
    from nitro_mcu.trainer.network import Model

    p = modelfile.save(Model(dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[8])), tmp_path / "c.nitro")
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    p.write_bytes(bytes(raw))
    return p


def error_cases(tmp_path: Path):
    """name -> (argv, substrings the one error line must contain)."""
    (tmp_path / "malformed.json").write_text('{"kind": "mlp", "hidden": [10,]')
    (tmp_path / "lr0.json").write_text(json.dumps(dict(kind="mlp", input_shape=[784], num_classes=10,
                                                       hidden=[10], lr_inv=0)))
    (tmp_path / "shape.json").write_text(json.dumps(dict(kind="mlp", input_shape=[100], num_classes=10,
                                                         hidden=[10])))
    (tmp_path / "aug.json").write_text(json.dumps(dict(kind="mlp", input_shape=[784], num_classes=10,
                                                       hidden=[10], augment="yes")))
    out = str(tmp_path / "out")
    bad_idx = str(_truncated_idx_dir(tmp_path / "mnist_bad"))
    corrupt = str(_corrupt_model(tmp_path))
    return {
        "unknown preset": (["train", "nosuch", "--out", out], ["nosuch"]),
        "malformed json": (["train", str(tmp_path / "malformed.json"), "--out", out], ["malformed JSON"]),
        "lr_inv 0": (["train", str(tmp_path / "lr0.json"), "--out", out], ["lr_inv"]),
        "bad augment value": (["train", str(tmp_path / "aug.json"), "--out", out], ["augment"]),
        "corrupted model eval": (["eval", corrupt], ["c.nitro", "corrupt"]),
        "corrupted model summary": (["summary", corrupt], ["c.nitro", "corrupt"]),
        "missing model file": (["eval", str(tmp_path / "none.nitro")], ["no such model file"]),
        "mnist without data dir": (["train", "mlp1", "--data", "mnist", "--out", out], ["--data-dir"]),
        "truncated idx via data-dir": (["train", "mlp1", "--data", "mnist", "--data-dir", bad_idx, "--out", out],
                                       ["truncated"]),
        "truncated idx as folder": (["train", "mlp1", "--data", bad_idx, "--out", out], ["truncated"]),
        "unknown dataset": (["train", "mlp1", "--data", "imagenet", "--out", out], ["imagenet"]),
        "weights int8": (["train", "mlp1", "--weights", "int8", "--out", out], ["int8"]),
        "summary weights int8": (["summary", "mlp1", "--weights", "int8"], ["int8"]),
        "negative epochs": (["train", "mlp1", "--epochs", "-3", "--out", out], ["-3"]),
        "zero batch": (["train", "mlp1", "--batch", "0", "--out", out], ["'0'"]),
        "unknown profile": (["train", "mlp1", "--profile", "exact", "--out", out], ["exact"]),
        "no command": ([], ["required"]),
        "unknown option": (["train", "mlp1", "--frobnicate"], ["--frobnicate"]),
        "batch larger than data": (["train", "mlp1", "--batch", "5000", "--epochs", "1", "--quiet", "--out", out],
                                   ["fewer than one batch", "--batch"]),
        "val size too big": (["train", "mlp1", "--val-size", "5000", "--out", out], ["val_size"]),
        "shape mismatch": (["train", str(tmp_path / "shape.json"), "--epochs", "1", "--quiet", "--out", out],
                           ["(100,)", "(1, 28, 28)"]),
        "refit without validation": (["train", "mlp1", "--refit", "--monitor", "test", "--out", out],
                                     ["--refit", "validation split"]),
        "refit with reference profile": (["train", "mlp1", "--refit", "--profile", "reference", "--out", out],
                                         ["--refit", "validation split"]),
    }


CASE_NAMES = ["unknown preset", "malformed json", "lr_inv 0", "bad augment value", "corrupted model eval",
              "corrupted model summary", "missing model file", "mnist without data dir",
              "truncated idx via data-dir", "truncated idx as folder", "unknown dataset", "weights int8",
              "summary weights int8", "negative epochs", "zero batch", "unknown profile", "no command",
              "unknown option", "batch larger than data", "val size too big", "shape mismatch",
              "refit without validation", "refit with reference profile"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    argv, needles = error_cases(tmp_path)[case]
    rc, _, err = run_main(capsys, *argv)
    assert_one_line_error(rc, err, *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written


def test_error_cases_list_is_complete(tmp_path):
    assert sorted(error_cases(tmp_path)) == sorted(CASE_NAMES)


@pytest.mark.parametrize("argv, needle", [
    (["train", "nosuch"], "nosuch"),
    (["train", "mlp1", "--weights", "int8"], "int8"),
    (["train", "mlp1", "--epochs", "-1"], "-1"),
])
def test_bad_input_in_a_real_process(argv, needle, tmp_path):
    r = run_proc(*argv, "--out", str(tmp_path / "out"))
    assert_one_line_error(r.returncode, r.stderr, needle)
    assert r.stdout == ""


def test_help_still_works():
    r = run_proc("train", "--help")
    assert r.returncode == 0 and "--weights" in r.stdout and all(p in r.stdout for p in ("mlp1", "vgg8b"))
    assert set(PRESETS) >= {"mlp1", "mlp2", "mcu_cnn", "vgg8b", "vgg11b", "mlp4"}


@pytest.mark.parametrize("where", ["training", "elsewhere"])
def test_ctrl_c_is_one_line_on_stderr(where, capsys, monkeypatch, tmp_path):
    """Interrupted in training: the line says what was kept (nothing, before the first epoch); anywhere else:
    'nitro-mcu: interrupted'; either way once, exit status 130."""
    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.api, "train" if where == "training" else "summary", interrupt)
    args = ["train", "mlp1", "--out", str(tmp_path), "--quiet"] if where == "training" else ["summary", "mlp1"]
    rc, _, err = run_main(capsys, *args)
    expected = ("nitro-mcu: interrupted before the first epoch finished; nothing was written" if where == "training"
                else "nitro-mcu: interrupted")
    assert rc == 130 and err.strip().splitlines() == [expected], err


@pytest.mark.parametrize("quiet", [False, True])
def test_demo_leaves_the_progress_bar_to_the_terminal_check(quiet, capsys, monkeypatch, tmp_path):
    """demo passes progress=None (a bar only when stderr is a terminal, so a redirected log holds no frames) or
    False with --quiet; never True."""
    seen = {}

    def record(*a, **k):
        seen["progress"] = k.get("progress")
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.api, "train", record)
    rc, _, _ = run_main(capsys, "demo", "--out", str(tmp_path), *(["--quiet"] if quiet else []))
    assert rc == 130 and seen == {"progress": False if quiet else None}


def test_generate_of_int32_weights_says_the_fast_kernels_take_int16(capsys, tmp_path):
    """A description defaults to int32 weights, which no DSP/RV32 kernel takes: generate says so, and only then."""
    rc, out, _ = run_main(capsys, "generate", "mlp1", "--out", str(tmp_path / "a"))
    assert rc == 0 and "int32 weights run the portable C kernels" in out and "--weights int16" in out
    rc, out, _ = run_main(capsys, "generate", "mlp1", "--weights", "int16", "--out", str(tmp_path / "b"))
    assert rc == 0 and "portable C kernels" not in out
