"""int8 data augmentation (docs/algorithm.md §5.2): RandomCrop with padding and RandomHorizontalFlip.

All draws come from the data stream of the project PRNG in a documented order, so C code can reproduce
every one.
"""
from __future__ import annotations

import numpy as np

from ..rng import GAMMA, MASK64, Rng
from .datasets import canonical_name
from .errors import DataError

# (crop_pad, flip) of the paper pipelines (§5.2): MNIST Crop(28,2); FMNIST Crop(28,2)+Flip; CIFAR Crop(32,4)+Flip
_AUGMENT_DEFAULTS = {"mnist": (2, False), "fashion-mnist": (2, True), "cifar10": (4, True), "bundled": (2, False)}


def augment_defaults(name: str) -> tuple[int, bool]:
    """(crop_pad, flip) of the paper pipeline for a dataset (§5.2): MNIST (2, no flip), FMNIST (2, flip),
    CIFAR-10 (4, flip); unknown names get (0, False)."""
    return _AUGMENT_DEFAULTS.get(canonical_name(name) or "", (0, False))


def _below(raw: int, n: int) -> int:
    return ((raw >> 32) * n) >> 32


def augment(x_int8: np.ndarray, rng: Rng, crop_pad: int, flip: bool, per_batch: bool = False) -> np.ndarray:
    """RandomCrop(H x W, pad) with p = 0.5, then RandomHorizontalFlip with p = 0.5 (§5.2); returns int8.

    Draw order (every draw is ``rng.below(n)``, one 64-bit output each):

    per_batch=True (reference, Q8) -- once for the whole batch:
        if crop_pad > 0:  c = below(2);  if c == 1:  top = below(2*pad+1);  left = below(2*pad+1)
        if flip:          f = below(2)
      A crop pads all four sides of every image with the batch minimum value (over all samples and
      channels) and takes the H x W window at (top, left) of the padded image -- the same offset for
      every sample.  f == 1 mirrors every image along W.

    per_batch=False (default) -- the same sequence for each sample in turn, sample 0 first:
        for i in 0 .. B-1:
            if crop_pad > 0:  c_i = below(2);  if c_i == 1:  top_i = below(2*pad+1);  left_i = below(2*pad+1)
            if flip:          f_i = below(2)
      with pad value = that sample's minimum (over its channels).

    top/left are drawn only when the crop applies; (top, left) = (pad, pad) is the identity.
    """
    x = np.asarray(x_int8)
    if x.dtype != np.int8 or x.ndim != 4:
        raise DataError(f"augment needs int8 [B, C, H, W], got {x.dtype} of shape {list(x.shape)}")
    pad = int(crop_pad)
    if pad < 0:
        raise DataError(f"crop_pad must be >= 0, got {crop_pad}")
    b, _, h, w = x.shape
    if b == 0 or (pad == 0 and not flip):
        return x.copy()
    span = 2 * pad + 1
    per_draw = (3 if pad else 0) + (1 if flip else 0)  # most draws one decision can take

    # Draw the worst-case count in one vectorised call, use what the sequence consumes, rewind the rest.
    start = rng.state
    groups = 1 if per_batch else b
    raw = rng.next_u64(per_draw * groups).tolist()
    k = 0
    crop = [False] * groups
    tops = [pad] * groups
    lefts = [pad] * groups
    flips = [False] * groups
    for g in range(groups):
        if pad:
            crop[g] = _below(raw[k], 2) == 1
            k += 1
            if crop[g]:
                tops[g] = _below(raw[k], span)
                lefts[g] = _below(raw[k + 1], span)
                k += 2
        if flip:
            flips[g] = _below(raw[k], 2) == 1
            k += 1
    rng.state = (start + k * GAMMA) & MASK64

    out = x.copy()
    if per_batch:
        if crop[0]:
            padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=x.min())
            out = padded[:, :, tops[0]: tops[0] + h, lefts[0]: lefts[0] + w].copy()
        if flips[0]:
            out = out[:, :, :, ::-1].copy()
        return out
    sel = np.flatnonzero(crop)
    if sel.size:
        xs = x[sel]
        mins = xs.reshape(sel.size, -1).min(axis=1)
        padded = np.empty((sel.size, x.shape[1], h + 2 * pad, w + 2 * pad), dtype=np.int8)
        padded[...] = mins[:, None, None, None]
        padded[:, :, pad: pad + h, pad: pad + w] = xs
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # [S, C, span, span, h, w]
        out[sel] = windows[np.arange(sel.size), :, np.asarray(tops)[sel], np.asarray(lefts)[sel]]
    if flip:
        sel = np.flatnonzero(flips)
        if sel.size:
            out[sel] = out[sel][:, :, :, ::-1]
    return out
