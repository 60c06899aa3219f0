"""The harness with a board flash (firmware/flash_file.c): its builds, its checkpoint commands and runs that lose
power, on the host (a cut at the k-th flash write-through) or in QEMU (a cut at an instruction count).

The flash region lives in ``flash.bin`` in the run folder, which persists across runs as flash persists across a
power cut; a run starts from given contents and hands back what the file holds when it stops.
"""
from __future__ import annotations

import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ck
from ..codegen import Converted
from .elf import symbol_address
from .firmware import BuildResult, build_cached
from .capacity import check_fits
from .flags import HOST_HARNESS_CFLAGS
from .harness import model_defines
from .host import build_host, run_host
from .protocol import INT_ANSWERS, HarnessError, Session, check_sentinel, stack_high_water
from .qemu import build_insn_plugin, qemu_command
from .targets import FIRMWARE_DIR, TARGETS, get_target

CUT_STATUS = 86          # BOARD_FLASH_CUT_STATUS and the plugin's limit exit
FLASH_FILE = "flash.bin"


def erase_stage(page_size: int, sector: int) -> int:
    """Bytes of one erase write-through of firmware/flash_file.c: a word when the sector is the page, else a page
    (a 128 KB sector in 512 steps, so that a sweep's cuts spread over the program phase too)."""
    return 4 if sector == page_size else page_size


def save_stages(model, page_size: int, sector: int | None = None) -> int:
    """Write-throughs of one save: the slot erased in erase stages, every half-word of checkpoint and commit."""
    sector = sector or page_size
    return ck.slot_bytes(model, sector) // erase_stage(page_size, sector) + (ck.size(model) + 4) // 2


def flash_defines(conv: Converted, page_size: int, sector: int | None = None) -> list[str]:
    sector = sector or page_size
    region = ck.region_bytes(conv.plan.model, sector)
    return model_defines(conv) + [f"NITRO_FLASH_BYTES={region}u", f"NITRO_FLASH_PAGE={page_size}u",
                                  f"NITRO_FLASH_SECTOR={sector}u"]


def sources(conv: Converted) -> list:
    return [FIRMWARE_DIR / "harness.c", f"{conv.plan.name}.c", FIRMWARE_DIR / "flash_file.c"]


def check_flash_target(target: str) -> None:
    """ValueError (unknown target, or one without the semihosting files the file-backed flash writes through)."""
    if not get_target(target).semihosting:
        with_files = ", ".join(n for n, t in TARGETS.items() if t.semihosting)
        raise ValueError(f"target {target!r} has no semihosting, which the file-backed board flash needs; "
                         f"the checkpoint and power-loss runs take one of {with_files}")


def check_flash_fits(model, target: str, batch: int, sector: int, plan=None) -> None:
    """capacity.FitError when the harness with the board flash cannot fit ``target``: flash_file.c holds the
    flash region (two checkpoint slots) in a RAM array beside the model."""
    check_fits(model, target, batch, plan, flash_in_ram=lambda m: ck.region_bytes(m, sector))


def build_flash_mcu(conv: Converted, target: str, page_size: int, ram_only: bool = False,
                    sector: int | None = None, defines=()) -> BuildResult:
    """The harness firmware with the file-backed flash, cross-compiled (and cached) for ``target``.

    ``ram_only``: the flash changes stay in RAM (for counting the checkpoint code's own instructions);
    ``defines``: more (test) switches, e.g. an ablation (powerloss.ablate_defines)."""
    check_flash_target(target)
    check_flash_fits(conv.plan.model, target, conv.plan.batch, sector or page_size, conv.plan)
    defines = flash_defines(conv, page_size, sector) + (["NITRO_FLASH_RAM_ONLY"] if ram_only else []) + list(defines)
    return build_cached(sources(conv), target, dict(conv.sources), name=f"{conv.plan.name}_{target}_flash",
                        defines=defines, io="semihost")


def build_flash_host(conv: Converted, out_dir: Path, page_size: int, cc: str = "gcc", sanitize: bool = True,
                     sector: int | None = None) -> Path:
    """The same on the host (board_host.c), with UBSan and ASan unless ``sanitize`` is False."""
    out_dir = Path(out_dir)
    conv.save(file=out_dir)
    srcs = [s if isinstance(s, Path) else out_dir / s for s in sources(conv)]
    return build_host(srcs, out_dir, [out_dir], flash_defines(conv, page_size, sector), name="harness_flash",
                      sanitize=sanitize, cc=cc, cflags=HOST_HARNESS_CFLAGS)


