"""IntegerSGD and the epoch-level schedules (docs/algorithm.md §4.1, §4.5)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import gemm, intgemm
from .arith import max_abs, saturate, tdiv


def sgd_update(w: np.ndarray, grad: np.ndarray, lr_inv: int, amp: int, decay_inv: int, weight_bits: int,
               w_max: int | None = None, g_bound: int | None = None):
    """W - (tdiv(G, lr_inv*amp) + tdiv(W, decay_inv)), saturated to the storage width.

    Two separate truncations (never merged), decay from the pre-update W, no momentum.  The result is
    saturated to ``weight_bits`` (16 or 32): the C side computes in int64 and saturates identically.
    On AVX-512 or NEON the native kernels' one-pass update runs (:func:`~nitro_mcu.trainer.intgemm.sgd`,
    docs/arithmetic.md §4); else ``w_max`` (max |W|) and ``g_bound`` (a bound on |G|) let it take the two-pass
    route; a gradient below 2**53 takes the float64 one; the int64 code below is the rest, the definition, and all
    of it under ``gemm.FORCE_INT64`` (the reference the fast routes are checked against).
    """
    grad = np.asarray(grad)
    if not gemm.FORCE_INT64:
        fast = intgemm.sgd(w, grad, lr_inv * amp, decay_inv, weight_bits) if intgemm.lib() is not None else None
        if fast is not None:
            return fast
        if w_max is not None and g_bound is not None:
            fast = _sgd_update_bounded(w, grad, lr_inv * amp, decay_inv, weight_bits, w_max, g_bound)
        if fast is None:
            fast = _sgd_update_float(w, grad, lr_inv * amp, decay_inv, weight_bits)
        if fast is not None:
            return fast
    delta = tdiv(grad, lr_inv * amp)
    if decay_inv > 0:
        delta = delta + tdiv(w.astype(np.int64), decay_inv)
    return saturate(w.astype(np.int64) - delta, weight_bits).astype(w.dtype)


def _sgd_update_bounded(w, grad, lr_amp: int, decay_inv: int, weight_bits: int, w_max: int, g_bound: int):
    """:func:`sgd_update` in two passes when the bounds show that nothing saturates; else None.

    The float -> integer cast truncates toward zero, so casting the float64 grad / lr_amp (|G| < 2**53, so G is
    exact in float64) is tdiv (argument in arith.tdiv).
    """
    if g_bound >= 2**53 or not fits_without_saturation(w_max, g_bound // lr_amp, decay_inv, weight_bits):
        return None
    q = np.empty(w.shape, dtype=np.int32)
    np.divide(grad, lr_amp, out=q, casting="unsafe", dtype=np.float64)
    return apply_quotient(w, q, decay_inv, w_max)


def fits_without_saturation(w_max: int, q_max: int, decay_inv: int, weight_bits: int) -> bool:
    """|W| + |tdiv(G, lr*amp)| (+ |tdiv(W, decay)|) stays within the storage width: no saturation needed."""
    decay = w_max // decay_inv if decay_inv > 0 else 0
    return w_max + q_max + decay <= (1 << (weight_bits - 1)) - 1


def apply_quotient(w: np.ndarray, q: np.ndarray, decay_inv: int, w_max: int) -> np.ndarray:
    """W - (q + tdiv(W, decay_inv)) for q = tdiv(G, lr*amp), when :func:`fits_without_saturation` holds.

    |W| < decay_inv makes the decay term 0; else it is the truncating cast of W / decay_inv (exact, |W| < 2**31).
    """
    if decay_inv > 0 and w_max >= decay_inv:
        q = q + np.divide(w, decay_inv, out=np.empty(w.shape, dtype=np.int32), casting="unsafe", dtype=np.float64)
    return np.subtract(w, q, dtype=w.dtype, casting="unsafe")


def _sgd_update_float(w, grad, lr_amp: int, decay_inv: int, weight_bits: int):
    """:func:`sgd_update` in float64 for an integer gradient with |G| < 2**53 (checked; else None).

    Exactness: G is exact in float64; trunc(G / (lr*amp)) and trunc(W / decay) are tdiv (argument in arith.tdiv;
    |W| < 2**31); every later value is an integer of magnitude <= |G|/(lr*amp) + 2 * 2**31 < 2**53 (checked),
    so the sum, difference and clip are exact too, and the final cast of an in-range integer is exact.
    """
    if max_abs(grad) + 2**33 >= 2**53:
        return None
    t = np.divide(grad, lr_amp, dtype=np.float64)
    np.trunc(t, out=t)
    if decay_inv > 0:
        wd = np.divide(w, decay_inv, dtype=np.float64)
        np.trunc(wd, out=wd)
        t += wd
    np.subtract(w, t, out=t, dtype=np.float64)
    lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    np.clip(t, lo, hi, out=t)
    return t.astype(w.dtype)


@dataclass
class Monitor:
    """ReduceLROnPlateau / EarlyStopping monitor on an accuracy in basis points (1/10000).

    One call per epoch, epochs from 1.  Before ``from_epoch`` nothing is tracked.  An epoch that does
    not beat best + min_delta increments the counter; ``step`` returns True when counter >= patience.
    """

    patience: int
    from_epoch: int
    min_delta_bp: int = 100  # one percentage point, as the reference's 0.01 on a fraction
    reset_on_fire: bool = True
    best: int = 0
    counter: int = 0

    def step(self, epoch: int, acc_bp: int) -> bool:
        if epoch < self.from_epoch:
            return False
        if acc_bp < self.best + self.min_delta_bp:
            self.counter += 1
            if self.counter >= self.patience:
                if self.reset_on_fire:
                    self.counter = 0
                return True
            return False
        self.best, self.counter = acc_bp, 0
        return False


@dataclass
class Schedule:
    """The paper's schedule: plateau x3 (patience 15 from epoch 10), early stop (35 from epoch 30).

    With ``milestones`` it is a fixed step schedule instead (a training recipe, nitro_mcu/trainer/recipes.py):
    lr_inv x ``factor`` at the end of each listed epoch, no plateau rule and no early stop; the monitor then
    only picks the best epoch.
    """

    lr_inv: int
    factor: int = 3
    plateau_patience: int = 15
    plateau_from: int = 10
    stop_patience: int = 35
    stop_from: int = 30
    milestones: tuple = ()

    def __post_init__(self):
        if self.lr_inv <= 0:
            raise ValueError(f"lr_inv must be a positive integer, got {self.lr_inv}")
        if self.factor < 1 or any(int(m) < 1 for m in self.milestones):
            raise ValueError(f"milestones must be epochs >= 1 and factor >= 1, got {self.milestones}, {self.factor}")
        self.milestones = tuple(sorted({int(m) for m in self.milestones}))
        self.plateau = Monitor(self.plateau_patience, self.plateau_from)
        self.stopper = Monitor(self.stop_patience, self.stop_from, reset_on_fire=False)

    def end_epoch(self, epoch: int, acc_bp: int) -> bool:
        """Early-stop check first, then the plateau check; returns True to stop training."""
        if self.milestones:
            if epoch in self.milestones:
                self.lr_inv *= self.factor
            return False
        if self.stopper.step(epoch, acc_bp):
            return True
        if self.plateau.step(epoch, acc_bp):
            self.lr_inv *= self.factor
        return False
