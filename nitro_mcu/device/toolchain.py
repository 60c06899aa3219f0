"""Find the programs the device wing runs and their versions; a missing one is an error naming its apt package."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Sequence

from .targets import ISAS

BINUTILS = ("nm", "objdump", "size", "readelf")
APT_PACKAGES = {
    **{i.tool("gcc"): i.gcc_package for i in ISAS.values()},
    **{i.tool(b): i.binutils_package for i in ISAS.values() for b in BINUTILS},
    **{i.qemu: i.qemu_package for i in ISAS.values()},
    "gcc": "gcc",
    "cc": "gcc",
    "clang": "clang",
}
_checked: set = set()


class ToolchainError(RuntimeError):
    """A required program or library is missing (message names the apt package)."""


class BuildError(RuntimeError):
    """A compiler or linker failed.  ``.stderr`` holds the full compiler output."""

    def __init__(self, message: str, cmd: Sequence[str] = (), stderr: str = ""):
        super().__init__(message)
        self.cmd = list(cmd)
        self.stderr = stderr


def tool(name: str) -> str:
    """Path of program ``name``; ToolchainError (one line, naming the apt package) when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} not found; install it with: apt-get install -y --no-install-recommends "
                             f"{APT_PACKAGES.get(name, name)}")
    return path


def find_host_cc(cc: str | None = None) -> str:
    """The host C compiler: ``cc`` if given, else gcc, else cc."""
    if cc is not None:
        return tool(cc)
    found = shutil.which("gcc") or shutil.which("cc")
    if found is None:
        raise ToolchainError("host gcc not found; install it with: apt-get install -y gcc")
    return found


def check_toolchain(qemu: bool = True, host_cc: bool = False, isa: str = "arm") -> dict[str, str]:
    """Check that the cross toolchain of instruction set ``isa`` (and its QEMU) are usable; returns program -> path.

    Raises ToolchainError with a one-line message naming the missing program and its apt package.
    """
    i = ISAS[isa]
    names = [i.tool(n) for n in ("gcc", "nm", "objdump", "size")]
    if qemu:
        names.append(i.qemu)
    found = {n: tool(n) for n in names}
    if host_cc:
        if shutil.which("gcc") is None:
            raise ToolchainError("gcc not found; install it with: apt-get install -y gcc")
        found["gcc"] = shutil.which("gcc")
    if i.name not in _checked:
        proc = subprocess.run([found[i.tool("gcc")], *i.libc_probe], capture_output=True, text=True)
        p = proc.stdout.strip()
        lib = i.libc_probe[-1].split("=", 1)[1]
        if proc.returncode != 0 or not os.path.isabs(p) or not os.path.exists(p):
            raise ToolchainError(f"the C library ({lib}) not found for {i.tool('gcc')}; install it with: "
                                 f"apt-get install -y --no-install-recommends {i.libc_package}")
        _checked.add(i.name)
    return found


_versions: dict[tuple, str] = {}


def compiler_version(prog: str) -> str:
    """First line of ``prog --version`` (e.g. ``arm-none-eabi-gcc (15:12.2.rel1-1) 12.2.1 20221205``).

    Probed once per program file: keyed by its resolved path and modification time, so a compiler put
    first on PATH or upgraded in place is probed again.
    """
    path = shutil.which(prog) or prog
    try:
        key = (os.path.realpath(path), os.stat(path).st_mtime_ns)
    except OSError:
        key = (path, None)
    if key not in _versions:
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        _versions[key] = out.splitlines()[0].strip() if out else "unknown"
    return _versions[key]
