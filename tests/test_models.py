"""Model descriptions, the paper presets (docs/algorithm.md §6), initialisation (§4.4), input checks and the
quirk switches of the two profiles (§9)."""
from __future__ import annotations

import json
import re
import time
from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.blocks import output_error
from nitro_mcu.spec import PRESETS, SpecError, preset
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.rng import Rng
from nitro_mcu.trainer.profiles import DEFAULT, REFERENCE, Quirks, get_profile

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def built(name: str, quirks: Quirks = DEFAULT) -> Model:
    """One build per (preset, quirks) for the structural tests (seed 1; the big presets take a second)."""
    return Model(preset(name), quirks, seed=1)


def random_batch(model: Model, b: int = 2, seed: int = 7):
    r = Rng(seed, 99)
    x = r.randint(-128, 127, (b,) + model.input_shape).astype(np.int8)
    y = r.randint(0, model.num_classes - 1, (b,))
    return x, y


def totals(model: Model):
    rows = model.describe()
    return sum(r["weights"] for r in rows), sum(r["weights"] for r in rows if r["name"].endswith(".head"))


# ------------------------------------------------------------------------------------------------ presets
# docs/algorithm.md §6 "Weight counts": (total, in heads)
WEIGHT_COUNTS = {
    "mlp1": (85_400, 1_500),
    "mlp2": (185_800, 3_500),
    "mlp3": (2_940_928, 30_720),
    "mlp3_fmnist": (2_940_928, 30_720),
    "mlp4": (27_336_000, 90_000),
    "vgg8b": (7_559_296, 240_640),
    "vgg8b_fmnist": (7_559_296, 240_640),
    "vgg8b_cifar10": (9_149_824, 256_000),
    "vgg11b": (11_926_912, 378_880),
}
CONV_HEAD_WEIGHTS = {"vgg8b": 230_400, "vgg8b_cifar10": 245_760, "vgg11b": 368_640}


