"""Build models from the golden cases of tests/golden (exported from the official implementation)."""
from __future__ import annotations

import json

import numpy as np

from nitro_mcu.trainer.network import Model
from paths import GOLDEN

CASES = ["appendixB", "micro_wrap", "mlp1_mnist_10steps", "mlp2_fmnist_10steps", "cnn_small_mnist_5steps",
         "cnn_small_fmnist_5steps_dropout"]


def golden_spec(meta: dict) -> dict:
    spec = dict(kind=meta["kind"], input_shape=meta["input_shape"], num_classes=meta["num_classes"],
                slope_inv=meta["activation"]["slope_inv"], lr_inv=meta["lr_inv"],
                lr_amp_factor=meta["lr_amp_factor"], fwd_decay_inv=meta["fwd_decay_inv"],
                head_decay_inv=meta["head_decay_inv"], one_hot_value=meta["one_hot_value"])
    if meta["kind"] == "mlp":
        spec["hidden"] = meta["layers"]
    else:
        spec["features"] = meta["layers"]
        spec["fc_hidden"] = meta["fc_hidden"]
        spec["pred_decoder_dim"] = meta["pred_decoder_dim"]
        spec["dropout"] = meta.get("fc_dropout", 0.0)
    return spec


def load_case(name: str):
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    arrays = np.load(GOLDEN / f"{name}.npz")
    return meta, {k: arrays[k] for k in arrays.files}


def build_golden_model(name: str, weight_bits: int = 32):
    """The case's model in the reference profile with the golden initial weights and mask hook."""
    meta, arr = load_case(name)
    init = {k.split("/", 1)[1]: v for k, v in arr.items() if k.startswith("init/")}
    model = Model(golden_spec(meta), "reference", weight_bits=weight_bits, weights=init)
    return model, meta, arr


class MaskFeeder:
    """Replaces dropout draws with the stored NumPy keep-masks, step by step."""

    def __init__(self, arr: dict):
        self.masks = {k.split("/", 1)[1]: v for k, v in arr.items() if k.startswith("dropout_masks/")}
        self.step = 0

    def __call__(self, site, shape):
        m = self.masks[site][self.step]
        assert m.shape == tuple(shape), (site, m.shape, shape)
        return m.astype(np.int8)
