"""Differential fuzzing of the three implementations of one training step (issue 22, item 2).

A :class:`Case` is a random model description plus training settings.  :func:`run_case` trains it step by step
with the trainer's fast path (the native integer kernels), the pure-int64 path (``gemm.FORCE_INT64``) and the
generated C compiled for the host, and compares after every step every weight, the correct count and the Dropout PRNG
state.  :func:`cases` is the Hypothesis strategy of the space: both kinds, both weight widths, both profiles,
dropout, kernels 1-5, odd pads, non-square inputs, 1->1 MLPs, wide layers, many classes, large batches,
lr_inv 1, grown (saturating) weights, extreme inputs, tail training (trainable subsets) and streaming
(``train_sample``).  ``big=True`` widens it (4096-wide layers, 255 classes, batch 1,000, 300 steps) for
benchmarks/fuzz.py; the CI test (tests/test_fuzz.py) draws from the narrow space with a fixed seed.
"""
from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume, reject
from hypothesis import strategies as st

from grown import grow
from nitro_mcu import compile_model
from nitro_mcu.codegen import CodegenError
from nitro_mcu.spec import SpecError
from nitro_mcu.trainer import gemm
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.network import Model

RATES = [0.05, 0.1, 0.15, 0.5, 0.95]


@dataclass(frozen=True)
class Case:
    spec: str  # the model description as JSON (readable in a shrunk counter-example)
    profile: str
    bits: int
    batch: int
    steps: int
    lr_inv: tuple  # lr_inv per step
    seed: int
    trainable: tuple | None = None  # None: every block trains
    stream: bool = False  # the C side takes the samples one at a time (train_sample)
    grown: bool = False  # weights grown towards the width's limits (tests/grown.py)
    extreme: bool = False  # inputs only -128 and 127
    data_seed: int = 0
    notes: tuple = field(default=(), compare=False)

    def model(self) -> Model:
        m = Model(json.loads(self.spec), self.profile, self.bits, seed=self.seed)
        if self.grown:
            grow(m, self.seed + 1)
        if self.trainable is not None:
            m.set_trainable(list(self.trainable))
        return m

    def data(self, shape, num_classes: int):
        r = np.random.default_rng(self.data_seed)
        n = self.batch * self.steps
        if self.extreme:
            x = np.where(r.integers(0, 2, (n, *shape)) == 1, 127, -128)
        else:
            x = r.integers(-128, 128, (n, *shape))
        return x.astype(np.int8), r.integers(0, num_classes, n)


@st.composite
def _mlp(draw, big: bool):
    d_in = draw(st.one_of(st.integers(1, 48), st.sampled_from([1, 255, 784] if big else [1, 97])))
    width = st.one_of(st.integers(1, 40), st.sampled_from([1, 600, 4096] if big else [1, 300]))
    hidden = draw(st.lists(width, min_size=1, max_size=3))
    return dict(kind="mlp", input_shape=[d_in], hidden=hidden)


@st.composite
def _cnn(draw, big: bool):
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 14 if big else 10)), draw(st.integers(3, 14 if big else 10))
    shape = [c, h, w]
    feats = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "dropout"]))
        if kind == "conv":
            k = draw(st.integers(1, 5))
            pad = draw(st.integers(0, 2))
            if h + 2 * pad - k + 1 < 1 or w + 2 * pad - k + 1 < 1:
                continue
            feats.append(["conv", draw(st.integers(1, 6)), k, 1, pad])
            h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        elif kind == "maxpool":
            k = draw(st.sampled_from([2, 3]))
            if h < k or w < k:
                continue
            feats.append(["maxpool", k, k])
            h, w = h // k, w // k
        else:
            feats.append(["dropout", draw(st.sampled_from(RATES))])
    if not any(f[0] == "conv" for f in feats):
        feats.insert(0, ["conv", draw(st.integers(1, 4)), 1, 1, 0])
    fc = draw(st.lists(st.integers(1, 24), max_size=2))
    return dict(kind="cnn", input_shape=shape, features=feats, fc_hidden=fc,
                pred_decoder_dim=draw(st.sampled_from([4096, 64, 9])))


