"""The epoch loop: shuffling, augmentation, the schedule, evaluation and model selection (docs/algorithm.md §5.3).

Accuracies are integers in basis points (1/10000): no float enters training decisions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .data.augmentation import augment as augment_batch
from .network import Model
from .optim import Schedule
from .state import TrainState, capture, restore


@dataclass
class EpochRecord:
    epoch: int
    lr_inv: int
    train_acc_bp: int
    train_loss: int
    monitor_acc_bp: int
    test_acc_bp: int
    seconds: float


@dataclass
class History:
    records: list = field(default_factory=list)
    best_epoch: int = 0
    best_monitor_bp: int = -1
    test_at_best_bp: int = 0
    stopped_early: bool = False
    monitor: str = "val"
    data: object = field(default=None, repr=False)  # the prepared data, when api.train loaded it itself

    @property
    def best_monitor_accuracy(self) -> float:
        """The best monitored accuracy as a fraction in [0, 1] (the ``_bp`` fields are basis points)."""
        return self.best_monitor_bp / 10000

    @property
    def test_accuracy_at_best(self) -> float:
        """The test accuracy at the best epoch, a fraction in [0, 1]."""
        return self.test_at_best_bp / 10000

    def to_csv(self) -> str:
        """Fixed columns; ``val_acc`` is empty when the test set drives the schedule (no validation split)."""
        cols = ["epoch", "lr_inv", "train_acc", "train_loss", "val_acc", "test_acc", "seconds"]
        lines = [",".join(cols)]
        for r in self.records:
            val = format_bp(r.monitor_acc_bp) if self.monitor == "val" else ""
            test = format_bp(r.test_acc_bp) if r.test_acc_bp >= 0 else ""  # -1: not read (test_reads)
            lines.append(f"{r.epoch},{r.lr_inv},{format_bp(r.train_acc_bp)},{r.train_loss},{val},{test},"
                         f"{r.seconds:.2f}")
        return "\n".join(lines) + "\n"


def check_batch(n: int, batch_size: int) -> None:
    """Training drops a last partial batch, so a training part smaller than one batch would never train."""
    if n < batch_size:
        raise ValueError(f"the training part holds {n} samples, fewer than one batch ({batch_size}): choose a batch "
                         f"of at most {n} (--batch, batch_size=)")


def format_bp(bp: int) -> str:
    """Basis points as a percentage with two decimals, from integers only: 9708 -> '97.08'."""
    return f"{bp // 100}.{bp % 100:02d}"


def format_pct(bp: int) -> str:
    return f"{format_bp(bp)} %"


CHANCE_EPOCHS = 5  # NITRO-D's local losses often keep accuracy near chance this long (docs/own_data.md)


def chance_note(epoch: int, acc_bp: int, num_classes: int) -> str:
    """The progress line's word on a first epoch near chance: usual for NITRO-D, not a broken run."""
    chance = 10000 // max(1, num_classes)
    if epoch <= CHANCE_EPOCHS and acc_bp < 2 * chance:
        return f"  (near chance, {format_bp(chance)} %: usual for NITRO-D's first epochs)"
    return ""


def accuracy_bp(model: Model, x: np.ndarray, y: np.ndarray, drop_last: bool = False, batch_size: int = 64) -> int:
    """Accuracy in basis points.  drop_last (Q9): mean of per-batch accuracies over full batches only."""
    if len(x) == 0:
        return 0
    if drop_last and len(x) >= batch_size:
        nb = len(x) // batch_size
        pred = model.predict(x[: nb * batch_size], batch_size)
        per_batch = (pred == y[: nb * batch_size]).reshape(nb, batch_size).sum(axis=1)
        return int(per_batch.sum()) * 10000 // (nb * batch_size)
    pred = model.predict(x, 256)
    return int(np.sum(pred == y)) * 10000 // len(x)


FEATURE_CACHE_BYTES = 1 << 29  # the frozen prefix's outputs of the training set are kept below this size