@pytest.mark.parametrize("name", sorted(WEIGHT_COUNTS))
def test_weight_counts_match_the_paper_table(name):
    model = built(name)
    assert totals(model) == WEIGHT_COUNTS[name]
    assert sum(int(np.prod(s)) for s in model.param_shapes().values()) == WEIGHT_COUNTS[name][0]
    if name in CONV_HEAD_WEIGHTS:
        conv_heads = sum(r["weights"] for r in model.describe() if r["name"].startswith("conv") and
                         r["name"].endswith(".head"))
        assert conv_heads == CONV_HEAD_WEIGHTS[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_trains_two_steps(name):
    model = built(name)  # the steps change only weights, which the other users of built() do not read
    x, y = random_batch(model)
    before = {k: v.copy() for k, v in model.weights.items()}
    t0 = time.perf_counter()
    for _ in range(2):
        stats = model.train_step(x, y, model.spec["lr_inv"])
        assert stats.count == 2 and 0 <= stats.correct <= 2
    elapsed = time.perf_counter() - t0
    scores = model.forward(x)
    assert scores.shape == (2, model.num_classes) and scores.dtype == np.int8
    assert np.abs(scores.astype(int)).max() <= 127
    # The output layer and every head see a non-zero error at step 0 (targets are 32), so they move.
    assert not np.array_equal(before["output"], model.weights["output"])
    for k, w in model.weights.items():
        assert w.dtype == np.int32 and w.shape == before[k].shape
    if name in ("vgg8b", "vgg8b_fmnist"):
        assert elapsed < 10.0, f"vgg8b: 2 steps at batch 2 took {elapsed:.1f} s"


def test_vgg8b_28x28_head_pool_table():
    """docs/algorithm.md §6, "VGG8B, 28x28 input": conv SF, init b, head pool, head d and SF."""
    table = [  # c_in, c_out, H, conv SF, b, (kh, kw), (ph, pw), d, head SF
        (1, 128, 28, 2_304, 64, (8, 4), (4, 0), 3_584, 917_504),
        (128, 256, 28, 294_912, 9, (8, 8), (4, 4), 4_096, 1_048_576),
        (256, 256, 14, 589_824, 6, (4, 4), (2, 2), 4_096, 1_048_576),
        (256, 512, 14, 589_824, 6, (8, 4), (4, 2), 4_096, 1_048_576),
        (512, 512, 7, 1_179_648, 4, (4, 2), (2, 1), 4_096, 1_048_576),
        (512, 512, 3, 1_179_648, 4, (2, 1), (1, 0), 3_072, 786_432),
    ]
    for quirks in (REFERENCE, DEFAULT):  # the rule (and so the head size) is profile-independent
        model = built("vgg8b", quirks)
        convs = [b for b in model.blocks if b.kind == "conv"]
        info = model.param_info()
        assert len(convs) == len(table)
        for blk, (cin, cout, h, sf, b, k, p, d, hsf) in zip(convs, table):
            assert (blk.c_in, blk.c_out, blk.h_out, blk.w_out) == (cin, cout, h, h)
            assert blk.sf == sf and info[blk.name + ".fwd"]["sf"] == sf
            assert info[blk.name + ".fwd"]["bound"] == b
            assert (blk.pool.kh, blk.pool.kw) == k and (blk.pool.ph, blk.pool.pw) == p
            assert blk.head.d_in == d and info[blk.head.name]["sf"] == hsf
            assert info[blk.name + ".fwd"]["amp"] == 640  # Q3 as executed
        fc = [b for b in model.blocks if b.kind == "linear"]
        assert [(b.d_in, b.d_out) for b in fc] == [(512, 1024)]
        assert info["fc0.fwd"]["sf"] == 131_072 and info["fc0.fwd"]["bound"] == 13
        assert info["fc0.head"]["sf"] == 262_144
        assert info["output"]["sf"] == 262_144 and info["output"]["bound"] == 9


def test_vgg8b_cifar_and_vgg11b_head_pools():
    m = built("vgg8b_cifar10", REFERENCE)
    convs = [b for b in m.blocks if b.kind == "conv"]
    assert [b.sf for b in convs] == [6_912, 294_912, 589_824, 589_824, 1_179_648, 1_179_648]
    assert [(b.pool.kh, b.pool.kw) for b in convs] == [(8, 4), (8, 8), (4, 4), (8, 4), (4, 2), (2, 1)]
    assert all((b.pool.ph, b.pool.pw) == (0, 0) and b.head.d_in == 4096 for b in convs)
    assert [b.h_out for b in convs] == [32, 32, 16, 16, 8, 4]
    fc = m.param_info()["fc0.fwd"]
    assert m.param_shapes()["fc0.fwd"] == (1024, 2048) and fc["sf"] == 524_288
    m = built("vgg11b")
    convs = [b for b in m.blocks if b.kind == "conv"]
    assert [(b.pool.kh, b.pool.kw) for b in convs] == [(8, 4), (8, 4), (8, 4), (8, 8), (4, 4), (8, 4), (4, 2),
                                                       (4, 2), (2, 1)]
    assert all((b.pool.ph, b.pool.pw) == (0, 0) for b in convs)
    assert m.param_shapes()["fc0.fwd"] == (1024, 2048)


MLP_TABLE = {  # docs/algorithm.md §6 per-layer MLP tables: name -> (shape, SF, b, A, eta)
    "mlp1": {"block0.fwd": ((100, 784), 200_704, 10, 640, 12_000), "block0.head": ((10, 100), 25_600, 30, 1, 3_000),
             "block1.fwd": ((50, 100), 25_600, 30, 640, 12_000), "block1.head": ((10, 50), 12_800, 43, 1, 3_000),
             "output": ((10, 50), 12_800, 43, 1, 3_000)},
    "mlp2": {"block0.fwd": ((200, 784), 200_704, 10, 640, 10_000),
             "block1.fwd": ((100, 200), 51_200, 21, 640, 10_000),
             "block2.fwd": ((50, 100), 25_600, 30, 640, 10_000), "block0.head": ((10, 200), 51_200, 21, 1, 8_000),
             "block1.head": ((10, 100), 25_600, 30, 1, 8_000), "block2.head": ((10, 50), 12_800, 43, 1, 8_000),
             "output": ((10, 50), 12_800, 43, 1, 8_000)},
    "mlp3": {"block0.fwd": ((1024, 784), 200_704, 10, 640, 28_000),
             "block1.fwd": ((1024, 1024), 262_144, 9, 640, 28_000),
             "block2.head": ((10, 1024), 262_144, 9, 1, 500), "output": ((10, 1024), 262_144, 9, 1, 500)},
    "mlp3_fmnist": {"block2.fwd": ((1024, 1024), 262_144, 9, 640, 29_000),
                    "output": ((10, 1024), 262_144, 9, 1, 6_000)},
    "mlp4": {"block0.fwd": ((3000, 3072), 786_432, 5, 640, 19_000),
             "block1.fwd": ((3000, 3000), 768_000, 5, 640, 19_000),
             "block2.head": ((10, 3000), 768_000, 5, 1, 7_500), "output": ((10, 3000), 768_000, 5, 1, 7_500)},
}


@pytest.mark.parametrize("name", sorted(MLP_TABLE))
def test_mlp_per_layer_table(name):
    m = built(name)
    info, shapes = m.param_info(), m.param_shapes()
    for layer, (shape, sf, b, amp, eta) in MLP_TABLE[name].items():
        assert shapes[layer] == shape, layer
        got = info[layer]
        assert (got["sf"], got["bound"], got["amp"], got["decay"]) == (sf, b, amp, eta), layer
    assert m.spec["lr_inv"] == 512 and m.spec["lr_amp_factor"] == 640 and m.spec["slope_inv"] == 4
    assert m.spec["dropout"] == (0.1 if name == "mlp4" else 0.0)


# ------------------------------------------------------------------------------------------------ init
INIT_BOUNDS = {9: 64, 27: 60, 50: 43, 100: 30, 200: 21, 512: 13, 784: 10, 1024: 9, 1152: 9, 2048: 6, 2304: 6,
               3000: 5, 3072: 5, 3584: 5, 4096: 4, 4608: 4}


def test_init_bound_table():
    for fan_in, b in INIT_BOUNDS.items():
        assert L.init_bound(fan_in) == b, fan_in
    assert (1372 * 128 * 1732) // (3 * 10**6) == 101  # fan_in 9 before the cap of 64


def test_init_is_deterministic_per_seed_and_bounded():
    a, b, c = nm.build("mlp1", seed=5), nm.build("mlp1", seed=5), nm.build("mlp1", seed=6)
    info = a.param_info()
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])
        assert not np.array_equal(a.weights[k], c.weights[k]), k
        bound = info[k]["bound"]
        for m in (a, c):
            w = m.weights[k]
            assert w.min() >= -bound and w.max() <= bound
        if a.weights[k].size >= 40 * (2 * bound + 1):  # then every integer of [-b, b] is drawn
            assert set(np.unique(a.weights[k]).tolist()) == set(range(-bound, bound + 1)), k
    # the init stream does not depend on the profile or on the storage width
    d = nm.build("mlp1", profile="reference", weight_bits=16, seed=5)
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], d.weights[k])
        assert d.weights[k].dtype == np.int16