@st.composite
def cases(draw, big: bool = False) -> Case:
    kind = draw(st.sampled_from(["mlp", "cnn"]))
    spec = draw(_mlp(big) if kind == "mlp" else _cnn(big))
    spec["num_classes"] = draw(st.one_of(st.integers(2, 12), st.sampled_from([2, 255] if big else [2, 40])))
    spec["dropout"] = draw(st.sampled_from([0.0, 0.0] + RATES))
    spec["one_hot_value"] = draw(st.sampled_from([32, 32, 1, 101, 127]))
    spec["slope_inv"] = draw(st.sampled_from(sorted(L.RELU_MEAN)))
    spec["lr_amp_factor"] = draw(st.sampled_from([640, 640, 1, 3]))
    spec["fwd_decay_inv"] = draw(st.sampled_from([12000, 0, 1, 7]))
    spec["head_decay_inv"] = draw(st.sampled_from([3000, 0, 1, 13]))
    profile = draw(st.sampled_from(["default", "reference"]))
    bits = draw(st.sampled_from([16, 32]))
    seed = draw(st.integers(0, 2**16))
    try:
        m = Model(spec, profile, bits, seed=seed)
    except (SpecError, ValueError):
        assume(False)
    macs = sum(int(np.prod(v.shape)) for v in m.weights.values())
    small = kind == "mlp" and macs < 20000
    batch_hi = 1000 if big and macs < 200000 else (600 if small else 12)
    batch = draw(st.one_of(st.integers(1, 12), st.integers(1, batch_hi)))
    steps = draw(st.integers(1, 300 if big and macs * batch < 10**6 else 4))
    lr = draw(st.sampled_from([1, 1, 2, 7, 64, 512, 100003]))
    lrs = (lr,) * steps
    if steps > 1 and draw(st.booleans()):
        cut = draw(st.integers(1, steps - 1))
        lrs = (lr,) * cut + (draw(st.sampled_from([1, 3, 512])),) * (steps - cut)
    trainable = None
    names = m.block_names
    if draw(st.integers(0, 3)) == 0:
        trainable = tuple(n for n in names if draw(st.booleans()))
        assume(trainable)
    stream = draw(st.integers(0, 3)) == 0
    return Case(json.dumps(spec), profile, bits, batch, steps, lrs, seed, trainable, stream,
                grown=draw(st.integers(0, 2)) == 0, extreme=draw(st.integers(0, 4)) == 0,
                data_seed=draw(st.integers(0, 2**16)))


@contextmanager
def force_int64(on: bool):
    old = gemm.FORCE_INT64
    gemm.FORCE_INT64 = on
    try:
        yield
    finally:
        gemm.FORCE_INT64 = old


def _diff(a: dict, b: dict, what: str, keys) -> list[str]:
    out = []
    for k in keys:
        if not np.array_equal(np.asarray(a[k]), np.asarray(b[k])):
            i = tuple(int(v) for v in np.argwhere(np.asarray(a[k]) != np.asarray(b[k]))[0])
            out.append(f"{what}: {k}{list(i)} {int(np.asarray(a[k])[i])} != {int(np.asarray(b[k])[i])}")
    return out


def run_case(case: Case, name: str = "fuzz") -> list[str]:
    """Train ``case`` three ways; the disagreements (empty when all three agree bit for bit), step numbered."""
    base = case.model()
    fast, ref = copy.deepcopy(base), copy.deepcopy(base)
    try:
        cm = compile_model(copy.deepcopy(base), batch=case.batch, train=True, name=name)
    except CodegenError:  # a model the generator refuses with its one-line reason (e.g. int64 gradient bound)
        reject()
    lr_top = cm.lr_inv_max
    x, y = case.data(base.input_shape, base.num_classes)
    held = list(cm.get_weights())
    problems = []
    for s in range(case.steps):
        lr = min(case.lr_inv[s], lr_top)
        if s == 0 or lr != min(case.lr_inv[s - 1], lr_top):
            cm.set_lr_inv(lr)
        xb, yb = x[s * case.batch:(s + 1) * case.batch], y[s * case.batch:(s + 1) * case.batch]
        with force_int64(False):
            c_fast = fast.train_step(xb, yb, lr).correct
        with force_int64(True):
            c_ref = ref.train_step(xb, yb, lr).correct
        if case.stream:
            got = [cm.train_sample(xb[i], int(yb[i])) for i in range(case.batch)]
            c_c = got[-1]
            if any(g is not None for g in got[:-1]):
                problems.append(f"step {s + 1}: train_sample completed a batch early: {got}")
        else:
            c_c = cm.train_batch(xb, yb)
        if not c_fast == c_ref == c_c:
            problems.append(f"step {s + 1}: correct fast {c_fast}, int64 {c_ref}, C {c_c}")
        problems += [f"step {s + 1}: {p}" for p in _diff(fast.weights, ref.weights, "fast != int64", ref.weights)]
        problems += [f"step {s + 1}: {p}" for p in _diff(cm.get_weights(), ref.weights, "C != int64", held)]
        rngs = (fast.dropout_rng.state, ref.dropout_rng.state, cm.rng_state)
        if len(set(rngs)) != 1:
            problems.append(f"step {s + 1}: PRNG states fast/int64/C {[hex(v) for v in rngs]}")
        if problems:
            break
    return problems

