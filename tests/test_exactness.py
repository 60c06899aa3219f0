"""The float fast paths are exact: GEMM carriers, tdiv on floats, and whole training runs vs pure int64."""
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


def _rows_with_chunk_sums(rng, n, k, kc, total):
    """Integer rows [n, k] whose every kc-wide chunk has |.|-sum exactly ``total`` (mixed signs, odd values)."""
    b = np.zeros((n, k), dtype=np.int64)
    for r in range(n):
        for c0 in range(0, k, kc):
            w = min(kc, k - c0)
            cut = np.sort(rng.choice(np.arange(1, total), w - 1, replace=False))
            parts = np.diff(np.concatenate([[0], cut, [total]]))
            b[r, c0:c0 + w] = parts * rng.choice([-1, 1], w)
    return b


def _candidate_widths(k):
    """The chunk widths l1_chunk_width may choose for K = k, widest first (restated from its docstring)."""
    groups = -(-k // gemm.CHUNK_FINE)
    pers = {-(-groups // c) for c in range(1, min(gemm.CHUNK_MAX, groups) + 1)}
    return [p * gemm.CHUNK_FINE for p in sorted(pers, reverse=True)]


def _ref_chunk_width(a_max, b):
    """l1_chunk_width in Python integers: the widest candidate with a_max * sum|b[n, chunk]| < 2**24 everywhere."""
    mag = np.abs(b.astype(object))
    k = b.shape[1]
    for kc in _candidate_widths(k):
        if all(a_max * int(mag[:, i:i + kc].sum(axis=1).max()) < 2**24 for i in range(0, k, kc)):
            return kc
    return None


@pytest.mark.parametrize("a_max, k, chunks", [(128, 784, 4), (128, 100, 3), (127, 200, 5), (127, 784, 10),
                                              (32767, 96, 2), (32767, 130, 7)])
def test_chunked_f32_exact_at_the_chunk_bound_and_refused_one_beyond(a_max, k, chunks):
    """Every kc-chunk of every row of W sums (in |.|) to one below 2**24 / a_max, inputs +-a_max with the signs
    of W: each chunk's partial sums climb to a_max * (chunk sum) < 2**24 and the product is exact, and that kc
    is the width chosen. One more in one chunk and kc is refused; for odd a_max the refused chunking really is
    wrong there (that chunk's dot product is an odd integer above 2**24, which float32 cannot hold)."""
    rng = np.random.default_rng(a_max + k)
    limit = -(-gemm.F32_EXACT // a_max)  # smallest chunk sum with a_max * sum >= 2**24
    kc = -(-k // (gemm.CHUNK_FINE * chunks)) * gemm.CHUNK_FINE
    assert kc in _candidate_widths(k)
    chunks = -(-k // kc)
    b = _rows_with_chunk_sums(rng, 6, k, kc, limit - 1)
    sign = np.where(b < 0, -1, 1)
    a = np.concatenate([a_max * sign, (a_max - 1) * sign[:2], rng.integers(-a_max, a_max + 1, (3, k))])
    a = a.astype(np.int32 if a_max > 128 else np.int16)
    b32 = b.astype(np.float32)
    assert gemm.l1_chunk_width(a_max, b32) == kc == _ref_chunk_width(a_max, b)
    ref = _ref_matmul(a, b.T)
    assert (_as_int(gemm.matmul_chunked_f32(a, b32, kc)) == ref).all()
    assert (ref[:6, :6].diagonal() == a_max * (limit - 1) * chunks).all()  # every chunk at the bound
    over = b.copy()
    over[2, kc - 1] += 1 if over[2, kc - 1] >= 0 else -1  # chunk 0 of row 2 now sums to exactly limit
    got = gemm.l1_chunk_width(a_max, over.astype(np.float32))
    assert got != kc and got == _ref_chunk_width(a_max, over)
    if got is not None:
        assert (_as_int(gemm.matmul_chunked_f32(a, over.astype(np.float32), got)) == _ref_matmul(a, over.T)).all()
    if a_max % 2 and limit % 2:
        assert a_max * limit > gemm.F32_EXACT and (a_max * limit) % 2
        wrong = gemm.matmul_chunked_f32(a, over.astype(np.float32), kc)  # what accepting kc would give
        assert _as_int(wrong)[2, 2] != _ref_matmul(a, over.T)[2, 2]
    with_force = gemm.FORCE_INT64
    gemm.FORCE_INT64 = True
    try:
        assert gemm.l1_chunk_width(a_max, b32) is None
    finally:
        gemm.FORCE_INT64 = with_force


def test_chunk_width_equals_the_integer_reference_near_the_bound():
    """Random W (some entries close to 2**24, so the float32 sums of |W| round) against the Python-int reference."""
    rng = np.random.default_rng(5)
    seen = set()
    for trial in range(300):
        a_max = int(rng.choice([1, 3, 127, 128, 32767, 32768]))
        k = int(rng.integers(1, 200))
        n = int(rng.integers(1, 6))
        scale = gemm.F32_EXACT / a_max / rng.uniform(1, 12) / max(1, k) * rng.uniform(0.5, 3)
        b = np.round(rng.uniform(-1, 1, (n, k)) * scale * rng.uniform(0, 2, (n, 1))).astype(np.int64)
        if trial % 10 == 0:
            b[0, rng.integers(k)] = (gemm.F32_EXACT - 1) * rng.choice([-1, 1])
        ref = _ref_chunk_width(a_max, b)
        assert gemm.l1_chunk_width(a_max, b.astype(np.float32)) == ref, (a_max, k, n)
        seen.add("refused" if ref is None else "widest" if ref == _candidate_widths(k)[0] else "narrower")
    assert seen == {"refused", "widest", "narrower"}


def test_chunk_sums_saturate_upwards():
    """|W| sums past 2**24 in float32 come out >= 2**24 (never rounded below the test), so such W is refused."""
    b = np.full((2, 64), 2**24 - 1, dtype=np.int64)
    b[1] = 1
    assert gemm.l1_chunk_width(1, b.astype(np.float32)) is None
    assert gemm.l1_chunk_width(1, b[1:].astype(np.float32)) == 64


def test_linear_scaled_takes_the_chunked_path_and_equals_int64(monkeypatch):
    rng = np.random.default_rng(21)
    x = rng.integers(-128, 128, (64, 784)).astype(np.int8)
    w = rng.integers(-2000, 2001, (100, 784)).astype(np.int32)  # bound 2e8: float32 over whole rows is not exact
    w[:, :40] = 0  # uneven chunk sums
    sf = L.scale_factor(784)
    calls = []
    real = gemm.matmul_chunked_f32
    monkeypatch.setattr(L, "matmul_chunked_f32", lambda *a: calls.append(a[2]) or real(*a))
    got = L.linear_scaled(x, w, sf)
    assert calls  # the chunked float32 path ran
    ref = np.clip(arith.tdiv(_ref_matmul(x, w.T).astype(np.int64), sf), -127, 127).astype(np.int8)
    assert np.array_equal(got, ref)
    monkeypatch.setattr(gemm, "FORCE_INT64", True)
    assert np.array_equal(L.linear_scaled(x, w, sf), ref)


def test_a_refused_chunk_test_is_skipped_for_a_while_then_retried_with_the_same_results(monkeypatch):
    rng = np.random.default_rng(22)
    x = rng.integers(-128, 128, (64, 784)).astype(np.int8)
    w_big = rng.integers(-20000, 20001, (100, 784)).astype(np.int32)  # no chunking into <= 10 chunks fits
    w_small = rng.integers(-2000, 2001, (100, 784)).astype(np.int32)  # chunks fit (see the test above)
    sf = L.scale_factor(784)
    tests, chunked = [], []
    real_width, real_chunked = gemm.l1_chunk_width, gemm.matmul_chunked_f32
    monkeypatch.setattr(L, "l1_chunk_width", lambda *a: tests.append(1) or real_width(*a))
    monkeypatch.setattr(L, "matmul_chunked_f32", lambda *a: chunked.append(1) or real_chunked(*a))
    memo = gemm.ChunkMemo()

    def ref(w):
        return np.clip(arith.tdiv(_ref_matmul(x, w.T).astype(np.int64), sf), -127, 127).astype(np.int8)

    assert np.array_equal(L.linear_scaled(x, w_big, sf, memo=memo), ref(w_big))
    assert len(tests) == 1 and not chunked  # tested, refused
    for _ in range(gemm.ChunkMemo.RETRY_AFTER):  # skipped: exact fallback even where chunks would now fit
        assert np.array_equal(L.linear_scaled(x, w_small, sf, memo=memo), ref(w_small))
    assert len(tests) == 1 and not chunked
    assert np.array_equal(L.linear_scaled(x, w_small, sf, memo=memo), ref(w_small))
    assert len(tests) == 2 and len(chunked) == 1  # retried, and taken
    assert np.array_equal(L.linear_scaled(x, w_small, sf, memo=memo), ref(w_small))
    assert len(tests) == 3 and len(chunked) == 2  # a test that passes is not skipped


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
    g = rng.integers(-g_bound, g_bound + 1, w.shape).astype(np.float64)
    g[0, 0], g[0, 1] = -g_bound, g_bound  # W - q at +-(top - decay term) exactly
    dt = np.int16 if bits == 16 else np.int32
    w = w.astype(dt)
    ref = optim.sgd_update(w, g.astype(np.int64), 512, 640, decay, bits)
    assert optim.fits_without_saturation(w_max, g_bound // lr_amp, decay, bits)
    taken = []
    real = optim.apply_quotient
    monkeypatch.setattr(optim, "apply_quotient", lambda *a: taken.append(1) or real(*a))
    fast = optim.sgd_update(w, g, 512, 640, decay, bits, w_max, g_bound)
    assert taken and fast.dtype == dt and np.array_equal(fast, ref)
    assert int(np.abs(ref.astype(np.int64)).max()) >= top - 2 * (w_max // decay if decay else 0)
    assert not optim.fits_without_saturation(w_max, g_bound // lr_amp + 1, decay, bits)
    g[0, 0] -= lr_amp  # beyond: the bounded route refuses, the float64 route saturates like int64
    taken.clear()
    over = optim.sgd_update(w, g, 512, 640, decay, bits, w_max, g_bound + lr_amp)
    assert not taken and np.array_equal(over, optim.sgd_update(w, g.astype(np.int64), 512, 640, decay, bits))
    if not decay:
        q = np.trunc(g / lr_amp).astype(np.int32)
        assert over[0, 0] == top and not np.array_equal(real(w, q, decay, w_max), over)  # would have wrapped


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
    for slope in (3, 4, 7, 8, 16):  # 4, 8, 16: the power-of-two factor table
        for asym in (True, False):
            ref = L.relu_backward(delta, s, slope, asym)
            got = L.relu_backward(delta.astype(np.float64), s, slope, asym)
            assert (_as_int(got) == ref.astype(object)).all()
            small = np.clip(delta, -(2**24 - 1), 2**24 - 1)  # float32 carriers: exact integers below 2**24
            small[2, :6] = [2**24 - 1, -(2**24 - 1), 1, -1, slope - 1, -(slope + 1)]
            got = L.relu_backward(small.astype(np.float32), s, slope, asym)
            assert got.dtype == np.float32 and (_as_int(got) == L.relu_backward(small, s, slope, asym)).all()


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


def test_grown_mlp_weights_take_the_chunked_and_bounded_paths(batches, monkeypatch):
    """The bit-identity runs above cover the chunked forward and the two-pass update only if mlp1 takes them."""
    from nitro_mcu.trainer import optim

    chunks, updates = [], []
    real_c, real_u = gemm.matmul_chunked_f32, optim.apply_quotient
    monkeypatch.setattr(L, "matmul_chunked_f32", lambda *a: chunks.append(a[2]) or real_c(*a))
    monkeypatch.setattr(optim, "apply_quotient", lambda *a: updates.append(a[0].shape) or real_u(*a))
    _train("mlp1", "default", 32, batches, 2, False, _grown("mlp1", "default", 32, 150))
    assert chunks and (100, 784) in updates


def test_grown_cnn_weights_take_the_saturating_split_path(batches, monkeypatch):
    """The bit-identity runs above cover matmul_split_f32_sat only if a conv block takes it: check it does."""
    calls = []
    real = gemm.matmul_split_f32_sat
    monkeypatch.setattr(gemm, "matmul_split_f32_sat", lambda *a: calls.append(a[0].shape) or real(*a))
    # 2**20: the first conv's K = 9 fits no float32 K-chunking (at 150 the others take the chunked path)
    _train("cnn_small", "default", 32, batches, 2, False, _grown("cnn_small", "default", 32, 2**20))
    assert calls


def test_grown_cnn_weights_take_the_chunked_conv_path(batches, monkeypatch):
    """The bit-identity runs above cover the float32 K-chunked conv forward only if mcu_cnn takes it."""
    calls = []
    real = gemm.matmul_chunked_f32
    monkeypatch.setattr(gemm, "matmul_chunked_f32", lambda *a: calls.append(a[0].shape[1]) or real(*a))
    _train("mcu_cnn", "default", 32, batches, 2, False, _grown("mcu_cnn", "default", 32, 150))
    assert 72 in calls and 144 in calls


def _conv_weights_with_row_l1(rng, f, c, k, group_sums):
    """Integer conv weights [f, c, k, k] whose every fine group of CHUNK_FINE columns (in im2col's column order
    for int8 input) has exactly the given sums of |w| (each term >= 1), signs random."""
    kk = c * k * k
    w = np.zeros((f, kk), np.int64)
    for o in range(f):
        for g, total in enumerate(group_sums):
            cut = np.sort(rng.choice(np.arange(1, total), gemm.CHUNK_FINE - 1, replace=False))
            w[o, g * gemm.CHUNK_FINE:(g + 1) * gemm.CHUNK_FINE] = np.diff(np.concatenate([[0], cut, [total]]))
    return L.conv_grad_from_cols(w * rng.choice([-1, 1], w.shape), (f, c, k, k), np.int8)


@pytest.mark.parametrize("group_sums, chunks", [
    ([20485] * 8 + [184365 - 8 * 20485], 1),      # 91 * row L1 = 2**24 - 1: one float32 GEMM
    ([20485] * 8 + [184366 - 8 * 20485], 2),      # one past it: two K-chunks
    ([80000] * 9, 5),                             # 5 chunks > CONV_CHUNKS_MAX: refused, the split GEMM runs
])
def test_conv_forward_chunked_at_the_actual_input_bound(group_sums, chunks, monkeypatch):
    """The conv forward proves its K-chunks with the batch's actual |x|max (91 here, the dtype bound is 128):
    exact at the bound, more chunks one past it, and the split product beyond CONV_CHUNKS_MAX chunks."""
    from nitro_mcu.trainer import blocks
    from nitro_mcu.trainer.profiles import get_profile

    rng = np.random.default_rng(chunks)
    blk = blocks.ConvBlock("c", 8, 4, 3, 1, 6, 6, 10, 10**6, get_profile("default"))
    w = _conv_weights_with_row_l1(rng, 4, 8, 3, group_sums)
    x = rng.integers(-91, 92, (3, 6, 6, 8)).astype(np.int8)
    x[0, 1:4, 1:4, :] = 91 * np.sign(w[0]).transpose(1, 2, 0)  # z[0, 2, 2, 0] = 91 * row L1
    widths, chunked, splits = [], [], []
    real_w, real_c, real_s = gemm.l1_chunk_width, gemm.matmul_chunked_f32, gemm.matmul_split_f32_sat
    monkeypatch.setattr(gemm, "l1_chunk_width", lambda *a: widths.append(real_w(*a)) or widths[-1])
    monkeypatch.setattr(gemm, "matmul_chunked_f32", lambda *a: chunked.append(a[2]) or real_c(*a))
    monkeypatch.setattr(gemm, "matmul_split_f32_sat", lambda *a: splits.append(1) or real_s(*a))
    z, cols = blk._forward_float(x, w, 128)
    ref = L.im2col(x, 3, 1).astype(np.int64) @ L.conv_weight_cols(w, x.dtype).T.astype(np.int64)
    ref = ref.reshape(z.shape)
    assert len(widths) == 1 and -(-72 // widths[0]) == chunks
    if chunks <= blocks.CONV_CHUNKS_MAX:
        assert not splits and len(chunked) == (chunks > 1)  # one chunk: a plain float32 GEMM
        assert int(ref[0, 2, 2, 0]) == 91 * sum(group_sums)
        assert (_as_int(z) == ref.astype(object)).all()
    else:
        assert splits and not chunked
    assert np.array_equal(L.scaling(z, blk.sf), L.scaling(ref, blk.sf))


@pytest.mark.parametrize("name", ["cnn_small", "mcu_cnn"])
@pytest.mark.parametrize("limit", [2**26, 2**34])
def test_fallbacks_inside_fast_path(name, limit, batches, monkeypatch):
    """A lowered float64 limit makes some products fall back to int64 mid-step: still bit-identical."""
    w0 = _grown(name, "default", 32, 150)
    ref = _train(name, "default", 32, batches, 3, True, w0)
    monkeypatch.setattr(gemm, "F64_EXACT", limit)
    from nitro_mcu.trainer import blocks

    refused = []
    real = blocks.pooled_grad
    monkeypatch.setattr(blocks, "pooled_grad", lambda *a: (lambda g: refused.append(g is None) or g)(real(*a)))
    fast = _train(name, "default", 32, batches, 3, False, w0)
    assert any(refused)  # the pooled conv gradient refused its float64 sum and the dense int64 route ran
    for k in ref:
        assert np.array_equal(fast[k], ref[k]), k



@pytest.mark.parametrize("dtype, limit", [(np.float32, 2**24), (np.float64, 2**53)])
@pytest.mark.parametrize("m, k, n", [(12544, 72, 16), (3136, 144, 32)])
def test_small_gemm_row_blocks_exact_at_the_carrier_bound(dtype, limit, m, k, n):
    """Row blocks (the conv forward's shapes, which do cut) equal the integer product at the carrier's bound."""
    from nitro_mcu.trainer import smallgemm

    assert smallgemm._pieces(m, k * n) > 1
    rng = np.random.default_rng(m + k)
    a_max = 91
    b_max = (limit - 1) // (a_max * k)
    a = rng.integers(-a_max, a_max + 1, (m, k))
    b = rng.integers(-b_max, b_max + 1, (k, n))
    a[0], b[:, 0] = a_max, b_max  # one output at |a|max * |b|max * K itself
    got = smallgemm.matmul_rows(a.astype(dtype), b.astype(dtype))
    assert got.dtype == dtype and np.array_equal(got.astype(np.int64), a @ b)
    assert got[0, 0] == a_max * b_max * k


@pytest.mark.parametrize("c, rows, k", [(16, 12544, 72), (32, 3136, 144)])
def test_small_gemm_inner_blocks_exact_at_the_float64_bound(c, rows, k):
    """Inner (row) blocks summed in float64, the conv weight gradient's shapes: exact at the 2**53 bound."""
    from nitro_mcu.trainer import smallgemm

    assert smallgemm._pieces(rows, c * k) > 1
    rng = np.random.default_rng(rows)
    x_max = 91
    d_max = (2**53 - 1) // (x_max * rows)
    d = rng.integers(-d_max, d_max + 1, (c, rows))
    x = rng.integers(-x_max, x_max + 1, (rows, k))
    d[0], x[:, 0] = d_max, x_max
    got = smallgemm.matmul_inner(d.astype(np.float64), x.astype(np.float64))
    assert np.array_equal(got.astype(np.int64), d @ x) and got[0, 0] == d_max * x_max * rows


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
