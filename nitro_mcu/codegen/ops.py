"""The typed records of a plan: one dataclass per op kind, plus the forward wrappers, kernels and weight
tensors the templates emit.  Their fields are the contract with templates/*.j2.

An op reads its input in two schedules that share the arena: training (dropout active, int16 after it)
and inference (dropout is the identity), hence ``x_train`` and ``x_infer``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Union

import numpy as np

from ..trainer.blocks import ConvBlock, Dropout, LinearBlock, MaxPool
from ..trainer.network import Model
from .memory import Buffer

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Activation:
    """An op's input in one schedule: its arena buffer (None: the caller's ``x``), element type, proven
    magnitude bound and shape."""

    buf: Buffer | None
    ctype: str
    bound: int
    shape: tuple

    @property
    def sfx(self) -> str:
        """The kernel-name suffix of this element type."""
        return kernel_sfx(self.ctype)


def kernel_sfx(ctype: str) -> str:
    return "s8" if ctype == "int8_t" else "s16"


def update_ctype(x_ctype: str, weight_bits: int) -> str:
    """The element type of the batch transposed for the fused updates: int16 with int16 weights, so that one
    word holds two samples in SMLAD's operand layout (no widening in the update loop), else the input's."""
    return "int16_t" if weight_bits == 16 else x_ctype


def acc_name(acc_ctype: str) -> str:
    return "acc32" if acc_ctype == "int32_t" else "acc64"


class Kernel(NamedTuple):
    """One generic kernel of <name>_kernels.h: its kind, input suffix (s8/s16) and accumulator type."""

    kind: str
    sfx: str = ""
    acc: str = ""


@dataclass(frozen=True)
class FwdFn:
    """A per-layer forward wrapper: the generic kernel for input type ``xt`` with the layer's constants."""

    name: str
    xt: str
    acc: str
    what: str
    chunk: int  # acc64: the int32 partial sums' length (0: plain int64 sums); acc32: the fan-in

    @property
    def sfx(self) -> str:
        return kernel_sfx(self.xt)


@dataclass(frozen=True)
class ConvFwd(FwdFn):
    """A conv block's (stride 1, square kernel, zero padding)."""

    kind: ClassVar[str] = "conv"
    c_in: int
    h: int
    w: int
    c_out: int
    k: int
    pad: int
    sf: int
    pool: int = 0  # inference: the 2x2 max-pool that follows, fused into the output stage (0: none)


@dataclass(frozen=True)
class LinearFwd(FwdFn):
    """A hidden linear block's or the output layer's."""

    kind: ClassVar[str] = "linear"
    n_in: int
    n_out: int
    sf: int


@dataclass(frozen=True, eq=False)
class WeightTensor:
    """One weight tensor as emitted: C name, shape, flat values and its init/SGD constants."""

    name: str
    cname: str
    shape: list
    count: int
    values: np.ndarray
    info: dict
    trainable: bool = False  # in RAM, trained and exported; else a constant in flash


@dataclass(kw_only=True)
class LayerOp:
    """An op with weights: its forward wrapper and accumulator in each schedule and, when it trains, its
    error buffer.  The training-only fields are None in an inference plan and for frozen layers."""

    x_train: Activation
    x_infer: Activation
    acc_train: str
    acc_infer: str
    info: dict  # init/SGD constants of its (forward) weights
    cname: str
    trains: bool = False  # a training plan updates its weights (frozen layers only run forward)
    fwd_infer: str = ""
    fwd_train: str | None = None
    err: Buffer | None = None
    deltas: Buffer | None = None  # the back-propagated error (conv: of one channel; linear/output: of one row)
    xtr: Buffer | None = None  # linear/output: the batch input transposed, for the fused update
    fast: bool = False  # the fused update may take its int32 fast path (nitro_row_update, nitro_conv_grad)
    step_fn: str | None = None  # the per-layer training step wrapper


@dataclass(kw_only=True)
class BlockOp(LayerOp):
    """What conv and linear blocks share: the scaled output, the head, the local step's deltas, the ReLU."""

    out: Buffer  # the scaled output s, then (ReLU in place) the block output
    in_count: int
    out_count: int
    head_info: dict
    head_cname: str | None  # None: a frozen block, whose head the C does not hold
    relu_in_pool: bool = False  # training: the following maxpool applies this block's ReLU
    head_chunk: int = 0  # the head's dot products: int32 partial sums of this many terms (>= d_in: one int32 sum)
    fast_head: bool = False  # the fused head update may take its int32 fast path


@dataclass(kw_only=True)
class ConvOp(BlockOp):
    """A conv block (+ head pool when its map is larger than the head input)."""

    kind: ClassVar[str] = "conv"
    blk: ConvBlock
    xpad: Buffer  # one input sample with a zero border (forward scratch)
    wpad: Buffer | None  # odd fan-in, int16 weights: the weights with rows padded to even length (forward)
    cells: int  # output positions that carry head gradient: pooled cells, or the whole map
    xpad_batch: Buffer | None = None  # the batch's input with a zero border (gradient)
    entries: Buffer | None = None  # one channel's non-zero deltas with their input offsets
    pooled: Buffer | None = None  # the head input transposed: pooled relu(s), or relu(s) without a head pool
    pool_idx: Buffer | None = None  # head-pool argmax (head pool only)
    pool_sums: Buffer | None = None  # inference, pool fused: one pooled row of int32 first-row maximum sums
    pool_out: Buffer | None = None  # inference, pool fused: the following maxpool's output, written here
    pool_t: int = 0  # inference, pool fused: the op index of its forward (where pool_out must be alive)


