"""The wire protocol between Python and the firmware.

Out: a :class:`Session` is the command blob (``cmd.bin``, or compiled in as a C array).  Back: the console ends
with the sentinel line ``NITRO-DONE <status>``, parsed here and nowhere else, and the harness answers in
``res.bin`` (or as ``RES <hex>`` console lines), decoded by :func:`parse_results`.
"""
from __future__ import annotations

import dataclasses
import re
import struct
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..codegen import Converted

SENTINEL_RE = re.compile(r"^NITRO-DONE (-?\d+)\s*$", re.M)
# the exit line of a part without semihosting (firmware/board_semihost.c, BOARD_NO_SEMIHOST): its exit status
EXIT_RE = re.compile(r"^NITRO-EXIT (-?\d+)\r?\n", re.M)


def sentinel_status(stdout: str) -> int | None:
    """The status of the last ``NITRO-DONE <status>`` line, or None when there is none."""
    m = None
    for m in SENTINEL_RE.finditer(stdout):
        pass
    return int(m.group(1)) if m else None


def exit_line_status(stdout: str) -> int | None:
    """The status of the first complete ``NITRO-EXIT <status>`` line, or None when there is none yet."""
    m = EXIT_RE.search(stdout)
    return int(m.group(1)) if m else None


@dataclasses.dataclass
class RunResult:
    """One run of a firmware image (emulator) or host build: its console, exit status and counts."""
    stdout: str
    stderr: str
    exit_status: int | None       # None on timeout
    sentinel_status: int | None   # from the last sentinel line; None when there is none
    cmd: list
    wall_s: float
    insns_total: int | None = None
    insns_region: int | None = None
    regions: int | None = None
    timed_out: bool = False
    ram_results: bytes = b""      # results read out of the board's RAM at the end (Renode's fast path)

    @property
    def sentinel_found(self) -> bool:
        return self.sentinel_status is not None

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


class EmulatorError(RuntimeError):
    """The firmware did not run to a clean exit with the sentinel line."""

    def __init__(self, message: str, result: RunResult | None = None):
        super().__init__(message)
        self.result = result


class HarnessError(RuntimeError):
    """The harness did not complete: crash, sanitizer report, missing sentinel or garbled output."""


def output_tail(text: str, n: int = 3) -> str:
    """The last ``n`` non-empty lines of an output, joined for a one-line error message."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def check_exit(res: RunResult, where: str, expect_status: int) -> None:
    """EmulatorError unless a finished run (any engine) exited with ``expect_status`` and its sentinel says so;
    the HardFault handler's exit 0x7F is named as a fault."""
    if res.exit_status == 0x7F:
        raise EmulatorError(f"firmware fault (HardFault handler exit 0x7F) running {where}; "
                            f"last output: {output_tail(res.stdout)}", res)
    if res.exit_status != expect_status:
        raise EmulatorError(f"unexpected exit status {res.exit_status} (expected {expect_status}) running "
                            f"{where}; stderr: {output_tail(res.stderr, 1)}; last output: {output_tail(res.stdout)}",
                            res)
    if not res.sentinel_found:
        raise EmulatorError(f"sentinel line 'NITRO-DONE {expect_status}' missing from the output of {where}; "
                            f"last output: {output_tail(res.stdout)}", res)
    if res.sentinel_status != expect_status:
        raise EmulatorError(f"sentinel reports status {res.sentinel_status}, expected {expect_status}, "
                            f"running {where}", res)


def check_sentinel(stdout: str, stderr: str, rc: int | None) -> None:
    """HarnessError unless the harness exited 0 and its last sentinel line says 0."""
    status = sentinel_status(stdout)
    if rc != 0 or status != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        seen = f"NITRO-DONE {status}" if status is not None else "missing"
        raise HarnessError(f"harness failed (exit {rc}, sentinel {seen}): " + " | ".join(tail))


def stack_high_water(stdout: str) -> int | None:
    """Bytes of stack used, from the harness's last ``stack <used> <size>`` line (None without one)."""
    used = None
    for line in stdout.splitlines():
        if line.startswith("stack "):
            used = int(line.split()[1])
    return used


RAW_DTYPES = {"u8": "<u1", "s16": "<i2", "s32": "<i4"}  # raw readings on the wire (normalization.INPUT_DTYPES)


