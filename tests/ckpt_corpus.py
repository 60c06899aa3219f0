"""A corpus of valid and invalid checkpoints and flash regions that Python's reader (nitro_mcu.checkpoint) and the
generated C's loader must classify identically: same verdict, same slot, same error name (test_checkpoint.py).

Built from one small model whose weight count is odd, so that its checkpoints carry two bytes of padding.  Every
case is derived from a valid encoding by one stated change; expected verdicts are not written here, the test
compares the two readers (and a few cases also against a verdict derived from the layout, in the test).
"""
from __future__ import annotations

import copy
import struct
import zlib

import numpy as np

from nitro_mcu import checkpoint as ck
from nitro_mcu.trainer.network import Model

SPEC = dict(kind="mlp", input_shape=[63], num_classes=10, hidden=[9], fwd_decay_inv=12000, head_decay_inv=3000,
            dropout=0.1)
PAGE, SECTOR = 64, 256          # region cases: 64-byte program pages, 256-byte sectors



def model() -> Model:
    m = Model(SPEC, "default", 16, seed=5)
    assert ck.num_weights(m) % 2 == 1 and ck.body_bytes(m) > ck.HEADER_BYTES + 2 * ck.num_weights(m), \
        "the corpus model must have padding"
    return m


def variant(m: Model, k: int) -> Model:
    """Another state of ``m``: one weight changed, the dropout PRNG advanced ``k`` draws."""
    out = copy.deepcopy(m)
    name = next(iter(ck.carried(out)))
    w = np.asarray(out.weights[name]).copy()
    w.reshape(-1)[k] = (int(w.reshape(-1)[k]) + 17 * (k + 1)) % 100
    out.weights[name] = w
    out.dropout_rng.next_u64(k)
    return out


