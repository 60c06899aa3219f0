"""Partial training (issue 11): frozen blocks in the trainer and the generated C, the streamed frozen prefix,
train_sample, the generated input normalisation, and the movement checks of verify."""
import copy
import subprocess

import numpy as np
import pytest

from nitro_mcu import api
from nitro_mcu.codegen import convert
from nitro_mcu.device.compiled import CompiledModel, InputError
from nitro_mcu.codegen.cost import tail_ram, tensor_macs
from nitro_mcu.codegen.plan import build
from nitro_mcu.device.flags import STRICT_CFLAGS
from nitro_mcu.device.harness import run_host_harness
from nitro_mcu.device.protocol import Session
from nitro_mcu.device.report import report
from nitro_mcu.device.verify import Checkpoint, TensorCheck, VerifyReport, verify
from nitro_mcu.spec import SpecError, preset
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer import loop
from nitro_mcu.trainer.network import Model

TAIL = ["fc0", "output"]


@pytest.fixture(scope="module")
def bundled():
    return D.prepare(D.load_dataset("bundled"), seed=0)


def batch(data, s, b=8):
    return data.x_train[s * b:(s + 1) * b], data.y_train[s * b:(s + 1) * b]


# ---- the trainer ---------------------------------------------------------------------------------------
def test_frozen_blocks_keep_every_weight_and_heads_too(bundled):
    m = Model(preset("mcu_cnn"), "default", 16, seed=1, trainable=["conv1", "output"])
    start = copy.deepcopy(m.weights)
    for s in range(4):
        m.train_step(*batch(bundled, s), 512)
    for k, w in m.weights.items():
        moved = not np.array_equal(w, start[k])
        assert moved == (k in ("conv1.fwd", "conv1.head", "output")), k


def test_trainable_names_are_checked():
    m = Model(preset("mcu_cnn"), "default", 16)
    with pytest.raises(SpecError, match="no block named 'fc9'.*conv0, conv1, conv2, fc0, output"):
        m.set_trainable(["fc9"])
    with pytest.raises(SpecError, match="nothing to train"):
        m.set_trainable("")
    assert m.set_trainable("fc0, output").trainable == {"fc0", "output"} and not m.all_trainable
    assert m.set_trainable(None).all_trainable


def test_cached_prefix_features_train_bit_identically(monkeypatch):
    """The epoch loop trains a frozen prefix's cached outputs; forcing the uncached path changes nothing."""
    runs = []
    for cache in (True, False):
        if not cache:
            monkeypatch.setattr(loop, "FEATURE_CACHE_BYTES", 0)
        m = Model(preset("cnn_small"), "default", 16, seed=2)
        data = D.prepare(D.load_dataset("bundled"), seed=0)  # its own data stream: the same shuffles
        hist = api.train(m, data, epochs=2, batch_size=32, schedule=False, progress=False, trainable=TAIL)
        runs.append((m.weights, [r.train_acc_bp for r in hist.records]))
    (wa, ha), (wb, hb) = runs
    assert ha == hb and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert Model(preset("cnn_small"), trainable=TAIL).frozen_prefix() == 4  # conv, pool, conv, pool


def test_dropout_ends_the_frozen_prefix():
    spec = dict(preset("cnn_small"), dropout=0.1)
    m = Model(spec, "reference", 16, trainable=["fc0"])  # Q6 puts a dropout before the last conv stage
    kinds = [type(s).__name__ for s in m.stages]
    assert m.frozen_prefix() == kinds.index("Dropout") < len(kinds)


def test_model_file_keeps_the_trainable_set_and_frozen_heads(tmp_path):
    m = Model(preset("mcu_cnn"), "default", 16, seed=3, trainable=TAIL)
    back, meta = api.load(api.save(m, tmp_path / "t.nitro"))
    assert back.trainable == set(TAIL) and meta["trainable"] == TAIL
    assert set(back.weights) == set(m.weights)  # heads of frozen blocks are kept
    assert "trainable" not in api.load(api.save(Model(preset("mlp1")), tmp_path / "a.nitro"))[1]


