"""New classes on the device (issue 20, item 4): spare output slots, add_class, the rehearsal buffer in flash.

The Python reference (nitro_mcu/trainer/classes.py) and the generated C (templates/classes.*.j2) must train the
spare-class model identically: host-compiled C through ctypes, the harness under UBSan/ASan, and the emulated M4.
"""
from __future__ import annotations

import subprocess
import sys

import struct
import zlib

import numpy as np
import pytest

from nitro_mcu import checkpoint as ck
from nitro_mcu.codegen import CodegenError, convert
from nitro_mcu.codegen.status import ERRORS as STATUS
from nitro_mcu.device import flashfw
from nitro_mcu.device.compiled import CompiledModel
from nitro_mcu.device.flags import STRICT_CFLAGS
from nitro_mcu.device.flashsim import CkptLib, NorFlash, Storage
from nitro_mcu.device.harness import run_host_harness, run_mcu
from nitro_mcu.device.protocol import Session
from nitro_mcu.spec import SpecError
from nitro_mcu.trainer.classes import Rehearsal, add_class, train_step_rehearsal, with_spare_classes
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.rng import Rng

MLP = dict(kind="mlp", input_shape=[30], num_classes=3, hidden=[16], fwd_decay_inv=12000, head_decay_inv=3000)
CNN = dict(kind="cnn", input_shape=[1, 8, 8], num_classes=3, features=[["conv", 4, 3, 1, 1], ["maxpool", 2, 2]],
           fc_hidden=[12], pred_decoder_dim=16)
LR = 64


def task(shape, n=160, seed=3):
    """Four separable classes of int8 samples: class c is noise around a class-specific pattern."""
    r = Rng(seed, 9)
    d = int(np.prod(shape))
    protos = r.randint(-90, 90, (4, d))
    y = r.randint(0, 3, (n,))
    x = np.clip(protos[y] + r.randint(-30, 30, (n, d)), -128, 127).astype(np.int8)
    return x.reshape((n, *shape)), y


def pretrained(spec, steps=12, seed=5):
    m = Model(spec, "default", 16, seed=seed)
    x, y = task(m.input_shape)
    old = y < 3
    x, y = x[old], y[old]
    for s in range(steps):
        i = (s * 8) % (len(x) - 8)
        m.train_step(x[i:i + 8], y[i:i + 8], LR)
    return m


def assert_same(cm: CompiledModel, py: Model):
    for k, w in cm.get_weights().items():
        np.testing.assert_array_equal(w, py.weights[k], err_msg=k)
    assert cm.rng_state == py.dropout_rng.state


# ---- Python: the spare rows ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn"])
def test_spare_rows_change_nothing_until_a_class_is_added(spec):
    """Zero spare rows: training on the old classes gives the old model's weights exactly, the rows stay zero."""
    m = pretrained(spec, steps=2)
    s = with_spare_classes(m, 2)
    assert (s.num_classes, s.active_classes) == (5, 3)
    x, y = task(m.input_shape, seed=8)
    x, y = x[y < 3], y[y < 3]
    for i in range(0, 48, 8):
        assert m.train_step(x[i:i + 8], y[i:i + 8], LR).correct == s.train_step(x[i:i + 8], y[i:i + 8], LR).correct
    for k, w in m.weights.items():
        np.testing.assert_array_equal(s.weights[k][:w.shape[0]], w, err_msg=k)
        assert not s.weights[k][w.shape[0]:].any(), k
    np.testing.assert_array_equal(s.predict(x), m.predict(x))
    with pytest.raises(SpecError, match="labels must lie in"):
        s.train_step(x[:2], np.array([0, 3]), LR)        # slot 3 is not a class yet
    assert add_class(s) == 3 and add_class(s) == 4
    with pytest.raises(SpecError, match="no spare class left"):
        add_class(s)


