"""Whole MLP block steps in native code (nitro_mcu/trainer/nativeblock.py, native/block.c) equal the NumPy int64
reference (``gemm.FORCE_INT64``) bit for bit: every MLP preset's block shapes on random operands, and at the bounds
(saturating scaling, every NITRO-ReLU input, update divisors and saturation, the widest errors, int16 inputs), with
the error-wrap and ReLU-saturation quirks honoured; past int64 the native step declines and changes nothing."""
from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest

from nitro_mcu.spec import PRESETS, preset
from nitro_mcu.trainer import gemm, intgemm, nativeblock
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.blocks import Head, Hyper, LinearBlock
from nitro_mcu.trainer.network import Model

if intgemm.lib() is None:
    pytest.skip("the native kernels are not built here (no C compiler); tests/test_exactness.py covers the NumPy "
                "int64 path", allow_module_level=True)

# (GEMM kernel variant, block.c's AVX-512 clones): every variant this CPU runs, base loops with the portable kernel
SETTINGS = [(v, v != "portable") for v in intgemm.VARIANTS
            if intgemm.force_variant(v) and nativeblock.force_avx512(v != "portable")]
intgemm.force_variant(None)
nativeblock.force_avx512(None)


@pytest.fixture(params=SETTINGS, ids=[v for v, _ in SETTINGS])
def setting(request):
    v, v4 = request.param
    assert intgemm.force_variant(v) and nativeblock.force_avx512(v4)
    yield v
    intgemm.force_variant(None)
    nativeblock.force_avx512(None)


def _quirks(wrap=False, asym=False):
    return SimpleNamespace(error_wrap_int8=wrap, relu_grad_asymmetric_sat=asym, cnn_fc_double_update=False)


def _both(fn):
    """fn() on the native route, then on the NumPy int64 reference."""
    out = []
    for force in (False, True):
        old, gemm.FORCE_INT64 = gemm.FORCE_INT64, force
        try:
            out.append(fn())
        finally:
            gemm.FORCE_INT64 = old
    return out


def _block_step(block, weights, cache, target, lr_inv, hp, quirks):
    """LinearBlock.step from a given cache on a copy of the weights -> (new weights, whether the native step ran)."""
    w = {k: weights[k].copy() for k in (block.name + ".fwd", block.head.name)}
    block.cache = cache
    if not gemm.FORCE_INT64:
        ran = nativeblock.linear_step(block, w, target, lr_inv, hp, quirks)
        return w, ran
    block.step(w, target, lr_inv, hp, quirks)
    return w, False


def _assert_same(a: dict, b: dict):
    for k in b:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


# mlp4 (3072 -> 3 x 3000) trains both ways in tests/test_intgemm.py's preset test, on the native blocks too; its int64
# reference update alone takes seconds per block, so it is not repeated here for every variant
MLPS = sorted(n for n in PRESETS if preset(n)["kind"] == "mlp" and n != "mlp4")


@cache
def _grown(name):
    """The preset's model with its initial weights grown 40-fold (clipped to the storage width), built once."""
    spec = preset(name)
    m = Model(spec, "default", weight_bits=spec.get("weight_bits", 32), seed=1)
    lim = 2 ** (m.weight_bits - 1) - 1
    return m, {k: np.clip(v.astype(np.int64) * 40, -lim, lim).astype(v.dtype) for k, v in m.weights.items()}


