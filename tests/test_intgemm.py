"""The native integer GEMM (nitro_mcu/trainer/intgemm.py, native/intgemm.c) equals Python-int products on every
kernel variant this CPU runs: random shapes, operands at their bounds, the int32 chunks at their limit, fused
NITRO-Scaling at every rounding edge, the pooled conv gradient; and without a C compiler the trainer falls back to
NumPy int64, says so in one line, and trains the same weights."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nitro_mcu.spec import PRESETS, preset
from nitro_mcu.trainer import arith, convgrad, gemm, intgemm, optim
from nitro_mcu.trainer.network import Model

if intgemm.lib() is None:
    pytest.skip("the native integer kernels are not built here (no C compiler); tests/test_exactness.py covers the "
                "NumPy int64 path", allow_module_level=True)

VARIANTS = [v for v in intgemm.VARIANTS if intgemm.force_variant(v)]
intgemm.force_variant(None)


@pytest.fixture(params=VARIANTS)
def variant(request):
    assert intgemm.force_variant(request.param)
    yield request.param
    intgemm.force_variant(None)


def _exact(a, b):
    """Python-int product (object arrays never overflow)."""
    return np.asarray(a, dtype=object) @ np.asarray(b, dtype=object)


def _operand(rng, shape, bound, extreme):
    x = rng.integers(-bound, bound + 1, shape, dtype=np.int64)
    if extreme:  # every entry at +-bound: each partial sum as large as the bound allows
        x = np.where(rng.integers(0, 2, shape) == 1, bound, -bound)
    return x


BOUNDS = [1, 127, 128, 2560, 4096, 32767, 32768, 2**20 + 3, 2**31 - 1, 2**40 - 5]


def test_products_equal_python_ints_on_random_shapes_and_bounds(variant):
    """K from 1 to 1 100 (odd K, K past one 256-pair pass and past one int32 chunk), N not a multiple of 16,
    operands from 1 bit to 41 bits (no limb, limbs on one side, on both), strided, transposed and row-major B."""
    rng = np.random.default_rng(intgemm.VARIANTS.index(variant))
    for trial in range(160):
        m, n = (int(v) for v in rng.integers(1, 40, 2))
        k = int(rng.integers(1, 70)) if trial % 3 else int(rng.integers(500, 1100))
        a_max, b_max = (int(v) for v in rng.choice(BOUNDS, 2))
        while a_max * b_max * k >= 2**62:
            a_max //= 2
        a = _operand(rng, (m, k), a_max, trial % 4 == 0)
        b = _operand(rng, (n, k), b_max, trial % 4 == 0).T  # a transposed view, as W.T
        if trial % 7 in (1, 2):  # row-major as an activation (packed by interleaving rows), or columns apart
            b = np.ascontiguousarray(b) if trial % 7 == 1 else np.repeat(b, 2, axis=1)[:, ::2]
        if trial % 5 == 0 and a_max < 128:
            a = a.astype(np.int8)
        got = intgemm.matmul(a, b, a_max, b_max)
        assert got.dtype == np.int64 and (got.astype(object) == _exact(a, b)).all(), (m, k, n, a_max, b_max)


def test_upper_limbs_on_a_few_rows_take_only_those_rows_and_stay_exact(variant, monkeypatch):
    """A block's error: |delta| < 2**15 but for a few entries up to the bound, so A's upper limbs are zero on most
    rows; the kernel then runs those limbs on the rows that have a value (none, one, a few, half, all of them)."""
    rng = np.random.default_rng(11)
    calls = []
    real = intgemm._run
    monkeypatch.setattr(intgemm, "_run", lambda a, *r: calls.append(a.shape[0]) or real(a, *r))
    for wide_rows in (0, 1, 3, 50, 100):
        a = rng.integers(-2**15 + 1, 2**15, (100, 64))
        for r in rng.choice(100, wide_rows, replace=False):
            a[r, rng.integers(0, 64, 2)] = rng.choice([2**20 - 1, -(2**20 - 1), 2**15, -2**15 - 1], 2)
        b = rng.integers(-128, 128, (64, 784)).astype(np.int8)
        calls.clear()
        got = intgemm.matmul(a.T.T, b, 2**20, 128)
        assert np.array_equal(got.astype(object), _exact(a, b)), wide_rows
        upper = calls[1:]
        assert (upper == [] if wide_rows == 0 else upper[0] == (100 if wide_rows > 50 else wide_rows)), calls


def test_limbs_reassemble_every_value_and_respect_their_bounds():
    for bound, s in ((2**63 - 1, 13), (2**40 - 5, 16), (2**31 - 1, 16), (32768, 14), (70000, 16), (5, 0)):
        x = np.array([[bound, -bound, 0, 1, -1, bound // 3, -(bound // 7), 2**(max(s, 1) - 1), -2**(max(s, 1) - 1)]],
                     dtype=np.int64)
        x = np.clip(x, -bound, bound)
        parts = intgemm.limbs(x, bound, s)
        total = sum(p.astype(object) * 2**e for p, _, e in parts)
        assert (total == x.astype(object)).all()
        for p, lim, _ in parts:
            assert p.dtype == np.int16 and int(np.abs(p.astype(np.int64)).max()) <= lim <= 32768


def test_plan_keeps_limb_products_small_enough_for_31_pair_chunks():
    for a_max in BOUNDS:
        for b_max in BOUNDS:
            sa, sb = intgemm.plan(a_max, b_max)
            la = a_max if sa == 0 else 2 ** (sa - 1)
            lb = b_max if sb == 0 else 2 ** (sb - 1)
            assert la <= 32768 and lb <= 32768 and (sa or a_max < 2**15) and (sb or b_max < 2**15)
            assert la * lb <= intgemm.LIMB_PRODUCT_MAX and intgemm.chunk_pairs(la, lb) >= 31


@pytest.fixture(params=[v for v in VARIANTS if v != "portable"])
def simd(request):
    assert intgemm.force_variant(request.param)
    yield request.param
    intgemm.force_variant(None)


def test_int32_chunk_is_exact_at_its_limit_and_wraps_one_pair_past_it(simd):
    """|a| = 4096, |b| = 8192: 2 * 31 pairs * 2**25 = 2 080 374 784 <= INT32_MAX, the chunk length chosen; every
    product +2**25 makes the chunk sum exactly that.  A chunk of 32 pairs would reach 2**31: the SIMD sum wraps
    (defined for vector lanes; the portable C is never asked to), so the chunk bound is what keeps it exact."""
    kcp = intgemm.chunk_pairs(4096, 8192)
    assert kcp == 31
    k = 2 * 32 * 3  # three chunks of 32 pairs if the bound were ignored
    a = np.full((3, k), 4096, dtype=np.int16)
    a[1] = -4096
    b = np.full((k, 17), 8192, dtype=np.int16)
    want = _exact(a, b)
    assert (intgemm.matmul(a, b, 4096, 8192).astype(object) == want).all()
    c = np.empty((3, 32), dtype=np.int64)
    intgemm._run(a, b, 17, c, None, kcp + 1, 0, 0, 0)
    assert not (c[:, :17].astype(object) == want).all()


@pytest.fixture
def amx():
    if "amx" not in VARIANTS:
        pytest.skip("this CPU or kernel does not run AMX-INT8 (CPUID or Linux's arch_prctl permission)")
    assert intgemm.force_variant("amx")
    yield
    intgemm.force_variant(None)


def test_amx_byte_planes_stay_exact_past_one_int32_tile_chunk(amx):
    """AMX cuts int16 into a signed high and an unsigned low byte; low-byte products reach 255 * 255, so an int32
    tile sums at most 2**14 K values at a time.  K = 3 * 2**14 of 255 * 255 is 3.2e9 in one tile: past int32 unless
    the kernel chunks K (a chunk of 2**15 still holds: 2.13e9).  The caller's chunk (1 pair) does not matter."""
    k = 3 * 2**14
    for av, bv in [(255, 255), (-32768, -32768), (-1, 255), (127, -128)]:
        a = np.full((19, k), av, dtype=np.int16)  # 19 rows: AMX (16 or more), a partial second row block
        a[1, ::7] = -1
        b = np.full((k, 17), bv, dtype=np.int16)
        b[::5, 3] = 0
        want = _exact(a, b)
        c = np.empty((19, 32), dtype=np.int64)
        intgemm._run(a, b, 17, c, None, 1, 0, 0, 0)
        assert (c[:, :17].astype(object) == want).all(), (av, bv)


