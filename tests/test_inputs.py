"""The integer input pipeline: the raw type a model was trained on decides its one generated normalize function,
which equals nm.normalize bit for bit (host C, sanitizers, the emulated M4), as does the stream window helper;
and the issue's scenario: raw int16 accelerometer windows train with the defaults and the device predicts what
Python predicts."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu.cli import main
from nitro_mcu.codegen import convert
from nitro_mcu.device.compiled import CompiledModel, InputError
from nitro_mcu.device.flags import STRICT_CFLAGS
from nitro_mcu.device.harness import run_host_harness, run_mcu
from nitro_mcu.device.protocol import Session
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer.network import Model
from paths import REPO

_spec = importlib.util.spec_from_file_location("make_motion", REPO / "examples" / "motion" / "make_motion.py")
make_motion = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_motion)
motion_windows, write_csv = make_motion.motion_windows, make_motion.write_csv  # the example's data, one source

LIMITS = {"u8": (0, 255), "s16": (-32768, 32767), "s32": (-2**31, 2**31 - 1)}


def oracle(raw, mu, mad, per_channel):
    """The normalisation of docs/algorithm.md §5.1 with Python integers, one value at a time (truncation by
    hand), independent of the NumPy implementation."""
    out = []
    for i, v in enumerate(int(r) for r in np.asarray(raw).reshape(-1)):
        c = (i % (len(mu) * per_channel)) // per_channel
        num, den = (v - 128 - mu[c]) * 51, mad[c]
        q = abs(num) // den * (1 if num >= 0 else -1)
        out.append(max(-128, min(127, q)))
    return np.array(out, dtype=np.int64)


def feature_model(n, classes=3, hidden=8):
    return Model(dict(kind="mlp", input_shape=[n], num_classes=classes, hidden=[hidden]))


# ---- the raw type follows the data --------------------------------------------------------------------
@pytest.mark.parametrize("x,dtype", [
    (np.zeros((6, 4), np.uint8), "u8"), (np.full((6, 4), -5, np.int8), "s16"), (np.zeros((6, 4), np.int16), "s16"),
    (np.zeros((6, 4), np.int32), "s32"), (np.full((6, 4), 40000, np.int64), "s32"),
    (np.full((6, 4), -32768, np.int64), "s16"), (np.arange(450).reshape(6, 3, 5, 5) % 256, "u8")])
def test_the_raw_input_type_follows_the_arrays(x, dtype):
    data = nm.load_data((x, np.arange(6) % 2), test_size=2)
    assert D.input_dtype({"load_info": data.load_info}) == dtype


def test_a_csv_is_s16_or_s32_by_its_fixed_point_range(tmp_path):
    small = write_csv(tmp_path / "a.csv", np.array([[1, -32768], [2, 32767]] * 3), np.arange(6) % 2)
    assert nm.load_data(str(small), test_size=2).load_info["dtype"] == "s16"
    (tmp_path / "b.csv").write_text("".join(f"{v},{i % 2}\n" for i, v in enumerate(["3.2768", "-1.5", "2"] * 2)))
    info = nm.load_data(str(tmp_path / "b.csv"), test_size=2).load_info
    assert (info["dtype"], info["decimals"]) == ("s32", [4])  # 3.2768 reads as 32768: beyond int16


# ---- generated C == nm.normalize, every type, edge values ---------------------------------------------
def stats_for(dtype, channels, seed):
    r = np.random.default_rng(seed)
    lo, hi = LIMITS[dtype]
    sample = r.integers(lo, hi, (50, channels), endpoint=True)
    sample[0], sample[1] = lo, hi
    mu, mad = D.compute_norm_stats(sample.reshape(50, channels, 1, 1).astype(np.int64))  # as features
    return [int(v) for v in mu], [int(v) for v in mad]


@pytest.mark.parametrize("dtype", ["u8", "s16", "s32"])
def test_generated_normalize_equals_nm_normalize_on_every_type_with_edge_values(dtype):
    lo, hi = LIMITS[dtype]
    model = feature_model(6)
    mu, mad = stats_for(dtype, 6, 1)
    mu[0], mad[0] = mu[0], 1  # mad 1: the steepest channel saturates at both ends
    model.input_norm = {"mu": mu, "mad": mad, "dtype": dtype, "load_info": {"kind": "features", "dtype": dtype}}
    cm = CompiledModel(convert(model, name=f"n{dtype}"))
    r = np.random.default_rng(2)
    raw = r.integers(lo, hi, (40, 6), endpoint=True)
    raw[0], raw[1], raw[2, ::2], raw[3] = lo, hi, lo, 128 + np.array(mu)  # extremes and each channel's centre
    got = cm.normalize(raw)
    want = nm.normalize(model, raw)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(want.reshape(-1), oracle(raw, mu, mad, 1))
    assert set(np.unique(got[:2])) >= {-128, 127}  # the extremes really saturate
    header = cm.conv.sources[f"n{dtype}.h"]
    assert set(re.findall(r"_normalize_(\w+)\(", header)) == {dtype}  # never a function for another type
    with pytest.raises(InputError, match=f"must lie in \\[{lo}, {hi}\\]"):
        cm.normalize(np.full((1, 6), hi + 1))
    with pytest.raises(D.DataError, match="does not fit"):
        nm.normalize(model, np.full((1, 6), lo - 1))


def test_uint8_pixels_keep_the_table_and_match_nm_normalize():
    model = Model(dict(kind="cnn", input_shape=[3, 4, 4], num_classes=4, features=[["conv", 2, 3, 1, 1]],
                       fc_hidden=[3]))
    model.input_norm = {"mu": [-20, 3, 60], "mad": [1, 17, 64]}  # a file of an older version: no dtype: pixels
    cm = CompiledModel(convert(model, name="pix"))
    assert "norm_lut" in cm.conv.sources["pix.c"]
    raw = np.random.default_rng(3).integers(0, 256, (6, 3, 4, 4))
    raw[0].reshape(-1)[:48] = np.arange(0, 256, 256 // 48)[:48]
    np.testing.assert_array_equal(cm.normalize(raw), nm.normalize(model, raw).reshape(6, -1))
    np.testing.assert_array_equal(nm.normalize(model, raw).reshape(-1),
                                  oracle(raw, [-20, 3, 60], [1, 17, 64], 16))


def test_the_widths_are_proven_per_type():
    widths = {}
    for dtype in ("u8", "s16", "s32"):
        model = feature_model(2)
        mu = [LIMITS[dtype][1] - 128, LIMITS[dtype][0] - 128]  # the largest |mu| a training set can give
        model.input_norm = {"mu": mu, "mad": [1, 2**31 - 1 if dtype != "u8" else 1], "dtype": dtype}
        n = convert(model, name="w").plan.norm
        widths[dtype] = n.acc
        assert n.bound == (max(-LIMITS[dtype][0], LIMITS[dtype][1]) + 128 + max(map(abs, mu))) * 51
    assert widths == {"u8": "int32_t", "s16": "int32_t", "s32": "int64_t"}
    model = feature_model(2)
    model.input_norm = {"mu": [2**41, 0], "mad": [1, 1], "dtype": "s32"}
    with pytest.raises(ValueError, match="beyond 2\\*\\*40"):
        convert(model, name="w")


# ---- the window helper -----------------------------------------------------------------------------------
@pytest.mark.parametrize("hop", [1, 5, 12])
def test_window_helper_gives_the_sliding_windows_python_normalises(hop):
    model = feature_model(12)
    mu, mad = stats_for("s16", 12, 4)
    model.input_norm = {"mu": mu, "mad": mad, "dtype": "s16"}
    cm = CompiledModel(convert(model, name="win"))
    stream = np.random.default_rng(5).integers(-32768, 32767, 60, endpoint=True)
    stream[:4] = [-32768, 32767, -32768, 32767]
    got = cm.windows(stream, hop)
    ends = list(range(11, 60, hop))  # the first window after 12 readings, then every hop
    assert [i for i, _ in got] == ends
    for i, x in got:
        np.testing.assert_array_equal(x, nm.normalize(model, stream[i - 11:i + 1]))
    with pytest.raises(InputError, match="hop"):
        cm.windows(stream, 13)


def test_input_pipeline_compiles_strict_and_runs_clean_under_sanitizers(tmp_path):
    for dtype in ("u8", "s16", "s32"):
        model = feature_model(5)
        mu, mad = stats_for(dtype, 5, 6)
        model.input_norm = {"mu": mu, "mad": mad, "dtype": dtype, "load_info": {"kind": "features"}}
        conv = convert(model, name=f"san{dtype}")
        for cc in ("gcc", "clang"):
            conv.save(file=tmp_path / cc)
            subprocess.run([cc, *STRICT_CFLAGS, "-c", str(tmp_path / cc / f"san{dtype}.c"), "-o",
                            str(tmp_path / "o.o")], check=True)
        lo, hi = LIMITS[dtype]
        raw = np.random.default_rng(7).integers(lo, hi, (4, 5), endpoint=True)
        raw[0], raw[1] = lo, hi
        s = Session(5)
        s.norm(raw, dtype)
        s.window(raw.reshape(-1), 3, dtype)
        norm_res, win_res = run_host_harness(conv, s, cc="clang", sanitize=True)
        np.testing.assert_array_equal(norm_res[0], nm.normalize(model, raw))
        assert [i for i, _, _ in win_res] == [4, 7, 10, 13, 16, 19]
        for i, x, cls in win_res:
            np.testing.assert_array_equal(x, nm.normalize(model, raw.reshape(-1)[i - 4:i + 1]))
            assert cls == int(model.predict(x[None], 1)[0])


# ---- the issue's scenario -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    """The int16 motion CSV trained on the command line with the defaults (lr_inv searched, early stopping)."""
    d = tmp_path_factory.mktemp("motion")
    x, y = motion_windows()
    write_csv(d / "motion.csv", x, y)
    (d / "motion.json").write_text(json.dumps(make_motion.MODEL))
    assert main(["train", str(d / "motion.json"), "--data", str(d / "motion.csv"), "--out", str(d), "--quiet"]) == 0
    model, meta = nm.load(d / "motion.nitro")
    data = nm.load_data(str(d / "motion.csv"), seed=0)  # the same split: the raw rows of the held-out part
    return d, model, meta, x, y, data


def test_raw_int16_windows_train_to_a_good_model_with_the_defaults(motion, capsys):
    _, model, meta, *_ = motion
    assert meta["training"]["best_monitor_bp"] >= 9500  # validation, with the defaults
    assert meta["norm"]["dtype"] == "s16" and meta["training"]["stopped_early"]


def held_out_raw(motion):
    d, model, meta, x, y, data = motion
    ds = D.load_source(str(d / "motion.csv"), seed=0)  # the same held-out rows as training (STREAM_HOLDOUT)
    return ds.x_test.reshape(len(ds.x_test), -1), ds.y_test, data


def test_generated_normalize_s16_equals_nm_normalize_and_the_device_predicts_as_python(motion):
    _, model, *_ = motion
    raw, y, data = held_out_raw(motion)
    np.testing.assert_array_equal(nm.normalize(model, raw), data.x_test.reshape(len(raw), -1))  # the trainer's
    cm = CompiledModel(convert(model, name="motion"))
    assert "motion_normalize_s16" in cm.conv.sources["motion.h"] and "normalize_u8" not in cm.conv.sources["motion.h"]
    x = cm.normalize(raw)
    np.testing.assert_array_equal(x, nm.normalize(model, raw))
    _, classes = cm.predict_scores(x)
    py = model.predict(nm.normalize(model, raw), 64)
    np.testing.assert_array_equal(classes, py)
    assert int(np.sum(py == y)) * 100 >= 90 * len(y)  # and Python predicts well: not agreement at chance


def test_the_issue_trap_int16_readings_through_a_uint8_table_is_chance(motion):
    """Before: only normalize_u8 existed; int16 readings cast to bytes through it classify at chance."""
    _, model, meta, *_ = motion
    raw, y, _ = held_out_raw(motion)
    # the old header's table (normalize_u8 with the model's statistics) fed the readings as bytes
    wrong = D.normalize(raw.astype(np.uint8).reshape(len(raw), -1, 1, 1), meta["norm"]["mu"], meta["norm"]["mad"])
    assert int(np.sum(model.predict(wrong, 64) == y)) * 100 < 60 * len(y)


def test_the_emulated_m4_normalises_streams_and_predicts_as_python(motion):
    _, model, *_ = motion
    raw, y, _ = held_out_raw(motion)
    conv = convert(model, name="motion")
    s = Session(48)
    s.norm(raw[:20], "s16")
    stream = np.concatenate([raw[0], raw[1]])
    s.window(stream, 48, "s16")
    (x, _, classes), wins = run_mcu(conv, s, "m4").results
    want = nm.normalize(model, raw[:20])
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(classes, model.predict(want, 64))
    assert [i for i, _, _ in wins] == [47, 95]
    for (i, xw, cls), row in zip(wins, raw[:2]):
        np.testing.assert_array_equal(xw, nm.normalize(model, row))
        assert cls == int(model.predict(nm.normalize(model, row)[None], 1)[0])


@pytest.mark.parametrize("dtype", ["u8", "s32"])
def test_the_emulated_m4_normalises_the_other_types_at_their_extremes(dtype):
    model = feature_model(5)
    mu, mad = stats_for(dtype, 5, 8)
    model.input_norm = {"mu": mu, "mad": mad, "dtype": dtype, "load_info": {"kind": "features"}}
    lo, hi = LIMITS[dtype]
    raw = np.random.default_rng(9).integers(lo, hi, (6, 5), endpoint=True)
    raw[0], raw[1] = lo, hi
    s = Session(5)
    s.norm(raw, dtype)
    s.window(raw.reshape(-1), 5, dtype)
    (x, _, classes), wins = run_mcu(convert(model, name=f"m4{dtype}"), s, "m4").results
    np.testing.assert_array_equal(x, nm.normalize(model, raw))
    np.testing.assert_array_equal(x.reshape(-1), oracle(raw, mu, mad, 1))
    np.testing.assert_array_equal(classes, model.predict(x, 64))
    assert [i for i, _, _ in wins] == [4, 9, 14, 19, 24, 29]
    np.testing.assert_array_equal(np.stack([w for _, w, _ in wins]), x)  # hop = size: the samples themselves
