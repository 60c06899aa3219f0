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
from nitro_mcu.trainer.classes import add_class, with_spare_classes
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



def test_the_crc_chunk_exported_alone_after_a_state_change_is_the_new_states(tiny):
    """A whole export, then a step, then only the CRC word: it must be the CRC of the state now, not the one the
    earlier export cached (any chunk of the live checkpoint, docs/checkpoint.md)."""
    import ctypes
    model, cm, lib = tiny
    py = trained(model, cm, 1)
    size = ck.size(model)
    assert lib.export(size, size) == ck.encode(py, 1)          # one pass, the CRC included
    x, y = batches()[1]
    cm.train_batch(x, y)
    py.train_step(x, y, 512)
    crc = ctypes.create_string_buffer(4)
    assert lib.f["ckpt_export"](size - 4, crc, 4) == 4
    assert crc.raw == ck.encode(py, 2)[-4:]



def test_import_refuses_a_storage_shorter_than_a_checkpoint_and_its_header_says_num_pages_is_read(tiny):
    model, cm, lib = tiny
    py = trained(model, cm, 1)
    blob = ck.encode(py, 1)
    st = Storage(blob, PAGE)
    st.struct.num_pages = len(blob) // PAGE - 1        # the blob is all there, the description says less
    cm.reset()
    assert lib.import_(st) == ck.ERRORS["arg"] and cm.rng_state == model.dropout_rng.state
    doc = re.search(r"import reads one checkpoint.*?\*/", cm.conv.sources[f"{cm.name}.h"], re.S).group(0)
    assert "num_pages" in doc and "only read, page_buf and page_size" not in doc


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
        "version": [_recrc(good, ck.OFFSETS["version"], struct.pack("<H", ck.VERSION + 1)), None],
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


def test_nor_flash_model_erases_whole_sectors_and_programs_inside_pages():
    f = NorFlash(64, 8, sector_size=256)                        # 512 B: two sectors of four pages
    assert f.program(0, b"\x00" * 64) == 0 and f.program(256, b"\x00" * 8) == 0
    assert f.program(60, b"\x00" * 8) == -1                    # crosses a page, though not a sector
    assert f.erase(0) == 0 and bytes(f.mem[:256]) == b"\xff" * 256 and bytes(f.mem[256:264]) == b"\x00" * 8
    assert f.erase(2) == -1 and len(f.violations) == 2
    f.program(0, b"\x00" * 64)
    f.power_on()
    f.arm(0, "early")                                           # an erase cut as it began: a few bits read 1
    f.erase(0)
    assert f.mem[:64] == b"\x00" * 23 + b"\x40" + b"\x00" * 40 and f.mem[64:256] == b"\xff" * 192
    with pytest.raises(ValueError):
        NorFlash(64, 6, sector_size=256)                        # the region is not whole sectors


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


# ---- one checkpoint truth: a corpus that Python's reader and the C loader classify identically ----------------
import ckpt_corpus as corpus  # noqa: E402

NAMES = {v: k for k, v in ck.ERRORS.items()}


@pytest.fixture(scope="module")
def corpus_c():
    m = corpus.model()
    cm = CompiledModel(convert(copy.deepcopy(m), batch=1, train=True, name="ckcorp"))
    return m, cm, CkptLib(cm)


def _python_state(m, c: ck.Checkpoint) -> bytes:
    """The state a decoded checkpoint stands for, as export bytes (sequence 0)."""
    py = copy.deepcopy(m)
    ck.apply(py, c)
    return ck.encode(py, c.step, c.lr_inv)


def _c_verdict(lib, cm, m, st) -> tuple:
    cm.reset()
    rc = lib.import_(st) if not isinstance(st, tuple) else lib.load(st[0])
    return ("ok", lib.export(ck.size(m)), lib.seq()) if rc == 0 else (NAMES.get(rc, rc), None, None)


