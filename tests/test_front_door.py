"""Validation at the front door (issue 12): every bad model description, hyper-parameter, compiled-wrapper
argument and model/data mismatch is one clear line (CLI: exit status 2, no traceback) before anything is
allocated, written or trained; and the CLI conventions (--version, defaults in --help, --target choices, the
same defaults as the Python API)."""
from __future__ import annotations

import copy
import gzip
import inspect
import json
import re
import struct
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu import cli
from nitro_mcu.codegen import convert
from nitro_mcu.device.compiled import InputError, compile_model
from nitro_mcu.spec import DEFAULT_BATCH, DEFAULT_EPOCHS, SpecError, normalize_spec, preset, schema
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer.network import Model
from test_cli import assert_one_line_error, run_main, run_proc

MLP = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[10])
CNN = dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10, features=[["conv", 4, 3, 1, 1]])

# name -> (description, substrings of the error, does the JSON Schema see it too)
SPEC_CASES = {
    "hidden [true]": ({**MLP, "hidden": [True]}, ["'hidden'", "True"], True),
    "fc_hidden 'x'": ({**CNN, "fc_hidden": "x"}, ["'fc_hidden'", "'x'"], True),
    "hidden [100000000]": ({**MLP, "hidden": [100000000]}, ["'hidden'", "100000000"], True),
    "about 1e9 weights": ({**MLP, "hidden": [100000, 10000]}, ["weights", "over the limit"], False),
    "a 1e10-value input": ({**CNN, "input_shape": [1, 100000, 100000]}, ["values per sample"], False),
    "fc_hidden [0]": ({**CNN, "fc_hidden": [0]}, ["'fc_hidden'", "got 0"], True),
    "fc_hidden [-3]": ({**CNN, "fc_hidden": [-3]}, ["'fc_hidden'", "-3"], True),
    "no num_classes": ({k: v for k, v in MLP.items() if k != "num_classes"}, ["lacks 'num_classes'"], True),
    "lr_inv 1e23": ({**MLP, "lr_inv": 1e23}, ["'lr_inv'", "2147483647"], True),
    "lr_inv 10**23": ({**MLP, "lr_inv": 10**23}, ["'lr_inv'", "2147483647"], True),
    "dataset 'nope'": ({**MLP, "dataset": "nope"}, ["'dataset'", "'nope'"], False),
    "conv C_out true": ({**CNN, "features": [["conv", True, 3, 1, 1]]}, ["conv entry"], True),
    "dropout 'x'": ({**MLP, "dropout": "x"}, ["dropout", "'x'"], True),
    "input_shape [true]": ({**MLP, "input_shape": [True]}, ["'input_shape'"], True),
    "weight_bits 8": ({**MLP, "weight_bits": 8}, ["'weight_bits'", "8"], True),
    "decay over int32": ({**MLP, "head_decay_inv": 2**31}, ["'head_decay_inv'"], True),
    "features not a list": ({**CNN, "features": "conv"}, ["'features'"], True),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
@pytest.mark.parametrize("verb", ["summary", "train", "generate"])
def test_a_bad_description_is_one_line_and_nothing_is_written(case, verb, tmp_path, capsys):
    spec, needles, _ = SPEC_CASES[case]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    args = {"summary": [], "train": ["--epochs", "1", "--quiet", "--out", str(out)],
            "generate": ["--train", "--out", str(out)]}[verb]
    rc, stdout, err = run_main(capsys, verb, str(path), *args)
    assert_one_line_error(rc, err, str(path), *needles)
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_the_api_and_the_schema_refuse_the_same_descriptions(case):
    spec, needles, schema_sees_it = SPEC_CASES[case]
    with pytest.raises(SpecError) as e:
        nm.build(copy.deepcopy(spec))
    assert all(n in str(e.value) for n in needles) and "\n" not in str(e.value), str(e.value)
    errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(spec))
    assert bool(errors) == schema_sees_it, errors


def test_a_bad_description_in_a_real_process_has_no_traceback(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({**MLP, "hidden": [100000000]}))
    r = run_proc("summary", str(tmp_path / "m.json"), timeout=60)
    assert_one_line_error(r.returncode, r.stderr, "'hidden'")