# ---- the generated C -----------------------------------------------------------------------------------
CONFIGS = [  # (preset, weight bits, profile, trainable, batch)
    ("mcu_cnn", 16, "default", TAIL, 8),           # the tail: streamed prefix
    ("mcu_cnn", 32, "reference", ["output"], 4),   # only the output layer; Q1..Q5 quirks
    ("cnn_small", 16, "reference", ["conv1"], 5),  # a frozen FC block and output after it (Q2: no double step)
    ("mlp1", 16, "default", ["block0"], 8),        # nothing frozen in front: no prefix
]


@pytest.mark.parametrize("name,bits,profile,trainable,b", CONFIGS)
def test_partial_training_in_c_is_bit_exact_with_python(bundled, name, bits, profile, trainable, b):
    m = Model(preset(name), profile, bits, seed=4, trainable=trainable)
    cm = CompiledModel(convert(m, batch=b, train=True, name="part"))
    start = copy.deepcopy(m.weights)
    cm.set_lr_inv(256)
    for s, n in enumerate((b, b, b - 1, b, 1, b)):  # partial batches too
        x, y = bundled.x_train[s * b:s * b + n], bundled.y_train[s * b:s * b + n]
        assert cm.train_batch(x, y) == m.train_step(x, y, 256).correct
    got = cm.get_weights()
    assert set(got) == {k for k in m.weights if m.trains(m.tensor_block(k)) or not k.endswith(".head")}
    for k, w in got.items():
        np.testing.assert_array_equal(w, m.weights[k], err_msg=k)
    for k in m.weights:
        if not m.trains(m.tensor_block(k)):
            np.testing.assert_array_equal(m.weights[k], start[k], err_msg=k)
    np.testing.assert_array_equal(cm.predict_scores(bundled.x_test[:100])[0], m.predict_scores(bundled.x_test[:100]))


def test_frozen_weights_are_flash_constants_and_frozen_heads_are_absent(tmp_path):
    m = Model(preset("mcu_cnn"), "default", 16, trainable=TAIL)
    conv = convert(m, batch=8, train=True, name="fz")
    conv.save(file=tmp_path)
    obj = tmp_path / "fz.o"
    subprocess.run(["gcc", *STRICT_CFLAGS, "-c", str(tmp_path / "fz.c"), "-o", str(obj)], check=True)
    syms = {ln.split()[-1]: (ln.split()[2], int(ln.split()[1], 16)) for ln in
            subprocess.run(["nm", "-S", "--defined-only", str(obj)], capture_output=True, text=True,
                           check=True).stdout.splitlines() if len(ln.split()) == 4}
    for t in ("conv0_fwd", "conv1_fwd", "conv2_fwd"):
        assert syms[f"w_{t}"][0] in "rR" and f"w_{t}_init" not in syms  # read-only data: flash
    for t in ("fc0_fwd", "fc0_head", "output"):
        assert syms[f"w_{t}"][0] in "bB" and syms[f"w_{t}_init"][0] in "rR"  # RAM, with a flash copy
    assert not any("conv" in k and "head" in k for k in syms)
    p = conv.plan
    assert p.train_weight_bytes == 2 * (288 * 64 + 64 * 10 + 64 * 10)
    assert sum(v[1] for k, v in syms.items() if k.startswith("w_") and not k.endswith("_init")) == p.weight_bytes
    assert syms["arena"][1] == p.arena_bytes
    header = (tmp_path / "fz.h").read_text()
    assert f"FZ_RAM_BYTES {p.arena_bytes + p.train_weight_bytes}" in header
    assert "FZ_NUM_TRAINABLE_WEIGHTS 19712" in header


