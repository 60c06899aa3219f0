"""Rendering a plan into C with the Jinja2 templates: ``<name>.h`` (API and size macros), ``<name>.c``
(weights, arena, train/predict) and ``<name>_kernels.h`` (the integer kernels it uses).

Usage (emlearn style)::

    nitro_mcu.convert(model, batch=8, train=True).save(name="mnist_cnn", file="out/")
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import checkpoint
from .._version import __version__
from ..fileio import write_files
from ..trainer import layers as L
from ..trainer.network import Model
from .plan import CodegenError, Plan, plan

_PKG_DIR = Path(__file__).resolve().parent.parent
# a wheel carries the templates as nitro_mcu/templates; a checkout has them at the repository root
TEMPLATE_DIRS = [_PKG_DIR / "templates", _PKG_DIR.parent / "templates"]


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


def render(p: Plan) -> dict[str, str]:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["carray"] = carray
    model = p.model
    spec = model.spec
    ctx = dict(p=p, name=p.name, NAME=p.name.upper(), model=model, spec=spec, q=model.quirks, ops=p.ops,
               buffers=sorted(p.buffers, key=lambda b: b.offset), tensors=p.tensors, wtype=p.wtype,
               nc=model.num_classes, kernels=p.kernels, relu_mean=L.RELU_MEAN[spec["slope_inv"]],
               slope_inv=spec["slope_inv"], input_count=int(np.prod(model.input_shape)),
               input_shape=list(model.input_shape), rng_state=model.dropout_rng.state,
               has_dropout=any(o.kind == "dropout" for o in p.ops), wmin=-(2 ** (model.weight_bits - 1)),
               wmax=2 ** (model.weight_bits - 1) - 1, lr_inv=spec["lr_inv"], one_hot=spec["one_hot_value"],
               version=__version__, ckpt=checkpoint.layout(model))
    return {f"{p.name}.h": env.get_template("model.h.j2").render(**ctx),
            f"{p.name}.c": env.get_template("model.c.j2").render(**ctx),
            f"{p.name}_kernels.h": env.get_template("nitro_kernels.h.j2").render(**ctx)}


class Converted:
    """The result of :func:`convert`: rendered sources plus the plan (memory, kernels)."""

    def __init__(self, p: Plan):
        self.plan = p
        self.sources = render(p)

    def save(self, name: str | None = None, file: str | os.PathLike = ".") -> list[Path]:
        """Write the sources into folder ``file``: every file is written in full before any is replaced."""
        if name is not None and name != self.plan.name:
            self.plan.name = name
            self.sources = render(self.plan)
        return write_files(Path(file), self.sources)

    def memory_report(self) -> str:
        rows = self.plan.memory_table()
        lines = [f"{'memory':<44} {'bytes':>10}"]
        lines += [f"{k:<44} {v:>10}" for k, v in rows]
        lines.append(f"{'static RAM (weights + arena)':<44} {self.plan.ram_bytes:>10}")
        return "\n".join(lines)


def convert(model: Model, batch: int = 1, train: bool = False, name: str = "nitro_model",
            ram_limit: int | None = None) -> Converted:
    p = plan(model, batch, train, name)
    if ram_limit is not None and p.ram_bytes > ram_limit:
        raise CodegenError(f"the memory plan needs {p.ram_bytes} bytes of RAM (weights {p.weight_bytes if train else 0}"
                           f" + arena {p.arena_bytes}), over the limit of {ram_limit}")
    return Converted(p)