def test_python_and_c_classify_every_single_checkpoint_of_the_corpus_alike(corpus_c):
    m, cm, lib = corpus_c
    n = ck.size(m)
    verdicts = {}
    for name, blob in corpus.singles(m).items():
        try:
            c = ck.decode(blob, m)
            py = ("ok", _python_state(m, c))
        except ck.CheckpointError as e:
            py = (e.code, None)
        exact = Storage(blob, page_size=n)          # the storage holds exactly len(blob) bytes, read in one page
        exact.struct.num_pages = len(blob) // n
        got = _c_verdict(lib, cm, m, exact)[:2]
        assert got == py, f"{name}: C {got[0]}, Python {py[0]}"
        if len(blob) >= n:                          # and streamed through 64-byte pages
            assert _c_verdict(lib, cm, m, Storage(blob, PAGE))[:2] == py, name
        verdicts[name] = py[0]
    # verdicts derived from the layout (docs/checkpoint.md), not from either reader
    assert verdicts["valid"] == verdicts["seq changed, CRC fixed"] == verdicts["step changed, CRC fixed"] == "ok"
    for byte in (41, 42, 43):
        assert verdicts[f"byte {byte} = 7, CRC fixed"] == "format"      # the weight width is a whole 32-bit word
    assert all(v == "format" for k, v in verdicts.items() if k.startswith("padding") and "fixed" in k)
    assert all(v == "arg" for k, v in verdicts.items() if k.startswith("truncated") or k == "empty file")
    assert verdicts["erased"] == "empty" and verdicts["magic changed, CRC fixed"] == "magic"
    assert verdicts["CRC word off by one bit"] == verdicts["weight bit flipped"] == "crc"
    assert set(verdicts.values()) == {"ok", "arg", "empty", "magic", "version", "model", "format", "crc"}


def test_python_and_c_pick_the_same_slot_of_every_flash_region_of_the_corpus(corpus_c):
    m, cm, lib = corpus_c
    n, sp = ck.size(m), ck.slot_bytes(m, corpus.SECTOR)
    picks = {}
    for name, image in corpus.regions(m).items():
        try:
            slot, c = ck.scan(image, m, corpus.SECTOR)
            py = ("ok", slot, c.seq, _python_state(m, c))
        except ck.CheckpointError as e:
            py = (e.code, None, None, None)
        st = Storage(image, corpus.PAGE, corpus.SECTOR)
        st.struct.num_pages = len(image) // corpus.PAGE
        code, state, seq = _c_verdict(lib, cm, m, (st,))
        slot = None
        if code == "ok":                            # which slot's bytes the C now holds
            slots = [image[i * sp:i * sp + n] for i in range(2)]
            held = [i for i in range(2) if ck.with_seq(slots[i], 0) == state and
                    struct.unpack_from("<I", slots[i], 20)[0] == seq]
            assert len(held) == 1, name
            slot = held[0]
        assert (code, slot, seq, state) == py, f"{name}: C {code} slot {slot}, Python {py[0]} slot {py[1]}"
        picks[name] = py[:2]
    # serial-number order, derived by hand: the newer of two sequence numbers less than 2**31 apart; else slot 0
    for (s0, s1), slot in {(1, 2): 1, (2, 1): 0, (5, 5): 0, (0xFFFFFFFF, 0): 1, (0, 0xFFFFFFFF): 0, (0xFFFFFFFE, 1): 1,
                           (0x7FFFFFFF, 0x80000000): 1, (0, 0x80000000): 0, (0x80000000, 0): 0,
                           (3, 0x80000002): 1, (0x80000003, 3): 0}.items():
        assert picks[f"both valid, sequences {s0:#x}, {s1:#x}"] == ("ok", slot), (s0, s1)
    assert picks["slot 0 byte 41 = 7, CRC fixed, slot 1 older valid"] == ("ok", 1)     # the dump
    assert all(p == ("ok", 0) for k, p in picks.items() if k.startswith("slot 1 newer"))
    assert all(p == ("ok", 1) for k, p in picks.items() if k.startswith("slot 0 newer"))
    assert picks["slot 0 bad CRC, slot 1 bad magic"] == ("crc", None)
    assert picks["slot 0 erased, slot 1 bad version"] == ("version", None)
    assert picks["region one page short"] == picks["region half"] == ("arg", None)


