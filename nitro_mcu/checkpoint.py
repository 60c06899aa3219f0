"""The checkpoint format shared by Python and the generated C (docs/checkpoint.md), and its two-slot flash layout.

A checkpoint is the whole training state of one model: a 52-byte header (magic, version, model fingerprint,
size, commit sequence number, training step, lr_inv, dropout PRNG state, weight width and count, active classes
(:data:`FIELDS`)), the weights in
tensor order at their native width, zero padding to a multiple of 4 and a CRC-32 (zlib's) over all that.
A model with frozen blocks (docs/adaptation.md) carries only its trainable tensors: the frozen ones are constants
in the C's flash, and the fingerprint covers the trainable set and the frozen values, so a tail checkpoint fits
only the frozen prefix it was trained on.
All integers are little-endian.  The C side (templates/checkpoint.c.j2) writes and reads the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .trainer.network import Model
from .trainer.rng import Rng

MAGIC = b"NCKP"
VERSION = 2   # 2: the active-class count (a class added on the device survives a reset); 1 is refused (VERSION)
# The header, one field after the other: every byte a field, none implicit ("<": no alignment padding), so Python
# and the C (which takes the offsets from layout()) read the same words; docs/checkpoint.md lists each byte.
FIELDS = (("magic", "4s"), ("version", "H"), ("header_bytes", "H"), ("fingerprint", "Q"), ("size", "I"),
          ("seq", "I"), ("step", "I"), ("lr_inv", "i"), ("rng", "Q"), ("weight_bits", "I"), ("count", "I"),
          ("active_classes", "I"))
HEADER = struct.Struct("<" + "".join(f for _, f in FIELDS))
HEADER_BYTES = HEADER.size                    # 52
OFFSETS = {name: struct.calcsize("<" + "".join(f for _, f in FIELDS[:i])) for i, (name, _) in enumerate(FIELDS)}
COMMIT = 0x54494D43                           # b"CMIT" little-endian: written after a slot's checkpoint, last
SLOTS = 2
MIN_PAGE = 64                                 # a page (program unit, the C's one buffer) holds the 52-byte header

# error codes, the same values as the C constants <NAME>_CKPT_ERR_* (docs/checkpoint.md)
ERRORS = {"arg": -101, "io": -102, "empty": -103, "magic": -104, "version": -105, "model": -106, "format": -107,
          "uncommitted": -108, "crc": -109, "verify": -110}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; ``code`` is one of :data:`ERRORS`' keys."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def fingerprint(model: Model) -> int:
    """64 bits of SHA-256 over what makes a checkpoint fit a model: architecture, hyper-parameters that the
    training step reads, profile (quirks), weight width and tensor shapes; with frozen blocks also the trainable
    set and the values of the frozen tensors that training reads (all but the frozen heads, which never run).
    The initial lr_inv is left out: the checkpoint carries the current one."""
    ident = {"spec": {k: v for k, v in model.spec.items() if k != "lr_inv"}, "quirks": model.quirks.to_dict(),
             "weight_bits": model.weight_bits,
             "tensors": [[name, list(shape)] for name, shape in model.param_shapes().items()]}
    if not model.all_trainable:
        frozen = hashlib.sha256()
        for name in model.param_shapes():
            if not model.trains(model.tensor_block(name)) and not name.endswith(".head"):
                frozen.update(np.asarray(model.weights[name], dtype="<i8").tobytes())
        ident.update(trainable=sorted(model.trainable), frozen=frozen.hexdigest())
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


def carried(model: Model) -> dict:
    """The tensors a checkpoint holds, name -> shape in tensor order: the trainable ones (all, unless frozen)."""
    return {n: s for n, s in model.param_shapes().items() if model.trains(model.tensor_block(n))}


def num_weights(model: Model) -> int:
    return sum(int(np.prod(s)) for s in carried(model).values())


def body_bytes(model: Model) -> int:
    """Header + weights + padding: the bytes the CRC covers."""
    raw = HEADER_BYTES + num_weights(model) * model.weight_bits // 8
    return raw + (-raw) % 4


def size(model: Model) -> int:
    """Bytes of one checkpoint of ``model`` (a multiple of 4)."""
    return body_bytes(model) + 4


@dataclass
class Checkpoint:
    fingerprint: int
    seq: int
    step: int
    lr_inv: int
    rng_state: int
    weight_bits: int
    weights: np.ndarray   # the carried weights (:func:`carried`), tensor order, int16 or int32
    active_classes: int   # output slots in use: more than the model's own after classes added on the device

    def tensors(self, model: Model) -> dict:
        """Every tensor of ``model`` by name, in its shape: the carried ones from the checkpoint, frozen ones
        (which the fingerprint covers) from ``model``."""
        out, i = {}, 0
        carry = carried(model)
        for name, shape in model.param_shapes().items():
            if name not in carry:
                out[name] = np.asarray(model.weights[name]).copy()
                continue
            n = int(np.prod(shape))
            out[name] = self.weights[i:i + n].reshape(shape).copy()
            i += n
        return out


def encode(model: Model, step: int = 0, lr_inv: int | None = None, seq: int = 0) -> bytes:
    """The checkpoint bytes of ``model``'s weights and dropout PRNG state."""
    lr = int(model.spec["lr_inv"] if lr_inv is None else lr_inv)
    if lr <= 0:
        raise ValueError(f"lr_inv must be positive, got {lr}")
    dt = "<i2" if model.weight_bits == 16 else "<i4"
    flat = np.concatenate([np.asarray(model.weights[n]).reshape(-1) for n in carried(model)]).astype(dt)
    head = HEADER.pack(MAGIC, VERSION, HEADER_BYTES, fingerprint(model), size(model), seq & 0xFFFFFFFF,
                       int(step) & 0xFFFFFFFF, lr, int(model.dropout_rng.state), model.weight_bits, flat.size,
                       model.active_classes)
    body = head + flat.tobytes()
    body += bytes((-len(body)) % 4)
    return body + struct.pack("<I", zlib.crc32(body))


