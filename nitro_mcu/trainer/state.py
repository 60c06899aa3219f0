"""The epoch loop's state after a finished epoch: what a resumed run restores to continue bit-identically
(nitro_mcu/trainer/loop.py calls :func:`capture` after every epoch and :func:`restore` before the first)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from .network import Model
from .optim import Schedule
from .rng import Rng


@dataclass
class TrainState:
    epoch: int                 # epochs finished
    lr_inv: int                # the schedule's current value
    plateau: tuple             # (best, counter) of the plateau monitor
    stopper: tuple             # (best, counter) of the early-stopping monitor
    data_rng: int              # the data stream (shuffles, augmentation)
    dropout_rng: int
    weights: dict              # the current weights
    best_weights: dict | None  # the weights kept by model selection (None: the final ones are kept)
    history: object            # a copy of the loop's History


def capture(epoch: int, model: Model, sched: Schedule, hist, rng: Rng, best_weights: dict | None) -> TrainState:
    return TrainState(epoch, sched.lr_inv, (sched.plateau.best, sched.plateau.counter),
                      (sched.stopper.best, sched.stopper.counter), rng.state, model.dropout_rng.state,
                      {k: v.copy() for k, v in model.weights.items()},
                      None if best_weights is None else {k: v.copy() for k, v in best_weights.items()},
                      copy.deepcopy(hist))


def restore(state: TrainState, model: Model, sched: Schedule, hist, rng: Rng) -> tuple[int, dict | None]:
    """Put ``state`` back into the loop's objects; returns (first epoch to run, best weights)."""
    model.load_weights(state.weights)
    model.dropout_rng = Rng(0, state=state.dropout_rng)
    rng.state = int(state.data_rng)
    sched.lr_inv = int(state.lr_inv)
    sched.plateau.best, sched.plateau.counter = (int(v) for v in state.plateau)
    sched.stopper.best, sched.stopper.counter = (int(v) for v in state.stopper)
    for k, v in vars(copy.deepcopy(state.history)).items():
        setattr(hist, k, v)
    best = None if state.best_weights is None else {k: v.copy() for k, v in state.best_weights.items()}
    return (1 << 30 if hist.stopped_early else state.epoch + 1), best