@pytest.mark.parametrize("m, k, n", [(700, 3000, 20), (50, 1152, 600), (37, 130, 33)])
def test_amx_equals_int64_with_a_packed_whole_or_by_rows_mixed_int8_groups_and_b_panels(amx, m, k, n):
    """700 x 3 000 is over the 4 MiB of byte planes packed whole (32 rows at a time against all of B), 1 152 x 600
    spans three B panels, 37 x 130 x 33 has partial blocks everywhere; row groups alternate between int8 (one
    plane) and int16 (two planes), and B is int8 in one run and int16 in the other; int64 products as reference
    (|sum| < 2**47), with the shifted and added int64 output and the fused scaling checked too."""
    rng = np.random.default_rng(m)
    a = rng.integers(-32768, 32768, (m, k))
    a[(np.arange(m) // 32) % 2 == 1] //= 256  # odd row groups of 32 in int8
    for b_max in (127, 32767):
        b = rng.integers(-b_max - 1, b_max + 1, (k, n))
        want = a @ b
        c = np.empty((m, -(-n // 16) * 16), dtype=np.int64)
        intgemm._run(a.astype(np.int16), b.astype(np.int16), n, c, None, 1, 3, 0, 0)
        assert np.array_equal(c[:, :n], want * 8)
        intgemm._run(a.astype(np.int16), b.astype(np.int16), n, c, None, 1, 0, 1, 0)
        assert np.array_equal(c[:, :n], want * 9)
    a8, b8 = a.clip(-127, 127), rng.integers(-127, 128, (k, n))
    sf = 2**8 * k
    got = intgemm.matmul_scaled(a8.astype(np.int16), b8.astype(np.int16), 127, 127, sf)
    assert got is not None and np.array_equal(got, np.clip(arith.tdiv(a8 @ b8, sf), -127, 127))


SCALES = [1, 2, 3, 255, 256, 2304, 7919, 200704, 786432, 2**24]


def test_fused_scaling_equals_tdiv_and_clip_at_every_rounding_edge(variant):
    """z = q*SF + {-2..2} for q across the int8 range and past it (the clamp), for SF from 1 to 2**24 (the limit of
    the magic-number division), including odd and prime SF; z = a @ [1] so every value is an exact int16 sum."""
    for sf in SCALES:
        z = np.unique(np.concatenate([np.arange(-40, 41), *(q * sf + np.arange(-2, 3) for q in range(-130, 131))]))
        z = z[np.abs(z) < 2**15]
        z = np.concatenate([z, [32767, -32767]])
        got = intgemm.matmul_scaled(z.reshape(-1, 1).astype(np.int16), np.ones((1, 1), np.int16), 32767, 1, sf)
        want = np.clip(arith.tdiv(z, sf), -127, 127).astype(np.int8).reshape(-1, 1)
        assert got is not None and np.array_equal(got, want), sf


def test_fused_scaling_of_long_sums_at_the_int32_edge(variant):
    """Sums up to 128 * 8191 * 1 022 (K past one 256-pair pass): the fused result equals scaling of the int64 sum."""
    rng = np.random.default_rng(7)
    for trial in range(40):
        m, n, k = int(rng.integers(1, 30)), int(rng.integers(1, 40)), int(rng.integers(1, 1023))
        a = _operand(rng, (m, k), 128, trial % 3 == 0).astype(np.int8)
        b = _operand(rng, (k, n), 8191, trial % 3 == 0)
        sf = int(rng.choice(SCALES))
        got = intgemm.matmul_scaled(a, b, 128, 8191, sf)
        want = np.clip(arith.tdiv(a.astype(np.int64) @ b, sf), -127, 127)
        assert got is not None and np.array_equal(got, want), (m, k, n, sf)


def test_fused_scaling_declines_where_its_premises_fail():
    a, b = np.ones((2, 3), np.int16), np.ones((3, 2), np.int16)
    assert intgemm.matmul_scaled(a, b, 1, 1, 2**24 + 1) is None  # 128 * SF > 2**31
    assert intgemm.matmul_scaled(a, b, 40000, 1, 256) is None  # limbs needed
    big = np.full((2, 4000), 127, np.int16)
    assert intgemm.matmul_scaled(big, np.full((4000, 2), 32767, np.int16), 127, 32767, 256) is None  # > one chunk


@pytest.mark.parametrize("dtype, d_bound", [(np.int8, 100_000), (np.int16, 2**31 - 1), (np.int8, 2**31),
                                            (np.int16, 2**40)])
def test_pooled_gradient_gather_equals_the_numpy_route(dtype, d_bound):
    """|d| < 2**31 takes the AVX-512 gather (vpmuldq), |d| >= 2**31 the portable one: both equal NumPy int64."""
    rng = np.random.default_rng(d_bound % 97)
    info = np.iinfo(dtype)
    for c, n, rows, k in ((8, 300, 5000, 9), (5, 101, 300, 37), (3, 64, 200, 72), (2, 7, 9, 1)):
        x = rng.integers(info.min + 1, info.max + 1, (rows, k)).astype(dtype)
        d = rng.integers(-d_bound, d_bound + 1, (c, n))
        d[0, :3] = [d_bound, -d_bound, 0]
        row = np.sort(rng.integers(0, rows, (c, n)), axis=1)
        got = intgemm.gather_rows(d, row, x, d_bound)
        assert np.array_equal(got, convgrad.gathered_grad(d, row, x))


def _sgd_python(w, g, d, e, bits):
    """The update on Python ints (docs/algorithm.md §4.1): saturate(W - (tdiv(G, d) + tdiv(W, e)))."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [min(hi, max(lo, wi - (arith.tdiv(gi, d) + (arith.tdiv(wi, e) if e else 0))))
            for wi, gi in zip(w.ravel().tolist(), g.ravel().tolist())]


SGD_DIVISORS = [1, 2, 3, 7, 640, 2**18, 327680, 3 * 643, 2**31 - 1, 2**40, 2**40 + 1, 2**62, 2**63 - 1]


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
@pytest.mark.parametrize("loop", ["simd", "portable"])
def test_native_sgd_equals_the_python_update_at_every_bound(dtype, loop):
    """The C update (intgemm.sgd_c) against Python ints: divisors from 1 to 2**63 - 1 (powers of two and not),
    gradients at +-(2**63 - 1) and INT64_MIN, at and next to every multiple of d (negative quotients truncate toward
    zero), weights at both ends of int16 / int32, results saturating at both ends, with and without decay, on a
    strided gradient with rows longer than one vector plus a tail."""
    if loop == "simd" and not intgemm.lib().igemm_sgd_simd():
        pytest.skip("this CPU has no AVX-512 F/BW/VL/DQ: the update's SIMD loop does not run here")
    assert intgemm.force_variant("portable" if loop == "portable" else None)
    try:
        rng = np.random.default_rng(7)
        info = np.iinfo(dtype)
        for d in SGD_DIVISORS:
            for e in (0, 1, 3, 12000, 2**31 - 1):
                for bits in ((16,) if dtype == np.int16 else (16, 32)):
                    w = rng.integers(max(info.min, -(1 << (bits - 1))), min(info.max, (1 << (bits - 1)) - 1) + 1,
                                     (3, 21)).astype(dtype)
                    w[0, :4] = [-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0, -1]
                    q = rng.integers(-2**20, 2**20, w.shape)
                    g = np.clip(q.astype(object) * d + rng.integers(-1, 2, w.shape), -2**63, 2**63 - 1)
                    g = np.concatenate([g.astype(np.int64), np.zeros((3, 11), np.int64)], axis=1)[:, :21]  # strided
                    g[0, :8] = [2**63 - 1, -2**63, -(2**63 - 1), d - 1 if d < 2**63 else 0, -(d - 1), -d, d, -1]
                    g[1, :4] = [-(1 << (bits - 1)) * min(d, 2**20), (1 << bits) * min(d, 2**20), 1, -2]
                    got = intgemm.sgd_c(w, g, d, e, bits)
                    assert got.dtype == w.dtype and got.ravel().tolist() == _sgd_python(w, g, d, e, bits), (d, e, bits)
    finally:
        intgemm.force_variant(None)


def test_native_sgd_declines_what_it_does_not_cover():
    w = np.zeros((2, 3), np.int32)
    g = np.zeros((2, 3), np.int64)
    assert intgemm.sgd_c(w.astype(np.int64), g, 3, 0, 32) is None  # int64 weights: the NumPy routes
    assert intgemm.sgd_c(w, g.astype(np.int32), 3, 0, 32) is None
    assert intgemm.sgd_c(w, g, 2**63, 0, 32) is None and intgemm.sgd_c(w, g, 0, 0, 32) is None
    assert intgemm.sgd_c(w.astype(np.int16), g, 3, 0, 32) is None  # 32-bit saturation of int16 storage


def test_native_sgd_on_conv_weights_equals_the_int64_update(monkeypatch):
    """4-D conv weights take the same C pass, as rows of C * k * k."""
    rng = np.random.default_rng(3)
    w = rng.integers(-2**30, 2**30, (4, 3, 3, 3)).astype(np.int32)
    g = rng.integers(-2**45, 2**45, w.shape)
    fast = optim.sgd_update(w, g, 512, 640, 12000, 32)
    monkeypatch.setattr(gemm, "FORCE_INT64", True)
    assert np.array_equal(fast, optim.sgd_update(w, g, 512, 640, 12000, 32))


def test_force_int64_takes_the_numpy_path(monkeypatch):
    calls = []
    monkeypatch.setattr(intgemm, "matmul", lambda *a: calls.append(1))
    monkeypatch.setattr(gemm, "FORCE_INT64", True)
    a, b = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)
    assert np.array_equal(gemm.matmul_exact(a, b), a @ b) and not calls


# The VGG presets share their layer kinds; their NumPy int64 reference takes minutes per batch of 4 (vgg11b: 7 min),
# so the suite runs the widest of them, vgg8b_cifar10 (3 channels, Dropout on conv maps), on one sample.
# benchmarks/torch_speed.py replays vgg8b both ways too.
VGG_STAND_IN = "vgg8b_cifar10"


@pytest.mark.parametrize("name", sorted(n for n in set(PRESETS) - {"mlp1", "cnn_small", "mcu_cnn"}
                                        if not n.startswith("vgg") or n == VGG_STAND_IN))
def test_every_other_preset_trains_identically_on_the_kernels_and_on_int64(name):
    """tests/test_exactness.py runs mlp1, cnn_small and mcu_cnn at length; the other presets (Dropout's int16
    activations, 3-channel and wide layers, VGG) take small steps with grown weights each way."""
    assert_trains_identically_on_the_kernels_and_on_int64(name, *((1, 1) if name == VGG_STAND_IN else (4, 2)))


def assert_trains_identically_on_the_kernels_and_on_int64(name: str, batch: int, steps: int):
    """``steps`` training steps of ``batch`` random samples from weights grown 60-fold, on the kernels and on the
    NumPy int64 path: the same weights."""
    spec = preset(name)
    bits = spec.get("weight_bits", 32)
    rng = np.random.default_rng(1)
    shape = (batch, *spec["input_shape"])
    xs = [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(steps)]
    ys = [rng.integers(0, spec["num_classes"], batch) for _ in range(steps)]
    base = Model(spec, "default", weight_bits=bits, seed=1)
    lim = 2 ** (bits - 1) - 1
    grown = {k: np.clip(v.astype(np.int64) * 60, -lim, lim) for k, v in base.weights.items()}
    out = []
    for force in (False, True):
        old = gemm.FORCE_INT64
        gemm.FORCE_INT64 = force
        try:
            m = Model(spec, "default", weight_bits=bits, seed=1, weights=grown)
            for x, y in zip(xs, ys):
                m.train_step(x, y, 64)
            out.append(m.weights)
        finally:
            gemm.FORCE_INT64 = old
    for k in out[1]:
        assert np.array_equal(out[0][k], out[1][k]), k


def _fresh_python(env: dict, code: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full,
                          timeout=300)


TRAIN_MLP1 = """
    import numpy as np
    from nitro_mcu.spec import preset
    from nitro_mcu.trainer import intgemm
    from nitro_mcu.trainer.network import Model
    m = Model(preset("mlp1"), "default", weight_bits=32, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        m.train_step(rng.integers(-128, 128, (8, 784)).astype(np.int8), rng.integers(0, 10, 8), 64)
    print(intgemm.lib() is None, int(sum(int(v.astype(np.int64).sum()) for v in m.weights.values())))
"""


@pytest.mark.parametrize("env", [{"CC": "/nonexistent/cc"}, {"NITRO_MCU_INTGEMM": "numpy"}])
def test_without_a_compiler_training_falls_back_to_numpy_says_so_once_and_agrees(env, tmp_path):
    """No compiler (CC names none, an empty build cache) or the switch: one line on stderr, the NumPy path, and the
    same weights as with the kernels."""
    native = _fresh_python({"NITRO_MCU_CACHE": str(tmp_path / "warm")}, TRAIN_MLP1)
    fallback = _fresh_python({"NITRO_MCU_CACHE": str(tmp_path / "cold"), **env}, TRAIN_MLP1)
    assert native.returncode == 0 and fallback.returncode == 0, fallback.stderr
    assert native.stdout.split()[0] == "False" and fallback.stdout.split()[0] == "True"
    assert native.stdout.split()[1] == fallback.stdout.split()[1]
    notes = [ln for ln in fallback.stderr.splitlines() if "native integer GEMM" in ln]
    if "CC" in env:
        assert len(notes) == 1 and "NumPy int64" in notes[0]
    else:
        assert not notes  # asked for by name: nothing to report


def test_products_in_concurrent_threads_equal_the_same_products_alone():
    """The packed-B buffer is per thread: products run concurrently in threads equal the same products run alone."""
    import threading

    rng = np.random.default_rng(3)
    jobs = [(rng.integers(-128, 128, (40, 300)).astype(np.int8), rng.integers(-40000, 40000, (300, 50 + 7 * i)))
            for i in range(4)]
    want = [intgemm.matmul(a, b, 128, 40000) for a, b in jobs]
    wrong = []

    def work(i):
        for _ in range(30):
            wrong.append(not np.array_equal(intgemm.matmul(*jobs[i], 128, 40000), want[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wrong) == 30 * len(jobs) and not any(wrong)


@pytest.mark.parametrize("m, k, n", [(64, 1030, 270), (3000, 301, 20), (40, 2049, 33), (600, 1030, 70)])
def test_products_split_over_threads_equal_the_single_thread_products(variant, m, k, n):
    """Products past the threading threshold (2**24 multiply-adds), cut by columns (wide N, each thread packing its
    own columns of B) or by rows (N of 32 or 48 columns, B packed first; on AMX also 600 rows by 70 columns), with
    limbs of A (later limbs reuse the packed B) and fused scaling: the same integers on 1, 2 and 3 threads, equal to
    NumPy int64."""
    rng = np.random.default_rng(m)
    a = rng.integers(-2**20, 2**20 + 1, (m, k))
    b = rng.integers(-127, 128, (n, k)).T
    small = rng.integers(-127, 128, (m, k)).astype(np.int8)
    want = a @ b
    want_scaled = np.clip(arith.tdiv(small.astype(np.int64) @ b, 300), -127, 127)
    try:
        for threads in (1, 2, 3):
            assert intgemm.set_threads(threads) == threads
            assert np.array_equal(intgemm.matmul(a, b, 2**20, 127), want), threads
            assert np.array_equal(intgemm.matmul_scaled(small, b, 127, 127, 300), want_scaled), threads
    finally:
        intgemm.set_threads(1)


THREADS_OF_ENV = "from nitro_mcu.trainer import intgemm; print(intgemm.set_threads(0))"


@pytest.mark.parametrize("value, threads, note", [("", 1, False), ("2", 2, False), ("99", 8, False),
                                                  ("two", 1, True), ("0", 1, True)])
def test_thread_count_comes_from_nitro_mcu_threads(value, threads, note):
    got = _fresh_python({intgemm.THREADS_ENV: value}, THREADS_OF_ENV)
    assert got.returncode == 0 and int(got.stdout) == threads
    assert (intgemm.THREADS_ENV in got.stderr) == note, got.stderr


def test_first_calls_from_several_threads_at_once_are_race_free(tmp_path):
    """The variant is probed once whichever thread calls first (ThreadSanitizer, which reported a race on the
    chosen variant and the AMX permission flag before they were made once-only and atomic)."""
    from pathlib import Path
    from nitro_mcu.device.flags import HOST_KERNEL_CFLAGS

    flags = [f for f in HOST_KERNEL_CFLAGS if f not in ("-shared", "-fPIC")]
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    ok = subprocess.run(["gcc", "-fsanitize=thread", str(probe), "-o", str(tmp_path / "probe")], capture_output=True)
    if ok.returncode or subprocess.run([str(tmp_path / "probe")], capture_output=True).returncode:
        pytest.skip("gcc's ThreadSanitizer does not build or run here: the first-call race is not checked")
    exe = tmp_path / "first_call"
    driver = Path(__file__).resolve().parent / "intgemm_first_call.c"
    subprocess.run(["gcc", *flags, "-g", "-fsanitize=thread", str(intgemm.SOURCE), str(driver), "-o", str(exe),
                    "-lpthread"], check=True)
    for _ in range(3):
        r = subprocess.run([str(exe)], capture_output=True, text=True, env=dict(os.environ, TSAN_OPTIONS="exitcode=66"))
        assert r.returncode == 0 and "ThreadSanitizer" not in r.stderr, r.stderr[-2000:]
        assert r.stdout.strip() == intgemm.lib().igemm_variant().decode()
