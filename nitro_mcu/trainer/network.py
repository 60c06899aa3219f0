"""A NITRO-D network built from a validated model description (nitro_mcu/spec.py), and its training step."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..spec import SpecError, normalize_spec
from . import layers as L
from .blocks import ConvBlock, Dropout, Head, Hyper, LinearBlock, MaxPool, output_error
from .profiles import Quirks, get_profile
from .rng import STREAM_DROPOUT, STREAM_INIT, Rng



@dataclass
class TrainStats:
    correct: int
    count: int
    loss: int


class Model:
    """A NITRO-D network: description + quirks + weight width + integer weights + dropout PRNG."""

    def __init__(self, spec: dict, quirks: Quirks | str = "default", weight_bits: int = 32, seed: int = 0,
                 weights: dict | None = None, trainable=None):
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
        self.input_norm = None  # the input statistics and raw type it was trained with (api.norm_record), if any
        if weights is None:
            self.weights = self.init_weights(Rng(self.seed, STREAM_INIT))
        else:
            self.load_weights(weights)
        self.set_trainable(trainable)
        self.active_classes = self.num_classes  # fewer with spare output slots (trainer/classes.py)

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

    # ---- which blocks train (docs/adaptation.md) -----------------------------------------------------
    @property
    def block_names(self) -> list[str]:
        """The names :meth:`set_trainable` accepts, in forward order: every block, then ``output``."""
        return [b.name for b in self.blocks] + ["output"]

    def set_trainable(self, names=None) -> "Model":
        """Train only the named blocks (``output`` is the output layer); None: all of them.

        A frozen block keeps its forward weights and its head as they are: its head is never run, and the
        generated C holds only the forward weights, as constants.  Returns the model."""
        every = self.block_names
        if names is None:
            self.trainable = frozenset(every)
            return self
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        names = [str(n).strip() for n in names]
        unknown = [n for n in names if n not in every]
        if unknown:
            raise SpecError(f"no block named {unknown[0]!r} to train; the blocks are {', '.join(every)}")
        if not names:
            raise SpecError(f"nothing to train: name at least one of {', '.join(every)}")
        self.trainable = frozenset(names)
        return self

    def trains(self, block: str) -> bool:
        """Whether block ``block`` (or ``output``) trains."""
        return block in self.trainable

    @property
    def all_trainable(self) -> bool:
        return len(self.trainable) == len(self.blocks) + 1

    @staticmethod
    def tensor_block(tensor: str) -> str:
        """The block a weight tensor belongs to: ``conv1.head`` -> ``conv1``, ``output`` -> ``output``."""
        return tensor.split(".")[0]

    def frozen_prefix(self) -> int:
        """The number of leading stages that are frozen and hold no dropout: their training-mode forward is
        their inference forward, so it may run one sample at a time (the generated C streams it) and its
        output may be computed once (:meth:`prefix_features`)."""
        k = 0
        for st in self.stages:
            if isinstance(st, Dropout) or (isinstance(st, (LinearBlock, ConvBlock)) and self.trains(st.name)):
                return k
            k += 1
        return k

    def prefix_features(self, x: np.ndarray) -> np.ndarray:
        """The output of the :meth:`frozen_prefix` stages for inputs ``x``, which :meth:`forward` and
        :meth:`train_step` take with ``features=True``."""
        self.check_input(x)
        h = x.transpose(0, 2, 3, 1) if self.spec["kind"] == "cnn" else x.reshape(x.shape[0], -1)
        return self._run(h, self.stages[:self.frozen_prefix()], False)

    # ---- forward ----------------------------------------------------------------------------------------
    def check_input(self, x: np.ndarray):
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer):
            raise SpecError(f"inputs must be an integer (int8) array, got {getattr(x, 'dtype', type(x).__name__)}")
        if tuple(x.shape[1:]) != self.input_shape and not (
            self.spec["kind"] == "mlp" and int(np.prod(x.shape[1:])) == int(np.prod(self.input_shape))
        ):
            raise SpecError(f"inputs have shape {tuple(x.shape[1:])} per sample, the model needs {self.input_shape}")
        if x.size and x.dtype != np.int8 and (int(x.min()) < -128 or int(x.max()) > 127):
            raise SpecError("inputs must lie in the int8 range [-128, 127]")

    def forward(self, x: np.ndarray, train: bool = False, features: bool = False) -> np.ndarray:
        """int8 scores [B, classes]; in training mode trainable blocks cache what their step needs.

        ``features``: ``x`` is :meth:`prefix_features` output, and the frozen prefix is not run again."""
        if features:
            h, stages = x, self.stages[self.frozen_prefix():]
        else:
            self.check_input(x)
            h = x.transpose(0, 2, 3, 1) if self.spec["kind"] == "cnn" else x.reshape(x.shape[0], -1)  # NHWC
            stages = self.stages
        h = self._run(h, stages, train)
        if h.ndim == 4:
            h = h.transpose(0, 3, 1, 2)
        h = h.reshape(h.shape[0], -1)
        if train:
            self._out_in = h
        return self.output.forward(self.weights["output"], h)

    def _run(self, h: np.ndarray, stages, train: bool) -> np.ndarray:
        for st in stages:
            if isinstance(st, (LinearBlock, ConvBlock)):
                if st.kind == "linear" and h.ndim == 4:
                    h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # Flatten, C order (c, i, j)
                h = st.forward(self.weights, h, self.hp, train and self.trains(st.name))
            elif isinstance(st, MaxPool):
                h = st.forward(h)
            else:
                h = st.forward(h, self.dropout_rng, train, self.mask_hook, nhwc=h.ndim == 4)
        return h

    def predict_scores(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return np.concatenate([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) \
            if len(x) else np.zeros((0, self.num_classes), np.int8)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class = argmax of the int8 scores of the active classes, ties to the lowest index."""
        return np.argmax(self.predict_scores(x, batch_size)[:, :self.active_classes], axis=1)

    # ---- training ---------------------------------------------------------------------------------------
    def one_hot(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise SpecError(f"labels must be integers, got {y.dtype}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= self.active_classes):
            raise SpecError(f"labels must lie in [0, {self.active_classes - 1}]")
        t = np.zeros((len(y), self.num_classes), dtype=np.int64)
        t[np.arange(len(y)), y] = self.spec["one_hot_value"]
        return t

    def train_step(self, x: np.ndarray, y: np.ndarray, lr_inv: int, features: bool = False) -> TrainStats:
        """One step (docs/algorithm.md §3.7): forward, output-layer update, then every block in reverse;
        frozen blocks (:meth:`set_trainable`) are skipped.  ``features``: as in :meth:`forward`."""
        if lr_inv <= 0:
            raise SpecError(f"lr_inv must be positive, got {lr_inv}")
        target = self.one_hot(y)
        y_hat = self.forward(x, train=True, features=features)
        self.last_y_hat = y_hat
        correct = int(np.sum(np.argmax(y_hat[:, :self.active_classes], axis=1) == np.asarray(y)))
        diff = output_error(y_hat, target, self.quirks.loss_wrap_int8)
        sq = diff * diff
        loss = int(np.sum(((sq + 128) & 0xFF) - 128 if self.quirks.loss_wrap_int8 else sq))
        if self.trains("output"):
            self.output.step(self.weights, self._out_in, target, lr_inv, self.hp.head_decay_inv, self.hp,
                             self.quirks.error_wrap_int8, False, y_hat=y_hat)
        fc = [b for b in self.blocks if b.kind == "linear" and self.trains(b.name)]
        convs = [b for b in self.blocks if b.kind == "conv" and self.trains(b.name)]
        for b in reversed(fc):
            b.step(self.weights, target, lr_inv, self.hp, self.quirks)
        if self.quirks.cnn_fc_double_update and any(b.kind == "conv" for b in self.blocks):  # Q2
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