def test_presets_still_fit_the_limits():
    for name in nm.PRESETS:
        normalize_spec(preset(name))


@pytest.fixture(scope="module")
def bundled():
    return nm.load_data("bundled", seed=0)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(lr_inv=512.7), "lr_inv"), (dict(lr_inv=0), "lr_inv"), (dict(lr_inv=True), "lr_inv"),
    (dict(lr_inv=2**31), "lr_inv"), (dict(epochs=1.5), "epochs"), (dict(epochs=0), "epochs"),
    (dict(batch_size=True), "batch_size"), (dict(batch_size=64.0), "batch_size"),
    (dict(lr_schedule=[512, 3.5]), "lr_schedule"), (dict(lr_schedule=[]), "lr_schedule"),
])
def test_train_refuses_hyper_parameters_that_are_not_integers_in_range(kwargs, needle, bundled):
    model = nm.build(dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[4]))
    before = {k: v.copy() for k, v in model.weights.items()}
    with pytest.raises(SpecError, match=needle) as e:
        nm.train(model, bundled, **{"epochs": 1, **kwargs})
    assert "\n" not in str(e.value)
    assert all(np.array_equal(before[k], model.weights[k]) for k in before)  # nothing trained


@pytest.mark.parametrize("argv, needle", [
    (["--lr-inv", "512.7"], "'512.7'"), (["--lr-inv", str(2**31)], "2147483648"), (["--epochs", "2.5"], "'2.5'"),
    (["--batch", "0"], "'0'"), (["--seed", "-1"], "'-1'"),
])
def test_the_cli_refuses_the_same_hyper_parameters(argv, needle, tmp_path, capsys):
    rc, _, err = run_main(capsys, "train", "mlp1", "--quiet", "--out", str(tmp_path / "o"), *argv)
    assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "o").exists()


def test_load_data_refuses_bad_seeds_and_sizes():
    for kwargs, needle in ((dict(seed=1.5), "seed"), (dict(seed=-2), "seed"), (dict(val_size=10.5), "val_size")):
        with pytest.raises(SpecError, match=needle):
            nm.load_data("bundled", **kwargs)


def test_build_refuses_bad_widths_seeds_and_profiles():
    for kwargs, needle in ((dict(weight_bits=8), "weight_bits"), (dict(weight_bits=16.0), "weight_bits"),
                           (dict(seed=-1), "seed"), (dict(seed=0.5), "seed"), (dict(profile="exact"), "profile")):
        with pytest.raises(SpecError, match=needle):
            nm.build("mlp1", **kwargs)


# ------------------------------------------------------------------------------------------------ the wrapper
@pytest.fixture(scope="module")
def cm():
    return compile_model(Model(dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[8]), "default", 16,
                               seed=4), batch=4, train=True, name="door")


def state(c):
    return c.get_weights(), c.rng_state, c.lr_inv


X4 = np.zeros((4, 784), np.int8)