@dataclass(kw_only=True)
class LinearOp(BlockOp):
    """A hidden linear block."""

    kind: ClassVar[str] = "linear"
    blk: LinearBlock
    passes: int  # block steps per batch: 2 under Q2 (a CNN's FC blocks), else 1
    ht: Buffer | None = None  # relu(s) transposed, for the fused head update


@dataclass(kw_only=True)
class MaxPoolOp:
    """A between-block max-pool; in training it may also apply the previous block's ReLU."""

    kind: ClassVar[str] = "maxpool"
    pool: MaxPool
    x_train: Activation
    x_infer: Activation
    out: Buffer
    out_infer: Buffer  # its own int8 buffer when a training-only dropout precedes, else ``out``
    in_shape: tuple
    in_count: int
    out_count: int
    applies_relu: bool = False
    fused: bool = False  # inference: the previous conv's output stage pools (its fwd_infer writes out_infer)


@dataclass(kw_only=True)
class DropoutOp:
    """A training-only dropout site (inference skips it)."""

    kind: ClassVar[str] = "dropout"
    drop: Dropout
    x_train: Activation
    out: Buffer
    count: int
    rescale: int
    site: str
    site_index: int


@dataclass(kw_only=True)
class OutputOp(LayerOp):
    """The output layer: forward, and in training its global-error step."""

    kind: ClassVar[str] = "output"
    d_in: int
    scores: Buffer


Op = Union[ConvOp, LinearOp, MaxPoolOp, DropoutOp, OutputOp]


@dataclass
class Plan:
    """Everything the templates render and the cost model reads: ops in forward order, the arena's buffers
    at their offsets, the weight tensors, the kernels and forward wrappers to emit."""

    name: str
    model: Model
    batch: int
    train: bool
    wtype: str
    delta_type: str  # the back-propagated head error: int32 when classes*255*|w|max fits
    relu_max: int  # the proven bound of a block output (NITRO-ReLU of an int8)
    bp: int = 4  # batch stride of the transposed copies of the fused updates: the batch rounded up to 4
    ops: list[Op] = field(default_factory=list)
    buffers: list[Buffer] = field(default_factory=list)
    arena_bytes: int = 0
    weight_bytes: int = 0  # every tensor the C holds
    train_weight_bytes: int = 0  # the trainable ones (RAM); the rest are constants in flash
    tensors: list[WeightTensor] = field(default_factory=list)
    kernels: set[Kernel] = field(default_factory=set)
    fwd_fns: list[FwdFn] = field(default_factory=list)  # per-layer forward wrappers (layer constants folded in)
    relu_lut: list[int] = field(default_factory=list)  # NITRO-ReLU of -128..127 (the inference output LUT)
    # Training with a frozen prefix (Model.frozen_prefix) streamed one sample at a time: its first ``prefix``
    # ops run as at inference, into ``feat`` (one sample); train_batch gathers the batch's features in ``xb``
    # and the remaining ops (the tail) train on them.  prefix 0: no streaming.  ``feat_count``: the values
    # per sample the tail reads (the prefix's output, else the input).
    prefix: int = 0
    feat: Buffer | None = None
    feat_count: int = 0
    xb: Buffer | None = None
    norm: object | None = None  # the input pipeline (codegen/inputs.py InputNorm), from the model's statistics
    rehearsal: int = 0  # exemplars per class of the new-class rehearsal buffer (docs/new_classes.md)
    # what an application reads from the header: class names, the lr_inv after init, and where each came from
    class_names: list[str] = field(default_factory=list)
    class_origin: str = ""
    lr_inv_init: int = 0
    lr_inv_init_origin: str = ""
    relu_lo: list[int] = field(default_factory=list)  # per int8 v, the least u with the same NITRO-ReLU
    pool_fused: bool = False  # some conv's inference output stage max-pools (the acc32 conv kernels take pm)

    @property
    def max_kk(self) -> int:
        """The most taps of a conv kernel (1 without convs): the size of the gradient's register block."""
        return max([op.blk.k ** 2 for op in self.ops if isinstance(op, ConvOp)], default=1)

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + (self.train_weight_bytes if self.train else 0)

    @property
    def stream_bytes(self) -> int:
        """RAM of train_sample's ring (MAX_BATCH tail inputs, their labels, a count), where it is called."""
        return self.batch * (self.feat_count + 1) + 4

    @property
    def col(self) -> Buffer:
        """The int16 scratch column shared by all forward kernels."""
        return next(b for b in self.buffers if b.name == "col")

    @property
    def scores(self) -> Buffer:
        """The output layer's int8 scores."""
        return self.ops[-1].scores


def cname(wname: str) -> str:
    """The C name of a weight tensor."""
    return "w_" + wname.replace(".", "_")
