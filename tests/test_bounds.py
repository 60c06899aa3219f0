"""Every bound the arithmetic proves, tested at the bound and one past it with operands that are not powers of two
(issue 22, item 3): the int64 product bound (trainer/gemm.py; the native kernels' int32 chunks are tested at
their bound in tests/test_intgemm.py), the SGD fast paths and clips (trainer/optim.py and the
C's nitro_sgd), the generator's accumulator widths and fast-update limit (codegen/walk.py), and the dropout,
one-hot and error ranges of docs/arithmetic.md.  Python results are checked against Python integers (object
arrays never overflow); the generated C against the Python trainer, step by step."""
from __future__ import annotations

import numpy as np
import pytest

from nitro_mcu import compile_model
from nitro_mcu.codegen import plan
from nitro_mcu.codegen.ops import ConvOp
from nitro_mcu.trainer import arith, gemm, optim
from nitro_mcu.trainer import layers as L
from nitro_mcu.trainer.blocks import ConvBlock, output_error
from nitro_mcu.trainer.network import Model


def _exact(a, b):
    return np.asarray(a, dtype=object) @ np.asarray(b, dtype=object)


def _ints(r):
    r = np.asarray(r)
    return (r.astype(np.int64) if r.dtype.kind == "f" else r).astype(object)


