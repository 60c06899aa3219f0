"""The static memory plan: arena buffers with lifetimes (op indices), and their placement at 8-byte
aligned offsets of one arena (docs/codegen.md)."""
from __future__ import annotations

from dataclasses import dataclass

ALIGN = 8
CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "int64_t": 8}


@dataclass
class Buffer:
    """One member of the arena, alive from op ``first`` (where it is produced) to op ``last``."""

    name: str
    ctype: str
    count: int
    first: int
    last: int
    what: str = ""
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return self.count * CTYPE_BYTES[self.ctype]


class Arena:
    """The buffers of a plan while it is built: each is created at an op index and lives to its last use."""

    def __init__(self):
        self.buffers: list[Buffer] = []

    def new(self, name: str, ctype: str, count: int, t: int, what: str) -> Buffer:
        b = Buffer(name, ctype, count, t, t, what)
        self.buffers.append(b)
        return b

    @staticmethod
    def use(buf: Buffer | None, t: int) -> None:
        """Op ``t`` reads ``buf`` (None: the caller's input, not in the arena)."""
        if buf is not None:
            buf.last = max(buf.last, t)


def place_buffers(bufs: list[Buffer]) -> int:
    """Greedy by size (TFLM's planner): lowest offset that overlaps no live-at-the-same-time buffer."""
    placed: list[Buffer] = []
    for b in sorted(bufs, key=lambda b: (-b.nbytes, b.first)):
        conflicts = sorted((p for p in placed if not (p.last < b.first or b.last < p.first)), key=lambda p: p.offset)
        off = 0
        for p in conflicts:
            if off + b.nbytes <= p.offset:
                break
            off = max(off, align(p.offset + p.nbytes))
        b.offset = off
        placed.append(b)
    return align(max((b.offset + b.nbytes for b in bufs), default=0))


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN
