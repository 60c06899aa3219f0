"""The model description: a JSON-serialisable dict, its defaults and validation, and the paper's presets.

A description is a plain dict::

    {"kind": "mlp", "input_shape": [784], "num_classes": 10, "hidden": [100, 50], "dropout": 0.0,
     "lr_inv": 512, "lr_amp_factor": 640, "fwd_decay_inv": 12000, "head_decay_inv": 3000}

    {"kind": "cnn", "input_shape": [1, 28, 28], "num_classes": 10,
     "features": [["conv", 8, 3, 1, 1], ["maxpool", 2, 2], ["conv", 16, 3, 1, 1], ["maxpool", 2, 2]],
     "fc_hidden": [32], "dropout": 0.0, "pred_decoder_dim": 4096, ...}

``features`` entries are ``["conv", C_out, K, stride, pad]``, ``["maxpool", k, s]`` and
``["dropout", rate]``; ``dropout`` is the rate after every hidden FC block (the reference's
``fc_dropout``).  Optional keys and their defaults are in ``DEFAULTS``.  ``model.schema.json`` next to this
module is the same contract as a JSON Schema (draft 2020-12) for editors and other tools; geometry (a
kernel larger than its map, a pool that does not tile) is only checked when the model is built.
"""
from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import numpy as np

from .checks import (INT32_MAX, MAX_VALUES_PER_SAMPLE, MAX_WEIGHTS, SpecError, check_int,  # noqa: F401  (re-exported)
                     is_int)
from .trainer import layers as L

SCHEMA_RESOURCE = "model.schema.json"

DEFAULTS = {
    "dropout": 0.0,
    "slope_inv": 4,
    "lr_inv": 512,
    "lr_amp_factor": 640,
    "fwd_decay_inv": 12000,
    "head_decay_inv": 3000,
    "pred_decoder_dim": 4096,
    "one_hot_value": 32,
}

_VGG8B = [["conv", 128, 3, 1, 1], ["conv", 256, 3, 1, 1], ["maxpool", 2, 2], ["conv", 256, 3, 1, 1],
          ["conv", 512, 3, 1, 1], ["maxpool", 2, 2], ["conv", 512, 3, 1, 1], ["maxpool", 2, 2],
          ["conv", 512, 3, 1, 1], ["maxpool", 2, 2]]
_VGG11B = [["conv", 128, 3, 1, 1], ["conv", 128, 3, 1, 1], ["conv", 128, 3, 1, 1], ["conv", 256, 3, 1, 1],
           ["maxpool", 2, 2], ["conv", 256, 3, 1, 1], ["conv", 512, 3, 1, 1], ["maxpool", 2, 2],
           ["conv", 512, 3, 1, 1], ["conv", 512, 3, 1, 1], ["maxpool", 2, 2], ["conv", 512, 3, 1, 1],
           ["maxpool", 2, 2]]