# ---- the int64 product bound (gemm.matmul_exact) --------------------------------------------------------------
def test_int64_fallback_is_refused_past_2_63():
    a = np.full((1, 3), 3_037_000_499)  # 3 * 3_037_000_499**2 ~ 2.77e19 >= 2**63
    with pytest.raises(OverflowError):
        gemm.matmul_exact(a, a.T)
    b = np.full((3, 1), 3_037_000_499 // 3)
    r = gemm.matmul_exact(a, b)
    assert (_ints(r) == _exact(a, b)).all()


def test_int64_product_with_a_loose_caller_bound_past_2_63_is_computed_from_the_operands():
    """A Dropout output is int16 (dtype bound 32 768) but at most 2 560: a conv gradient whose loose bound passes
    2**63 while the true one does not must be computed, not refused (found by tests/test_fuzz.py)."""
    a = np.full((2, 5), 2_147_483_001 // 7)
    b = np.full((5, 3), 2533)
    b[1] = -2533
    assert 2**63 <= int(a[0, 0]) * 32768 * 5 * 2**20
    r = gemm.matmul_exact(a, b, a_max=int(a[0, 0]) * 2**20, b_max=32768)
    assert r.dtype == np.int64 and (_ints(r) == _exact(a, b)).all()
    with pytest.raises(OverflowError):  # the operands' own bound past 2**63 is still refused
        gemm.matmul_exact(np.full((1, 3), 3_037_000_499), np.full((3, 1), 3_037_000_499))


# ---- tdiv of a float (the float64 divisions of layers.scaling, relu_backward and optim.sgd_update) --------------
def test_tdiv_of_a_float_is_exact_just_below_2_53():
    n = np.array([2**53 - 1, -(2**53 - 1), 2**53 - 3, 1 - 2**53], dtype=np.float64)
    for d in (3, 7, 640 * 3, 2**31 - 1, 999_999_937):
        want = [arith.tdiv(int(v), d) for v in n.astype(np.int64)]
        assert arith.tdiv(n, d).tolist() == want


# ---- IntegerSGD (optim.sgd_update): the no-saturation fast path and the float path ----------------------------
def _sgd_ref(w, g, lr_amp, decay, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = []
    for wi, gi in zip(w.tolist(), g.tolist()):
        v = wi - (arith.tdiv(int(gi), lr_amp) + (arith.tdiv(wi, decay) if decay else 0))
        out.append(min(hi, max(lo, v)))
    return out


@pytest.fixture
def numpy_sgd(monkeypatch):
    """optim's NumPy routes, not the native update (tests/test_intgemm.py proves that one)."""
    monkeypatch.setattr(optim.intgemm, "sgd", lambda *a: None)


@pytest.mark.parametrize("bits", [16, 32])
def test_sgd_skips_the_clip_only_where_nothing_can_saturate(bits, numpy_sgd):
    """|W| + |G|/(lr*amp) + |W|/decay = 2**(bits-1) - 1 exactly: the two-pass path; one more: clipped."""
    top = (1 << (bits - 1)) - 1
    decay, lr_amp = 9, 3 * 643
    w_max = (top * decay) // (decay + 1) - 5  # odd neighbourhood, not a power of two
    q_max = top - w_max - w_max // decay
    assert optim.fits_without_saturation(w_max, q_max, decay, bits)
    assert not optim.fits_without_saturation(w_max, q_max + 1, decay, bits)
    for extra in (0, 1):
        g_bound = (q_max + extra) * lr_amp + lr_amp - 1
        w = np.array([w_max, -w_max, w_max - 2, -7], dtype=np.int16 if bits == 16 else np.int32)
        g = np.array([-g_bound, g_bound, -(g_bound - 11), 5], dtype=np.int64)
        got = optim.sgd_update(w, g, 1, lr_amp, decay, bits, w_max=w_max, g_bound=g_bound)
        assert got.tolist() == _sgd_ref(w, g, lr_amp, decay, bits)
        assert got.dtype == w.dtype


def test_sgd_float64_path_with_lr_amp_1_near_2_53(numpy_sgd):
    """|G| + 2**33 < 2**53 takes the float64 update, one more the int64 one: both exact at the edge."""
    w = np.array([2**31 - 1, -(2**31), 12345], dtype=np.int32)
    for g_top in (2**53 - 2**33 - 1, 2**53 - 2**33, 2**53 + 3):
        g = np.array([-g_top, g_top, 3], dtype=np.int64)
        got = optim.sgd_update(w, g, 1, 1, 7, 32)
        assert got.tolist() == _sgd_ref(w, g, 1, 7, 32)


# ---- dropout, one-hot and error ranges (docs/arithmetic.md §1) -------------------------------------------------
def test_dropout_output_reaches_2540_after_an_activation_and_2560_on_raw_input():
    """Rate 0.95: R_p = floor(1000 / 0.05) = 20 000; 127 -> 2 540 and the raw input's -128 -> -2 560, which
    int16 holds (the C's 32-bit product 128 * 20 000 as well)."""
    r = L.dropout_rescale(950)
    assert r == 20000
    x = np.array([127, -127, -128, 101], dtype=np.int8)
    out = L.dropout_forward(x, np.ones(4, dtype=np.int32), 950)
    assert out.dtype == np.int16
    assert out.tolist() == [2540, -2540, -2560, 2020]
    assert max(abs(v) for v in out.tolist()) <= 2560 < 2**15


@pytest.mark.parametrize("one_hot", [32, 101, 127])
def test_output_error_spans_minus_127_minus_one_hot_to_127(one_hot):
    """e = y_hat - y with y_hat in [-127, 127] and y in {0, one_hot}: [-127 - one_hot, 127] (-254 at 127)."""
    y_hat = np.array([[-127, 127, -127], [127, -127, 5]])
    target = np.array([[one_hot, 0, 0], [0, one_hot, 0]])
    e = output_error(y_hat, target, False)
    assert int(e.min()) == -127 - one_hot and int(e.max()) == 127
    assert int(e.min()) >= -254


# ---- the generated C at the bounds ------------------------------------------------------------------------------
def _c_vs_python(model, xs, ys, lrs, name):
    """Train the compiled C and the Python trainer on the same batches; fail at the first step that differs."""
    cm = compile_model(model, batch=max(len(x) for x in xs), train=True, name=name)
    for s, (x, y, lr) in enumerate(zip(xs, ys, lrs)):
        if s == 0 or lr != lrs[s - 1]:
            cm.set_lr_inv(lr)
        got = cm.train_batch(x, y)
        want = model.train_step(x, y, lr).correct
        assert got == want, f"step {s + 1}: correct C {got} != Python {want}"
        cw = cm.get_weights()
        for k in cw:
            if not np.array_equal(cw[k], model.weights[k]):
                i = tuple(np.argwhere(cw[k] != model.weights[k])[0])
                pytest.fail(f"step {s + 1}: {k}{list(i)} C {cw[k][i]} != Python {model.weights[k][i]}")
    assert cm.rng_state == model.dropout_rng.state


def _set(model, **values):
    """Fill tensors with a constant (odd, not a power of two), or alternating signs with a negative value."""
    w = {k: v.copy() for k, v in model.weights.items()}
    for k, val in values.items():
        w[k.replace("__", ".")] = np.full(w[k.replace("__", ".")].shape, val, dtype=np.int64)
    model.load_weights(w)
    return model


def test_c_int16_sgd_at_lr_inv_1_clips_quotients_beyond_2_17_exactly():
    """lr_inv 1 with int16 weights: |tdiv(G, lr*amp)| beyond 2**15 (up to 2**17 and past it) reaches nitro_sgd's
    18-bit clip; a 16-bit clip there gives another weight from step 2 on."""
    from grown import grow
    m = grow(Model(dict(kind="mlp", input_shape=[45], num_classes=7, hidden=[29, 11]), "default", 16, seed=2), 5)
    r = np.random.default_rng(3)
    xs = [r.integers(-128, 128, (13, 45)).astype(np.int8) for _ in range(4)]
    ys = [r.integers(0, 7, 13) for _ in range(4)]
    _c_vs_python(m, xs, ys, [1, 1, 1, 1], "lr1")


@pytest.mark.parametrize("rate", [0.5, 0.95])
def test_c_dropout_fed_wide_layer_takes_wide_enough_accumulators(rate):
    """A 600-wide layer after Dropout, its inputs at 127 * R_p / 1000 (254 or 2 540) and weights at 32 765: the
    int32 partial sums must be chosen from the rescaled bound, not from 127."""
    spec = dict(kind="mlp", input_shape=[9], num_classes=3, hidden=[600, 5], dropout=rate)
    m = _set(Model(spec, "default", 16, seed=1), block0__fwd=31001, block1__fwd=32765)
    x = np.full((24, 9), 127, dtype=np.int8)
    y = np.arange(24) % 3
    _c_vs_python(m, [x], [y], [11], f"dw{int(rate * 100)}")


@pytest.mark.parametrize("batch", [255, 256, 257, 1024])
def test_c_fused_update_fast_path_limit_at_batch_256(batch):
    """The fused updates sum |delta| < 2**15 times |x| <= 128 over the (padded) batch in int32 while
    batch * 32767 * 128 <= 2**30 (batch <= 256), else in int64.  Identical samples and constant weights give
    every sample of block0 the delta -20 016 (fast-path size) and inputs -128 / 127: at batch 1,024 the sum is
    2.6e9, past int32."""
    spec = dict(kind="mlp", input_shape=[5], num_classes=3, hidden=[7])
    m = _set(Model(spec, "default", 16, seed=1), block0__fwd=3001, block0__head=301)
    x = np.full((batch, 5), -128, dtype=np.int8)
    x[:, 1] = 127
    y = np.zeros(batch, dtype=np.int64)
    _c_vs_python(m, [x, x], [y, y], [1, 1], f"fu{batch}")


def _conv0_entries(monkeypatch) -> list:
    """Record, in the Python steps that follow, the non-zero deltas of conv0 (no head pool) per output channel in
    the order nitro_conv_entries lists them (cell by cell, each over the batch), after relu'."""
    runs = []
    dense_grad = ConvBlock._dense_grad

    def record(self, delta, idx, s, cols, x_max, hp, quirks, w_shape):
        if self.name == "conv0":
            b, h, w, c = s.shape
            d = np.ascontiguousarray(np.asarray(delta).reshape(b, c, h, w).transpose(0, 2, 3, 1))
            dv = L.relu_backward(d, s, hp.slope_inv, quirks.relu_grad_asymmetric_sat)
            runs.append([(col := dv[..., f].reshape(b, h * w).T.reshape(-1))[col != 0] for f in range(c)])
        return dense_grad(self, delta, idx, s, cols, x_max, hp, quirks, w_shape)

    monkeypatch.setattr(ConvBlock, "_dense_grad", record)
    return runs


@pytest.mark.parametrize("bits", [16, 32])
def test_c_conv_entries_unpack_to_pairs_at_the_first_delta_past_2_15(bits, monkeypatch):
    """A fast conv plan packs each entry as offset * 2**16 + (delta & 0xFFFF) while every |delta| < 2**15; nothing
    bounds the head error's back-propagation below 2**15 (|e| <= 159 times 10 head weights up to 2**15 - 1 or
    2**31 - 1), so the first larger delta unpacks the entries made so far into (delta, offset) pairs.  Head
    columns of at most 3 keep a channel's deltas within 10 * 159 * 3 < 2**15, columns up to 30 000 push them past
    it: channel 0 lists 144 packed entries, negative ones among them (the unpack's sign extension), then large
    ones; channel 1 stays packed (the gradient's int32 route); channel 2 is large from its first entry (nothing to
    unpack).  One step, C against Python."""
    spec = dict(kind="cnn", input_shape=[1, 6, 6], num_classes=10, features=[["conv", 3, 3, 1, 1]], fc_hidden=[])
    m = Model(spec, "default", bits, seed=1)
    r = np.random.default_rng(7)
    cells, b = 36, 8
    wh = m.weights["conv0.head"].copy()
    small, large = (lambda n: r.integers(-3, 4, (10, n))), (lambda n: r.integers(-30000, 30001, (10, n)))
    wh[:, :cells // 2], wh[:, cells // 2:cells] = small(cells // 2), large(cells - cells // 2)
    wh[:, cells:2 * cells], wh[:, 2 * cells:] = small(cells), large(cells)
    m.load_weights({**m.weights, "conv0.head": wh})
    assert [o.fast for o in plan(m, b, True, "e").ops if isinstance(o, ConvOp)] == [True]
    runs = _conv0_entries(monkeypatch)
    x = r.integers(-128, 128, (b, 1, 6, 6)).astype(np.int8)
    _c_vs_python(m, [x], [np.arange(b) % 10], [64], f"ent{bits}")
    (ch0, ch1, ch2), = runs
    first = [int(np.argmax(np.abs(c) > 32767)) if (np.abs(c) > 32767).any() else None for c in (ch0, ch1, ch2)]
    packed = b * (cells // 2)  # the small half of channel 0's cells, every sample's delta non-zero
    assert first == [packed, None, 0], first
    assert (ch0[:packed] < 0).any() and (ch0[:packed] > 0).any() and len(ch1) > 0


def test_generator_fast_update_limit_is_batch_256_for_int8_inputs():
    def fast(batch):
        p = plan(Model(dict(kind="mlp", input_shape=[5], num_classes=3, hidden=[7]), "default", 16), batch, True, "f")
        return p.ops[0].fast

    assert fast(256) and not fast(257)


def test_generator_accumulator_width_switches_at_the_int32_bound():
    """int16 weights, int8 inputs (|x| <= 128): fan_in * 128 * 32768 < 2**31 - 1 up to fan_in 511."""
    def fwd_accs(d_in):
        p = plan(Model(dict(kind="mlp", input_shape=[d_in], num_classes=3, hidden=[4]), "default", 16), 4,
                 True, "acc")
        return {f.acc for f in p.fwd_fns if "block0" in f.name}

    assert fwd_accs(511) == {"acc32"}
    assert fwd_accs(512) == {"acc64"}


# ---- the max-pool key path (layers._pool_argmax_keys): every window must hold a real cell ------------------------
@pytest.mark.parametrize("h,w,oh,ow,top,left", [(4, 5, 2, 3, 0, 0), (4, 5, 3, 3, 0, 0), (5, 4, 3, 2, 1, 0),
                                                (4, 5, 2, 4, 0, 1), (3, 3, 2, 2, 1, 1)])
def test_maxpool_key_path_matches_the_general_loop_at_the_last_real_window(h, w, oh, ow, top, left, monkeypatch):
    """Windows whose last row or column is the first one past the map (all padding) must leave the key path
    for the general loop (which the reference below is forced to take)."""
    r = np.random.default_rng(h * 100 + w)
    x = r.integers(-128, 128, (2, h, w, 3)).astype(np.int8)
    for pad in (L.PAD_NEG_INF, 0):
        got = L.maxpool_forward(x, 2, 2, oh, ow, top, left, pad, with_idx=True)
        with monkeypatch.context() as mp:
            mp.setattr(L, "_pool_argmax_keys", lambda *a: None)
            want = L.maxpool_forward(x, 2, 2, oh, ow, top, left, pad, with_idx=True)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