def version_error(ver: int) -> CheckpointError:
    """Another format version: refused, as every reader refuses one (version 1 lacks the active-class count)."""
    return CheckpointError("version", f"checkpoint format version {ver} is not supported (this reads {VERSION}; "
                                      "docs/checkpoint.md: moving a checkpoint across versions)")


def version_of(blob: bytes) -> int | None:
    """The format version of checkpoint bytes; None when they do not begin with a checkpoint's magic."""
    if blob[:4] != MAGIC or len(blob) < OFFSETS["header_bytes"]:
        return None
    return struct.unpack_from("<H", blob, OFFSETS["version"])[0]


def check_version(blob: bytes) -> None:
    """The VERSION error for bytes that begin with another version's checkpoint, whatever their length (decode,
    in the C's order, first calls a blob shorter than this version's checkpoint too short: ARG)."""
    ver = version_of(blob)
    if ver not in (None, VERSION):
        raise version_error(ver)


def decode(blob: bytes, model: Model | None = None, slot: bool = False) -> Checkpoint:
    """Parse and check checkpoint bytes (against ``model`` when given); CheckpointError names the defect.

    ``slot``: ``blob`` is a flash slot, whose commit word must follow the checkpoint.  The checks run in the
    C's order, so both name the same defect (tests/ckpt_corpus.py holds the blobs both must agree on)."""
    blob = bytes(blob)
    need = size(model) + (4 if slot else 0) if model is not None else HEADER_BYTES + 4
    if len(blob) < need:          # the C: a storage region smaller than one checkpoint (and its commit word)
        raise CheckpointError("arg", f"{len(blob)} bytes cannot hold a checkpoint"
                                     + (f" of this model ({need} bytes)" if model is not None else ""))
    if blob[:4] == b"\xff\xff\xff\xff":
        raise CheckpointError("empty", "erased flash, no checkpoint")
    magic, ver, hbytes, fp, total, seq, step, lr, rng, bits, n, active = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError("magic", f"not a nitro-mcu checkpoint (magic {magic!r})")
    if ver != VERSION:
        raise version_error(ver)
    if model is not None and fp != fingerprint(model):
        raise CheckpointError("model", f"the checkpoint belongs to another model (fingerprint {fp:016x}, "
                                       f"this model {fingerprint(model):016x})")
    raw = HEADER_BYTES + n * bits // 8
    if hbytes != HEADER_BYTES or bits not in (16, 32) or total != raw + (-raw) % 4 + 4 or \
            (model is not None and (bits != model.weight_bits or n != num_weights(model))):
        raise CheckpointError("format", f"inconsistent checkpoint header (size {total}, {n} int{bits} weights)")
    if len(blob) < total + (4 if slot else 0):
        raise CheckpointError("arg", f"{len(blob)} bytes cannot hold the checkpoint the header describes ({total})")
    if slot and struct.unpack_from("<I", blob, total)[0] != COMMIT:
        raise CheckpointError("uncommitted", "an interrupted save (no commit word)")
    if zlib.crc32(blob[:total - 4]) != struct.unpack_from("<I", blob, total - 4)[0]:
        raise CheckpointError("crc", "checkpoint CRC mismatch: torn or corrupted")
    if lr <= 0:
        raise CheckpointError("format", f"checkpoint holds lr_inv {lr}, not a positive value")
    check_active(active, model)
    if any(blob[raw:total - 4]):
        raise CheckpointError("format", "the padding after the weights is not zero")
    w = np.frombuffer(blob, "<i2" if bits == 16 else "<i4", n, HEADER_BYTES)
    return Checkpoint(fp, seq, step, lr, rng, bits, w.astype(np.int16 if bits == 16 else np.int32), active)


