"""Models and data shared by the device tests: a tiny MLP, random images, and presets with a short host
pre-training (cached per test process), so that device runs start from a model that has learned something and
every tensor moves in a few training steps."""
from __future__ import annotations

import functools

import numpy as np

from nitro_mcu.device.verify import batches
from nitro_mcu.spec import preset
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.rng import Rng

TINY = dict(kind="mlp", input_shape=[64], num_classes=10, hidden=[16], fwd_decay_inv=12000, head_decay_inv=3000)
# a small MLP with dropout for the in-suite soak (the PRNG keeps drawing)
SOAK_MLP = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[32, 16], dropout=0.1)
SPECS = {"mlp1": preset("mlp1"), "mcu_cnn": preset("mcu_cnn"), "soak_mlp": SOAK_MLP}
# host pre-training: steps of batch 32 at lr_inv 128 (held-out accuracy about 85 % for mcu_cnn, 82 % for mlp1
# and soak_mlp)
PRETRAIN_STEPS = {"mlp1": 300, "mcu_cnn": 200, "soak_mlp": 300}
PRETRAIN_LR_INV = 128


class Synthetic:
    """Random int8 images and labels from the project PRNG (bit-exactness needs no real images)."""

    def __init__(self, shape, n=400, seed=5):
        r = Rng(seed, 9)
        self.x_train = r.randint(-128, 127, (n, *shape)).astype(np.int8)
        self.y_train = r.randint(0, 9, (n,))
        self.x_test = r.randint(-128, 127, (100, *shape)).astype(np.int8)
        self.y_test = r.randint(0, 9, (100,))


@functools.lru_cache(maxsize=None)
def bundled():
    return D.prepare(D.load_dataset("bundled"), seed=0)


@functools.lru_cache(maxsize=None)
def _pretrained_weights(name: str, seed: int) -> dict:
    m = Model(SPECS[name], "default", 32, seed=seed)
    for x, y in batches(bundled(), PRETRAIN_STEPS[name], 32):
        m.train_step(x, y, PRETRAIN_LR_INV)
    return m.weights


def pretrained(name: str, bits: int, seed: int = 11) -> Model:
    """Model ``name`` (of SPECS) with int``bits`` weights after the host pre-training (a fresh copy each call)."""
    w = _pretrained_weights(name, seed)
    return Model(SPECS[name], "default", bits, seed, {k: v.copy() for k, v in w.items()})