# The paper's configurations (docs/algorithm.md §6), plus the golden-test CNN and our MCU-sized CNN.
# "dataset", "augment", "weight_bits" and "recipe" are training defaults for the preset, not part of the
# architecture.  "recipe" (nitro_mcu/trainer/recipes.py) is the default-profile recipe chosen on a validation
# split only (docs/profiles.md, "Training recipes"); "augment" is the paper's augmentation, which the reference
# profile and the paper's recipe use.
PRESETS = {
    "mlp1": dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[100, 50],
                 fwd_decay_inv=12000, head_decay_inv=3000, dataset="mnist", augment=False,
                 recipe=dict(lr_inv=128, crop_pad=1, refit=True)),
    "mlp2": dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[200, 100, 50],
                 fwd_decay_inv=10000, head_decay_inv=8000, dataset="fashion-mnist", augment=False,
                 recipe=dict(epochs=90, lr_inv=256, crop_pad=1, milestones=[30, 50, 70], refit=True)),
    "mlp3": dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[1024, 1024, 1024],
                 fwd_decay_inv=28000, head_decay_inv=500, dataset="mnist", augment=True),
    "mlp3_fmnist": dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[1024, 1024, 1024],
                        fwd_decay_inv=29000, head_decay_inv=6000, dataset="fashion-mnist", augment=True),
    "mlp4": dict(kind="mlp", input_shape=[3072], num_classes=10, hidden=[3000, 3000, 3000], dropout=0.1,
                 fwd_decay_inv=19000, head_decay_inv=7500, dataset="cifar10", augment=True),
    "vgg8b": dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10, features=_VGG8B, fc_hidden=[1024],
                  fwd_decay_inv=30000, head_decay_inv=3000, dataset="mnist", augment=True),
    "vgg8b_fmnist": dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10, features=_VGG8B,
                         fc_hidden=[1024], dropout=0.1, fwd_decay_inv=28000, head_decay_inv=3500,
                         dataset="fashion-mnist", augment=True),
    "vgg8b_cifar10": dict(kind="cnn", input_shape=[3, 32, 32], num_classes=10, features=_VGG8B,
                          fc_hidden=[1024], dropout=0.15, fwd_decay_inv=25000, head_decay_inv=3000,
                          dataset="cifar10", augment=True),
    "vgg11b": dict(kind="cnn", input_shape=[3, 32, 32], num_classes=10, features=_VGG11B, fc_hidden=[1024],
                   fwd_decay_inv=28000, head_decay_inv=4500, dataset="cifar10", augment=True),
    "cnn_small": dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10,
                      features=[["conv", 8, 3, 1, 1], ["maxpool", 2, 2], ["conv", 16, 3, 1, 1], ["maxpool", 2, 2]],
                      fc_hidden=[32], fwd_decay_inv=30000, head_decay_inv=3000, pred_decoder_dim=256,
                      dataset="mnist", augment=False),
    # Sized for on-device training: int16 weights, batch 8, well under 256 KB.
    "mcu_cnn": dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10,
                    features=[["conv", 8, 3, 1, 1], ["maxpool", 2, 2], ["conv", 16, 3, 1, 1], ["maxpool", 2, 2],
                              ["conv", 32, 3, 1, 1], ["maxpool", 2, 2]],
                    fc_hidden=[64], fwd_decay_inv=30000, head_decay_inv=3000, pred_decoder_dim=512,
                    dataset="mnist", augment=False, weight_bits=16,
                    recipe=dict(epochs=60, crop_pad=1, milestones=[30, 45], refit=True)),
    # Activity recognition on a Cortex-M4: BasicMotions windows of 6 channels x 32 int16 samples
    # (nitro_mcu/trainer/data/sensors.py, docs/sensors.md); int16 weights, full training in about 40 KB of RAM.
    "motion_mlp": dict(kind="mlp", input_shape=[192], num_classes=4, hidden=[64, 32], fwd_decay_inv=12000,
                       head_decay_inv=3000, dataset="basicmotions", augment=False, weight_bits=16),
}
TRAIN_KEYS = ("dataset", "augment", "weight_bits", "recipe")
# Every key a description may hold: the architecture (DEFAULTS and these), plus TRAIN_KEYS.
ARCH_KEYS = frozenset(DEFAULTS) | {"kind", "input_shape", "num_classes", "hidden", "features", "fc_hidden", "name"}

# Training defaults, shared by the CLI and the Python API (nitro_mcu/api.py, nitro_mcu/cli.py).
DEFAULT_EPOCHS = 10
DEFAULT_BATCH = 64
DEFAULT_WEIGHT_BITS = 32


# The order `nitro-mcu spec` writes keys in: the architecture first, then the training constants, then the
# training defaults (TRAIN_KEYS).
KEY_ORDER = ("name", "kind", "input_shape", "num_classes", "hidden", "features", "fc_hidden", "dropout",
             "pred_decoder_dim", "slope_inv", "one_hot_value", "lr_inv", "lr_amp_factor", "fwd_decay_inv",
             "head_decay_inv", *TRAIN_KEYS)


def full_description(spec: dict) -> dict:
    """A description with every default written out, in KEY_ORDER: what `nitro-mcu spec` prints and what
    `summary`/`train`/`generate` read back to the same model."""
    out = {**DEFAULTS, **spec}
    if out.get("kind") == "cnn":
        out.setdefault("fc_hidden", [])
    else:
        out.pop("pred_decoder_dim", None)  # only the conv heads use it
    normalize_spec(out)  # the printed file must build
    return {k: out[k] for k in KEY_ORDER if k in out}


