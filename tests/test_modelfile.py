"""The .nitro model file: round trip, integrity checks, atomic writes."""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import replace

import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu import modelfile
from nitro_mcu.modelfile import ModelFileError
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.rng import Rng
from nitro_mcu.trainer.profiles import DEFAULT


def trained_model(name="cnn_small", quirks=DEFAULT, weight_bits=32, seed=3, steps=2):
    """A model whose weights and Dropout stream have moved away from their initial values."""
    spec = preset(name)
    spec["dropout"] = 0.1  # exercise the dropout PRNG state
    m = Model(spec, quirks, weight_bits=weight_bits, seed=seed)
    r = Rng(seed, 77)
    for _ in range(steps):
        x = r.randint(-128, 127, (4,) + m.input_shape).astype(np.int8)
        m.train_step(x, r.randint(0, 9, (4,)), 1)
    return m


NORM = {"mu": [-95], "mad": [74], "dataset": "bundled"}


@pytest.fixture
def saved(tmp_path):
    m = trained_model()
    path = modelfile.save(m, tmp_path / "m.nitro", norm=NORM, training={"best_epoch": 3})
    return m, path


def _rewrite(path, meta=None, arrays=None, fix_checksum=False, drop=()):
    """Re-zip a model file with edited metadata / tensors (optionally with a recomputed checksum)."""
    with zipfile.ZipFile(path) as z:
        old_meta = json.loads(z.read("model.json"))
        old_arrays = {n: np.load(io.BytesIO(z.read(f"weights/{n}.npy"))) for n in old_meta["weight_order"]}
    meta = {**old_meta, **(meta or {})}
    arrays = {**old_arrays, **(arrays or {})}
    if fix_checksum:
        meta["sha256"] = modelfile._checksum(meta, arrays)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.json", json.dumps(meta))
        for n, a in arrays.items():
            if n in drop:
                continue
            b = io.BytesIO()
            np.save(b, a)
            z.writestr(f"weights/{n}.npy", b.getvalue())


# ------------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("profile, bits", [("default", 32), ("reference", 16)])
def test_round_trip(tmp_path, profile, bits):
    m = trained_model(quirks=nm.PROFILES[profile], weight_bits=bits)
    path = modelfile.save(m, tmp_path / "sub" / "m.nitro", norm=NORM, training={"best_epoch": 3})
    m2, meta = modelfile.load(path)
    assert m2.spec == m.spec and m2.quirks == m.quirks and m2.weight_bits == bits and m2.seed == m.seed
    assert set(m2.weights) == set(m.weights)
    for k, w in m.weights.items():
        np.testing.assert_array_equal(m2.weights[k], w)
        assert m2.weights[k].dtype == w.dtype == (np.int16 if bits == 16 else np.int32)
    assert m2.dropout_rng.state == m.dropout_rng.state != Rng(m.seed, 3).state  # the stream continues
    assert meta["norm"] == NORM and meta["training"] == {"best_epoch": 3}
    assert meta["version"] == modelfile.VERSION
    # the reloaded model behaves identically: same scores, same next training step (incl. dropout masks)
    x = Rng(1, 5).randint(-128, 127, (4,) + m.input_shape).astype(np.int8)
    y = np.array([1, 2, 3, 4])
    np.testing.assert_array_equal(m2.forward(x), m.forward(x))
    m.train_step(x, y, 512)
    m2.train_step(x, y, 512)
    for k in m.weights:
        np.testing.assert_array_equal(m2.weights[k], m.weights[k])


def test_custom_quirk_mix_round_trips(tmp_path):
    q = replace(DEFAULT, error_wrap_int8=True, maxpool_pad_one_sided=True)
    m = Model(preset("mlp1"), q, seed=1)
    m2, _ = modelfile.load(modelfile.save(m, tmp_path / "q.nitro"))
    assert m2.quirks == q
    assert nm.api.profile_name(m2) == "custom"


