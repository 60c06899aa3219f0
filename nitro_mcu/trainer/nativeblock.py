"""Whole MLP block steps in one native call each (native/block.c): LinearBlock.forward, Head.step, LinearBlock.step.

The same integers as the NumPy code of blocks.py, which stays the reference (``gemm.FORCE_INT64``) and the fallback:
each function returns None where the library is not built, FORCE_INT64 is on, a dtype is not covered or the C side
declines (a product bound at or past 2**63), and the caller then runs its NumPy route from unchanged inputs.
"""
from __future__ import annotations

import ctypes
import sys
import threading
from functools import cache

import numpy as np

from . import gemm, intgemm
from .layers import RELU_MEAN
from .malloc import MMAP_THRESHOLD

_X = (np.dtype(np.int8), np.dtype(np.int16))  # activations: the input, NITRO-ReLU's int8, Dropout's int16
_W = (np.dtype(np.int16), np.dtype(np.int32))  # weights (weight_bits 16 or 32)
_addr = intgemm._addr


@cache
def _lib():
    so = intgemm.lib()
    if so is None:
        return None
    i64, p, ci = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    so.nb_forward.argtypes = [i64, i64, i64, p, ci, p, ci, i64, i64, i64, p, p]
    so.nb_head.argtypes = [i64, i64, i64, p, ci, p, ci, i64, p, p, ci, ci, p, p, p]
    so.nb_linear_step.argtypes = [i64, i64, i64, i64, p, ci, p, p, p, p, ci, i64, p, ci, i64, ci, p, p, p, p]
    so.nb_force.argtypes = [ci]
    so.nb_grad_panel.argtypes = [i64]
    so.nb_grad_panel.restype = i64
    for fn in (so.nb_head, so.nb_linear_step, so.nb_force):
        fn.restype = ci
    so.nb_forward.restype = i64
    return so


def force_avx512(on: bool | None) -> bool:
    """Pin block.c's loops to their AVX-512 or base clone for tests (None: the best this CPU has); False if this CPU
    cannot run the one asked for (or nothing is built)."""
    so = _lib()
    return so is not None and so.nb_force(-1 if on is None else int(on)) >= 0


def _on(x, w) -> bool:
    """The native route applies: built, not FORCE_INT64, activations and weights of covered dtypes."""
    return not gemm.FORCE_INT64 and x.dtype in _X and w.dtype in _W and _lib() is not None


def grad_panel_bytes(n: int | None) -> int:
    """Set the bytes of int64 gradient rows that block.c makes and consumes per panel, for tests (None:
    the default); returns the size in force (0 where nothing is built)."""
    so = _lib()
    return 0 if so is None else so.nb_grad_panel(n or 0)


@cache
def _update(lr_amp: int, decay_inv: int, weight_bits: int):
    """IntegerSGD's parameters as block.c's sgd reads them (intgemm.sgd_c's) -> (array, address), or None outside
    what the native update covers."""
    vals = intgemm.sgd_params(lr_amp, decay_inv, weight_bits)
    if vals is None:
        return None
    arr = np.array([v - (1 << 64) if v >= 2**63 else v for v in vals], dtype=np.int64)  # the bits of a uint64 magic
    return arr, _addr(arr)


def _upd(w, lr_amp, decay_inv, weight_bits):
    return _update(lr_amp, decay_inv, weight_bits) if weight_bits <= 8 * w.itemsize else None


def forward(x: np.ndarray, w: np.ndarray, sf: int, slope_inv: int | None):
    """LinearBlock.forward's (s, h, max|W|) for flat x [B, d_in] and W [d_out, d_in] (slope_inv None: Head.forward's,
    no NITRO-ReLU, h None), or None."""
    if not _on(x, w):
        return None
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    b, d_out = x.shape[0], w.shape[0]
    s = np.empty((b, d_out), dtype=np.int8)
    h = None if slope_inv is None else np.empty((b, d_out), dtype=np.int8)
    w_max = _lib().nb_forward(b, w.shape[1], d_out, _addr(x), x.itemsize, _addr(w), w.itemsize, sf, slope_inv or 0,
                              RELU_MEAN[slope_inv] if slope_inv else 0, _addr(s), None if h is None else _addr(h))
    return None if w_max < 0 else (s, h, w_max)