def description_json(desc: dict) -> str:
    """A description as JSON a person edits: one key a line, each layer entry on its own line."""
    lines = []
    for k, v in desc.items():
        if isinstance(v, list) and v and isinstance(v[0], list):
            inner = ",\n".join(f"    {json.dumps(e)}" for e in v)
            lines.append(f'  {json.dumps(k)}: [\n{inner}\n  ]')
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def preset(name: str) -> dict:
    """A copy of a preset's description, its training defaults (TRAIN_KEYS) included."""
    if name not in PRESETS:
        raise SpecError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _widths(s: dict, key: str, allow_empty: bool) -> list:
    v = s.get(key)
    if not isinstance(v, list) or (not v and not allow_empty):
        raise SpecError(f"'{key}' must be a {'' if allow_empty else 'non-empty '}list of layer widths, got {v!r}")
    for h in v:
        check_int(f"every width in '{key}'", h, 1, MAX_VALUES_PER_SAMPLE)
    return v


def _rate(v, what: str) -> int:
    try:
        if isinstance(v, (bool, np.bool_)) or isinstance(v, str):
            raise TypeError
        return L.check_dropout_rate(v)
    except (ValueError, TypeError):
        raise SpecError(f"{what}: unsupported dropout rate {v!r}; use a multiple of 0.05 in [0.05, 0.95]") from None


def _check_feature(f) -> None:
    if not isinstance(f, list) or not f or f[0] not in ("conv", "maxpool", "dropout"):
        raise SpecError(f"bad feature entry {f!r}: use ['conv', C, K, 1, pad], ['maxpool', k, k] or "
                        "['dropout', rate] (docs/model_description.md; `nitro-mcu spec mcu_cnn` prints an example)")
    if f[0] == "conv" and (len(f) != 5 or not all(is_int(v) for v in f[1:]) or f[3] != 1
                           or not 1 <= f[1] <= MAX_VALUES_PER_SAMPLE or not 1 <= f[2] <= 4096
                           or not 0 <= f[4] <= 4096):
        raise SpecError(f"bad conv entry {f!r}: ['conv', C_out, K, 1, pad] (stride 1 only)")
    if f[0] == "maxpool" and (len(f) != 3 or not all(is_int(v) and 0 < v <= 4096 for v in f[1:])):
        raise SpecError(f"bad maxpool entry {f!r}: ['maxpool', k, k]")
    if f[0] == "dropout":
        if len(f) != 2:
            raise SpecError(f"bad dropout entry {f!r}: ['dropout', rate], rate a multiple of 0.05")
        _rate(f[1], f"bad dropout entry {f!r}")


def normalize_spec(spec: dict) -> dict:
    """Fill defaults and validate a description, sizes included, before anything is allocated; returns a new
    dict (training-only keys checked, then dropped).  Every problem is a one-line SpecError."""
    if not isinstance(spec, dict):
        raise SpecError("a model description must be a JSON object")
    check_train_keys(spec)
    s = {**DEFAULTS, **{k: v for k, v in spec.items() if k not in TRAIN_KEYS}}
    kind = s.get("kind")
    if kind not in ("mlp", "cnn"):
        raise SpecError(f"'kind' must be 'mlp' or 'cnn', got {kind!r}")
    unknown = set(s) - ARCH_KEYS
    if unknown:
        raise SpecError(f"unknown key(s) in model description: {', '.join(sorted(unknown))} (the keys are "
                        f"{', '.join(k for k in KEY_ORDER if k in ARCH_KEYS)}; docs/model_description.md)")
    missing = [k for k in ("input_shape", "num_classes", "hidden" if kind == "mlp" else "features") if k not in s]
    if missing:
        raise SpecError(f"the model description lacks {', '.join(repr(k) for k in missing)} (required for "
                        f"a{'n' if kind == 'mlp' else ''} {kind})")
    for key in ("lr_inv", "lr_amp_factor", "pred_decoder_dim"):
        check_int(f"'{key}'", s[key])
    for key in ("fwd_decay_inv", "head_decay_inv"):
        check_int(f"'{key}'", s[key], 0)
    check_int("'num_classes'", s["num_classes"], 2, 65535)
    check_int("'one_hot_value' (the int8 target)", s["one_hot_value"], 1, 127)
    if not is_int(s["slope_inv"]) or s["slope_inv"] not in L.RELU_MEAN:
        raise SpecError(f"'slope_inv' must be one of {', '.join(map(str, L.RELU_MEAN))}, got {s['slope_inv']!r}")
    if isinstance(s["dropout"], (bool, np.bool_)) or s["dropout"] != 0:
        _rate(s["dropout"], "'dropout'")
    shape = s["input_shape"]
    if not isinstance(shape, list) or not shape or not all(is_int(d) and d > 0 for d in shape):
        raise SpecError(f"'input_shape' must be a list of positive integers, got {shape!r}")
    if kind == "mlp":
        _widths(s, "hidden", allow_empty=False)
    else:
        if len(shape) != 3:
            raise SpecError(f"a cnn needs 'input_shape' [C, H, W], got {shape!r}")
        if not isinstance(s["features"], list):
            raise SpecError(f"'features' must be a list of layer entries, got {s['features']!r}")
        for f in s["features"]:
            _check_feature(f)
        if not any(f[0] == "conv" for f in s["features"]):
            raise SpecError("a cnn needs 'features' with at least one ['conv', C_out, K, stride, pad]")
        s.setdefault("fc_hidden", [])
        _widths(s, "fc_hidden", allow_empty=True)
    check_size(s)
    return s