@pytest.mark.parametrize("call, needle", [
    (lambda c: c.train_batch(X4, [1, 2, 3, 256]), "labels must lie in [0, 9], got 256"),
    (lambda c: c.train_batch(X4, [1, 2, 3, 263]), "got 263"),
    (lambda c: c.train_batch(X4, [1, 2, 3, 3.9]), "labels must be integers"),
    (lambda c: c.train_batch(X4, [1, 2, 3, -1]), "got -1"),
    (lambda c: c.train_batch(np.full((4, 784), 0.7), [1, 2, 3, 4]), "float64 values such as 0.7"),
    (lambda c: c.train_batch(np.full((4, 784), 200), [1, 2, 3, 4]), "got 200"),
    (lambda c: c.train_batch(X4, [1, 2]), "4 input sample(s) need 4 labels"),
    (lambda c: c.train_batch(np.zeros((5, 784), np.int8), [0] * 5), "1..4 samples"),
    (lambda c: c.train_batch(np.zeros((4, 783), np.int8), [0] * 4), "shape"),
    (lambda c: c.predict(np.full((2, 784), 0.7)), "float64"),
    (lambda c: c.predict(np.full((2, 784), 200)), "got 200"),
    (lambda c: c.predict(np.zeros(784, np.int8)), "shape"),
    (lambda c: c.set_lr_inv(2**32 + 5), "lr_inv must be an integer in [1, 2147483647]"),
    (lambda c: c.set_lr_inv(512.5), "lr_inv"),
    (lambda c: c.set_lr_inv(0), "lr_inv"),
    (lambda c: c.set_weights(dict(c.get_weights(), output=np.full((10, 8), 2**31 + 5))), "got 2147483653"),
    (lambda c: c.set_weights(dict(c.get_weights(), output=np.full((10, 8), 40000))), "[-32768, 32767]"),
    (lambda c: c.set_weights(dict(c.get_weights(), output=np.full((10, 8), 1.5))), "integers"),
    (lambda c: c.set_weights(dict(c.get_weights(), output=np.zeros((8, 10), np.int16))), "shape [10, 8]"),
    (lambda c: c.set_weights({"output": np.zeros((10, 8), np.int16)}), "missing"),
    (lambda c: setattr(c, "rng_state", -1), "rng_state"),
])
def test_the_compiled_wrapper_refuses_bad_input_before_calling_c(call, needle, cm):
    before = state(cm)
    with pytest.raises(InputError) as e:
        call(cm)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    after = state(cm)
    assert all(np.array_equal(before[0][k], after[0][k]) for k in before[0]) and before[1:] == after[1:]


def test_the_wrapper_still_takes_good_input(cm):
    x = np.arange(4 * 784).reshape(4, 1, 28, 28) % 200 - 100
    assert 0 <= cm.train_batch(x, np.array([1, 2, 3, 4], np.uint64)) <= 4
    cm.set_lr_inv(2**31 - 1)
    assert cm.lr_inv == 2**31 - 1 and cm.predict(x.tolist()).shape == (4,)
    cm.reset()


# ------------------------------------------------------------------------------------------------ eval
def write_idx_dir(d: Path, x: np.ndarray, y: np.ndarray) -> Path:
    d.mkdir(parents=True)

    def idx(a):
        return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape) + a.tobytes()

    for split, (xs, ys) in {"train": (x, y), "t10k": (x, y)}.items():
        (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(xs.astype(np.uint8))))
        (d / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(ys.astype(np.uint8))))
    return d


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory, bundled):
    """A model trained on the bundled MNIST subset, and IDX folders: MNIST images, other pictures under the
    same file names (inverted digits stand for FashionMNIST), smaller images, and three classes."""
    d = tmp_path_factory.mktemp("eval")
    model = nm.build(dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[8]), seed=1)
    nm.train(model, bundled, epochs=1, progress=False)
    path = nm.save(model, d / "mnist.nitro", data=bundled)
    raw = D.load_bundled()
    x, y = raw.x_test[:300, 0], raw.y_test[:300]
    return dict(model=str(path), mnist_dir=write_idx_dir(d / "mnist", x, y),
                fashion_dir=write_idx_dir(d / "fashion-mnist", 255 - x, y),
                small_dir=write_idx_dir(d / "small", x[:, ::2, ::2], y),
                three_dir=write_idx_dir(d / "three", x, y % 3))


def test_eval_names_the_data_it_used(eval_setup, capsys):
    rc, out, err = run_main(capsys, "eval", eval_setup["model"], "--data", "mnist", "--data-dir",
                            str(eval_setup["mnist_dir"]))
    assert rc == 0, err
    assert f"on 300 test images of mnist (files in {eval_setup['mnist_dir']})" in out
    rc, out, _ = run_main(capsys, "eval", eval_setup["model"], "--data-dir", str(eval_setup["mnist_dir"]))
    assert rc == 0 and f"of mnist (files in {eval_setup['mnist_dir']})" in out  # not the bundled set
    rc, out, _ = run_main(capsys, "eval", eval_setup["model"], "--json")
    ev = json.loads(out)
    assert ev["dataset"] == "bundled" and ev["data_dir"] is None and ev["test_images"] == 1000
    rc, out, _ = run_main(capsys, "eval", eval_setup["model"])
    assert "of bundled (the MNIST subset in the package)" in out