def check_active(active: int, model: Model | None) -> None:
    """The active-class count a reader takes: from the model's own classes (the C's ACTIVE_CLASSES_INIT; fewer
    would drop a class it was generated with) to its output slots; without a model, 1..256 (uint8 labels)."""
    lo, hi = (model.active_classes, model.num_classes) if model is not None else (1, 256)
    if not lo <= active <= hi:
        raise CheckpointError("format", f"checkpoint holds {active} active classes, not {lo}..{hi}"
                                        + (" (the model's classes .. its output slots)" if model is not None else ""))


def apply(model: Model, ckpt: Checkpoint) -> None:
    """Load a decoded checkpoint into ``model`` (weights, dropout PRNG and active classes)."""
    if ckpt.fingerprint != fingerprint(model):
        raise CheckpointError("model", "the checkpoint belongs to another model")
    check_active(ckpt.active_classes, model)
    model.load_weights(ckpt.tensors(model))
    model.dropout_rng = Rng(0, state=ckpt.rng_state)
    model.active_classes = ckpt.active_classes


# ---- the two-slot flash layout -------------------------------------------------------------------------------
# Two geometries of a flash part: the page (program unit, and the size of the C's one RAM buffer) and the sector
# (erase unit, a multiple of the page: 4 KB on SPI NOR, 16-128 KB on STM32F4).  Slots are whole sectors, so the
# layout depends on the sector alone; a part whose erase unit is its page has sector == page.
def check_page(page_size: int) -> None:
    if page_size < MIN_PAGE or page_size % 4:
        raise ValueError(f"page size must be a multiple of 4 and at least {MIN_PAGE}, got {page_size}")


def check_geometry(page_size: int, sector_size: int | None = None) -> int:
    """Check a flash geometry; returns the erase unit (``sector_size``, or the page size when None)."""
    check_page(page_size)
    sector = page_size if sector_size is None else sector_size
    if sector < page_size or sector % page_size:
        raise ValueError(f"sector size must be a multiple of the page size ({page_size}), got {sector}")
    return sector


