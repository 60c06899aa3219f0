"""The BasicMotions sensor dataset (issue 20, item 3), read offline from the sktime package's files: fixed-point
int16 readings, windows by recording, the rotated mounting, nm.load_data("basicmotions") and its preset."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu.trainer.data import DataError
from nitro_mcu.trainer.data import sensors as S

HAVE = importlib.util.find_spec(S.PACKAGE) is not None
needs_package = pytest.mark.skipif(not HAVE, reason=f"the BasicMotions files come with the '{S.PACKAGE}' package, "
                                   f"which is not installed (pip install {S.PACKAGE}, in the test extra)")


@needs_package
def test_recordings_are_the_archive_read_exactly_as_int16_fixed_point():
    r = S.load_recordings()
    assert r["x"].shape == (80, 6, 100) and r["x"].dtype == np.int16
    assert r["classes"] == ["Standing", "Running", "Walking", "Badminton"]
    assert (r["part"] == "train").sum() == 40 and np.bincount(r["y"]).tolist() == [20, 20, 20, 20]
    # the first reading of the first training recording, from the file's text by float arithmetic
    text = (S.data_dir() / "BasicMotions_TRAIN.ts").read_text().split("@data")[1].split()[0]
    first = [float(v) for v in text.split(":")[0].split(",")]
    assert abs(int(r["x"][0, 0, 0]) - first[0] * S.SCALE) <= 0.5
    assert [int(v) for v in r["x"][0, 0, :5]] == [round(v * S.SCALE) for v in first[:5]]


@needs_package
def test_windows_keep_recordings_together_and_are_channel_major():
    r = S.load_recordings()
    w, y, rec = S.windows(r["x"], r["y"])
    assert w.shape == (400, 192) and np.bincount(rec).tolist() == [5] * 80
    k = 7 * 5 + 3   # recording 7, window 3: samples 48..79 of each channel
    np.testing.assert_array_equal(w[k].reshape(6, 32), r["x"][7, :, 48:80])
    assert y[k] == r["y"][7]


def test_rotated_mounting_turns_both_sensors_about_z():
    x = np.arange(6 * 3, dtype=np.int16).reshape(1, 6, 3) - 5
    x[0, 0, 0] = -32768                                   # -(-32768) saturates, as int16 must
    r = S.rotate_mounting(x)
    np.testing.assert_array_equal(r[0, 0], x[0, 1])
    assert r[0, 1].tolist() == [32767, *(-x[0, 0, 1:]).tolist()]
    np.testing.assert_array_equal(r[0, 3], x[0, 4])
    np.testing.assert_array_equal(r[0, 4], -x[0, 3])
    np.testing.assert_array_equal(r[0, [2, 5]], x[0, [2, 5]])


@needs_package
def test_load_data_gives_the_windows_and_the_preset_trains_on_them():
    d = nm.load_data("basicmotions", seed=0)
    assert d.x_train.shape[1:] == (192, 1, 1) and d.x_train.dtype == np.int8
    assert len(d.x_train) + len(d.x_val) == 200 and len(d.x_test) == 200
    assert d.classes == ("Standing", "Running", "Walking", "Badminton")
    m = nm.build("motion_mlp", seed=0)
    assert m.weight_bits == 16 and m.num_classes == 4
    h = nm.train(m, d, epochs=10, lr_inv=64, progress=False)  # lr_inv as benchmarks/sensor_adaptation.py chose
    assert 1 <= h.best_epoch <= 10 and h.best_monitor_bp > 2500   # above chance (4 classes) on validation


def test_a_missing_package_is_one_line_naming_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=f"pip install {S.PACKAGE}") as e:
        nm.load_data("basicmotions")
    assert "\n" not in str(e.value)


@needs_package
def test_cli_trains_and_evaluates_the_preset_on_its_dataset_without_data_dir(tmp_path):
    import subprocess
    import sys
    run = lambda *a: subprocess.run([sys.executable, "-m", "nitro_mcu.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    t = run("train", "motion_mlp", "--epochs", "2", "--lr-inv", "64", "--out", str(tmp_path))
    assert t.returncode == 0, t.stderr
    assert "bundled" not in t.stdout and "basicmotions" in t.stdout
    e = run("eval", str(tmp_path / "motion_mlp.nitro"))
    assert e.returncode == 0 and "200 test samples of basicmotions" in e.stdout, e.stderr