def test_spare_output_slots_stay_spare_after_save_and_load(tmp_path):
    """A model with spare classes comes back with the same active classes: its zero rows would otherwise score 0
    and win the argmax over negative real scores, and the generated C would count them as classes."""
    from nitro_mcu.trainer.classes import add_class, with_spare_classes
    m = with_spare_classes(trained_model("mlp1", steps=1), 3)
    add_class(m)
    m2, meta = modelfile.load(modelfile.save(m, tmp_path / "spare.nitro"))
    assert meta["active_classes"] == m2.active_classes == 11 and m2.num_classes == 13
    x = np.full((64,) + m.input_shape, -128, np.int8)
    assert m2.predict(x).max() <= 10
    full = modelfile.load(modelfile.save(trained_model("mlp1", steps=1), tmp_path / "full.nitro"))
    assert "active_classes" not in full[1] and full[0].active_classes == full[0].num_classes == 10
    _rewrite(tmp_path / "spare.nitro", meta={"active_classes": 14}, fix_checksum=True)
    with pytest.raises(ModelFileError, match="'active_classes' is 14, over the model's 13 output slots"):
        modelfile.load(tmp_path / "spare.nitro")


def test_api_save_records_data_and_history(tmp_path):
    data = nm.load_data("bundled", seed=0)
    m = nm.build("mlp1")
    path = nm.save(m, tmp_path / "a.nitro", data=data)
    _, meta = nm.load(path)
    assert meta["norm"] == {"mu": [int(v) for v in data.mu], "mad": [int(v) for v in data.mad], "dataset": "bundled",
                            "dtype": "u8",  # the raw input type: uint8 pixels
                            "classes": [str(d) for d in range(10)]}


# ------------------------------------------------------------------------------------------------ defects
def test_corrupted_payload_byte(saved, tmp_path):
    _, path = saved
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("weights/conv0.fwd.npy")
    # a byte in the middle of the (deflated) tensor payload: the zip CRC or the SHA-256 catches it
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    raw[pos] ^= 0x55
    bad = tmp_path / "bad.nitro"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError) as e:
        modelfile.load(bad)
    msg = str(e.value)
    assert "bad.nitro" in msg and ("corrupt" in msg or "checksum" in msg)
    assert "\n" not in msg


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path):
    """Flip each byte of a small model file in turn: the load either fails with ModelFileError (never another
    exception: zlib errors, 'unsupported zip version', 'encrypted' ... are all reported as corruption) or
    yields the identical model (zip header fields such as timestamps are covered by no check and do not
    matter)."""
    m = Model(dict(kind="mlp", input_shape=[16], num_classes=3, hidden=[4], dropout=0.1), seed=2)
    m.dropout_rng.next_u64(5)
    raw = modelfile.save(m, tmp_path / "small.nitro", norm=NORM).read_bytes()
    bad = tmp_path / "flip.nitro"
    detected = 0
    for pos in range(len(raw)):
        b = bytearray(raw)
        b[pos] ^= 0xFF
        bad.write_bytes(bytes(b))
        try:
            m2, meta = modelfile.load(bad)
        except ModelFileError as e:
            assert "\n" not in str(e)
            detected += 1
            continue
        assert m2.spec == m.spec and m2.quirks == m.quirks and meta["norm"] == NORM
        assert m2.weight_bits == m.weight_bits and m2.dropout_rng.state == m.dropout_rng.state
        for k in m.weights:
            np.testing.assert_array_equal(m2.weights[k], m.weights[k])
    assert detected > 0.5 * len(raw)


def test_edited_tensor_fails_the_checksum(saved):
    m, path = saved
    w = m.weights["output"].copy()
    w[0, 0] += 1
    _rewrite(path, arrays={"output": w})
    with pytest.raises(ModelFileError, match="checksum"):
        modelfile.load(path)


def test_edited_metadata_fails_the_checksum(saved):
    _, path = saved
    _rewrite(path, meta={"weight_bits": 16})
    with pytest.raises(ModelFileError, match="checksum"):
        modelfile.load(path)


def test_truncated_file(saved, tmp_path):
    _, path = saved
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10, 100, 0):
        t = tmp_path / f"trunc{cut}.nitro"
        t.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="corrupt|truncated|not a"):
            modelfile.load(t)


def test_wrong_version(saved):
    _, path = saved
    _rewrite(path, meta={"version": 99}, fix_checksum=True)
    with pytest.raises(ModelFileError, match="version 99"):
        modelfile.load(path)


def test_wrong_format_name(saved):
    _, path = saved
    _rewrite(path, meta={"format": "something-else"}, fix_checksum=True)
    with pytest.raises(ModelFileError, match="not a nitro-mcu model file"):
        modelfile.load(path)


