"""What a linked ELF holds: section sizes, flash / RAM / stack use, symbols, and the no-float proof.

The proof has three levels: the compile flags (Cortex-M -mfloat-abi=soft; RV32 -march without F/D and
-mabi=ilp32; both -Wdouble-promotion, -Wfloat-conversion, -Werror), no soft-float or libm symbol in the ELF, and
no floating-point instruction in it (Cortex-M: VFP or coprocessor-10/11; RV32: F/D/Q/Zfh instructions or FP CSR
accesses).  An RV32 ELF must also declare the soft-float ABI in its header flags and no F/D/Q extension in
its architecture attribute.  The ELF's own e_machine picks the binutils that read it.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Sequence

from .targets import ISAS, Isa
from .toolchain import tool


class NoFloatProofError(RuntimeError):
    """The linked ELF contains floating-point symbols or instructions."""

    def __init__(self, message: str, elf: Path | None = None, violations: Sequence[str] = ()):
        super().__init__(message)
        self.elf = elf
        self.violations = list(violations)


def elf_header(elf: "str | Path") -> tuple[int, int]:
    """(e_machine, e_flags) of a 32-bit little-endian ELF file."""
    with open(elf, "rb") as f:
        head = f.read(52)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] != 1 or head[5] != 1:
        raise ValueError(f"{elf}: not a 32-bit little-endian ELF file")
    return int.from_bytes(head[18:20], "little"), int.from_bytes(head[36:40], "little")


def elf_isa(elf: "str | Path") -> Isa:
    """The instruction set of an ELF file, from its e_machine."""
    machine = elf_header(elf)[0]
    for isa in ISAS.values():
        if isa.elf_machine == machine:
            return isa
    raise ValueError(f"{elf}: ELF machine {machine} is none of the targets' instruction sets")


def section_sizes(elf: "str | Path") -> dict[str, int]:
    """Allocated section sizes from ``<cross>-size -A`` (leading '.' stripped)."""
    size = tool(elf_isa(elf).tool("size"))
    out = subprocess.run([size, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            name = parts[0][1:]
            if name.startswith(("debug", "comment", "ARM.attributes", "riscv.attributes")):
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


def symbols(elf: "str | Path") -> list[tuple[str, str, str]]:
    nm = tool(elf_isa(elf).tool("nm"))
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
    for addr, _kind, sym in symbols(elf):
        if sym == name and addr:
            return int(addr, 16) & ~1
    return None


# ---- the no-float proof

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
# RV32: any F/D/Q/Zfh instruction (their mnemonics start with f, as fence does not count), compressed FP loads and
# stores, and reads or writes of the FP CSRs
RV_FLOAT_INSN_RE = re.compile(
    r"^\s*[0-9a-f]+:\t[0-9a-f]{4,8}\s*\t"
    r"(?:(?:c\.)?f(?!ence)[a-z0-9.]*\s|f(?!ence)[a-z0-9.]*$|csr\w*\s+(?:\w+,)?(?:fflags|frm|fcsr)\b)")
# EF_RISCV_FLOAT_ABI (e_flags bits 1-2): 0 is the soft-float ABI
RV_FLOAT_ABI_MASK = 0x6
FLOAT_INSN_RE = re.compile(
    r"^\s*[0-9a-f]+:\t[0-9a-f]{4}(?: [0-9a-f]{4})?\s*\t"
    r"(?:v[a-z0-9]+|(?:mrc|mcr|mrrc|mcrr|ldc|stc|cdp)2?l?\s+p?1[01],)")


def riscv_arch(elf: "str | Path") -> str:
    """The Tag_RISCV_arch attribute of an RV32 ELF (e.g. ``rv32i2p1_m2p0_c2p0``), "" without one."""
    readelf = tool(ISAS["riscv"].tool("readelf"))
    out = subprocess.run([readelf, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    m = re.search(r'Tag_RISCV_arch: "([^"]*)"', out)
    return m.group(1) if m else ""


def _rv_abi_violations(elf: "str | Path") -> list[str]:
    out = []
    flags = elf_header(elf)[1]
    if flags & RV_FLOAT_ABI_MASK:
        out.append(f"ELF flags 0x{flags:x}: hard-float ABI")
    arch = riscv_arch(elf)
    exts = [e for e in arch.split("_")[1:] if e[:1] in ("f", "d", "q") or e.startswith(("zfh", "zfinx", "zdinx"))]
    base = re.match(r"rv32([a-z]*?)\d", arch)   # single-letter extensions: rv32i2p1 -> "i", then _m2p0 ...
    if base and set(base.group(1)) & set("fdq"):
        exts.append(base.group(1))
    if exts:
        out.append(f"architecture {arch}: floating-point extension {', '.join(exts)}")
    return out


def no_float_proof(elf: "str | Path") -> list[str]:
    """Levels 2 and 3 of the proof (symbols, instructions; on RV32 the ELF's float ABI too).  Returns the
    violations; an empty list is a pass.

    Entries look like ``symbol __aeabi_dmul`` or ``instruction 0000012c: vmov s15, r4``.
    """
    isa = elf_isa(elf)
    violations = _rv_abi_violations(elf) if isa.name == "riscv" else []
    seen = set()
    for _addr, _kind, sym in symbols(elf):
        if sym not in seen and any(p.search(sym) for p in FLOAT_SYMBOL_PATTERNS):
            seen.add(sym)
            violations.append(f"symbol {sym}")
    objdump = tool(isa.tool("objdump"))
    dis = subprocess.run([objdump, "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    insn_re = RV_FLOAT_INSN_RE if isa.name == "riscv" else FLOAT_INSN_RE
    for line in dis.splitlines():
        if insn_re.match(line):
            addr, _enc, insn = line.split("\t", 2)
            violations.append(f"instruction {addr.strip().rstrip(':')}: {' '.join(insn.split())}")
    return violations

