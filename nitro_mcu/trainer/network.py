"""Models from a declarative, JSON-serialisable description, the paper's presets, and the training step.

A description is a plain dict::

    {"kind": "mlp", "input_shape": [784], "num_classes": 10, "hidden": [100, 50], "dropout": 0.0,
     "lr_inv": 512, "lr_amp_factor": 640, "fwd_decay_inv": 12000, "head_decay_inv": 3000}

    {"kind": "cnn", "input_shape": [1, 28, 28], "num_classes": 10,
     "features": [["conv", 8, 3, 1, 1], ["maxpool", 2, 2], ["conv", 16, 3, 1, 1], ["maxpool", 2, 2]],
     "fc_hidden": [32], "dropout": 0.0, "pred_decoder_dim": 4096, ...}

``features`` entries are ``["conv", C_out, K, stride, pad]``, ``["maxpool", k, s]`` and
``["dropout", rate]``; ``dropout`` is the rate after every hidden FC block (the reference's
``fc_dropout``).  Optional keys and their defaults are in ``DEFAULTS``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np

from . import layers as L
from .blocks import ConvBlock, Dropout, Head, Hyper, LinearBlock, MaxPool, output_error
from .intmath import STREAM_DROPOUT, STREAM_INIT, Rng, tune_malloc
from .profiles import Quirks, get_profile

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

# The paper's configurations (algorithm.md §6), plus the golden-test CNN and our MCU-sized CNN.
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
    # Sized for on-device training: int16 weights, batch 8, well under 256 KB (see docs/memory.md).
    "mcu_cnn": dict(kind="cnn", input_shape=[1, 28, 28], num_classes=10,
                    features=[["conv", 8, 3, 1, 1], ["maxpool", 2, 2], ["conv", 16, 3, 1, 1], ["maxpool", 2, 2],
                              ["conv", 32, 3, 1, 1], ["maxpool", 2, 2]],
                    fc_hidden=[64], fwd_decay_inv=30000, head_decay_inv=3000, pred_decoder_dim=512,
                    dataset="mnist", augment=False),
}
TRAIN_KEYS = ("dataset", "augment")


class SpecError(ValueError):
    """A model description that cannot be built; the message names the offending key."""


def preset(name: str) -> dict:
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
    known = set(DEFAULTS) | {"kind", "input_shape", "num_classes", "hidden", "features", "fc_hidden", "name"}
    unknown = set(s) - known
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


@dataclass
class TrainStats:
    correct: int
    count: int
    loss: int


class Model:
    """A NITRO-D network: description + quirks + weight width + integer weights + dropout PRNG."""

    def __init__(self, spec: dict, quirks: Quirks | str = "default", weight_bits: int = 32, seed: int = 0,
                 weights: dict | None = None):
        self.spec = normalize_spec(spec)
        self.quirks = get_profile(quirks) if isinstance(quirks, str) else quirks
        if weight_bits not in (16, 32):
            raise SpecError(f"weight_bits must be 16 or 32, got {weight_bits!r}")
        self.weight_bits = weight_bits
        self.seed = int(seed)
        self.hp = Hyper(self.spec["lr_amp_factor"], self.spec["fwd_decay_inv"], self.spec["head_decay_inv"],
                        self.spec["slope_inv"], weight_bits)
        try:
            self._build()
        except SpecError:
            raise
        except ValueError as e:  # geometry that does not fit (kernel > map, pool kernel != stride, ...)
            raise SpecError(str(e)) from None
        self.dropout_rng = Rng(self.seed, STREAM_DROPOUT)
        self.mask_hook = None  # test hook: (site, shape) -> keep-mask, replaces the PRNG draw
        if weights is None:
            self.weights = self.init_weights(Rng(self.seed, STREAM_INIT))
        else:
            self.load_weights(weights)

    # ---- structure ----------------------------------------------------------------------------------
    def _build(self):
        s, q = self.spec, self.quirks
        n = s["num_classes"]
        rate = L.check_dropout_rate(s["dropout"]) if s["dropout"] else 0
        self.stages = []  # forward order: blocks, pools, dropouts
        self.blocks = []
        if s["kind"] == "cnn":
            feats = [list(f) for f in s["features"]]
            if q.cnn_fe_tail_dropout and rate and not any(f[0] == "dropout" for f in feats):
                feats.insert(len(feats) - 1, ["dropout", s["dropout"]])  # Q6
            c, h, w = s["input_shape"]
            last = None
            for f in feats:
                if f[0] == "conv":
                    blk = ConvBlock(f"conv{sum(b.kind == 'conv' for b in self.blocks)}", c, f[1], f[2], f[4], h, w,
                                    n, s["pred_decoder_dim"], q)
                    self.stages.append(blk)
                    self.blocks.append(blk)
                    c, h, w = blk.out_shape
                    last = blk.name
                elif f[0] == "maxpool":
                    p = MaxPool(f[1], f[2], c, h, w)
                    self.stages.append(p)
                    c, h, w = p.out_shape
                else:
                    self.stages.append(Dropout(last or "input", L.check_dropout_rate(f[1])))
            d = c * h * w
            fc = s["fc_hidden"]
            prefix = "fc"
        else:
            d = int(np.prod(s["input_shape"]))
            fc = s["hidden"]
            prefix = "block"
        for i, width in enumerate(fc):
            blk = LinearBlock(f"{prefix}{i}", d, width, n)
            self.stages.append(blk)
            self.blocks.append(blk)
            if rate:
                self.stages.append(Dropout(blk.name, rate))
            d = width
        self.output = Head("output", d, n)

    def param_shapes(self) -> dict:
        shapes = {}
        for b in self.blocks:
            shapes.update(b.param_shapes())
        shapes["output"] = (self.output.n_classes, self.output.d_in)
        return shapes

    def param_info(self) -> dict:
        """Per weight tensor: fan_in, SF, init bound, amp, decay (the summary and the code generator use it)."""
        info = {}
        slope = self.spec["slope_inv"]
        for b in self.blocks:
            info[b.name + ".fwd"] = dict(fan_in=b.fan_in, sf=b.sf, bound=L.init_bound(b.fan_in, slope),
                                         amp=self.hp.lr_amp_factor * b.amp_scale, decay=self.hp.fwd_decay_inv)
            info[b.head.name] = dict(fan_in=b.head.d_in, sf=b.head.sf, bound=L.init_bound(b.head.d_in, slope),
                                     amp=1, decay=self.hp.head_decay_inv)
        o = self.output
        info["output"] = dict(fan_in=o.d_in, sf=o.sf, bound=L.init_bound(o.d_in, slope), amp=1,
                              decay=self.hp.head_decay_inv)
        return info

    @property
    def weight_dtype(self):
        return np.int16 if self.weight_bits == 16 else np.int32

    def init_weights(self, rng: Rng) -> dict:
        """Integer Kaiming-uniform, drawn in construction order (block fwd, block head, ..., output)."""
        info = self.param_info()
        return {name: rng.randint(-info[name]["bound"], info[name]["bound"], shape).astype(self.weight_dtype)
                for name, shape in self.param_shapes().items()}

    def load_weights(self, weights: dict):
        shapes = self.param_shapes()
        if set(weights) != set(shapes):
            raise SpecError(f"weights do not match the model: expected {sorted(shapes)}, got {sorted(weights)}")
        out = {}
        for name, shape in shapes.items():
            w = np.asarray(weights[name])
            if tuple(w.shape) != tuple(shape):
                raise SpecError(f"weight '{name}' has shape {tuple(w.shape)}, the model needs {tuple(shape)}")
            if not np.issubdtype(w.dtype, np.integer):
                raise SpecError(f"weight '{name}' is {w.dtype}, not an integer array")
            lo, hi = -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1
            if w.size and (int(w.min()) < lo or int(w.max()) > hi):
                raise SpecError(f"weight '{name}' does not fit int{self.weight_bits}")
            out[name] = w.astype(self.weight_dtype)
        self.weights = out

    @property
    def input_shape(self):
        return tuple(self.spec["input_shape"])

    @property
    def num_classes(self):
        return self.spec["num_classes"]

    # ---- forward ----------------------------------------------------------------------------------------
    def check_input(self, x: np.ndarray):
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer):
            raise SpecError(f"inputs must be an integer (int8) array, got {getattr(x, 'dtype', type(x).__name__)}")
        if tuple(x.shape[1:]) != self.input_shape and not (
            self.spec["kind"] == "mlp" and int(np.prod(x.shape[1:])) == int(np.prod(self.input_shape))
        ):
            raise SpecError(f"inputs have shape {tuple(x.shape[1:])} per sample, the model needs {self.input_shape}")
        if x.size and (int(x.min()) < -128 or int(x.max()) > 127):
            raise SpecError("inputs must lie in the int8 range [-128, 127]")

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """int8 scores [B, classes]; in training mode blocks cache what their step needs."""
        self.check_input(x)
        cnn = self.spec["kind"] == "cnn"
        h = x.transpose(0, 2, 3, 1) if cnn else x.reshape(x.shape[0], -1)  # conv stages run NHWC
        for st in self.stages:
            if isinstance(st, (LinearBlock, ConvBlock)):
                if st.kind == "linear" and h.ndim == 4:
                    h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # Flatten, C order (c, i, j)
                h = st.forward(self.weights, h, self.hp, train)
            elif isinstance(st, MaxPool):
                h = st.forward(h)
            else:
                h = st.forward(h, self.dropout_rng, train, self.mask_hook, nhwc=h.ndim == 4)
        if h.ndim == 4:
            h = h.transpose(0, 3, 1, 2)
        h = h.reshape(h.shape[0], -1)
        if train:
            self._out_in = h
        return self.output.forward(self.weights["output"], h)

    def predict_scores(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return np.concatenate([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) \
            if len(x) else np.zeros((0, self.num_classes), np.int8)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class = argmax of the int8 scores, ties to the lowest index."""
        return np.argmax(self.predict_scores(x, batch_size), axis=1)

    # ---- training ---------------------------------------------------------------------------------------
    def one_hot(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise SpecError(f"labels must be integers, got {y.dtype}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise SpecError(f"labels must lie in [0, {self.num_classes - 1}]")
        t = np.zeros((len(y), self.num_classes), dtype=np.int64)
        t[np.arange(len(y)), y] = self.spec["one_hot_value"]
        return t

    def train_step(self, x: np.ndarray, y: np.ndarray, lr_inv: int) -> TrainStats:
        """One step (algorithm.md §3.7): forward, output-layer update, then every block in reverse."""
        if lr_inv <= 0:
            raise SpecError(f"lr_inv must be positive, got {lr_inv}")
        tune_malloc()  # once per process: keep the step's temporaries' memory (see intmath.tune_malloc)
        target = self.one_hot(y)
        y_hat = self.forward(x, train=True)
        self.last_y_hat = y_hat
        correct = int(np.sum(np.argmax(y_hat, axis=1) == np.asarray(y)))
        diff = output_error(y_hat, target, self.quirks.loss_wrap_int8)
        sq = diff * diff
        loss = int(np.sum(((sq + 128) & 0xFF) - 128 if self.quirks.loss_wrap_int8 else sq))
        self.output.step(self.weights, self._out_in, target, lr_inv, self.hp.head_decay_inv, self.hp,
                         self.quirks.error_wrap_int8, False)
        fc = [b for b in self.blocks if b.kind == "linear"]
        convs = [b for b in self.blocks if b.kind == "conv"]
        for b in reversed(fc):
            b.step(self.weights, target, lr_inv, self.hp, self.quirks)
        if convs and self.quirks.cnn_fc_double_update:  # Q2
            for b in reversed(fc):
                b.step(self.weights, target, lr_inv, self.hp, self.quirks)
        for b in reversed(convs):
            b.step(self.weights, target, lr_inv, self.hp, self.quirks)
        for b in self.blocks:
            b.cache = None
        self._out_in = None
        return TrainStats(correct, len(y), loss)

    # ---- description --------------------------------------------------------------------------------
    def describe(self) -> list[dict]:
        """One row per weight tensor: name, what it computes, shape, SF, init bound, amp, decay, weights, bytes
        (MACs come from the generator's plan: nitro_mcu.codegen.cost)."""
        rows = []
        info, shapes = self.param_info(), self.param_shapes()
        wbytes = self.weight_bits // 8
        for b in self.blocks:
            for name in (b.name + ".fwd", b.head.name):
                shape = shapes[name]
                n = int(np.prod(shape))
                if name.endswith(".fwd") and b.kind == "conv":
                    desc = f"conv {b.c_in}x{b.h_in}x{b.w_in} -> {b.c_out}x{b.h_out}x{b.w_out} k{b.k} p{b.pad}"
                elif name.endswith(".fwd"):
                    desc = f"linear {b.d_in} -> {b.d_out}"
                else:
                    pool = getattr(b, "pool", None)
                    desc = (f"head pool {pool.kh}x{pool.kw} pad {pool.ph},{pool.pw} -> " if pool else "head ") + \
                        f"linear {shape[1]} -> {shape[0]}"
                rows.append(dict(name=name, desc=desc, shape=list(shape), weights=n, bytes=n * wbytes, **info[name]))
        o = shapes["output"]
        n = int(np.prod(o))
        rows.append(dict(name="output", desc=f"linear {o[1]} -> {o[0]}", shape=list(o), weights=n, bytes=n * wbytes,
                         **info["output"]))
        return rows

    def to_json(self) -> str:
        return json.dumps(self.spec)
