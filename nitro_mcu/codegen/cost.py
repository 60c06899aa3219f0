"""Costs derived from the plan, the one walk over the network: multiply-accumulates per op and per weight
tensor (what ``summary`` and the cost report print), and the memory float32 back-propagation would need.

MACs count forward, head, back-propagated head error and weight-gradient products; only the argmax taps
of a pooled head carry gradient.  Heads run only in training, so their inference MACs are 0.  Every
training term is proportional to the batch.  A conv whose 2x2 max-pool the inference plan fuses computes
only the positions the pool reads: its executed inference MACs are fewer than the nominal ones.
"""
from __future__ import annotations

import copy

from ..trainer.network import Model
from .ops import BlockOp, ConvOp, DropoutOp, MaxPoolOp, Op, OutputOp, Plan
from .plan import build


PHASES = ("forward", "head", "backprop", "gradient", "head_update")
"""The phases of a training step that `report` times separately: the block's forward (with its head pool and
ReLU), the head's forward and error, the back-propagated head error, the forward weights' gradient fused with
their update, and the head's gradient fused with its update.  The output layer has a forward and a gradient."""


def op_phase_macs(op: Op, nc: int) -> dict[str, int]:
    """Training MACs per sample of each phase of ``op``'s step (empty for ops without weights; the forward
    only for a frozen layer)."""
    if isinstance(op, BlockOp) and not op.trains:
        return dict(forward=op.blk.fan_in * op.out_count)
    if isinstance(op, OutputOp) and not op.trains:
        return dict(forward=op.d_in * nc)
    if isinstance(op, BlockOp):
        blk = op.blk
        head = blk.head.d_in * nc
        if isinstance(op, ConvOp):
            grad, delta, passes = op.cells * blk.c_out * blk.fan_in, op.cells * blk.c_out * nc, 1
        else:
            grad, delta, passes = blk.d_in * blk.d_out, blk.d_out * nc, op.passes
        return dict(forward=blk.fan_in * op.out_count, head=passes * head, backprop=passes * delta,
                    gradient=passes * grad, head_update=passes * head)
    if isinstance(op, OutputOp):
        return dict(forward=op.d_in * nc, gradient=op.d_in * nc)
    return {}


def op_tensor_macs(op: Op, nc: int) -> list[tuple[str, int, int]]:
    """(weight tensor, inference MACs per sample, training MACs per sample) for each tensor ``op`` uses."""
    ph = op_phase_macs(op, nc)
    if isinstance(op, BlockOp):
        return [(op.blk.name + ".fwd", ph["forward"], ph["forward"] + ph.get("gradient", 0)),
                (op.blk.head.name, 0, ph.get("head", 0) + ph.get("backprop", 0) + ph.get("head_update", 0))]
    if isinstance(op, OutputOp):
        return [("output", ph["forward"], ph["forward"] + ph.get("gradient", 0))]
    return []


def executed_infer_macs(op: Op, nominal: int) -> int:
    """Of an op's ``nominal`` inference MACs per sample, those the generated C performs: a conv with the
    following 2x2 max-pool fused (``pool_sums``) computes only the 2 * (h_out // 2) x 2 * (w_out // 2)
    positions the pool reads."""
    if isinstance(op, ConvOp) and op.pool_sums is not None:
        blk = op.blk
        return blk.fan_in * blk.c_out * 4 * (blk.h_out // 2) * (blk.w_out // 2)
    return nominal


def op_label(i: int, op: Op) -> str:
    if isinstance(op, BlockOp):
        return op.blk.name
    if isinstance(op, MaxPoolOp):
        return f"maxpool{i}"
    if isinstance(op, DropoutOp):
        return f"dropout@{op.site}"
    return op.kind


def op_macs(p: Plan) -> list[dict]:
    """Multiply-accumulates per op: inference (one sample; nominal, and executed by the generated C) and one
    training step (the whole batch; 0 in an inference plan)."""
    nc = p.model.num_classes
    rows = []
    for i, op in enumerate(p.ops):
        terms = op_tensor_macs(op, nc)
        train = p.batch * sum(t for _, _, t in terms) if p.train else 0
        phases = {k: p.batch * v for k, v in op_phase_macs(op, nc).items()} if p.train else {}
        infer = sum(f for _, f, _ in terms)
        rows.append(dict(op=i, name=op_label(i, op), kind=op.kind, infer_macs=infer,
                         infer_macs_executed=executed_infer_macs(op, infer), train_macs=train, phase_macs=phases))
    return rows


def tensor_macs(model: Model) -> dict[str, tuple[int, int]]:
    """Per weight tensor: (inference MACs per sample, MACs per sample of a training step; frozen blocks: their
    forward, and 0 for their heads)."""
    p = build(model, 1, True)
    return {name: (infer, train) for op in p.ops for name, infer, train in op_tensor_macs(op, model.num_classes)}


def fp32_backprop_bytes(model: Model, batch: int) -> dict:
    """Memory of training the same network by float32 back-propagation (no heads): weights, gradients and
    every activation kept for the backward pass (each layer's input and pre-activation), batch ``batch``."""
    p = build(model, batch, True)
    weights = sum(t.count for t in p.tensors if not t.name.endswith(".head"))
    acts = 0
    for op in p.ops:
        if isinstance(op, BlockOp):
            acts += op.in_count + 2 * op.out_count  # input, pre-activation, output
        elif isinstance(op, MaxPoolOp):
            acts += op.out_count  # argmax mask / pooled output
        elif isinstance(op, DropoutOp):
            acts += op.count  # dropout mask
        else:
            acts += op.d_in + model.num_classes
    return dict(weights=4 * weights, gradients=4 * weights, activations=4 * batch * acts,
                total=8 * weights + 4 * batch * acts)


def tail_ram(model: Model, batch: int) -> list[dict]:
    """Static RAM of on-device training (trainable weights + arena) for each trainable tail: the output layer
    alone, then one more block at a time from the end, up to every block (full training), plus the model's
    own set when it is not a tail.  One row each: the blocks, RAM, trainable weight bytes, arena, and the
    frozen weight bytes that stay in flash."""
    names = model.block_names
    sets = [names[k:] for k in range(len(names) - 1, -1, -1)]
    own = [n for n in names if model.trains(n)]
    if own not in sets:
        sets.append(own)
    rows = []
    for tr in sets:
        p = build(copy.copy(model).set_trainable(tr), batch, True)
        rows.append(dict(trainable=tr, label=tail_label(tr, names), ram_bytes=p.ram_bytes,
                         weight_ram_bytes=p.train_weight_bytes, arena_bytes=p.arena_bytes,
                         weight_flash_bytes=p.weight_bytes - p.train_weight_bytes, streamed=p.prefix > 0,
                         current=tr == own))
    return rows


def largest_tail(model: Model, batch: int, fits) -> tuple[dict | None, list[dict]]:
    """The :func:`tail_ram` row of the most blocks, ending at the output, for which ``fits(row)`` holds (None if
    no tail fits), and those tails (output alone first)."""
    names = model.block_names
    tails = [r for r in tail_ram(model, batch) if r["trainable"] == names[len(names) - len(r["trainable"]):]]
    ok = [r for r in tails if fits(r)]
    return (max(ok, key=lambda r: len(r["trainable"])) if ok else None), tails


def tail_label(trainable: list[str], names: list[str]) -> str:
    """``fc0..output`` for a run of consecutive blocks, ``all`` for every block, else the names."""
    if trainable == names:
        return "all (full training)"
    i = names.index(trainable[0])
    if trainable == names[i:i + len(trainable)] and len(trainable) > 1:
        return f"{trainable[0]}..{trainable[-1]}"
    return ",".join(trainable)


def tail_ram_text(rows: list[dict]) -> str:
    """The :func:`tail_ram` rows as a table (the current set marked with *)."""
    lines = [f"{'RAM of training, by what trains':<34} {'RAM':>9} {'weights':>9} {'arena':>9} {'flash (frozen)':>15}"]
    for r in rows:
        label = ("* " if r["current"] else "  ") + r["label"]
        lines.append(f"{label:<34} {r['ram_bytes']:>9} {r['weight_ram_bytes']:>9} {r['arena_bytes']:>9} "
                     f"{r['weight_flash_bytes']:>15}")
    return "\n".join(lines)
