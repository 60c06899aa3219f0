"""Choosing lr_inv on the validation split: a short integer search (docs/own_data.md, "Learning rates").

In NITRO-D the IntegerSGD update of a weight is ``tdiv(gradient, lr_inv)`` (times the block's amplification;
docs/algorithm.md): a too large lr_inv truncates most updates to zero and the model barely moves, a too small
one makes steps so large that activations and weights saturate.  Which value works depends on the data and
the architecture, so for a description without an lr_inv the trainer tries ``CANDIDATES`` (powers of two),
each from the same initial weights and the same data order for ``SEARCH_EPOCHS`` epochs at a constant rate,
and keeps the one with the best validation accuracy (ties: the better mean validation accuracy over those
epochs, then the larger lr_inv, the gentler rate).  The test set is never read.  Every candidate starts from
a copy of the data stream, so the run that follows draws exactly what it would have drawn without a search.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from .loop import format_pct
from .loop import train as _train
from .network import Model

CANDIDATES = (32, 64, 128, 256, 512, 1024, 2048)
SEARCH_EPOCHS = 10
AUTO_EPOCHS = 150  # at most, after the search: early stopping on validation ends the run (loop.train)


@dataclass
class LrSearch:
    """The candidates tried, their validation accuracies per epoch (basis points), and the choice."""
    epochs: int
    curves: dict = field(default_factory=dict)  # lr_inv -> [val_acc_bp per epoch]
    chosen: int = 0

    def score(self, lr: int) -> tuple:
        c = self.curves[lr]
        return max(c), sum(c) // len(c), lr

    def describe(self) -> str:
        """What was tried and why the choice: one line."""
        tried = ", ".join(f"{lr}: {format_pct(max(c))}" for lr, c in self.curves.items())
        return (f"lr_inv {self.chosen}, the best validation accuracy after {self.epochs} epochs at a constant "
                f"rate ({tried}; ties: better mean, then the larger lr_inv)")


def search_lr_inv(model: Model, data, batch_size: int, candidates=CANDIDATES, epochs: int = SEARCH_EPOCHS,
                  augment=None) -> LrSearch:
    """Try each lr_inv on fresh copies of ``model`` (its seed, profile, width and trainable set; not its
    weights) for ``epochs`` epochs; ``model`` and ``data`` are left as they were."""
    if not len(data.x_val):
        raise ValueError("the lr_inv search needs a validation split (val_size > 0)")
    res = LrSearch(epochs)
    for lr in candidates:
        fresh = Model(model.spec, model.quirks, weight_bits=model.weight_bits, seed=model.seed,
                      trainable=sorted(model.trainable))
        trial = dataclasses.replace(data, rng=copy.deepcopy(data.rng))
        hist = _train(fresh, trial, epochs, batch_size, lr, augment, schedule=False, progress=False,
                      test_reads="never")
        res.curves[int(lr)] = [r.monitor_acc_bp for r in hist.records]
    res.chosen = max(res.curves, key=res.score)
    return res
