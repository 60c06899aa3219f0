"""Rendering a plan into C with the Jinja2 templates: ``<name>.h`` (the public API and size macros),
``<name>.c`` (weights, arena, train/predict), ``<name>_kernels.h`` (the integer kernels it uses), plus the build
glue ``CMakeLists.txt`` (a library target named after the model) and ``<name>.mk`` (a Makefile fragment).

Usage (emlearn style)::

    nitro_mcu.convert(model, batch=8, train=True).save(name="mnist_cnn", file="out/")       # a folder
    nitro_mcu.convert(model, batch=8, train=True).save(name="mnist_cnn", file="mnist_cnn.h")  # one header

Every file of one run carries the same generation id (a hash of the C sources); ``<name>.c`` refuses, with
``#error``, a header or kernel file of another run.  docs/c_api.md documents the API and the build glue.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from .. import checkpoint
from .._version import __version__
from ..fileio import atomic_write, replace_file_set
from ..trainer import layers as L
from ..trainer.classes import with_spare_classes
from ..trainer.network import Model
from . import isa, status
from .inputs import input_norm
from .ops import INT32_MAX, INT64_MAX, BlockOp, Plan, kernel_sfx, update_ctype
from ..spec import check_int
from .plan import CodegenError, plan

_PKG_DIR = Path(__file__).resolve().parent.parent
# a wheel carries the templates as nitro_mcu/templates; a checkout has them at the repository root
TEMPLATE_DIRS = [_PKG_DIR / "templates", _PKG_DIR.parent / "templates"]
DEFAULT_NAME = "nitro_model"  # the C prefix when none is given (API and CLI)
_GEN_MARK = "NITRO_GENERATION_ID"  # stands for the generation id until the sources are hashed
# save(file=...) with one of these suffixes is a mistake, not a folder name
_SOURCE_SUFFIXES = {".c", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".inc", ".ino"}


# The template under templates/kernels/ that holds each kernel kind (ops.Kernel.kind): one file per concern.
KERNEL_FILES = {"linear_fwd": "fc", "linear_step": "fc", "conv_col": "conv", "conv_fwd": "conv", "conv_step": "conv",
                "maxpool": "pool", "headpool": "pool", "relu": "scaling", "dropout": "dropout",
                "head_error": "head", "output_step": "head", "row_update": "update"}


def template_dir() -> Path:
    for d in TEMPLATE_DIRS:
        if (d / "model.c.j2").is_file():
            return d
    raise CodegenError("C templates not found (broken installation: nitro_mcu/templates is missing)")


def carray(values, per_line: int = 16) -> str:
    """The body of a C array initialiser, ``per_line`` values a line."""
    vals = [str(int(v)) for v in values]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return ",\n    ".join(lines)


def cstring(text: str) -> str:
    """A C string literal of ``text`` (UTF-8): printable ASCII as is, quotes and backslashes escaped, every
    other byte an octal escape (which cannot run into a following digit: always three digits)."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        out.append("\\" + c if c in '"\\' else c if 32 <= b < 127 and c != "?" else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def c_identifier(text: str, fallback: str = "nitro_model") -> str:
    """``text`` (a model or file name) as a C prefix: lower case, other characters as ``_``, a leading digit or
    underscore prefixed with ``m``; ``fallback`` when nothing is left."""
    s = re.sub(r"[^0-9a-zA-Z_]", "_", str(text)).strip("_").lower()
    if not s:
        return fallback
    return "m" + s if s[0].isdigit() else s


