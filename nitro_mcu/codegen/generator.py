"""Generate self-contained integer-only C for a NITRO-D model (inference and on-device training).

Data flow: Model -> :func:`plan` (layers, bounds, accumulator widths, the static memory plan) ->
Jinja2 templates -> ``<name>.h`` (API and size macros), ``<name>.c`` (weights, arena, train/predict)
and ``<name>_kernels.h`` (the integer kernels it uses).  The C follows docs/arithmetic.md line by line.

Usage (emlearn style)::

    nitro_mcu.convert(model, batch=8, train=True).save(name="mnist_cnn", file="out/")
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..trainer import layers as L
from ..trainer.blocks import ConvBlock, Dropout, LinearBlock, MaxPool
from ..trainer.network import Model

try:  # the templates ship inside the package (wheel) and sit at the repo root in a checkout
    from importlib.resources import files as _res_files

    _PKG_TEMPLATES = _res_files("nitro_mcu") / "templates"
except Exception:  # pragma: no cover
    _PKG_TEMPLATES = None

_PKG_DIR = Path(__file__).resolve().parent.parent
# a wheel carries the templates as nitro_mcu/templates; a checkout has them at the repository root
TEMPLATE_DIRS = [_PKG_DIR / "templates", _PKG_DIR.parent / "templates"]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
ALIGN = 8


class CodegenError(ValueError):
    """A model the generator cannot emit, or a memory plan over the limit; one line, names the cause."""


def template_dir() -> Path:
    for d in TEMPLATE_DIRS:
        if (d / "model.c.j2").is_file():
            return d
    raise CodegenError("C templates not found (broken installation: nitro_mcu/templates is missing)")


# ---- memory plan --------------------------------------------------------------------------------------
@dataclass
class Buffer:
    name: str
    ctype: str
    count: int
    first: int  # op index where it is produced
    last: int  # op index of its last use
    what: str = ""
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return self.count * {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4,
                             "int64_t": 8}[self.ctype]


def place_buffers(bufs: list[Buffer]) -> int:
    """Greedy by size (TFLM's planner): lowest offset that overlaps no live-at-the-same-time buffer."""
    placed: list[Buffer] = []
    for b in sorted(bufs, key=lambda b: (-b.nbytes, b.first)):
        conflicts = sorted((p for p in placed if not (p.last < b.first or b.last < p.first)), key=lambda p: p.offset)
        off = 0
        for p in conflicts:
            if off + b.nbytes <= p.offset:
                break
            off = max(off, _align(p.offset + p.nbytes))
        b.offset = off
        placed.append(b)
    return _align(max((b.offset + b.nbytes for b in bufs), default=0))


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# ---- the plan ---------------------------------------------------------------------------------------
@dataclass
class Plan:
    name: str
    model: Model
    batch: int
    train: bool
    wtype: str
    ops: list = field(default_factory=list)
    buffers: list = field(default_factory=list)
    arena_bytes: int = 0
    weight_bytes: int = 0
    tensors: list = field(default_factory=list)
    kernels: set = field(default_factory=set)
    fwd_fns: list = field(default_factory=list)  # per-layer forward wrappers (layer constants folded in)
    relu_lut: list = field(default_factory=list)  # NITRO-ReLU of -128..127 (the inference output LUT)

    def memory_table(self) -> list[tuple[str, int]]:
        rows = [("weights (" + ("RAM, trainable" if self.train else "flash, const") + ")", self.weight_bytes),
                (f"arena (batch {self.batch}, {'training' if self.train else 'inference'})", self.arena_bytes)]
        if self.train:
            rows.append(("initial weights (flash, for reset)", self.weight_bytes))
        return rows

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + (self.weight_bytes if self.train else 0)


def _bound_relu(slope_inv: int) -> int:
    v = np.arange(-127, 128)
    out = L.relu_forward(v.astype(np.int8), slope_inv).astype(np.int64)
    return int(np.abs(out).max())


def plan(model: Model, batch: int = 1, train: bool = False, name: str = "nitro_model") -> Plan:
    """Walk the model, choose accumulator widths from proven bounds and lay out the static arena.

    Two schedules share the arena: training (dropout active, int16 after it) and inference (dropout is
    the identity).  Each op records its input in both (``x`` and ``xi``); buffer lifetimes cover both.
    """
    if not name.isidentifier() or name.startswith("_"):
        raise CodegenError(f"the model name must be a C identifier, got '{name}'")
    if not 1 <= batch <= 4096:
        raise CodegenError(f"batch must be in 1..4096, got {batch}")
    if not train:
        batch = 1
    q = model.quirks
    spec = model.spec
    nc = model.num_classes
    if nc > 255:
        raise CodegenError("more than 255 classes are not supported (labels are uint8)")
    wbits = model.weight_bits
    wmax = 2 ** (wbits - 1)
    p = Plan(name, model, batch, train, f"int{wbits}_t")
    relu_max = _bound_relu(spec["slope_inv"])
    info = model.param_info()
    bufs: list[Buffer] = []
    p.delta_type = "int32_t" if nc * 255 * wmax < INT32_MAX else "int64_t"

    def new_buf(bname, ctype, count, t, what):
        b = Buffer(bname, ctype, count, t, t, what)
        bufs.append(b)
        return b

    def use(cur, t):
        if cur["buf"] is not None:
            cur["buf"].last = max(cur["buf"].last, t)

    def acc_type(fan_in, x_bound):
        return "int32_t" if fan_in * x_bound * wmax < INT32_MAX else "int64_t"

    def sfx(ctype):
        return "s8" if ctype == "int8_t" else "s16"

    def fwd_fn(op, x, acc, **consts):
        """The per-layer forward wrapper for input x (one schedule); returns its C name."""
        label = op["blk"].name if "blk" in op else "output"
        fname = f"nitro_fwd_{_cname(label)[2:]}_{sfx(x['ctype'])}_{'acc32' if acc == 'int32_t' else 'acc64'}"
        if all(f["name"] != fname for f in p.fwd_fns):
            p.fwd_fns.append(dict(name=fname, xt=x["ctype"], sfx=sfx(x["ctype"]),
                                  acc="acc32" if acc == "int32_t" else "acc64", what=label, **consts))
        return fname

    def check_grad(label, terms, x_bound):
        if terms * nc * 255 * wmax * x_bound >= INT64_MAX:
            raise CodegenError(f"{label}: a gradient sum of {terms} terms could exceed int64; "
                               "use int16 weights or a smaller batch")

    def check_sf(label, sf):
        if sf * 128 > INT32_MAX:
            raise CodegenError(f"{label}: scaling factor {sf} too large (fan_in must be below 65536)")

    cur = dict(buf=None, ctype="int8_t", bound=128, shape=tuple(spec["input_shape"]))  # training schedule
    cur_i = dict(cur)  # inference schedule
    t = 0
    for st in model.stages:
        if isinstance(st, (ConvBlock, LinearBlock)):
            conv = isinstance(st, ConvBlock)
            out_count = st.c_out * st.h_out * st.w_out if conv else st.d_out
            check_sf(st.name, st.sf)
            check_sf(st.head.name, st.head.sf)
            s_buf = new_buf(f"s_{st.name}", "int8_t", batch * out_count, t,
                            f"{st.name}: scaled output, then (relu in place) the block output")
            op = dict(kind="conv" if conv else "linear", blk=st, x=cur, xi=cur_i, s=s_buf.name,
                      acc=acc_type(st.fan_in, cur["bound"]), acc_i=acc_type(st.fan_in, cur_i["bound"]),
                      in_count=int(np.prod(cur["shape"])), out_count=out_count,
                      info=info[st.name + ".fwd"], hinfo=info[st.head.name], cname=_cname(st.name + ".fwd"),
                      chname=_cname(st.head.name), t=t)
            kind = "conv_fwd" if conv else "linear_fwd"
            if conv:
                op["xp"] = new_buf(f"xp_{st.name}", "int16_t",
                                   st.c_in * (st.h_in + 2 * st.pad) * (st.w_in + 2 * st.pad), t,
                                   f"{st.name}: one input sample, int16 with a zero border (forward scratch)").name
                consts = dict(kind="conv", c_in=st.c_in, h=st.h_in, w=st.w_in, c_out=st.c_out, k=st.k, pad=st.pad,
                              sf=st.sf)
            else:
                consts = dict(kind="linear", n_in=st.d_in, n_out=st.d_out, sf=st.sf)
            p.kernels.add((kind, sfx(cur_i["ctype"]), op["acc_i"]))
            if conv:
                p.kernels.add(("conv_col", sfx(cur_i["ctype"])))
            op["fn_i"] = fwd_fn(op, cur_i, op["acc_i"], **consts)
            use(cur_i, t)
            if train:
                p.kernels.add((kind, sfx(cur["ctype"]), op["acc"]))
                if conv:
                    p.kernels.add(("conv_col", sfx(cur["ctype"])))
                op["fn_t"] = fwd_fn(op, cur, op["acc"], **consts)
                t += 1
                op["e"] = new_buf(f"e_{st.name}", "int16_t", batch * nc, t, f"{st.name}: head error").name
                if conv:
                    pool = st.pool
                    cells = pool.oh * pool.ow if pool else st.h_out * st.w_out
                    if pool:
                        op["ph"] = new_buf(f"ph_{st.name}", "int8_t", batch * st.head.d_in, t,
                                           f"{st.name}: pooled head input").name
                        op["pi"] = new_buf(f"pi_{st.name}", "uint16_t", batch * st.head.d_in, t,
                                           f"{st.name}: head-pool argmax").name
                        p.kernels.add(("headpool",))
                        if st.h_out * st.w_out >= 0xFFFF:
                            raise CodegenError(f"{st.name}: feature map too large for 16-bit pool indices")
                    op["cells"] = cells
                    op["d"] = new_buf(f"d_{st.name}", p.delta_type, 2 * batch * cells, t,
                                      f"{st.name}: non-zero deltas of one channel (delta, input offset)").name
                    op["xq"] = new_buf(f"xq_{st.name}", cur["ctype"],
                                       batch * st.c_in * (st.h_in + 2 * st.pad) * (st.w_in + 2 * st.pad), t,
                                       f"{st.name}: the batch's input with a zero border (gradient)").name
                    check_grad(st.name, batch * cells, cur["bound"])
                else:
                    op["d"] = new_buf(f"d_{st.name}", p.delta_type, 2 * batch, t, f"{st.name}: delta of two units").name
                    check_grad(st.name, batch, cur["bound"])
                check_grad(st.head.name, batch, relu_max)
                op["hacc"] = "acc32" if acc_type(st.head.d_in, relu_max) == "int32_t" else "acc64"
                if conv:
                    op["fn_step"] = f"nitro_step_{st.name}_{sfx(cur['ctype'])}"
                op["passes"] = 2 if (q.cnn_fc_double_update and not conv
                                     and any(isinstance(b, ConvBlock) for b in model.blocks)) else 1
                p.kernels.add(("conv_step" if conv else "linear_step", sfx(cur["ctype"])))
                use(cur, t)
            p.ops.append(op)
            t += 1
            s_buf.last = t
            shape = (st.c_out, st.h_out, st.w_out) if conv else (st.d_out,)
            cur = dict(buf=s_buf, ctype="int8_t", bound=relu_max, shape=shape)
            cur_i = dict(cur)
        elif isinstance(st, MaxPool):
            c, h, w = cur["shape"]
            n_out = c * st.h_out * st.w_out
            ob = new_buf(f"x_pool{t}", cur["ctype"], batch * n_out, t, f"maxpool {st.k}x{st.k} output")
            op = dict(kind="maxpool", pool=st, x=cur, xi=cur_i, out=ob.name, out_i=ob.name, shape=(c, h, w),
                      in_count=c * h * w, out_count=n_out, t=t)
            if cur_i["ctype"] != cur["ctype"]:  # after a training-only dropout: inference needs an int8 buffer
                op["out_i"] = new_buf(f"x_pool{t}_inf", cur_i["ctype"], batch * n_out, t,
                                      f"maxpool {st.k}x{st.k} output (inference)").name
            p.kernels.add(("maxpool", sfx(cur_i["ctype"])))
            if train:
                p.kernels.add(("maxpool", sfx(cur["ctype"])))
            use(cur, t)
            use(cur_i, t)
            p.ops.append(op)
            t += 1
            for b in bufs:
                if b.name in (op["out"], op["out_i"]):
                    b.last = t
            cur = dict(buf=ob, ctype=cur["ctype"], bound=cur["bound"], shape=(c, st.h_out, st.w_out))
            cur_i = dict(cur) if op["out_i"] == ob.name else dict(
                buf=next(b for b in bufs if b.name == op["out_i"]), ctype=cur_i["ctype"], bound=cur_i["bound"],
                shape=(c, st.h_out, st.w_out))
        elif isinstance(st, Dropout) and train:
            n = int(np.prod(cur["shape"]))
            ob = new_buf(f"x_drop{t}", "int16_t", batch * n, t, f"dropout {st.rate / 10:g} % after {st.site}")
            rescale = L.dropout_rescale(st.rate)
            p.ops.append(dict(kind="dropout", drop=st, x=cur, out=ob.name, count=n, rescale=rescale, t=t,
                              site=st.site, site_index=sum(o["kind"] == "dropout" for o in p.ops)))
            p.kernels.add(("dropout", sfx(cur["ctype"])))
            use(cur, t)
            use(cur_i, t + 1)  # inference skips the dropout: its input feeds the next op
            t += 1
            ob.last = t
            cur = dict(buf=ob, ctype="int16_t", bound=(cur["bound"] * rescale) // 1000, shape=cur["shape"])
    o = model.output
    check_sf("output", o.sf)
    sc = new_buf("scores", "int8_t", batch * nc, t, "output scores")
    op = dict(kind="output", x=cur, xi=cur_i, acc=acc_type(o.d_in, cur["bound"]),
              acc_i=acc_type(o.d_in, cur_i["bound"]), info=info["output"], cname=_cname("output"),
              scores=sc.name, t=t, d_in=o.d_in)
    p.kernels.add(("linear_fwd", sfx(cur_i["ctype"]), op["acc_i"]))
    consts = dict(kind="linear", n_in=o.d_in, n_out=nc, sf=o.sf)
    op["fn_i"] = fwd_fn(op, cur_i, op["acc_i"], **consts)
    if train:
        p.kernels.add(("linear_fwd", sfx(cur["ctype"]), op["acc"]))
        op["fn_t"] = fwd_fn(op, cur, op["acc"], **consts)
        op["e"] = new_buf("e_output", "int16_t", batch * nc, t, "output error").name
        check_grad("output", batch, cur["bound"])
        p.kernels.add(("output_step", sfx(cur["ctype"])))
    use(cur, t)
    use(cur_i, t)
    p.ops.append(op)
    # training: a block followed by a maxpool leaves s as it is; the maxpool pools s and applies the ReLU
    for a, nxt in zip(p.ops, p.ops[1:]):
        a["defer_relu"] = bool(train and a["kind"] in ("conv", "linear") and nxt["kind"] == "maxpool"
                               and a["s"] == nxt["x"]["buf"].name)
        if nxt["kind"] == "maxpool":
            nxt["relu_t"] = a["defer_relu"]
    for a in p.ops:
        a.setdefault("defer_relu", False)
        a.setdefault("relu_t", False)
        if train and a["kind"] in ("conv", "linear") and not a["defer_relu"]:
            p.kernels.add(("relu",))  # (inference fuses NITRO-ReLU into the forward kernels)
    # scratch shared by all ops: the int16 im2col / widened-input column of the forward kernels (and the
    # widened head input of the conv steps)
    col = 2
    for o2 in p.ops:
        if o2["kind"] == "conv":
            col = max(col, 2 * o2["blk"].fan_in, o2["blk"].head.d_in if train else 0)
        elif o2["kind"] == "linear":
            col = max(col, o2["blk"].d_in)
        elif o2["kind"] == "output":
            col = max(col, o2["d_in"])
    bufs.append(Buffer("col", "int16_t", col, 0, t + 1, "im2col / widened input column (forward kernels)"))
    p.buffers = bufs
    p.arena_bytes = place_buffers(bufs)
    for wname, shape in model.param_shapes().items():
        p.tensors.append(dict(name=wname, cname=_cname(wname), shape=list(shape), count=int(np.prod(shape)),
                              values=np.asarray(model.weights[wname]).reshape(-1), info=info[wname]))
    lut = L.relu_forward(np.maximum(np.arange(-128, 128), -127).astype(np.int8), spec["slope_inv"])
    p.relu_lut = [int(v) for v in lut]
    p.weight_bytes = sum(tt["count"] for tt in p.tensors) * (wbits // 8)
    return p


def _cname(wname: str) -> str:
    return "w_" + wname.replace(".", "_")


# ---- rendering --------------------------------------------------------------------------------------
def _fmt_array(values: np.ndarray, per_line: int = 16) -> str:
    vals = [str(int(v)) for v in values]
    lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return ",\n    ".join(lines)


def render(p: Plan) -> dict[str, str]:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["carray"] = _fmt_array
    model = p.model
    q = model.quirks
    ctx = dict(p=p, name=p.name, NAME=p.name.upper(), model=model, spec=model.spec, q=q, ops=p.ops,
               buffers=sorted(p.buffers, key=lambda b: b.offset), tensors=p.tensors, wtype=p.wtype,
               nc=model.num_classes, kernels=p.kernels, relu_mean=L.RELU_MEAN[model.spec["slope_inv"]],
               slope_inv=model.spec["slope_inv"], input_count=int(np.prod(model.input_shape)),
               input_shape=list(model.input_shape), rng_state=model.dropout_rng.state,
               has_dropout=any(o["kind"] == "dropout" for o in p.ops), wmin=-(2 ** (model.weight_bits - 1)),
               wmax=2 ** (model.weight_bits - 1) - 1, lr_inv=model.spec["lr_inv"],
               one_hot=model.spec["one_hot_value"], version=_version())
    return {f"{p.name}.h": env.get_template("model.h.j2").render(**ctx),
            f"{p.name}.c": env.get_template("model.c.j2").render(**ctx),
            f"{p.name}_kernels.h": env.get_template("nitro_kernels.h.j2").render(**ctx)}


def _version() -> str:
    from .. import __version__

    return __version__


class Converted:
    """The result of :func:`convert`: rendered sources plus the plan (memory, kernels)."""

    def __init__(self, p: Plan):
        self.plan = p
        self.sources = render(p)

    def save(self, name: str | None = None, file: str | os.PathLike = ".") -> list[Path]:
        """Write the sources into folder ``file`` atomically (all or nothing)."""
        if name is not None and name != self.plan.name:
            self.plan.name = name
            self.sources = render(self.plan)
        return write_atomically(Path(file), self.sources)

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


def write_atomically(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Render everything into a temporary sibling folder, then move the files in: never half-written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".nitro-gen-", dir=out_dir))
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        paths = []
        for fname in files:
            os.replace(tmp / fname, out_dir / fname)
            paths.append(out_dir / fname)
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fp32_backprop_bytes(model: Model, batch: int) -> dict:
    """Memory of training the same network by float32 back-propagation (no heads): weights, gradients and
    every activation kept for the backward pass (each layer's input and pre-activation), batch ``batch``."""
    weights = sum(int(np.prod(s)) for n, s in model.param_shapes().items() if not n.endswith(".head"))
    acts = 0
    shape = tuple(model.input_shape)
    for st in model.stages:
        if isinstance(st, ConvBlock):
            acts += int(np.prod(shape)) + 2 * st.c_out * st.h_out * st.w_out  # input, pre-activation, output
            shape = st.out_shape
        elif isinstance(st, LinearBlock):
            acts += int(np.prod(shape)) + 2 * st.d_out
            shape = (st.d_out,)
        elif isinstance(st, MaxPool):
            shape = st.out_shape
            acts += int(np.prod(shape))  # argmax mask / pooled output
        else:
            acts += int(np.prod(shape))  # dropout mask
    acts += int(np.prod(shape)) + model.num_classes
    return dict(weights=4 * weights, gradients=4 * weights, activations=4 * batch * acts,
                total=8 * weights + 4 * batch * acts)
