"""The walk over a model's stages that fills a plan: one typed op per stage (ops.py), accumulator widths chosen
from proven bounds, the arena's buffers (memory.py) and the weight tensors."""
from __future__ import annotations

import numpy as np

from ..trainer import layers as L
from ..trainer.blocks import ConvBlock, Dropout, LinearBlock, MaxPool
from ..trainer.network import Model
from .memory import Arena, Buffer, place_buffers
from .ops import (INT32_MAX, Activation, BlockOp, ConvFwd, ConvOp, DropoutOp, Kernel, LinearFwd, LinearOp, MaxPoolOp,
                  OutputOp, Plan, WeightTensor, acc_name, cname, kernel_sfx, update_ctype)


class Walk:
    """The state of one walk: the plan so far, the arena, the op index and both schedules' current input."""

    def __init__(self, model: Model, batch: int, train: bool, name: str, stream: bool = False):
        spec = model.spec
        self.model, self.nc, self.info = model, model.num_classes, model.param_info()
        self.wmax = 2 ** (model.weight_bits - 1)
        # NITRO-ReLU on every int8 input (-128 acts as -127: scaling never yields it): the C table, the monotonicity
        # a fused pool needs, and the largest |output|
        self.relu_lut = L.relu_forward(np.maximum(np.arange(-128, 128), -127).astype(np.int8), spec["slope_inv"])
        relu_max = int(np.abs(self.relu_lut.astype(np.int64)).max())
        delta_type = "int32_t" if self.nc * 255 * self.wmax < INT32_MAX else "int64_t"
        self.p = Plan(name, model, batch, train, f"int{model.weight_bits}_t", delta_type, relu_max, -(-batch // 4) * 4,
                      feat_count=int(np.prod(spec["input_shape"])))
        self.arena = Arena()
        self.t = 0
        self.x = Activation(None, "int8_t", 128, tuple(spec["input_shape"]))  # training schedule
        self.xi = self.x  # inference schedule
        self.prefix = model.frozen_prefix() if train and stream else 0  # stages streamed one sample at a time
        self.streaming = False

    @property
    def training(self) -> bool:
        """The current stage has a training schedule (a streamed prefix runs as at inference)."""
        return self.p.train and not self.streaming

    @property
    def b(self) -> int:
        """Samples the current stage's buffers hold: the batch, or one in a streamed prefix."""
        return 1 if self.streaming else self.p.batch

    def trains(self, block: str) -> bool:
        return self.training and self.model.trains(block)

    def run(self) -> Plan:
        for i, st in enumerate(self.model.stages):
            self.next = next((n for n in self.model.stages[i + 1:] if not isinstance(n, Dropout)), None)
            self.streaming = i < self.prefix
            if i == self.prefix and self.prefix:
                self.boundary()
            if isinstance(st, ConvBlock):
                self.conv(st)
            elif isinstance(st, LinearBlock):
                self.linear(st)
            elif isinstance(st, MaxPool):
                self.maxpool(st)
            elif isinstance(st, Dropout) and self.p.train:
                self.dropout(st)
        self.streaming = False
        if self.prefix == len(self.model.stages):
            self.boundary()
        self.output()
        self.link_relus()
        self.scratch_column()
        if self.p.xb is not None:
            self.p.xb.last = self.t + 1  # train_batch fills it before the tail runs: nothing else may use it
        self.p.buffers = self.arena.buffers
        self.p.arena_bytes = place_buffers(self.p.buffers)
        self.weights()
        return self.p

    # ---- helpers ----------------------------------------------------------------------------------------
    def acc(self, fan_in: int, x_bound: int) -> str:
        return "int32_t" if fan_in * x_bound * self.wmax < INT32_MAX else "int64_t"

    def chunk(self, fan_in: int, x_bound: int) -> int:
        """The terms of a dot product's int32 partial sums: the fan-in when the whole sum fits int32, else the
        largest multiple of 4 whose sums provably fit (0 when none does: int32 weights)."""
        if self.acc(fan_in, x_bound) == "int32_t":
            return fan_in
        return (INT32_MAX // (x_bound * self.wmax)) // 4 * 4

    def fast_update(self, x_bound: int) -> bool:
        """Whether the fused updates may sum |delta| < 2^15 times inputs up to x_bound over the batch in int32
        (nitro_row_update's fast path needs |sum| <= 2^30)."""
        return self.p.bp * 32767 * x_bound <= 2**30

    def update_buffers(self, op, name: str, d_in: int) -> None:
        """The training buffers of a fused update over d_in inputs: the batch input transposed, one row's deltas."""
        p = self.p
        ut = update_ctype(self.x.ctype, self.model.weight_bits)
        op.xtr = self.new(f"xt_{name}", ut, d_in * p.bp, f"{name}: the batch input transposed (fused update)")
        op.deltas = self.new(f"d_{name}", p.delta_type, p.bp, f"{name}: one row's deltas over the batch")
        op.fast = self.fast_update(self.x.bound)
        op.step_fn = f"nitro_step_{name}_{self.x.sfx}"
        p.kernels |= {Kernel("row_update", self.x.sfx), Kernel("row_update", kernel_sfx(ut)), Kernel("row_update", "s8"),
                      Kernel("head_error")}

    def fwd_fn(self, label: str, x: Activation, acc: str, geometry: type, **consts) -> str:
        """The per-layer forward wrapper for input ``x`` (one schedule); returns its C name."""
        fname = f"nitro_fwd_{label.replace('.', '_')}_{x.sfx}_{acc_name(acc)}"
        fan_in = consts["n_in"] if "n_in" in consts else consts["c_in"] * consts["k"] ** 2
        if all(f.name != fname for f in self.p.fwd_fns):
            self.p.fwd_fns.append(geometry(fname, x.ctype, acc_name(acc), label, self.chunk(fan_in, x.bound), **consts))
        return fname

    def fused_pool(self, st: ConvBlock, acc: str) -> int:
        """The 2x2 max-pool after conv ``st`` that an inference plan folds into the conv's output stage (0: none).
        Scaling (truncating division by SF > 0), the int8 clip and NITRO-ReLU (checked on its table: profiles
        differ) are monotone non-decreasing, so the max of the outputs is the output of the max int32 sum.  The
        kernels then walk only the positions the pool reads, in pairs inside one window row.  Training keeps its own
        unfused forward (the local step and the head pool need the whole map); a streamed prefix is left as it is."""
        nxt = self.next
        if self.streaming or acc != "int32_t" or not isinstance(nxt, MaxPool) or nxt.k != 2:
            return 0
        monotone = bool(np.all(np.diff(self.relu_lut.astype(np.int16)) >= 0))
        return 2 if monotone and st.sf > 0 else 0

    def new(self, name: str, ctype: str, count: int, what: str) -> Buffer:
        return self.arena.new(name, ctype, count, self.t, what)

    def block_fields(self, st: ConvBlock | LinearBlock, out_count: int) -> dict:
        """The fields of a block's op that follow from the block and the current inputs."""
        return dict(acc_train=self.acc(st.fan_in, self.x.bound), acc_infer=self.acc(st.fan_in, self.xi.bound),
                    in_count=int(np.prod(self.x.shape)), out_count=out_count,
                    info=self.info[st.name + ".fwd"], head_info=self.info[st.head.name],
                    cname=cname(st.name + ".fwd"), trains=self.trains(st.name),
                    head_cname=cname(st.head.name) if self.trains(st.name) or not self.p.train else None)

    def boundary(self) -> None:
        """The streamed prefix ends here: its one-sample output is ``feat``; the tail trains on ``x`` (the
        train_batch gathers the batch's features into ``xb``, train_sample into its ring)."""
        p, x = self.p, self.x
        p.prefix, p.feat, p.feat_count = len(p.ops), x.buf, int(np.prod(x.shape))
        p.xb = self.new("xb", x.ctype, p.batch * p.feat_count, "the frozen prefix's outputs of the batch "
                        "(the training tail's input)")
        p.xb.first = 0
        self.x = Activation(None, x.ctype, x.bound, x.shape)

    def block_done(self, op: BlockOp, shape: tuple) -> None:
        self.p.ops.append(op)
        self.t += 1
        op.out.last = self.t
        self.x = self.xi = Activation(op.out, "int8_t", self.p.relu_max, shape)

    # ---- one function per op kind ----------------------------------------------------------------------
    def conv(self, st: ConvBlock) -> None:
        p, n_out = self.p, st.c_out * st.h_out * st.w_out
        pool = self.fused_pool(st, self.acc(st.fan_in, self.xi.bound))
        if pool and not p.train:  # only the fused pool's output is written
            out = self.new(f"s_{st.name}", "int8_t", 1, f"{st.name}: unused (the fused maxpool writes its output)")
        else:
            out = self.new(f"s_{st.name}", "int8_t", self.b * n_out,
                           f"{st.name}: scaled output, then (relu in place) the block output")
        xpad = self.new(f"xp_{st.name}", "int16_t", st.c_in * (st.h_in + 2 * st.pad) * (st.w_in + 2 * st.pad),
                        f"{st.name}: one input sample, int16 with a zero border (forward scratch)")
        wpad = None
        if st.fan_in % 2 and self.model.weight_bits == 16:
            wpad = self.new(f"wp_{st.name}", p.wtype, st.c_out * (st.fan_in + 1),
                            f"{st.name}: the weights with an even row length (forward, DSP cores)")
        op = ConvOp(blk=st, x_train=self.x, x_infer=self.xi, out=out, xpad=xpad, wpad=wpad,
                    cells=st.pool.oh * st.pool.ow if st.pool else st.h_out * st.w_out, **self.block_fields(st, n_out))
        geo = dict(c_in=st.c_in, h=st.h_in, w=st.w_in, c_out=st.c_out, k=st.k, pad=st.pad, sf=st.sf)
        p.kernels |= {Kernel("conv_fwd", self.xi.sfx, op.acc_infer), Kernel("conv_col", self.xi.sfx)}
        if pool:
            p.pool_fused, op.pool_t = True, self.t
            op.pool_sums = self.new(f"pm_{st.name}", "int32_t", st.c_out * st.w_out // 2,
                                    f"{st.name}: one pooled row's first-row maximum sums (maxpool fused)")
        op.fwd_infer = self.fwd_fn(st.name + ("_pool" if pool else ""), self.xi, op.acc_infer, ConvFwd, **geo,
                                   pool=pool)
        self.arena.use(self.xi.buf, self.t)
        if self.training:
            p.kernels |= {Kernel("conv_fwd", self.x.sfx, op.acc_train), Kernel("conv_col", self.x.sfx)}
            op.fwd_train = self.fwd_fn(st.name, self.x, op.acc_train, ConvFwd, **geo)
            if op.trains:
                self.t += 1
                self.conv_step(op, xpad.count)
            self.arena.use(self.x.buf, self.t)
        self.block_done(op, (st.c_out, st.h_out, st.w_out))

    def conv_step(self, op: ConvOp, padded: int) -> None:
        """The training buffers of a conv block's local step (head pool, head error, deltas, padded batch)."""
        p, b, st = self.p, self.p.batch, op.blk
        op.err = self.new(f"e_{st.name}", "int16_t", b * self.nc, f"{st.name}: head error")
        # written by the training forward, sample by sample, while xp_ and wp_ are in use: alive from there
        op.pooled = self.arena.new(f"ph_{st.name}", "int8_t", st.head.d_in * p.bp, self.t - 1,
                                   f"{st.name}: the head input transposed (pooled relu(s), or relu(s))")
        self.arena.use(op.pooled, self.t)
        if st.pool:
            op.pool_idx = self.arena.new(f"pi_{st.name}", "uint16_t", b * st.head.d_in, self.t - 1,
                                         f"{st.name}: head-pool argmax")
            self.arena.use(op.pool_idx, self.t)
            p.kernels.add(Kernel("headpool"))
        op.entries = self.new(f"ent_{st.name}", p.delta_type, 2 * b * op.cells,
                              f"{st.name}: non-zero deltas of one channel (delta, input offset)")
        op.deltas = self.new(f"d_{st.name}", p.delta_type, p.bp, f"{st.name}: one head cell's deltas over the batch")
        op.xpad_batch = self.new(f"xq_{st.name}", self.x.ctype, b * padded,
                                 f"{st.name}: the batch's input with a zero border (gradient)")
        op.head_chunk = self.chunk(st.head.d_in, p.relu_max)
        op.step_fn = f"nitro_step_{st.name}_{self.x.sfx}"
        sample = st.c_in * (st.h_in + 2 * st.pad) * (st.w_in + 2 * st.pad)
        # packed entries need offsets below 2^15; int32 sums need entries * 2^15 * |x|max < 2^31
        op.fast = b * sample <= 32767 and b * op.cells * 32767 * self.x.bound < INT32_MAX
        op.fast_head = self.fast_update(p.relu_max)
        p.kernels |= {Kernel("conv_step", self.x.sfx), Kernel("row_update", "s8"), Kernel("head_error")}

    def linear(self, st: LinearBlock) -> None:
        p, b, q = self.p, self.b, self.model.quirks
        out = self.new(f"s_{st.name}", "int8_t", b * st.d_out,
                       f"{st.name}: scaled output, then (relu in place) the block output")
        passes = 2 if q.cnn_fc_double_update and any(isinstance(k, ConvBlock) for k in self.model.blocks) else 1
        op = LinearOp(blk=st, x_train=self.x, x_infer=self.xi, out=out, passes=passes,
                      **self.block_fields(st, st.d_out))
        geo = dict(n_in=st.d_in, n_out=st.d_out, sf=st.sf)
        p.kernels.add(Kernel("linear_fwd", self.xi.sfx, op.acc_infer))
        op.fwd_infer = self.fwd_fn(st.name, self.xi, op.acc_infer, LinearFwd, **geo)
        self.arena.use(self.xi.buf, self.t)
        if self.training:
            p.kernels.add(Kernel("linear_fwd", self.x.sfx, op.acc_train))
            op.fwd_train = self.fwd_fn(st.name, self.x, op.acc_train, LinearFwd, **geo)
        if op.trains:
            self.t += 1
            op.err = self.new(f"e_{st.name}", "int16_t", b * self.nc, f"{st.name}: head error")
            self.update_buffers(op, st.name, st.d_in)
            op.ht = self.new(f"ht_{st.name}", "int8_t", st.d_out * p.bp, f"{st.name}: relu(s) transposed (head update)")
            op.head_chunk = self.chunk(st.d_out, p.relu_max)
            op.fast_head = self.fast_update(p.relu_max)
            p.kernels.add(Kernel("linear_step", self.x.sfx))
        self.arena.use(self.x.buf, self.t)
        self.block_done(op, (st.d_out,))

    def maxpool(self, st: MaxPool) -> None:
        p, b, x, xi = self.p, self.b, self.x, self.xi
        c, h, w = x.shape
        n_out = c * st.h_out * st.w_out
        out = self.new(f"x_pool{self.t}", x.ctype, b * n_out, f"maxpool {st.k}x{st.k} output")
        out_infer = out
        prev = next((o for o in reversed(p.ops) if not isinstance(o, DropoutOp)), None)  # inference skips dropout
        fused = isinstance(prev, ConvOp) and prev.pool_sums is not None
        # after a training-only dropout inference needs an int8 buffer; a fused pool in a training plan its own
        # one-sample buffer (the batch's, alive from the conv on, would overlap the conv's local step)
        if xi.ctype != x.ctype or (fused and p.train):
            out_infer = self.new(f"x_pool{self.t}_inf", xi.ctype, (1 if fused else b) * n_out,
                                 f"maxpool {st.k}x{st.k} output (inference)")
        if fused:  # the conv's inference forward writes the pooled output: alive from there on
            prev.pool_out, out_infer.first = out_infer, prev.pool_t
        p.ops.append(MaxPoolOp(pool=st, x_train=x, x_infer=xi, out=out, out_infer=out_infer, in_shape=(c, h, w),
                               in_count=c * h * w, out_count=n_out, fused=fused))
        if not fused:
            p.kernels.add(Kernel("maxpool", xi.sfx))
        if self.training:
            p.kernels.add(Kernel("maxpool", x.sfx))
        self.arena.use(x.buf, self.t)
        self.arena.use(xi.buf, self.t)
        self.t += 1
        out.last = out_infer.last = self.t
        shape = (c, st.h_out, st.w_out)
        self.x = Activation(out, x.ctype, x.bound, shape)
        self.xi = self.x if out_infer is out else Activation(out_infer, xi.ctype, xi.bound, shape)

    def dropout(self, st: Dropout) -> None:
        p, x = self.p, self.x
        n = int(np.prod(x.shape))
        out = self.new(f"x_drop{self.t}", "int16_t", p.batch * n, f"dropout {st.rate / 10:g} % after {st.site}")
        rescale = L.dropout_rescale(st.rate)
        p.ops.append(DropoutOp(drop=st, x_train=x, out=out, count=n, rescale=rescale, site=st.site,
                               site_index=sum(isinstance(o, DropoutOp) for o in p.ops)))
        p.kernels.add(Kernel("dropout", x.sfx))
        self.arena.use(x.buf, self.t)
        self.arena.use(self.xi.buf, self.t + 1)  # inference skips the dropout: its input feeds the next op
        self.t += 1
        out.last = self.t
        self.x = Activation(out, "int16_t", (x.bound * rescale) // 1000, x.shape)

    def output(self) -> None:
        p, o, x, xi = self.p, self.model.output, self.x, self.xi
        scores = self.new("scores", "int8_t", p.batch * self.nc, "output scores")
        op = OutputOp(x_train=x, x_infer=xi, acc_train=self.acc(o.d_in, x.bound),
                      acc_infer=self.acc(o.d_in, xi.bound), d_in=o.d_in, info=self.info["output"],
                      cname=cname("output"), scores=scores, trains=self.trains("output"))
        geo = dict(n_in=o.d_in, n_out=self.nc, sf=o.sf)
        p.kernels.add(Kernel("linear_fwd", xi.sfx, op.acc_infer))
        op.fwd_infer = self.fwd_fn("output", xi, op.acc_infer, LinearFwd, **geo)
        if p.train:
            p.kernels.add(Kernel("linear_fwd", x.sfx, op.acc_train))
            op.fwd_train = self.fwd_fn("output", x, op.acc_train, LinearFwd, **geo)
        if op.trains:
            op.err = self.new("e_output", "int16_t", p.batch * self.nc, "output error")
            self.update_buffers(op, "output", o.d_in)
            p.kernels.add(Kernel("output_step", x.sfx))
        self.arena.use(x.buf, self.t)
        self.arena.use(xi.buf, self.t)
        p.ops.append(op)

    # ---- whole-plan stages -----------------------------------------------------------------------------
    def link_relus(self) -> None:
        """Training: a block followed by a maxpool leaves s as it is; the maxpool pools s and applies the ReLU
        (inference fuses NITRO-ReLU into the forward kernels)."""
        p = self.p
        tail = p.ops[p.prefix:]  # a streamed prefix runs as at inference
        for a, nxt in zip(tail, tail[1:]):
            if isinstance(nxt, MaxPoolOp) and isinstance(a, BlockOp):
                a.relu_in_pool = nxt.applies_relu = p.train and a.out is nxt.x_train.buf
        if p.train and any(isinstance(a, BlockOp) and not a.relu_in_pool for a in tail):
            p.kernels.add(Kernel("relu"))

    def scratch_column(self) -> None:
        """The int16 im2col / widened-input column of the forward kernels (and the widened head input of
        the conv steps), shared by all ops."""
        col = 2
        for op in self.p.ops:
            if isinstance(op, ConvOp):
                col = max(col, 2 * (op.blk.fan_in + 1), op.blk.head.d_in if op.trains else 0)
                if op.pool_sums is not None and op.blk.fan_in % 2 == 0 and self.model.weight_bits == 16:
                    col = max(col, 4 * op.blk.fan_in)  # the DSP path's gathered pool window (dsp/conv.h.j2)
                if op.blk.c_in == 1 and op.blk.k == 3 and self.model.weight_bits == 16:
                    # the DSP path's gathered row, or with the pool fused a window row pair (dsp/conv.h.j2)
                    col = max(col, 10 * (op.blk.w_out + op.blk.w_out % 2),
                              40 * (op.blk.w_out // 2) if op.pool_sums is not None else 0)
            elif isinstance(op, LinearOp):
                col = max(col, op.blk.d_in)
            elif isinstance(op, OutputOp):
                col = max(col, op.d_in)
        self.arena.buffers.append(Buffer("col", "int16_t", col, 0, self.t + 1,
                                         "im2col / widened input column (forward kernels)"))

    def weights(self) -> None:
        """The tensors the C holds: all of them at inference; in training, the trainable ones (in RAM) and the
        forward weights of frozen blocks (constants) -- a frozen head never runs, so it is left out."""
        p, model = self.p, self.model
        for wname, shape in model.param_shapes().items():
            trains = p.train and model.trains(model.tensor_block(wname))
            if p.train and not trains and wname.endswith(".head"):
                continue
            p.tensors.append(WeightTensor(wname, cname(wname), list(shape), int(np.prod(shape)),
                                          np.asarray(model.weights[wname]).reshape(-1), self.info[wname], trains))
        lut = self.relu_lut
        p.relu_lut = [int(v) for v in lut]
        p.relu_lo = [next(u for u in range(256) if lut[u] == lut[v]) - 128 for v in range(256)]
        wb = model.weight_bits // 8
        p.weight_bytes = sum(t.count for t in p.tensors) * wb
        p.train_weight_bytes = sum(t.count for t in p.tensors if t.trainable) * wb