def lr_inv_max(p: Plan) -> int:
    """The largest lr_inv whose SGD divisors (lr_inv * amp, in int64) cannot overflow."""
    amps = [op.info["amp"] for op in p.ops if isinstance(op, BlockOp) and op.trains] + [1]
    return min(INT32_MAX, INT64_MAX // max(amps))


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["carray"] = carray
    isa.install(env)
    env.globals["update_ctype"] = update_ctype
    env.globals["kernel_sfx"] = kernel_sfx
    env.filters["cstring"] = cstring
    return env


def render(p: Plan) -> dict[str, str]:
    """The C sources of a plan: ``<name>.h``, ``<name>.c`` and ``<name>_kernels.h``."""
    model = p.model
    spec = model.spec
    if not p.lr_inv_init:   # a plan not made by convert: the model's lr_inv, indices as class names
        p.lr_inv_init, p.lr_inv_init_origin = spec["lr_inv"], "the model's initial lr_inv"
        p.class_names, p.class_origin = class_names(model, None)
    if p.train and spec["lr_inv"] > lr_inv_max(p):
        raise CodegenError(f"lr_inv {spec['lr_inv']} is over {lr_inv_max(p)}, the largest whose SGD divisors fit "
                           "int64 in this model")
    env = _environment()
    ctx = dict(p=p, name=p.name, NAME=p.name.upper(), model=model, spec=spec, q=model.quirks, ops=p.ops,
               buffers=sorted(p.buffers, key=lambda b: b.offset), tensors=p.tensors, wtype=p.wtype,
               nc=model.num_classes, kernels=p.kernels, relu_mean=L.RELU_MEAN[spec["slope_inv"]],
               slope_inv=spec["slope_inv"], input_count=int(np.prod(model.input_shape)),
               input_shape=list(model.input_shape), rng_state=model.dropout_rng.state,
               has_dropout=any(o.kind == "dropout" for o in p.ops),
               wmax=2 ** (model.weight_bits - 1) - 1, lr_inv=spec["lr_inv"], one_hot=spec["one_hot_value"],
               version=__version__, generation=_GEN_MARK, lr_inv_max=lr_inv_max(p),
               trained=[t for t in p.tensors if t.trainable], tail=p.ops[p.prefix:],
               ckpt=checkpoint.layout(model), status_errors=status.ERRORS, kernel_files=KERNEL_FILES)
    ctx.update(classes_context(p))
    kernels = env.get_template("nitro_kernels.h.j2").render(**ctx)
    kernels += (f"\n/* the generator run of this file ({p.name}.c checks it) */\n"
                f"#define {p.name.upper()}_KERNELS_GENERATION {_GEN_MARK}\n")
    out = {f"{p.name}.h": env.get_template("model.h.j2").render(**ctx),
           f"{p.name}.c": env.get_template("model.c.j2").render(**ctx),
           f"{p.name}_kernels.h": kernels}
    h = hashlib.sha256()
    for fname, text in out.items():
        h.update(fname.encode() + b"\0" + text.encode() + b"\0")
    gen = f"0x{h.hexdigest()[:16]}ULL"
    return {k: v.replace(_GEN_MARK, gen) for k, v in out.items()}


def classes_context(p: Plan) -> dict:
    """The new-classes section (templates/classes.*.j2, docs/new_classes.md): active and spare output slots,
    exemplars per class of the rehearsal buffer, and the C expressions the class checks use."""
    model = p.model
    nc, active, reh = model.num_classes, model.active_classes, p.rehearsal
    on = bool(p.train and (active < nc or reh))
    batch_bytes = p.batch * (int(np.prod(model.input_shape)) + 1)
    return dict(classes_api=on, active=active, spare=nc - active, reh=reh if on else 0,
                reh_ram=nc * reh * 5 + batch_bytes + 12 if on and reh else 0,
                nc_label="active_classes" if on else f"{nc}u", nc_active="active_classes" if on else str(nc))


def generation_of(sources: dict[str, str], name: str) -> str:
    """The generation id the sources of model ``name`` carry."""
    m = re.search(rf"#define {name.upper()}_GENERATION (0x[0-9a-f]+ULL)", sources[f"{name}.h"])
    return m.group(1)


def build_glue(p: Plan, sources: dict[str, str]) -> dict[str, str]:
    """``CMakeLists.txt`` (static library target ``<name>``) and ``<name>.mk`` (Makefile variables)."""
    env = _environment()
    ctx = dict(name=p.name, NAME=p.name.upper(), version=__version__, generation=generation_of(sources, p.name))
    return {"CMakeLists.txt": env.get_template("CMakeLists.txt.j2").render(**ctx),
            f"{p.name}.mk": env.get_template("model.mk.j2").render(**ctx)}


def single_header(p: Plan, sources: dict[str, str]) -> str:
    """The three sources as one header (emlearn's convention): the API, then the implementation unless
    ``<NAME>_DECLARATIONS_ONLY`` is defined.  Include it with the implementation in one C file only.  The
    poison pragma is left out here, as it would reach the includer's code after the header."""
    n, N = p.name, p.name.upper()
    drop = {f'#include "{n}.h"', f'#include "{n}_kernels.h"', "#pragma GCC poison float double"}

    def body(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if line.strip() not in drop) + "\n"

    return (sources[f"{n}.h"] +
            f"\n/* ---- the implementation: compiled where this header is included without {N}_DECLARATIONS_ONLY;"
            f"\n * include it so in exactly one C file (C11; it is not C++). */\n"
            f"#if !defined({N}_DECLARATIONS_ONLY) && !defined({N}_IMPLEMENTATION_INCLUDED)\n"
            f"#define {N}_IMPLEMENTATION_INCLUDED\n"
            f"#ifdef __cplusplus\n#error \"{n}.h: include the implementation from a C file "
            f"(define {N}_DECLARATIONS_ONLY in C++ files)\"\n#endif\n"
            + body(sources[f"{n}_kernels.h"]) + body(sources[f"{n}.c"]) +
            f"#endif /* {N} implementation */\n")


class Converted:
    """The result of :func:`convert`: rendered sources plus the plan (memory, kernels)."""

    def __init__(self, p: Plan):
        self.plan = p
        self.sources = render(p)

    @property
    def files(self) -> dict[str, str]:
        """Everything ``save`` writes into a folder: the C sources and the build glue."""
        return {**self.sources, **build_glue(self.plan, self.sources)}

    def save(self, name: str | None = None, file: str | os.PathLike = ".") -> list[Path]:
        """Write the model into folder ``file``, all files or none (see :func:`~nitro_mcu.fileio.replace_file_set`),
        or, when ``file`` ends in ``.h``, into that one header (the API and the implementation)."""
        if name is not None and name != self.plan.name:
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                raise CodegenError(f"the model name must be a C identifier, got {name!r}")
            self.plan.name = name
            self.sources = render(self.plan)
        path = Path(file)
        suffix = path.suffix.lower()
        if suffix in _SOURCE_SUFFIXES:
            raise CodegenError(f"{path}: the model goes into a folder, or into a .h path for one header holding "
                               "everything")
        if suffix == ".h":
            if path.is_dir():
                raise CodegenError(f"{path} is a folder: give a new .h path, or the folder without .h")
            return [atomic_write(path, single_header(self.plan, self.sources).encode())]
        if path.exists() and not path.is_dir():
            raise CodegenError(f"{path} exists and is not a folder")
        return replace_file_set(path, self.files)

    def memory_report(self) -> str:
        p = self.plan
        if not p.train:
            rows = [("weights (flash, const)", p.weight_bytes), (f"arena (batch {p.batch}, inference)", p.arena_bytes)]
        else:
            rows = [("weights, trainable (RAM)", p.train_weight_bytes)]
            if p.weight_bytes > p.train_weight_bytes:
                rows.append(("weights, frozen (flash, const)", p.weight_bytes - p.train_weight_bytes))
            rows += [(f"arena (batch {p.batch}, training{'; prefix streamed' if p.prefix else ''})", p.arena_bytes),
                     ("initial trainable weights (flash, for reset)", p.train_weight_bytes)]
        lines = [f"{'memory':<44} {'bytes':>10}"]
        lines += [f"{k:<44} {v:>10}" for k, v in rows]
        lines.append(f"{'static RAM (trainable weights + arena)' if self.plan.train else 'static RAM (arena)':<44} "
                     f"{self.plan.ram_bytes:>10}")
        if self.plan.train:
            lines.append(f"{'  + train_sample ring, when it is used':<44} {self.plan.stream_bytes:>10}")
        reh_ram = classes_context(self.plan)["reh_ram"]
        if reh_ram:
            lines.append(f"{'  + rehearsal index and batch, when used':<44} {reh_ram:>10}")
        return "\n".join(lines)


def convert(model: Model, batch: int = 1, train: bool = False, name: str = DEFAULT_NAME,
            ram_limit: int | None = None, trainable=None, norm=None, spare_classes: int = 0,
            rehearsal: int | None = None, classes=None, lr_inv: int | None = None) -> Converted:
    """Plan and render ``model``.  ``trainable``: the blocks that train on the device (default: the model's
    set, :meth:`~nitro_mcu.trainer.network.Model.set_trainable`); the others are frozen constants in flash.
    ``norm``: input statistics (a model file's ``norm`` dict, or an object with ``mu`` and ``mad`` such as loaded
    data) for ``<name>_normalize_<dtype>``, the window helper and the ``<NAME>_INPUT_MU``/``_MAD`` macros
    (codegen/inputs.py); None: the model's own (``model.input_norm``, set by training on data or by loading a model
    file), if any.  ``spare_classes``: output slots for classes added on the device (the model as
    :func:`~nitro_mcu.trainer.classes.with_spare_classes` grows it); ``rehearsal``: exemplars per class kept in
    flash for them (default 4 when the model has spare slots; docs/new_classes.md).  ``classes``: one name per
    class for ``<name>_class_name`` (default: the class indices; spare slots are named ``spare0``, ...).
    ``lr_inv``: the lr_inv the C starts with, ``<NAME>_LR_INV_INIT`` (default: the model's initial one;
    ``generate`` passes the lr_inv at the end of host training, where the model file records it)."""
    spare_classes = check_spare(spare_classes, train)
    if spare_classes:
        model = with_spare_classes(model, spare_classes)
        if classes is not None and not isinstance(classes, str):
            classes = [*classes, *(f"spare{i}" for i in range(spare_classes))]
    if trainable is not None:
        model = copy.copy(model).set_trainable(trainable)  # shares the weights; the caller's set is unchanged
    if rehearsal is None:
        rehearsal = 4 if train and model.active_classes < model.num_classes else 0
    if isinstance(rehearsal, bool) or not isinstance(rehearsal, (int, np.integer)) or not 0 <= rehearsal <= 255:
        raise CodegenError(f"rehearsal exemplars per class must be an integer in 0..255, got {rehearsal!r}")
    if rehearsal and not train:
        raise CodegenError("a rehearsal buffer needs on-device training (train=True, generate --train)")
    p = plan(model, batch, train, name)
    p.rehearsal = int(rehearsal)
    norm = getattr(model, "input_norm", None) if norm is None else norm
    if norm:
        p.norm = input_norm(model, norm)
    p.class_names, p.class_origin = class_names(model, classes)
    if lr_inv is None:
        p.lr_inv_init, p.lr_inv_init_origin = model.spec["lr_inv"], "the model's initial lr_inv"
    else:
        check_int("lr_inv", lr_inv, 1, lr_inv_max(p), error=CodegenError)
        p.lr_inv_init, p.lr_inv_init_origin = int(lr_inv), "where host training ended (set it before training)"
    if ram_limit is not None and p.ram_bytes > ram_limit:
        raise CodegenError(f"the memory plan needs {p.ram_bytes} bytes of RAM (weights {p.train_weight_bytes}"
                           f" + arena {p.arena_bytes}), over the limit of {ram_limit}"
                           + (_tail_within(model, batch, ram_limit) if train else ""))
    return Converted(p)


def _tail_within(model: Model, batch: int, ram_limit: int) -> str:
    """What would fit ``ram_limit``: the largest trainable tail, as the refusal's hint."""
    from .cost import largest_tail  # every tail's plan: built only for this refusal

    best, tails = largest_tail(model, batch, lambda r: r["ram_bytes"] <= ram_limit)
    if best is None:
        return f"; not even the output layer alone fits ({tails[0]['ram_bytes']} bytes): a smaller batch or model"
    return (f"; the largest trainable tail within it is {best['label']} ({best['ram_bytes']} bytes): "
            f"--trainable {','.join(best['trainable'])}")


def check_spare(spare, train: bool) -> int:
    """``spare_classes`` as an int: 0..255, and only with training (a spare slot learns on the device)."""
    if isinstance(spare, bool) or not isinstance(spare, (int, np.integer)) or not 0 <= spare <= 255:
        raise CodegenError(f"spare classes must be an integer in 0..255, got {spare!r}")
    if spare and not train:
        raise CodegenError("spare classes are learnt on the device: they need train=True (generate --train)")
    return int(spare)

def class_names(model: Model, classes) -> tuple[list[str], str]:
    """(one name per class, where they came from, for the header's comment)."""
    nc = model.num_classes
    if classes is None:
        return [str(i) for i in range(nc)], "The names are the class indices: no names were given"
    if isinstance(classes, str) or len(classes) != nc:
        n = "a string" if isinstance(classes, str) else f"{len(classes)} class names"
        raise CodegenError(f"{n} for a model of {nc} classes: give one name per class")
    names = [str(c) for c in classes]
    if any(not c for c in names):
        raise CodegenError("a class name is empty")
    return names, "The names come from the training data or the caller (generate --classes)"

