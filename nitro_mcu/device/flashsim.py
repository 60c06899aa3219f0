"""A simulated NOR flash for host tests of the generated checkpoint code, with power cuts that tear the operation
they interrupt, and the ctypes glue that hands it to the C as a ``<name>_storage_t``.

NOR semantics (docs/checkpoint.md): erase sets a page to 0xFF; program takes whole aligned 4-byte words inside
one page and can only clear bits (the result is old AND new).  A cut armed at operation N (program and erase
calls, counted from 0) tears operation N and freezes the flash: later operations change nothing, as a dead CPU
would.  Tears: ``half`` (the first half of the words, or of the page for an erase), ``bits`` (as half, then one
word with only some of its bits cleared; an erase leaves every byte a mix of old bits and ones), ``after`` (the
operation completes, the next one never happens).
"""
from __future__ import annotations

import ctypes

from ..trainer.rng import Rng

TEARS = ("half", "bits", "after")
WORD = 4

READ_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
PROGRAM_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
ERASE_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32)


class StorageStruct(ctypes.Structure):
    """The layout of ``<name>_storage_t`` (templates/checkpoint.h.j2)."""
    _fields_ = [("read", READ_FN), ("program", PROGRAM_FN), ("erase", ERASE_FN), ("ctx", ctypes.c_void_p),
                ("page_buf", ctypes.c_void_p), ("page_size", ctypes.c_uint32), ("num_pages", ctypes.c_uint32)]