def slot_sectors(model: Model, sector: int) -> int:
    """Sectors of one slot: a checkpoint and its commit word."""
    check_page(sector)
    return -(-(size(model) + 4) // sector)


def slot_bytes(model: Model, sector: int) -> int:
    return slot_sectors(model, sector) * sector


def region_bytes(model: Model, sector: int) -> int:
    """Flash bytes that save/load use: two slots of whole sectors."""
    return SLOTS * slot_bytes(model, sector)


def flash_image(model: Model, sector: int, slots: list) -> bytes:
    """A flash region as the C leaves it: ``slots[i]`` is checkpoint bytes committed in slot i, or None (erased)."""
    sp = slot_bytes(model, sector)
    img = bytearray(b"\xff" * region_bytes(model, sector))
    for i, blob in enumerate(slots):
        if blob is None:
            continue
        if len(blob) != size(model):
            raise ValueError(f"slot {i}: a checkpoint of this model has {size(model)} bytes, got {len(blob)}")
        img[i * sp:i * sp + len(blob)] = blob
        img[i * sp + len(blob):i * sp + len(blob) + 4] = struct.pack("<I", COMMIT)
    return bytes(img)


def newer(seq: int, than: int) -> bool:
    """Serial-number order of 32-bit sequence numbers (RFC 1982): ``seq`` is strictly newer than ``than``."""
    return 0 < ((seq - than) & 0xFFFFFFFF) < 0x80000000


def scan(image: bytes, model: Model, sector: int) -> tuple:
    """What the C's load takes from a flash region: (slot index, Checkpoint).  The committed, valid slot with the
    newer sequence number wins; a tie keeps slot 0.  CheckpointError (the first non-empty slot's defect) if none."""
    sp = slot_bytes(model, sector)
    if len(image) < SLOTS * sp:
        raise CheckpointError("arg", f"a flash region of this model has {SLOTS * sp} bytes with {sector}-byte "
                                     f"sectors, got {len(image)}")
    best, pick, err = None, None, None
    for i in range(SLOTS):
        try:
            ck = decode(image[i * sp:(i + 1) * sp], model, slot=True)
        except CheckpointError as e:
            if err is None or err.code == "empty":
                err = e
            continue
        if best is None or newer(ck.seq, best.seq):
            best, pick = ck, i
    if best is None:
        raise err
    return pick, best


def newest(image: bytes, model: Model, sector: int) -> Checkpoint:
    """The checkpoint that the C's load would take from a flash region (:func:`scan`).  CheckpointError (the
    first non-empty slot's defect) if none."""
    return scan(image, model, sector)[1]


def crc_nibble_table() -> list[int]:
    """CRC-32 of each 4-bit value, for zlib's reflected polynomial 0xEDB88320: the C updates the CRC a nibble at
    a time from these 16 words (64 bytes of flash instead of a 1 KB byte table)."""
    out = []
    for i in range(16):
        c = i
        for _ in range(4):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        out.append(c)
    return out


def layout(model: Model) -> dict:
    """What the C templates need to write and read this model's checkpoints (one source for both sides)."""
    return dict(magic=MAGIC.decode(), version=VERSION, header=HEADER_BYTES, off=OFFSETS, fingerprint=fingerprint(model),
                weight_end=HEADER_BYTES + num_weights(model) * model.weight_bits // 8,
                body=body_bytes(model), bytes=size(model), commit=COMMIT, min_page=MIN_PAGE, errors=ERRORS,
                crc_table=crc_nibble_table())


SECTOR_CANDIDATES = tuple(MIN_PAGE << i for i in range(12))   # 64 B .. 128 KB: a dump's erase unit, when not given


def from_bytes(blob: bytes, model: Model, sector: int | None = None) -> Checkpoint:
    """A checkpoint of ``model`` from a file: one checkpoint, or a flash region dump (the newest valid slot).

    Without ``sector`` (the erase unit) the dump's length gives the candidates; the one whose slot 1 begins with a
    checkpoint is taken (any one when slot 1 was never written: then only slot 0 counts)."""
    if blob[:4] == MAGIC and len(blob) == size(model):
        return decode(blob, model)
    sizes = [sector] if sector else [p for p in SECTOR_CANDIDATES if region_bytes(model, p) == len(blob)]
    if not sizes:
        check_version(blob)                             # another version's checkpoint: say so
        hint = "" if blob[:4] != MAGIC else ("; it begins with a checkpoint of another build: give generate's "
                                             "--trainable and --spare-classes")
        raise CheckpointError("format", f"neither a checkpoint of this model ({size(model)} bytes) nor a flash region "
                                        f"of one (got {len(blob)} bytes){hint}")
    used = [p for p in sizes if blob[slot_bytes(model, p):][:4] == MAGIC] or sizes[:1]
    if len({slot_bytes(model, p) for p in used}) > 1:     # sector sizes with the same slot size are the same
        raise CheckpointError("arg", f"a flash region of {len(blob)} bytes fits sector sizes {used}: give the "
                                     f"sector size")
    return newest(blob, model, used[0])


def with_seq(blob: bytes, seq: int) -> bytes:
    """The same checkpoint with another sequence number (and its CRC updated)."""
    body = bytearray(blob[:-4])
    struct.pack_into("<I", body, OFFSETS["seq"], seq & 0xFFFFFFFF)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))
