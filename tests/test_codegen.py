"""The generated C: bit-exact with the Python trainer on the host, warning-free, UB-free, static memory."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden_cases import CASES, MaskFeeder, build_golden_model
from grown import grow
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer import layers as L
from nitro_mcu.codegen import ops
from nitro_mcu.device.compiled import compile_model
from nitro_mcu.codegen.cost import fp32_backprop_bytes, tail_ram
from nitro_mcu.codegen.memory import Buffer
from nitro_mcu.codegen.plan import CodegenError, plan
from nitro_mcu.codegen.render import convert
from nitro_mcu.codegen.walk import Walk
from nitro_mcu.device.flags import STRICT_CFLAGS as STRICT
from nitro_mcu.device.harness import run_host_harness
from nitro_mcu.device.protocol import Session
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model


@pytest.fixture(scope="module")
def bundled():
    ds = D.load_dataset("bundled")
    return D.prepare(ds, seed=0)


def _compare(cm, model, step):
    got = cm.get_weights()
    for name, w in model.weights.items():
        if not np.array_equal(got[name], w):
            i = tuple(np.argwhere(got[name] != w)[0])
            pytest.fail(f"step {step}: {name}{list(i)} C {got[name][i]} != Python {w[i]}")


@pytest.mark.parametrize("weight_bits", [32, 16])
@pytest.mark.parametrize("profile", ["default", "reference"])
@pytest.mark.parametrize("preset_name", ["mlp1", "mlp2", "mcu_cnn"])
def test_generated_c_trains_and_predicts_bit_exactly_like_python(bundled, preset_name, profile, weight_bits):
    batch, steps = (8, 20) if preset_name == "mcu_cnn" else (16, 24)
    model = Model(preset(preset_name), profile, weight_bits, seed=7)
    cm = compile_model(model, batch=batch, train=True, name=f"bx_{preset_name}")
    assert cm.rng_state == model.dropout_rng.state
    lr = model.spec["lr_inv"]
    for s in range(steps):
        if s == steps // 2:  # the schedule: a plateau cut half-way
            lr *= 3
            cm.set_lr_inv(lr)
        x = bundled.x_train[s * batch:(s + 1) * batch]
        y = bundled.y_train[s * batch:(s + 1) * batch]
        assert cm.train_batch(x, y) == model.train_step(x, y, lr).correct
        if s in (0, steps - 1):
            _compare(cm, model, s + 1)
    scores, cls = cm.predict_scores(bundled.x_test)
    assert len(scores) == 1000
    np.testing.assert_array_equal(scores, model.predict_scores(bundled.x_test))
    np.testing.assert_array_equal(cls, model.predict(bundled.x_test))
    assert cm.rng_state == model.dropout_rng.state


@pytest.mark.parametrize("case", CASES)
def test_generated_c_reproduces_the_official_golden_vectors(case):
    model, meta, arr = build_golden_model(case)
    feeder = MaskFeeder(arr)
    cm = compile_model(model, batch=meta["batch_size"], train=True, name="golden")
    sites = [o.site for o in cm.plan.ops if o.kind == "dropout"]
    assert sorted(sites) == sorted(feeder.masks)
    scores, _ = cm.predict_scores(arr["x"][0])
    np.testing.assert_array_equal(scores, arr["logits_before"])
    for step in range(meta["steps"]):
        masks = [feeder.masks[s][step].reshape(-1) for s in sites] if sites else None
        cm.train_batch(arr["x"][step], arr["y"][step], masks=masks)
        if step == 0:
            got = cm.get_weights()
            for k in model.weights:
                np.testing.assert_array_equal(got[k], arr[f"after_step1/{k}"], err_msg=k)
    got = cm.get_weights()
    for k in model.weights:
        np.testing.assert_array_equal(got[k], arr[f"after/{k}"], err_msg=k)
    scores, _ = cm.predict_scores(arr["x"][0])
    np.testing.assert_array_equal(scores, arr["logits_after"])


def _variants():
    drop_cnn = dict(preset("cnn_small"), dropout=0.1)
    return {
        "mlp1_inference": (Model(preset("mlp1")), 1, False),
        "mlp2_train_int32_ref": (Model(preset("mlp2"), "reference"), 16, True),
        "mcu_cnn_train_int16": (Model(preset("mcu_cnn"), "default", 16), 8, True),
        "cnn_dropout_train_ref": (Model(drop_cnn, "reference"), 4, True),
        "cnn_dropout_inference": (Model(drop_cnn, "default", 16), 1, False),
    }


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_generated_sources_compile_warning_free_with_gcc_and_clang(tmp_path, cc):
    assert shutil.which(cc), f"{cc} missing: CI installs it (scripts/setup.sh)"
    for label, (model, batch, train) in _variants().items():
        out = tmp_path / label
        convert(model, batch=batch, train=train, name=label).save(file=out)
        for hooks in ([], ["-DNITRO_TEST_HOOKS"]):
            proc = subprocess.run([cc, *STRICT, *hooks, "-c", str(out / f"{label}.c"), "-o", str(out / "m.o")],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{label} with {cc}: {proc.stderr}"


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_generated_training_runs_clean_under_ubsan_and_asan(bundled, cc):
    """Host harness with -fsanitize=undefined,address (clang adds implicit-conversion); results checked."""
    spec = dict(preset("cnn_small"), dropout=0.1)
    for profile, bits in (("reference", 32), ("default", 16)):
        model = Model(spec, profile, bits, seed=3)
        conv = convert(model, batch=8, train=True, name="san")
        s = Session(784)
        for i in range(6):
            x, y = bundled.x_train[i * 8:(i + 1) * 8], bundled.y_train[i * 8:(i + 1) * 8]
            s.train(x, y)
            model.train_step(x, y, 512)
        s.predict(bundled.x_test[:50])
        s.weights()
        res = run_host_harness(conv, s, cc=cc, sanitize=True)
        weights, rng, lr = res[-1]
        for k, w in model.weights.items():
            np.testing.assert_array_equal(weights[k], w, err_msg=k)
        assert rng == model.dropout_rng.state and lr == 512
        np.testing.assert_array_equal(res[-2][0], model.predict_scores(bundled.x_test[:50]))


def test_reported_arena_is_exactly_what_the_code_declares(tmp_path):
    for label, (model, batch, train) in _variants().items():
        conv = convert(model, batch=batch, train=train, name=label)
        conv.save(file=tmp_path)
        obj = tmp_path / f"{label}.o"
        subprocess.run(["gcc", *STRICT, "-c", str(tmp_path / f"{label}.c"), "-o", str(obj)], check=True)
        syms = subprocess.run(["nm", "-S", "--defined-only", str(obj)], capture_output=True, text=True,
                              check=True).stdout
        sizes = {ln.split()[-1]: int(ln.split()[1], 16) for ln in syms.splitlines() if len(ln.split()) == 4}
        assert sizes["arena"] == conv.plan.arena_bytes, label
        header = (tmp_path / f"{label}.h").read_text()
        assert f"{label.upper()}_ARENA_BYTES {conv.plan.arena_bytes}" in header
        wsum = sum(v for k, v in sizes.items() if k.startswith("w_") and not k.endswith("_init"))
        assert wsum == conv.plan.weight_bytes, label


def test_memory_plan_never_overlaps_buffers_that_are_alive_together():
    for label, (model, batch, train) in _variants().items():
        p = plan(model, batch, train, label)
        for a in p.buffers:
            assert a.offset % 8 == 0 and a.offset + a.nbytes <= p.arena_bytes
            for b in p.buffers:
                if a is b or a.last < b.first or b.last < a.first:
                    continue
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (label, a.name, b.name)


def test_every_op_record_kind_is_planned_and_rendered():
    """The typed plan: one record class per op kind, each op's calls in the C, every buffer it names in the arena."""
    model, batch, train = _variants()["cnn_dropout_train_ref"]
    conv = convert(model, batch=batch, train=train, name="kinds")
    p, c = conv.plan, conv.sources["kinds.c"]
    classes = {"conv": ops.ConvOp, "linear": ops.LinearOp, "maxpool": ops.MaxPoolOp, "dropout": ops.DropoutOp,
               "output": ops.OutputOp}
    assert {o.kind for o in p.ops} == set(classes) and isinstance(p.ops[-1], ops.OutputOp)
    for i, o in enumerate(p.ops):
        assert type(o) is classes[o.kind]
        assert f"NITRO_OP_BEGIN({100 + i});" in c
        if o.kind != "dropout":
            assert f"NITRO_OP_BEGIN({i});" in c
        for name in ("fwd_infer", "fwd_train", "step_fn"):
            if getattr(o, name, None):
                assert f"{getattr(o, name)}(" in c, (i, name)
        for v in vars(o).values():
            if isinstance(v, ops.Activation):
                v = v.buf
            if isinstance(v, Buffer):
                assert any(v is b for b in p.buffers), (i, v.name)
                assert f"arena.{v.name}.v" in c, (i, v.name)
    kernels = conv.sources["kinds_kernels.h"]
    for k in p.kernels:
        fn = "nitro_" + {"conv_col": "pad", "relu": "relu_inplace", "headpool": "headpool_s8"}.get(k.kind, k.kind)
        fn += (f"_{k.sfx}" if k.sfx else "") + {"int32_t": "_acc32", "int64_t": "_acc64"}.get(k.acc, "")
        assert re.search(rf"\n(static|NITRO_INLINE|static NITRO_NOINLINE) void {fn}\(", kernels), k
    for f in p.fwd_fns:
        assert f"static void {f.name}(" in kernels


