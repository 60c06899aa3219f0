"""The plan of a model: :func:`build` walks its stages (walk.py) into typed op records (ops.py) with the arena
laid out (memory.py); :func:`check` then refuses what the C could not compute exactly."""
from __future__ import annotations

from ..trainer.network import Model
from .ops import INT32_MAX, INT64_MAX, BlockOp, ConvOp, OutputOp, Plan
from .walk import Walk


class CodegenError(ValueError):
    """A model the generator cannot emit, or a memory plan over the limit; one line, names the cause."""


def plan(model: Model, batch: int = 1, train: bool = False, name: str = "nitro_model") -> Plan:
    """The checked plan of ``model``: what :func:`convert` renders."""
    return check(build(model, batch, train, name))


def build(model: Model, batch: int = 1, train: bool = False, name: str = "nitro_model") -> Plan:
    """Walk the model into a plan without the bound checks (the cost model reads any model's plan).

    A training plan of a model with a frozen prefix streams that prefix one sample at a time when this makes
    the arena smaller (it does whenever batch > 1), else runs it on the batch as the tail does."""
    if not name.isidentifier() or name.startswith("_"):
        raise CodegenError(f"the model name must be a C identifier, got '{name}'")
    if not 1 <= batch <= 4096:
        raise CodegenError(f"batch must be in 1..4096, got {batch}")
    batch = batch if train else 1
    p = Walk(model, batch, train, name, stream=False).run()
    if train and model.frozen_prefix():
        streamed = Walk(model, batch, train, name, stream=True).run()
        if streamed.arena_bytes <= p.arena_bytes:
            return streamed
    return p


def check(p: Plan) -> Plan:
    """Refuse labels over uint8, scaling factors over int32 and gradient sums that could overflow int64."""
    nc = p.model.num_classes
    if nc > 255:
        raise CodegenError("more than 255 classes are not supported (labels are uint8)")
    wmax = 2 ** (p.model.weight_bits - 1)

    def grad(label, terms, x_bound):
        if terms * nc * 255 * wmax * x_bound >= INT64_MAX:
            raise CodegenError(f"{label}: a gradient sum of {terms} terms could exceed int64; "
                               "use int16 weights or a smaller batch")

    def sf(label, value):
        if value * 128 > INT32_MAX:
            raise CodegenError(f"{label}: scaling factor {value} too large (fan_in must be below 65536)")

    for op in p.ops:
        if isinstance(op, BlockOp):
            st = op.blk
            sf(st.name, st.sf)
            sf(st.head.name, st.head.sf)
            if not op.trains:
                continue
            if isinstance(op, ConvOp) and st.pool and st.h_out * st.w_out >= 0xFFFF:
                raise CodegenError(f"{st.name}: feature map too large for 16-bit pool indices")
            grad(st.name, p.batch * (op.cells if isinstance(op, ConvOp) else 1), op.x_train.bound)
            grad(st.head.name, p.batch, p.relu_max)
        elif isinstance(op, OutputOp):
            sf("output", p.model.output.sf)
            if op.trains:
                grad("output", p.batch, op.x_train.bound)
    return p
