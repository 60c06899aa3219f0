"""Learning rates without guesswork: a description without lr_inv gets one searched on the validation split, and
its length by early stopping; --lr-inv and the presets' recipes are left alone."""
from __future__ import annotations

import numpy as np
import pytest
from test_inputs import motion_windows

import nitro_mcu as nm
from nitro_mcu.cli import main
from nitro_mcu.trainer.lrsearch import CANDIDATES, SEARCH_EPOCHS, search_lr_inv

SPEC = {"kind": "mlp", "input_shape": [48], "num_classes": 3, "hidden": [32]}


@pytest.fixture(scope="module")
def motion():
    x, y = motion_windows(n_per=100, seed=1)
    return x.astype(np.int16), y


def test_the_search_reads_validation_only_and_leaves_model_and_data_stream_alone(motion):
    data = nm.load_data(motion, seed=0)
    model = nm.build(SPEC, seed=0)
    before = {k: v.copy() for k, v in model.weights.items()}
    state = data.rng.state
    res = search_lr_inv(model, data, 64, candidates=(64, 128, 512), epochs=4)
    assert data.rng.state == state
    assert all(np.array_equal(v, before[k]) for k, v in model.weights.items())
    assert set(res.curves) == {64, 128, 512} and all(len(c) == 4 for c in res.curves.values())
    assert res.chosen == max(res.curves, key=lambda lr: (max(res.curves[lr]), sum(res.curves[lr]) // 4, lr))
    data.x_test = np.zeros_like(data.x_test)  # the test set cannot drive the choice
    again = search_lr_inv(model, data, 64, candidates=(64, 128, 512), epochs=4)
    assert again.curves == res.curves
    # a candidate's curve is exactly a constant-rate run from the model's initial weights and the data stream
    run = nm.train(nm.build(SPEC, seed=0), nm.load_data(motion, seed=0), 4, 64, lr_inv=128, schedule=False,
                   progress=False)
    assert [r.monitor_acc_bp for r in run.records] == res.curves[128]


def test_train_defaults_search_lr_inv_stop_early_and_say_why(motion, tmp_path, capsys):
    np.savez(tmp_path / "motion.npz", x=motion[0], y=motion[1])
    (tmp_path / "m.json").write_text(str(SPEC).replace("'", '"'))
    assert main(["train", str(tmp_path / "m.json"), "--data", str(tmp_path / "motion.npz"), "--out", str(tmp_path),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{len(CANDIDATES)} candidates x {SEARCH_EPOCHS} epochs" in out
    chosen = int(out.split("chose lr_inv ")[1].split(",")[0])
    assert "the best validation accuracy" in out and "early stopping on validation ended the run" in out
    meta = nm.load(tmp_path / "m.nitro")[1]["training"]
    lines = (tmp_path / "m_metrics.csv").read_text().splitlines()[1:]
    assert int(lines[0].split(",")[1]) == chosen and meta["stopped_early"] and len(lines) < 150
    assert meta["best_monitor_bp"] >= 9500


def test_lr_inv_option_and_preset_recipes_skip_the_search(motion, tmp_path, capsys):
    np.savez(tmp_path / "motion.npz", x=motion[0], y=motion[1])
    (tmp_path / "m.json").write_text(str(SPEC).replace("'", '"'))
    assert main(["train", str(tmp_path / "m.json"), "--data", str(tmp_path / "motion.npz"), "--out", str(tmp_path),
                 "--quiet", "--lr-inv", "256", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "chose lr_inv" not in out and "search" not in out
    assert [ln.split(",")[1] for ln in (tmp_path / "m_metrics.csv").read_text().splitlines()[1:]] == ["256"] * 3
    (tmp_path / "own.json").write_text(str({**SPEC, "lr_inv": 1024}).replace("'", '"'))
    assert main(["train", str(tmp_path / "own.json"), "--data", str(tmp_path / "motion.npz"), "--out", str(tmp_path),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "chose lr_inv" not in out and "10 epoch(s)" in out  # its own lr_inv: the old defaults
    assert main(["train", "mlp1", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--val-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "chose lr_inv" not in out and "this run: 1 epoch(s)" in out