@pytest.mark.parametrize("args, needles", [
    (["--data", "mnist", "--data-dir", "fashion_dir"], ["do not look like the model's training data", "pixel mean"]),
    (["--data-dir", "fashion_dir"], ["images of mnist", "do not look like"]),  # the model's dataset, these files
    (["--data", "fashion-mnist", "--data-dir", "fashion_dir"], ["trained on bundled", "the data is fashion-mnist"]),
    (["--data", "small_dir"], ["shape (1, 14, 14)", "(784,)"]),
    (["--data", "three_dir"], ["3 classes", "model 10"]),
])
def test_eval_refuses_data_that_does_not_match_the_model(args, needles, eval_setup, capsys):
    argv = [str(eval_setup[a]) if a in eval_setup else a for a in args]
    rc, out, err = run_main(capsys, "eval", eval_setup["model"], *argv)
    assert_one_line_error(rc, err, *needles)
    assert out == ""


# ------------------------------------------------------------------------------------------------ CLI conventions
def test_version():
    r = run_proc("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"nitro-mcu {nm.__version__}"


def test_every_default_is_shown_in_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices).choices  # noqa: SLF001
    for name, sp in sub.items():
        text = sp.format_help()
        text = text[text.index("options:"):]
        for action in sp._actions:  # noqa: SLF001
            if action.option_strings and action.nargs != 0 and action.default is not None:
                opt = action.option_strings[-1]
                block = text[text.index(f"  {opt}"):]
                block = block[:block.index("\n  -") if "\n  -" in block else len(block)]
                assert "default" in block, (name, opt, block)


def test_target_has_choices_and_a_bad_one_is_refused(capsys):
    rc, _, err = run_main(capsys, "verify", "mlp1", "--target", "m9")
    assert_one_line_error(rc, err, "m9", "m0", "m33", "rv32imc", "stm32f405")
    assert "{m0,m3,m4,m7,m33,rp2040,rv32imc,rv32imac,stm32f405,stm32f205,stm32f4-discovery}" in run_proc("run", "--help").stdout   # the board: Renode only
    assert "{m0,m3,m4,m7,m33,rp2040,rv32imc,rv32imac,stm32f405,stm32f205}" in run_proc("report", "--help").stdout


def test_a_board_target_on_qemu_is_a_one_line_error(capsys):
    rc, _, err = run_main(capsys, "verify", "mlp1", "--target", "stm32f4-discovery", "--steps", "1")
    assert_one_line_error(rc, err, "stm32f4-discovery has no QEMU machine", "--emulator renode")


def test_cli_and_api_share_their_defaults(tmp_path, capsys):
    t = cli.build_parser().parse_args(["train", "mlp1"])
    sig = inspect.signature(nm.train).parameters
    assert (t.batch, sig["batch_size"].default) == (DEFAULT_BATCH, DEFAULT_BATCH)
    # epochs: None on the command line resolves to the API's default, except for a description without lr_inv
    # (searched, then early stopping within lrsearch.AUTO_EPOCHS: tests/test_lrsearch.py)
    assert (t.epochs, sig["epochs"].default) == (None, DEFAULT_EPOCHS)
    assert sig["progress"].default is None and not t.quiet  # both: a bar when stderr is a terminal
    g = cli.build_parser().parse_args(["generate", "mlp1", "--out", "x"])
    assert g.name is None and cli.c_prefix("mlp1") == "mlp1"   # the CLI names the C after the model
    assert inspect.signature(convert).parameters["name"].default == \
        inspect.signature(compile_model).parameters["name"].default
    assert nm.build("mcu_cnn").weight_bits == 16 and nm.build("mlp1").weight_bits == 32
    rc, _, err = run_main(capsys, "generate", "mcu_cnn", "--out", str(tmp_path / "g"), "--name", "c")
    assert rc == 0, err
    assert re.search(r"#define C_WEIGHT_BITS 16\b", (tmp_path / "g" / "c.h").read_text())
