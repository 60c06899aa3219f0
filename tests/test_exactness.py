"""The fast paths are exact: the products, the float64 divisions (tdiv of a float, the SGD fast paths), and whole
training runs of the native integer kernels against the pure NumPy int64 path."""
from __future__ import annotations


import numpy as np
import pytest

from nitro_mcu.trainer import arith, gemm
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.data import load_dataset, prepare
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model
from paths import dataset_dir

MNIST_DIR = dataset_dir("mnist")


def _ref_matmul(a, b):
    """Python-int reference product (object arrays never overflow)."""
    return np.array(a.astype(object) @ b.astype(object), dtype=object)


def _as_int(x):
    x = np.asarray(x)
    if x.dtype.kind == "f":
        assert np.all(np.abs(x) < 2**53) and np.all(x == np.trunc(x))
        return x.astype(np.int64).astype(object)
    return x.astype(object)


# ---- (1) matmul_exact ------------------------------------------------------------------------------------
def test_matmul_exact_of_wide_operands_equals_python_ints():
    rng = np.random.default_rng(5)
    k = 16
    a = rng.integers(-(2**20), 2**20, (8, k))
    b = rng.integers(-(2**30), 2**30, (k, 6))
    a[0] = 2**20
    b[:, 0] = 2**30
    r = gemm.matmul_exact(a, b)  # bound 2**54: limbs on both sides in the native kernel
    assert r.dtype == np.int64
    assert (_as_int(r) == _ref_matmul(a, b)).all()
    with pytest.raises(OverflowError):
        gemm.matmul_exact(np.full((1, 4), 2**31), np.full((4, 1), 2**31))


def test_matmul_exact_force_int64():
    a = np.arange(12).reshape(3, 4)
    b = np.arange(8).reshape(4, 2)
    old = gemm.FORCE_INT64
    gemm.FORCE_INT64 = True
    try:
        assert gemm.matmul_exact(a, b).dtype == np.int64 and np.array_equal(gemm.matmul_exact(a, b), a @ b)
    finally:
        gemm.FORCE_INT64 = old