def test_init_draw_order_is_construction_order():
    """Kaiming draws: block0 fwd, block0 head, block1 fwd, ..., output, each C order, one Rng(seed, 1)."""
    m = nm.build("mlp1", seed=3)
    rng = Rng(3, 1)
    info = m.param_info()
    assert list(m.param_shapes()) == ["block0.fwd", "block0.head", "block1.fwd", "block1.head", "output"]
    for name, shape in m.param_shapes().items():
        b = info[name]["bound"]
        np.testing.assert_array_equal(m.weights[name], rng.randint(-b, b, shape))


# ------------------------------------------------------------------------------------------------ descriptions
def test_description_json_round_trip():
    for name in ("mlp2", "cnn_small", "mcu_cnn", "vgg8b_fmnist"):
        m = nm.build(name, seed=2)
        text = m.to_json()
        spec = json.loads(text)
        assert "dataset" not in spec and "augment" not in spec  # training defaults are not architecture
        m2 = Model(spec, weight_bits=m.weight_bits, seed=2)  # the width is a preset default, not architecture
        assert m2.spec == m.spec and m2.to_json() == text
        assert m2.describe() == m.describe()
        for k in m.weights:
            np.testing.assert_array_equal(m.weights[k], m2.weights[k])


def test_description_through_api_dict_and_file(tmp_path):
    spec = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[16])
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(spec))
    a, b = nm.build(spec, seed=1), nm.build(str(p), seed=1)
    assert a.spec == b.spec
    assert a.spec["lr_inv"] == 512 and a.spec["fwd_decay_inv"] == 12000  # defaults filled in
    assert [r["name"] for r in a.describe()] == ["block0.fwd", "block0.head", "output"]