def check_train_keys(spec: dict) -> None:
    """The training defaults a description may carry: a known dataset, a boolean, a weight width, a recipe."""
    from .trainer.data import DATASET_NAMES, canonical_name
    from .trainer.recipes import recipe_from_dict

    ds = spec.get("dataset")
    if ds is not None and (not isinstance(ds, str) or (canonical_name(ds) is None and not Path(ds).is_dir())):
        raise SpecError(f"'dataset' must name a dataset ({', '.join(DATASET_NAMES)}) or an existing folder, "
                        f"got {ds!r}")
    if "augment" in spec and not isinstance(spec["augment"], bool):
        raise SpecError(f"'augment' must be true or false, got {spec['augment']!r}")
    if "weight_bits" in spec and (not is_int(spec["weight_bits"]) or spec["weight_bits"] not in (16, 32)):
        raise SpecError(f"'weight_bits' must be 16 or 32, got {spec['weight_bits']!r}")
    if "recipe" in spec:
        recipe_from_dict(spec["recipe"])


def estimate_size(s: dict) -> tuple[int, int]:
    """(weights, largest per-sample tensor) of a validated description, by arithmetic only: an upper bound
    (a conv head is counted without its pool); geometry that does not fit is left to the model build."""
    nc = s["num_classes"]
    largest = int(np.prod(s["input_shape"], dtype=object))
    weights = 0
    if s["kind"] == "cnn":
        c, h, w = s["input_shape"]
        for f in s["features"]:
            if f[0] == "conv":
                h, w = h + 2 * f[4] - f[2] + 1, w + 2 * f[4] - f[2] + 1
                if h < 1 or w < 1:
                    break
                weights += f[1] * c * f[2] * f[2] + nc * f[1] * h * w
                c = f[1]
                largest = max(largest, c * h * w)
            elif f[0] == "maxpool":
                h, w = max(h // f[1], 1), max(w // f[1], 1)
        d, fc = c * max(h, 1) * max(w, 1), s["fc_hidden"]
    else:
        d, fc = largest, s["hidden"]
    for width in fc:
        weights += d * width + width * nc
        d = width
    return weights + d * nc, largest


def check_size(s: dict) -> None:
    weights, largest = estimate_size(s)
    if largest > MAX_VALUES_PER_SAMPLE:
        raise SpecError(f"the model has a tensor of {largest} values per sample, over the limit of "
                        f"{MAX_VALUES_PER_SAMPLE}")
    if weights > MAX_WEIGHTS:
        raise SpecError(f"the model would have about {weights} weights, over the limit of {MAX_WEIGHTS}")


def schema() -> dict:
    """The JSON Schema of a model description, as shipped in the package."""
    return json.loads(resources.files("nitro_mcu").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))