def fix_crc(blob: bytes) -> bytes:
    body = blob[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def put(blob: bytes, at: int, value: bytes, crc: bool) -> bytes:
    b = bytearray(blob)
    b[at:at + len(value)] = value
    return fix_crc(bytes(b)) if crc else bytes(b)


def singles(m: Model) -> dict:
    """name -> bytes of one checkpoint (or not)."""
    good = ck.encode(variant(m, 1), step=5, lr_inv=300, seq=7)
    n = len(good)
    raw = ck.HEADER_BYTES + 2 * ck.num_weights(m)          # first padding byte
    out = {"valid": good, "valid, trailing bytes": good + b"\x00" * 8, "erased": b"\xff" * n,
           "erased magic only": b"\xff" * 4 + good[4:]}
    bad = {"magic": b"NCKQ", "version": struct.pack("<H", 1), "header_bytes": struct.pack("<H", 48),
           "fingerprint": struct.pack("<Q", ck.fingerprint(m) ^ 1), "size": struct.pack("<I", n + 4),
           "seq": struct.pack("<I", 0xFFFFFFFF), "step": struct.pack("<I", 123), "lr_inv": struct.pack("<i", 0),
           "rng": struct.pack("<Q", 42), "weight_bits": struct.pack("<I", 32), "count": struct.pack("<I", 748),
           "active_classes": struct.pack("<I", m.num_classes + 1)}
    assert set(bad) == set(ck.OFFSETS), "a case for every header field (checkpoint.FIELDS)"
    for field, value in bad.items():
        at = ck.OFFSETS[field]
        for crc in (True, False):
            out[f"{field} changed, CRC {'fixed' if crc else 'stale'}"] = put(good, at, value, crc)
    out["lr_inv negative, CRC fixed"] = put(good, ck.OFFSETS["lr_inv"], struct.pack("<i", -5), True)
    out["count one less, CRC fixed"] = put(good, ck.OFFSETS["count"], struct.pack("<I", 746), True)
    out["weight_bits 8, CRC fixed"] = put(good, ck.OFFSETS["weight_bits"], struct.pack("<I", 8), True)
    for active in (0, m.num_classes - 1):                   # below the model's classes (it has no spare slots)
        out[f"active_classes {active}, CRC fixed"] = put(good, ck.OFFSETS["active_classes"], struct.pack("<I", active),
                                                         True)
    for byte in (41, 42, 43):                              # the high bytes of the weight-width word
        out[f"byte {byte} = 7, CRC fixed"] = put(good, byte, b"\x07", True)
    for at in (raw, raw + 1):                              # padding after the weights
        out[f"padding byte {at} = 1, CRC fixed"] = put(good, at, b"\x01", True)
        out[f"padding byte {at} = 1, CRC stale"] = put(good, at, b"\x01", False)
    out["CRC word off by one bit"] = put(good, n - 4, bytes([good[n - 4] ^ 1]), False)
    out["weight bit flipped"] = put(good, ck.HEADER_BYTES + 3, bytes([good[ck.HEADER_BYTES + 3] ^ 0x10]), False)
    for cut in (1, 4, n // 2, n - ck.HEADER_BYTES, n - 1):
        out[f"truncated to {n - cut} bytes"] = good[:n - cut]
    out["empty file"] = b""
    return out


def commit_word(blob: bytes) -> bytes:
    return blob + struct.pack("<I", ck.COMMIT)


def region(m: Model, slots: list) -> bytes:
    """Two slots of SECTOR-aligned flash; each entry: None (erased) or raw bytes written from the slot's start."""
    sp = ck.slot_bytes(m, SECTOR)
    img = bytearray(b"\xff" * ck.region_bytes(m, SECTOR))
    for i, raw in enumerate(slots):
        if raw is not None:
            img[i * sp:i * sp + len(raw)] = raw
    return bytes(img)


def regions(m: Model) -> dict:
    """name -> a flash region of two slots (or a truncated one)."""
    a = ck.encode(variant(m, 1), step=10, lr_inv=300)
    b = ck.encode(variant(m, 2), step=20, lr_inv=400)
    c = lambda blob, seq: commit_word(ck.with_seq(blob, seq))       # noqa: E731 (a committed slot)
    n = len(a)
    out = {"both erased": region(m, [None, None]),
           "slot 0 only": region(m, [c(a, 1), None]), "slot 1 only": region(m, [None, c(b, 1)])}
    for s0, s1 in ((1, 2), (2, 1), (5, 5), (0xFFFFFFFF, 0), (0, 0xFFFFFFFF), (0xFFFFFFFE, 1), (0x7FFFFFFF, 0x80000000),
                   (0, 0x80000000), (0x80000000, 0), (3, 0x80000002), (0x80000003, 3)):
        out[f"both valid, sequences {s0:#x}, {s1:#x}"] = region(m, [c(a, s0), c(b, s1)])
    newer_b = ck.with_seq(b, 9)
    torn = {"uncommitted": newer_b,
            "commit word half programmed": newer_b + struct.pack("<I", ck.COMMIT | 0xFFFF0000),
            "second half erased": newer_b[:n // 2] + b"\xff" * (n - n // 2) + struct.pack("<I", ck.COMMIT),
            "one word half programmed": put(newer_b, n // 2 & ~3, b"\xff\xff", False) + struct.pack("<I", ck.COMMIT),
            "header torn": b"NC\xff\xff" + newer_b[4:] + struct.pack("<I", ck.COMMIT)}
    for what, raw in torn.items():
        out[f"slot 1 newer, {what}"] = region(m, [c(a, 8), raw])
        out[f"slot 0 newer, {what}"] = region(m, [raw, c(a, 8)])
    for name, blob in singles(m).items():
        if len(blob) >= n and blob[:4] != b"\xff\xff\xff\xff":
            out[f"slot 0 {name}, slot 1 older valid"] = region(m, [commit_word(blob[:n]), c(b, 1)])
            out[f"slot 0 {name}, slot 1 erased"] = region(m, [commit_word(blob[:n]), None])
    out["slot 0 bad CRC, slot 1 bad magic"] = region(m, [commit_word(put(c(a, 3)[:n], n - 4, b"\x00", False)),
                                                         commit_word(b"XCKP" + b[4:])])
    out["slot 0 erased, slot 1 bad version"] = region(m, [None, commit_word(put(b, ck.OFFSETS["version"], b"\x01",
                                                                                 True))])
    full = region(m, [c(a, 1), c(b, 2)])
    out["region one page short"] = full[:-PAGE]
    out["region half"] = full[:len(full) // 2]
    return out