BASE_MLP = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[32])
BASE_CNN = dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10, features=[["conv", 4, 3, 1, 1], ["maxpool", 2, 2]],
                fc_hidden=[16])


@pytest.mark.parametrize("base, change, key", [
    (BASE_MLP, {"lr_inv": 0}, "lr_inv"),
    (BASE_MLP, {"lr_inv": -512}, "lr_inv"),
    (BASE_MLP, {"lr_inv": 512.0}, "lr_inv"),
    (BASE_MLP, {"lr_amp_factor": 0}, "lr_amp_factor"),
    (BASE_MLP, {"fwd_decay_inv": -1}, "fwd_decay_inv"),
    (BASE_MLP, {"slope_inv": 6}, "slope_inv"),
    (BASE_MLP, {"dropout": 0.12}, "dropout"),
    (BASE_MLP, {"dropout": 1.0}, "dropout"),
    (BASE_MLP, {"num_classes": 1}, "num_classes"),
    (BASE_MLP, {"one_hot_value": 200}, "one_hot_value"),
    (BASE_MLP, {"hidden": []}, "hidden"),
    (BASE_MLP, {"hidden": [10, 0]}, "hidden"),
    (BASE_MLP, {"input_shape": []}, "input_shape"),
    (BASE_MLP, {"input_shape": [28, -28]}, "input_shape"),
    (BASE_MLP, {"input_shape": "784"}, "input_shape"),
    (BASE_MLP, {"learning_rate": 0.01}, "learning_rate"),
    (BASE_MLP, {"kind": "rnn"}, "kind"),
    (BASE_CNN, {"features": [["conv", 4, 3, 2, 1]]}, "conv"),
    (BASE_CNN, {"features": [["maxpool", 2, 2]]}, "features"),
    (BASE_CNN, {"features": []}, "features"),
    (BASE_CNN, {"features": [["conv", 4, 3, 1, 1], ["avgpool", 2, 2]]}, "avgpool"),
    (BASE_CNN, {"features": [["conv", 4, 3, 1, 1], ["dropout", 0.12]]}, "dropout"),
    (BASE_CNN, {"input_shape": [784]}, "input_shape"),
    (BASE_CNN, {"input_shape": [1, 28]}, "input_shape"),
])
def test_nonsense_descriptions_raise_spec_error_naming_the_key(base, change, key):
    spec = {**base, **change}
    with pytest.raises(SpecError) as e:
        Model(spec)
    assert key in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset_and_bad_settings():
    with pytest.raises(SpecError, match="nosuch"):
        nm.build("nosuch")
    with pytest.raises(SpecError, match="weight_bits"):
        nm.build("mlp1", weight_bits=8)
    with pytest.raises(ValueError, match="profile"):
        nm.build("mlp1", profile="bogus")


