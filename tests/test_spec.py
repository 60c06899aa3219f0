"""The model description: the shipped JSON Schema and the Python validator accept and reject the same descriptions."""
from __future__ import annotations

import copy
import json

import jsonschema
import numpy as np
import pytest

from nitro_mcu.spec import ARCH_KEYS, DEFAULTS, PRESETS, TRAIN_KEYS, SpecError, normalize_spec, schema
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.network import Model


@pytest.fixture(scope="module")
def validator():
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_and_its_built_description_pass_the_schema(name, validator):
    validator.validate(PRESETS[name])
    validator.validate(normalize_spec(copy.deepcopy(PRESETS[name])))  # defaults filled in, as a model file holds


def test_schema_states_the_codes_facts():
    s = schema()
    props = s["properties"]
    assert set(props) == set(ARCH_KEYS) | set(TRAIN_KEYS)
    assert {k: props[k]["default"] for k in DEFAULTS} == DEFAULTS
    assert props["slope_inv"]["enum"] == sorted(L.RELU_MEAN)
    rates = s["$defs"]["rate"]["enum"]
    assert rates == [p / 1000 for p in range(50, 1000, 50)]
    assert [L.check_dropout_rate(r) for r in rates] == list(range(50, 1000, 50))
    for bad in (0.0, 0.04, 0.12, 0.96, 1.0):
        with pytest.raises(ValueError):
            L.check_dropout_rate(bad)


MLP = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[32])
CNN = dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10, features=[["conv", 4, 3, 1, 1], ["maxpool", 2, 2]],
           fc_hidden=[16])

VALID = [
    MLP,
    {**MLP, "input_shape": [28, 28], "dropout": 0.15, "slope_inv": 20, "fwd_decay_inv": 0, "name": "tiny"},
    {**MLP, "dataset": "fashion-mnist", "augment": True, "one_hot_value": 127, "num_classes": 2},
    CNN,
    {**CNN, "features": [["conv", 4, 3, 1, 0], ["dropout", 0.95], ["maxpool", 2, 2]], "dropout": 0.05},
    {**CNN, "fc_hidden": [], "pred_decoder_dim": 64, "lr_inv": 1, "head_decay_inv": 0},
]

INVALID = [
    ([1, 2], "JSON object"),
    ({k: v for k, v in MLP.items() if k != "kind"}, "kind"),
    ({**MLP, "kind": "rnn"}, "kind"),
    ({**MLP, "learning_rate": 0.01}, "learning_rate"),
    ({**MLP, "lr_inv": 0}, "lr_inv"),
    ({**MLP, "lr_inv": "512"}, "lr_inv"),
    ({**MLP, "fwd_decay_inv": -1}, "fwd_decay_inv"),
    ({**MLP, "num_classes": 1}, "num_classes"),
    ({**MLP, "one_hot_value": 200}, "one_hot_value"),
    ({**MLP, "slope_inv": 6}, "slope_inv"),
    ({**MLP, "dropout": 0.12}, "dropout"),
    ({**MLP, "dropout": 1.0}, "dropout"),
    ({**MLP, "hidden": []}, "hidden"),
    ({**MLP, "hidden": [10, 0]}, "hidden"),
    ({k: v for k, v in MLP.items() if k != "hidden"}, "hidden"),
    ({**MLP, "input_shape": []}, "input_shape"),
    ({**MLP, "input_shape": "784"}, "input_shape"),
    ({**MLP, "input_shape": [28, -28]}, "input_shape"),
    ({**CNN, "input_shape": [1, 28]}, "input_shape"),
    ({**CNN, "features": []}, "features"),
    ({**CNN, "features": [["maxpool", 2, 2]]}, "features"),
    ({**CNN, "features": [["conv", 4, 3, 2, 1]]}, "conv"),
    ({**CNN, "features": [["conv", 4, 3, 1]]}, "conv"),
    ({**CNN, "features": [["conv", 4, 3, 1, -1]]}, "conv"),
    ({**CNN, "features": [["conv", 4, 3, 1, 1], ["maxpool", 2]]}, "maxpool"),
    ({**CNN, "features": [["conv", 4, 3, 1, 1], ["avgpool", 2, 2]]}, "avgpool"),
    ({**CNN, "features": [["conv", 4, 3, 1, 1], ["dropout", 0.12]]}, "dropout"),
]