@dataclasses.dataclass
class Session:
    """The commands of one harness run, in order, and the kinds of answer they expect."""
    input_size: int
    commands: list = dataclasses.field(default_factory=list)
    expect: list = dataclasses.field(default_factory=list)  # response kinds, in order

    def ask(self, tag: bytes, payload: bytes = b""):
        """A command that answers: its bytes, and its tag as the kind of answer expected."""
        self.commands.append(tag + payload)
        self.expect.append(tag.decode())

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
        self.ask(b"TRAN", struct.pack("<i", len(x)) + x.tobytes() + np.asarray(y, dtype=np.uint8).tobytes())

    def predict(self, x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.int8).reshape(len(x), self.input_size)
        self.ask(b"PRED", struct.pack("<i", len(x)) + x.tobytes())

    def weights(self):
        self.ask(b"WGHT")

    def move(self, reference: np.ndarray):
        """The device counts, per tensor, its weights that differ from ``reference`` (all weights, export order)."""
        ref = np.ascontiguousarray(reference, dtype="<i4").reshape(-1)
        self.ask(b"MOVE", struct.pack("<i", ref.size) + ref.tobytes())

    def norm(self, raw: np.ndarray, dtype: str):
        """Raw samples through the device's normalize_<dtype>, then predict (models with input statistics)."""
        raw = np.ascontiguousarray(raw, dtype=RAW_DTYPES[dtype]).reshape(-1, self.input_size)
        self.ask(b"NORM", struct.pack("<i", len(raw)) + raw.tobytes())

    def window(self, readings: np.ndarray, hop: int, dtype: str):
        """Readings pushed one at a time through the device's window helper; each ready window comes back."""
        r = np.ascontiguousarray(readings, dtype=RAW_DTYPES[dtype]).reshape(-1)
        self.ask(b"WIND", struct.pack("<ii", hop, r.size) + r.tobytes())

    @property
    def raw_inputs(self) -> bool:
        """Whether the session sends raw inputs: the harness is then built with those commands."""
        return any(c[:4] in (b"NORM", b"WIND") for c in self.commands)

    # ---- new classes (firmware/harness.c, built with NITRO_REH_BYTES): each answers an int32 ----------
    def add_class(self):
        self.ask(b"ADDC")

    def rehearsal_clear(self):
        self.ask(b"RCLR")

    def rehearsal_open(self):
        self.ask(b"ROPN")

    def rehearsal_add(self, x: np.ndarray, label: int):
        x = np.ascontiguousarray(x, dtype=np.int8).reshape(self.input_size)
        self.ask(b"RADD", struct.pack("<B", label) + x.tobytes())

    def train_rehearsal(self, x: np.ndarray, y: np.ndarray, k: int):
        x = np.ascontiguousarray(x, dtype=np.int8).reshape(len(x), self.input_size)
        self.ask(b"RTRN", struct.pack("<ii", len(x), k) + x.tobytes() + np.asarray(y, dtype=np.uint8).tobytes())

    def to_bytes(self) -> bytes:
        return b"".join(self.commands) + b"DONE"


def cmd_blob_c(blob: bytes) -> str:
    """The command file as a C array, for the embedded transport (no semihosting files needed)."""
    rows = [", ".join(str(b) for b in blob[i:i + 24]) for i in range(0, len(blob), 24)]
    return ("/* nitro_mcu harness commands, compiled in (NITRO_EMBEDDED_CMD) */\n#include <stdint.h>\n"
            f"const uint32_t nitro_cmd_len = {len(blob)}u;\n"
            f"const uint8_t nitro_cmd_blob[{max(1, len(blob))}] = {{\n    " + ",\n    ".join(rows) + "\n};\n")


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


@dataclasses.dataclass(frozen=True)
class WeightDump:
    """A WGHT answer.  ``count`` is the number of weights the device sent; ``weights`` holds the tensors those
    values cover in full (all of them only when ``count`` is the model's).  Unpacks as (weights, rng, lr_inv)."""
    weights: dict
    rng: int
    lr_inv: int
    count: int

    def __iter__(self):
        return iter((self.weights, self.rng, self.lr_inv))


INT_ANSWERS = ("TRAN", "ADDC", "RCLR", "ROPN", "RADD", "RTRN")  # answers that are one int32


def parse_results(blob: bytes, conv: Converted, expect: list) -> list:
    """Decode res.bin: TRAN -> int, PRED -> (scores, classes), WGHT -> :class:`WeightDump`, MOVE -> list of
    per-tensor counts, NORM -> (inputs, scores, classes), WIND -> [(reading index, inputs, class)]."""
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
        if kind in INT_ANSWERS:
            out.append(struct.unpack("<i", take(4))[0])
        elif kind == "PRED":
            n = struct.unpack("<i", take(4))[0]
            rec = np.frombuffer(take(n * (nc + 1)), dtype=np.uint8).reshape(n, nc + 1)
            out.append((rec[:, :nc].view(np.int8).copy(), rec[:, nc].astype(np.int64)))
        elif kind == "NORM":  # (inputs int8 [n, INPUT], scores, classes)
            n = struct.unpack("<i", take(4))[0]
            size = int(np.prod(p.model.input_shape))
            rec = np.frombuffer(take(n * (size + nc + 1)), dtype=np.uint8).reshape(n, size + nc + 1)
            out.append((rec[:, :size].view(np.int8).copy(), rec[:, size:size + nc].view(np.int8).copy(),
                        rec[:, -1].astype(np.int64)))
        elif kind == "WIND":  # [(reading index, inputs int8 [INPUT], class)]
            size, wins = int(np.prod(p.model.input_shape)), []
            while (i := struct.unpack("<i", take(4))[0]) >= 0:
                rec = np.frombuffer(take(size + 1), dtype=np.uint8)
                wins.append((i, rec[:size].view(np.int8).copy(), int(rec[size])))
            out.append(wins)
        elif kind == "MOVE":
            n = struct.unpack("<i", take(4))[0]
            if n < 0:
                raise HarnessError(f"garbled harness output: MOVE reports {n} tensors")
            out.append(list(struct.unpack(f"<{n}i", take(4 * n))))
        else:
            n = struct.unpack("<i", take(4))[0]
            if n < 0:
                raise HarnessError(f"garbled harness output: WGHT reports {n} weights")
            flat = np.frombuffer(take(4 * n), dtype="<i4")
            rng_lo, rng_hi, lr = struct.unpack("<IIi", take(12))
            ws, i = {}, 0
            for t in p.tensors:
                if i + t.count > n:
                    break
                ws[t.name] = flat[i:i + t.count].reshape(t.shape).astype(np.int64)
                i += t.count
            out.append(WeightDump(ws, rng_lo | (rng_hi << 32), lr, n))
    if pos != len(blob):
        raise HarnessError(f"garbled harness output: {len(blob) - pos} unexpected trailing bytes")
    return out