class FlashSession(Session):
    """A :class:`~.protocol.Session` with the checkpoint commands of the harness."""

    def load(self):
        self.ask(b"FLOD")

    def save(self):
        self.ask(b"FSAV")

    def export(self):
        self.ask(b"CKPT")

    def cut(self, k: int):
        """Lose power instead of the k-th flash write-through from here (host runs)."""
        self.commands.append(b"FCUT" + struct.pack("<i", k))


def parse(blob: bytes, expect: list) -> list:
    """TRAN and the other one-int answers (ADDC, ...) -> int; FLOD/FSAV -> dict; CKPT -> the checkpoint bytes."""
    out, pos = [], 0
    fields = {"FLOD": ("rc", "seq", "steps", "reads", "programs", "erases"),
              "FSAV": ("rc", "seq", "reads", "programs", "erases", "stages")}
    for kind in expect:
        tag = blob[pos:pos + 4].decode("ascii", "replace")
        if tag != kind:
            raise HarnessError(f"garbled harness output: expected {kind}, got {tag!r} at byte {pos}")
        pos += 4
        if kind in INT_ANSWERS:
            out.append(struct.unpack_from("<i", blob, pos)[0])
            pos += 4
        elif kind == "CKPT":
            n = struct.unpack_from("<i", blob, pos)[0]
            out.append(bytes(blob[pos + 4:pos + 4 + n]))
            pos += 4 + n
        elif kind in fields:
            vals = struct.unpack_from("<i5I", blob, pos)
            out.append(dict(zip(fields[kind], vals)))
            pos += 24
        else:
            raise HarnessError(f"no decoder for harness answer {kind}")
    if pos != len(blob):
        raise HarnessError(f"garbled harness output: {len(blob) - pos} unexpected trailing bytes")
    return out


@dataclass
class FlashRun:
    results: list | None     # None after a power cut
    flash: bytes             # the flash file when the run stopped
    cut: bool
    insns_region: int | None = None
    insns_total: int | None = None
    stack: int | None = None  # stack high-water (bytes) the harness reported


def _finish(d: Path, session: Session, rc: int | None, stdout: str, stderr: str) -> FlashRun:
    flash = (d / FLASH_FILE).read_bytes()
    if rc == CUT_STATUS:
        return FlashRun(None, flash, True)
    check_sentinel(stdout, stderr, rc)
    return FlashRun(parse((d / "res.bin").read_bytes(), session.expect), flash, False,
                    stack=stack_high_water(stdout))


def run_flash_host(exe: Path, session: Session, flash: bytes, timeout: float = 120) -> FlashRun:
    with tempfile.TemporaryDirectory(prefix="nitro-flash-") as d:
        d = Path(d)
        (d / "cmd.bin").write_bytes(session.to_bytes())
        (d / FLASH_FILE).write_bytes(flash)
        r = run_host(exe, cwd=d, timeout=timeout)
        return _finish(d, session, r.exit_status, r.stdout, r.stderr)


def run_flash_mcu(build: BuildResult, session: Session, flash: bytes, limit: int | None = None,
                  count: bool = False, timeout: float = 300) -> FlashRun:
    """Run in QEMU; ``limit``: lose power after that many instructions inside the profiled region."""
    with tempfile.TemporaryDirectory(prefix="nitro-flash-") as d:
        d = Path(d)
        (d / "cmd.bin").write_bytes(session.to_bytes())
        (d / FLASH_FILE).write_bytes(flash)
        plugin = None
        if count or limit is not None:
            plugin = str(build_insn_plugin())
            for marker, key in (("prof_start", "start"), ("prof_stop", "stop")):
                plugin += f",{key}=0x{symbol_address(build.elf, marker):x}"
            plugin += f",out={d / 'insns.txt'}" + (f",limit={int(limit)}" if limit is not None else "")
        cmd = qemu_command(build.elf, build.target, build.io, plugin)
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, cwd=d, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"the emulator timed out after {timeout:.0f} s on {build.target}") from None
        run = _finish(d, session, p.returncode, p.stdout.decode("utf-8", "replace"),
                      p.stderr.decode("utf-8", "replace"))
        counts = (d / "insns.txt").read_text() if (d / "insns.txt").is_file() else ""
        m = re.search(r"insns total=(\d+) region=(\d+)", counts)
        if m:
            run.insns_total, run.insns_region = int(m.group(1)), int(m.group(2))
        return run