# ---- host-compiled C: the same steps -------------------------------------------------------------------
@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn"])
def test_spare_class_model_learns_a_new_class_identically_in_python_and_c(spec):
    m = pretrained(spec)
    cm = CompiledModel(convert(m, batch=8, train=True, name="ncls", spare_classes=1, rehearsal=3))
    cm.set_lr_inv(LR)
    py = with_spare_classes(m, 1)
    assert (cm.num_classes, cm.active_classes) == (4, 3)
    x, y = task(m.input_shape, seed=9)
    flash = NorFlash(256, 8)
    st = Storage(flash)
    assert cm.rehearsal_clear(st) == 0
    buf = Rehearsal(py, 3)
    for label in range(3):
        for i in np.flatnonzero(y == label)[:3]:
            assert cm.rehearsal_add(st, x[i], label) == buf.add(x[i], label)
    assert cm.rehearsal_add(st, x[np.flatnonzero(y == 0)[3]], 0) < 0   # the class is full
    new = np.flatnonzero(y == 3)
    with pytest.raises(RuntimeError, match="ERR_LABEL"):
        cm.train_rehearsal(st, x[new[:4]], np.full(4, 3), 4)  # not added yet: refused, nothing changed
    assert cm.add_class() == add_class(py) == 3
    assert_same(cm, py)
    for s in range(6):
        idx = new[(s * 4) % (len(new) - 4):][:4]
        k = 4 if s % 2 else 2
        got = cm.train_rehearsal(st, x[idx], y[idx], k)
        want = train_step_rehearsal(py, buf, x[idx], y[idx], k, LR).correct
        assert got == want
    assert cm.train_rehearsal(st, None, None, 5) == train_step_rehearsal(py, buf, x[:0], y[:0], 5, LR).correct
    assert_same(cm, py)
    assert py.weights["output"][3].any()                   # the new row learnt
    sc, cls = cm.predict_scores(x[:20])
    np.testing.assert_array_equal(sc, py.predict_scores(x[:20]))
    np.testing.assert_array_equal(cls, py.predict(x[:20]))
    assert not flash.violations
    with pytest.raises(RuntimeError, match="ERR_RANGE"):
        cm.add_class()


def test_two_new_classes_with_a_frozen_prefix_and_dropout_match_python():
    """The streamed frozen prefix and the dropout draws interleave with the exemplar draws identically."""
    spec = dict(CNN, dropout=0.1)
    m = Model(spec, "default", 16, seed=3, trainable=["fc0", "output"])
    cm = CompiledModel(convert(m, batch=8, train=True, name="nfroz", spare_classes=2, rehearsal=2))
    cm.set_lr_inv(LR)
    py = with_spare_classes(m, 2)
    r = Rng(1, 9)
    x, y = r.randint(-128, 127, (40, 1, 8, 8)).astype(np.int8), r.randint(0, 4, (40,))
    st = Storage(NorFlash(256, 4))
    assert cm.rehearsal_clear(st) == 0
    buf = Rehearsal(py, 2)
    for i in range(8):
        if y[i] < 3 and buf.count(int(y[i])) < 2:
            assert cm.rehearsal_add(st, x[i], int(y[i])) == buf.add(x[i], int(y[i]))
    assert [cm.add_class(), cm.add_class()] == [add_class(py), add_class(py)] == [3, 4]
    for s in range(4):
        xs, ys = x[8 + s * 4:12 + s * 4], y[8 + s * 4:12 + s * 4]
        assert cm.train_rehearsal(st, xs, ys, 4) == train_step_rehearsal(py, buf, xs, ys, 4, LR).correct
    assert_same(cm, py)


