"""The float fast paths are exact: GEMM carriers, tdiv on floats, and whole training runs vs pure int64."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nitro_mcu.trainer import arith, gemm
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.data import load_dataset, prepare
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


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
@pytest.mark.parametrize("limit, expect_kind", [(2**24, "f4"), (2**53, "f8")])
def test_matmul_exact_near_float_bounds(limit, expect_kind):
    rng = np.random.default_rng(limit % 1000)
    for _ in range(20):
        m, k, n = (int(v) for v in rng.integers(1, 40, 3))
        a_max = int(rng.integers(1, 300))
        b_max = (limit - 1) // (a_max * k)  # bound a_max*b_max*k just below the limit
        a = rng.integers(-a_max, a_max + 1, (m, k))
        b = rng.integers(-b_max, b_max + 1, (k, n))
        a[0, :] = a_max  # extreme values: every partial sum as large as the bound allows
        b[:, 0] = b_max
        r = gemm.matmul_exact(a, b, a_max=a_max, b_max=b_max)
        assert r.dtype.str[1:] == expect_kind
        assert (_as_int(r) == _ref_matmul(a, b)).all()


def test_matmul_exact_falls_back_to_int64():
    rng = np.random.default_rng(5)
    k = 16
    a = rng.integers(-(2**20), 2**20, (8, k))
    b = rng.integers(-(2**30), 2**30, (k, 6))
    a[0] = 2**20
    b[:, 0] = 2**30
    r = gemm.matmul_exact(a, b)  # bound 2**54 >= 2**53: the int64 path
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
        assert gemm.matmul_exact(a, b).dtype == np.int64
        assert gemm.exact_float_dtype(10) is None and gemm.split_shift(1, 1, 1) is None
    finally:
        gemm.FORCE_INT64 = old


def test_split_f32_product_exact():
    rng = np.random.default_rng(11)
    for _ in range(30):
        m, k, n = int(rng.integers(1, 300)), int(rng.integers(1, 150)), int(rng.integers(1, 40))
        a_max = 128
        b_max = int(rng.integers(1, 2**21))
        s = gemm.split_shift(a_max, b_max, k)
        if s is None:
            continue
        a = rng.integers(-a_max, a_max, (m, k))
        a[0] = -a_max
        b = rng.integers(-b_max, b_max + 1, (k, n))
        b[:, 0] = -b_max
        r = gemm.matmul_split_f32(a.astype(np.float32), b, s)
        assert r.dtype == np.float64
        assert (_as_int(r) == _ref_matmul(a, b)).all()


def test_split_f32_saturating_product_is_exact_below_2_24_and_saturates_above():
    rng = np.random.default_rng(12)
    seen_big = seen_small = 0
    for _ in range(40):
        m, k, n = int(rng.integers(1, 300)), int(rng.integers(1, 150)), int(rng.integers(1, 40))
        b_max = int(rng.integers(2**10, 2**18))
        s = gemm.split_shift(128, b_max, k)
        if s is None:
            continue
        a = rng.integers(-128, 128, (m, k))
        a[0] = -128
        b = rng.integers(-b_max, b_max + 1, (k, n))
        b[:, 0] = -b_max
        exact = _ref_matmul(a, b)
        z = gemm.matmul_split_f32_sat(a.astype(np.float32), b, s)
        assert z.dtype == np.float32
        got = _as_int(z)
        small = np.abs(exact) < 2**24
        assert (got[small] == exact[small]).all()
        assert ((np.sign(got[~small]) == np.sign(exact[~small])) & (np.abs(got[~small]) >= 2**24)).all()
        seen_big += int((~small).sum())
        seen_small += int(small.sum())
        # what the forward pass does with it: NITRO-Scaling with 128 * SF <= 2**24 gives the exact result
        sf = min(k * 256, 2**17)
        assert np.array_equal(L.scaling(z, sf), np.clip(arith.tdiv(exact.astype(np.int64), sf), -127, 127))
    assert seen_big > 1000 and seen_small > 1000  # both regimes were exercised


# ---- (2) tdiv on float carriers ---------------------------------------------------------------------------
def _tdiv_ref(n, d):
    q = abs(n) // d
    return q if n >= 0 else -q


def test_tdiv_float64_carrier():
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


def test_tdiv_float32_carrier_and_scaling():
    rng = np.random.default_rng(3)
    n = rng.integers(-(2**24) + 1, 2**24, 5000)
    for sd in (3, 256, 2304, 200704):
        assert arith.tdiv(n.astype(np.float32), sd).tolist() == [_tdiv_ref(int(a), sd) for a in n]
        ref = np.clip(arith.tdiv(n, sd), -127, 127).astype(np.int8)
        assert np.array_equal(L.scaling(n.astype(np.float32), sd), ref)
        assert np.array_equal(L.scaling(n.astype(np.float64), sd), ref)
        assert np.array_equal(L.scaling(n, sd), ref)


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


def test_relu_backward_float_matches_int():
    rng = np.random.default_rng(4)
    s = rng.integers(-127, 128, (50, 40)).astype(np.int8)
    s[0, :4] = [127, -127, 0, -1]
    delta = rng.integers(-(2**40), 2**40, s.shape)
    delta[1] = rng.integers(-9, 10, s.shape[1])
    for slope in (3, 4, 7):
        for asym in (True, False):
            ref = L.relu_backward(delta, s, slope, asym)
            got = L.relu_backward(delta.astype(np.float64), s, slope, asym)
            assert (_as_int(got) == ref.astype(object)).all()


# ---- (3) training runs: fast path == pure int64 ------------------------------------------------------------
@pytest.fixture(scope="module")
def batches():
    if any(MNIST_DIR.glob("train-images*")):
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
    """Initial weights scaled up, as after an epoch (forward weights in the thousands): exercises the
    float64 / split-float32 paths instead of the float32 one."""
    m = Model(preset(name), profile, weight_bits=bits, seed=1)
    lim = 2 ** (bits - 1) - 1
    return {k: np.clip(v.astype(np.int64) * factor, -lim, lim) for k, v in m.weights.items()}


@pytest.mark.parametrize("name", ["mlp1", "cnn_small", "mcu_cnn"])
@pytest.mark.parametrize("profile", ["default", "reference"])
@pytest.mark.parametrize("bits", [16, 32])
def test_training_bit_identical_to_int64(name, profile, bits, batches):
    steps = 6 if name == "mlp1" else 3
    # 1: fresh weights (float32 paths); 150: grown weights (float64 / split float32); 2**20: huge
    # weights whose bounds exceed 2**53 somewhere (int64 fallbacks inside the fast code).
    for factor in (1, 150) + ((2**20,) if bits == 32 else ()):
        w0 = _grown(name, profile, bits, factor)
        fast = _train(name, profile, bits, batches, steps, False, w0)
        ref = _train(name, profile, bits, batches, steps, True, w0)
        for k in ref:
            assert fast[k].dtype == ref[k].dtype, k
            assert np.array_equal(fast[k], ref[k]), (k, factor)


def test_grown_cnn_weights_take_the_saturating_split_path(batches, monkeypatch):
    """The bit-identity runs above cover matmul_split_f32_sat only if a conv block takes it: check it does."""
    calls = []
    real = gemm.matmul_split_f32_sat
    monkeypatch.setattr(gemm, "matmul_split_f32_sat", lambda *a: calls.append(a[0].shape) or real(*a))
    _train("cnn_small", "default", 32, batches, 2, False, _grown("cnn_small", "default", 32, 150))
    assert calls


@pytest.mark.parametrize("name", ["cnn_small", "mcu_cnn"])
@pytest.mark.parametrize("limit", [2**26, 2**34])
def test_fallbacks_inside_fast_path(name, limit, batches, monkeypatch):
    """A lowered float64 limit makes some products fall back to int64 mid-step: still bit-identical."""
    w0 = _grown(name, "default", 32, 150)
    ref = _train(name, "default", 32, batches, 3, True, w0)
    monkeypatch.setattr(gemm, "F64_EXACT", limit)
    fast = _train(name, "default", 32, batches, 3, False, w0)
    for k in ref:
        assert np.array_equal(fast[k], ref[k]), k
