"""Local-loss blocks, the output layer and the between-block layers (docs/algorithm.md §3).

Each trainable piece owns its weights by name and knows its hyper-parameters (SF, amp, decay); the
model strings them together.  ``forward(train=True)`` caches what the block step needs; ``step``
performs the local update (head first, with pre-update head weights for the back-propagated error).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import gemm, nativeblock
from . import layers as L
from .arith import max_abs, wrap_int8
from .convgrad import pooled_grad
from .optim import sgd_update


@dataclass
class Hyper:
    lr_amp_factor: int
    fwd_decay_inv: int
    head_decay_inv: int
    slope_inv: int
    weight_bits: int


def output_error(y_hat: np.ndarray, target: np.ndarray, wrap: bool) -> np.ndarray:
    """e = y_hat - y; with Q1 it wraps to int8 like the reference (-159 -> +97)."""
    e = y_hat.astype(np.int64) - target
    return wrap_int8(e) if wrap else e


@dataclass
class HeadPool:
    """The conv-head max-pool chosen by the pred_decoder_dim rule (docs/algorithm.md §3.2)."""

    kh: int
    kw: int
    ph: int
    pw: int
    oh: int
    ow: int
    top: int
    left: int


def head_pool_rule(c_out: int, h_out: int, w_out: int, d_lr: int, one_sided: bool) -> HeadPool | None:
    kh = kw = 1
    hh, wh = h_out, w_out
    d = c_out * hh * wh
    while d > d_lr and kh < h_out:
        kh *= 2
        hh = -(-h_out // kh)
        d = c_out * hh * wh
        if d > d_lr:
            kw *= 2
            wh = -(-w_out // kw)
            d = c_out * hh * wh
    if kh == 1 and kw == 1:
        return None
    ph = (kh * (hh - h_out // kh)) // 2
    pw = (kw * (wh - w_out // kw)) // 2
    oh, top = L.pool_geometry(h_out, kh, ph, one_sided, hh)
    ow, left = L.pool_geometry(w_out, kw, pw, one_sided, wh)
    return HeadPool(kh, kw, ph, pw, oh, ow, top, left)


class Head:
    """IntegerLinear -> Scaling, trained with the local error (also the model's output layer)."""

    def __init__(self, name: str, d_in: int, n_classes: int):
        self.name, self.d_in, self.n_classes = name, d_in, n_classes
        self.sf = L.scale_factor(d_in)

    def forward(self, w: np.ndarray, x: np.ndarray, w_max: int | None = None) -> np.ndarray:
        native = nativeblock.forward(x, w, self.sf, None)
        return native[0] if native is not None else L.linear_scaled(x, w, self.sf, w_max)

    def step(self, weights, x, target, lr_inv, decay_inv, hp: Hyper, wrap: bool, propagate: bool, y_hat=None):
        """Local step on flattened input x -> (y_hat, delta_in or None, a bound on |delta_in|).

        ``y_hat`` may be passed when the forward pass already computed it with these weights.
        """
        w = weights[self.name]
        native = nativeblock.head_step(x, w, self.sf, target, y_hat, wrap, lr_inv, decay_inv, hp.weight_bits, propagate)
        if native is not None:
            weights[self.name] = native[1]
            return native[0], native[2], 0 if native[2] is None else max_abs(native[2])
        w_max = max_abs(w)
        if y_hat is None:
            y_hat = self.forward(w, x, w_max)
        e = output_error(y_hat, target, wrap)
        e_max = max_abs(e)
        d_bound = e_max * w_max * self.n_classes
        delta = L.matmul_exact(e, w, a_max=e_max, b_max=w_max) if propagate else None  # pre-update weights
        x_max = L.abs_bound(x)
        g = L.matmul_exact(e.T, x, a_max=e_max, b_max=x_max)
        weights[self.name] = sgd_update(w, g, lr_inv, 1, decay_inv, hp.weight_bits, w_max, e_max * x_max * len(x))
        return y_hat, delta, d_bound


class LinearBlock:
    kind = "linear"

    def __init__(self, name: str, d_in: int, d_out: int, n_classes: int):
        self.name, self.d_in, self.d_out = name, d_in, d_out
        self.fan_in = d_in
        self.sf = L.scale_factor(d_in)
        self.head = Head(name + ".head", d_out, n_classes)
        self.amp_scale = 1
        self.cache = None

    def param_shapes(self):
        return {self.name + ".fwd": (self.d_out, self.d_in), self.head.name: (self.head.n_classes, self.d_out)}

    def forward(self, weights, x, hp: Hyper, train: bool):
        x = x.reshape(x.shape[0], -1)
        w = weights[self.name + ".fwd"]
        native = nativeblock.forward(x, w, self.sf, hp.slope_inv)
        if native is not None:
            s, h, w_max = native
        else:
            w_max = max_abs(w)
            s = L.linear_scaled(x, w, self.sf, w_max)
            h = L.relu_forward(s, hp.slope_inv)
        if train:
            self.cache = (x, s, h, w_max)
        return h

    def head_input(self, h):
        return h

    def step(self, weights, target, lr_inv, hp: Hyper, quirks):
        if nativeblock.linear_step(self, weights, target, lr_inv, hp, quirks):
            return
        x, s, h, w_max = self.cache
        _, delta, d_max = self.head.step(weights, h, target, lr_inv, hp.head_decay_inv, hp, quirks.error_wrap_int8,
                                         True)
        delta = L.relu_backward(delta, s, hp.slope_inv, quirks.relu_grad_asymmetric_sat, d_max)
        name = self.name + ".fwd"
        x_max = L.abs_bound(x)
        w = weights[name]
        if quirks.cnn_fc_double_update:
            w_max = max_abs(w)  # Q2 steps twice per batch: the bound cached by forward may be stale
        # |delta|'s own maximum, not the worst case d_max: mostly below 2**15, where the product takes delta whole
        g = L.matmul_exact(delta.T, x, a_max=max_abs(delta), b_max=x_max)
        weights[name] = sgd_update(w, g, lr_inv, hp.lr_amp_factor, hp.fwd_decay_inv, hp.weight_bits, w_max,
                                   d_max * x_max * len(x))


class ConvBlock:
    kind = "conv"

    def __init__(self, name, c_in, c_out, k, pad, h_in, w_in, n_classes, d_lr, quirks):
        self.name, self.c_in, self.c_out, self.k, self.pad = name, c_in, c_out, k, pad
        self.h_in, self.w_in = h_in, w_in
        self.h_out, self.w_out = h_in + 2 * pad - k + 1, w_in + 2 * pad - k + 1
        if self.h_out < 1 or self.w_out < 1:
            raise ValueError(f"{name}: kernel {k} with padding {pad} does not fit a {h_in}x{w_in} input")
        self.fan_in = c_in * k * k
        self.sf = L.scale_factor(self.fan_in)
        self.pool = head_pool_rule(c_out, self.h_out, self.w_out, d_lr, quirks.maxpool_pad_one_sided)
        oh, ow = (self.pool.oh, self.pool.ow) if self.pool else (self.h_out, self.w_out)
        self.head = Head(name + ".head", c_out * oh * ow, n_classes)
        kk = (self.pool.kh * self.pool.kw) if self.pool else 1
        self.amp_scale = (self.h_out * self.w_out) // kk if quirks.conv_amp_adjust else 1
        self.pad_value = 0 if quirks.maxpool_pad_zero else L.PAD_NEG_INF
        p = self.pool  # does every head-pool window hold a real cell (first and last windows checked)?
        self.pool_windows_real = p is None or (
            p.top < p.kh and p.left < p.kw
            and (p.oh - 1) * p.kh - p.top < self.h_out and (p.ow - 1) * p.kw - p.left < self.w_out)
        self.cache = None

    @property
    def out_shape(self):
        return (self.c_out, self.h_out, self.w_out)

    def param_shapes(self):
        return {
            self.name + ".fwd": (self.c_out, self.c_in, self.k, self.k),
            self.head.name: (self.head.n_classes, self.head.d_in),
        }

    def forward(self, weights, x, hp: Hyper, train: bool):
        """x and the result are NHWC (the model converts at its edges; semantics stay NCHW/C-order)."""
        b = x.shape[0]
        w = weights[self.name + ".fwd"]
        x_max = L.dtype_bound(x)
        cols = L.im2col(x, self.k, self.pad)
        s = L.conv_scaled_cols(cols, w, self.sf, b, self.h_out, self.w_out, max_abs(x) if x_max is None else x_max)
        h = L.relu_forward(s, hp.slope_inv)
        if train:
            self.cache = (cols, s, h, x_max)
        return h

    def head_input(self, h, with_idx=False):
        """Pool (if any), then flatten in C order (c, i, j) as the reference does."""
        if self.pool is None:
            out, idx = h, None
        else:
            p = self.pool
            out, idx = L.maxpool_forward(h, p.kh, p.kw, p.oh, p.ow, p.top, p.left, self.pad_value, with_idx)
        flat = out.transpose(0, 3, 1, 2).reshape(out.shape[0], -1)
        return (flat, idx) if with_idx else flat

    def step(self, weights, target, lr_inv, hp: Hyper, quirks):
        cols, s, h, x_max = self.cache
        xh, idx = self.head_input(h, with_idx=True)
        _, delta, d_max = self.head.step(weights, xh, target, lr_inv, hp.head_decay_inv, hp, quirks.error_wrap_int8,
                                         True)
        name = self.name + ".fwd"
        w = weights[name]
        amp = hp.lr_amp_factor * self.amp_scale
        if self.pool is not None and not gemm.FORCE_INT64:
            grad = pooled_grad(self.pool, self.pad_value, self.pool_windows_real, delta, d_max, idx, s, cols,
                               x_max if x_max is not None else max_abs(cols), hp.slope_inv,
                               quirks.relu_grad_asymmetric_sat)
            grad = L.conv_grad_from_cols(grad, w.shape, cols.dtype)
        else:
            grad = self._dense_grad(delta, idx, s, cols, x_max, hp, quirks, w.shape)
        weights[name] = sgd_update(w, grad, lr_inv, amp, hp.fwd_decay_inv, hp.weight_bits)

    def _dense_grad(self, delta, idx, s, cols, x_max, hp, quirks, w_shape):
        """Scatter through the pool, NITRO-ReLU backward, then G = delta^T @ cols (docs/algorithm.md §2.2)."""
        b = s.shape[0]
        if self.pool is None:
            delta = delta.reshape(b, self.c_out, self.h_out, self.w_out).transpose(0, 2, 3, 1)
        else:
            p = self.pool
            delta = delta.reshape(b, self.c_out, p.oh, p.ow).transpose(0, 2, 3, 1)
            delta = L.maxpool_backward(delta, idx, (b, self.h_out, self.w_out), p.kh, p.kw, p.top, p.left)
        delta = L.relu_backward(np.ascontiguousarray(delta), s, hp.slope_inv, quirks.relu_grad_asymmetric_sat)
        return L.conv_grad_cols(delta, cols, w_shape, b_max=x_max)


class MaxPool:
    """Between-block pool (kernel = stride, no padding, trailing rows dropped); never back-propagates."""

    def __init__(self, k: int, s: int, c: int, h: int, w: int):
        if k != s:
            raise ValueError(f"maxpool kernel {k} != stride {s}: only kernel = stride is supported")
        if h // k < 1 or w // k < 1:
            raise ValueError(f"maxpool {k}x{k} does not fit a {h}x{w} map")
        self.k, self.c, self.h_in, self.w_in = k, c, h, w
        self.h_out, self.w_out = h // k, w // k

    @property
    def out_shape(self):
        return (self.c, self.h_out, self.w_out)

    def forward(self, x):
        y, _ = L.maxpool_forward(x, self.k, self.k, self.h_out, self.w_out, 0, 0, L.PAD_NEG_INF)
        return y


class Dropout:
    def __init__(self, site: str, rate_permille: int):
        self.site, self.rate = site, rate_permille

    def forward(self, x, rng, train: bool, mask_hook=None, nhwc: bool = False):
        """Masks are drawn in C order of the NCHW (or [B, features]) tensor, whatever the layout."""
        if not train:
            return x
        shape = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape
        mask = mask_hook(self.site, shape) if mask_hook else rng.keep_mask(self.rate, shape)
        if nhwc:
            mask = mask.transpose(0, 2, 3, 1)
        return L.dropout_forward(x, mask, self.rate)
