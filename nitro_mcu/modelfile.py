"""The model file: one versioned, self-describing, checksummed zip per trained model.

Layout (``.nitro``, a plain zip): ``model.json`` holds the format name and version, the architecture,
profile and quirks, weight width, seed, PRNG state, preprocessing statistics, training metadata and a
SHA-256 over everything else; ``weights/<name>.npy`` holds each integer tensor; ``files/<name>`` holds extra
members named in ``model.json`` (a resumable run's checkpoint, docs/checkpoint.md).  Writes are atomic.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .fileio import atomic_write
from .spec import SpecError
from .trainer.network import Model
from .trainer.profiles import Quirks
from .trainer.rng import Rng

FORMAT = "nitro-mcu-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read; the message names the file and the problem."""


def _checksum(meta: dict, arrays: dict, files: dict | None = None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    for name in sorted(files or {}):
        h.update(f"file|{name}|{len(files[name])}|".encode())
        h.update(files[name])
    return h.hexdigest()


def save(model: Model, path, norm: dict | None = None, training: dict | None = None,
         files: dict | None = None) -> Path:
    """Save ``model`` (weights, description, profile, PRNG state) plus preprocessing stats and metadata;
    ``files`` (name -> bytes) are stored as extra members, covered by the checksum."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": model.spec,
        "quirks": model.quirks.to_dict(),
        "weight_bits": model.weight_bits,
        "seed": model.seed,
        "dropout_rng_state": str(model.dropout_rng.state),
        "norm": norm or {},
        "training": training or {},
        "weight_order": list(model.param_shapes()),
    }
    if not model.all_trainable:  # the blocks that train (absent: all), in forward order
        meta["trainable"] = [n for n in model.block_names if model.trains(n)]
    arrays = {name: np.asarray(w) for name, w in model.weights.items()}
    files = {k: bytes(v) for k, v in (files or {}).items()}
    if files:
        meta["files"] = sorted(files)
    meta["sha256"] = _checksum(meta, arrays, files)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.json", json.dumps(meta, indent=1))
        for name, a in arrays.items():
            b = io.BytesIO()
            np.save(b, a, allow_pickle=False)
            z.writestr(f"weights/{name}.npy", b.getvalue())
        for name, data in files.items():
            z.writestr(f"files/{name}", data)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def load(path) -> tuple[Model, dict]:
    """Load a model file; returns (model, meta).  Any defect is a one-line ModelFileError."""
    model, meta, _ = load_files(path)
    return model, meta


def load_files(path) -> tuple[Model, dict, dict]:
    """:func:`load`, plus the extra members (name -> bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("model.json"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ModelFileError(f"{path}: not a nitro-mcu model file")
            if meta.get("version") != VERSION:
                raise ModelFileError(f"{path}: model file version {meta.get('version')!r} is not supported "
                                     f"(this nitro-mcu reads version {VERSION})")
            arrays = {}
            for name in meta["weight_order"]:
                arrays[name] = np.load(io.BytesIO(z.read(f"weights/{name}.npy")), allow_pickle=False)
            files = {name: z.read(f"files/{name}") for name in meta.get("files", [])}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError) as e:
        raise ModelFileError(f"{path}: corrupted or truncated model file ({e})") from None
    except KeyError as e:
        raise ModelFileError(f"{path}: incomplete model file, missing {e}") from None
    except (ValueError, TypeError, OSError) as e:
        raise ModelFileError(f"{path}: unreadable model file ({e})") from None
    except Exception as e:  # noqa: BLE001 - zlib.error, NotImplementedError ("encrypted", bad method), ...
        raise ModelFileError(f"{path}: corrupted model file ({type(e).__name__}: {e})") from None
    if _checksum(meta, arrays, files) != meta.get("sha256"):
        raise ModelFileError(f"{path}: checksum mismatch: the file is corrupted or was edited")
    try:
        model = Model(meta["spec"], Quirks.from_dict(meta["quirks"]), meta["weight_bits"], meta["seed"], arrays,
                      trainable=meta.get("trainable"))
    except (SpecError, ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: inconsistent model file: {e}") from None
    model.dropout_rng = Rng(0, state=int(meta["dropout_rng_state"]))
    return model, meta, files
