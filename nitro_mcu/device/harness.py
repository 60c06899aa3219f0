"""Drive a generated model through firmware/harness.c, on the host (sanitizers) or on an emulated MCU.

A :class:`~.protocol.Session` of commands goes in as ``cmd.bin`` (or compiled in); the harness answers in
``res.bin`` (or on the console), which :func:`~.protocol.parse_results` decodes.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codegen import Converted
from .firmware import BuildResult, build_cached, build_firmware
from .flags import HOST_HARNESS_CFLAGS
from .host import build_host, run_host
from .protocol import (HarnessError, RunResult, Session, check_sentinel, cmd_blob_c, parse_console_results,
                       parse_results, stack_high_water)
from .qemu import run_qemu
from .capacity import check_fits
from .targets import FIRMWARE_DIR, Target, get_target


REH_PAGE = 256  # the page of the harness's RAM rehearsal region (firmware/harness.c, NITRO_REH_BYTES)


def rehearsal_region_bytes(conv: Converted) -> int:
    """The harness's rehearsal region: the generated REHEARSAL_REGION_BYTES rounded up to whole pages."""
    p = conv.plan
    rec = 4 + (-(-int(np.prod(p.model.input_shape)) // 4)) * 4
    need = 16 + p.model.num_classes * p.rehearsal * rec
    return -(-need // REH_PAGE) * REH_PAGE


def model_defines(conv: Converted, masks: bool = False, raw: bool = False) -> list[str]:
    """The harness's defines; ``raw``: with the raw-input commands (NORM, WIND) and their buffers, which other
    builds leave out, so that their flash and RAM stay the model's and the harness's alone."""
    n = conv.plan.name
    d = [f"NH_NAME={n}", f"NH_UPPER={n.upper()}", f'NH_HEADER="{n}.h"'] + (["NITRO_RAW_INPUTS"] if raw else [])
    if conv.plan.train and conv.plan.rehearsal:
        d += [f"NITRO_REH_BYTES={rehearsal_region_bytes(conv)}u", f"NITRO_REH_PAGE={REH_PAGE}u"]
    if masks:
        d += ["NITRO_TEST_HOOKS", f"NITRO_MAX_MASK_BYTES={mask_bytes(conv)}"]
    return d


def mask_bytes(conv: Converted) -> int:
    return max(8, sum(o.count * conv.plan.batch for o in conv.plan.ops if o.kind == "dropout"))


def build_host_harness(conv: Converted, out_dir: Path, cc: str = "gcc", sanitize: bool = True,
                       masks: bool = False, raw: bool = False) -> Path:
    """Compile harness + generated model + board_host.c with strict warnings (and sanitizers)."""
    out_dir = Path(out_dir)
    conv.save(file=out_dir)
    return build_host([FIRMWARE_DIR / "harness.c", out_dir / f"{conv.plan.name}.c"], out_dir, [out_dir],
                      model_defines(conv, masks, raw), name="harness_host", sanitize=sanitize, cc=cc,
                      cflags=HOST_HARNESS_CFLAGS)


def run_host_harness(conv: Converted, session: Session, cc: str = "gcc", sanitize: bool = True,
                     masks: bool = False, timeout: float = 300) -> list:
    """Run ``session`` on a host build of the harness; returns the decoded results."""
    with tempfile.TemporaryDirectory(prefix="nitro-harness-") as d:
        d = Path(d)
        exe = build_host_harness(conv, d, cc, sanitize, masks, session.raw_inputs)
        (d / "cmd.bin").write_bytes(session.to_bytes())
        r = run_host(exe, cwd=d, timeout=timeout)
        check_sentinel(r.stdout, r.stderr, r.exit_status)
        return parse_results((d / "res.bin").read_bytes(), conv, session.expect)


@dataclass
class McuRun:
    results: list
    build: BuildResult
    run: RunResult | None    # None under Renode
    stack_bytes: int | None


def build_mcu(conv: Converted, target: "str | Target", out_dir: Path | None = None, masks: bool = False,
              io: str = "semihost", profile_ops: bool = False, embedded_cmd: bytes | None = None, opt: str = "-O2",
              raw: bool = False, res_ram: int = 0) -> BuildResult:
    """Cross-compile harness + model for ``target`` at ``opt``: cached by every input, or built into ``out_dir``.

    ``embedded_cmd``: compile the command file in and report results on the console (Renode, boards);
    ``res_ram`` > 0 with it: keep them in a RAM buffer of that many bytes instead, read out by the emulator
    (``nitro_res_ram`` / ``nitro_res_fill``; a full buffer spills to the console)."""
    check_fits(conv.plan.model, target, conv.plan.batch, conv.plan)
    name = f"{conv.plan.name}_{get_target(target).name.replace('-', '_')}"
    defines = model_defines(conv, masks, raw) + (["NITRO_PROFILE_OPS"] if profile_ops else [])
    generated = dict(conv.sources)
    sources = [FIRMWARE_DIR / "harness.c", f"{conv.plan.name}.c"]
    if embedded_cmd is not None:
        defines.append("NITRO_EMBEDDED_CMD")
        generated["cmd_blob.c"] = cmd_blob_c(embedded_cmd)
        sources.append("cmd_blob.c")
        if res_ram > 0:
            defines.append(f"NITRO_RES_RAM_BYTES={res_ram}u")
    if out_dir is None:
        return build_cached(sources, target, generated, name=name, defines=defines, io=io, opt=opt)
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    for fname, text in generated.items():
        (d / fname).write_text(text)
    return build_firmware([d / s for s in sources], target, d, include_dirs=[d], defines=defines, io=io, name=name,
                          opt=opt)


def run_mcu(conv: Converted, session: Session, target: str = "m4", masks: bool = False, count_insns: bool = False,
            timeout: float = 300, work_dir: Path | None = None, io: str = "semihost",
            profile_ops: bool = False, transport: str = "files", opt: str = "-O2") -> McuRun:
    """Build (or reuse) the harness firmware for ``target`` at ``opt``, run it in QEMU, decode the results.

    transport 'files': semihosting file I/O (cmd.bin / res.bin); 'embedded': commands compiled into the
    firmware and results as hex lines on the console (the path Renode and real boards use), here over UART.
    A target without semihosting (a real part) always takes the embedded transport.
    """
    ctx = tempfile.TemporaryDirectory(prefix="nitro-mcu-") if work_dir is None else None
    d = Path(work_dir or ctx.name)
    try:
        d.mkdir(parents=True, exist_ok=True)
        if transport not in ("files", "embedded"):
            raise ValueError(f"unknown transport '{transport}'")
        if not get_target(target).semihosting:
            transport = "embedded"
        embedded = session.to_bytes() if transport == "embedded" else None
        if embedded is not None:
            io = "uart"
        b = build_mcu(conv, target, None, masks, io, profile_ops, embedded, opt, session.raw_inputs)
        (d / "cmd.bin").write_bytes(session.to_bytes())
        r = run_qemu(b.elf, target, cwd=d, timeout=timeout, count_insns=count_insns, io=io, check=False)
        if r.timed_out:
            raise HarnessError(f"the emulator timed out after {timeout:.0f} s on {target}")
        check_sentinel(r.stdout, r.stderr, r.exit_status)
        blob = parse_console_results(r.stdout) if embedded is not None else (d / "res.bin").read_bytes()
        res = parse_results(blob, conv, session.expect)
        return McuRun(res, b, r, stack_high_water(r.stdout))
    finally:
        if ctx is not None:
            ctx.cleanup()
