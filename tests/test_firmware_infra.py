"""Board / emulator infrastructure tests (no neural network involved).

Needs the ARM toolchain, qemu-system-arm, unicorn/capstone/pyelftools and robotframework:
these tests FAIL (not skip) when they are missing, because CI installs them.
Only the real-Renode tests are skipped (with the reason) when `renode-test` is absent; the Renode runner's own
behaviour (one-line errors, timeouts that end the whole process group, the timeout's scaling) is tested either way
with stand-in launchers.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nitro_mcu import device as T
from nitro_mcu.device import EmulatorError, NoFloatProofError, ToolchainError, toolchain

REPO = Path(__file__).resolve().parent.parent
FW = REPO / "firmware"
RENODE = REPO / "renode"
SELFTEST = FW / "selftest.c"
ALL_TARGETS = ["m0", "m3", "m4", "m7", "m33", "rp2040"]
INPUT_BYTES = bytes((i * 37 + 11) & 0xFF for i in range(1000))


def _comparable(stdout: str) -> list[str]:
    """Selftest lines that must match the host build (everything before the 'stack' line)."""
    lines = stdout.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("stack "):
            return lines[:i]
    raise AssertionError(f"no 'stack' line in output:\n{stdout}")


def _workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "selftest_input.bin").write_bytes(INPUT_BYTES)
    return path


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("fw")
    cache: dict = {}

    def get(target: str, io: str = "semihost"):
        key = (target, io)
        if key not in cache:
            cache[key] = T.build_firmware([SELFTEST], target, root / f"{target}-{io}", io=io)
        return cache[key]
    return get


@pytest.fixture(scope="session")
def host_output(tmp_path_factory):
    d = _workdir(tmp_path_factory.mktemp("host"))
    exe = T.build_host([SELFTEST], d, name="selftest_host", sanitize=True)
    res = T.run_host(exe, cwd=d, timeout=30)
    assert res.exit_status == 0, res.stderr
    assert res.sentinel_found and res.sentinel_status == 0
    assert (d / "selftest_output.txt").read_text() == "written by selftest\n"
    return res.stdout


def _write_src(d: Path, name: str, body: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text('#include <stdint.h>\n#include "board.h"\n' + body)
    return p


# --------------------------------------------------------------------------- targets table / toolchain

def test_unknown_target_message():
    with pytest.raises(ValueError) as ei:
        T.get_target("x")
    assert str(ei.value) == "unknown target 'x'; choose one of m0, m3, m4, m7, m33, rp2040, rv32imc, rv32imac, stm32f405, stm32f205"
    with pytest.raises(ValueError, match="unknown target 'm99'"):
        T.build_firmware([SELFTEST], "m99", "/tmp/unused")


def test_targets_table():
    assert T.DEFAULT_TARGET == "m4"
    assert list(T.TARGETS) == [*ALL_TARGETS, "rv32imc", "rv32imac", "stm32f405", "stm32f205"]
    m0, m4, m33 = T.TARGETS["m0"], T.TARGETS["m4"], T.TARGETS["m33"]
    assert m0.qemu_machine == "microbit" and "-mcpu=cortex-m0plus" in m0.cpu_flags and m0.ram_size == 16 * 1024
    assert m4.qemu_machine == "mps2-an386" and m4.uart_base == 0x40004000
    assert m33.qemu_machine == "mps2-an505" and m33.uart_base == 0x50200000 and m33.code_base == 0x10000000
    rp = T.TARGETS["rp2040"]
    assert rp.cpu_flags == m0.cpu_flags and rp.arch == m0.arch and rp.qemu_machine == T.TARGETS["m3"].qemu_machine
    assert (rp.ram_size, rp.code_size) == (264 * 1024, 2 * 1024 * 1024)
    assert [t.name for t in T.TARGETS.values() if t.unaligned_trap] == ["rp2040"]
    for t in T.TARGETS.values():
        assert t.ld_path.exists()
        # the memory the fit check reads is the linker script's (RAM, CODE)
        ld = t.ld_path.read_text()
        assert f"ORIGIN = 0x{t.code_base:08X}" in ld and f"ORIGIN = 0x{t.ram_base:08X}" in ld, t.name
        assert f"LENGTH = {t.ram_size // 1024}K" in ld or f"LENGTH = {t.ram_size // (1024 * 1024)}M" in ld, t.name


def test_check_toolchain_ok():
    found = T.check_toolchain()
    assert "arm-none-eabi-gcc" in found and "qemu-system-arm" in found
    found = T.check_toolchain(isa="riscv")
    assert "riscv64-unknown-elf-gcc" in found and "qemu-system-riscv32" in found


@pytest.mark.parametrize("missing,package", [("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
                                             ("qemu-system-arm", "qemu-system-arm"),
                                             ("arm-none-eabi-objdump", "binutils-arm-none-eabi")])
def test_check_toolchain_missing(monkeypatch, missing, package):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda n, *a, **k: None if n == missing else real(n, *a, **k))
    with pytest.raises(ToolchainError) as ei:
        T.check_toolchain()
    msg = str(ei.value)
    assert "\n" not in msg and missing in msg and package in msg


def test_check_toolchain_missing_newlib(monkeypatch):
    monkeypatch.setattr(toolchain, "_checked", set())
    real_run = subprocess.run

    def fake_run(cmd, *a, **k):
        if any("-print-file-name=libc_nano.a" in str(c) for c in cmd):
            return subprocess.CompletedProcess(cmd, 0, "libc_nano.a\n", "")
        return real_run(cmd, *a, **k)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(ToolchainError, match="libnewlib-arm-none-eabi"):
        T.check_toolchain()


# --------------------------------------------------------------------------- selftest on every target

@pytest.mark.parametrize("target", ALL_TARGETS)
def test_selftest_matches_host(target, build_cache, host_output, tmp_path):
    b = build_cache(target)
    assert b.elf.exists() and b.target == target
    assert b.compiler_version.startswith("arm-none-eabi-gcc")
    for flag in ("-mthumb", "-O2", "-ffreestanding", "-Werror", "-mfloat-abi=soft",
                 "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections", "-lgcc", *T.TARGETS[target].cpu_flags):
        assert flag in b.cmd
    assert "-fwrapv" not in b.cmd     # the C is UB-free on its own: no signed overflow is defined away
    assert T.no_float_proof(b.elf) == []
    assert b.sizes["text"] > 0 and b.sizes["rodata"] > 0 and b.sizes["data"] > 0 and b.sizes["bss"] > 0

    wd = _workdir(tmp_path)
    res = T.run_qemu(b, cwd=wd, timeout=30)
    assert res.exit_status == 0 and res.sentinel_found and res.sentinel_status == 0
    assert _comparable(res.stdout) == _comparable(host_output)
    assert f"fsum {sum(INPUT_BYTES)}" in res.lines
    assert (wd / "selftest_output.txt").read_text() == "written by selftest\n"

    # stack painting: high-water mark is > 0 and < the reserved stack
    m = re.search(r"^stack (\d+) (\d+)$", res.stdout, re.M)
    used, size = int(m.group(1)), int(m.group(2))
    assert size == b.sizes["stack"]
    assert 0 < used < size


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_uart_output(target, build_cache, host_output, tmp_path):
    b = build_cache(target, "uart")
    assert "-DBOARD_IO_UART" in b.cmd
    res = T.run_qemu(b, cwd=_workdir(tmp_path), timeout=30)
    assert _comparable(res.stdout) == _comparable(host_output)
    assert res.lines[-1] == "NITRO-DONE 0"


def test_memory_usage(build_cache):
    b = build_cache("m4")
    mu = T.stack_and_ram(b.elf)
    assert mu.static_ram == b.sizes["data"] + b.sizes["bss"] == b.static_ram_bytes
    assert mu.flash == b.flash_bytes >= b.sizes["text"] + b.sizes["rodata"] + b.sizes["data"]
    assert mu.stack == 0x10000
    assert T.symbol_address(b.elf, "prof_start") is not None
    assert T.symbol_address(b.elf, "no_such_symbol") is None


def test_stack_size_override(tmp_path):
    b = T.build_firmware([SELFTEST], "m0", tmp_path / "b", stack_size=2048)
    assert b.sizes["stack"] == 2048
    res = T.run_qemu(b, cwd=_workdir(tmp_path), timeout=30)
    assert re.search(r"^stack \d+ 2048$", res.stdout, re.M)


def test_psram_section_m4(tmp_path):
    src = _write_src(tmp_path, "psram.c", """