def test_rehearsal_buffer_survives_a_reset_and_a_cut_record():
    m = pretrained(MLP)
    cm = CompiledModel(convert(m, batch=8, train=True, name="nreset", spare_classes=2, rehearsal=2))
    x, y = task(m.input_shape, seed=10)
    flash = NorFlash(64, 24)
    cm.set_lr_inv(LR)
    st = Storage(flash)
    assert cm.rehearsal_open(st) == -cm_ckpt_empty(cm)  # erased: never cleared
    assert cm.rehearsal_clear(st) == 0
    assert cm.add_class() == 3
    added = []
    for label in (0, 1, 3):
        i = int(np.flatnonzero(y == label)[0])
        assert cm.rehearsal_add(st, x[i], label) == len(added)
        added.append((i, label))
    # a power cut during the next record's programming: the record is torn, its commit word never written
    flash.arm(flash.ops + 1, "half")
    cm.rehearsal_add(st, x[np.flatnonzero(y == 2)[0]], 2)
    flash.power_on()
    cm.reset()                                             # a reset: RAM index and the added class are gone
    cm.set_lr_inv(LR)
    assert cm.active_classes == 3 and cm.rehearsal_count() == 0
    assert cm.rehearsal_open(st) == 3                      # ... and back from flash, the torn record skipped
    assert cm.active_classes == 4 and cm.rehearsal_count(3) == 1 and cm.rehearsal_count(2) == 0
    i2 = int(np.flatnonzero(y == 2)[1])
    assert cm.rehearsal_add(st, x[i2], 2) == 3             # appended after the torn record
    added.append((i2, 2))
    # training after the reset draws from the restored buffer exactly as Python's buffer of the same exemplars
    py = with_spare_classes(m, 2)
    add_class(py)
    buf = Rehearsal(py, 2)
    for i, label in added:
        buf.add(x[i], label)
    for s in range(3):
        assert cm.train_rehearsal(st, x[s * 4:s * 4 + 4], y[s * 4:s * 4 + 4], 4) == \
            train_step_rehearsal(py, buf, x[s * 4:s * 4 + 4], y[s * 4:s * 4 + 4], 4, LR).correct
    assert_same(cm, py)
    assert not flash.violations
    # another model's region is refused
    other = CompiledModel(convert(Model(dict(MLP, hidden=[17]), "default", 16, seed=5), batch=8, train=True,
                                  name="nother", spare_classes=2, rehearsal=2))
    assert other.rehearsal_open(st) < 0 and other.rehearsal_count() == 0


