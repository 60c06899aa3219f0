"""Train on the emulated microcontroller and prove it equals Python.

:func:`verify` generates the C, builds the harness firmware for a target, runs K training steps and N
predictions in the emulator and compares every weight tensor, the PRNG state and the scores with the
NumPy trainer doing the same steps.  It also checks movement against the trainable set: every frozen tensor
kept its values, every trainable one changed (after at least one step).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from ..codegen import Converted, convert
from ..trainer.network import Model
from .harness import McuRun, run_mcu
from .protocol import Session
from .renode import run_renode


@dataclass
class TensorCheck:
    name: str
    count: int
    equal: bool
    mismatches: int
    first: tuple | None = None  # (index, device value, python value)
    trainable: bool = True
    moved: int = 0  # values that differ from the starting weights (on the device; in Python for frozen heads)
    on_device: bool = True  # False: a frozen head, which the generated C does not hold

    @property
    def movement_ok(self) -> bool:
        """A frozen tensor did not move; a trainable one moved (checked only after training steps)."""
        return self.moved > 0 if self.trainable else self.moved == 0


@dataclass
class VerifyReport:
    target: str
    emulator: str
    steps: int
    batch: int
    predictions: int
    tensors: list = field(default_factory=list)
    scores_equal: bool = False
    classes_equal: bool = False
    correct_equal: bool = False
    rng_equal: bool = False
    device_accuracy_bp: int = 0
    seconds: float = 0.0
    stack_bytes: int | None = None

    @property
    def frozen_moved(self) -> list[str]:
        return [t.name for t in self.tensors if not t.trainable and t.moved]

    @property
    def trainable_still(self) -> list[str]:
        """Trainable tensors that kept every value (none is expected to after enough steps)."""
        return [t.name for t in self.tensors if t.trainable and not t.moved] if self.steps else []

    @property
    def movement_ok(self) -> bool:
        return not self.frozen_moved and not self.trainable_still

    @property
    def bit_exact(self) -> bool:
        return (all(t.equal for t in self.tensors) and self.scores_equal and self.classes_equal
                and self.correct_equal and self.rng_equal)

    def first_mismatch(self) -> str | None:
        for t in self.tensors:
            if not t.equal:
                idx, dev, py = t.first
                return f"tensor {t.name} index {list(idx)}: device {dev}, python {py}"
        if not self.scores_equal:
            return "prediction scores differ"
        if not self.classes_equal:
            return "predicted classes differ"
        if not self.correct_equal:
            return "training-mode correct counts differ"
        if not self.rng_equal:
            return "dropout PRNG state differs"
        return None

    def movement_problem(self) -> str | None:
        if self.frozen_moved:
            return f"frozen tensor(s) moved: {', '.join(self.frozen_moved)}"
        if self.trainable_still:
            return (f"trainable tensor(s) did not move in {self.steps} step(s): {', '.join(self.trainable_still)} "
                    "(more steps or a smaller lr_inv move them)")
        return None

    def table(self) -> str:
        lines = [f"{'tensor':<14} {'weights':>9} {'mismatches':>10}  {'verdict':<9}  {'role':<9} {'moved':>7}"]
        for t in self.tensors:
            verdict = ("equal" if t.equal else "DIFFERENT") if t.on_device else "not in C"
            role = "trainable" if t.trainable else "frozen"
            mark = "" if t.movement_ok or not self.steps else ("  MOVED" if not t.trainable else "  still")
            lines.append(f"{t.name:<14} {t.count:>9} {t.mismatches:>10}  {verdict:<9}  {role:<9} {t.moved:>7}{mark}")
        lines.append(f"{'scores':<14} {self.predictions:>9} {'':>10}  {'equal' if self.scores_equal else 'DIFFERENT'}")
        lines.append(f"{'PRNG state':<14} {1:>9} {'':>10}  {'equal' if self.rng_equal else 'DIFFERENT'}")
        return "\n".join(lines)


def batches(data, steps: int, batch: int):
    """The ``steps`` training batches that the device and Python both see."""
    n = len(data.x_train)
    if n < batch:
        raise ValueError(f"the training data ({n} images) is smaller than one batch ({batch})")
    for s in range(steps):
        i = (s * batch) % (n - batch + 1)
        yield data.x_train[i:i + batch], data.y_train[i:i + batch]


def verify(model: Model, data, target: str = "m4", steps: int = 20, batch: int = 8, predictions: int = 100,
           lr_schedule: dict | None = None, emulator: str = "qemu", name: str = "nitro_model",
           timeout: float = 600, trainable=None) -> VerifyReport:
    """Run ``steps`` training steps and ``predictions`` predictions on the device and in Python; compare.

    ``trainable``: the blocks that train (default: the model's set); the model itself is not changed."""
    if steps < 0 or predictions < 0:
        raise ValueError("steps and predictions must be non-negative")
    t0 = time.perf_counter()
    device_model = copy.deepcopy(model)
    if trainable is not None:
        device_model.set_trainable(trainable)
    conv = convert(device_model, batch=batch, train=True, name=name)
    session = Session(int(np.prod(model.input_shape)))
    py = copy.deepcopy(device_model)
    start = {k: v.copy() for k, v in py.weights.items()}
    lr = py.spec["lr_inv"]
    py_correct = []
    for s, (x, y) in enumerate(batches(data, steps, batch)):
        if lr_schedule and s in lr_schedule:
            lr = lr_schedule[s]
            session.lr(lr)
        session.train(x, y)
        py_correct.append(py.train_step(x, y, lr).correct)
    xp = data.x_test[:predictions]
    yp = data.y_test[:predictions]
    if predictions:
        session.predict(xp)
    session.weights()
    res = run_session(conv, session, target, emulator, timeout)
    results = res.results
    dev_weights, dev_rng, _ = results[-1]
    rep = VerifyReport(target, emulator, steps, batch, len(xp), seconds=0.0, stack_bytes=res.stack_bytes)
    for tname, w in py.weights.items():
        trains = py.trains(py.tensor_block(tname))
        if tname not in dev_weights:  # a frozen head: the C has none; Python must not have moved it either
            moved = int((w != start[tname]).sum())
            rep.tensors.append(TensorCheck(tname, int(w.size), True, 0, None, trains, moved, on_device=False))
            continue
        d = dev_weights[tname]
        diff = d != w
        first = None
        if diff.any():
            i = tuple(int(v) for v in np.argwhere(diff)[0])
            first = (i, int(d[i]), int(w[i]))
        rep.tensors.append(TensorCheck(tname, int(w.size), not diff.any(), int(diff.sum()), first, trains,
                                       int((d != start[tname]).sum())))
    rep.correct_equal = [r for r in results if isinstance(r, int)] == py_correct
    if predictions:
        scores, cls = results[-2]
        pys = py.predict_scores(xp)
        rep.scores_equal = bool(np.array_equal(scores, pys))
        rep.classes_equal = bool(np.array_equal(cls, np.argmax(pys, axis=1)))
        rep.device_accuracy_bp = int(np.sum(cls == yp)) * 10000 // len(yp)
    else:
        rep.scores_equal = rep.classes_equal = True
    rep.rng_equal = dev_rng == py.dropout_rng.state
    rep.seconds = time.perf_counter() - t0
    rep.python_model = py
    return rep


def run_session(conv: Converted, session: Session, target: str, emulator: str, timeout: float, count_insns=False,
                profile_ops=False) -> McuRun:
    """Run ``session`` on the harness firmware in ``emulator`` (qemu or renode)."""
    if emulator == "qemu":
        return run_mcu(conv, session, target, count_insns=count_insns, timeout=timeout, profile_ops=profile_ops)
    if emulator == "renode":
        return run_renode(conv, session, target, timeout)
    raise ValueError(f"unknown emulator '{emulator}'; choose qemu or renode")