def head_step(x, w, sf, target, y_hat, wrap, lr_inv, decay_inv, weight_bits, propagate):
    """Head.step's (y_hat, new W, delta or None) for flat x [B, d], W [classes, d], target [B, classes], or None."""
    if not _on(x, w) or target.dtype != np.int64 or (y_hat is not None and y_hat.dtype != np.int8):
        return None
    upd = _upd(w, lr_inv, decay_inv, weight_bits)
    if upd is None:
        return None
    x, w, target = np.ascontiguousarray(x), np.ascontiguousarray(w), np.ascontiguousarray(target)
    b, (nc, d) = x.shape[0], w.shape
    have = y_hat is not None
    y = np.ascontiguousarray(y_hat) if have else np.empty((b, nc), dtype=np.int8)
    out = np.empty_like(w)
    delta = np.empty((b, d), dtype=np.int64) if propagate else None
    if not _lib().nb_head(b, d, nc, _addr(x), x.itemsize, _addr(w), w.itemsize, sf, _addr(target), _addr(y),
                          int(have), int(wrap), upd[1], _addr(out), None if delta is None else _addr(delta)):
        return None
    return y, out, delta


# Retired weight tensors at or past glibc's largest mmap threshold (below it, malloc reuses freed memory itself): a
# new tensor that size is a fresh mapping, zero-filled page by page as the update writes it (writing 36 MB took 5 ms
# into a fresh array, 2.6 ms into a reused one here), so the update writes into one of these once nothing else holds
# it: the caller's old weights are never overwritten while anyone can still see them.
_SPARE_MIN, _SPARES_PER_SHAPE = MMAP_THRESHOLD, 4
_spares: dict = {}
_spares_lock = threading.Lock()  # models trained in parallel threads share _spares: check and take as one step


def _held_once() -> int:
    """sys.getrefcount of a list's item that nothing else holds (the list and the call's argument)."""
    free = [np.empty(1)]
    return sys.getrefcount(free[0])


_HELD_ONCE = _held_once()


def _out_like(w: np.ndarray) -> np.ndarray:
    """An uninitialised array like w: a retired tensor nothing outside _spares holds, else a new one."""
    with _spares_lock:
        spares = _spares.get((w.shape, w.dtype.str), [])
        for i in range(len(spares)):
            if sys.getrefcount(spares[i]) == _HELD_ONCE:
                return spares.pop(i)
    return np.empty_like(w)


def _retire(w: np.ndarray) -> None:
    """Keep a replaced weight tensor as a future _out_like (used only once nothing else holds it)."""
    if w.nbytes >= _SPARE_MIN and w.flags.owndata and w.flags.c_contiguous and w.flags.writeable:
        with _spares_lock:
            spares = _spares.setdefault((w.shape, w.dtype.str), [])
            spares.append(w)
            del spares[:-_SPARES_PER_SHAPE]


def linear_step(block, weights, target, lr_inv, hp, quirks) -> bool:
    """LinearBlock.step in one call: both new weights stored in ``weights``; False (nothing changed) where the
    native route does not apply."""
    x, s, h, _ = block.cache
    name, head = block.name + ".fwd", block.head
    w, wh = weights[name], weights[head.name]
    if not _on(x, w) or wh.dtype != w.dtype or target.dtype != np.int64 or s.dtype != np.int8 or h.dtype != np.int8:
        return False
    upd_h = _upd(w, lr_inv, hp.head_decay_inv, hp.weight_bits)
    upd_w = _upd(w, lr_inv * hp.lr_amp_factor, hp.fwd_decay_inv, hp.weight_bits)
    if upd_h is None or upd_w is None:
        return False
    c = np.ascontiguousarray
    x, s, h, w, wh, target = c(x), c(s), c(h), c(w), c(wh), c(target)
    (d_out, d_in), nc = w.shape, wh.shape[0]
    w_out, wh_out = _out_like(w), _out_like(wh)
    if not _lib().nb_linear_step(len(x), d_in, d_out, nc, _addr(x), x.itemsize, _addr(s), _addr(h), _addr(w),
                                 _addr(wh), w.itemsize, head.sf, _addr(target), quirks.error_wrap_int8, hp.slope_inv,
                                 quirks.relu_grad_asymmetric_sat, upd_h[1], upd_w[1], _addr(wh_out), _addr(w_out)):
        return False
    weights[head.name], weights[name] = wh_out, w_out
    _retire(w)
    _retire(wh)
    return True
