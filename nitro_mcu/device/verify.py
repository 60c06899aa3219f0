"""Train on the emulated microcontroller and prove it equals Python, in a way that cannot pass vacuously.

:func:`verify` generates the C, builds the harness firmware for a target and runs K training steps and N
predictions in the emulator while the NumPy trainer does the same steps.  At every checkpoint (the end of the
run, or every ``checkpoint_every`` steps) it compares every weight, the number of weights the device sent, lr_inv,
the PRNG state and, per tensor, how many weights changed since the start, counted on the device (the harness's
MOVE command) and in Python; over the run, the correct count of every training step and the scores.  Movement
is checked against the trainable set (docs/adaptation.md): a frozen tensor that changed fails the verdict, always;
a trainable tensor that did not move at all in a run with training steps fails it unless ``allow_still`` names
it.  Frozen heads, which the generated C does not hold, are checked in Python alone.

A fresh or lightly trained model can leave a tensor still at its lr_inv in a short run (NITRO-D's updates are
integer quotients: small gradients round to 0).  :func:`choose_lr_inv` therefore picks the proof run's lr_inv
on the host, before the device runs: the model's own when a Python simulation of the same steps moves every
trainable tensor, else the largest of lr_inv/2, lr_inv/4, ... that does.  Device and Python then both train
from the same start at that lr_inv, and every tensor is still compared: the choice makes the proof non-vacuous,
it never retries the device.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codegen import Converted, convert
from ..codegen.render import lr_inv_max
from ..fileio import atomic_write
from ..trainer.network import Model
from .harness import McuRun, run_mcu
from .protocol import Session, WeightDump
from .renode import find_renode_test, renode_target, run_renode
from .targets import EXTRA_BOARDS, get_board
from .toolchain import check_toolchain


@dataclass
class LrChoice:
    """The proof run's lr_inv and why: ``how`` is "model" (the model's own moves every tensor), "smaller"
    (a smaller one chosen by simulation), "given" (the caller's) or "none" (no candidate moves every tensor:
    the model's is kept and the verdict will name the still tensor)."""
    lr_inv: int
    model_lr_inv: int
    how: str
    still_at_model: tuple = ()     # trainable tensors the model's lr_inv leaves still (simulated)

    def describe(self, steps: int) -> str:
        if self.how == "given":
            return f"proof run: lr_inv {self.lr_inv} (given)"
        if self.how == "model":
            return (f"proof run: lr_inv {self.lr_inv} (the model's): every trainable tensor moves in {steps} "
                    "steps, simulated in Python before the device run")
        still = ", ".join(self.still_at_model)
        if self.how == "smaller":
            return (f"proof run: lr_inv {self.lr_inv} instead of the model's {self.model_lr_inv}: with "
                    f"{self.model_lr_inv}, {still} would not move in {steps} steps (simulated in Python before the "
                    f"device run); {self.lr_inv} is the largest of {self.model_lr_inv}/2^k that moves every "
                    "trainable tensor")
        return (f"proof run: lr_inv {self.lr_inv} (the model's): no lr_inv of {self.model_lr_inv}/2^k moves "
                f"{still} in {steps} steps (simulated in Python)")

    def to_dict(self) -> dict:
        return dict(lr_inv=self.lr_inv, model_lr_inv=self.model_lr_inv, how=self.how,
                    still_at_model=list(self.still_at_model))


def _still_after(model: Model, data, steps: int, batch: int, lr0: int, lr_schedule: dict | None,
                 ignore=()) -> list[str]:
    """Trainable tensors (not in ``ignore``) that ``steps`` Python training steps at ``lr0`` (then
    ``lr_schedule``) leave unchanged; ``model`` is not changed."""
    sim = copy.deepcopy(model)
    start = {k: v.copy() for k, v in sim.weights.items()}
    lr = lr0
    for s, (x, y) in enumerate(batches(data, steps, batch)):
        lr = lr_schedule[s] if lr_schedule and s in lr_schedule else lr
        sim.train_step(x, y, lr)
    return [n for n, w in sim.weights.items() if sim.trains(sim.tensor_block(n)) and n not in ignore
            and not np.any(w != start[n])]


def choose_lr_inv(model: Model, data, steps: int, batch: int, lr_schedule: dict | None = None,
                  allow_still=(), lr_inv: "int | str | None" = "auto") -> LrChoice:
    """The proof run's starting lr_inv.  ``lr_inv`` an integer: that one; None: the model's; "auto": the
    model's if simulating the run in Python (``steps`` steps of ``batch``, ``lr_schedule`` applied) moves every
    trainable tensor that ``allow_still`` does not name, else the largest of lr_inv/2, lr_inv/4, ..., 1 that
    does (the model's again where none does).  ``model`` is the one to verify (its trainable set applied)."""
    own = int(model.spec["lr_inv"])
    if lr_inv is None:
        return LrChoice(own, own, "model")
    if lr_inv != "auto":
        if isinstance(lr_inv, bool) or not isinstance(lr_inv, (int, np.integer)) or lr_inv < 1:
            raise ValueError(f"lr_inv must be a positive integer or 'auto', got {lr_inv!r}")
        return LrChoice(int(lr_inv), own, "given")
    if not steps or (lr_schedule and 0 in lr_schedule):
        return LrChoice(own, own, "model")     # nothing trains, or the schedule sets the start itself
    still = _still_after(model, data, steps, batch, own, lr_schedule, allow_still)
    if not still:
        return LrChoice(own, own, "model")
    lr = own // 2
    while lr >= 1:
        if not _still_after(model, data, steps, batch, lr, lr_schedule, allow_still):
            return LrChoice(lr, own, "smaller", tuple(still))
        lr //= 2
    return LrChoice(own, own, "none", tuple(still))


@dataclass
class TensorCheck:
    name: str
    count: int
    equal: bool
    mismatches: int
    first: tuple | None = None          # (index, device value, python value)
    changed: int = 0                    # weights that differ from the start, in Python
    changed_device: int | None = None   # the same, counted by the device
    trainable: bool = True              # False: frozen, it must not move
    on_device: bool = True              # False: a frozen head, which the generated C does not hold

    @property
    def moved_equal(self) -> bool:
        return not self.on_device or self.changed_device == self.changed

    @property
    def moved(self) -> bool:
        return bool(self.changed or self.changed_device)

    def to_dict(self) -> dict:
        return dict(name=self.name, count=self.count, mismatches=self.mismatches, changed=self.changed,
                    changed_device=self.changed_device, equal=self.equal, trainable=self.trainable,
                    on_device=self.on_device)


@dataclass
class Checkpoint:
    """Device and Python state after ``step`` training steps."""
    step: int
    tensors: list
    weights_device: int      # weights the device sent
    weights_python: int      # weights of the tensors the C holds, in Python
    moved_tensors: int       # tensors the device counted (MOVE)
    lr_inv_device: int
    lr_inv_python: int
    rng_device: int
    rng_python: int

    @property
    def equal(self) -> bool:
        return self.first_mismatch() is None

    def first_mismatch(self) -> str | None:
        if self.weights_device != self.weights_python:
            return f"the device sent {self.weights_device} weights, the model has {self.weights_python}"
        for t in self.tensors:
            if not t.equal:
                if t.first is None:
                    return f"tensor {t.name}: missing from the device's weights"
                idx, dev, py = t.first
                return f"tensor {t.name} index {list(idx)}: device {dev}, python {py}"
        held = sum(t.on_device for t in self.tensors)
        if self.moved_tensors != held:
            return f"the device counted moved weights of {self.moved_tensors} tensors, the C holds {held}"
        for t in self.tensors:
            if not t.moved_equal:
                return f"tensor {t.name}: {t.changed_device} weights moved on the device, {t.changed} in Python"
        if self.lr_inv_device != self.lr_inv_python:
            return f"lr_inv: device {self.lr_inv_device}, python {self.lr_inv_python}"
        if self.rng_device != self.rng_python:
            return f"dropout PRNG state: device {self.rng_device:#x}, python {self.rng_python:#x}"
        return None

    def to_dict(self) -> dict:
        return dict(step=self.step, equal=self.equal, first_mismatch=self.first_mismatch(),
                    weights=dict(device=self.weights_device, python=self.weights_python),
                    lr_inv=dict(device=self.lr_inv_device, python=self.lr_inv_python),
                    prng_state=dict(device=self.rng_device, python=self.rng_python),
                    tensors=[t.to_dict() for t in self.tensors])


@dataclass
class VerifyReport:
    target: str
    emulator: str
    steps: int
    batch: int
    predictions: int
    opt: str = "-O2"
    checkpoints: list = field(default_factory=list)
    correct_device: list = field(default_factory=list)
    correct_python: list = field(default_factory=list)
    scores_equal: bool = False
    classes_equal: bool = False
    device_accuracy_bp: int = 0
    allow_still: tuple = ()
    seconds: float = 0.0
    device_seconds: float = 0.0     # the emulator run alone
    stack_bytes: int | None = None
    lr_choice: LrChoice | None = None   # how the proof run's lr_inv was chosen

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]

    @property
    def tensors(self) -> list:
        return self.final.tensors

    @property
    def correct_equal(self) -> bool:
        return self.correct_device == self.correct_python

    @property
    def rng_equal(self) -> bool:
        return self.final.rng_device == self.final.rng_python

    @property
    def still(self) -> list[str]:
        """Trainable tensors that did not move in a run with training steps, and that ``allow_still`` does not
        name."""
        if not self.steps:
            return []
        return [t.name for t in self.tensors if t.trainable and not t.moved and t.name not in self.allow_still]

    @property
    def frozen_moved(self) -> list[str]:
        """Frozen tensors that changed, on the device or in Python: never allowed."""
        return [t.name for t in self.tensors if not t.trainable and t.moved]

    @property
    def bit_exact(self) -> bool:
        return self.first_mismatch() is None

    @property
    def passed(self) -> bool:
        return self.bit_exact and not self.frozen_moved and not self.still

    @property
    def verdict(self) -> str:
        return ("MISMATCH" if not self.bit_exact else "MOVED" if self.frozen_moved else "STILL" if self.still
                else "bit-exact")

    def first_mismatch(self) -> str | None:
        for c in self.checkpoints:
            m = c.first_mismatch()
            if m:
                return m if c is self.final else f"at step {c.step}: {m}"
        if len(self.correct_device) != len(self.correct_python):
            return f"the device answered {len(self.correct_device)} training steps of {len(self.correct_python)}"
        for s, (d, p) in enumerate(zip(self.correct_device, self.correct_python)):
            if d != p:
                return f"training-mode correct count of step {s}: device {d}, python {p}"
        if not self.scores_equal:
            return "prediction scores differ"
        if not self.classes_equal:
            return "predicted classes differ"
        return None

    def problem(self) -> str | None:
        """The first mismatch, else the first tensor that did not move, as one line; None when passed."""
        m = self.first_mismatch()
        if m:
            return f"MISMATCH: first difference at {m}"
        if self.frozen_moved:
            t = next(t for t in self.tensors if t.name == self.frozen_moved[0])
            return (f"MOVED: frozen {', '.join(self.frozen_moved)} changed ({t.name}: {t.changed} weights in Python"
                    + (f", {t.changed_device} on the device" if t.on_device else "")
                    + "); a frozen tensor must keep every value")
        if self.still:
            names = ", ".join(self.still)
            return (f"STILL: {names} did not change in {self.steps} training steps, on the device and in Python, so "
                    f"the run proves nothing about {'its' if len(self.still) == 1 else 'their'} update (more "
                    f"--steps, a smaller --lr-inv, or --allow-still {self.still[0]} if intended)")
        return None

    def table(self) -> str:
        def ok(b):
            return "equal" if b else "DIFFERENT"

        f = self.final
        lines = [f"{'tensor':<14} {'role':<9} {'weights':>9} {'changed':>9} {'mismatches':>10}  verdict"]
        for t in self.tensors:
            v = ok(t.equal and t.moved_equal) if t.on_device else "not in the C (a frozen head)"
            if not t.moved_equal:
                v += f" (changed on the device: {t.changed_device})"
            elif not t.trainable:
                v += ", MOVED" if t.moved else ", kept"
            elif self.steps and not t.moved:
                v += ", still (allowed)" if t.name in self.allow_still else ", DID NOT MOVE"
            role = "trainable" if t.trainable else "frozen"
            lines.append(f"{t.name:<14} {role:<9} {t.count:>9} {t.changed:>9} {t.mismatches:>10}  {v}")
        lines.append(f"{'weight count':<14} {f.weights_python:>9} {'':>9} {'':>10}  "
                     f"{ok(f.weights_device == f.weights_python)} (device sent {f.weights_device})")
        lines.append(f"{'lr_inv':<14} {1:>9} {'':>9} {'':>10}  {ok(f.lr_inv_device == f.lr_inv_python)} "
                     f"(device {f.lr_inv_device}, python {f.lr_inv_python})")
        lines.append(f"{'correct/step':<14} {len(self.correct_python):>9} {'':>9} {'':>10}  {ok(self.correct_equal)}")
        lines.append(f"{'scores':<14} {self.predictions:>9} {'':>9} {'':>10}  "
                     f"{ok(self.scores_equal and self.classes_equal)}")
        lines.append(f"{'PRNG state':<14} {1:>9} {'':>9} {'':>10}  {ok(self.rng_equal)}")
        if len(self.checkpoints) > 1:
            bad = [c.step for c in self.checkpoints if not c.equal]
            lines.append(f"{'checkpoints':<14} {len(self.checkpoints):>9} {'':>9} {len(bad):>10}  "
                         f"{ok(not bad)}" + (f" (first at step {bad[0]})" if bad else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        f = self.final
        return dict(
            verdict=self.verdict, problem=self.problem(), target=self.target, emulator=self.emulator, opt=self.opt,
            steps=self.steps, batch=self.batch, predictions=self.predictions,
            tensors=[t.to_dict() for t in self.tensors],
            weights=dict(device=f.weights_device, python=f.weights_python),
            lr_inv=dict(device=f.lr_inv_device, python=f.lr_inv_python),
            prng_state=dict(device=f.rng_device, python=f.rng_python),
            correct=dict(device=self.correct_device, python=self.correct_python, equal=self.correct_equal),
            scores_equal=self.scores_equal, classes_equal=self.classes_equal,
            held_out_accuracy_bp=self.device_accuracy_bp if self.predictions else None,
            still=self.still, frozen_moved=self.frozen_moved, allow_still=list(self.allow_still),
            checkpoints=[c.to_dict() for c in self.checkpoints],
            seconds=round(self.seconds, 2), device_seconds=round(self.device_seconds, 2),
            stack_bytes=self.stack_bytes, lr_choice=self.lr_choice.to_dict() if self.lr_choice else None)

    def write_json(self, path: "str | Path") -> Path:
        return atomic_write(Path(path), (json.dumps(self.to_dict(), indent=1) + "\n").encode())


def batches(data, steps: int, batch: int):
    """The ``steps`` training batches that the device and Python both see."""
    n = len(data.x_train)
    if n < batch:
        raise ValueError(f"the training data ({n} samples) is smaller than one batch ({batch})")
    for s in range(steps):
        i = (s * batch) % (n - batch + 1)
        yield data.x_train[i:i + batch], data.y_train[i:i + batch]


def flat_weights(weights: dict, conv: Converted) -> np.ndarray:
    """All weights in the harness's export order (the plan's tensors, C order)."""
    return np.concatenate([np.asarray(weights[t.name]).reshape(-1) for t in conv.plan.tensors])


MAX_STEPS = 100_000          # training steps of one device run
MAX_BATCH = 256              # training batch on the device (the generator's --batch goes to 4096 for the host)
MAX_COMMAND_BYTES = 64 << 20  # the batches of one run are sent as one command file, held in memory first


def check_bounds(model: Model, steps: int, batch: int, predictions: int) -> None:
    """One line, before anything is built, for a run whose commands would not fit the documented limits."""
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be in [0, {MAX_STEPS}], got {steps}")
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"the device batch must be in [1, {MAX_BATCH}], got {batch}")
    size = int(np.prod(model.input_shape))
    need = steps * batch * (size + 1) + predictions * size
    if need > MAX_COMMAND_BYTES:
        raise ValueError(f"{steps} steps of batch {batch} (and {predictions} predictions) are {need} bytes of "
                         f"commands, over the limit of {MAX_COMMAND_BYTES}: run fewer steps")


def verify(model: Model, data, target: str = "m4", steps: int = 20, batch: int = 8, predictions: int = 100,
           lr_schedule: dict | None = None, emulator: str = "qemu", name: str = "nitro_model",
           timeout: float | None = None, allow_still=(), checkpoint_every: int | None = None,
           opt: str = "-O2", trainable=None, lr_inv: "int | str | None" = "auto") -> VerifyReport:
    """Run ``steps`` training steps and ``predictions`` predictions on the device and in Python; compare.

    ``lr_inv``: the proof run's starting lr_inv: "auto" (chosen in Python so that every trainable tensor moves,
    :func:`choose_lr_inv`; ``report.lr_choice`` says what and why), an integer, None (the model's) or a
    :class:`LrChoice` already made.  ``lr_schedule``: step -> lr_inv from that step on (a step-0 entry
    overrides ``lr_inv``).  ``allow_still``: trainable tensors allowed not to move.
    ``checkpoint_every``: also compare the whole state every that many steps (one continuous device run).
    ``trainable``: the blocks that train (default: the model's set); ``model`` itself is not changed.
    ``timeout``: seconds for the emulator run (default: 600 on QEMU; on Renode it scales with the work).
    """
    if steps < 0 or predictions < 0:
        raise ValueError("steps and predictions must be non-negative")
    check_bounds(model, steps, batch, min(predictions, len(data.x_test)))
    if checkpoint_every is not None and checkpoint_every <= 0:
        raise ValueError(f"checkpoint_every must be positive, got {checkpoint_every}")
    unknown = [n for n in allow_still if n not in model.weights]
    if unknown:
        raise ValueError(f"allow_still names no tensor of the model: {', '.join(unknown)} (tensors: "
                         f"{', '.join(model.weights)})")
    t0 = time.perf_counter()
    py = copy.deepcopy(model)
    if trainable is not None:
        py.set_trainable(trainable)
    frozen = [n for n in allow_still if not py.trains(py.tensor_block(n))]
    if frozen:
        raise ValueError(f"allow_still names frozen tensor(s) {', '.join(frozen)}: a frozen tensor must never "
                         "move, so there is nothing to allow")
    choice = lr_inv if isinstance(lr_inv, LrChoice) else choose_lr_inv(py, data, steps, batch, lr_schedule,
                                                                        allow_still, lr_inv)
    if choice.lr_inv != py.spec["lr_inv"]:   # the device starts at the generated lr_inv: set it first
        lr_schedule = {0: choice.lr_inv, **(lr_schedule or {})}
    conv = convert(copy.deepcopy(py), batch=batch, train=True, name=name)
    if choice.lr_inv > lr_inv_max(conv.plan):
        raise ValueError(f"lr_inv {choice.lr_inv} is over {lr_inv_max(conv.plan)}, the largest the generated C "
                         "accepts for this model")
    session = Session(int(np.prod(model.input_shape)))
    start = {k: v.copy() for k, v in py.weights.items()}
    reference = flat_weights(start, conv)
    lr = py.spec["lr_inv"]
    rep = VerifyReport(target, emulator, steps, batch, 0, opt, allow_still=tuple(allow_still), lr_choice=choice)
    snapshots = []   # (step, weights, rng, lr) in Python, one per checkpoint

    def checkpoint(step):
        session.move(reference)
        session.weights()
        snapshots.append((step, {k: v.copy() for k, v in py.weights.items()}, py.dropout_rng.state, lr))

    for s, (x, y) in enumerate(batches(data, steps, batch)):
        if lr_schedule and s in lr_schedule:
            lr = lr_schedule[s]
            session.lr(lr)
        session.train(x, y)
        rep.correct_python.append(py.train_step(x, y, lr).correct)
        if checkpoint_every and (s + 1) % checkpoint_every == 0 and s + 1 < steps:
            checkpoint(s + 1)
    xp, yp = data.x_test[:predictions], data.y_test[:predictions]
    rep.predictions = len(xp)
    if len(xp):
        session.predict(xp)
    checkpoint(steps)
    res = run_session(conv, session, target, emulator, timeout, opt=opt)
    rep.stack_bytes = res.stack_bytes
    rep.device_seconds = res.run.wall_s if res.run is not None else 0.0
    moves = [r for r in res.results if isinstance(r, list)]
    dumps = [r for r in res.results if isinstance(r, WeightDump)]
    rep.correct_device = [r for r in res.results if isinstance(r, int)]
    names = [t.name for t in conv.plan.tensors]
    roles = {n: py.trains(py.tensor_block(n)) for n in py.weights}
    for (step, pw, rng, plr), moved, dump in zip(snapshots, moves, dumps):
        rep.checkpoints.append(compare(step, pw, rng, plr, start, dict(zip(names, moved)), len(moved), dump,
                                       len(reference), roles, set(names)))
    if len(xp):
        scores, cls = next(r for r in res.results if isinstance(r, tuple))
        pys = py.predict_scores(xp)
        rep.scores_equal = bool(np.array_equal(scores, pys))
        rep.classes_equal = bool(np.array_equal(cls, np.argmax(pys, axis=1)))
        rep.device_accuracy_bp = int(np.sum(cls == yp)) * 10000 // len(yp)
    else:
        rep.scores_equal = rep.classes_equal = True
    rep.seconds = time.perf_counter() - t0
    rep.python_model = py
    return rep


def compare(step: int, weights: dict, rng: int, lr: int, start: dict, moved: dict, moved_tensors: int,
            dump: WeightDump, n_weights: int, trainable: dict | None = None, held: set | None = None) -> Checkpoint:
    """One checkpoint: the device's MOVE counts (tensor name -> count) and WGHT dump against Python's weights,
    PRNG state and lr_inv.  ``trainable``: tensor name -> whether it trains (default: all); ``held``: the
    tensors the C holds (default: all; a frozen head is not held, and only its Python movement is checked)."""
    checks = []
    for tname, w in weights.items():
        changed = int(np.count_nonzero(w != start[tname]))
        role = True if trainable is None else trainable[tname]
        if held is not None and tname not in held:
            checks.append(TensorCheck(tname, int(w.size), True, 0, None, changed, None, role, on_device=False))
            continue
        dev_moved = moved.get(tname)
        d = dump.weights.get(tname)
        if d is None:
            checks.append(TensorCheck(tname, int(w.size), False, int(w.size), None, changed, dev_moved, role))
            continue
        diff = d != w
        first = None
        if diff.any():
            j = tuple(int(v) for v in np.argwhere(diff)[0])
            first = (j, int(d[j]), int(w[j]))
        checks.append(TensorCheck(tname, int(w.size), not diff.any(), int(diff.sum()), first, changed, dev_moved,
                                  role))
    return Checkpoint(step, checks, dump.count, n_weights, moved_tensors, dump.lr_inv, lr, dump.rng, rng)


def check_emulator(target, emulator: str) -> None:
    """One-line errors before any work: a board target has no QEMU machine, and the emulator and the target's
    cross toolchain must be installed (Renode first: its message names the --emulator qemu way out)."""
    if emulator not in ("qemu", "renode"):
        raise ValueError(f"unknown emulator '{emulator}'; choose qemu or renode")
    t = get_board(target)
    if emulator == "qemu" and t.name in EXTRA_BOARDS:
        raise ValueError(f"{t.name} has no QEMU machine; use --emulator renode")
    if emulator == "renode":
        renode_target(target)
        find_renode_test()
    check_toolchain(qemu=emulator == "qemu", isa=t.isa)


def run_session(conv: Converted, session: Session, target: str, emulator: str, timeout: float | None = None,
                count_insns=False, profile_ops=False, opt: str = "-O2") -> McuRun:
    """Run ``session`` on the harness firmware in ``emulator`` (qemu or renode).  ``timeout`` None: 600 s on
    QEMU, scaled with the work on Renode (renode.renode_timeout)."""
    check_emulator(target, emulator)
    if emulator == "renode":
        return run_renode(conv, session, target, timeout, opt=opt)
    return run_mcu(conv, session, target, count_insns=count_insns, timeout=600 if timeout is None else timeout,
                   profile_ops=profile_ops, opt=opt)
