"""The native integer kernels built for AArch64 (NEON and portable C) equal the Python-int reference, run under
qemu-user on this x86 host: tests/test_intgemm.py's variant tests, unchanged, with intgemm.lib() answered by
native/intgemm.c cross-compiled into tests/intgemm_driver.c (one qemu-aarch64 process, the calls piped to it).

This proves bit-exactness only; qemu's speed says nothing about an ARM core's, so nothing here is timed."""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nitro_mcu.device.flags import HOST_KERNEL_CFLAGS
from nitro_mcu.trainer import intgemm

CC, QEMU, SYSROOT = "aarch64-linux-gnu-gcc", "qemu-aarch64", Path("/usr/aarch64-linux-gnu")
if not (shutil.which(CC) and shutil.which(QEMU) and (SYSROOT / "include" / "stdint.h").exists()):
    pytest.skip(f"no {CC} (with libc6-dev-arm64-cross) or {QEMU} here: the AArch64 kernels are not checked "
                "(scripts/setup.sh installs them)", allow_module_level=True)

from test_intgemm import (  # noqa: E402,F401  (collected again here: the same tests on the AArch64 build)
    assert_trains_identically_on_the_kernels_and_on_int64,
    test_fused_scaling_equals_tdiv_and_clip_at_every_rounding_edge,
    test_fused_scaling_of_long_sums_at_the_int32_edge,
    test_int32_chunk_is_exact_at_its_limit_and_wraps_one_pair_past_it,
    test_native_sgd_equals_the_python_update_at_every_bound,
    test_native_sgd_on_conv_weights_equals_the_int64_update,
    test_pooled_gradient_gather_equals_the_numpy_route,
    test_products_equal_python_ints_on_random_shapes_and_bounds,
    test_products_split_over_threads_equal_the_single_thread_products,
    test_upper_limbs_on_a_few_rows_take_only_those_rows_and_stay_exact,
)

DRIVER = Path(__file__).resolve().parent / "intgemm_driver.c"
RUN, VARIANT, FORCE, GATHER, SGD, SGD_SIMD, THREADS = range(1, 8)  # the driver's requests


class QemuLib:
    """The entry points of intgemm.lib() (same arguments: sizes, host addresses, None for NULL), each call's operands
    copied from host memory to the AArch64 process and its outputs copied back."""

    def __init__(self, exe: Path):
        self.proc = subprocess.Popen([QEMU, "-L", str(SYSROOT), str(exe)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def _call(self, op: int, args, data: bytes, n_out: int) -> tuple[int, bytes]:
        words = [v - (1 << 64) if v >= 1 << 63 else v for v in (op, *args)]  # uint64 magic numbers as int64 bits
        self.proc.stdin.write(struct.pack(f"<{len(words)}q", *words) + data)
        self.proc.stdin.flush()
        head = self.proc.stdout.read(8)
        assert len(head) == 8, f"the AArch64 driver died (exit {self.proc.poll()})"
        out = self.proc.stdout.read(n_out)
        assert len(out) == n_out
        return struct.unpack("<q", head)[0], out

    def igemm_run(self, m, n, k, a, lda, b, rsb, csb, scratch, c, o, kcp, shift, add, sf):
        a_len = (m - 1) * lda + k
        b_len = (k - 1) * rsb + (n - 1) * csb + 1 if b is not None else 0
        out = m * (-(-n // 16) * 16)
        data = ctypes.string_at(a, 2 * a_len) + (ctypes.string_at(b, 2 * b_len) if b_len else b"")
        data += ctypes.string_at(c, 8 * out) if c is not None else b""
        n_out = 8 * out if c is not None else out if o is not None else 0
        r, got = self._call(RUN, (m, n, k, lda, rsb, csb, kcp, shift, add, sf, a_len, b_len, c is not None,
                                  o is not None), data, n_out)
        if n_out:
            ctypes.memmove(c if c is not None else o, got, n_out)
        return r

    def igemm_variant(self) -> bytes:
        r, _ = self._call(VARIANT, (), b"", 0)
        return self.proc.stdout.read(r)

    def igemm_force(self, v: int) -> int:
        return self._call(FORCE, (v,), b"", 0)[0]

    def igemm_sgd_simd(self) -> int:
        return self._call(SGD_SIMD, (), b"", 0)[0]

    def igemm_threads(self, n: int) -> int:
        return self._call(THREADS, (n,), b"", 0)[0]

    def _gather(self, size, c, n, k, d, row, x, ldx, g, narrow):
        rows = np.frombuffer(ctypes.string_at(row, 8 * c * n), dtype=np.int64)
        x_len = int(rows.max()) * ldx + k if rows.size else 0
        data = ctypes.string_at(d, 8 * c * n) + rows.tobytes() + ctypes.string_at(x, size * x_len)
        _, got = self._call(GATHER, (size, c, n, k, ldx, narrow, x_len), data, 8 * c * k)
        ctypes.memmove(g, got, len(got))

    def igemm_gather_s8(self, *args):
        self._gather(1, *args)

    def igemm_gather_s16(self, *args):
        self._gather(2, *args)

    def _sgd(self, size, rows, cols, w, g, ldg, out, d, dm, dl, e, em, el, lo, hi):
        g_len = (rows - 1) * ldg + cols
        data = ctypes.string_at(w, size * rows * cols) + ctypes.string_at(g, 8 * g_len)
        _, got = self._call(SGD, (size, rows, cols, ldg, d, dm, dl, e, em, el, lo, hi, g_len), data,
                            size * rows * cols)
        ctypes.memmove(out, got, len(got))

    def igemm_sgd_s16(self, *args):
        self._sgd(2, *args)

    def igemm_sgd_s32(self, *args):
        self._sgd(4, *args)


@pytest.fixture(scope="module")
def qemu_lib(tmp_path_factory):
    exe = tmp_path_factory.mktemp("aarch64") / "intgemm_driver"
    flags = [f for f in HOST_KERNEL_CFLAGS if f not in ("-shared", "-fPIC")]
    subprocess.run([CC, *flags, str(intgemm.SOURCE), str(DRIVER), "-o", str(exe)], check=True)
    lib = QemuLib(exe)
    yield lib
    lib.proc.stdin.close()
    lib.proc.wait(timeout=60)


@pytest.fixture(autouse=True)
def on_aarch64(qemu_lib, monkeypatch):
    """Every test of this module calls the AArch64 build."""
    monkeypatch.setattr(intgemm, "lib", lambda: qemu_lib)
    yield
    qemu_lib.igemm_force(-1)


@pytest.fixture(params=["neon", "portable"])
def variant(request, on_aarch64):
    assert intgemm.force_variant(request.param)
    return request.param


@pytest.fixture(params=["neon"])
def simd(request, on_aarch64):
    assert intgemm.force_variant(request.param)
    return request.param


def test_aarch64_build_runs_neon_by_default_and_no_x86_variant():
    assert intgemm.variant() == "neon" and intgemm.lib().igemm_sgd_simd() == 1
    assert not intgemm.force_variant("avx2") and not intgemm.force_variant("avx512vnni")
    assert intgemm.force_variant("portable") and intgemm.lib().igemm_sgd_simd() == 0


@pytest.mark.parametrize("name", ["mlp1", "cnn_small", "mcu_cnn"])
def test_presets_train_identically_on_the_aarch64_kernels_and_on_int64(name):
    """Whole training steps (forward with fused scaling, errors with limbs, the pooled gradient, the NEON update)."""
    assert_trains_identically_on_the_kernels_and_on_int64(name, 4, 2)
