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
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .fileio import atomic_write
from .spec import INT32_MAX, SpecError
from .trainer.network import Model
from .trainer.profiles import Quirks
from .trainer.rng import Rng

FORMAT = "nitro-mcu-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be read; the message names the file and the problem."""


# ---- the fields of model.json, checked one by one on load (whatever the sha256 says) ------------------------
@dataclass(frozen=True)
class Field:
    """One field: its JSON type, whether it must be there, and a check of its value (a problem, or None).
    ``fields`` (an object's) checks the members of an object the same way."""

    kind: str                                    # int, str, bool, list, dict, int_list, str_list, int_or_none, ...
    required: bool = True
    check: Optional[Callable[[object], Optional[str]]] = None
    fields: Optional[dict] = None


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_KINDS = {
    "int": (is_int, "an integer"), "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"), "dict": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "int_list": (lambda v: isinstance(v, list) and all(map(is_int, v)), "a list of integers"),
    "str_list": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "str_or_none": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "int_or_none": (lambda v: v is None or is_int(v), "an integer or null"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
}


def in_range(lo: int, hi: int):
    return lambda v: None if lo <= v <= hi else f"must be in [{lo}, {hi}], got {v}"


def each_in(lo: int, hi: int, min_len: int = 0):
    def check(v):
        if len(v) < min_len:
            return f"must hold at least {min_len} value(s), got {len(v)}"
        bad = next((x for x in v if not lo <= x <= hi), None)
        return None if bad is None else f"values must be in [{lo}, {hi}], got {bad}"
    return check


def decimal_u64(v):
    return None if re.fullmatch(r"[0-9]{1,20}", v) and int(v) < 2**64 else f"must be a decimal integer in [0, 2**64), got {v[:40]!r}"


def one_of(*values):
    return lambda v: None if v in values else f"must be one of {', '.join(map(repr, values))}, got {v!r}"


def check_fields(obj: dict, table: dict, where: str, error=ValueError, prefix: str = "") -> None:
    """Check ``obj`` against ``table`` (name -> Field); a problem is one ``error`` naming the field.  Members the
    table does not name are left alone (newer writers may add optional fields)."""
    for name, f in table.items():
        label = f"{prefix}{name}"
        if name not in obj:
            if f.required:
                raise error(f"{where}: field '{label}' is missing")
            continue
        v = obj[name]
        test, what = _KINDS[f.kind]
        if not test(v):
            raise error(f"{where}: field '{label}' must be {what}, got {json.dumps(v)[:40]}")
        problem = f.check(v) if f.check and v is not None else None
        if problem:
            raise error(f"{where}: field '{label}' {problem}")
        if f.fields and v is not None:
            check_fields(v, f.fields, where, error, f"{label}.")


STAT = 2**31 - 1
NORM_FIELDS = {  # the input statistics a model was trained with (api.save); all optional
    "mu": Field("int_list", False, each_in(-STAT, STAT, 1)),
    "mad": Field("int_list", False, each_in(0, STAT, 1)),
    "data_mu": Field("int_list", False, each_in(-STAT, STAT, 1)),
    "data_mad": Field("int_list", False, each_in(0, STAT, 1)),
    "dataset": Field("str_or_none", False),
    "load_info": Field("dict", False),
}
TRAINING_FIELDS = {  # read back by the CLI (the rest is a record for people); resume: nitro_mcu/resume.py
    "final_lr_inv": Field("int_or_none", False, in_range(1, INT32_MAX)),
    "initial_lr_inv": Field("int_or_none", False, in_range(1, INT32_MAX)),  # spec MODEL.nitro writes it
    "step": Field("int", False, in_range(0, 2**32 - 1)),
    "resume": Field("dict", False),
}
FIELDS = {  # model.json; format and version are checked first
    "spec": Field("dict"),
    "quirks": Field("dict", check=lambda v: next((f"switch '{k}' must be true or false" for k, x in v.items()
                                                  if not isinstance(x, bool)), None)),
    "weight_bits": Field("int", check=one_of(16, 32)),
    "seed": Field("int", check=in_range(0, 2**64 - 1)),
    "dropout_rng_state": Field("str", check=decimal_u64),
    "norm": Field("dict", fields=NORM_FIELDS),
    "training": Field("dict", fields=TRAINING_FIELDS),
    "weight_order": Field("str_list"),
    "trainable": Field("str_list", False),
    "active_classes": Field("int", False, in_range(1, 256)),
    "files": Field("str_list", False, lambda v: next((f"names a member {n!r} that is not a plain name" for n in v
                                                     if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", n)), None)),
    "sha256": Field("str", check=lambda v: None if re.fullmatch(r"[0-9a-f]{64}", v) else "is not a SHA-256"),
}


def _consistent(model: Model, meta: dict) -> Optional[str]:
    """The fields that must agree with the model they describe."""
    order = list(model.param_shapes())
    if meta["weight_order"] != order:
        return f"field 'weight_order' lists {meta['weight_order'][:4]}..., the model's tensors are {order[:4]}..."
    if meta.get("active_classes", model.num_classes) > model.num_classes:
        return f"field 'active_classes' is {meta['active_classes']}, over the model's {model.num_classes} output slots"
    values = int(np.prod(model.input_shape))
    norm = meta["norm"]
    for mu, mad in (("mu", "mad"), ("data_mu", "data_mad")):
        if (mu in norm) != (mad in norm):
            return f"field 'norm.{mu}' and 'norm.{mad}' go together"
        if mu in norm and (len(norm[mu]) != len(norm[mad]) or values % len(norm[mu])):
            return (f"field 'norm.{mu}' has {len(norm[mu])} value(s) and 'norm.{mad}' {len(norm[mad])}: one per "
                    f"input channel of the model's {values} input values")
    return None


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
    if model.active_classes < model.num_classes:  # spare output slots (absent: every slot is a class)
        meta["active_classes"] = model.active_classes
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


def read_meta(path) -> dict | None:
    """``model.json`` of a model file, unchecked (None if there is none): enough to see what a file holds."""
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("model.json"))
    except Exception:  # noqa: BLE001 - not a model file: the caller decides
        return None
    return meta if isinstance(meta, dict) else None


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
            check_fields(meta, FIELDS, str(path), ModelFileError)
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
    except (SpecError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{path}: inconsistent model file: {e}") from None
    problem = _consistent(model, meta)
    if problem:
        raise ModelFileError(f"{path}: inconsistent model file: {problem}")
    model.dropout_rng = Rng(0, state=int(meta["dropout_rng_state"]))
    model.active_classes = meta.get("active_classes", model.num_classes)
    return model, meta, files
