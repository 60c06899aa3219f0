"""The native integer GEMM (native/intgemm.c): built with the host C compiler at first use, cached, loaded with ctypes.

Operands become int16 limbs (an operand too wide for int16 is cut into balanced limbs of s bits,
x = sum_i limb_i * 2**(s*i)), every limb product runs in the C kernel with int32 partial sums over chunks short
enough that no int32 sum can overflow (:func:`plan`), and the chunks add up in int64.  So the result is the exact
int64 product by construction, for any operand values whose product fits int64.

Without a C compiler (or with ``NITRO_MCU_INTGEMM=numpy`` in the environment) :func:`lib` is None and the callers
use NumPy's int64 product instead; one line on stderr says so.

``NITRO_MCU_THREADS=N`` in the environment (or :func:`set_threads`) splits each large product over N threads inside
the C library (default 1); the result does not depend on N.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from functools import cache
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).resolve().parent / "native" / "intgemm.c"
# one library: block.c (nativeblock.py's whole block steps) calls intgemm.c's kernels, so both build as one unit
SOURCES = (SOURCE, SOURCE.parent / "block.c")
UNITY = "trainer_native.c"
INT32_MAX = 2**31 - 1
LIMB_PRODUCT_MAX = 2**25  # |limb_a| * |limb_b| at most this: every int32 chunk then spans >= 31 K-pairs
WHOLE_MAX = 2**12  # an operand up to this stays whole (int8 activations, Dropout's 2 560) and the other is cut
VARIANTS = ("portable", "avx2", "avx512vnni", "neon", "amx")
_I16P = ctypes.POINTER(ctypes.c_int16)
_I64P = ctypes.POINTER(ctypes.c_int64)


@cache
def lib():
    """The loaded kernel library, or None (no C compiler, a failed build, or NITRO_MCU_INTGEMM=numpy)."""
    if os.environ.get("NITRO_MCU_INTGEMM", "").lower() == "numpy":
        return None
    try:
        path = _build()
    except Exception as e:  # noqa: BLE001  (any failure: the NumPy path is always there)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"note: native integer GEMM unavailable ({msg}); the trainer uses NumPy int64 products "
              "(same results, slower)", file=sys.stderr)
        return None
    so = ctypes.CDLL(str(path))
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    so.igemm_run.argtypes = [i64, i64, i64, ptr, i64, ptr, i64, i64, ptr, ptr, ptr, i64, cint, cint, i64]
    so.igemm_run.restype = cint
    so.igemm_variant.restype = ctypes.c_char_p
    so.igemm_force.argtypes = [cint]
    so.igemm_force.restype = cint
    for fn in (so.igemm_gather_s8, so.igemm_gather_s16):
        fn.argtypes = [i64, i64, i64, ptr, ptr, ptr, i64, ptr, cint]
        fn.restype = None
    u64 = ctypes.c_uint64
    for fn in (so.igemm_sgd_s16, so.igemm_sgd_s32):
        fn.argtypes = [i64, i64, ptr, ptr, i64, ptr, i64, u64, cint, i64, u64, cint, i64, i64]
        fn.restype = None
    so.igemm_sgd_simd.restype = cint
    so.igemm_threads.argtypes = [cint]
    so.igemm_threads.restype = cint
    so.igemm_threads(_env_threads())
    return so


THREADS_ENV = "NITRO_MCU_THREADS"


def _env_threads() -> int:
    """NITRO_MCU_THREADS as a thread count (1 where unset; a value that is not a positive integer: 1, said once)."""
    text = os.environ.get(THREADS_ENV, "").strip() or "1"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    print(f"note: {THREADS_ENV}={text!r} is not a positive integer; the integer kernels use 1 thread", file=sys.stderr)
    return 1


def set_threads(n: int) -> int:
    """Threads per large product (at most 8; 0 keeps the count); returns the count in force (1 on the NumPy path)."""
    so = lib()
    return so.igemm_threads(max(0, int(n))) if so is not None else 1


def _build() -> Path:
    """Compile native/intgemm.c and native/block.c into the build cache (keyed by sources, compiler, flags and
    compiler version)."""
    from ..device.cache import cached_shared_library  # the device wing's build cache and flag table: one source
    from ..device.flags import HOST_KERNEL_CFLAGS
    from ..device.toolchain import compiler_version, find_host_cc

    cc = find_host_cc(os.environ.get("CC") or None)
    files = {p.name: p.read_text() for p in SOURCES}
    files[UNITY] = "".join(f'#include "{p.name}"\n' for p in SOURCES)  # intgemm.c includes stdlib.h before its poison

    def write(folder: Path) -> Path:
        for name, text in files.items():
            (folder / name).write_text(text)
        return folder / UNITY

    got = cached_shared_library("intgemm", cc, HOST_KERNEL_CFLAGS, files, compiler_version(cc), write)
    if isinstance(got, Path):
        return got
    raise RuntimeError(f"{cc} failed: {got.stderr.strip()}")


def variant() -> str | None:
    """The kernel variant in use ('avx512vnni', 'avx2', 'neon', 'portable'), or None on the NumPy path."""
    so = lib()
    return so.igemm_variant().decode() if so is not None else None


def force_variant(name: str | None) -> bool:
    """Pin a kernel variant for tests (None: the best this CPU has); False if this CPU cannot run it."""
    so = lib()
    return so is not None and so.igemm_force(-1 if name is None else VARIANTS.index(name)) >= 0


def plan(a_max: int, b_max: int) -> tuple[int, int]:
    """Limb widths (sa, sb) for |a| <= a_max, |b| <= b_max; 0 keeps an operand whole (int16, as it is).

    Limb bounds la, lb (the whole operand's maximum, or 2**(s-1) for s-bit limbs) satisfy
    la * lb <= LIMB_PRODUCT_MAX, so every chunk of :func:`chunk_pairs` covers at least 31 K-pairs.
    """
    if a_max < 2**15 and b_max < 2**15 and a_max * b_max <= LIMB_PRODUCT_MAX:
        return 0, 0
    if min(a_max, b_max) <= WHOLE_MAX:
        s = min(16, (LIMB_PRODUCT_MAX // max(1, min(a_max, b_max))).bit_length())
        return (0, s) if a_max <= b_max else (s, 0)
    return 13, 13


def limbs(x: np.ndarray, x_max: int, s: int, order: str = "K") -> list[tuple[np.ndarray, int, int]]:
    """[(limb as int16 in ``order``, its bound, its weight exponent)]: x = sum limb * 2**exponent, exactly.

    Balanced s-bit limbs: with low = x mod 2**s (x & mask) and carry = low >= 2**(s-1), the limb is
    low - carry * 2**s, in [-2**(s-1), 2**(s-1)), and the rest floor(x / 2**s) + carry (the arithmetic shift floors
    by definition, which is what this identity needs: nothing here is a truncating division).  No intermediate
    leaves int64, even at |x| = 2**63 - 1.
    """
    if s == 0:
        return [(np.asarray(x, dtype=np.int16, order=order), x_max, 0)]
    half, mask = 1 << (s - 1), (1 << s) - 1
    out, rest, m, e = [], np.asarray(x, dtype=np.int64, order=order), x_max, 0
    while m > half - 1:
        low = rest & mask
        carry = low >= half
        out.append(((low - (carry << s)).astype(np.int16), half, e))
        rest = (rest >> s) + carry
        m, e = (m + half) >> s, e + s
    out.append((rest.astype(np.int16), m, e))
    return out


def chunk_pairs(la: int, lb: int) -> int:
    """K-pairs per int32 partial sum: 2 * pairs * la * lb <= INT32_MAX, so no partial sum can overflow."""
    return max(1, INT32_MAX // (2 * max(1, la) * max(1, lb)))


def _strided16(b: np.ndarray) -> np.ndarray:
    """b as int16 with element strides (no copy when it already is; a cast keeps b's memory order: W.T stays a
    strided view of a row-major copy, which the packing reads as fast)."""
    if b.dtype != np.int16:
        b = b.astype(np.int16, order="K")
    if b.strides[0] % 2 or b.strides[1] % 2 or min(b.strides) < 0:
        b = np.ascontiguousarray(b)
    return b


def _addr(x: np.ndarray) -> int:
    """x's data address: through the buffer protocol for a writable C-contiguous x (0.25 us against 1.7 us for
    ``x.ctypes.data``, ~40 times a step), else the array interface."""
    try:
        return ctypes.addressof(_CHAR.from_buffer(x))
    except (TypeError, ValueError, BufferError):
        return x.__array_interface__["data"][0]


_CHAR = ctypes.c_char


_local = threading.local()  # per thread: the packed-B buffer (reused, grown when too small) and its address


def _scratch_for(k: int, n16: int) -> int:
    size = (k + 1) // 2 * n16 * 2
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < size:
        _local.buf = np.empty(max(size, 2 * (0 if buf is None else buf.size)), dtype=np.int16)
        _local.addr = _addr(_local.buf)
    return _local.addr


def _run(a, b, n: int, c, o, kcp: int, shift: int, add: int, sf: int) -> int:
    """One igemm_run call on int16 limbs a [M, K] and b [K, N] into c (int64) or o (int8), both [M, N16];
    b None: the B packed by the previous call."""
    if a.dtype != np.int16 or a.strides[1] != 2 or a.strides[0] % 2 or a.strides[0] < 0:
        a = np.ascontiguousarray(a, dtype=np.int16)  # int16 rows with contiguous K, as the kernel reads A
    m, k = a.shape
    lda = a.strides[0] // 2 if m > 1 else k
    out = c if o is None else o
    bp, rs, cs = None, 0, 0
    if b is not None:
        b = _strided16(b)
        bp, rs, cs = _addr(b), b.strides[0] // 2, b.strides[1] // 2
    return lib().igemm_run(m, n, k, _addr(a), lda, bp, rs, cs, _scratch_for(k, out.shape[1]),
                           None if c is None else _addr(c), None if o is None else _addr(o), kcp, shift, add, sf)


def matmul(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int) -> np.ndarray:
    """Exact ``a @ b`` (int64 [M, N]) of integer a [M, K] and b [K, N] with |a| <= a_max, |b| <= b_max, on the
    native kernel; the caller has checked a_max * b_max * K < 2**63 and that :func:`lib` is not None."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), dtype=np.int64)
    sa, sb = plan(a_max, b_max)
    c = np.empty((m, -(-n // 16) * 16), dtype=np.int64)  # the first limb product stores, the others add
    if sa == sb == 0:  # both whole: one call (the small products of the heads, every step)
        _run(a, b, n, c, None, chunk_pairs(a_max, b_max), 0, 0, 0)
        return c[:, :n]
    a_parts = limbs(a, a_max, sa, order="C")  # rows with contiguous K, as the kernel reads A
    first = 1
    for bx, lb, eb in limbs(b, b_max, sb):
        for i, (ax, la, ea) in enumerate(a_parts):  # B is packed once per limb, by the first call
            rows = np.flatnonzero(ax.any(axis=1)) if i and not first else None
            if rows is not None and len(rows) <= m // 2:
                # A's upper limbs are zero on most rows where a few values pass the first limb (the error of a
                # block, |delta| mostly < 2**15): only the rows that have one take part (zero rows add nothing)
                if len(rows):
                    part = np.empty((len(rows), c.shape[1]), dtype=np.int64)
                    _run(ax[rows], None, n, part, None, chunk_pairs(la, lb), ea + eb, 0, 0)
                    c[rows] += part
                continue
            _run(ax, None if i else bx, n, c, None, chunk_pairs(la, lb), ea + eb, 1 - first, 0)
            first = 0
    return c[:, :n]


def matmul_scaled(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int, sf: int) -> np.ndarray | None:
    """NITRO-Scaling of ``a @ b`` (int8 [M, N], layers.scaling's result) in one pass when both operands are int16 as
    they are and one int32 chunk covers K (the sums stay in registers); else None (the caller takes the int64
    product and scales it)."""
    m, k = a.shape
    n = b.shape[1]
    if plan(a_max, b_max) != (0, 0) or chunk_pairs(a_max, b_max) < (k + 1) // 2 or 0 in (m, n, k):
        return None
    o = np.empty((m, -(-n // 16) * 16), dtype=np.int8)
    return o[:, :n] if _run(a, b, n, None, o, 0, 0, 0, sf) else None


def gather_rows(d: np.ndarray, row: np.ndarray, x: np.ndarray, d_max: int) -> np.ndarray:
    """G [C, K] int64 with G[f] = sum_i d[f, i] * x[row[f, i]] for int64 d, row [C, n] and int8/int16 x [rows, K];
    |d| <= d_max; the caller has checked d_max * max|x| * n < 2**63 and that :func:`lib` is not None."""
    c, n = d.shape
    d = np.ascontiguousarray(d, dtype=np.int64)
    row = np.ascontiguousarray(row, dtype=np.int64)
    if x.strides[-1] != x.itemsize:
        x = np.ascontiguousarray(x)
    g = np.empty((c, x.shape[1]), dtype=np.int64)
    fn = lib().igemm_gather_s8 if x.dtype == np.int8 else lib().igemm_gather_s16
    fn(c, n, x.shape[1], _addr(d), _addr(row), _addr(x), x.strides[0] // x.itemsize, _addr(g), int(d_max < 2**31))
    return g


@cache
def magic(d: int) -> tuple[int, int]:
    """(m, l) with floor(u / d) = (u * m) >> (63 + l) for every 0 <= u <= 2**63 (native/intgemm.c, tdiv_magic):
    l = ceil(log2 d), m = ceil(2**(63 + l) / d) < 2**64 (Granlund and Montgomery 1994, theorem 4.2, N = 63)."""
    l = (d - 1).bit_length()
    return -(-(1 << (63 + l)) // d), l


_SGD = {np.dtype(np.int16): "igemm_sgd_s16", np.dtype(np.int32): "igemm_sgd_s32"}


@cache
def sgd_params(d: int, e: int, bits: int) -> tuple[int, ...] | None:
    """The native update's parameters after w, g and out: (d, its magic m and l, e, its m and l, the int``bits``
    bounds), as igemm_sgd_s16/s32 and block.c read them; None unless 0 < d < 2**63 and 0 <= e < 2**63."""
    if not (0 < d < 2**63 and 0 <= e < 2**63):
        return None
    dm, dl = magic(d)
    em, el = magic(e) if e > 0 else (0, 0)
    return d, dm, dl, e, em, el, -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def sgd(w: np.ndarray, g: np.ndarray, d: int, e: int, bits: int) -> np.ndarray | None:
    """IntegerSGD in one AVX-512 or NEON pass: saturate(w - (tdiv(g, d) + tdiv(w, e)), bits) in w's dtype (e = 0: no
    decay); None where neither runs (scalar C is slower than optim's NumPy routes on x86) or :func:`sgd_c` refuses."""
    return sgd_c(w, g, d, e, bits) if lib().igemm_sgd_simd() else None


def sgd_c(w: np.ndarray, g: np.ndarray, d: int, e: int, bits: int) -> np.ndarray | None:
    """:func:`sgd` on whatever loop the C side runs (portable C under ``force_variant('portable')``); None unless
    w is int16/int32 with an int64 g of its shape, 0 < d < 2**63, 0 <= e < 2**63 and bits fits w's dtype."""
    name, params = _SGD.get(w.dtype), sgd_params(d, e, bits)
    if name is None or params is None or g.dtype != np.int64 or g.shape != w.shape or w.ndim == 0 or \
            bits > 8 * w.itemsize:
        return None
    shape = w.shape
    if w.ndim != 2:  # conv weights [F, C, k, k]: rows of C * k * k
        w, g = w.reshape(shape[0], -1), g.reshape(shape[0], -1)
    w = np.ascontiguousarray(w)
    if g.strides[1] != 8 or g.strides[0] % 8 or g.strides[0] < 0:
        g = np.ascontiguousarray(g)
    out = np.empty(w.shape, dtype=w.dtype)
    getattr(lib(), name)(w.shape[0], w.shape[1], _addr(w), _addr(g), g.strides[0] // 8, _addr(out), *params)
    return out.reshape(shape)