def test_weights_are_checked_on_load():
    shapes = nm.build("mlp1").param_shapes()
    good = {k: np.zeros(s, np.int32) for k, s in shapes.items()}
    Model(preset("mlp1"), weights=good)
    bad = dict(good, output=np.zeros((10, 51), np.int32))
    with pytest.raises(SpecError, match="output"):
        Model(preset("mlp1"), weights=bad)
    with pytest.raises(SpecError, match="output"):
        Model(preset("mlp1"), weights=dict(good, output=np.zeros((10, 50), np.float32)))
    with pytest.raises(SpecError, match="int16"):
        Model(preset("mlp1"), weight_bits=16, weights=dict(good, output=np.full((10, 50), 40_000, np.int32)))
    with pytest.raises(SpecError, match="block1.head"):
        Model(preset("mlp1"), weights={k: v for k, v in good.items() if k != "block1.head"})


# ------------------------------------------------------------------------------------------------ inputs
def test_input_checks():
    m = nm.build("mlp1")
    x = np.zeros((2, 784), np.int8)
    assert m.forward(x).shape == (2, 10)
    assert m.forward(x.reshape(2, 1, 28, 28)).shape == (2, 10)  # MLPs flatten
    with pytest.raises(SpecError, match="float"):
        m.forward(x.astype(np.float32))
    with pytest.raises(SpecError, match="shape"):
        m.forward(np.zeros((2, 783), np.int8))
    with pytest.raises(SpecError, match="int8 range"):
        m.forward(np.full((2, 784), 200, np.int16))
    with pytest.raises(SpecError, match="labels"):
        m.train_step(x, np.array([0, 10]), 512)
    with pytest.raises(SpecError, match="labels"):
        m.train_step(x, np.array([-1, 0]), 512)
    with pytest.raises(SpecError, match="lr_inv"):
        m.train_step(x, np.array([0, 1]), 0)
    c = nm.build("cnn_small")
    with pytest.raises(SpecError, match="shape"):
        c.forward(np.zeros((2, 784), np.int8))  # a CNN does not flatten its input
    with pytest.raises(SpecError, match="shape"):
        c.forward(np.zeros((2, 1, 28, 27), np.int8))


def test_prediction_ties_go_to_the_lowest_index():
    m = nm.build("mlp1")
    m.weights = {k: np.zeros_like(v) for k, v in m.weights.items()}  # every score 0
    assert m.predict(np.zeros((3, 784), np.int8)).tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------------------ profiles
DOCUMENTED_DIFFERENCES = {  # switch -> (reference, default); docs/profiles.md
    "error_wrap_int8": (True, False),
    "cnn_fc_double_update": (True, False),
    "maxpool_pad_zero": (True, False),
    "cnn_fe_tail_dropout": (True, False),
    "augment_per_batch": (True, False),
    "drop_last_eval": (True, False),
    "monitor_test": (True, False),
    "loss_wrap_int8": (True, False),
    "maxpool_pad_one_sided": (True, False),
}
DOCUMENTED_SAME = {"conv_amp_adjust": False, "relu_grad_asymmetric_sat": True}


def test_profiles_differ_exactly_in_the_documented_switches():
    names = {f.name for f in fields(Quirks)}
    assert names == set(DOCUMENTED_DIFFERENCES) | set(DOCUMENTED_SAME)
    for n, (ref, dflt) in DOCUMENTED_DIFFERENCES.items():
        assert getattr(REFERENCE, n) is ref and getattr(DEFAULT, n) is dflt, n
    for n, v in DOCUMENTED_SAME.items():
        assert getattr(REFERENCE, n) is v and getattr(DEFAULT, n) is v, n
    assert get_profile("reference") == REFERENCE and get_profile("default") == DEFAULT
    assert Quirks.from_dict(REFERENCE.to_dict()) == REFERENCE
    with pytest.raises(ValueError, match="unknown"):
        Quirks.from_dict({**DEFAULT.to_dict(), "bogus": True})
    with pytest.raises(ValueError, match="missing"):
        Quirks.from_dict({k: v for k, v in DEFAULT.to_dict().items() if k != "drop_last_eval"})