# ---- a class added on the device survives a reset through the checkpoint (format version 2) ----------------
def test_a_class_added_and_trained_stays_active_after_a_reset_and_a_checkpoint_load_without_a_rehearsal_re_add():
    m = pretrained(MLP)
    cm = CompiledModel(convert(m, batch=8, train=True, name="nkeep", spare_classes=2, rehearsal=2))
    lib = CkptLib(cm)
    py = with_spare_classes(m, 2)
    x, y = task(m.input_shape, seed=12)
    new = np.flatnonzero(y == 3)[:8]
    cm.set_lr_inv(LR)
    assert cm.add_class() == add_class(py) == 3
    assert cm.train_batch(x[new], y[new]) == py.train_step(x[new], y[new], LR).correct
    st = Storage(NorFlash(64, ck.region_bytes(py, 64) // 64))
    assert lib.save(st) == 0
    cm.reset()                                   # a reset: init returns to ACTIVE_CLASSES_INIT (3) ...
    assert cm.active_classes == 3
    assert lib.load(st) == 0                     # ... and the checkpoint brings the added class back, no rehearsal
    assert cm.active_classes == 4 and lib.export(ck.size(py)) == ck.encode(py, 1, LR)
    assert cm.train_batch(x[new], y[new]) == py.train_step(x[new], y[new], LR).correct   # label 3 accepted
    assert_same(cm, py)
    np.testing.assert_array_equal(cm.predict(x[:16]), py.predict(x[:16]))
    # a count below the generated classes or over the slots is refused (FORMAT) and changes nothing
    blob, at = lib.export(ck.size(py)), ck.OFFSETS["active_classes"]
    for count in (2, 6):
        body = bytearray(blob[:-4])
        body[at:at + 4] = struct.pack("<I", count)
        assert lib.import_(Storage(bytes(body) + struct.pack("<I", zlib.crc32(body)), 64)) == ck.ERRORS["format"]
        assert lib.export(ck.size(py)) == blob and cm.active_classes == 4



def test_a_class_with_an_exemplar_stays_active_when_the_checkpoint_is_loaded_after_rehearsal_open():
    """Boot order open, then load, with a checkpoint older than the class (power lost after its exemplar was
    kept, before the next save): the load must not drop the class, or every draw of its exemplar is refused."""
    m = pretrained(MLP)
    cm = CompiledModel(convert(m, batch=8, train=True, name="norder", spare_classes=2, rehearsal=2))
    lib = CkptLib(cm)
    x, y = task(m.input_shape, seed=13)
    py = with_spare_classes(m, 2)
    cm.set_lr_inv(LR)
    ckpt, reh = Storage(NorFlash(64, ck.region_bytes(py, 64) // 64)), Storage(NorFlash(64, 24))
    assert lib.save(ckpt) == 0                   # 3 classes
    assert cm.rehearsal_clear(reh) == 0 and cm.add_class() == 3
    assert cm.rehearsal_add(reh, x[np.flatnonzero(y == 3)[0]], 3) == 0
    cm.reset()
    cm.set_lr_inv(LR)
    assert cm.rehearsal_open(reh) == 1 and cm.active_classes == 4
    assert lib.load(ckpt) == 0
    assert cm.active_classes == 4                # the exemplar's class is still a class
    add_class(py)
    buf = Rehearsal(py, 2)
    buf.add(x[np.flatnonzero(y == 3)[0]], 3)
    assert cm.train_rehearsal(reh, x[:4], y[:4], 4) == train_step_rehearsal(py, buf, x[:4], y[:4], 4, LR).correct
    assert_same(cm, py)


def test_a_class_added_on_the_emulated_m4_is_still_active_in_a_fresh_run_that_loads_the_checkpoint():
    m = pretrained(MLP)
    conv = convert(m, batch=8, train=True, name="nkeep4", spare_classes=1, rehearsal=2)
    py = with_spare_classes(m, 1)
    x, y = task(m.input_shape, seed=12)
    new = np.flatnonzero(y == 3)
    fw = flashfw.build_flash_mcu(conv, "m4", 256)
    first = flashfw.FlashSession(int(np.prod(m.input_shape)))
    first.lr(LR)
    first.add_class()
    first.train(x[new[:8]], y[new[:8]])
    first.save()
    run = flashfw.run_flash_mcu(fw, first, b"\xff" * ck.region_bytes(py, 256))
    want = [add_class(py), py.train_step(x[new[:8]], y[new[:8]], LR).correct]
    assert run.results[:2] == want and run.results[2]["rc"] == 0
    # a fresh run (a reset: RAM as at power-on, the rehearsal region empty) on the flash the first one left
    second = flashfw.FlashSession(first.input_size)
    second.load()
    second.train(x[new[8:16]], y[new[8:16]])   # the new class's label: accepted only if the class is active
    second.export()
    second.add_class()                         # the one spare slot is taken: nothing left to add
    res = flashfw.run_flash_mcu(fw, second, run.flash).results
    assert (res[0]["rc"], res[0]["seq"], res[0]["steps"]) == (0, 1, 1)
    assert res[1] == py.train_step(x[new[8:16]], y[new[8:16]], LR).correct
    assert res[2] == ck.encode(py, 2, LR)      # the state, count included (4), equals Python's after both steps
    assert res[3] == dict((s, v) for s, v, _ in STATUS)["RANGE"]


def cm_ckpt_empty(cm) -> int:
    """The magnitude of <NAME>_CKPT_ERR_EMPTY, read from the generated header (one source for the value)."""
    import re
    h = cm.conv.sources[f"{cm.name}.h"]
    return -int(re.search(rf"{cm.name.upper()}_CKPT_ERR_EMPTY = (-?\d+)", h).group(1))


def test_spare_classes_are_refused_without_training_and_out_of_range():
    m = Model(MLP, "default", 16, seed=1)
    with pytest.raises(CodegenError, match="need train=True"):
        convert(m, batch=1, train=False, spare_classes=1)
    with pytest.raises(CodegenError, match="0..255"):
        convert(m, batch=8, train=True, spare_classes=-1)
    with pytest.raises(SpecError, match="over 256"):
        with_spare_classes(m, 254)
    assert "add_class" not in convert(m, batch=8, train=True).sources["nitro_model.h"]


# ---- the harness: sanitizers and the emulated M4 -------------------------------------------------------
def session_and_reference(spec):
    """A harness session (pretrained on 3 classes, add the 4th with rehearsal) and the Python model after it."""
    m = pretrained(spec)
    conv = convert(m, batch=8, train=True, name="nnew", spare_classes=1, rehearsal=2)
    py = with_spare_classes(m, 1)
    buf = Rehearsal(py, 2)
    x, y = task(m.input_shape, seed=11)
    s = Session(int(np.prod(m.input_shape)))
    s.lr(LR)
    s.rehearsal_clear()
    want = [0]
    for label in range(3):
        for i in np.flatnonzero(y == label)[:2]:
            s.rehearsal_add(x[i], label)
            want.append(buf.add(x[i], label))
    s.add_class()
    want.append(add_class(py))
    s.rehearsal_open()
    want.append(6)
    new = np.flatnonzero(y == 3)
    for st in range(4):
        idx = new[st * 4:st * 4 + 4]
        s.train_rehearsal(x[idx], y[idx], 4)
        want.append(train_step_rehearsal(py, buf, x[idx], y[idx], 4, LR).correct)
    s.predict(x[:16])
    s.weights()
    return conv, s, py, want, x[:16]


def check_run(res, py, want, xs):
    assert res[:len(want)] == want
    scores, cls = res[len(want)]
    np.testing.assert_array_equal(scores, py.predict_scores(xs))
    np.testing.assert_array_equal(cls, py.predict(xs))
    dump = res[-1]
    for k, w in dump.weights.items():
        np.testing.assert_array_equal(w, py.weights[k], err_msg=k)
    assert dump.rng == py.dropout_rng.state


def test_new_class_code_is_warning_free_and_sanitizer_clean(tmp_path):
    conv, s, py, want, xs = session_and_reference(CNN)
    for cc in ("gcc", "clang"):
        conv.save(file=tmp_path / cc)
        subprocess.run([cc, *STRICT_CFLAGS, "-c", str(tmp_path / cc / "nnew.c"), "-o", str(tmp_path / "o.o")],
                       check=True)
    check_run(run_host_harness(conv, s, cc="clang", sanitize=True), py, want, xs)


def test_new_class_with_rehearsal_is_bit_exact_on_the_emulated_m4():
    conv, s, py, want, xs = session_and_reference(MLP)
    check_run(run_mcu(conv, s, target="m4").results, py, want, xs)


def test_generate_cli_emits_spare_classes_and_refuses_them_without_training(tmp_path):
    cmd = [sys.executable, "-m", "nitro_mcu.cli", "generate", "mlp1", "--weights", "16", "--name", "m9"]
    ok = subprocess.run(cmd + ["--train", "--spare-classes", "2", "--rehearsal", "3", "--out", str(tmp_path / "a")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    h = (tmp_path / "a" / "m9.h").read_text()
    assert "#define M9_NUM_CLASSES 12" in h and "#define M9_ACTIVE_CLASSES_INIT 10" in h
    assert "#define M9_REHEARSAL_PER_CLASS 3" in h and "int32_t m9_add_class(void);" in h
    assert "rehearsal index and batch" in ok.stdout
    bad = subprocess.run(cmd + ["--spare-classes", "2", "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert bad.returncode == 2 and "need --train" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "b").exists()