@pytest.mark.parametrize("name", MLPS)
def test_every_mlp_preset_block_forward_and_step_equal_int64_on_random_operands(setting, name):
    """Each block of the preset (its shapes, hyper-parameters and quirks), forward then step, and the output layer's
    step, on random grown weights, int8 inputs (int16 behind a Dropout) and one-hot targets."""
    spec = preset(name)
    m, weights = _grown(name)
    rng = np.random.default_rng(7)
    batch = 9
    target = m.one_hot(rng.integers(0, m.active_classes, batch))
    for i, b in enumerate(m.blocks):
        x = rng.integers(-128, 128, (batch, b.d_in)).astype(np.int8)
        if spec.get("dropout") and i:
            x = (x.astype(np.int16) * 11)  # a Dropout output (int16, up to 127 * R_p / 1000)
        got, want = _both(lambda: (b.forward(weights, x, m.hp, True), b.cache)[1])
        for g, w in zip(got, want):
            assert np.array_equal(np.asarray(g), np.asarray(w))
        assert nativeblock.forward(x, weights[b.name + ".fwd"], b.sf, m.hp.slope_inv) is not None
        (w_nat, ran), (w_ref, _) = _both(lambda: _block_step(b, weights, want, target, 64, m.hp, m.quirks))
        assert ran
        _assert_same(w_nat, w_ref)
    h = rng.integers(-128, 128, (batch, m.output.d_in)).astype(np.int8)
    y_hat, y_ref = _both(lambda: m.output.forward(weights["output"], h))
    assert np.array_equal(y_hat, y_ref)
    assert nativeblock.forward(h, weights["output"], m.output.sf, None)[1] is None
    (w_nat, nat), (w_ref, ref) = _both(lambda: _head_step(m.output, weights, h, target, m.hp, y_hat, False))
    assert nat[1] is None and ref[1] is None and np.array_equal(nat[0], ref[0])
    _assert_same(w_nat, w_ref)


@pytest.mark.parametrize("w_max", [20000, 32767])
def test_forward_past_one_int32_chunk_reads_w_rows_in_place_and_equals_int64(setting, w_max):
    """|x| <= 128, |W| up to 2**15 - 1 over d_in = 1 000: no limbs, but one int32 chunk (419 K-pairs at 20 000, 256
    at 32 767) does not cover K, so the forward multiplies W's int16 rows in place into int64 sums and scales those
    (mlp4's layers after their warm-up); the fused int8 route cannot serve it."""
    rng = np.random.default_rng(w_max)
    d_in, d_out, b = 1000, 45, 9
    w = rng.integers(-w_max, w_max + 1, (d_out, d_in)).astype(np.int32)
    w[0, :] = w_max  # one row of sums far past int32's chunk, saturating
    x = rng.integers(-128, 128, (b, d_in)).astype(np.int8)
    x[0, :] = 127
    sf = 2**10 * d_in
    got = nativeblock.forward(x, w, sf, 4)
    old, gemm.FORCE_INT64 = gemm.FORCE_INT64, True
    try:
        want = L.linear_scaled(x, w, sf)
    finally:
        gemm.FORCE_INT64 = old
    assert intgemm.chunk_pairs(128, w_max) < d_in // 2 and got is not None
    assert np.array_equal(got[0], want) and len(np.unique(want)) > 100
    assert np.array_equal(got[1], L.relu_forward(want, 4)) and got[2] == w_max


def _head_step(head, weights, x, target, hp, y_hat, propagate, wrap=False, lr_inv=64):
    w = {head.name: weights[head.name].copy()}
    return w, head.step(w, x, target, lr_inv, hp.head_decay_inv, hp, wrap, propagate, y_hat=y_hat)


# Bound cases on a small odd shape (padding of 16-column panels, an odd K): name -> (weight bits, |W_fwd|, |W_head|,
# x dtype and bound, one-hot value, lr_inv, Hyper fields)
D_IN, D_OUT, NC, B = 37, 19, 10, 5
CASES = {
    "int32 weights at their limit: limbs, saturating scaling and update": (32, 2**31 - 1, 2**31 - 1, (np.int8, 128),
                                                                          32, 1, dict(lr_amp_factor=1)),
    "the fused scaling's edge |W| = 2**15 - 1": (32, 2**15 - 1, 2**15 - 1, (np.int8, 128), 32, 64, {}),
    "one past it, |W| = 2**15: 16-bit limbs": (32, 2**15, 2**15, (np.int8, 128), 32, 64, {}),
    "int16 weights saturating (weight_bits 16)": (16, 2**15 - 1, 2**15 - 1, (np.int8, 128), 32, 1,
                                                 dict(lr_amp_factor=1, fwd_decay_inv=0, head_decay_inv=0)),
    "int16 inputs at their limits": (32, 2**14, 2**12, (np.int16, 2**15), 32, 64, {}),
    "the widest errors: one-hot value 2**40": (32, 2**20, 2**10, (np.int8, 128), 2**40, 64, {}),
    "huge divisors: lr_inv 2**61, decay 2**62": (32, 2**20, 2**20, (np.int8, 128), 32, 2**61,
                                                dict(lr_amp_factor=1, fwd_decay_inv=2**62, head_decay_inv=2**62)),
    "decay 1, lr_amp 3 (no power of two)": (32, 5000, 5000, (np.int8, 128), 32, 7,
                                           dict(lr_amp_factor=3, fwd_decay_inv=1, head_decay_inv=1)),
}


