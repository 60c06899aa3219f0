"""Build caches are keyed by every input: sources and headers, linker scripts, all flags, the compiler's version.

Covers the firmware cache (device/firmware.py), the host shared library of device/compiled.py and the QEMU
plugin.  A compiler version is faked with a wrapper script first on PATH.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nitro_mcu import device as T
from nitro_mcu.codegen import convert
from nitro_mcu.device import compiled
from nitro_mcu.device import firmware, flags, qemu
from nitro_mcu.trainer.network import Model

GENERATED = {"gen.c": '#include "gen.h"\nint main(void) { return GEN; }\n', "gen.h": "#define GEN 0\n"}
TINY = dict(kind="mlp", input_shape=[16], num_classes=4, hidden=[8], fwd_decay_inv=12000, head_decay_inv=3000)


def _key(generated=GENERATED, target="m4", **options) -> str:
    return firmware.cache_key(["gen.c"], target, generated, name="k", **options)


def _fake_compiler(bin_dir: Path, name: str, version: str) -> Path:
    """``bin_dir/name``: says ``version`` to --version, else runs the real ``name``."""
    rest = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if Path(d) != bin_dir)
    real = shutil.which(name, path=rest)
    path = bin_dir / name
    old = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\nexec {real} "$@"\n')
    path.chmod(0o755)
    if old is not None:   # the version probe is cached by path and mtime: make the rewrite visible
        os.utime(path, ns=(old, old + 1_000_000_000))
    return path


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def test_firmware_key_covers_sources_flags_and_defines(monkeypatch):
    k = _key()
    assert _key() == k
    assert _key({**GENERATED, "gen.h": "#define GEN 1\n"}) != k          # a generated header
    assert _key({**GENERATED, "gen.c": GENERATED["gen.c"] + "\n"}) != k  # a generated source
    assert _key(target="m3") != k                                        # the CPU flags and the linker script
    assert _key(defines=["X=1"]) != k and _key(defines=["X=1"]) != _key(defines=["X=2"])
    assert _key(opt="-Os") != k
    assert _key(io="uart") != k
    assert _key(stack_size=2048) != k
    assert _key(extra_cflags=["-fno-strict-aliasing"]) != k
    monkeypatch.setattr(flags, "FIRMWARE_CFLAGS", (*flags.FIRMWARE_CFLAGS, "-fno-strict-aliasing"))
    k_common = _key()
    assert k_common != k                                                 # a common compile flag
    monkeypatch.setattr(firmware, "FIRMWARE_LDFLAGS", (*firmware.FIRMWARE_LDFLAGS, "-Wl,--no-relax"))
    assert _key() != k_common                                            # a link flag


def test_firmware_key_covers_linker_scripts_headers_and_board_sources(tmp_path):
    fw = tmp_path / "fw"
    shutil.copytree(T.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("qemu_plugin"))
    out = tmp_path / "out"
    cmd = [a.replace(str(T.FIRMWARE_DIR), str(fw)) for a in
           T.firmware_command("arm-none-eabi-gcc", "m4", [T.FIRMWARE_DIR / "selftest.c"], out)]
    assert not any("common.ld" in a or "board.h" in a for a in cmd)    # read through -L and -I only
    k = firmware.build_key(cmd, out)
    for f in ("ld/common.ld", "ld/mps2-an386.ld", "ld/microbit.ld", "board.h", "startup.c", "selftest.c"):
        p = fw / f
        orig = p.read_bytes()
        p.write_bytes(orig + b"\n/* changed */\n")
        assert firmware.build_key(cmd, out) != k, f
        p.write_bytes(orig)
    assert firmware.build_key(cmd, out) == k


def test_firmware_key_covers_the_compiler_version(fake_bin):
    _fake_compiler(fake_bin, "arm-none-eabi-gcc", "arm-none-eabi-gcc (fake) 12.2.1")
    k = _key()
    assert _key() == k
    _fake_compiler(fake_bin, "arm-none-eabi-gcc", "arm-none-eabi-gcc (fake) 12.3.0")
    assert _key() != k


def test_firmware_cache_reuses_a_build_of_the_same_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("NITRO_MCU_CACHE", str(tmp_path))
    a = firmware.build_cached(["gen.c"], "m4", GENERATED, name="k")
    assert a.elf.parent == tmp_path / f"fw_k_{_key()}" and a.elf.is_file()
    assert (a.elf.parent / "gen.h").read_text() == GENERATED["gen.h"]
    b = firmware.build_cached(["gen.c"], "m4", GENERATED, name="k")
    assert (b.elf, b.cmd, b.sizes) == (a.elf, a.cmd, a.sizes)
    c = firmware.build_cached(["gen.c"], "m4", {**GENERATED, "gen.h": "#define GEN 1\n"}, name="k")
    assert c.elf.parent != a.elf.parent


def test_host_shared_library_key_covers_flags_and_compiler_version(tmp_path, monkeypatch, fake_bin):
    monkeypatch.setenv("NITRO_MCU_CACHE", str(tmp_path / "cache"))
    conv = convert(Model(TINY, "default", 16, seed=1), batch=2, train=True, name="keyed")
    cc = str(_fake_compiler(fake_bin, "gcc", "gcc (fake) 12.2.0"))
    lib = compiled.build_shared(conv, cc)
    assert compiled.build_shared(conv, cc) == lib
    assert compiled.build_shared(conv, cc, extra_flags=["-DNITRO_KEY_TEST"]) != lib
    monkeypatch.setattr(compiled, "HOST_SHARED_CFLAGS", (*flags.HOST_SHARED_CFLAGS, "-fno-strict-aliasing"))
    assert compiled.build_shared(conv, cc) != lib
    monkeypatch.undo()
    monkeypatch.setenv("NITRO_MCU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    _fake_compiler(fake_bin, "gcc", "gcc (fake) 12.3.0")
    assert compiled.build_shared(conv, cc) != lib


def test_qemu_plugin_key_covers_flags_and_compiler_version(tmp_path, monkeypatch, fake_bin):
    _fake_compiler(fake_bin, "gcc", "gcc (fake) 12.2.0")
    so = qemu.build_insn_plugin(tmp_path)
    assert qemu.build_insn_plugin(tmp_path) == so
    _fake_compiler(fake_bin, "gcc", "gcc (fake) 12.3.0")
    so2 = qemu.build_insn_plugin(tmp_path)
    assert so2 != so
    monkeypatch.setattr(qemu, "PLUGIN_CFLAGS", (*flags.PLUGIN_CFLAGS, "-fno-strict-aliasing"))
    assert qemu.build_insn_plugin(tmp_path) not in (so, so2)
