"""Build C for the host (with firmware/board_host.c in place of the board) and run it."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Iterable, Sequence

from .flags import HOST_FIRMWARE_CFLAGS, sanitize_flags
from .protocol import RunResult, sentinel_status
from .targets import FIRMWARE_DIR
from .toolchain import BuildError, find_host_cc


def build_host(sources: Iterable["str | Path"], out_dir: "str | Path", include_dirs: Iterable["str | Path"] = (),
               defines: Iterable[str] = (), *, name: str = "host", sanitize: bool = True,
               cc: str | None = None, board: bool = True,
               cflags: Sequence[str] = HOST_FIRMWARE_CFLAGS) -> Path:
    """Compile firmware C for the host into ``out_dir/<name>`` - for output diffs and sanitizer runs.

    ``sanitize`` adds UBSan and ASan (and clang's implicit-conversion checks when ``cc`` is clang).
    """
    cc = find_host_cc(cc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / name
    srcs = ([FIRMWARE_DIR / "board_host.c"] if board else []) + [Path(s) for s in sources]
    cmd = [cc, *cflags, *(sanitize_flags(cc) if sanitize else ()), f"-I{FIRMWARE_DIR}"]
    cmd += [f"-I{i}" for i in include_dirs] + [f"-D{d}" for d in defines]
    cmd += [str(s) for s in srcs] + ["-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"host build with {Path(cc).name} failed: {proc.stderr.strip()}", cmd, proc.stderr)
    return exe


def run_host(exe: "str | Path", cwd: "str | Path | None" = None, timeout: float = 60) -> RunResult:
    """Run a host build with stdin from /dev/null; returns a RunResult (no checks)."""
    exe = Path(exe).resolve()
    t0 = time.monotonic()
    proc = subprocess.run([str(exe)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          cwd=cwd or exe.parent, timeout=timeout)
    return RunResult(stdout=proc.stdout, stderr=proc.stderr, exit_status=proc.returncode,
                     sentinel_status=sentinel_status(proc.stdout), cmd=[str(exe)], wall_s=time.monotonic() - t0)