def test_docs_profiles_table_matches_the_code():
    doc = (REPO / "docs" / "profiles.md").read_text()
    for f in fields(Quirks):
        row = next((ln for ln in doc.splitlines() if ln.startswith("|") and f"`{f.name}`" in ln), None)
        assert row is not None, f"{f.name} missing from docs/profiles.md"
        cells = [c.strip() for c in row.strip("|").split("|")]
        vals = [c for c in cells if c in ("on", "off")]
        assert vals[:2] == ["on" if getattr(REFERENCE, f.name) else "off",
                            "on" if getattr(DEFAULT, f.name) else "off"], row


def _wrap_case():
    """1 input, 1 hidden unit, 2 classes; a zero forward layer makes h = -36 (the dead-start constant).

    output score of class 0: clip(tdiv(-36 * 1000, 256), -127, 127) = clip(-140) = -127 < -96
    e = -127 - 32 = -159; the reference wraps it to int8: +97.
    """
    spec = dict(kind="mlp", input_shape=[1], num_classes=2, hidden=[1], lr_inv=1, fwd_decay_inv=0, head_decay_inv=0)
    w = {"block0.fwd": np.array([[0]]), "block0.head": np.array([[0], [0]]), "output": np.array([[1000], [0]])}
    return spec, w


def test_q1_error_wrap_fires_in_reference_only():
    assert output_error(np.array([[-127, 5]]), np.array([[32, 0]]), True).tolist() == [[97, 5]]
    assert output_error(np.array([[-127, 5]]), np.array([[32, 0]]), False).tolist() == [[-159, 5]]
    assert output_error(np.array([[-96, -127]]), np.array([[32, 0]]), True).tolist() == [[-128, -127]]  # no wrap
    spec, w = _wrap_case()
    x, y = np.array([[5]], np.int8), np.array([0])
    got = {}
    for profile in ("reference", "default"):
        m = Model(spec, profile, weights=w)
        assert m.forward(x).tolist() == [[-127, 0]]
        m.train_step(x, y, 1)
        got[profile] = int(m.weights["output"][0, 0])
    # W_out[0,0] - tdiv(e * h, lr_inv * 1), h = -36
    assert got["reference"] == 1000 - 97 * -36 == 4492  # wrapped error: the weight grows, wrong direction
    assert got["default"] == 1000 - (-159) * -36 == -4724  # exact error: the score is pushed up


def test_q2_double_update_changes_only_cnn_fc_blocks():
    spec = preset("cnn_small")
    x, y = random_batch(Model(spec), b=4, seed=3)
    single = replace(REFERENCE, cnn_fc_double_update=False)
    a, b = Model(spec, REFERENCE, seed=4), Model(spec, single, seed=4)
    # lr_inv = 1 so that the first step already moves the FC forward layer (divisor 640, not 327 680)
    a.train_step(x, y, 1)
    b.train_step(x, y, 1)
    for k in a.weights:
        if k.startswith("fc"):
            assert not np.array_equal(a.weights[k], b.weights[k]), k
        else:  # conv blocks and the output layer do not see the second FC update
            np.testing.assert_array_equal(a.weights[k], b.weights[k], err_msg=k)
    # MLPs are not affected by the switch
    m1, m2 = Model(preset("mlp1"), REFERENCE, seed=4), Model(preset("mlp1"), single, seed=4)
    xm = x.reshape(4, -1)
    m1.train_step(xm, y, 512)
    m2.train_step(xm, y, 512)
    for k in m1.weights:
        np.testing.assert_array_equal(m1.weights[k], m2.weights[k])


