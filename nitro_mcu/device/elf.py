"""What a linked ELF holds: section sizes, flash / RAM / stack use, symbols, and the no-float proof.

The proof has three levels: the compile flags (-mfloat-abi=soft, -Wdouble-promotion, -Wfloat-conversion,
-Werror), no soft-float or libm symbol in the ELF, and no VFP or coprocessor-10/11 instruction in it.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Sequence

from .toolchain import tool


class NoFloatProofError(RuntimeError):
    """The linked ELF contains floating-point symbols or instructions."""

    def __init__(self, message: str, elf: Path | None = None, violations: Sequence[str] = ()):
        super().__init__(message)
        self.elf = elf
        self.violations = list(violations)


def section_sizes(elf: "str | Path") -> dict[str, int]:
    """Allocated section sizes from ``arm-none-eabi-size -A`` (leading '.' stripped)."""
    size = tool("arm-none-eabi-size")
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


def symbols(elf: "str | Path") -> list[tuple[str, str, str]]:
    nm = tool("arm-none-eabi-nm")
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
FLOAT_INSN_RE = re.compile(
    r"^\s*[0-9a-f]+:\t[0-9a-f]{4}(?: [0-9a-f]{4})?\s*\t"
    r"(?:v[a-z0-9]+|(?:mrc|mcr|mrrc|mcrr|ldc|stc|cdp)2?l?\s+p?1[01],)")


def no_float_proof(elf: "str | Path") -> list[str]:
    """Levels 2 and 3 of the proof (symbols, instructions).  Returns the violations; an empty list is a pass.

    Entries look like ``symbol __aeabi_dmul`` or ``instruction 0000012c: vmov s15, r4``.
    """
    violations = []
    seen = set()
    for _addr, _kind, sym in symbols(elf):
        if sym not in seen and any(p.search(sym) for p in FLOAT_SYMBOL_PATTERNS):
            seen.add(sym)
            violations.append(f"symbol {sym}")
    objdump = tool("arm-none-eabi-objdump")
    dis = subprocess.run([objdump, "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    for line in dis.splitlines():
        if FLOAT_INSN_RE.match(line):
            addr, _enc, insn = line.split("\t", 2)
            violations.append(f"instruction {addr.strip().rstrip(':')}: {' '.join(insn.split())}")
    return violations