def prefix_cache(model: Model, x: np.ndarray, chunk: int = 256) -> np.ndarray | None:
    """The frozen prefix's output (:meth:`Model.prefix_features`) of every image in ``x``, computed once; None
    when nothing is frozen in front or the result would exceed FEATURE_CACHE_BYTES.  Training on it is
    bit-identical to training on ``x``: the frozen prefix has no dropout and its weights never change."""
    if not model.frozen_prefix() or not len(x):
        return None
    first = model.prefix_features(x[:1])
    if first.nbytes * len(x) > FEATURE_CACHE_BYTES:
        return None
    return np.concatenate([model.prefix_features(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def refit_schedule(hist: History) -> list[int]:
    """lr_inv of each epoch up to the best one: what a refit on train + validation replays.

    Goodfellow, Bengio & Courville, *Deep Learning* (2016), Algorithm 7.2: early stopping on a validation
    split decides how long to train (the best epoch) and, here, when the plateau rule lowered the rate; the
    refit trains a fresh model on all training images for that many epochs and keeps its final weights.
    """
    if hist.monitor != "val" or hist.best_epoch < 1:
        raise ValueError("a refit needs a run whose schedule was driven by a validation split")
    return [r.lr_inv for r in hist.records[: hist.best_epoch]]


def train(model: Model, data, epochs: int, batch_size: int = 64, lr_inv: int | None = None,
          augment: tuple | None = None, schedule: bool = True, progress: bool = True,
          on_epoch=None, lr_schedule: list[int] | None = None, resume: TrainState | None = None,
          on_checkpoint=None, milestones: tuple = (), factor: int = 3, test_reads: str = "epoch") -> History:
    """Train ``model`` on prepared data (nitro_mcu.trainer.data.Prepared); keeps the best weights by the monitor.

    ``augment`` is (crop_pad, flip) or None; draws come from ``data.rng`` (the data stream), so a run is
    fully determined by the seed.  ``lr_schedule`` (one lr_inv per epoch, see :func:`refit_schedule`)
    replays a fixed schedule instead: ``epochs`` is its length, nothing is monitored or selected and the
    final weights are kept (the test accuracy is only logged).  ``resume`` (a :class:`~.state.TrainState`)
    continues a run after its last finished epoch; ``on_checkpoint`` receives one after every epoch.
    ``milestones`` (with ``factor``) replaces the plateau / early-stop rule by a fixed step schedule
    (optim.Schedule).  ``test_reads``: "epoch" evaluates the test set after every epoch (logged; it drives
    the run only without a validation split); "end" reads it once, for the kept weights; "never" not at all.
    Records and ``test_at_best_bp`` hold -1 where it was not read.  No choice reads it either way with a
    validation split: "end" / "never" make that visible.
    """
    if test_reads not in ("epoch", "end", "never"):
        raise ValueError(f"test_reads must be 'epoch', 'end' or 'never', got {test_reads!r}")
    if lr_schedule is not None:
        lr_schedule = [int(v) for v in lr_schedule]
        if not lr_schedule or min(lr_schedule) <= 0:
            raise ValueError("lr_schedule must be a non-empty list of positive lr_inv values")
        epochs, schedule = len(lr_schedule), False
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    n = len(data.x_train)
    check_batch(n, batch_size)
    sched = Schedule(lr_inv if lr_inv is not None else model.spec["lr_inv"], factor=factor,
                     milestones=tuple(milestones))
    q = model.quirks
    fixed = lr_schedule is not None
    use_test = q.monitor_test or len(data.x_val) == 0
    if use_test and not fixed and test_reads != "epoch":
        raise ValueError("the test set drives this run (no validation split, or Q10): test_reads must be 'epoch'")
    hist = History(monitor="none" if fixed else "test" if use_test else "val")
    best_weights = None
    start = 1
    if resume is not None:
        start, best_weights = restore(resume, model, sched, hist, data.rng)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max(0, epochs - start + 1) * (n // batch_size), unit="batch", dynamic_ncols=True,
                   leave=False)
    rng = data.rng
    feats = None if augment else prefix_cache(model, data.x_train)
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        if fixed:
            sched.lr_inv = lr_schedule[epoch - 1]
        perm = rng.permutation(n)
        correct = seen = loss = 0
        for b in range(n // batch_size):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            x = data.x_train[idx] if feats is None else feats[idx]
            if augment:
                x = augment_batch(x, rng, augment[0], augment[1], q.augment_per_batch)
            st = model.train_step(x, data.y_train[idx], sched.lr_inv, features=feats is not None)
            correct += st.correct
            seen += st.count
            loss += st.loss
            if bar is not None:
                bar.update(1)
                if b % 20 == 0:
                    bar.set_postfix(epoch=epoch, acc=format_bp(correct * 10000 // seen),
                                    chance=format_bp(10000 // model.num_classes), loss=loss // seen)
        test_bp = accuracy_bp(model, data.x_test, data.y_test, q.drop_last_eval, batch_size) \
            if test_reads == "epoch" else -1
        # in a replayed (fixed) schedule the test accuracy is only logged: nothing reads it
        mon_bp = test_bp if use_test or fixed else accuracy_bp(model, data.x_val, data.y_val, q.drop_last_eval,
                                                               batch_size)
        rec = EpochRecord(epoch, sched.lr_inv, correct * 10000 // seen, loss // seen, mon_bp, test_bp,
                          time.perf_counter() - t0)
        hist.records.append(rec)
        if fixed:
            hist.best_epoch, hist.test_at_best_bp = epoch, test_bp
        elif mon_bp > hist.best_monitor_bp:
            hist.best_epoch, hist.best_monitor_bp, hist.test_at_best_bp = epoch, mon_bp, test_bp
            best_weights = {k: v.copy() for k, v in model.weights.items()}
        if bar is not None:
            mon = "" if fixed or use_test else f"{hist.monitor} {format_bp(mon_bp)} %  "
            test = f"test {format_bp(test_bp)} %  " if test_bp >= 0 else ""
            bar.write(f"epoch {epoch:3d}  lr_inv {rec.lr_inv:6d}  train {format_bp(rec.train_acc_bp)} %  "
                      f"{mon}{test}loss {rec.train_loss}"
                      + chance_note(epoch, max(rec.train_acc_bp, mon_bp), model.num_classes))
        if on_epoch:
            on_epoch(rec)
        if schedule and sched.end_epoch(epoch, mon_bp):
            hist.stopped_early = True
        if on_checkpoint is not None:
            on_checkpoint(capture(epoch, model, sched, hist, rng, best_weights))
        if hist.stopped_early:
            break
    if bar is not None:
        bar.close()
    if best_weights is not None:
        model.weights = best_weights
    if test_reads == "end":
        hist.test_at_best_bp = accuracy_bp(model, data.x_test, data.y_test, q.drop_last_eval, batch_size)
    return hist