def test_not_a_zip(tmp_path):
    p = tmp_path / "text.nitro"
    p.write_text("hello, I am not a model\n")
    with pytest.raises(ModelFileError, match="corrupt|not a zip"):
        modelfile.load(p)
    p.write_bytes(b"")
    with pytest.raises(ModelFileError):
        modelfile.load(p)
    with pytest.raises(ModelFileError, match="no such model file"):
        modelfile.load(tmp_path / "missing.nitro")
    with pytest.raises(ModelFileError, match="no such model file"):
        modelfile.load(tmp_path)  # a directory


def test_zip_without_model_json(tmp_path):
    p = tmp_path / "empty.nitro"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "nothing")
    with pytest.raises(ModelFileError, match="model.json"):
        modelfile.load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("model.json", "{not json")
    with pytest.raises(ModelFileError, match="unreadable"):
        modelfile.load(p)


def test_missing_tensor(saved):
    _, path = saved
    _rewrite(path, drop=("output",))
    with pytest.raises(ModelFileError, match="output"):
        modelfile.load(path)


def test_wrong_shape_tensor_with_valid_checksum(saved):
    m, path = saved
    _rewrite(path, arrays={"output": np.zeros((10, 31), np.int32)}, fix_checksum=True)
    with pytest.raises(ModelFileError) as e:
        modelfile.load(path)
    msg = str(e.value)
    assert "output" in msg and "shape" in msg and "(10, 31)" in msg


def test_wrong_dtype_and_range_with_valid_checksum(saved):
    m, path = saved
    _rewrite(path, arrays={"output": m.weights["output"].astype(np.float64)}, fix_checksum=True)
    with pytest.raises(ModelFileError, match="output"):
        modelfile.load(path)
    _rewrite(path, arrays={"output": np.full(m.weights["output"].shape, 40_000, np.int32)},
             meta={"weight_bits": 16}, fix_checksum=True)
    with pytest.raises(ModelFileError, match="int16"):
        modelfile.load(path)


def test_nonsense_spec_with_valid_checksum(saved):
    m, path = saved
    _rewrite(path, meta={"spec": {**m.spec, "lr_inv": 0}}, fix_checksum=True)
    with pytest.raises(ModelFileError, match="lr_inv"):
        modelfile.load(path)


# ------------------------------------------------------------------------------------------------ atomic write
def test_failed_write_keeps_the_previous_file(saved, monkeypatch):
    m, path = saved
    before = path.read_bytes()
    m.weights["output"][0, 0] += 1

    def boom(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        modelfile.save(m, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.nitro"]  # no temporary file left behind
    modelfile.load(path)


def test_failed_write_of_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    m = Model(preset("mlp1"), seed=0)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("io error (simulated)")))
    with pytest.raises(OSError, match="simulated"):
        modelfile.save(m, tmp_path / "new.nitro")
    assert list(tmp_path.iterdir()) == []


def test_save_overwrites_atomically(saved):
    m, path = saved
    m.weights["output"][0, 0] += 1
    modelfile.save(m, path)
    m2, _ = modelfile.load(path)
    assert m2.weights["output"][0, 0] == m.weights["output"][0, 0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.nitro"]


def test_load_returns_a_named_model_and_metadata_pair_and_evaluate_answers_fractions(tmp_path):
    data = nm.load_data("bundled", seed=0)
    m = nm.build(dict(kind="mlp", input_shape=[1, 28, 28], num_classes=10, hidden=[8]), seed=0)
    hist = nm.train(m, data, epochs=1, progress=False)
    loaded = nm.load(nm.save(m, tmp_path / "a.nitro", data=data, history=hist))
    model, meta = loaded                                     # unpacks as before
    assert loaded.model is model and loaded.meta is meta and nm.load.__doc__
    assert loaded.norm == meta["norm"] and loaded.training["final_lr_inv"] == hist.records[-1].lr_inv
    ev = nm.evaluate(model, data)
    assert set(ev) == {"test_accuracy", "val_accuracy", "test_images", "dataset", "data_dir"}
    correct = int(np.sum(model.predict(data.x_test, 256) == data.y_test))
    assert ev["test_accuracy"] == correct * 10000 // len(data.y_test) / 10000 and 0 < ev["test_accuracy"] < 1