static uint8_t big[8u * 1024u * 1024u] __attribute__((section(".psram")));
int main(void)
{
    for (uint32_t i = 0; i < sizeof big; i += 4096u) big[i] = (uint8_t)i;
    uint32_t s = 0;
    for (uint32_t i = 0; i < sizeof big; i += 4096u) s += big[i];
    board_put_u32(s); board_puts("\\nNITRO-DONE 0\\n");
    return 0;
}
""")
    b = T.build_firmware([src], "m4", tmp_path / "b")
    assert b.sizes["psram"] == 8 * 1024 * 1024 and b.static_ram_bytes < 1024
    res = T.run_qemu(b, timeout=30)
    assert res.sentinel_found


# --------------------------------------------------------------------------- no-float proof

BAD_SRC = """
volatile float f = 3.0f;
volatile int32_t x = 7;
int main(void)
{
    int32_t r = (int32_t)(x * 0.5);
    r += (int32_t)(f * (float)x);
    board_put_i32(r);
    board_puts("\\nNITRO-DONE 0\\n");
    return 0;
}
"""


def test_no_float_proof_catches_soft_float_symbols(tmp_path):
    src = _write_src(tmp_path, "bad.c", BAD_SRC)
    with pytest.raises(NoFloatProofError) as ei:
        T.build_firmware([src], "m4", tmp_path / "soft")
    msg = str(ei.value)
    assert "\n" not in msg and "symbol __" in msg and "more)" in msg
    v = ei.value.violations
    assert all(x.startswith("symbol ") for x in v)      # soft-float: no VFP instructions
    assert "symbol __aeabi_dmul" in v and "symbol __aeabi_d2iz" in v
    assert T.no_float_proof(ei.value.elf) == v


def test_no_float_proof_catches_m0_symbols(tmp_path):
    src = _write_src(tmp_path, "bad.c", BAD_SRC)
    with pytest.raises(NoFloatProofError, match="symbol __"):
        T.build_firmware([src], "m0", tmp_path / "m0")


def test_no_float_proof_catches_hard_float_instructions(tmp_path):
    src = _write_src(tmp_path, "bad.c", BAD_SRC)
    with pytest.raises(NoFloatProofError) as ei:
        T.build_firmware([src], "m4", tmp_path / "hard", extra_cflags=["-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"])
    insns = [x for x in ei.value.violations if x.startswith("instruction ")]
    assert insns, ei.value.violations
    assert any(re.search(r": v(mov|cvt|mul)", x) for x in insns)


def test_no_float_proof_hard_float_abi_integer_build_passes(tmp_path):
    b = T.build_firmware([SELFTEST], "m4", tmp_path / "m4f", extra_cflags=["-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"])
    assert T.no_float_proof(b.elf) == []
    res = T.run_qemu(b, cwd=_workdir(tmp_path), timeout=30)   # startup enables CP10/CP11
    assert res.sentinel_status == 0


def test_poison_pragma_rejects_float_keyword(tmp_path):
    src = _write_src(tmp_path, "poison.c", "#pragma GCC poison float double\nfloat g;\nint main(void){return 0;}\n")
    with pytest.raises(T.BuildError, match="poison"):
        T.build_firmware([src], "m4", tmp_path / "p")


def test_insn_regex_ignores_literal_pools():
    assert T.FLOAT_INSN_RE.match("     12c:\tee07 4a90 \tvmov\ts15, r4")
    assert T.FLOAT_INSN_RE.match("     130:\tec53 2b10 \tmrrc\t11, 1, r2, r3, cr0")
    assert not T.FLOAT_INSN_RE.match("     134:\t76543210 \t.word\t0x76543210")
    assert not T.FLOAT_INSN_RE.match("00000134 <v32.foo>:")
    assert not T.FLOAT_INSN_RE.match("     12c:\tf04f 0000 \tmov.w\tr0, #0")


# --------------------------------------------------------------------------- instruction counts

@pytest.mark.parametrize("target,io", [("m4", "semihost"), ("m0", "semihost"), ("rp2040", "semihost"),
                                       ("m4", "uart")])
def test_plugin_counts_equal_unicorn(target, io, build_cache, tmp_path):
    from nitro_mcu.device.unicorn import run_unicorn
    b = build_cache(target, io)
    q = T.run_qemu(b, cwd=_workdir(tmp_path / "q"), timeout=30, count_insns=True)
    u = run_unicorn(b.elf, target, cwd=_workdir(tmp_path / "u"), timeout=60)
    assert q.insns_total and q.insns_total > 100_000
    assert q.regions == u.regions == 2
    assert (q.insns_total, q.insns_region) == (u.insns_total, u.insns_region)
    assert u.stdout == q.stdout
    assert u.exit_status == 0


def test_plugin_cache(tmp_path):
    a = T.build_insn_plugin(tmp_path)
    b = T.build_insn_plugin(tmp_path)
    assert a == b and a.exists() and a.name == "libinsncount.so" and re.match(r"insncount_[0-9a-f]{16}$", a.parent.name)


def test_plugin_without_markers(tmp_path):
    src = _write_src(tmp_path, "nomark.c", 'int main(void){ board_puts("NITRO-DONE 0\\n"); return 0; }\n')
    b = T.build_firmware([src], "m4", tmp_path / "b")
    res = T.run_qemu(b, timeout=30, count_insns=True)
    assert res.insns_total > 0 and res.insns_region == 0 and res.regions == 0


# --------------------------------------------------------------------------- failure modes

# an unaligned access through a pointer whose misalignment GCC cannot see; ARMv6-M has no unaligned access
UNALIGNED = {
    "ldr": '__asm__ volatile ("ldr %0, [%1]" : "=l"(v) : "l"(a) : "memory");',
    "strh": '__asm__ volatile ("strh %0, [%1]" :: "l"(v), "l"(a) : "memory");',
}


@pytest.mark.parametrize("insn", sorted(UNALIGNED))
def test_rp2040_faults_on_an_unaligned_access_as_an_m0_does(insn, tmp_path):
    """On rp2040 (the M0+ binary on mps2-an385's M3) an unaligned LDR/STRH faults, as on QEMU's M0 (m0); the
    same source built without the UNALIGN_TRP write runs through on the M3, so the trap is what faults."""
    src = _write_src(tmp_path, "unaligned.c", f"""
static uint32_t buf[2] = {{0x11223344u, 0x55667788u}};
int main(void)
{{
    uintptr_t a = (uintptr_t)buf + 1u;
    uint32_t v = 0x0000BEEFu;
    __asm__ volatile ("" : "+l"(a));
    {UNALIGNED[insn]}
    board_puts(v == 0x88112233u || buf[0] == 0x11BEEF44u ? "unaligned ok\\n" : "unaligned wrong\\n");
    board_puts("NITRO-DONE 0\\n");
    return 0;
}}
""")
    rp = T.TARGETS["rp2040"]
    for target in (rp, T.TARGETS["m0"]):
        b = T.build_firmware([src], target, tmp_path / target.name)
        with pytest.raises(EmulatorError, match="fault") as ei:
            T.run_qemu(b, timeout=10)
        assert ei.value.result.exit_status == 0x7F and ei.value.result.stdout == ""
    no_trap = dataclasses.replace(rp, unaligned_trap=False)
    b = T.build_firmware([src], no_trap, tmp_path / "no_trap")
    assert "-DBOARD_UNALIGN_TRAP" not in b.cmd
    assert T.run_qemu(b, target=no_trap, timeout=10).lines == ["unaligned ok", "NITRO-DONE 0"]


CRASHES = {
    "udf": '__asm__ volatile ("udf #0");',
    "badjump": "((void (*)(void))0x30000001u)();",
}


@pytest.mark.parametrize("kind", sorted(CRASHES))
def test_crash_is_emulator_error(kind, tmp_path):
    src = _write_src(tmp_path, "crash.c", f"""
int main(void)
{{
    board_puts("before\\n");
    {CRASHES[kind]}
    board_puts("NITRO-DONE 0\\n");
    return 0;
}}
""")
    b = T.build_firmware([src], "m4", tmp_path / "b")
    with pytest.raises(EmulatorError, match="fault") as ei:
        T.run_qemu(b, timeout=10)
    assert ei.value.result.exit_status == 0x7F


def test_crash_is_emulator_error_unicorn(tmp_path):
    from nitro_mcu.device.unicorn import run_unicorn
    src = _write_src(tmp_path, "crash.c", 'int main(void){ __asm__ volatile ("udf #0"); return 0; }\n')
    b = T.build_firmware([src], "m4", tmp_path / "b")
    with pytest.raises(EmulatorError):
        run_unicorn(b.elf, "m4", timeout=10)


def test_lockup_is_emulator_error(tmp_path):
    # exception entry with an unusable stack pointer: the fault handler cannot run -> lockup / fault
    src = _write_src(tmp_path, "lockup.c", """
int main(void)
{
    __asm__ volatile ("mov sp, %0\\n\\tudf #0" :: "r"(0x30000000u) : "memory");
    return 0;
}
""")
    b = T.build_firmware([src], "m4", tmp_path / "b")
    with pytest.raises(EmulatorError, match="CPU lockup") as ei:
        T.run_qemu(b, timeout=10)
    assert "Lockup" in str(ei.value) and "\n" not in str(ei.value)


def test_missing_sentinel_is_emulator_error(tmp_path):
    src = _write_src(tmp_path, "nosentinel.c", 'int main(void){ board_puts("hello\\n"); return 0; }\n')
    b = T.build_firmware([src], "m4", tmp_path / "b")
    with pytest.raises(EmulatorError, match="sentinel"):
        T.run_qemu(b, timeout=10)
    res = T.run_qemu(b, timeout=10, check=False)
    assert res.exit_status == 0 and not res.sentinel_found and res.stdout == "hello\n"


def test_hang_hits_timeout(tmp_path):
    src = _write_src(tmp_path, "hang.c", """
int main(void)
{
    board_puts("spinning\\n");
    for (;;) { __asm__ volatile ("" ::: "memory"); }
}
""")
    b = T.build_firmware([src], "m4", tmp_path / "b")
    with pytest.raises(EmulatorError, match="timed out") as ei:
        T.run_qemu(b, timeout=3)
    assert ei.value.result.timed_out
    assert "\n" not in str(ei.value)


def test_exit_status_passthrough(tmp_path):
    src = _write_src(tmp_path, "three.c", 'int main(void){ board_puts("NITRO-DONE 3\\n"); return 3; }\n')
    b = T.build_firmware([src], "m33", tmp_path / "b")
    with pytest.raises(EmulatorError, match="unexpected exit status 3"):
        T.run_qemu(b, timeout=10)
    res = T.run_qemu(b, timeout=10, expect_status=3)
    assert res.exit_status == 3 and res.sentinel_status == 3


def test_build_error_reports_compiler_message(tmp_path):
    src = _write_src(tmp_path, "broken.c", "int main(void){ int32_t x = ; return 0; }\n")
    with pytest.raises(T.BuildError, match="error") as ei:
        T.build_firmware([src], "m4", tmp_path / "b")
    assert "broken.c" in ei.value.stderr


def test_stm32f4_board_builds(tmp_path):
    b = T.build_firmware([SELFTEST], T.EXTRA_BOARDS["stm32f4-discovery"], tmp_path / "b", io="uart",
                         defines=["SELFTEST_NO_FILE"])
    assert "-DBOARD_UART_STM32" in b.cmd
    assert T.symbol_address(b.elf, "on_reset") >= 0x08000000


# --------------------------------------------------------------------------- Renode files

def _robot_dryrun(suite: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    stub = (RENODE / "stub_keywords.robot").resolve()
    return subprocess.run([sys.executable, "-m", "robot", "--dryrun", "--output", "NONE", "--report", "NONE",
                           "--log", "NONE", "--variable", f"RENODEKEYWORDS:{stub}", str(suite)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_robot_dryrun_passes(tmp_path):
    proc = _robot_dryrun(RENODE / "smoke.robot", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout


def test_robot_dryrun_catches_misspelt_keyword(tmp_path):
    text = (RENODE / "smoke.robot").read_text()
    assert "Wait For Line On Uart" in text
    bad = tmp_path / "smoke_bad.robot"
    bad.write_text(text.replace("Wait For Line On Uart", "Wait For Line On Uartt", 1))
    proc = _robot_dryrun(bad, tmp_path)
    assert proc.returncode != 0
    assert "No keyword with name 'Wait For Line On Uartt' found" in proc.stdout


# Every Renode monitor command the files use, with where Renode documents it.  A new command needs a row here.
MONITOR_COMMANDS = [
    (r'mach create "[\w-]+"', "renode-docs source/basic/machines.md, Creating machines"),
    (r"machine LoadPlatformDescription (@\S+|\$ORIGIN/\S+)",
     "renode-docs source/basic/machines.md, Loading platforms; $ORIGIN without @: source/basic/monitor-syntax.md"),
    (r"sysbus LoadELF (@\S+|\$\w+)", "renode-docs source/basic/machines.md, Loading binaries"),
    (r"(sysbus\.uart0|\$\{UART\}) CreateFileBackend (@\S+|\$\w+) true",
     "renode-docs source/host-integration/uart.md, Redirecting to a file (immediate flush)"),
    (r"showAnalyzer sysbus\.uart0", "renode-docs source/basic/monitor-syntax.md; renode scripts/single-node/*.resc"),
    (r"start", "renode-docs source/introduction/using.md"),
    (r"pause", "renode-docs source/introduction/using.md (start / pause)"),
    (r"emulation SetGlobalAdvanceImmediately true",
     "renode-infrastructure src/Emulator/Extensions/UserInterface/MonitorTimeExtensions.cs"),
    (r'emulation SetGlobalQuantum "[0-9.]+"',
     "renode-infrastructure MonitorTimeExtensions.cs; renode scripts/single-node/icicle-kit.resc"),
    (r"sysbus\.cpu VectorTableOffset (0x[0-9A-Fa-f]+|x)",
     "renode-infrastructure src/Emulator/Cores/Arm-M/CortexM.cs (property VectorTableOffset)"),
    (r"sysbus\.cpu ExecutedInstructions",
     "renode-infrastructure src/Emulator/Peripherals/Peripherals/CPU/TranslationCPU.cs (property)"),
    (r"\$\w+\?=(@\S+|\$ORIGIN/\S+)",
     "renode-docs source/basic/monitor-syntax.md, Monitor variable types; $ORIGIN as in LoadPlatformDescription"),
    # the results' read-out: the monitor's Python (self/monitor: the Monitor), IMachine.SystemBus,
    # SystemBus.ReadDoubleWord(ulong) and ReadBytes(ulong, int); .NET's File.WriteAllBytes
    (r'python "import System; bus = monitor\.Machine\.SystemBus; n = int\(bus\.ReadDoubleWord\(System\.UInt64\(x\)\)\) '
     r"if x else 0; System\.IO\.File\.WriteAllBytes\(r'x', bus\.ReadBytes\(System\.UInt64\(x\), n\)\)\"",
     "renode-docs source/basic/monitor-syntax.md (python); renode-infrastructure src/Emulator/Extensions/"
     "UserInterface/MonitorPythonEngine.cs, src/Emulator/Main/Peripherals/Bus/SystemBus.cs"),
]


def _monitor_lines() -> list[tuple[str, str]]:
    """(file, command) for every `Execute Command` of the .robot files and every command line of the .resc."""
    out = []
    for f in sorted(RENODE.glob("*.robot")):
        if f.name == "stub_keywords.robot":
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"^\s*(?:\$\{\w+\}=\s+)?Execute Command\s{2,}(.+?)\s*$", line)
            if m:
                out.append((f.name, m.group(1)))
    for f in sorted(RENODE.glob("*.resc")):
        out += [(f.name, ln.strip()) for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return out


def test_every_renode_monitor_command_is_a_documented_one():
    lines = _monitor_lines()
    assert len(lines) >= 15 and {f for f, _ in lines} == {"harness.robot", "smoke.robot", "run.resc"}
    for f, cmd in lines:
        cmd = re.sub(r"\$\{(?!UART\})\w+\}", "x", cmd)   # Robot variables: resolved before Renode sees them
        assert any(re.fullmatch(pat, cmd) for pat, _ in MONITOR_COMMANDS), f"{f}: undocumented command {cmd!r}"
    repl = (RENODE / "mps2-an386.repl").read_text()        # the peripherals the commands name
    assert re.search(r"^cpu: CPU\.CortexM @ sysbus$", repl, re.M)
    assert re.search(r"^uart0: UART\.CMSDK_APB_UART @ sysbus 0x40004000$", repl, re.M)


def test_an_undocumented_renode_command_is_caught(monkeypatch, tmp_path):
    for name in ("smoke.robot", "harness.robot", "run.resc", "mps2-an386.repl"):
        (tmp_path / name).write_text((RENODE / name).read_text())
    (tmp_path / "run.resc").write_text((RENODE / "run.resc").read_text().replace("sysbus LoadELF $elf",
                                                                               "sysbus LoadElf $elf"))
    monkeypatch.setattr(sys.modules[__name__], "RENODE", tmp_path)
    with pytest.raises(AssertionError, match="undocumented command 'sysbus LoadElf"):
        test_every_renode_monitor_command_is_a_documented_one()


def _parse_repl(path: Path) -> dict:
    """name -> (type, address, size or None) for `name: Type @ sysbus <addr>` entries."""
    entries: dict = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.split("//")[0].rstrip()
        if not line.strip():
            continue
        m = re.match(r"^(\w+):\s*([\w.]+)\s*@\s*sysbus\s*<?\s*(0x[0-9A-Fa-f]+)", line)
        if m:
            current = m.group(1)
            entries[current] = [m.group(2), int(m.group(3), 16), None]
            continue
        m = re.match(r"^\s+size:\s*(0x[0-9A-Fa-f]+)", line)
        if m and current:
            entries[current][2] = int(m.group(1), 16)
        elif not line.startswith((" ", "\t")):
            current = None
    return {k: tuple(v) for k, v in entries.items()}


def _parse_ld_memory(path: Path) -> dict:
    mult = {"": 1, "K": 1024, "M": 1024 * 1024}
    regions = {}
    for m in re.finditer(r"^\s*(\w+)\s*\(\w+\)\s*:\s*ORIGIN\s*=\s*(0x[0-9A-Fa-f]+)\s*,\s*LENGTH\s*=\s*(\d+)([KM]?)",
                         path.read_text(), re.M):
        regions[m.group(1)] = (int(m.group(2), 16), int(m.group(3)) * mult[m.group(4)])
    return regions


def test_repl_matches_linker_script_and_targets():
    repl = _parse_repl(RENODE / "mps2-an386.repl")
    ld = _parse_ld_memory(FW / "ld" / "mps2-an386.ld")
    mem = {(addr, size) for typ, addr, size in repl.values() if typ == "Memory.MappedMemory"}
    assert set(ld) == {"CODE", "RAM", "PSRAM"}
    for region in ("CODE", "RAM", "PSRAM"):
        assert ld[region] in mem, (region, ld[region], mem)
    assert ld["CODE"] == (0x0, 4 * 1024 * 1024) and ld["PSRAM"] == (0x21000000, 16 * 1024 * 1024)
    t = T.TARGETS["m4"]
    assert (t.code_base, t.code_size) == ld["CODE"] and (t.ram_base, t.ram_size) == ld["RAM"]
    assert (t.psram_base, t.psram_size) == ld["PSRAM"]
    uarts = [(typ, addr) for typ, addr, _ in repl.values() if typ.startswith("UART.")]
    assert uarts == [("UART.CMSDK_APB_UART", t.uart_base)]
    assert repl["uart0"][1] == 0x40004000
    assert repl["nvic"][1] == 0xE000E000
    assert 'cpuType: "cortex-m4"' in (RENODE / "mps2-an386.repl").read_text()


def test_stm32_repl_matches_linker_script():
    repl = _parse_repl(RENODE / "stm32f4_discovery.repl")
    ld = _parse_ld_memory(FW / "ld" / "stm32f407.ld")
    mem = {(addr, size) for typ, addr, size in repl.values() if typ == "Memory.MappedMemory"}
    assert ld["CODE"] == (0x08000000, 1024 * 1024) and ld["CODE"] in mem
    assert ld["RAM"] == (0x20000000, 128 * 1024) and ld["RAM"] in mem
    assert ld["PSRAM"] in mem                                  # CCM
    assert repl["usart2"][:2] == ("UART.STM32_UART", T.EXTRA_BOARDS["stm32f4-discovery"].uart_base)


NO_RENODE = "renode-test is not on PATH (Renode not installed: see renode/README.md)"


@pytest.mark.skipif(shutil.which("renode-test") is None, reason=NO_RENODE)
def test_real_renode_smoke(tmp_path):
    b = T.build_firmware([SELFTEST], "m4", tmp_path / "renode", io="uart", defines=["SELFTEST_NO_FILE"])
    proc = subprocess.run(["renode-test", str(RENODE / "smoke.robot"), "-r", str(tmp_path / "results"),
                           "--variable", f"ELF:{b.elf}"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.skipif(shutil.which("renode") is None, reason="renode is not on PATH (Renode not installed: see "
                                                             "renode/README.md)")
def test_run_resc_with_its_defaults_writes_the_uart_log_of_the_readme_build(tmp_path):
    """renode/README.md's build lands in build/renode/; run.resc's default ELF and log are there, whatever
    folder Renode starts in (a relative default was looked up in Renode's own folder: the log failed)."""
    out = REPO / "build" / "renode"
    T.build_firmware([SELFTEST], "m4", out, io="uart", defines=["SELFTEST_NO_FILE"])
    log = out / "uart0.log"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(["renode", "--console", "--disable-gui", "-e", f"include @{RENODE / 'run.resc'}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    try:
        for _ in range(1200):   # up to 120 s for Renode's start on a loaded machine
            if log.is_file() and "NITRO-DONE 0" in log.read_text():
                break
            if proc.poll() is not None:
                break
            __import__("time").sleep(0.1)
        stdout = proc.communicate("quit\n", timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert log.is_file() and log.read_text().splitlines()[-1] == "NITRO-DONE 0", stdout[-3000:]


# --------------------------------------------------------------------------- RV32 and the STM32F405 part

RV32_TARGETS = ["rv32imc", "rv32imac"]
FILE_LINES = ("flen ", "fread ", "fsum ", "fwrite ")     # the selftest's semihosting file lines


@pytest.mark.parametrize("target", RV32_TARGETS)
def test_rv32_selftest_matches_host(target, build_cache, host_output, tmp_path):
    b = build_cache(target)
    assert b.compiler_version.startswith("riscv64-unknown-elf-gcc")
    for flag in ("-O2", "-ffreestanding", "-Werror", "-nostartfiles", "--specs=picolibc.specs", "-Wl,--gc-sections",
                 "-lgcc", f"-march={target}", "-mabi=ilp32"):
        assert flag in b.cmd
    assert "-mthumb" not in b.cmd and "--specs=nano.specs" not in b.cmd
    assert T.no_float_proof(b.elf) == []
    wd = _workdir(tmp_path)
    res = T.run_qemu(b, cwd=wd, timeout=30)
    assert res.cmd[0].endswith("qemu-system-riscv32") and res.exit_status == 0 and res.sentinel_status == 0
    assert _comparable(res.stdout) == _comparable(host_output)
    assert (wd / "selftest_output.txt").read_text() == "written by selftest\n"
    used, size = map(int, re.search(r"^stack (\d+) (\d+)$", res.stdout, re.M).groups())
    assert size == b.sizes["stack"] and 0 < used < size


@pytest.mark.parametrize("target", ["rv32imc", "stm32f405", "stm32f205"])
def test_uart_output_of_rv32_and_the_stm32_parts(target, build_cache, host_output, tmp_path):
    b = build_cache(target, "uart")
    res = T.run_qemu(b, cwd=_workdir(tmp_path), timeout=30)
    host = _comparable(host_output)
    if target.startswith("stm32"):  # no semihosting on the parts: no file lines, and the run ends with the exit line
        host = [ln for ln in host if not ln.startswith(FILE_LINES)]
        assert res.lines[-2:] == ["NITRO-DONE 0", "NITRO-EXIT 0"] and "-semihosting-config" not in res.cmd
        assert res.cmd[res.cmd.index("-serial") + 1] == "null"   # USART1 unconnected, USART2 on stdio
    assert _comparable(res.stdout) == host


def test_a_part_without_semihosting_refuses_the_semihosting_console(tmp_path):
    with pytest.raises(ValueError, match="no semihosting"):
        T.build_firmware([SELFTEST], "stm32f405", tmp_path / "b", io="semihost")


def test_stm32f405_fault_ends_the_run_through_the_exit_line(tmp_path):
    src = _write_src(tmp_path, "crash.c", 'int main(void){ board_puts("before\\n"); __asm__ volatile ("udf #0"); '
                                          'return 0; }\n')
    b = T.build_firmware([src], "stm32f405", tmp_path / "b", io="uart")
    with pytest.raises(EmulatorError, match="fault") as ei:
        T.run_qemu(b, timeout=10)
    assert ei.value.result.exit_status == 0x7F and ei.value.result.lines[-1] == "NITRO-EXIT 127"


def test_rv32_plugin_counts_the_same_region_over_semihosting_and_uart(build_cache, tmp_path):
    """The markers bracket the same code in both builds: the region count must agree, the totals differ."""
    a = T.run_qemu(build_cache("rv32imc"), cwd=_workdir(tmp_path / "a"), timeout=30, count_insns=True)
    u = T.run_qemu(build_cache("rv32imc", "uart"), cwd=_workdir(tmp_path / "u"), timeout=30, count_insns=True)
    assert a.regions == u.regions == 2 and a.insns_region == u.insns_region > 1000
    assert a.insns_total > 100_000 and a.insns_total != u.insns_total


RV32_CRASHES = {
    "illegal": '__asm__ volatile (".word 0");',          # an all-zero word is illegal on RISC-V
    "float": '__asm__ volatile (".option push\\n.option arch, +f\\nfmv.w.x ft0, zero\\n.option pop");',  # no F
}


@pytest.mark.parametrize("kind", sorted(RV32_CRASHES))
def test_rv32_trap_is_emulator_error(kind, tmp_path):
    src = _write_src(tmp_path, "crash.c", f'int main(void){{ board_puts("before\\n"); {RV32_CRASHES[kind]} '
                                          'board_puts("NITRO-DONE 0\\n"); return 0; }\n')
    try:
        elf = T.build_firmware([src], "rv32imc", tmp_path / "b").elf
    except NoFloatProofError as e:          # the proof sees the F instruction before it ever runs
        assert kind == "float" and any("fmv.w.x" in v for v in e.violations), e.violations
        elf = e.elf
    with pytest.raises(EmulatorError, match="fault") as ei:
        T.run_qemu(elf, "rv32imc", timeout=10)
    assert ei.value.result.exit_status == 0x7F and ei.value.result.lines == ["before"]


def test_rv32_no_float_proof_catches_soft_float_calls(tmp_path):
    src = _write_src(tmp_path, "bad.c", BAD_SRC)
    with pytest.raises(NoFloatProofError) as ei:
        T.build_firmware([src], "rv32imc", tmp_path / "soft")
    v = ei.value.violations
    assert all(x.startswith("symbol ") for x in v)      # soft-float ABI, no F/D: calls only
    assert "symbol __muldf3" in v and "symbol __fixdfsi" in v and "symbol __mulsf3" in v


def test_rv32_no_float_proof_catches_the_hard_float_abi_and_instructions(tmp_path):
    src = _write_src(tmp_path, "bad.c", BAD_SRC)
    with pytest.raises(NoFloatProofError) as ei:
        T.build_firmware([src], "rv32imac", tmp_path / "hard", extra_cflags=["-march=rv32imafdc", "-mabi=ilp32d"])
    v = ei.value.violations
    assert any(x.startswith("ELF flags") and "hard-float ABI" in x for x in v), v
    assert any(x.startswith("architecture ") and "f2p2" in x and "d2p2" in x for x in v), v
    assert any(re.search(r": f(mul|cvt|mv|l[wd])", x) for x in v), v


def test_rv32_no_float_proof_catches_f_in_a_soft_abi_build(tmp_path):
    """-march with F but the ilp32 soft-float ABI: the header flags pass, the attribute and the instructions not."""
    src = _write_src(tmp_path, "bad.c", "volatile float f = 3.0f;\nvolatile int32_t x = 7;\nint main(void)\n{\n"
                                        "    board_put_i32((int32_t)(f * (float)x));\n    return 0;\n}\n")
    with pytest.raises(NoFloatProofError) as ei:
        T.build_firmware([src], "rv32imac", tmp_path / "softf", extra_cflags=["-march=rv32imafc"])
    v = ei.value.violations
    assert not any(x.startswith("ELF flags") for x in v)
    assert any(x.startswith("architecture ") for x in v) and any(x.startswith("instruction ") for x in v), v


def test_rv32_insn_regex():
    rx = T.elf.RV_FLOAT_INSN_RE
    for line in ("80000120:\t00a57053          \tfadd.s\tft0,fa0,fa0",
                 "80000124:\t2002                \tc.fld\tfs0,0(s0)",
                 "80000128:\t6108                \tflw\tfa0,0(a0)",
                 "8000012c:\t00302573          \tcsrr\ta0,fcsr",
                 "80000130:\t00301073          \tfscsr\tzero",
                 "80000134:\t00301073          \tfrflags\ta0"):
        assert rx.match(line), line
    for line in ("80000120:\t0ff0000f          \tfence",
                 "80000124:\t0000100f          \tfence.i",
                 "80000128:\t00050513          \tmv\ta0,a0",
                 "8000012c:\t34102573          \tcsrr\ta0,mepc",
                 "80000130 <fdiv_helper>:"):
        assert not rx.match(line), line


# --------------------------------------------------------------------------- the Renode runner, without Renode

def test_generated_renode_platforms_match_the_linker_scripts(tmp_path):
    """Each core's generated .repl maps exactly its linker script's regions, and its UART where targets.py
    (and board_uart.c) put it; m4's equals the shipped mps2-an386.repl."""
    from nitro_mcu.device.renode import RENODE_PLATFORMS, platform_repl

    for name, plat in RENODE_PLATFORMS.items():
        if plat.repl is not None:
            continue
        t = T.TARGETS[name]
        f = tmp_path / f"{name}.repl"
        f.write_text(platform_repl(name))
        repl = _parse_repl(f)
        mem = {(addr, size) for typ, addr, size in repl.values() if typ == "Memory.MappedMemory"}
        assert mem == set(_parse_ld_memory(t.ld_path).values()), name
        uarts = [(typ, addr) for typ, addr, _ in repl.values() if typ.startswith("UART.")]
        assert len(uarts) == 1 and uarts[0][1] == t.uart_base, name
        assert f'cpuType: "{plat.cpu_type}"' in f.read_text() and plat.cpu_type.endswith(name[1:])
    shipped = _parse_repl(RENODE / "mps2-an386.repl")
    assert sorted(_parse_repl(tmp_path / "m4.repl").values()) == sorted(shipped.values())


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    f = bin_dir / name
    f.write_text("#!/bin/sh\n" + body)
    f.chmod(0o755)


def _pid_alive(pid: int) -> bool:
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as st:            # a zombie waiting for its parent counts as gone
        return st.read().split(")")[-1].split()[0] != "Z"


def test_renode_timeout_ends_the_whole_process_group(tmp_path, monkeypatch):
    """A renode-test that never finishes (and has started a child, as renode-test starts Renode) is ended
    with its child after the timeout: a one-line HarnessError, no process left behind."""
    import time
    from nitro_mcu.device.protocol import HarnessError
    from nitro_mcu.device.renode import run_renode_elf

    pids = tmp_path / "pids"
    _stand_in(tmp_path / "bin", "renode-test", f"{shutil.which('sleep')} 300 &\necho $$ $! > {pids}\nwait\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{_python_only(tmp_path)}")
    t0 = time.monotonic()
    with pytest.raises(HarnessError, match=r"Renode timed out after \d+ s on m4 \(the Renode processes were ended\)"):
        run_renode_elf(tmp_path / "fw.elf", "m4", timeout=2)
    assert time.monotonic() - t0 < 30
    launcher, child = (int(p) for p in pids.read_text().split())
    for _ in range(50):
        if not _pid_alive(child):
            break
        time.sleep(0.1)
    assert not _pid_alive(launcher) and not _pid_alive(child)


def _python_only(tmp_path: Path) -> Path:
    """A folder holding only python3 (this interpreter): a PATH without any installed renode-test."""
    d = tmp_path / "pyonly"
    d.mkdir(exist_ok=True)
    if not (d / "python3").exists():
        (d / "python3").symlink_to(sys.executable)
    return d


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nitro_mcu.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def _env(path: str) -> dict:
    """PATH without a C compiler: the trainer's products run on NumPy int64, asked for by name so that its one
    informational line about the missing compiler (tests/test_intgemm.py) does not mix with the error under test."""
    import os
    return dict(os.environ, PATH=path, PYTHONPATH=str(REPO), NITRO_MCU_INTGEMM="numpy")


def test_renode_missing_is_a_one_line_exit_2(tmp_path):
    proc = _cli(["verify", "mlp1", "--steps", "1", "--predictions", "1", "--emulator", "renode"],
                _env(str(_python_only(tmp_path))))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Renode is not installed" in proc.stderr, proc.stderr


def test_renode_test_without_its_python_modules_is_a_one_line_exit_2(tmp_path):
    """renode-test runs in the first python3 on PATH: one without robot/psutil/yaml is named, with the fix."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    _stand_in(tmp_path / "bin", "renode-test", "exit 0\n")
    proc = _cli(["verify", "mlp1", "--steps", "1", "--predictions", "1", "--emulator", "renode"],
                _env(f"{tmp_path / 'venv' / 'bin'}:{tmp_path / 'bin'}"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "renode-test needs Python modules missing" in proc.stderr and "robot" in proc.stderr, proc.stderr
    assert "pip install robotframework==6.1" in proc.stderr


def test_renode_crash_is_a_one_line_exit_2(tmp_path):
    """An emulator that dies without the sentinel: the reason it printed, in one line, exit 2."""
    _stand_in(tmp_path / "bin", "renode-test", "echo 'Renode crashed: Unhandled Exception: boom'\nexit 3\n")
    proc = _cli(["verify", "mlp1", "--steps", "1", "--predictions", "1", "--emulator", "renode"],
                _env(f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "Renode run failed on m4 (renode-test exit 3, sentinel missing)" in proc.stderr, proc.stderr
    assert "Unhandled Exception: boom" in proc.stderr


def test_renode_timeout_scales_with_steps_batch_and_model_size():
    from device_cases import TINY
    from nitro_mcu.codegen import convert
    from nitro_mcu.device.protocol import Session
    from nitro_mcu.device.renode import RENODE_START_S, renode_timeout
    from nitro_mcu.spec import preset
    from nitro_mcu.trainer.network import Model

    def timeout(spec, steps, batch):
        m = Model(spec, "default", 16, seed=1)
        n = int(m.input_shape[0]) if len(m.input_shape) == 1 else int(__import__("numpy").prod(m.input_shape))
        s = Session(n)
        x = __import__("numpy").zeros((batch, n), dtype="int8")
        for _ in range(steps):
            s.train(x, __import__("numpy").zeros(batch, dtype="uint8"))
        return renode_timeout(convert(m, batch=batch, train=True, name="t"), s) - RENODE_START_S

    small = timeout(TINY, 2, 4)
    assert small > 0
    assert timeout(TINY, 20, 4) == pytest.approx(10 * small)       # linear in steps
    assert 1.5 * small < timeout(TINY, 2, 8) <= 2 * small         # and with the batch (the output does not)
    assert timeout(preset("mcu_cnn"), 2, 4) > 20 * small          # and grows with the model


def test_renode_result_buffer_holds_the_results_within_half_the_free_ram():
    """The RAM result buffer is the session's result bytes while they fit half the RAM the firmware leaves free,
    else that half (the rest spills to the UART), and never below the 32-byte UART line it replaces."""
    import numpy as np
    from device_cases import TINY
    from nitro_mcu.codegen import convert
    from nitro_mcu.device.capacity import needs
    from nitro_mcu.device.protocol import Session
    from nitro_mcu.device.renode import result_ram_bytes, session_work
    from nitro_mcu.trainer.network import Model

    conv = convert(Model(TINY, "default", 16, seed=1), batch=4, train=True, name="t")
    s = Session(64)
    assert result_ram_bytes(conv, s, T.get_target("m4")) == 32                # nothing to send
    s.weights()
    out = session_work(conv, s)[1]
    assert 32 < out == result_ram_bytes(conv, s, T.get_target("m4"))
    for _ in range(2000):
        s.predict(np.zeros((10, 64), dtype=np.int8))
    plan = conv.plan
    for name in ("m0", "m4"):
        t = T.get_target(name)
        free = t.ram_size - needs(plan.model, plan.batch, t, plan.ram_bytes, plan.weight_bytes, plan.train)["ram"]
        assert result_ram_bytes(conv, s, t) == min(session_work(conv, s)[1], free // 2)
    assert result_ram_bytes(conv, s, T.get_target("m0")) < session_work(conv, s)[1]   # 16 KiB: it spills


# --------------------------------------------------------------------------- SSUB8 / SEL: a Renode 1.15.3 bug

# The DSP kernels' int8 lane maximum (templates/kernels/dsp/common.h.j2, nitro_max_s8x4): SSUB8 sets GE[i] where
# a[i] - b[i] >= 0 (ARM ARM, SSUB8), SEL takes a[i] there and b[i] elsewhere.
SSUB8_SEL_C = r"""
#include <stdint.h>
#include "board.h"
static const uint32_t in[][2] = {IN};
int main(void)
{
    for (unsigned i = 0; i < sizeof in / sizeof in[0]; ++i) {
        uint32_t d, r;
        __asm__("ssub8 %0, %2, %3\n\tsel %1, %2, %3" : "=&r"(d), "=r"(r) : "r"(in[i][0]), "r"(in[i][1]));
        board_puts("sel ");
        board_put_hex32(r);
        board_putc('\n');
    }
    board_puts("NITRO-DONE 0\n");
    board_exit(0);
}
"""
# lanes chosen so that the difference's sign and its signed overflow disagree (-121 - 21 = -142 overflows)
SSUB8_CASES = [(0x87985AA5, 0x155B24A3), (0x01332C18, 0x703A0788), (0x3A314B11, 0x69BF3DF8), (0x7F80007F, 0x807F7F80)]


def _ssub8_sel(a: int, b: int) -> int:
    """SEL after SSUB8, lane by lane, from the ARM ARM's definitions."""
    out = 0
    for lane in range(4):
        x, y = ((v >> 8 * lane) & 0xFF for v in (a, b))
        sx, sy = (v - 256 if v > 127 else v for v in (x, y))
        out |= (x if sx - sy >= 0 else y) << 8 * lane
    return out


def _ssub8_firmware(tmp_path: Path):
    src = tmp_path / "ssub8.c"
    src.write_text(SSUB8_SEL_C.replace("IN", ", ".join(f"{{0x{a:08X}u, 0x{b:08X}u}}" for a, b in SSUB8_CASES)))
    return T.build_firmware([src], "m4", tmp_path / "b", io="uart")


def _sel_lines(stdout: str) -> list[int]:
    return [int(ln.split()[1], 16) for ln in stdout.splitlines() if ln.startswith("sel ")]


def test_ssub8_sel_lane_maximum_follows_the_arm_arm_on_qemu(tmp_path):
    expect = [_ssub8_sel(a, b) for a, b in SSUB8_CASES]
    assert expect[0] == 0x155B5AA5                     # worked by hand: lanes 3, 2 from b, lanes 1, 0 from a
    r = T.run_qemu(_ssub8_firmware(tmp_path), "m4", io="uart")
    assert _sel_lines(r.stdout) == expect


@pytest.mark.skipif(shutil.which("renode-test") is None, reason=NO_RENODE)
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="Renode 1.15.3 bug: tlib sets SSUB8/SADD8's GE flags from signed overflow, not from the "
                          "sign of the lane difference (arch/arm/op_addsub.h), so SEL picks the wrong lanes; an "
                          "XPASS means a fixed Renode: update renode/README.md")
def test_ssub8_sel_lane_maximum_follows_the_arm_arm_on_renode(tmp_path):
    from nitro_mcu.device.renode import run_renode_elf

    r = run_renode_elf(_ssub8_firmware(tmp_path).elf, "m4", timeout=120)
    assert _sel_lines(r.stdout) == [_ssub8_sel(a, b) for a, b in SSUB8_CASES]


def test_the_apt_packages_of_the_toolchain_doc_are_those_setup_installs():
    """docs/toolchain.md §1 is what a user installs by hand: missing cmake or g++ there, the CMake examples fail."""
    setup = (REPO / "scripts" / "setup.sh").read_text().replace("\\\n", " ")
    installs = set(re.search(r'^APT_PKGS="([^"]+)"', setup, re.M).group(1).split())
    doc = (REPO / "docs" / "toolchain.md").read_text().replace("\\\n", " ")
    cmd = re.search(r"^apt-get install -y --no-install-recommends (.+)$", doc, re.M).group(1).split()
    assert set(cmd) == installs and len(cmd) == len(installs)
    readme = " ".join((REPO / "README.md").read_text().split())      # README's set-up paragraph names them too
    listed = re.search(r"which is idempotent: apt `([^`]+)`", readme).group(1).split()
    assert set(listed) == installs and len(listed) == len(installs)