def test_generated_files_are_self_contained_and_float_free(tmp_path):
    model, batch, train = _variants()["cnn_dropout_train_ref"]
    paths = convert(model, batch=batch, train=train, name="sc").save(file=tmp_path)
    assert sorted(p.name for p in paths) == ["CMakeLists.txt", "sc.c", "sc.h", "sc.mk", "sc_kernels.h"]
    for p in paths:
        if p.suffix not in (".c", ".h"):
            continue
        text = p.read_text()
        # the model's own files are poisoned; the public header is not (it would break the includer's code)
        assert ("#pragma GCC poison float double" in text) == (p.name != "sc.h"), p.name
        body = text.replace("#pragma GCC poison float double", "")
        code = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        assert not re.search(r"\b(float|double|malloc|calloc|realloc|free)\b", code), p.name
        includes = set(re.findall(r'#include [<"]([^>"]+)[>"]', text))
        assert includes <= {"stdint.h", "stddef.h", "string.h", "sc.h", "sc_kernels.h"}, includes


def test_mcu_cnn_trains_on_device_in_256_kb_and_beats_float_backprop_memory():
    model = Model(preset("mcu_cnn"), "default", 16)
    p = plan(model, batch=8, train=True, name="m")
    assert p.ram_bytes <= 256 * 1024
    fp = fp32_backprop_bytes(model, 8)
    assert p.ram_bytes < 0.24 * fp["total"]  # the paper: up to 76 % less than FP back-propagation