@pytest.mark.parametrize("spec", VALID)
def test_valid_descriptions_pass_both(spec, validator):
    validator.validate(spec)
    normalize_spec(copy.deepcopy(spec))
    Model(copy.deepcopy(spec))


@pytest.mark.parametrize("spec, key", INVALID)
def test_invalid_descriptions_fail_both(spec, key, validator):
    assert list(validator.iter_errors(spec)), "the schema accepts it"
    with pytest.raises(SpecError) as e:
        normalize_spec(copy.deepcopy(spec))
    assert key in str(e.value) and "\n" not in str(e.value), str(e.value)


# ---- `nitro-mcu spec`: a preset printed as JSON reads back to the same model -------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_spec_prints_json_that_builds_the_same_model(name, tmp_path, capsys, validator):
    from nitro_mcu import api
    from nitro_mcu.cli import main

    assert main(["spec", name]) == 0
    text = capsys.readouterr().out
    desc = json.loads(text)
    validator.validate(desc)
    assert set(DEFAULTS) - {"pred_decoder_dim"} <= set(desc)  # every default written out
    path = tmp_path / f"{name}.json"
    path.write_text(text)
    assert api.resolve_spec(str(path))[1] == api.resolve_spec(name)[1]  # the training defaults too
    if PRESETS[name]["kind"] == "cnn" and PRESETS[name]["features"][0][1] > 16 or max(PRESETS[name].get("hidden", [0])) > 500:
        return  # the big presets: the description and defaults suffice (building one takes seconds)
    a, b = api.build(name, seed=5), api.build(str(path), seed=5)
    assert a.spec == b.spec and a.weight_bits == b.weight_bits
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights) and a.weights.keys() == b.weights.keys()


def test_spec_reads_a_model_file_and_writes_atomically(tmp_path, capsys):
    from nitro_mcu import api
    from nitro_mcu.cli import main

    m = api.build({"kind": "mlp", "input_shape": [6], "num_classes": 3, "hidden": [5], "lr_inv": 64})
    api.save(m, tmp_path / "m.nitro")
    out = tmp_path / "sub" / "m.json"
    assert main(["spec", str(tmp_path / "m.nitro"), "--out", str(out)]) == 0
    desc = json.loads(out.read_text())
    assert desc["lr_inv"] == 64 and desc["hidden"] == [5] and "pred_decoder_dim" not in desc
    assert main(["summary", str(out)]) == 0


def test_spec_of_a_trained_model_file_gives_the_lr_inv_its_training_started_with(tmp_path, capsys):
    """A searched (or --lr-inv) lr_inv, not the description's default 512: training the written description
    again starts where the model's own training did."""
    from nitro_mcu import api
    from nitro_mcu.cli import main

    m = api.build({"kind": "mlp", "input_shape": [4], "num_classes": 2, "hidden": [8]})
    rng = np.random.default_rng(0)
    x, y = rng.integers(-50, 50, (120, 4)), np.arange(120) % 2
    hist = api.train(m, (x, y), epochs=2, lr_inv=96, progress=False)
    api.save(m, tmp_path / "m.nitro", data=hist.data, history=hist)
    assert main(["spec", str(tmp_path / "m.nitro"), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["lr_inv"] == 96 != m.spec["lr_inv"]


def test_natural_guesses_are_refused_with_the_entry_forms(tmp_path, capsys):
    from nitro_mcu.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "cnn", "input_shape": [1, 8, 8], "num_classes": 3,
                               "features": [{"type": "conv", "filters": 4}]}))
    assert main(["summary", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "['conv', C, K, 1, pad]" in err and "nitro-mcu spec" in err
    bad.write_text(json.dumps({"kind": "mlp", "input_shape": [4], "num_classes": 3, "layers": [8]}))
    assert main(["summary", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) in model description: layers" in err and "hidden" in err
