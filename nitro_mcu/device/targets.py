"""Cortex-M targets: cross-compile firmware, prove it float-free, run it in QEMU.

Pure Python (stdlib only at import time).  Everything here follows
``docs/toolchain.md``: arm-none-eabi-gcc 12.2 from Debian, qemu-system-arm 7.2,
semihosting for exit status and file I/O, a sentinel line ``NITRO-DONE <status>``,
the three-level no-float proof and the project's own TCG instruction-count plugin.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "Target", "TARGETS", "EXTRA_BOARDS", "DEFAULT_TARGET", "FIRMWARE_DIR", "LD_DIR", "PLUGIN_DIR",
    "ToolchainError", "BuildError", "NoFloatProofError", "EmulatorError",
    "BuildResult", "RunResult", "MemoryUsage",
    "get_target", "check_toolchain", "base_cflags", "build_firmware", "no_float_proof",
    "run_qemu", "qemu_command", "build_insn_plugin", "section_sizes", "stack_and_ram",
    "symbol_address", "build_host", "run_host", "SENTINEL_RE",
]

_PKG_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = _PKG_DIR.parent
# a checkout has firmware/ at the repository root; an installed wheel carries it as nitro_mcu/firmware
_FW_DEFAULT = REPO_ROOT / "firmware" if (REPO_ROOT / "firmware" / "harness.c").is_file() \
    else _PKG_DIR / "firmware"
FIRMWARE_DIR = Path(os.environ.get("NITRO_FIRMWARE_DIR", _FW_DEFAULT))
LD_DIR = FIRMWARE_DIR / "ld"
PLUGIN_DIR = FIRMWARE_DIR / "qemu_plugin"
BOARD_SOURCES = ("startup.c", "board_semihost.c", "board_uart.c")

SENTINEL_RE = re.compile(r"^NITRO-DONE (-?\d+)\s*$", re.M)


# --------------------------------------------------------------------------- targets

@dataclasses.dataclass(frozen=True)
class Target:
    name: str                 # m0, m3, m4, m7, m33
    core: str                 # human-readable core name
    cpu_flags: tuple          # compiler flags selecting the CPU
    qemu_machine: str         # qemu-system-arm -M
    linker_script: str        # file name in firmware/ld/
    uart_kind: str            # "cmsdk" or "nrf51"
    uart_base: int
    code_base: int
    code_size: int
    ram_base: int
    ram_size: int
    psram_base: int | None    # None: no PSRAM on this machine
    psram_size: int
    unicorn_cpu: str          # name of the UC_CPU_ARM_* constant
    arch: str                 # armv6-m, armv7-m, armv7e-m, armv8-m.main

    @property
    def ld_path(self) -> Path:
        return LD_DIR / self.linker_script

    def uart_defines(self) -> list[str]:
        kind = {"cmsdk": "BOARD_UART_CMSDK", "nrf51": "BOARD_UART_NRF51", "stm32": "BOARD_UART_STM32"}[self.uart_kind]
        return ["BOARD_IO_UART", kind, f"BOARD_UART_BASE=0x{self.uart_base:08X}u"]


KiB = 1024
MiB = 1024 * 1024

TARGETS: dict[str, Target] = {
    "m0": Target("m0", "Cortex-M0+ (runs on QEMU's Cortex-M0)", ("-mcpu=cortex-m0plus",), "microbit",
                 "microbit.ld", "nrf51", 0x40002000, 0x00000000, 256 * KiB, 0x20000000, 16 * KiB,
                 None, 0, "UC_CPU_ARM_CORTEX_M0", "armv6-m"),
    "m3": Target("m3", "Cortex-M3", ("-mcpu=cortex-m3",), "mps2-an385",
                 "mps2-an385.ld", "cmsdk", 0x40004000, 0x00000000, 4 * MiB, 0x20000000, 4 * MiB,
                 0x21000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M3", "armv7-m"),
    "m4": Target("m4", "Cortex-M4 (soft-float ABI)", ("-mcpu=cortex-m4",), "mps2-an386",
                 "mps2-an386.ld", "cmsdk", 0x40004000, 0x00000000, 4 * MiB, 0x20000000, 4 * MiB,
                 0x21000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M4", "armv7e-m"),
    "m7": Target("m7", "Cortex-M7 (soft-float ABI)", ("-mcpu=cortex-m7",), "mps2-an500",
                 "mps2-an500.ld", "cmsdk", 0x40004000, 0x00000000, 4 * MiB, 0x20000000, 4 * MiB,
                 0x60000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M7", "armv7e-m"),
    "m33": Target("m33", "Cortex-M33 (Secure, soft-float ABI)", ("-mcpu=cortex-m33",), "mps2-an505",
                  "mps2-an505.ld", "cmsdk", 0x50200000, 0x10000000, 4 * MiB, 0x38000000, 4 * MiB,
                  0x80000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M33", "armv8-m.main"),
}
DEFAULT_TARGET = "m4"

# Real boards without a QEMU machine: build-only (UNVERIFIED on hardware / Renode).
# Pass the Target object itself to build_firmware(); run_qemu() does not accept them.
EXTRA_BOARDS: dict[str, Target] = {
    "stm32f4-discovery": Target("stm32f4-discovery", "STM32F407VG Cortex-M4 (soft-float ABI)", ("-mcpu=cortex-m4",),
                                "", "stm32f407.ld", "stm32", 0x40004400, 0x08000000, 1 * MiB,
                                0x20000000, 128 * KiB, 0x10000000, 64 * KiB, "UC_CPU_ARM_CORTEX_M4", "armv7e-m"),
}


def get_target(target: "str | Target") -> Target:
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except (KeyError, TypeError):
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}") from None


# --------------------------------------------------------------------------- errors

class ToolchainError(RuntimeError):
    """A required program or library is missing (message names the apt package)."""


class BuildError(RuntimeError):
    """The cross compiler or linker failed.  ``.stderr`` holds the full compiler output."""

    def __init__(self, message: str, cmd: Sequence[str] = (), stderr: str = ""):
        super().__init__(message)
        self.cmd = list(cmd)
        self.stderr = stderr


class NoFloatProofError(RuntimeError):
    """The linked ELF contains floating-point symbols or instructions."""

    def __init__(self, message: str, elf: Path | None = None, violations: Sequence[str] = ()):
        super().__init__(message)
        self.elf = elf
        self.violations = list(violations)


class EmulatorError(RuntimeError):
    """The firmware did not run to a clean exit with the sentinel line."""

    def __init__(self, message: str, result: "RunResult | None" = None):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- toolchain

_TOOLS = {
    # program: apt package
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "arm-none-eabi-objdump": "binutils-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
}
_checked: set = set()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} not found; install it with: apt-get install -y --no-install-recommends "
                             f"{_TOOLS.get(name, name)}")
    return path


def check_toolchain(qemu: bool = True, host_cc: bool = False) -> dict[str, str]:
    """Check that the cross toolchain (and QEMU) are usable; returns program -> path.

    Raises ToolchainError with a one-line message naming the missing program and its apt package.
    """
    names = ["arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-objdump", "arm-none-eabi-size"]
    if qemu:
        names.append("qemu-system-arm")
    found = {n: _tool(n) for n in names}
    if host_cc:
        if shutil.which("gcc") is None:
            raise ToolchainError("gcc not found; install it with: apt-get install -y gcc")
        found["gcc"] = shutil.which("gcc")
    if "newlib" not in _checked:
        proc = subprocess.run([found["arm-none-eabi-gcc"], "-mthumb", "-mcpu=cortex-m4",
                               "-print-file-name=libc_nano.a"], capture_output=True, text=True)
        p = proc.stdout.strip()
        if proc.returncode != 0 or not os.path.isabs(p) or not os.path.exists(p):
            raise ToolchainError("newlib (libc_nano.a) not found for arm-none-eabi-gcc; install it with: "
                                 "apt-get install -y --no-install-recommends libnewlib-arm-none-eabi")
        _checked.add("newlib")
    return found


_version_cache: dict[str, str] = {}


def _first_line_version(prog: str) -> str:
    if prog not in _version_cache:
        out = subprocess.run([prog, "--version"], capture_output=True, text=True).stdout
        _version_cache[prog] = out.splitlines()[0].strip() if out else "unknown"
    return _version_cache[prog]


# --------------------------------------------------------------------------- build

COMMON_CFLAGS = (
    "-mthumb", "-g", "-std=c11", "-ffreestanding", "-fno-common", "-ffunction-sections",
    "-fdata-sections", "-fwrapv", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion",
    "-Wdouble-promotion", "-Wfloat-conversion", "-Werror", "-mfloat-abi=soft",
)
LINK_FLAGS = ("-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")


def base_cflags(target: "str | Target", opt: str = "-O2") -> list[str]:
    """Compile flags for a target (toolchain.md §2), without include dirs or defines."""
    t = get_target(target)
    return [*t.cpu_flags, COMMON_CFLAGS[0], opt, *COMMON_CFLAGS[1:]]


@dataclasses.dataclass
class BuildResult:
    elf: Path
    target: str
    io: str
    cmd: list                 # the exact compiler command (argv)
    compiler_version: str     # first line of `arm-none-eabi-gcc --version`
    sizes: dict               # section name -> bytes (text, rodata, data, bss, stack, psram, ...)
    map_file: Path | None = None

    @property
    def cmd_str(self) -> str:
        return shlex.join(str(c) for c in self.cmd)

    @property
    def flash_bytes(self) -> int:
        s = self.sizes
        return s.get("text", 0) + s.get("rodata", 0) + s.get("data", 0) + s.get("ARM.exidx", 0)

    @property
    def static_ram_bytes(self) -> int:
        return self.sizes.get("data", 0) + self.sizes.get("bss", 0)

    @property
    def stack_bytes(self) -> int:
        return self.sizes.get("stack", 0)


def build_firmware(sources: Iterable["str | Path"], target: "str | Target", out_dir: "str | Path",
                   include_dirs: Iterable["str | Path"] = (), defines: Iterable[str] = (),
                   io: str = "semihost", opt: str = "-O2", *, name: str = "fw",
                   board: bool = True, extra_cflags: Sequence[str] = (),
                   stack_size: int | None = None, timeout: float = 300) -> BuildResult:
    """Cross-compile and link ``sources`` (plus startup/board code) into ``out_dir/<name>.elf``.

    io: 'semihost' (console via semihosting) or 'uart' (the target's UART; exit still via
    semihosting).  defines: 'NAME' or 'NAME=value'.  extra_cflags are appended after the
    standard flags (so e.g. ``-mfloat-abi=hard -mfpu=fpv4-sp-d16`` override the soft ABI).
    Every build runs :func:`no_float_proof`; a violation raises NoFloatProofError.
    """
    t = get_target(target)
    if io not in ("semihost", "uart"):
        raise ValueError(f"io must be 'semihost' or 'uart', not {io!r}")
    tools = check_toolchain(qemu=False)
    gcc = tools["arm-none-eabi-gcc"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    elf = out_dir / f"{name}.elf"
    map_file = out_dir / f"{name}.map"

    srcs = [Path(s) for s in sources]
    if board:
        srcs = [FIRMWARE_DIR / s for s in BOARD_SOURCES] + srcs
    for s in srcs:
        if not s.exists():
            raise BuildError(f"source file not found: {s}")
    defs = list(defines)
    if io == "uart":
        defs += t.uart_defines()
    incs = [FIRMWARE_DIR] + [Path(i) for i in include_dirs]

    base = base_cflags(t, opt)
    if any(f.startswith("-mfloat-abi=") for f in extra_cflags):
        base.remove("-mfloat-abi=soft")       # a second -mfloat-abi confuses multilib selection
    cmd = [gcc, *base, *extra_cflags]
    cmd += [f"-I{i}" for i in incs]
    cmd += [f"-D{d}" for d in defs]
    cmd += [str(s) for s in srcs]
    cmd += [*LINK_FLAGS, f"-L{LD_DIR}", "-T", str(t.ld_path), f"-Wl,-Map={map_file}"]
    if stack_size is not None:
        cmd.append(f"-Wl,--defsym=__stack_size={int(stack_size)}")
    cmd += ["-lgcc", "-o", str(elf)]

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        first = next((ln for ln in err.splitlines() if "error" in ln), err.splitlines()[0] if err else "")
        raise BuildError(f"arm-none-eabi-gcc failed for target {t.name}: {first}\n{err}", cmd, err)

    result = BuildResult(elf=elf, target=t.name, io=io, cmd=cmd,
                         compiler_version=_first_line_version(gcc),
                         sizes=section_sizes(elf), map_file=map_file)
    violations = no_float_proof(elf)
    if violations:
        more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
        raise NoFloatProofError(f"no-float proof failed for {elf.name} ({t.name}): "
                                f"{', '.join(violations[:3])}{more}",
                                elf, violations)
    return result


# --------------------------------------------------------------------------- size / symbols

def section_sizes(elf: "str | Path") -> dict[str, int]:
    """Allocated section sizes from ``arm-none-eabi-size -A`` (leading '.' stripped)."""
    size = _tool("arm-none-eabi-size")
    out = subprocess.run([size, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            name = parts[0][1:]
            if name.startswith(("debug", "comment", "ARM.attributes")):
                continue
            sizes[name] = sizes.get(name, 0) + int(parts[1])
    for k in ("text", "rodata", "data", "bss", "stack", "psram"):
        sizes.setdefault(k, 0)
    return sizes


@dataclasses.dataclass
class MemoryUsage:
    flash: int        # text + rodata + data load image (+ exidx)
    static_ram: int   # data + bss
    stack: int        # reserved stack region
    psram: int        # uninitialised buffers in .psram
    sections: dict


def stack_and_ram(elf: "str | Path") -> MemoryUsage:
    """Flash, static RAM (data+bss), reserved stack and PSRAM use of a linked ELF."""
    s = section_sizes(elf)
    return MemoryUsage(flash=s["text"] + s["rodata"] + s["data"] + s.get("ARM.exidx", 0),
                       static_ram=s["data"] + s["bss"], stack=s["stack"], psram=s["psram"], sections=s)


def _symbols(elf: "str | Path") -> list[tuple[str, str, str]]:
    nm = _tool("arm-none-eabi-nm")
    out = subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:          # undefined: "U name"
            syms.append(("", parts[0], parts[1]))
    return syms


def symbol_address(elf: "str | Path", name: str) -> int | None:
    """Address of a symbol (Thumb bit cleared), or None if the ELF does not define it."""
    for addr, _kind, sym in _symbols(elf):
        if sym == name and addr:
            return int(addr, 16) & ~1
    return None


# --------------------------------------------------------------------------- no-float proof (§5)

FLOAT_SYMBOL_PATTERNS = tuple(re.compile(p) for p in (
    r"^__aeabi_(f|d|cf|cd|h2f|u?i2[fd]|u?l2[fd])",
    r"^__(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord)[sdtxh]f[23]$",
    r"^__powi[sdtxh]f2$",
    r"^__fix(uns)?[sdtxh]f[sdt]i$",
    r"^__float(un)?[sdt]i[sdtxh]f$",
    r"^__(extend|trunc)[sdtxh]f[sdtxh]f2$",
    r"^__gnu_[fhd]2[fh]_",
    r"^(_printf_float|_scanf_float|_dtoa_r|_strtod_r|strtod|atof)$",
    r"^__ieee754_",
    r"^__kernel_",
    r"^(sqrt|exp|log|pow|sin|cos|tan|floor|ceil|fabs|fmod|frexp|ldexp|modf|round|lround|trunc)f?$",
))
FLOAT_INSN_RE = re.compile(
    r"^\s*[0-9a-f]+:\t[0-9a-f]{4}(?: [0-9a-f]{4})?\s*\t"
    r"(?:v[a-z0-9]+|(?:mrc|mcr|mrrc|mcrr|ldc|stc|cdp)2?l?\s+p?1[01],)")


def no_float_proof(elf: "str | Path") -> list[str]:
    """Levels 2 and 3 of toolchain.md §5.  Returns the violations; an empty list is a pass.

    Entries look like ``symbol __aeabi_dmul`` or ``instruction 0000012c: vmov s15, r4``.
    """
    violations = []
    seen = set()
    for _addr, _kind, sym in _symbols(elf):
        if sym not in seen and any(p.search(sym) for p in FLOAT_SYMBOL_PATTERNS):
            seen.add(sym)
            violations.append(f"symbol {sym}")
    objdump = _tool("arm-none-eabi-objdump")
    dis = subprocess.run([objdump, "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    for line in dis.splitlines():
        if FLOAT_INSN_RE.match(line):
            addr, _enc, insn = line.split("\t", 2)
            violations.append(f"instruction {addr.strip().rstrip(':')}: {' '.join(insn.split())}")
    return violations


# --------------------------------------------------------------------------- QEMU

@dataclasses.dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_status: int | None       # None on timeout
    sentinel_found: bool
    sentinel_status: int | None
    cmd: list
    wall_s: float
    insns_total: int | None = None
    insns_region: int | None = None
    regions: int | None = None
    timed_out: bool = False

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def build_insn_plugin(out_dir: "str | Path | None" = None) -> Path:
    """Build (or reuse) the QEMU 7.2 instruction-count plugin with the host gcc.

    Cached as ``out_dir/libinsncount-<hash>.so``, keyed by the hash of the plugin sources.
    """
    out_dir = Path(out_dir) if out_dir is not None else Path(
        os.environ.get("NITRO_BUILD_DIR", REPO_ROOT / "build")) / "qemu_plugin"
    srcs = [PLUGIN_DIR / "insncount.c", PLUGIN_DIR / "qemu-plugin-min.h"]
    h = hashlib.sha256()
    for s in srcs:
        h.update(s.read_bytes())
    so = out_dir / f"libinsncount-{h.hexdigest()[:16]}.so"
    if so.exists():
        return so
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ToolchainError("host gcc not found (needed for the QEMU plugin); install it with: apt-get install -y gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cc, "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-o", tmp, str(srcs[0])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise BuildError(f"building the QEMU plugin failed: {proc.stderr.strip()}", cmd, proc.stderr)
    os.replace(tmp, so)          # atomic: safe with parallel test workers
    return so


def qemu_command(elf: "str | Path", target: "str | Target", io: str = "semihost",
                 plugin_args: str | None = None) -> list[str]:
    """The qemu-system-arm argv of toolchain.md §4.5 for ``elf`` on ``target``."""
    t = get_target(target)
    if not t.qemu_machine:
        raise ValueError(f"target {t.name!r} has no QEMU machine")
    cmd = [_tool("qemu-system-arm"), "-M", t.qemu_machine, "-display", "none", "-monitor", "none"]
    if io == "semihost":
        cmd += ["-serial", "null", "-chardev", "stdio,id=sh0",
                "-semihosting-config", "enable=on,target=native,chardev=sh0"]
    elif io == "uart":
        cmd += ["-serial", "stdio", "-semihosting-config", "enable=on,target=native"]
    else:
        raise ValueError(f"io must be 'semihost' or 'uart', not {io!r}")
    if plugin_args:
        cmd += ["-plugin", plugin_args]
    cmd += ["-kernel", str(elf)]
    return cmd


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def run_qemu(elf: "str | Path | BuildResult", target: "str | Target | None" = None,
             cwd: "str | Path | None" = None, timeout: float = 60, count_insns: bool = False,
             *, io: str | None = None, expect_status: int = 0, check: bool = True,
             plugin_dir: "str | Path | None" = None) -> RunResult:
    """Run firmware in qemu-system-arm; stdin is /dev/null, output comes from stdout.

    ``elf`` may be a BuildResult (then target and io default to the build's).  Semihosting
    file paths are relative to ``cwd``.  With ``check`` (default) raises EmulatorError on a
    timeout, a lockup (exit 134), a fault (exit 0x7F), an exit status other than
    ``expect_status``, or a missing/mismatching ``NITRO-DONE <status>`` sentinel.
    With ``count_insns`` the project's TCG plugin fills insns_total/insns_region/regions.
    """
    if isinstance(elf, BuildResult):
        target = target if target is not None else elf.target
        io = io if io is not None else elf.io
        elf = elf.elf
    target = get_target(target if target is not None else DEFAULT_TARGET)
    io = io or "semihost"
    elf = Path(elf).resolve()
    if not elf.exists():
        raise FileNotFoundError(f"firmware ELF not found: {elf}")
    cwd = Path(cwd) if cwd is not None else elf.parent
    check_toolchain(qemu=True)

    plugin_args = None
    count_file = None
    tmpdir = None
    if count_insns:
        so = build_insn_plugin(plugin_dir)
        tmpdir = tempfile.TemporaryDirectory(prefix="nitro_insn_")
        count_file = Path(tmpdir.name) / "insns.txt"
        plugin_args = f"{so}"
        for marker, key in (("prof_start", "start"), ("prof_stop", "stop")):
            addr = symbol_address(elf, marker)
            if addr is not None:
                plugin_args += f",{key}=0x{addr:x}"
        plugin_args += f",out={count_file}"

    cmd = qemu_command(elf, target, io, plugin_args)
    t0 = time.monotonic()
    try:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, cwd=cwd, timeout=timeout)
            stdout = proc.stdout.decode("utf-8", "replace")
            stderr = proc.stderr.decode("utf-8", "replace")
            status, timed_out = proc.returncode, False
        except subprocess.TimeoutExpired as exc:
            stdout = (exc.stdout or b"").decode("utf-8", "replace")
            stderr = (exc.stderr or b"").decode("utf-8", "replace")
            status, timed_out = None, True
        wall = time.monotonic() - t0
        m = None
        for m in SENTINEL_RE.finditer(stdout):
            pass
        res = RunResult(stdout=stdout, stderr=stderr, exit_status=status, sentinel_found=m is not None,
                        sentinel_status=int(m.group(1)) if m else None, cmd=cmd, wall_s=wall,
                        timed_out=timed_out)
        if count_file is not None and count_file.exists():
            cm = re.search(r"insns total=(\d+) region=(\d+) regions=(\d+)", count_file.read_text())
            if cm:
                res.insns_total, res.insns_region, res.regions = (int(g) for g in cm.groups())
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()

    if check:
        _check_run(res, elf, target, timeout, expect_status)
    return res


def _check_run(res: RunResult, elf: Path, t: Target, timeout: float, expect_status: int) -> None:
    where = f"{elf.name} on {t.name} ({t.qemu_machine})"
    if res.timed_out:
        raise EmulatorError(f"QEMU timed out after {timeout:g} s running {where}; last output: {_tail(res.stdout)}",
                            res)
    if res.exit_status in (134, -6) or "Lockup" in res.stderr:
        # QEMU aborts on lockup: status 134 from a shell, -6 (SIGABRT) from subprocess
        fatal = next((ln.strip() for ln in res.stderr.splitlines() if "fatal" in ln or "Lockup" in ln),
                     _tail(res.stderr, 1))
        raise EmulatorError(f"CPU lockup (QEMU exit {res.exit_status}) running {where}: {fatal}", res)
    if res.exit_status == 0x7F:
        raise EmulatorError(f"firmware fault (HardFault handler exit 0x7F) running {where}; "
                            f"last output: {_tail(res.stdout)}", res)
    if res.exit_status != expect_status:
        raise EmulatorError(f"unexpected exit status {res.exit_status} (expected {expect_status}) running "
                            f"{where}; stderr: {_tail(res.stderr, 1)}; last output: {_tail(res.stdout)}", res)
    if not res.sentinel_found:
        raise EmulatorError(f"sentinel line 'NITRO-DONE {expect_status}' missing from the output of {where}; "
                            f"last output: {_tail(res.stdout)}", res)
    if res.sentinel_status != expect_status:
        raise EmulatorError(f"sentinel reports status {res.sentinel_status}, expected {expect_status}, "
                            f"running {where}", res)


# --------------------------------------------------------------------------- host builds

HOST_CFLAGS = ("-O1", "-g", "-std=c11", "-fwrapv", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion",
               "-Wshadow", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all")


def build_host(sources: Iterable["str | Path"], out_dir: "str | Path", include_dirs: Iterable["str | Path"] = (),
               defines: Iterable[str] = (), *, name: str = "host", sanitize: bool = True,
               cc: str | None = None, board: bool = True) -> Path:
    """Compile firmware C for the host (with firmware/board_host.c) - for output diffs (§7.3)."""
    cc = cc or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise ToolchainError("host gcc not found; install it with: apt-get install -y gcc")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / name
    srcs = ([FIRMWARE_DIR / "board_host.c"] if board else []) + [Path(s) for s in sources]
    cmd = [cc, *HOST_CFLAGS, *(SANITIZE_FLAGS if sanitize else ()), f"-I{FIRMWARE_DIR}"]
    cmd += [f"-I{i}" for i in include_dirs] + [f"-D{d}" for d in defines]
    cmd += [str(s) for s in srcs] + ["-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"host build failed: {proc.stderr.strip()}", cmd, proc.stderr)
    return exe


def run_host(exe: "str | Path", cwd: "str | Path | None" = None, timeout: float = 60) -> RunResult:
    """Run a host build; returns a RunResult (no checks)."""
    exe = Path(exe).resolve()
    t0 = time.monotonic()
    proc = subprocess.run([str(exe)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          cwd=cwd or exe.parent, timeout=timeout)
    m = None
    for m in SENTINEL_RE.finditer(proc.stdout):
        pass
    return RunResult(stdout=proc.stdout, stderr=proc.stderr, exit_status=proc.returncode,
                     sentinel_found=m is not None, sentinel_status=int(m.group(1)) if m else None,
                     cmd=[str(exe)], wall_s=time.monotonic() - t0)