def test_cli_moves_checkpoints_through_128k_sector_flash_images_and_refuses_nonzero_reserved_bytes(tmp_path):
    """export-checkpoint --flash-image --sector-size lays out what the C loads; a dump the C saved on 128 KB
    sectors imports with the sector found from its length; the issue's blob (byte 41 = 7, CRC fixed) is refused."""
    import json

    from test_cli import run_proc

    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    model = Model(TINY, "default", 16, seed=0)
    cm = CompiledModel(convert(copy.deepcopy(model), batch=4, train=True, name="ckcli"))
    lib = CkptLib(cm)
    img = tmp_path / "img.bin"
    r = run_proc("export-checkpoint", str(spec), "--weights", "int16", "--out", str(img), "--flash-image",
                 "--page-size", "256", "--sector-size", "131072")
    assert r.returncode == 0, r.stderr
    assert len(img.read_bytes()) == ck.region_bytes(model, 131072) == 2 * 131072
    flash = NorFlash(256, 1024, img.read_bytes(), sector_size=131072)
    assert lib.load(Storage(flash)) == 0 and lib.export(ck.size(model)) == ck.encode(model, 0)
    for x, y in batches()[:2]:
        cm.train_batch(x, y)
    assert lib.save(Storage(flash)) == 0 and lib.seq() == 2 and not flash.violations
    (tmp_path / "dump.bin").write_bytes(bytes(flash.mem))
    out = tmp_path / "dev.nitro"
    r = run_proc("import-checkpoint", str(tmp_path / "dump.bin"), "--model", str(spec), "--weights", "int16",
                 "--out", str(out))
    assert r.returncode == 0 and "step 2" in r.stdout and "sequence 2" in r.stdout, r.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(_recrc(ck.encode(model, 5), 41, b"\x07"))
    r = run_proc("import-checkpoint", str(bad), "--model", str(spec), "--weights", "int16", "--out", str(out))
    assert r.returncode == 2 and "inconsistent checkpoint header" in r.stderr and "Traceback" not in r.stderr
    r = run_proc("export-checkpoint", str(spec), "--out", str(img), "--flash-image", "--sector-size", "1000")
    assert r.returncode == 2 and "sector size must be a multiple of the page size (256)" in r.stderr


# ---- format version 2: the active-class count (docs/checkpoint.md, docs/new_classes.md) -----------------------
V1 = struct.Struct("<4sHHQIIIiQII")   # version 1's 48-byte header, as docs/checkpoint.md's version-1 note lists it


def v1_blob(model, step=3, lr_inv=512) -> bytes:
    """A checkpoint as format version 1 wrote it: no active-class count, the weights from byte 48."""
    dt = "<i2" if model.weight_bits == 16 else "<i4"
    flat = np.concatenate([np.asarray(model.weights[n]).reshape(-1) for n in ck.carried(model)]).astype(dt)
    raw = V1.size + flat.nbytes
    head = V1.pack(b"NCKP", 1, V1.size, ck.fingerprint(model), raw + (-raw) % 4 + 4, 0, step, lr_inv,
                   model.dropout_rng.state, model.weight_bits, flat.size)
    body = head + flat.tobytes() + bytes((-raw) % 4)
    return body + struct.pack("<I", zlib.crc32(body))


def spare_model(spare=2):
    return with_spare_classes(Model(TINY, "default", 16, seed=3), spare)


def test_version_2_round_trip_carries_the_active_class_count():
    dev = spare_model()
    add_class(dev)
    blob = ck.encode(dev, step=4, lr_inv=300)
    assert struct.unpack_from("<HH", blob, 4) == (2, 52) and len(blob) == ck.size(dev)
    assert struct.unpack_from("<I", blob, 48)[0] == 11           # bytes 48-51: 10 classes + the one added
    first = np.asarray(dev.weights[next(iter(ck.carried(dev)))]).reshape(-1)[:3]
    np.testing.assert_array_equal(np.frombuffer(blob, "<i2", 3, 52), first)   # the weights follow from byte 52
    fresh = spare_model()                                          # as generated: 10 of 12 slots active
    c = ck.decode(blob, fresh)
    assert c.active_classes == 11 and fresh.active_classes == 10
    ck.apply(fresh, c)
    assert fresh.active_classes == 11 and ck.encode(fresh, 4, 300) == blob
    plain = Model(TINY, "default", 16, seed=3)                     # no spare slots: the count is the classes
    assert struct.unpack_from("<I", ck.encode(plain), 48)[0] == 10 == ck.decode(ck.encode(plain), plain).active_classes