def test_compiled_wrapper_state_export_and_rejects_bad_batches(bundled):
    model = Model(preset("mlp1"), "default", 16, seed=1)
    cm = compile_model(model, batch=4, train=True, name="wrap")
    w0 = cm.get_weights()
    with pytest.raises(ValueError):
        cm.train_batch(bundled.x_train[:4], np.array([0, 1, 2, 10]))  # label out of range
    with pytest.raises(ValueError):
        cm.train_batch(bundled.x_train[:5], bundled.y_train[:5])  # over the generated batch
    with pytest.raises(ValueError):
        cm.set_lr_inv(0)
    for k in w0:  # nothing changed
        np.testing.assert_array_equal(cm.get_weights()[k], w0[k])
    cm.train_batch(bundled.x_train[:4], bundled.y_train[:4])
    state, w1 = cm.rng_state, cm.get_weights()
    cm.reset()
    np.testing.assert_array_equal(cm.get_weights()["output"], w0["output"])
    cm.set_weights(w1)
    cm.rng_state = state
    for k in w1:
        np.testing.assert_array_equal(cm.get_weights()[k], w1[k])
    too_big = dict(w1, output=np.full_like(w1["output"], 40000))
    with pytest.raises(ValueError):
        cm.set_weights(too_big)  # does not fit int16