def test_q3_intended_amp_values():
    adjusted = built("vgg8b", replace(REFERENCE, conv_amp_adjust=True))
    info = adjusted.param_info()
    assert [info[f"conv{i}.fwd"]["amp"] for i in range(6)] == [15_360, 7_680, 7_680, 3_840, 3_840, 2_560]
    assert info["fc0.fwd"]["amp"] == 640 and info["output"]["amp"] == 1


def _head_pool(profile_quirks, h_nchw):
    """Head max-pool of VGG8B conv4 (7x7 map, kernel (4, 2), pad (2, 1)) applied to a crafted map."""
    blk = built("vgg8b", profile_quirks).blocks[4]
    assert (blk.h_out, blk.pool.kh, blk.pool.kw, blk.pool.ph, blk.pool.pw) == (7, 4, 2, 2, 1)
    flat = blk.head_input(np.ascontiguousarray(h_nchw.transpose(0, 2, 3, 1)))  # blocks run NHWC
    return flat.reshape(h_nchw.shape[0], h_nchw.shape[1], blk.pool.oh, blk.pool.ow)


def test_q4_q14_head_pooling_on_a_crafted_map():
    h = np.full((1, 512, 7, 7), -36, np.int8)  # the dead-start map: every unit outputs -36
    h[0, 1, 6, 3] = 91  # channel 1: a maximum in the last real row
    ref = _head_pool(REFERENCE, h)
    dflt = _head_pool(DEFAULT, h)
    q4_only = _head_pool(replace(DEFAULT, maxpool_pad_zero=True), h)
    q14_only = _head_pool(replace(DEFAULT, maxpool_pad_one_sided=True), h)
    # Reference: windows start at (-2, -1); pads act as 0 and beat -36 wherever a window touches one.
    np.testing.assert_array_equal(ref[0, 0], [[0, 0, 0, 0], [0, -36, -36, -36]])
    # ... and the last real row (6) is never read (Q14): the 91 is lost.
    np.testing.assert_array_equal(ref[0, 1], ref[0, 0])
    # Default: pads never win, windows cover every real cell (rows 0-7, cols 0-7; row/col 7 padding).
    np.testing.assert_array_equal(dflt[0, 0], np.full((2, 4), -36))
    np.testing.assert_array_equal(dflt[0, 1], [[-36] * 4, [-36, 91, -36, -36]])
    # Q4 alone: zero pads at the bottom/right of the centred geometry.
    np.testing.assert_array_equal(q4_only[0, 0], [[-36, -36, -36, 0], [0, 0, 0, 0]])
    # Q14 alone: -inf pads, one-sided windows: nothing from the padding, row 6 still never read.
    np.testing.assert_array_equal(q14_only[0, 0], np.full((2, 4), -36))
    np.testing.assert_array_equal(q14_only[0, 1], np.full((2, 4), -36))


def test_q5_relu_gradient_at_the_saturated_ends():
    s = np.array([[-127, -126, -1, 0, 126, 127]], np.int8)
    delta = np.array([[1000, 1000, 1000, 1000, 1000, 1000]], np.int64)
    both = L.relu_backward(delta, s, 4, True)
    assert both.tolist() == [[250, 250, 250, 1000, 1000, 0]]  # -127 passes at 1/4, 127 is blocked
    assert L.relu_backward(-delta, s, 4, True).tolist() == [[-250, -250, -250, -1000, -1000, 0]]
    assert L.relu_backward(np.full((1, 6), 3), s, 4, True).tolist() == [[0, 0, 0, 3, 3, 0]]  # |d| < 4 -> 0
    assert L.relu_backward(delta, s, 4, False).tolist() == [[0, 250, 250, 1000, 1000, 0]]
    assert REFERENCE.relu_grad_asymmetric_sat and DEFAULT.relu_grad_asymmetric_sat  # kept in both profiles


