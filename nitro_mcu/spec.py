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

import numpy as np

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
# "dataset" and "augment" are training defaults for the preset, not part of the architecture.
PRESETS = {
    "mlp1": dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[100, 50],
                 fwd_decay_inv=12000, head_decay_inv=3000, dataset="mnist", augment=False),
    "mlp2": dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[200, 100, 50],
                 fwd_decay_inv=10000, head_decay_inv=8000, dataset="fashion-mnist", augment=False),
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
                    dataset="mnist", augment=False),
}
TRAIN_KEYS = ("dataset", "augment")
# Every key a description may hold: the architecture (DEFAULTS and these), plus TRAIN_KEYS.
ARCH_KEYS = frozenset(DEFAULTS) | {"kind", "input_shape", "num_classes", "hidden", "features", "fc_hidden", "name"}


class SpecError(ValueError):
    """A model description that cannot be built; the message names the offending key."""


def preset(name: str) -> dict:
    """A copy of a preset's description, its training defaults (TRAIN_KEYS) included."""
    if name not in PRESETS:
        raise SpecError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _pos_int(spec, key, allow_zero=False):
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 or (v == 0 and not allow_zero):
        raise SpecError(f"'{key}' must be a {'non-negative' if allow_zero else 'positive'} integer, got {v!r}")
    return int(v)


def normalize_spec(spec: dict) -> dict:
    """Fill defaults and validate a description; returns a new dict (training-only keys dropped)."""
    if not isinstance(spec, dict):
        raise SpecError("a model description must be a JSON object")
    s = {**DEFAULTS, **{k: v for k, v in spec.items() if k not in TRAIN_KEYS}}
    kind = s.get("kind")
    if kind not in ("mlp", "cnn"):
        raise SpecError(f"'kind' must be 'mlp' or 'cnn', got {kind!r}")
    unknown = set(s) - ARCH_KEYS
    if unknown:
        raise SpecError(f"unknown key(s) in model description: {', '.join(sorted(unknown))}")
    for key in ("lr_inv", "lr_amp_factor", "num_classes", "one_hot_value", "pred_decoder_dim"):
        _pos_int(s, key)
    for key in ("fwd_decay_inv", "head_decay_inv"):
        _pos_int(s, key, allow_zero=True)
    if s["num_classes"] < 2:
        raise SpecError("'num_classes' must be at least 2")
    if s["one_hot_value"] > 127:
        raise SpecError("'one_hot_value' must fit int8 (<= 127)")
    try:
        L.check_slope(s["slope_inv"])
    except ValueError as e:
        raise SpecError(str(e)) from None
    if s["dropout"]:
        try:
            L.check_dropout_rate(s["dropout"])
        except ValueError as e:
            raise SpecError(str(e)) from None
    shape = s.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise SpecError(f"'input_shape' must be a list of positive integers, got {shape!r}")
    if kind == "mlp":
        if not isinstance(s.get("hidden"), list) or not s["hidden"]:
            raise SpecError("an mlp needs 'hidden': a non-empty list of layer widths")
        if not all(isinstance(h, int) and h > 0 for h in s["hidden"]):
            raise SpecError(f"'hidden' must hold positive integers, got {s['hidden']!r}")
    else:
        if len(shape) != 3:
            raise SpecError(f"a cnn needs 'input_shape' [C, H, W], got {shape!r}")
        if not isinstance(s.get("features"), list) or not any(f and f[0] == "conv" for f in s["features"]):
            raise SpecError("a cnn needs 'features' with at least one ['conv', C_out, K, stride, pad]")
        s.setdefault("fc_hidden", [])
        for f in s["features"]:
            if not isinstance(f, list) or not f or f[0] not in ("conv", "maxpool", "dropout"):
                raise SpecError(f"bad feature entry {f!r}: use ['conv', C, K, 1, pad], ['maxpool', k, k] or "
                                "['dropout', rate]")
            if f[0] == "conv" and (len(f) != 5 or f[3] != 1 or not all(isinstance(v, int) for v in f[1:])
                                   or f[1] < 1 or f[2] < 1 or f[4] < 0):
                raise SpecError(f"bad conv entry {f!r}: ['conv', C_out, K, 1, pad] (stride 1 only)")
            if f[0] == "maxpool" and (len(f) != 3 or not all(isinstance(v, int) and v > 0 for v in f[1:])):
                raise SpecError(f"bad maxpool entry {f!r}: ['maxpool', k, k]")
            if f[0] == "dropout":
                try:
                    L.check_dropout_rate(f[1] if len(f) == 2 else None)
                except (ValueError, TypeError):
                    raise SpecError(f"bad dropout entry {f!r}: ['dropout', rate], rate a multiple of 0.05") from None
    return s


def schema() -> dict:
    """The JSON Schema of a model description, as shipped in the package."""
    return json.loads(resources.files("nitro_mcu").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8"))
