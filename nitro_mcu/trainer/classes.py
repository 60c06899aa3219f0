"""New classes after deployment: spare output slots and a rehearsal buffer (docs/new_classes.md).

A model with spare classes is the same network with ``num_classes + spare`` rows in its output layer and in every
block's head; the spare rows start at zero and only ``model.active_classes`` of the rows count (prediction,
training-mode correct count, the labels accepted).  A zero row scores 0 and, while no label names it, its error
is 0 - 0 = 0: it neither moves nor sends error back, so the spare model trains exactly as the model without
spare rows until :func:`add_class` activates a row and labels of the new class arrive.

Rehearsal: a few exemplars per known class are kept (on the device: in flash, ``<name>_rehearsal_*``) and each
training step appends ``k`` of them, drawn with the model's one PRNG stream (the dropout stream, which the
device holds and its checkpoints save), to the new samples.  :func:`train_step_rehearsal` is the device's
``<name>_train_rehearsal`` bit for bit.
"""
from __future__ import annotations

import copy

import numpy as np

from ..spec import SpecError
from .network import Model, TrainStats


def with_spare_classes(model: Model, spare: int) -> Model:
    """A new model: ``model`` with ``spare`` more output slots (zero rows in the output layer and every head),
    its classes active, its weights, trainable set and PRNG state copied.  ``model`` is unchanged."""
    if isinstance(spare, bool) or not isinstance(spare, (int, np.integer)) or spare < 0:
        raise SpecError(f"spare classes must be a non-negative integer, got {spare!r}")
    spare = int(spare)
    if model.num_classes + spare > 256:
        raise SpecError(f"{model.num_classes} classes + {spare} spare is over 256 (labels are uint8)")
    spec = copy.deepcopy(model.spec)
    spec["num_classes"] = model.num_classes + spare
    shapes = Model(spec, model.quirks, model.weight_bits, model.seed).param_shapes()
    weights = {}
    for name, w in model.weights.items():
        if tuple(shapes[name]) == tuple(w.shape):
            weights[name] = w.copy()
        else:  # a head or the output layer: [classes, d] -> [classes + spare, d], the new rows zero
            grown = np.zeros(shapes[name], dtype=w.dtype)
            grown[:w.shape[0]] = w
            weights[name] = grown
    out = Model(spec, model.quirks, model.weight_bits, model.seed, weights=weights, trainable=sorted(model.trainable))
    out.dropout_rng.state = model.dropout_rng.state
    out.active_classes = model.active_classes
    out.input_norm = model.input_norm  # the raw inputs are the same: convert emits the same normalize_<dtype>
    return out


def spare_classes(model: Model) -> int:
    """Output slots not yet active."""
    return model.num_classes - model.active_classes


def add_class(model: Model) -> int:
    """Activate the next spare slot; returns its class index (``<name>_add_class`` on the device)."""
    if model.active_classes >= model.num_classes:
        raise SpecError(f"no spare class left: all {model.num_classes} output slots are active "
                        "(generate with --spare-classes N)")
    model.active_classes += 1
    return model.active_classes - 1


class Rehearsal:
    """Up to ``per_class`` exemplars per class (of ``model.num_classes`` slots), in the order they were added:
    the device's flash log, whose index order is the order the draws refer to."""

    def __init__(self, model: Model, per_class: int):
        if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
            raise SpecError(f"exemplars per class must be a positive integer, got {per_class!r}")
        self.model, self.per_class = model, int(per_class)
        self.x: list[np.ndarray] = []
        self.y: list[int] = []

    def __len__(self) -> int:
        return len(self.y)

    def count(self, label: int) -> int:
        return sum(1 for v in self.y if v == label)

    def add(self, x: np.ndarray, label: int) -> int:
        """Keep one int8 sample of an active class; returns its index.  Refuses a full class."""
        label = int(label)
        if not 0 <= label < self.model.active_classes:
            raise SpecError(f"label {label} is not an active class (0..{self.model.active_classes - 1})")
        if self.count(label) >= self.per_class:
            raise SpecError(f"class {label} already holds {self.per_class} exemplars")
        x = np.asarray(x)
        self.model.check_input(x[None])
        self.x.append(x.astype(np.int8).reshape(self.model.input_shape))
        self.y.append(label)
        return len(self.y) - 1

    def draw(self, k: int) -> np.ndarray:
        """``k`` exemplar indices, uniform with replacement, from the model's PRNG (as the device draws them)."""
        if k and not len(self):
            raise SpecError("the rehearsal buffer is empty: add exemplars first")
        return self.model.dropout_rng.below(len(self), k) if k else np.zeros(0, np.int64)


def train_step_rehearsal(model: Model, buf: Rehearsal, x: np.ndarray, y: np.ndarray, k: int,
                         lr_inv: int) -> TrainStats:
    """One step on the ``len(x)`` new samples followed by ``k`` drawn exemplars (``<name>_train_rehearsal``)."""
    x = np.asarray(x).reshape((-1, *model.input_shape))
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    model.one_hot(y)  # checks the labels before the draw, as the device does
    idx = buf.draw(k)
    if k:
        x = np.concatenate([x.astype(np.int8), np.stack([buf.x[i] for i in idx])])
        y = np.concatenate([y, np.asarray([buf.y[i] for i in idx], dtype=np.int64)])
    return model.train_step(x, y, lr_inv)