class NorFlash:
    """``num_pages`` pages of ``page_size`` bytes; counts operations and records misuse in ``violations``."""

    def __init__(self, page_size: int, num_pages: int, image: bytes | None = None, seed: int = 0):
        self.page_size, self.num_pages = page_size, num_pages
        self.mem = bytearray(b"\xff" * (page_size * num_pages)) if image is None else bytearray(image)
        if len(self.mem) != page_size * num_pages:
            raise ValueError(f"a flash image of {page_size * num_pages} bytes is needed, got {len(self.mem)}")
        self.rng = Rng(seed, 11)
        self.violations: list[str] = []
        self.on_cut = None          # test hook: called with the flash when the power goes
        self.power_on()

    def power_on(self, image: bytes | None = None):
        """A fresh boot (optionally with new contents): operation counters cleared, no cut armed."""
        if image is not None:
            self.mem[:] = image
        self.ops = 0
        self.cut_at, self.tear, self.dead = None, "after", False
        self.stats = dict(read=0, program=0, erase=0, read_bytes=0, program_bytes=0)

    def arm(self, op: int, tear: str):
        if tear not in TEARS:
            raise ValueError(f"tear must be one of {', '.join(TEARS)}, got {tear!r}")
        self.cut_at, self.tear = op, tear

    def _begin(self) -> str:
        """Count one program/erase: 'run' it, run it 'torn' (the cut is now) or not at all ('off')."""
        op = self.ops
        self.ops += 1
        if self.dead:
            return "off"
        if op == self.cut_at:
            self.dead = True
            if self.on_cut is not None:
                self.on_cut(self)
            return "run" if self.tear == "after" else "torn"
        return "run"

    def read(self, addr: int, n: int) -> bytes | None:
        self.stats["read"] += 1
        self.stats["read_bytes"] += n
        if addr < 0 or addr + n > len(self.mem):
            self.violations.append(f"read of {n} bytes at {addr} outside the region")
            return None
        return bytes(self.mem[addr:addr + n])

    def program(self, addr: int, data: bytes) -> int:
        self.stats["program"] += 1
        self.stats["program_bytes"] += len(data)
        n = len(data)
        if addr % WORD or n % WORD or n == 0 or addr + n > len(self.mem) or \
                addr // self.page_size != (addr + n - 1) // self.page_size:
            self.violations.append(f"program of {n} bytes at {addr}: not whole words inside one page")
            return -1
        words = n // WORD
        state = self._begin()
        if state == "off":
            return 0
        full = state == "run"
        done = words if full else words // 2
        for i in range(words):
            a = addr + WORD * i
            old, new = self.mem[a:a + WORD], data[WORD * i:WORD * i + WORD]
            if any((o & b) != b for o, b in zip(old, new)):
                self.violations.append(f"program at {a}: word not erased (bits would have to be set)")
            if i < done:
                self.mem[a:a + WORD] = bytes(o & b for o, b in zip(old, new))
            elif i == done and self.tear == "bits" and not full:
                keep = self.rng.below(256, WORD)           # a random part of the bits to clear gets cleared
                self.mem[a:a + WORD] = bytes(o & (b | int(k)) for o, b, k in zip(old, new, keep))
        return 0

    def erase(self, page: int) -> int:
        self.stats["erase"] += 1
        if not 0 <= page < self.num_pages:
            self.violations.append(f"erase of page {page} outside the region")
            return -1
        state = self._begin()
        if state == "off":
            return 0
        full = state == "run"
        a, p = page * self.page_size, self.page_size
        if full:
            self.mem[a:a + p] = b"\xff" * p
        elif self.tear == "half":
            self.mem[a:a + p // 2] = b"\xff" * (p // 2)
        else:                                             # bits: each byte keeps its ones and gains some
            ones = self.rng.below(256, p)
            self.mem[a:a + p] = bytes(o | int(k) for o, k in zip(self.mem[a:a + p], ones))
        return 0


class Storage:
    """A :class:`NorFlash` (or a read-only byte string) as a ``<name>_storage_t`` for the generated C.

    Keep this object alive while the C may call it: it owns the callbacks and the page buffer."""

    def __init__(self, flash: "NorFlash | bytes", page_size: int | None = None):
        self.flash = flash
        self.page_size = flash.page_size if isinstance(flash, NorFlash) else int(page_size)
        self.page_buf = ctypes.create_string_buffer(self.page_size)
        rom = None if isinstance(flash, NorFlash) else bytes(flash)

        def read(_ctx, addr, dst, n):
            data = self.flash.read(addr, n) if rom is None else (rom[addr:addr + n] if addr + n <= len(rom) else None)
            if data is None:
                return -1
            ctypes.memmove(dst, data, n)
            return 0

        def program(_ctx, addr, src, n):
            return -1 if rom is not None else self.flash.program(addr, ctypes.string_at(src, n))

        def erase(_ctx, page):
            return -1 if rom is not None else self.flash.erase(page)

        self._fns = (READ_FN(read), PROGRAM_FN(program), ERASE_FN(erase))
        pages = flash.num_pages if rom is None else -(-len(rom) // self.page_size)
        self.struct = StorageStruct(*self._fns, None, ctypes.cast(self.page_buf, ctypes.c_void_p), self.page_size,
                                    pages)

    @property
    def ref(self):
        return ctypes.byref(self.struct)


class CkptLib:
    """The checkpoint functions of a compiled model (nitro_mcu.device.compiled.CompiledModel)."""

    def __init__(self, compiled):
        self.cm = compiled
        lib, n = compiled.lib, compiled.name
        sig = {"ckpt_save": [ctypes.c_void_p], "ckpt_load": [ctypes.c_void_p], "ckpt_import": [ctypes.c_void_p],
               "ckpt_export": [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32], "ckpt_seq": [], "train_steps": []}
        self.f = {}
        for fname, args in sig.items():
            fn = getattr(lib, f"{n}_{fname}")
            fn.argtypes = args
            fn.restype = ctypes.c_uint32 if fname in ("ckpt_seq", "train_steps") else ctypes.c_int32
            self.f[fname] = fn

    def save(self, st: Storage) -> int:
        return self.f["ckpt_save"](st.ref)

    def load(self, st: Storage) -> int:
        return self.f["ckpt_load"](st.ref)

    def import_(self, st: Storage) -> int:
        return self.f["ckpt_import"](st.ref)

    def seq(self) -> int:
        return self.f["ckpt_seq"]()

    def steps(self) -> int:
        return self.f["train_steps"]()

    def export(self, size: int, chunk: int = 256) -> bytes:
        """The current state's checkpoint, pulled ``chunk`` bytes at a time."""
        out = bytearray()
        buf = ctypes.create_string_buffer(chunk)
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            if self.f["ckpt_export"](off, buf, n) != n:
                raise RuntimeError(f"ckpt_export({off}, {n}) failed")
            out += buf.raw[:n]
        return bytes(out)