def test_inference_only_build_predicts_like_python(bundled):
    model = Model(preset("cnn_small"), "default", 32, seed=5)
    cm = compile_model(model, name="inf")
    assert not cm.trainable and cm.plan.batch == 1
    np.testing.assert_array_equal(cm.predict_scores(bundled.x_test[:300])[0], model.predict_scores(bundled.x_test[:300]))


def test_fused_maxpool_inference_equals_the_unfused_pool_on_ties_saturation_and_negative_sums(monkeypatch):
    """The conv's output stage takes the 2x2 window's maximum int32 sum and scales it once: equal to pooling
    the scaled outputs only because truncating scaling, the clip and NITRO-ReLU are monotone.  The windows
    are checked to hold sums that scale alike, saturating sums, and negative maxima whose output a floor
    (not truncating) division would change; the 11x11 map has a last row and column the pool drops."""
    spec = {"kind": "cnn", "input_shape": [1, 11, 11], "num_classes": 100, "dropout": 0.0, "fc_hidden": [],
            "features": [["conv", 4, 3, 1, 1], ["maxpool", 2, 2]]}
    model = Model(spec, "default", 16, seed=3)
    rng = np.random.default_rng(0)
    model.weights["conv0.fwd"] = np.stack([rng.integers(-b, b + 1, size=(1, 3, 3)) for b in (3000, 400, 60, 1200)]
                                          ).astype(np.int16)
    model.weights["output"] = (np.eye(100) * model.output.sf).astype(np.int16)  # weight = SF: the scores are the pooled map
    x = rng.integers(-127, 128, size=(64, 1, 11, 11)).astype(np.int8)
    xp, w = np.pad(x[:, 0].astype(np.int64), ((0, 0), (1, 1), (1, 1))), model.weights["conv0.fwd"][:, 0].astype(np.int64)
    z = sum(w[None, :, ky, kx, None, None] * xp[:, None, ky:ky + 10, kx:kx + 10] for ky in range(3) for kx in range(3))
    win = np.sort(z.reshape(64, 4, 5, 2, 5, 2).transpose(0, 1, 2, 4, 3, 5).reshape(64, 4, 5, 5, 4), axis=-1)
    sf = model.stages[0].sf
    trunc = np.sign(win) * (np.abs(win) // sf)

    def relu(q):
        return L.relu_forward(np.clip(q, -127, 127).astype(np.int8), model.spec["slope_inv"])
    top = win[..., -1]
    assert ((win[..., -2] != top) & (trunc[..., -2] == trunc[..., -1])).any()  # distinct sums, one output
    assert (trunc[..., -1] > 127).any() and (trunc[..., -1] < -127).any()  # all four saturate (both ends)
    assert ((top < 0) & (relu(trunc[..., -1]) != relu(top // sf))).any()  # floor division would differ
    ref = model.predict_scores(x)
    np.testing.assert_array_equal(ref, relu(trunc[..., -1]).reshape(64, 100))  # what the pool must give
    fused = compile_model(model, name="pf")
    assert [op.fused for op in fused.plan.ops if op.kind == "maxpool"] == [True]
    monkeypatch.setattr(Walk, "fused_pool", lambda self, st, acc: 0)
    unfused = compile_model(model, name="pu")
    assert not any(op.fused for op in unfused.plan.ops if op.kind == "maxpool")
    np.testing.assert_array_equal(unfused.predict_scores(x)[0], ref)
    np.testing.assert_array_equal(fused.predict_scores(x)[0], ref)


def test_generator_refuses_what_it_cannot_prove_or_emit():
    with pytest.raises(CodegenError, match="C identifier"):
        plan(Model(preset("mlp1")), 1, False, "9lives")
    with pytest.raises(CodegenError, match="255 classes"):
        plan(Model(dict(kind="mlp", input_shape=[4], num_classes=300, hidden=[3])), 1, False, "m")
    with pytest.raises(CodegenError, match="over the limit"):
        convert(Model(preset("mcu_cnn")), batch=8, train=True, ram_limit=100_000)


def test_a_ram_limit_refusal_names_the_largest_trainable_tail_within_it():
    model = Model(preset("mcu_cnn"))
    rows = {r["label"]: r for r in tail_ram(model, 8)}
    limit = rows["fc0..output"]["ram_bytes"] + 1  # fc0..output fits, conv2..output does not
    with pytest.raises(CodegenError, match=rf"over the limit of {limit}; the largest trainable tail within it is "
                                           rf"fc0..output \({rows['fc0..output']['ram_bytes']} bytes\): "
                                           "--trainable fc0,output"):
        convert(model, batch=8, train=True, ram_limit=limit)
    with pytest.raises(CodegenError, match="not even the output layer alone fits"):
        convert(model, batch=8, train=True, ram_limit=rows["output"]["ram_bytes"] - 1)


def _cli(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nitro_mcu.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_generate_cli_writes_all_files_or_nothing(tmp_path):
    out = tmp_path / "gen"
    r = _cli(["generate", "mcu_cnn", "--train", "--weights", "int16", "--batch", "8", "--out", str(out),
              "--name", "mnist_cnn"])
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["CMakeLists.txt", "mnist_cnn.c", "mnist_cnn.h", "mnist_cnn.mk",
                                                     "mnist_cnn_kernels.h"]
    assert "arena (batch 8, training)" in r.stdout and "float32 back-propagation" in r.stdout
    bad = tmp_path / "broken.nitro"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    for args in (["generate", str(bad), "--out", str(tmp_path / "x")],
                 ["generate", "mcu_cnn", "--train", "--ram-limit", "1000", "--out", str(tmp_path / "y")],
                 ["generate", "mlp1", "--name", "bad-name", "--out", str(tmp_path / "z")]):
        r = _cli(args)
        assert r.returncode == 2, args
        assert r.stderr.startswith("nitro-mcu: error:") and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_wheel_install_generates_from_packaged_templates(tmp_path):
    """A non-editable install of the built wheel (templates and firmware inside the package)."""
    repo = Path(__file__).resolve().parents[1]
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheel_dir), str(repo)], check=True, capture_output=True)
    target = tmp_path / "site"
    whl = next(wheel_dir.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(whl)],
                   check=True, capture_output=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import nitro_mcu, nitro_mcu.codegen as c;"
            "assert nitro_mcu.__file__.startswith(sys.argv[1]), nitro_mcu.__file__;"
            "print(c.template_dir());"
            "import nitro_mcu.spec as s; assert s.schema()['title'] == 'nitro_mcu model description';"
            "c.convert(nitro_mcu.build('mlp1'), name='w').save(file=sys.argv[2]);"
            "from nitro_mcu.trainer.network import Model;"
            "c.convert(Model(s.preset('mcu_cnn'), 'default', 16), batch=8, train=True, name='k').save(file=sys.argv[3])")
    r = subprocess.run([sys.executable, "-c", code, str(target), str(tmp_path / "out"), str(tmp_path / "k")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(target) in r.stdout
    assert (tmp_path / "out" / "w.c").is_file()
    # every kernel template (templates/kernels/**, the DSP variants included) is in the wheel: same C as here
    here = convert(Model(preset("mcu_cnn"), "default", 16), batch=8, train=True, name="k").sources
    for fname, text in here.items():
        assert (tmp_path / "k" / fname).read_text() == text, f"{fname} from the wheel differs"


@pytest.mark.parametrize("preset_name,weight_bits", [("mlp1", 16), ("mcu_cnn", 16), ("mlp1", 32)])
def test_generated_c_is_exact_from_grown_weights_and_partial_batches(bundled, preset_name, weight_bits):
    """Weights near the limits (large deltas and gradients: the fused updates' int64 paths) and batches below
    the maximum (the transposed copies' zero padding), against Python."""
    model = grow(Model(preset(preset_name), "default", weight_bits, seed=3), seed=4)
    cm = compile_model(model, batch=8, train=True, name=f"grown_{preset_name}")
    for s, b in enumerate((8, 5, 3, 8)):
        x, y = bundled.x_train[8 * s:8 * s + b], bundled.y_train[8 * s:8 * s + b]
        assert cm.train_batch(x, y) == model.train_step(x, y, model.spec["lr_inv"]).correct
        _compare(cm, model, s + 1)