def test_q6_tail_dropout_only_in_reference():
    kinds = lambda m: [type(s).__name__ for s in m.stages]  # noqa: E731
    ref, dflt = built("vgg8b_fmnist", REFERENCE), built("vgg8b_fmnist", DEFAULT)
    assert kinds(ref)[-5:] == ["ConvBlock", "Dropout", "MaxPool", "LinearBlock", "Dropout"]
    assert kinds(dflt)[-4:] == ["ConvBlock", "MaxPool", "LinearBlock", "Dropout"]


def test_docs_arithmetic_prng_vectors_match_the_code():
    """docs/arithmetic.md §6 test vectors, recomputed (each column from a fresh generator)."""
    doc = (REPO / "docs" / "arithmetic.md").read_text()
    rows = [ln for ln in doc.splitlines() if ln.startswith("| `Rng(seed=")]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        seed, stream = map(int, re.match(r"`Rng\(seed=(\d+), stream=(\d+)\)`", cells[0]).groups())
        assert Rng(seed, stream).state == int(cells[1].strip("`"), 16)
        outs = [int(v.strip(" `"), 16) for v in cells[2].split(",")]
        assert Rng(seed, stream).next_u64(3).tolist() == outs
        assert Rng(seed, stream).below(1000, 5).tolist() == [int(v) for v in cells[3].split(",")]
        assert Rng(seed, stream).permutation(10).tolist() == [int(v) for v in cells[4].split(",")]
    assert Rng(0, 1).keep_mask(150, (10,)).tolist() == [0, 1, 1, 0, 0, 1, 1, 1, 1, 0]
    assert "`0 1 1 0 0 1 1 1 1 0`" in doc


def _splitmix_reference(seed: int, stream: int, n: int):
    """Scalar transcription of the docs/arithmetic.md pseudo-code, independent of the vectorised Rng."""
    m = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    state = mix((seed & m) ^ ((stream * 0xD1B54A32D192ED03) & m))
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & m
        out.append(mix(state))
    return out


def test_rng_matches_the_scalar_definition():
    for seed, stream in ((0, 1), (42, 3), (2**64 - 1, 2), (123456789, 0)):
        r = Rng(seed, stream)
        raw = _splitmix_reference(seed, stream, 40)
        assert r.next_u64(20).tolist() + r.next_u64(20).tolist() == raw  # state carries over between calls
        r = Rng(seed, stream)
        bounds = list(range(1, 41))
        assert r.below(np.array(bounds), 40).tolist() == [((v >> 32) * n) >> 32 for v, n in zip(raw, bounds)]
        # Fisher-Yates: for i = n-1 .. 1, j = below(i + 1)
        p = list(range(12))
        for k, i in enumerate(range(11, 0, -1)):
            j = ((raw[k] >> 32) * (i + 1)) >> 32
            p[i], p[j] = p[j], p[i]
        assert Rng(seed, stream).permutation(12).tolist() == p
        keep = [int(((v >> 32) * 1000) >> 32 >= 150) for v in raw[:10]]
        assert Rng(seed, stream).keep_mask(150, (2, 5)).ravel().tolist() == keep


def test_geometry_and_label_errors_are_spec_errors_naming_the_problem():
    import numpy as np

    from nitro_mcu.spec import SpecError
    from nitro_mcu.trainer.network import Model

    with pytest.raises(SpecError, match="does not fit a 4x4 input"):
        Model(dict(kind="cnn", input_shape=[1, 4, 4], num_classes=10, features=[["conv", 4, 7, 1, 0]]))
    with pytest.raises(SpecError, match="kernel 2 != stride 1"):
        Model(dict(kind="cnn", input_shape=[1, 8, 8], num_classes=10,
                   features=[["conv", 4, 3, 1, 1], ["maxpool", 2, 1]]))
    m = Model(dict(kind="mlp", input_shape=[4], num_classes=3, hidden=[3]))
    with pytest.raises(SpecError, match="labels must be integers"):
        m.train_step(np.zeros((2, 4), np.int8), np.array([0.5, 1.0]), 512)
