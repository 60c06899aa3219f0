"""The checkpoint format: the same bytes from Python and from the generated C, refusals with distinct codes that
leave the model as it was, and the two-slot flash layout (docs/checkpoint.md)."""
import copy
import re
import struct
import zlib

import numpy as np
import pytest

from nitro_mcu import checkpoint as ck
from nitro_mcu.codegen import convert
from nitro_mcu.device.compiled import CompiledModel
from nitro_mcu.device.flashsim import CkptLib, NorFlash, Storage
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.rng import Rng

TINY = dict(kind="mlp", input_shape=[64], num_classes=10, hidden=[16], fwd_decay_inv=12000, head_decay_inv=3000,
            dropout=0.1)
PAGE = 64


def batches(n=4, b=4, size=64, seed=1):
    r = Rng(seed, 9)
    return [(r.randint(-128, 127, (b, size)).astype(np.int8), r.randint(0, 9, (b,))) for _ in range(n)]


@pytest.fixture(scope="module", params=[16, 32])
def tiny(request):
    model = Model(TINY, "default", request.param, seed=3)
    cm = CompiledModel(convert(copy.deepcopy(model), batch=4, train=True, name=f"ck{request.param}"))
    return model, cm, CkptLib(cm)


def trained(model, cm, steps, lr=512):
    """Train C and Python the same ``steps`` batches; returns the Python model."""
    py = copy.deepcopy(model)
    cm.reset()
    for x, y in batches()[:steps]:
        cm.train_batch(x, y)
        py.train_step(x, y, lr)
    return py


def test_python_and_c_write_the_same_bytes_and_read_each_others(tiny):
    model, cm, lib = tiny
    py = trained(model, cm, 3)
    blob = ck.encode(py, step=3, lr_inv=512)
    assert len(blob) == ck.size(model) and len(blob) % 4 == 0
    assert lib.export(len(blob)) == blob                       # device -> the Python encoder's bytes
    c = ck.decode(blob, model)
    assert (c.step, c.lr_inv, c.rng_state, c.weight_bits) == (3, 512, py.dropout_rng.state, model.weight_bits)
    back = copy.deepcopy(model)
    ck.apply(back, c)
    for k, w in py.weights.items():
        np.testing.assert_array_equal(back.weights[k], w, err_msg=k)
        assert back.weights[k].dtype == w.dtype                # native width
    # Python -> device: import a checkpoint Python wrote for a state the C never had
    py.train_step(*batches()[3], 256)
    other = ck.encode(py, step=9, lr_inv=256)
    cm.reset()
    assert lib.import_(Storage(other, PAGE)) == 0
    assert lib.export(len(other)) == other and lib.steps() == 9 and cm.lr_inv == 256
    assert cm.rng_state == py.dropout_rng.state


def test_export_in_any_chunks_and_any_order_gives_the_same_bytes(tiny):
    model, cm, lib = tiny
    py = trained(model, cm, 2)
    blob = ck.encode(py, 2)
    assert lib.export(len(blob), 7) == blob and lib.export(len(blob), 1000) == blob
    buf = bytearray(len(blob))
    f = lib.f["ckpt_export"]
    import ctypes
    chunk = ctypes.create_string_buffer(len(blob))
    for off in list(range(0, len(blob), 96))[::-1]:            # backwards: the CRC is recomputed
        n = min(96, len(blob) - off)
        assert f(off, chunk, n) == n
        buf[off:off + n] = chunk.raw[:n]
    assert bytes(buf) == blob
    assert f(len(blob) - 2, chunk, 4) == ck.ERRORS["arg"] and f(0, None, 4) == ck.ERRORS["arg"]


