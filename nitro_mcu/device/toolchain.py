"""Find the programs the device wing runs and their versions; a missing one is an error naming its apt package."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Sequence

APT_PACKAGES = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "arm-none-eabi-objdump": "binutils-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
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


def check_toolchain(qemu: bool = True, host_cc: bool = False) -> dict[str, str]:
    """Check that the cross toolchain (and QEMU) are usable; returns program -> path.

    Raises ToolchainError with a one-line message naming the missing program and its apt package.
    """
    names = ["arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-objdump", "arm-none-eabi-size"]
    if qemu:
        names.append("qemu-system-arm")
    found = {n: tool(n) for n in names}
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