def _sgd_int64(w, g, lr_amp, decay, bits):
    """The update written out in int64 (docs/algorithm.md §4.1): the reference of the fast routes."""
    d = arith.tdiv(g.astype(np.int64), lr_amp) + (arith.tdiv(w.astype(np.int64), decay) if decay else 0)
    return arith.saturate(w.astype(np.int64) - d, bits).astype(w.dtype)


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("decay", [12000, 0])
def test_bounded_sgd_update_at_the_storage_bound(bits, decay, monkeypatch):
    """The two-pass update (no saturation: |W| + |q| + |decay| <= 2**(bits-1) - 1) equals the int64 path with
    W + q at the storage bound; one beyond the bound it is not taken (and, without decay, taking it would wrap)."""
    from nitro_mcu.trainer import optim

    rng = np.random.default_rng(bits + decay)
    top = 2 ** (bits - 1) - 1
    lr_amp = 327680
    w_max = top // 2
    w = rng.integers(-w_max, w_max + 1, (30, 40))
    w[0, 0], w[0, 1] = w_max, -w_max
    q_room = top - w_max - (w_max // decay if decay else 0)  # the largest |tdiv(G, lr*amp)| that still fits
    g_bound = q_room * lr_amp + lr_amp - 1
    g = rng.integers(-g_bound, g_bound + 1, w.shape)
    g[0, 0], g[0, 1] = -g_bound, g_bound  # W - q at +-(top - decay term) exactly
    dt = np.int16 if bits == 16 else np.int32
    w = w.astype(dt)
    ref = _sgd_int64(w, g, lr_amp, decay, bits)
    assert optim.fits_without_saturation(w_max, g_bound // lr_amp, decay, bits)
    taken = []
    real = optim.apply_quotient
    monkeypatch.setattr(optim, "apply_quotient", lambda *a: taken.append(1) or real(*a))
    monkeypatch.setattr(optim.intgemm, "sgd", lambda *a: None)  # the NumPy routes (the C one: test_intgemm.py)
    fast = optim.sgd_update(w, g, 512, 640, decay, bits, w_max, g_bound)
    assert taken and fast.dtype == dt and np.array_equal(fast, ref)
    assert int(np.abs(ref.astype(np.int64)).max()) >= top - 2 * (w_max // decay if decay else 0)
    assert not optim.fits_without_saturation(w_max, g_bound // lr_amp + 1, decay, bits)
    g[0, 0] -= lr_amp  # beyond: the bounded route refuses, the float64 route saturates like int64
    taken.clear()
    over = optim.sgd_update(w, g, 512, 640, decay, bits, w_max, g_bound + lr_amp)
    assert not taken and np.array_equal(over, _sgd_int64(w, g, lr_amp, decay, bits))
    if not decay:
        q = np.trunc(g / lr_amp).astype(np.int32)
        assert over[0, 0] == top and not np.array_equal(real(w, q, decay, w_max), over)  # would have wrapped


# ---- (2) tdiv of a float (the float64 divisions of docs/arithmetic.md §2.1) --------------------------------
def _tdiv_ref(n, d):
    q = abs(n) // d
    return q if n >= 0 else -q


def test_tdiv_of_float64_integers_below_2_53():
    rng = np.random.default_rng(2)
    top = 2**53 - 1
    n = np.concatenate([rng.integers(-top, top + 1, 4000), [top, -top, 0, 1, -1]])
    d = rng.integers(1, 2**31, n.size)
    d[:500] = rng.integers(1, 10, 500)
    n[500:1000] = (rng.integers(-(2**20), 2**20, 500) * d[500:1000])  # exact multiples
    n[1000:1500] = n[500:1000] + np.where(n[500:1000] < 0, 1, -1)  # just inside a multiple
    n[1500:1600] = -(d[1500:1600] - 1)  # small negatives: truncate to 0
    q = arith.tdiv(n.astype(np.float64), d)
    assert q.dtype == np.int64
    assert q.tolist() == [_tdiv_ref(int(a), int(b)) for a, b in zip(n, d)]
    for sd in (1, 3, 7, 256, 1000, 327680):  # scalar divisors
        assert arith.tdiv(n.astype(np.float64), sd).tolist() == [_tdiv_ref(int(a), sd) for a in n]


@pytest.mark.parametrize("shape", [(64, 28, 28, 8), (4096, 3), (2, 2049, 1), (4097,), (3, 5)])
def test_relu_forward_tables_match_the_formula(shape):
    """The one- and two-element lookup tables (big even maps take the pair table) equal docs/algorithm.md §2.4."""
    for slope in L.RELU_MEAN:
        s = np.random.default_rng(slope).integers(-128, 128, size=shape).astype(np.int8)
        s.reshape(-1)[:2] = [-128, 127]
        s64 = s.astype(np.int64)
        ref = np.maximum(s64, 0) + arith.tdiv(np.clip(s64, -127, 0), slope) - L.RELU_MEAN[slope]
        got = L.relu_forward(s, slope)
        assert got.shape == s.shape and got.dtype == np.int8 and np.array_equal(got, ref)
        assert np.array_equal(L.relu_forward(s.astype(np.int16), slope), ref)


# ---- (3) training runs: fast path == pure int64 ------------------------------------------------------------
@pytest.fixture(scope="module")
def batches():
    if MNIST_DIR is not None:
        ds = load_dataset("mnist", MNIST_DIR)
    else:
        ds = load_dataset("bundled")
    data = prepare(ds, 0, val_size=0)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data.x_train))[: 16 * 32]
    return [(data.x_train[idx[i:i + 32]], data.y_train[idx[i:i + 32]]) for i in range(0, idx.size, 32)]


def _train(name, profile, bits, batches, steps, force, weights=None, lr_inv=512):
    old = gemm.FORCE_INT64
    gemm.FORCE_INT64 = force
    try:
        m = Model(preset(name), profile, weight_bits=bits, seed=1, weights=weights)
        for x, y in batches[:steps]:
            m.train_step(x, y, lr_inv)
        return m.weights
    finally:
        gemm.FORCE_INT64 = old


def _grown(name, profile, bits, factor):
    """Initial weights scaled up, as after an epoch (forward weights in the thousands) or far beyond: the kernels'
    limbs and the routes for wide operands."""
    m = Model(preset(name), profile, weight_bits=bits, seed=1)
    lim = 2 ** (bits - 1) - 1
    return {k: np.clip(v.astype(np.int64) * factor, -lim, lim) for k, v in m.weights.items()}


@pytest.mark.parametrize("name", ["mlp1", "cnn_small", "mcu_cnn"])
@pytest.mark.parametrize("profile", ["default", "reference"])
@pytest.mark.parametrize("bits", [16, 32])
def test_training_bit_identical_to_int64(name, profile, bits, batches):
    steps = 6 if name == "mlp1" else 3
    # 1: fresh weights (one limb, scaling fused into the kernel); 150: grown weights (limbs past 2**15); 2**20:
    # huge weights (several limbs, errors past 2**31: the portable pooled gradient, int64 SGD).
    for factor in (1, 150) + ((2**20,) if bits == 32 else ()):
        w0 = _grown(name, profile, bits, factor)
        fast = _train(name, profile, bits, batches, steps, False, w0)
        ref = _train(name, profile, bits, batches, steps, True, w0)
        for k in ref:
            assert fast[k].dtype == ref[k].dtype, k
            assert np.array_equal(fast[k], ref[k]), (k, factor)


@pytest.mark.parametrize("shape, kh, kw, oh, ow, top, left", [
    ((5, 28, 28, 8), 4, 4, 7, 7, 0, 0), ((5, 14, 14, 16), 4, 2, 4, 7, 1, 0), ((5, 7, 7, 32), 2, 2, 4, 4, 1, 1),
    ((3, 7, 7, 5), 4, 2, 2, 4, 2, 1), ((3, 7, 7, 5), 3, 3, 3, 3, 1, 1), ((2, 9, 6, 3), 3, 2, 3, 3, 0, 0)])
@pytest.mark.parametrize("pad_value", [L.PAD_NEG_INF, 0])
def test_pool_argmax_keys_equal_the_compare_loop(shape, kh, kw, oh, ow, top, left, pad_value):
    """The packed-key max-pool (int8 maps) picks the same maxima and first argmax as the compare-and-move loop
    (taken for int32 maps), on maps full of ties, padded or not."""
    rng = np.random.default_rng(kh * 10 + kw)
    x = np.clip(rng.integers(-80, 110, shape), -67, 91).astype(np.int8)
    calls = []
    real = L._pool_argmax_keys
    try:
        L._pool_argmax_keys = lambda *a: calls.append(1) or real(*a)
        best, idx = L.maxpool_forward(x, kh, kw, oh, ow, top, left, pad_value, with_idx=True)
    finally:
        L._pool_argmax_keys = real
    ref_best, ref_idx = L.maxpool_forward(x.astype(np.int32), kh, kw, oh, ow, top, left, pad_value, with_idx=True)
    assert calls and best.dtype == np.int8
    assert np.array_equal(best, ref_best) and np.array_equal(idx, ref_idx)


@pytest.mark.parametrize("c, dtype, pad, by_pixel", [
    (1, np.int8, 1, False), (3, np.int8, 1, False), (4, np.int8, 0, True), (8, np.int8, 1, True),
    (16, np.int8, 1, True), (6, np.int16, 1, True), (3, np.int16, 0, False)])
def test_im2col_column_orders_match_the_weights(c, dtype, pad, by_pixel):
    """Whole-pixel (ky, kx, c) and value-by-value (c, ky, kx) im2col orders: the conv forward and the weight
    gradient equal a direct cross-correlation either way."""
    rng = np.random.default_rng(c)
    b, h, w_, f, k = 2, 6, 5, 3, 3
    x = rng.integers(-100, 100, (b, h, w_, c)).astype(dtype)
    w = rng.integers(-50, 50, (f, c, k, k))
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = h + 2 * pad - k + 1, w_ + 2 * pad - k + 1
    win = np.stack([xp[:, ky:ky + ho, kx:kx + wo, :] for ky in range(k) for kx in range(k)], -1)  # [b,ho,wo,c,kk]
    z_ref = np.einsum("bijcq,fcq->bijf", win, w.reshape(f, c, k * k))
    cols = L.im2col(x, k, pad)
    assert cols.dtype == dtype and L.cols_by_pixel(c, dtype) == by_pixel
    assert np.array_equal(L.conv_forward_cols(cols, w, b, ho, wo), z_ref)
    delta = rng.integers(-9, 9, (b, ho, wo, f))
    g_ref = np.einsum("bijf,bijcq->fcq", delta, win).reshape(f, c, k, k)
    assert np.array_equal(L.conv_grad_cols(delta, cols, w.shape), g_ref)
