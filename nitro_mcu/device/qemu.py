"""Run firmware in the target's QEMU (qemu-system-arm, qemu-system-riscv32), optionally counting instructions with
the project's TCG plugin.

The plugin (firmware/qemu_plugin/insncount.c, for QEMU 7.2) counts every executed instruction and those
between the ``prof_start`` and ``prof_stop`` markers of the firmware, on any guest.  A target without semihosting
(a real part) ends its run with the exit line on its UART (protocol.EXIT_RE): the runner watches the console for
it and then stops QEMU.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .cache import cached_shared_library
from .elf import symbol_address
from .firmware import BuildResult
from .flags import PLUGIN_CFLAGS
from .protocol import EmulatorError, RunResult, check_exit, exit_line_status, output_tail, sentinel_status
from .targets import DEFAULT_TARGET, PLUGIN_DIR, REPO_ROOT, Target, check_io, get_target
from .toolchain import BuildError, check_toolchain, compiler_version, find_host_cc, tool


def build_insn_plugin(out_dir: "str | Path | None" = None) -> Path:
    """Build (or reuse) the QEMU 7.2 instruction-count plugin with the host gcc.

    Cached as ``out_dir/insncount_<key>/libinsncount.so``, keyed by the plugin sources, the flags and the compiler
    version (the build cache's steps: safe with parallel test workers).
    """
    out_dir = Path(out_dir) if out_dir is not None else Path(
        os.environ.get("NITRO_BUILD_DIR", REPO_ROOT / "build")) / "qemu_plugin"
    srcs = [PLUGIN_DIR / "insncount.c", PLUGIN_DIR / "qemu-plugin-min.h"]
    cc = find_host_cc()
    got = cached_shared_library("insncount", cc, PLUGIN_CFLAGS, {s.name: s.read_bytes() for s in srcs},
                                compiler_version(cc), lambda d: srcs[0], root=out_dir)
    if not isinstance(got, Path):
        raise BuildError(f"building the QEMU plugin failed: {got.stderr.strip()}", got.args, got.stderr)
    return got


def qemu_command(elf: "str | Path", target: "str | Target", io: str = "semihost",
                 plugin_args: str | None = None) -> list[str]:
    """The QEMU argv for ``elf`` on ``target``: console on semihosting or on the UART (the target's serial port
    ``uart_serial`` on stdio, those before it unconnected); no semihosting on a target without it."""
    t = get_target(target)
    if not t.qemu_machine:
        raise ValueError(f"target {t.name!r} has no QEMU machine")
    check_io(io, t)
    cmd = [tool(t.isa_info.qemu), "-M", t.qemu_machine, *t.qemu_args, "-display", "none", "-monitor", "none"]
    if io == "semihost":
        cmd += ["-serial", "null", "-chardev", "stdio,id=sh0",
                "-semihosting-config", "enable=on,target=native,chardev=sh0"]
    else:
        cmd += [*["-serial", "null"] * t.uart_serial, "-serial", "stdio"]
        if t.semihosting:
            cmd += ["-semihosting-config", "enable=on,target=native"]
    if plugin_args:
        cmd += ["-plugin", plugin_args]
    cmd += ["-kernel", str(elf)]
    return cmd


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
    check_toolchain(qemu=True, isa=target.isa)

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

    if not target.semihosting and io == "semihost":
        io = "uart"
    cmd = qemu_command(elf, target, io, plugin_args)
    t0 = time.monotonic()
    try:
        if target.semihosting:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, cwd=cwd, timeout=timeout)
                stdout = proc.stdout.decode("utf-8", "replace")
                stderr = proc.stderr.decode("utf-8", "replace")
                status, timed_out = proc.returncode, False
            except subprocess.TimeoutExpired as exc:
                stdout = (exc.stdout or b"").decode("utf-8", "replace")
                stderr = (exc.stderr or b"").decode("utf-8", "replace")
                status, timed_out = None, True
        else:
            stdout, stderr, status, timed_out = _run_to_exit_line(cmd, cwd, timeout)
        wall = time.monotonic() - t0
        res = RunResult(stdout=stdout, stderr=stderr, exit_status=status, sentinel_status=sentinel_status(stdout),
                        cmd=cmd, wall_s=wall, timed_out=timed_out)
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


def _run_to_exit_line(cmd: list, cwd: Path, timeout: float) -> tuple[str, str, int | None, bool]:
    """Run QEMU until its console shows the exit line, then stop it (SIGINT: QEMU quits cleanly and the plugin
    writes its counts); the status is the line's.  A QEMU that quits first gives its own exit status."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    out, err = bytearray(), bytearray()
    status, timed_out = None, False
    deadline = time.monotonic() + timeout
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    try:
        while streams:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select(list(streams), [], [], min(left, 1.0))
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    del streams[fd]
                else:
                    streams[fd] += chunk
            status = exit_line_status(out.decode("utf-8", "replace"))
            if status is not None:
                break
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        out += proc.stdout.read()
        err += proc.stderr.read()
        if status is None and not timed_out:
            status = rc
    finally:
        proc.stdout.close()
        proc.stderr.close()
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), status, timed_out


def _check_run(res: RunResult, elf: Path, t: Target, timeout: float, expect_status: int) -> None:
    where = f"{elf.name} on {t.name} ({t.qemu_machine})"
    if res.timed_out:
        raise EmulatorError(f"QEMU timed out after {timeout:g} s running {where}; "
                            f"last output: {output_tail(res.stdout)}", res)
    if res.exit_status in (134, -6) or "Lockup" in res.stderr:
        # QEMU aborts on lockup: status 134 from a shell, -6 (SIGABRT) from subprocess
        fatal = next((ln.strip() for ln in res.stderr.splitlines() if "fatal" in ln or "Lockup" in ln),
                     output_tail(res.stderr, 1))
        raise EmulatorError(f"CPU lockup (QEMU exit {res.exit_status}) running {where}: {fatal}", res)
    check_exit(res, where, expect_status)