def _hyper(bits, **kw):
    return Hyper(**{**dict(lr_amp_factor=640, fwd_decay_inv=19000, head_decay_inv=7500, slope_inv=4,
                           weight_bits=bits), **kw})


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("wrap,asym", [(False, False), (True, True)])
def test_block_step_equals_int64_at_the_bounds(setting, case, wrap, asym):
    """Extreme weights (both signs at the bound and random), every int8 pre-activation s in the cache (NITRO-ReLU's
    zero and saturated edges: 127, -127, -128), the error wrap and the asymmetric ReLU saturation switched."""
    _bound_case(case, wrap, asym)


@pytest.mark.parametrize("rows", [1, 3, 7])
def test_block_step_equals_int64_with_the_gradient_cut_into_panels(rows):
    """block.c makes and applies the weight gradient a few rows at a time (mlp4's 3000 x 3072 layers in 43-row
    panels): forced to 1, 3 and 7 rows of the 19 (a short last panel), every bound case (limbs of both operands,
    so the packed input changes between panels) still equals the int64 reference."""
    ldg = (D_IN + 15) // 16 * 16
    assert nativeblock.grad_panel_bytes(rows * ldg * 8) == rows * ldg * 8
    try:
        for case in CASES:
            _bound_case(case, True, True)
    finally:
        nativeblock.grad_panel_bytes(None)


def _bound_case(case, wrap, asym):
    bits, w_max, wh_max, (xdt, x_max), hot, lr_inv, hyper = CASES[case]
    hp = _hyper(bits, **hyper)
    rng = np.random.default_rng(11)
    wdt = np.int32 if bits == 32 else np.int16

    def extreme(shape, bound):
        w = rng.integers(-bound, bound + 1, shape)
        return np.where(rng.integers(0, 3, shape) == 0, np.sign(w) * bound, w).astype(wdt)

    block = LinearBlock("blk", D_IN, D_OUT, NC)
    weights = {"blk.fwd": extreme((D_OUT, D_IN), w_max), "blk.head": extreme((NC, D_OUT), wh_max)}
    x = np.where(rng.integers(0, 2, (B, D_IN)) == 1, x_max - 1, -x_max).astype(xdt)
    s = (np.arange(B * D_OUT) % 256 - 128).astype(np.int8).reshape(B, D_OUT)
    s[0, :4] = [127, -127, -128, 0]
    cache = (x, s, L.relu_forward(s, hp.slope_inv), int(np.abs(weights["blk.fwd"].astype(np.int64)).max()))
    target = np.zeros((B, NC), np.int64)
    target[np.arange(B), rng.integers(0, NC, B)] = hot
    (w_nat, ran), (w_ref, _) = _both(lambda: _block_step(block, weights, cache, target, lr_inv, hp,
                                                         _quirks(wrap, asym)))
    assert ran
    _assert_same(w_nat, w_ref)
    got = nativeblock.forward(x, weights["blk.fwd"], block.sf, hp.slope_inv)
    assert got is not None
    old, gemm.FORCE_INT64 = gemm.FORCE_INT64, True
    try:
        want = L.linear_scaled(x, weights["blk.fwd"], block.sf)
    finally:
        gemm.FORCE_INT64 = old
    assert np.array_equal(got[0], want) and np.array_equal(got[1], L.relu_forward(want, hp.slope_inv))
    assert got[2] == cache[3]