def test_a_count_below_the_models_classes_or_over_its_slots_is_refused_with_a_one_line_format_error():
    dev = spare_model()
    blob = ck.encode(dev, step=4, lr_inv=300)
    for count in (0, 9, 13):                                       # the model: 10 classes, 12 output slots
        bad = _recrc(blob, ck.OFFSETS["active_classes"], struct.pack("<I", count))
        with pytest.raises(ck.CheckpointError, match=f"holds {count} active classes, not 10..12") as e:
            ck.decode(bad, dev)
        assert e.value.code == "format" and "\n" not in str(e.value)
    assert ck.decode(_recrc(blob, ck.OFFSETS["active_classes"], struct.pack("<I", 12)), dev).active_classes == 12


def test_a_version_1_checkpoint_is_refused_as_another_version_by_python_and_the_c(tiny):
    model, cm, lib = tiny
    old = v1_blob(model)
    assert len(old) == ck.size(model) - 4                          # the 4 bytes of the count
    with pytest.raises(ck.CheckpointError, match="format version 1 is not supported") as e:
        ck.decode(old)
    assert e.value.code == "version"
    with pytest.raises(ck.CheckpointError) as e:
        ck.from_bytes(old, model)                                  # a file: named by its version, not its length
    assert e.value.code == "version"
    img = bytearray(b"\xff" * ck.region_bytes(model, PAGE))       # the flash an older firmware left: slot 0
    img[:len(old) + 4] = old + struct.pack("<I", ck.COMMIT)
    with pytest.raises(ck.CheckpointError) as e:
        ck.scan(bytes(img), model, PAGE)
    assert e.value.code == "version"
    cm.reset()
    before = lib.export(ck.size(model))
    assert lib.load(Storage(NorFlash(PAGE, len(img) // PAGE, bytes(img)))) == ck.ERRORS["version"]
    assert lib.export(ck.size(model)) == before                    # refused, nothing applied


def test_cli_import_checkpoint_keeps_a_class_added_on_the_device_and_refuses_bad_counts_and_version_1(tmp_path):
    from test_cli import run_proc

    from nitro_mcu import modelfile

    base = spare_model()
    modelfile.save(base, tmp_path / "base.nitro")
    dev = copy.deepcopy(base)
    add_class(dev)
    good = ck.encode(dev, 7, 300)
    files = {"dev": good, "bad": _recrc(good, ck.OFFSETS["active_classes"], struct.pack("<I", 13)),
             "old": v1_blob(base)}
    for k, blob in files.items():
        (tmp_path / f"{k}.ckpt").write_bytes(blob)
    args = ["--model", str(tmp_path / "base.nitro"), "--out", str(tmp_path / "out.nitro")]
    r = run_proc("import-checkpoint", str(tmp_path / "dev.ckpt"), *args)
    assert r.returncode == 0, r.stderr
    assert modelfile.load(tmp_path / "out.nitro")[0].active_classes == 11
    for k, want in (("bad", "holds 13 active classes, not 10..12"), ("old", "format version 1 is not supported")):
        r = run_proc("import-checkpoint", str(tmp_path / f"{k}.ckpt"), *args)
        assert r.returncode == 2 and want in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_export_checkpoint_writes_version_2_for_a_model_file_that_holds_an_imported_version_1_checkpoint(tmp_path):
    from test_cli import run_proc

    from nitro_mcu import modelfile
    from nitro_mcu.resume import MEMBER

    model = spare_model()
    add_class(model)                             # the file's state: 11 of 12 classes active
    modelfile.save(model, tmp_path / "old.nitro", training={"imported_checkpoint": "dev.ckpt", "step": 3,
                                                            "final_lr_inv": 512},
                   files={MEMBER: v1_blob(model, 3, 512)})   # as an older import-checkpoint left it
    r = run_proc("export-checkpoint", str(tmp_path / "old.nitro"), "--out", str(tmp_path / "new.ckpt"))
    assert r.returncode == 0, r.stderr
    new = (tmp_path / "new.ckpt").read_bytes()
    assert new == ck.encode(model, 3, 512) and ck.decode(new, spare_model()).active_classes == 11


def test_cli_moves_a_tail_only_builds_checkpoint_when_given_the_builds_trainable_set(tmp_path):
    """generate MODEL --train --trainable output builds C whose checkpoint carries the output layer only
    (docs/adaptation.md): import-checkpoint and export-checkpoint take the same --trainable, and without it the
    refusal says so in one line."""
    from test_cli import run_proc

    from nitro_mcu import modelfile

    base = Model(TINY, "default", 16, seed=4)
    modelfile.save(base, tmp_path / "base.nitro")
    cm = CompiledModel(convert(copy.deepcopy(base), batch=4, train=True, name="cktail", trainable=["output"]))
    lib = CkptLib(cm)
    tail = copy.deepcopy(base).set_trainable(["output"])
    for x, y in batches()[:2]:
        cm.train_batch(x, y)
        tail.train_step(x, y, 512)
    dev = lib.export(ck.size(tail))
    (tmp_path / "dev.ckpt").write_bytes(dev)
    args = ["--model", str(tmp_path / "base.nitro"), "--out", str(tmp_path / "dev.nitro")]
    r = run_proc("import-checkpoint", str(tmp_path / "dev.ckpt"), *args)
    assert r.returncode == 2 and "--trainable" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "dev.nitro").exists()
    r = run_proc("import-checkpoint", str(tmp_path / "dev.ckpt"), *args, "--trainable", "output")
    assert r.returncode == 0 and "step 2" in r.stdout, r.stderr
    got = modelfile.load(tmp_path / "dev.nitro")[0]
    assert got.trainable == frozenset(["output"])
    for k, w in tail.weights.items():
        np.testing.assert_array_equal(got.weights[k], w, err_msg=k)
    r = run_proc("export-checkpoint", str(tmp_path / "dev.nitro"), "--out", str(tmp_path / "back.ckpt"))
    assert r.returncode == 0 and (tmp_path / "back.ckpt").read_bytes() == dev, r.stderr
    # the same state for a full-training build: re-encoded for it, not the tail's bytes
    r = run_proc("export-checkpoint", str(tmp_path / "dev.nitro"), "--trainable", "block0,output",
                 "--out", str(tmp_path / "full.ckpt"))
    assert r.returncode == 0, r.stderr
    full = copy.deepcopy(tail).set_trainable(None)
    assert (tmp_path / "full.ckpt").read_bytes() == ck.encode(full, 2, 512)


def test_cli_moves_a_spare_class_builds_checkpoint_from_a_model_file_without_spare_slots(tmp_path):
    """docs/new_classes.md's command line: generate FILE --train --spare-classes 2 from a file of K classes; the
    device adds a class and saves.  import-checkpoint FILE --spare-classes 2 brings that state back (the class
    kept), export-checkpoint writes it again; without the option the refusal names it."""
    from test_cli import run_proc

    from nitro_mcu import modelfile

    base = Model(TINY, "default", 16, seed=6)
    modelfile.save(base, tmp_path / "base.nitro")
    dev = with_spare_classes(base, 2)
    add_class(dev)
    blob = ck.encode(dev, 7, 300)
    (tmp_path / "dev.ckpt").write_bytes(blob)
    args = ["--model", str(tmp_path / "base.nitro"), "--out", str(tmp_path / "dev.nitro")]
    r = run_proc("import-checkpoint", str(tmp_path / "dev.ckpt"), *args)
    assert r.returncode == 2 and "--spare-classes" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_proc("import-checkpoint", str(tmp_path / "dev.ckpt"), *args, "--spare-classes", "2")
    assert r.returncode == 0, r.stderr
    got = modelfile.load(tmp_path / "dev.nitro")[0]
    assert (got.num_classes, got.active_classes) == (12, 11)
    r = run_proc("export-checkpoint", str(tmp_path / "dev.nitro"), "--out", str(tmp_path / "back.ckpt"))
    assert r.returncode == 0 and (tmp_path / "back.ckpt").read_bytes() == blob, r.stderr
    r = run_proc("export-checkpoint", str(tmp_path / "base.nitro"), "--spare-classes", "2", "--out",
                 str(tmp_path / "fresh.ckpt"))
    assert r.returncode == 0 and (tmp_path / "fresh.ckpt").read_bytes() == ck.encode(with_spare_classes(base, 2), 0)
