"""A simulated NOR flash for host tests of the generated checkpoint code, with power cuts that tear the operation
they interrupt, and the ctypes glue that hands it to the C as a ``<name>_storage_t``.

NOR semantics (docs/checkpoint.md): erase sets a whole sector to 0xFF; program takes whole aligned 4-byte words
inside one page and can only clear bits (the result is old AND new).  A cut armed at operation N (program and
erase calls, counted from 0) tears operation N and freezes the flash: later operations change nothing, as a dead
CPU would.  An interrupted operation may leave any mix of old, new and 0xFF (docs/checkpoint.md); the tears are
instances of that:

- ``half``: the first half of the words programmed, or the first half of the sector erased;
- ``bits``: as half, then one word with only some of its bits cleared; an erase leaves every byte a mix of old
  bits and ones;
- ``after``: the operation completes, the next one never happens;
- ``early``: an erase cut as it began: a sparse set of bits reads 1 (bit 30 of every 64th word from word 5, which
  falls on the sequence number of a header at the start of the sector), the rest is old; a program does nothing;
- ``blind``: a program whose unprogrammed bits form a CRC-32 codeword: every word but the last programmed, a few
  bits left at 1 so that any CRC-32 over the flash reads as before (an erase acts as ``half``).

``early`` and ``blind`` are chosen adversarially: each is a state a real part can be left in (rarely: ``blind``
about once in 2**32 tears), and each is one that only one defence catches (the CRC; the commit order), so the
ablation sweep can show that defence is needed (docs/checkpoint.md).
"""
from __future__ import annotations

import ctypes
import zlib

import numpy as np

from ..trainer.rng import Rng

TEARS = ("half", "bits", "after", "early", "blind")
WORD = 4

READ_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
PROGRAM_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)
ERASE_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32)


class StorageStruct(ctypes.Structure):
    """The layout of ``<name>_storage_t`` (templates/checkpoint.h.j2)."""
    _fields_ = [("read", READ_FN), ("program", PROGRAM_FN), ("erase", ERASE_FN), ("ctx", ctypes.c_void_p),
                ("page_buf", ctypes.c_void_p), ("page_size", ctypes.c_uint32), ("num_pages", ctypes.c_uint32),
                ("sector_size", ctypes.c_uint32)]


def crc_blind_bits(data: bytes, limit: int = 96) -> list[int]:
    """Bit positions (byte * 8 + bit) where ``data`` has a 0 and that, all flipped to 1, leave every CRC-32 over
    a message containing ``data`` unchanged: a nonzero set whose CRC syndromes XOR to zero (CRC-32 is affine, so
    crc(m ^ e) == crc(m) ^ crc(e) ^ crc(0) for equal lengths).  [] if fewer than 33 zero bits are available."""
    zero = bytes(len(data))
    base = zlib.crc32(zero)
    cands = [8 * i + b for i, byte in enumerate(data) for b in range(8) if not byte >> b & 1][:limit]
    basis: dict[int, tuple[int, int]] = {}      # pivot bit -> (syndrome, set of candidates as a bit mask)
    for k, pos in enumerate(cands):
        e = bytearray(zero)
        e[pos // 8] = 1 << (pos % 8)
        syn, mask = zlib.crc32(e) ^ base, 1 << k
        while syn:
            top = syn.bit_length() - 1
            if top not in basis:
                basis[top] = (syn, mask)
                break
            syn, mask = syn ^ basis[top][0], mask ^ basis[top][1]
        if not syn:                                 # a dependent set: a codeword
            return [cands[j] for j in range(k + 1) if mask >> j & 1]
    return []


class NorFlash:
    """``num_pages`` program pages of ``page_size`` bytes, erased in sectors of ``sector_size`` bytes (a multiple
    of the page; the page when None); counts operations and records misuse in ``violations``."""

    def __init__(self, page_size: int, num_pages: int, image: bytes | None = None, seed: int = 0,
                 sector_size: int | None = None):
        self.page_size, self.num_pages = page_size, num_pages
        self.sector_size = page_size if sector_size is None else sector_size
        if self.sector_size % page_size or (page_size * num_pages) % self.sector_size:
            raise ValueError(f"a sector ({self.sector_size} B) is whole pages ({page_size} B) and the region whole "
                             f"sectors ({page_size * num_pages} B)")
        self.num_sectors = page_size * num_pages // self.sector_size
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
        old = bytes(self.mem[addr:addr + n])
        for i in range(words):
            o, b = old[WORD * i:WORD * i + WORD], data[WORD * i:WORD * i + WORD]
            if any((x & y) != y for x, y in zip(o, b)):
                self.violations.append(f"program at {addr + WORD * i}: word not erased (bits would have to be set)")
        done = bytearray(x & y for x, y in zip(old, data))
        if state == "torn":
            if self.tear == "early":
                done = bytearray(old)
            elif self.tear == "blind" and (flip := crc_blind_bits(bytes(done[:n - WORD]))):
                for pos in flip:                    # left unprogrammed: old was erased there (else: a violation)
                    done[pos // 8] |= old[pos // 8] & (1 << pos % 8)
            else:                                   # half, bits (and blind without a codeword)
                h = WORD * (words // 2)
                if self.tear == "bits" and h < n:
                    keep = self.rng.below(256, WORD)    # a random part of the bits to clear gets cleared
                    done[h:h + WORD] = bytes(x & (y | int(k)) for x, y, k in zip(old[h:h + WORD], data[h:h + WORD], keep))
                    h += WORD
                done[h:] = old[h:]
        self.mem[addr:addr + n] = done
        return 0

    def erase(self, sector: int) -> int:
        self.stats["erase"] += 1
        if not 0 <= sector < self.num_sectors:
            self.violations.append(f"erase of sector {sector} outside the region")
            return -1
        state = self._begin()
        if state == "off":
            return 0
        a, p = sector * self.sector_size, self.sector_size
        if state == "run":
            self.mem[a:a + p] = b"\xff" * p
        elif self.tear == "bits":                         # each byte keeps its ones and gains some
            ones = self.rng.below(256, p).astype("u1")
            self.mem[a:a + p] = (np.frombuffer(self.mem, "u1", p, a) | ones).tobytes()
        elif self.tear == "early":                        # a few bits erased: bit 30 of words 5, 69, 133, ...
            for w in range(a + 5 * WORD, a + p, 64 * WORD):
                self.mem[w + 3] |= 0x40
        else:                                             # half (and blind)
            self.mem[a:a + p // 2] = b"\xff" * (p // 2)
        return 0


class Storage:
    """A :class:`NorFlash` (or a read-only byte string, read in ``page_size`` chunks, with ``sector_size`` as the
    erase unit it reports) as a ``<name>_storage_t`` for the generated C.

    Keep this object alive while the C may call it: it owns the callbacks and the page buffer."""

    def __init__(self, flash: "NorFlash | bytes", page_size: int | None = None, sector_size: int = 0):
        self.flash = flash
        self.page_size = flash.page_size if isinstance(flash, NorFlash) else int(page_size)
        sector = flash.sector_size if isinstance(flash, NorFlash) else sector_size
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
                                    pages, sector)

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
