"""Drive a generated model through firmware/harness.c, on the host (sanitizers) or on an emulated MCU.

A :class:`Session` is a list of commands (train batches, predictions, weight dumps); it is written to
``cmd.bin``, the harness executes it and writes ``res.bin``, which :func:`parse_results` decodes.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codegen import Converted
from .targets import FIRMWARE_DIR, SENTINEL_RE

# Not targets.build_host: its flags carry -fwrapv (as the firmware does), which would make signed overflow
# defined and hide it from UBSan.  The generated C must be UB-free without it.
SANITIZE = ["-fsanitize=undefined,address", "-fno-sanitize-recover=all"]
STRICT = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-Wshadow", "-Werror"]


class HarnessError(RuntimeError):
    """The harness did not complete: crash, sanitizer report, missing sentinel or garbled output."""


@dataclass
class Session:
    input_size: int
    commands: list = field(default_factory=list)
    expect: list = field(default_factory=list)  # response kinds, in order

    def lr(self, lr_inv: int):
        self.commands.append(b"LRIV" + struct.pack("<i", lr_inv))

    def prof(self, mode: int):
        self.commands.append(b"PROF" + struct.pack("<i", mode))

    def masks(self, masks: list):
        blob = b"MASK" + struct.pack("<i", len(masks))
        for m in masks:
            m = np.ascontiguousarray(m, dtype=np.uint8).reshape(-1)
            blob += struct.pack("<i", m.size) + m.tobytes()
        self.commands.append(blob)

    def train(self, x: np.ndarray, y: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.int8).reshape(len(x), self.input_size)
        self.commands.append(b"TRAN" + struct.pack("<i", len(x)) + x.tobytes() +
                             np.asarray(y, dtype=np.uint8).tobytes())
        self.expect.append("TRAN")

    def predict(self, x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.int8).reshape(len(x), self.input_size)
        self.commands.append(b"PRED" + struct.pack("<i", len(x)) + x.tobytes())
        self.expect.append("PRED")

    def weights(self):
        self.commands.append(b"WGHT")
        self.expect.append("WGHT")

    def to_bytes(self) -> bytes:
        return b"".join(self.commands) + b"DONE"


def parse_results(blob: bytes, conv: Converted, expect: list) -> list:
    """Decode res.bin: TRAN -> int, PRED -> (scores, classes), WGHT -> (weights dict, rng, lr_inv)."""
    p = conv.plan
    nc = p.model.num_classes
    out, pos = [], 0

    def take(n):
        nonlocal pos
        if pos + n > len(blob):
            raise HarnessError(f"garbled harness output: truncated at byte {pos} of {len(blob)}")
        b = blob[pos:pos + n]
        pos += n
        return b

    for kind in expect:
        tag = take(4).decode("ascii", "replace")
        if tag != kind:
            raise HarnessError(f"garbled harness output: expected {kind}, got {tag!r} at byte {pos - 4}")
        if kind == "TRAN":
            out.append(struct.unpack("<i", take(4))[0])
        elif kind == "PRED":
            n = struct.unpack("<i", take(4))[0]
            rec = np.frombuffer(take(n * (nc + 1)), dtype=np.uint8).reshape(n, nc + 1)
            out.append((rec[:, :nc].view(np.int8).copy(), rec[:, nc].astype(np.int64)))
        else:
            n = struct.unpack("<i", take(4))[0]
            flat = np.frombuffer(take(4 * n), dtype="<i4")
            rng_lo, rng_hi, lr = struct.unpack("<IIi", take(12))
            ws, i = {}, 0
            for t in p.tensors:
                ws[t["name"]] = flat[i:i + t["count"]].reshape(t["shape"]).astype(np.int64)
                i += t["count"]
            out.append((ws, rng_lo | (rng_hi << 32), lr))
    if pos != len(blob):
        raise HarnessError(f"garbled harness output: {len(blob) - pos} unexpected trailing bytes")
    return out


def model_defines(conv: Converted, masks: bool = False) -> list[str]:
    n = conv.plan.name
    d = [f"NH_NAME={n}", f"NH_UPPER={n.upper()}", f'NH_HEADER="{n}.h"']
    if masks:
        d += ["NITRO_TEST_HOOKS", f"NITRO_MAX_MASK_BYTES={mask_bytes(conv)}"]
    return d


def mask_bytes(conv: Converted) -> int:
    return max(8, sum(o["count"] * conv.plan.batch for o in conv.plan.ops if o["kind"] == "dropout"))


def build_host_harness(conv: Converted, out_dir: Path, cc: str = "gcc", sanitize: bool = True,
                       masks: bool = False) -> Path:
    """Compile harness + generated model + board_host.c with strict warnings (and sanitizers)."""
    out_dir = Path(out_dir)
    conv.save(file=out_dir)
    exe = out_dir / "harness_host"
    comp = shutil.which(cc)
    if comp is None:
        raise HarnessError(f"{cc} not found (apt-get install {'clang' if 'clang' in cc else 'gcc'})")
    flags = STRICT + (SANITIZE if sanitize else [])
    if sanitize and "clang" in cc:
        flags += ["-fsanitize=implicit-conversion"]
    cmd = [comp, *flags, f"-I{FIRMWARE_DIR}", f"-I{out_dir}", *[f"-D{d}" for d in model_defines(conv, masks)],
           str(FIRMWARE_DIR / "board_host.c"), str(FIRMWARE_DIR / "harness.c"), str(out_dir / f"{conv.plan.name}.c"),
           "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"host build with {cc} failed:\n{proc.stderr}")
    return exe


def run_host(conv: Converted, session: Session, cc: str = "gcc", sanitize: bool = True, masks: bool = False,
             timeout: float = 300) -> list:
    with tempfile.TemporaryDirectory(prefix="nitro-harness-") as d:
        d = Path(d)
        exe = build_host_harness(conv, d, cc, sanitize, masks)
        (d / "cmd.bin").write_bytes(session.to_bytes())
        proc = subprocess.run([str(exe)], cwd=d, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
        check_sentinel(proc.stdout, proc.stderr, proc.returncode)
        return parse_results((d / "res.bin").read_bytes(), conv, session.expect)


def check_sentinel(stdout: str, stderr: str, rc: int | None):
    m = None
    for m in SENTINEL_RE.finditer(stdout):
        pass
    if rc != 0 or m is None or int(m.group(1)) != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise HarnessError(f"harness failed (exit {rc}, sentinel {m.group(0) if m else 'missing'}): "
                           + " | ".join(tail))


@dataclass
class McuRun:
    results: list
    build: object  # targets.BuildResult
    run: object  # targets.RunResult
    stack_bytes: int | None


def write_cmd_blob(path: Path, blob: bytes) -> Path:
    """The command file as a C array, for the embedded transport (no semihosting files needed)."""
    rows = [", ".join(str(b) for b in blob[i:i + 24]) for i in range(0, len(blob), 24)]
    path.write_text("/* nitro_mcu harness commands, compiled in (NITRO_EMBEDDED_CMD) */\n#include <stdint.h>\n"
                    f"const uint32_t nitro_cmd_len = {len(blob)}u;\n"
                    f"const uint8_t nitro_cmd_blob[{max(1, len(blob))}] = {{\n    " + ",\n    ".join(rows) + "\n};\n")
    return path


def parse_console_results(stdout: str) -> bytes:
    """Concatenate the 'RES <hex>' lines of the embedded transport."""
    out = bytearray()
    for line in stdout.splitlines():
        if line.startswith("RES "):
            try:
                out += bytes.fromhex(line[4:].strip())
            except ValueError:
                raise HarnessError(f"garbled harness output: bad hex line {line[:40]!r}") from None
    return bytes(out)


def build_mcu(conv: Converted, target: str, out_dir: Path | None = None, masks: bool = False, io: str = "semihost",
              profile_ops: bool = False, embedded_cmd: bytes | None = None):
    """Cross-compile harness + model for ``target`` (cached by sources, target and options).

    ``embedded_cmd``: compile the command file in and report results on the console (Renode, boards)."""
    import hashlib
    import pickle

    from . import targets
    from ..codegen.compiled import _cache_dir

    defines = model_defines(conv, masks) + (["NITRO_PROFILE_OPS"] if profile_ops else [])
    if embedded_cmd is not None:
        defines.append("NITRO_EMBEDDED_CMD")
    h = hashlib.sha256(repr((sorted(conv.sources.items()), target, io, defines)).encode())
    h.update(embedded_cmd or b"")
    for f in ("harness.c", "startup.c", "board_semihost.c", "board_uart.c", "board.h"):
        h.update((FIRMWARE_DIR / f).read_bytes())
    d = Path(out_dir) if out_dir is not None else _cache_dir() / f"fw_{conv.plan.name}_{target}_{h.hexdigest()[:16]}"
    stamp = d / "build.pickle"
    if out_dir is None and stamp.is_file():
        return pickle.loads(stamp.read_bytes())
    d.mkdir(parents=True, exist_ok=True)
    conv.save(file=d)
    extra = [write_cmd_blob(d / "cmd_blob.c", embedded_cmd)] if embedded_cmd is not None else []
    b = targets.build_firmware([FIRMWARE_DIR / "harness.c", d / f"{conv.plan.name}.c", *extra], target, d,
                               include_dirs=[d], defines=defines, io=io, name=f"{conv.plan.name}_{target}")
    if out_dir is None:
        stamp.write_bytes(pickle.dumps(b))
    return b


def run_mcu(conv: Converted, session: Session, target: str = "m4", masks: bool = False, count_insns: bool = False,
            timeout: float = 300, work_dir: Path | None = None, io: str = "semihost",
            profile_ops: bool = False, transport: str = "files") -> McuRun:
    """Build (or reuse) the harness firmware for ``target``, run it in QEMU, decode the results.

    transport 'files': semihosting file I/O (cmd.bin / res.bin); 'embedded': commands compiled into the
    firmware and results as hex lines on the console (the path Renode and real boards use), here over UART.
    """
    from . import targets

    ctx = tempfile.TemporaryDirectory(prefix="nitro-mcu-") if work_dir is None else None
    d = Path(work_dir or ctx.name)
    try:
        d.mkdir(parents=True, exist_ok=True)
        if transport not in ("files", "embedded"):
            raise ValueError(f"unknown transport '{transport}'")
        embedded = session.to_bytes() if transport == "embedded" else None
        if embedded is not None:
            io = "uart"
        b = build_mcu(conv, target, None, masks, io, profile_ops, embedded)
        (d / "cmd.bin").write_bytes(session.to_bytes())
        r = targets.run_qemu(b.elf, target, cwd=d, timeout=timeout, count_insns=count_insns, io=io, check=False)
        if r.timed_out:
            raise HarnessError(f"the emulator timed out after {timeout:.0f} s on {target}")
        check_sentinel(r.stdout, r.stderr, r.exit_status)
        stack = None
        for line in r.stdout.splitlines():
            if line.startswith("stack "):
                stack = int(line.split()[1])
        blob = parse_console_results(r.stdout) if embedded is not None else (d / "res.bin").read_bytes()
        res = parse_results(blob, conv, session.expect)
        return McuRun(res, b, r, stack)
    finally:
        if ctx is not None:
            ctx.cleanup()