@pytest.mark.parametrize("propagate", [False, True])
@pytest.mark.parametrize("given", [False, True])
def test_head_step_equals_int64_with_and_without_y_hat_and_delta(setting, propagate, given):
    """Head.step as the output layer takes it (y_hat given, nothing propagated) and as a conv block's head does
    (delta back to the block), wrapped errors included."""
    rng = np.random.default_rng(5)
    head = Head("h", 203, 10)
    hp = _hyper(32)
    weights = {"h": rng.integers(-2**17, 2**17, (10, 203)).astype(np.int32)}
    x = rng.integers(-128, 128, (13, 203)).astype(np.int8)
    target = np.zeros((13, 10), np.int64)
    target[np.arange(13), rng.integers(0, 10, 13)] = 32
    y_hat = rng.integers(-127, 128, (13, 10)).astype(np.int8) if given else None
    (w_nat, nat), (w_ref, ref) = _both(lambda: _head_step(head, weights, x, target, hp, y_hat, propagate, wrap=True))
    _assert_same(w_nat, w_ref)
    assert np.array_equal(nat[0], ref[0])
    assert (nat[1] is None) == (ref[1] is None) == (not propagate)
    if propagate:
        assert np.array_equal(nat[1], ref[1]) and nat[2] <= ref[2]  # the native bound is |delta|'s own maximum
    assert nativeblock.head_step(x, weights["h"], head.sf, target, y_hat, True, 64, 7500, 32, propagate) is not None


def test_a_replaced_weight_tensor_is_reused_only_once_nothing_else_holds_it(monkeypatch):
    """The native step writes new weights into a retired tensor (nativeblock._out_like), never into one the caller
    still holds: with every step's inputs kept, none changes; once they are dropped, the next step writes into them.
    Every step equals the int64 reference."""
    monkeypatch.setattr(nativeblock, "_SPARE_MIN", 0)  # this small layer's tensors take the mlp4-sized route
    monkeypatch.setattr(nativeblock, "_spares", {})
    rng = np.random.default_rng(3)
    block, hp = LinearBlock("blk", D_IN, D_OUT, NC), _hyper(32)
    x = rng.integers(-128, 128, (B, D_IN)).astype(np.int8)
    target = np.zeros((B, NC), np.int64)
    target[np.arange(B), rng.integers(0, NC, B)] = 32
    w0 = {"blk.fwd": rng.integers(-5000, 5000, (D_OUT, D_IN)).astype(np.int32),
          "blk.head": rng.integers(-5000, 5000, (NC, D_OUT)).astype(np.int32)}

    def step(w):
        s = L.linear_scaled(x, w["blk.fwd"], block.sf)
        block.cache = (x, s, L.relu_forward(s, hp.slope_inv), 0)
        block.step(w, target, 64, hp, _quirks())

    def run():
        w, kept, seen = {k: v.copy() for k, v in w0.items()}, [], []
        for _ in range(3):
            kept += [(v, v.copy()) for v in w.values()]  # the caller holds every step's inputs
            step(w)
            seen.append({k: v.copy() for k, v in w.items()})
            assert all(np.array_equal(v, c) for v, c in kept)
        return seen, w

    (got, w), (want, _) = _both(run)
    for g, r in zip(got, want):
        _assert_same(g, r)
    spares = {id(a) for v in nativeblock._spares.values() for a in v}
    assert len(spares) == 6  # the three steps' inputs, released by run()
    step(w)
    assert {id(v) for v in w.values()} <= spares


def test_native_step_declines_past_int64_and_changes_nothing():
    """Errors so wide that |e| * |W| * classes reaches 2**63: the native step declines (weights untouched) and the
    NumPy route raises, as it always has."""
    block, hp = LinearBlock("blk", D_IN, D_OUT, NC), _hyper(32)
    weights = {"blk.fwd": np.full((D_OUT, D_IN), 3, np.int32), "blk.head": np.full((NC, D_OUT), 2**31 - 1, np.int32)}
    x = np.ones((B, D_IN), np.int8)
    s = np.zeros((B, D_OUT), np.int8)
    block.cache = (x, s, L.relu_forward(s, 4), 3)
    target = np.full((B, NC), -(2**60), np.int64)
    before = {k: v.copy() for k, v in weights.items()}
    assert not nativeblock.linear_step(block, weights, target, 64, hp, _quirks())
    _assert_same(weights, before)
    with pytest.raises(OverflowError):
        block.step(weights, target, 64, hp, _quirks())


def test_force_int64_and_unsupported_dtypes_take_the_numpy_route(monkeypatch):
    """The reference switch and an int64 weight tensor (no native update for it) both leave the step to NumPy."""
    x = np.ones((2, 5), np.int8)
    assert nativeblock.forward(x, np.ones((3, 5), np.int64), 5 << 8, 4) is None
    monkeypatch.setattr(gemm, "FORCE_INT64", True)
    assert nativeblock.forward(x, np.ones((3, 5), np.int32), 5 << 8, 4) is None