def test_the_arena_holds_one_sample_of_the_streamed_prefix_and_is_much_smaller():
    m = Model(preset("mcu_cnn"), "default", 16, trainable=TAIL)
    p = build(m, 8, True)
    assert p.prefix == 6 and p.feat_count == 288 and p.xb.count == 8 * 288
    assert next(b for b in p.buffers if b.name == "s_conv0").count == 8 * 28 * 28  # one sample, 8 channels
    full = build(Model(preset("mcu_cnn"), "default", 16), 8, True)
    assert p.ram_bytes < 0.4 * full.ram_bytes and p.arena_bytes < full.arena_bytes / 5
    rows = {r["label"]: r for r in tail_ram(m, 8)}
    assert rows["fc0..output"]["current"] and rows["fc0..output"]["ram_bytes"] == p.ram_bytes
    assert rows["all (full training)"]["ram_bytes"] == full.ram_bytes
    assert tensor_macs(m)["conv0.head"] == (0, 0) and tensor_macs(m)["fc0.head"][1] > 0


def test_train_sample_streams_like_batches_of_max_batch(bundled):
    for trainable in (TAIL, None):  # features in the ring, or raw samples when nothing is frozen in front
        m = Model(preset("cnn_small"), "default", 16, seed=6, trainable=trainable)
        cm = CompiledModel(convert(m, batch=4, train=True, name="strm"))
        for i in range(12):
            if i == 6:  # train_batch and predict in between leave the ring alone
                x, y = batch(bundled, 40, 3)
                assert cm.train_batch(x, y) == m.train_step(x, y, 512).correct
                cm.predict(bundled.x_test[:3])
            got = cm.train_sample(bundled.x_train[i], int(bundled.y_train[i]))
            assert cm.pending_samples == (i + 1) % 4
            assert got == (m.train_step(*batch(bundled, i // 4, 4), 512).correct if i % 4 == 3 else None)
        for k, w in cm.get_weights().items():
            np.testing.assert_array_equal(w, m.weights[k], err_msg=k)
        cm.train_sample(bundled.x_train[0], 1)
        cm.reset()
        assert cm.pending_samples == 0
        with pytest.raises(InputError, match="labels"):
            cm.train_sample(bundled.x_train[0], 10)


@pytest.mark.parametrize("shape,mu,mad", [([1, 28, 28], [-95], [40]), ([3, 4, 4], [-20, 3, 60], [1, 17, 64])])
def test_generated_normalisation_gives_the_python_inputs(shape, mu, mad):
    spec = dict(kind="cnn", input_shape=shape, num_classes=4, features=[["conv", 2, 3, 1, 1]], fc_hidden=[3])
    cm = CompiledModel(convert(Model(spec), name="norm", norm=dict(mu=mu, mad=mad)))
    r = np.random.default_rng(0)
    raw = r.integers(0, 256, (5, *shape)).astype(np.uint8)
    if raw[0].size >= 256:
        raw[0].reshape(-1)[:256] = np.arange(256)  # every byte value once
    np.testing.assert_array_equal(cm.normalize_u8(raw), D.normalize(raw, mu, mad).reshape(5, -1))
    with pytest.raises(ValueError, match="do not fit an input"):
        convert(Model(spec), name="norm", norm=dict(mu=[0] * (len(mu) + 1), mad=[1] * (len(mu) + 1)))


def test_partial_training_runs_clean_under_sanitizers_and_compiles_warning_free(bundled, tmp_path):
    m = Model(preset("cnn_small"), "default", 16, seed=7, trainable=TAIL)
    conv = convert(m, batch=4, train=True, name="psan", norm=dict(mu=[-90], mad=[50]))
    for cc in ("gcc", "clang"):
        conv.save(file=tmp_path / cc)
        subprocess.run([cc, *STRICT_CFLAGS, "-c", str(tmp_path / cc / "psan.c"), "-o", str(tmp_path / "o.o")],
                       check=True)
    s = Session(784)
    py = copy.deepcopy(m)
    for i in range(3):
        s.train(*batch(bundled, i, 4))
        py.train_step(*batch(bundled, i, 4), 512)
    s.predict(bundled.x_test[:10])
    s.weights()
    res = run_host_harness(conv, s, cc="clang", sanitize=True)
    for k, w in res[-1].weights.items():
        np.testing.assert_array_equal(w, py.weights[k], err_msg=k)
    np.testing.assert_array_equal(res[-2][0], py.predict_scores(bundled.x_test[:10]))


# ---- verify and the command line -----------------------------------------------------------------------
def movement_report(steps=5, allow_still=()):
    """A bit-exact report of a frozen conv0.fwd (on the device), a frozen head (Python only) and a trainable output."""
    tensors = [TensorCheck("conv0.fwd", 9, True, 0, changed=0, changed_device=0, trainable=False),
               TensorCheck("conv0.head", 9, True, 0, changed=0, trainable=False, on_device=False),
               TensorCheck("output", 9, True, 0, changed=3, changed_device=3)]
    rep = VerifyReport("m4", "qemu", steps, 8, 0, allow_still=allow_still,
                       checkpoints=[Checkpoint(steps, tensors, 18, 18, 2, 512, 512, 1, 1)])
    rep.scores_equal = rep.classes_equal = True
    return rep


def test_one_movement_check_a_frozen_tensor_must_not_move_a_trainable_one_must():
    rep = movement_report()
    assert rep.passed and rep.verdict == "bit-exact" and rep.problem() is None
    conv0, head, out = rep.tensors
    conv0.changed = conv0.changed_device = 1  # moved on the device and in Python alike: bit-exact, but frozen
    assert rep.bit_exact and rep.frozen_moved == ["conv0.fwd"] and rep.verdict == "MOVED" and not rep.passed
    assert "MOVED: frozen conv0.fwd changed (conv0.fwd: 1 weights in Python, 1 on the device)" in rep.problem()
    conv0.changed = conv0.changed_device = 0
    head.changed = 2  # the C holds no frozen head: Python alone must keep it
    assert rep.verdict == "MOVED" and "on the device" not in rep.problem()
    head.changed = 0
    out.changed = out.changed_device = 0
    assert rep.verdict == "STILL" and rep.still == ["output"]
    rep.allow_still = ("output",)
    assert rep.passed and "still (allowed)" in rep.table()
    conv0.changed = conv0.changed_device = 1
    assert rep.verdict == "MOVED"  # allow_still never excuses a frozen tensor
    assert not movement_report(steps=0).still  # predictions only: nothing has to move
    d = movement_report().to_dict()
    assert [(t["name"], t["trainable"], t["on_device"]) for t in d["tensors"]] == [
        ("conv0.fwd", False, True), ("conv0.head", False, False), ("output", True, True)]
    assert d["frozen_moved"] == [] and d["verdict"] == "bit-exact"


def test_allow_still_cannot_name_a_frozen_tensor(bundled):
    with pytest.raises(ValueError, match="frozen tensor.* conv0.fwd: a frozen tensor must never move"):
        verify(Model(preset("mcu_cnn"), "default", 16), bundled, steps=1, allow_still=["conv0.fwd"], trainable=TAIL)


def test_tail_only_training_on_the_m4_is_bit_exact_and_moves_only_the_tail(bundled):
    m = Model(preset("mcu_cnn"), "default", 16, seed=8)
    rep = verify(m, bundled, "m4", steps=12, batch=8, predictions=10, lr_schedule={0: 16}, name="tail4",
                 trainable=TAIL)
    assert rep.passed, rep.problem()
    assert not rep.frozen_moved and not rep.still
    roles = {t.name: (t.trainable, t.on_device) for t in rep.tensors}
    assert roles["conv0.head"] == (False, False) and roles["conv0.fwd"] == (False, True)
    assert roles["fc0.fwd"] == (True, True) and m.all_trainable  # the caller's model is unchanged


def test_tail_only_training_of_mcu_cnn_fits_64_kb_on_the_m4(bundled):
    """Static RAM from the ELF plus the painted stack: the whole firmware (harness buffers included)."""
    r = report(Model(preset("mcu_cnn"), "default", 16, seed=9), "m4", 8, bundled, steps=1, predictions=1,
               per_layer=False, name="tail64", trainable=TAIL)
    assert r["total_ram_bytes"] <= 64 * 1024 and r["trainable"] == TAIL
    full = next(t for t in r["tail_ram"] if t["label"].startswith("all"))
    assert r["model_ram_bytes"] < 0.4 * full["ram_bytes"]
    assert r["insns_per_train_step"] < 8 * 1.2 * r["insns_per_inference"]  # mostly the frozen prefix's forward


def test_cli_generate_verify_and_fine_tune_with_trainable(tmp_path, capsys):
    from nitro_mcu import cli

    def run(*args):
        rc = cli.main([str(a) for a in args])
        return rc, capsys.readouterr()

    rc, out = run("generate", "mcu_cnn", "--train", "--trainable", "fc0,output", "--out", tmp_path / "g")
    assert rc == 0 and "* fc0..output" in out.out and "all (full training)" in out.out
    assert "weights, frozen (flash, const)" in out.out
    rc, out = run("generate", "mcu_cnn", "--trainable", "fc0", "--out", tmp_path / "h")
    assert rc == 2 and "--trainable needs --train" in out.err
    rc, out = run("verify", "mcu_cnn", "--trainable", "fc0,output", "--steps", "3", "--predictions", "2")
    assert rc == 1 and "STILL: fc0.fwd did not change" in out.out, out.out  # fresh fc0 needs more than 3 steps
    rc, out = run("verify", "mcu_cnn", "--trainable", "fc0,output", "--steps", "3", "--predictions", "2",
                  "--allow-still", "fc0.fwd", "--json", tmp_path / "v.json")
    assert rc == 0 and "still (allowed)" in out.out, out.out
    import json
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["verdict"] == "bit-exact" and v["still"] == [] and v["frozen_moved"] == []
    assert {t["name"] for t in v["tensors"] if not t["trainable"]} == {f"conv{i}.{k}" for i in range(3)
                                                                       for k in ("fwd", "head")}
    rc, out = run("train", "cnn_small", "--epochs", "1", "--quiet", "--out", tmp_path, "--name", "src")
    assert rc == 0, out.err
    rc, out = run("train", tmp_path / "src.nitro", "--trainable", "fc0,output", "--epochs", "1", "--quiet",
                  "--out", tmp_path, "--name", "src")
    assert rc == 2 and "would overwrite" in out.err  # a fine-tune never replaces the model it starts from
    rc, out = run("train", tmp_path / "src.nitro", "--trainable", "fc0,output", "--epochs", "1", "--quiet",
                  "--out", tmp_path, "--name", "tuned")
    assert rc == 0 and "training fc0,output" in out.out, out.err
    src, tuned = api.load(tmp_path / "src.nitro")[0], api.load(tmp_path / "tuned.nitro")[0]
    assert tuned.trainable == {"fc0", "output"}
    for k in src.weights:
        assert np.array_equal(src.weights[k], tuned.weights[k]) == (not k.startswith(("fc0", "output"))), k
    rc, out = run("eval", tmp_path / "tuned.nitro")
    assert rc == 0, out.err


# ---- checkpoints of a partly frozen model ------------------------------------------------------------------
def test_a_tail_checkpoint_carries_the_trainable_tensors_and_fits_only_its_frozen_prefix():
    from nitro_mcu import checkpoint as ck
    from nitro_mcu.device.flashsim import CkptLib, Storage

    spec = dict(kind="mlp", input_shape=[64], num_classes=10, hidden=[16, 16], fwd_decay_inv=12000,
                head_decay_inv=3000, dropout=0.1)
    full = Model(spec, "default", 16, seed=3)
    tail = copy.deepcopy(full).set_trainable(["block1", "output"])
    cm = CompiledModel(convert(copy.deepcopy(tail), batch=4, train=True, name="cktail"))
    lib = CkptLib(cm)
    carried = ["block1.fwd", "block1.head", "output"]
    assert list(ck.carried(tail)) == carried and cm.num_weights == ck.num_weights(tail)
    assert ck.size(tail) < ck.size(full)
    py = copy.deepcopy(tail)
    for s in range(3):
        x = ((np.arange(4 * 64).reshape(4, 64) * (7 + s)) % 256 - 128).astype(np.int8)
        y = np.arange(4) % 10
        cm.train_batch(x, y)
        py.train_step(x, y, 512)
    blob = ck.encode(py, step=3, lr_inv=512)
    assert lib.export(len(blob)) == blob                       # the C writes the Python encoder's bytes
    back = copy.deepcopy(tail)
    ck.apply(back, ck.decode(blob, tail))
    for k, w in py.weights.items():
        np.testing.assert_array_equal(back.weights[k], w, err_msg=k)
    # the fingerprint covers the trainable set and the frozen values the training reads, not the frozen heads
    other = copy.deepcopy(tail)
    other.weights["block0.fwd"] = other.weights["block0.fwd"].copy()
    other.weights["block0.fwd"].flat[0] += 1
    heads = copy.deepcopy(tail)
    heads.weights["block0.head"] = heads.weights["block0.head"] + 1
    assert len({ck.fingerprint(full), ck.fingerprint(tail), ck.fingerprint(other),
                ck.fingerprint(copy.deepcopy(full).set_trainable(["output"]))}) == 4
    assert ck.fingerprint(heads) == ck.fingerprint(tail)
    assert ck.fingerprint(full) == ck.fingerprint(Model(spec, "default", 16, seed=4))  # all trainable: as before
    for foreign in (ck.encode(full), ck.encode(other)):
        with pytest.raises(ck.CheckpointError) as e:
            ck.decode(foreign, tail)
        assert e.value.code == "model"
        before = lib.export(len(blob))
        assert lib.import_(Storage(foreign, 64)) == ck.ERRORS["model"] and lib.export(len(blob)) == before
    # Python -> C: a state the C never had
    py.train_step(x, y, 256)
    newer = ck.encode(py, step=9, lr_inv=256)
    cm.reset()
    assert lib.import_(Storage(newer, 64)) == 0 and lib.export(len(newer)) == newer and lib.steps() == 9


def test_a_fine_tune_resumes_bit_identically_and_its_epoch_checkpoint_carries_only_the_tail(tmp_path, capsys):
    import json

    from nitro_mcu import checkpoint as ck, cli, modelfile
    from nitro_mcu.resume import MEMBER

    def run(*args):
        rc = cli.main([str(a) for a in args] + ["--quiet", "--seed", "5"])
        assert rc == 0, capsys.readouterr().err

    (tmp_path / "tiny.json").write_text(json.dumps(dict(kind="mlp", input_shape=[784], num_classes=10,
                                                        hidden=[12, 12], dropout=0.1)))
    run("train", tmp_path / "tiny.json", "--epochs", "1", "--out", tmp_path / "src")
    src = tmp_path / "src" / "tiny.nitro"
    run("train", src, "--trainable", "block1,output", "--epochs", "2", "--out", tmp_path / "a")
    run("train", src, "--trainable", "block1,output", "--epochs", "1", "--out", tmp_path / "b")
    run("train", src, "--trainable", "block1,output", "--epochs", "2", "--out", tmp_path / "b", "--resume")
    (ma, _, fa), (mb, _, fb) = (modelfile.load_files(tmp_path / d / "tiny_tuned.nitro") for d in "ab")
    start = modelfile.load(src)[0]
    assert sorted(mb.trainable) == ["block1", "output"] and fa[MEMBER] == fb[MEMBER]
    for k, w in ma.weights.items():
        np.testing.assert_array_equal(mb.weights[k], w, err_msg=k)
        assert np.array_equal(w, start.weights[k]) == k.startswith("block0"), k
    c = ck.decode(fb[MEMBER], mb)     # the epoch checkpoint: the trainable tensors, fitted to this frozen block0
    assert c.weights.size == ck.num_weights(mb) == sum(mb.weights[k].size for k in ck.carried(mb))
    assert c.weights.size < sum(w.size for w in mb.weights.values()) and c.lr_inv > 0
    with pytest.raises(ck.CheckpointError):
        ck.decode(fb[MEMBER], start)  # the source model, all trainable: not the model this checkpoint fits