def _flash(model, slots):
    return NorFlash(PAGE, ck.region_bytes(model, PAGE) // PAGE, ck.flash_image(model, PAGE, slots))


def _recrc(blob: bytes, at: int, value: bytes) -> bytes:
    b = bytearray(blob[:-4])
    b[at:at + len(value)] = value
    return bytes(b) + struct.pack("<I", zlib.crc32(b))


def test_bad_checkpoints_are_refused_with_distinct_codes_and_change_nothing(tiny):
    model, cm, lib = tiny
    good = ck.encode(trained(model, cm, 1), 1, seq=1)
    foreign_model = Model(dict(TINY, hidden=[16], head_decay_inv=2999), "default", model.weight_bits, seed=3)
    foreign = ck.encode(foreign_model, 0, seq=1)               # same size, another model
    flipped = bytearray(good)
    flipped[ck.HEADER_BYTES + 5] ^= 0x10
    cases = {
        "empty": [None, None],
        "magic": [b"XCKP" + good[4:], None],
        "version": [_recrc(good, 4, struct.pack("<H", 2)), None],
        "model": [foreign, None],
        "format": [_recrc(good, 28, struct.pack("<i", 0)), None],    # lr_inv 0
        "crc": [bytes(flipped), None],
    }
    assert len({ck.ERRORS[k] for k in cases} | {ck.ERRORS["uncommitted"]}) == len(cases) + 1
    cm.reset()
    x, y = batches()[2]
    cm.train_batch(x, y)
    before = lib.export(len(good))
    for code, slots in cases.items():
        st = Storage(_flash(model, slots))
        assert lib.load(st) == ck.ERRORS[code], code
        assert lib.export(len(good)) == before, f"{code}: the model changed"
        with pytest.raises(ck.CheckpointError) as e:
            ck.newest(bytes(st.flash.mem), model, PAGE)
        assert e.value.code == code                            # Python names the same defect
        if slots[0] is not None and code != "empty":
            assert lib.import_(Storage(slots[0], PAGE)) == ck.ERRORS[code], code
            assert lib.export(len(good)) == before
    # a checkpoint without its commit word (an interrupted save) is not taken either
    img = bytearray(ck.flash_image(model, PAGE, [good]))
    img[len(good):len(good) + 4] = b"\xff\xff\xff\xff"
    assert lib.load(Storage(NorFlash(PAGE, len(img) // PAGE, bytes(img)))) == ck.ERRORS["uncommitted"]
    assert lib.export(len(good)) == before
    # with one good slot, a bad other slot does not matter
    assert lib.load(Storage(_flash(model, [bytes(flipped), good]))) == 0 and lib.steps() == 1


def test_load_takes_the_newest_valid_slot_in_serial_number_order(tiny):
    model, cm, lib = tiny
    a = ck.encode(trained(model, cm, 1), 1)
    b = ck.encode(trained(model, cm, 2), 2)
    for seqs, slot in (((1, 2), 1), ((2, 1), 0), ((0xFFFFFFFF, 0), 1), ((5, 5), 0)):   # ties keep slot 0
        cm.reset()
        slots = [ck.with_seq(a, seqs[0]), ck.with_seq(b, seqs[1])]
        assert lib.load(Storage(_flash(model, slots))) == 0
        assert (lib.steps(), lib.seq()) == (slot + 1, seqs[slot]), seqs
        assert ck.newest(ck.flash_image(model, PAGE, slots), model, PAGE).seq == seqs[slot]


def test_saves_alternate_slots_and_match_the_python_flash_image(tiny):
    model, cm, lib = tiny
    py = trained(model, cm, 1)
    flash = NorFlash(PAGE, ck.region_bytes(model, PAGE) // PAGE)
    st = Storage(flash)
    blobs = []
    for i in range(3):
        assert lib.save(st) == 0 and lib.seq() == i + 1
        blobs.append(ck.encode(py, 1, seq=i + 1))
    assert bytes(flash.mem) == ck.flash_image(model, PAGE, [blobs[2], blobs[1]])
    assert not flash.violations
    cm.reset()                                                  # a reboot forgets which slot is newest
    assert lib.save(st) == 0 and lib.seq() == 4                 # ... and finds it again
    assert ck.newest(bytes(flash.mem), model, PAGE).seq == 4
    small = NorFlash(PAGE, ck.region_bytes(model, PAGE) // PAGE - 1)
    assert lib.save(Storage(small)) == ck.ERRORS["arg"] and lib.load(Storage(small)) == ck.ERRORS["arg"]
    assert lib.save(Storage(NorFlash(62, 400))) == ck.ERRORS["arg"]          # pages must be whole words


def test_nor_flash_model_only_clears_bits_and_takes_whole_words():
    f = NorFlash(64, 2)
    assert f.program(0, b"\x0f\xf0\x00\xff") == 0 and f.program(0, b"\xff\x0f\xff\xff") == 0
    assert bytes(f.mem[:4]) == b"\x0f\x00\x00\xff" and len(f.violations) == 1   # bits cannot be set again
    assert f.program(2, b"\x00" * 4) == -1 and f.program(60, b"\x00" * 8) == -1  # unaligned, across a page
    assert f.erase(0) == 0 and bytes(f.mem[:64]) == b"\xff" * 64
    f.power_on()
    f.arm(1, "half")
    assert f.program(0, b"\x00" * 16) == 0 and f.program(16, b"\x00" * 16) == 0 and f.program(32, b"\x00" * 4) == 0
    assert f.mem[:24] == b"\x00" * 24 and f.mem[24:36] == b"\xff" * 12 and f.dead


def test_generated_checkpoint_code_is_in_every_trainable_build_and_float_free():
    conv = convert(Model(preset("mcu_cnn"), "default", 16), batch=8, train=True, name="cnn")
    h, c = conv.sources["cnn.h"], conv.sources["cnn.c"]
    assert f"#define CNN_CKPT_BYTES {ck.size(conv.plan.model)}u" in h
    assert f"0x{ck.fingerprint(conv.plan.model):016x}ull" in h
    for code, value in ck.ERRORS.items():
        assert re.search(rf"CNN_CKPT_ERR_{code.upper()} = {value}\b", h), code
    assert "float" not in c.replace("#pragma GCC poison float double", "")
    infer = convert(Model(TINY, "default", 16), batch=1, train=False, name="inf").sources["inf.h"]
    assert "ckpt" not in infer
    # the fingerprint follows architecture, width and profile, not the initial learning rate
    m = Model(TINY, "default", 16)
    assert ck.fingerprint(m) == ck.fingerprint(Model(dict(TINY, lr_inv=1024), "default", 16))
    assert len({ck.fingerprint(m), ck.fingerprint(Model(TINY, "default", 32)),
                ck.fingerprint(Model(TINY, "reference", 16)), ck.fingerprint(Model(dict(TINY, hidden=[17]), "default",
                                                                                    16))}) == 4
