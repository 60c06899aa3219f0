"""Power-loss sweeps of the generated checkpoint code: cut the power during a save, reboot, load, and check that
the state is exactly the previous or the new checkpoint and that training resumes bit-exactly like Python.

Host (:func:`sweep_host`): the generated C as a shared library on a simulated NOR flash (flashsim.py), cut at
every program/erase operation of a save with every tear.  Cortex-M4 (:func:`sweep_mcu`): the harness firmware in
QEMU with its flash in a host file (firmware/flash_file.c), cut at instruction counts spread over a save by the
instruction-count plugin (flashfw.py).  Both start from the same flash: checkpoints A0 (slot 0) and A (slot 1)
written by the C, then train one batch (state B) and save B over A0.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from .. import checkpoint as ck
from ..codegen import convert
from ..trainer.network import Model
from .flashsim import TEARS, CkptLib, NorFlash, Storage


@dataclass
class SweepReport:
    target: str
    page_size: int
    ckpt_bytes: int
    region_bytes: int
    cuts: int = 0
    old: int = 0            # loaded the previous checkpoint, then resumed bit-exactly
    new: int = 0            # loaded the new one, then resumed bit-exactly
    corrupt: int = 0        # load succeeded with a state that is neither
    lost: int = 0           # load found no checkpoint
    diverged: int = 0       # a correct state, but training after it differed from Python
    save_ops: dict = field(default_factory=dict)   # one uninterrupted save: flash operations
    load_ops: dict = field(default_factory=dict)
    save_insns: int | None = None                  # M4 only
    load_insns: int | None = None
    violations: list = field(default_factory=list)  # flash misuse (programming unerased words, ...)
    seconds: float = 0.0
    failures: list = field(default_factory=list)    # the first few cuts that did not recover, for the message

    @property
    def recovered(self) -> int:
        return self.old + self.new

    @property
    def ok(self) -> bool:
        return self.cuts > 0 and self.recovered == self.cuts and not self.violations

    def line(self) -> str:
        extra = "".join(f", {v} {k}" for k, v in (("lost", self.lost), ("diverged", self.diverged)) if v)
        return f"power-loss: {self.cuts} cuts, {self.recovered} recovered exactly, {self.corrupt} corrupt{extra}"

    def text(self) -> str:
        ops = ", ".join(f"{v} {k}" for k, v in self.save_ops.items())
        lops = ", ".join(f"{v} {k}" for k, v in self.load_ops.items())
        lines = [f"target {self.target}: checkpoint {self.ckpt_bytes} B, flash region {self.region_bytes} B "
                 f"({self.page_size}-byte pages, two slots)",
                 f"one save: {ops}" + (f"; {self.save_insns} instructions" if self.save_insns else ""),
                 f"one load: {lops}" + (f"; {self.load_insns} instructions" if self.load_insns else ""),
                 f"after the cuts: {self.old} loaded the previous checkpoint, {self.new} the new one; every one "
                 f"then trained on{' bit-exactly like Python' if not self.diverged else ''}",
                 *[f"violation: {v}" for v in self.violations[:3]],
                 *[f"not recovered: {f}" for f in self.failures[:5]],
                 f"{self.seconds:.1f} s", self.line()]
        return "\n".join(lines)


class Expect:
    """Python's side: the checkpoint bytes of a state, and of that state after one more training step."""

    def __init__(self, model: Model, resume_batch):
        self.model, self.x, self.y = model, *resume_batch
        self.after: dict[bytes, bytes] = {}

    def resumed(self, state: bytes) -> bytes:
        """Decode ``state`` (a device checkpoint) into a Python model, train the resume batch, encode."""
        if state not in self.after:
            c = ck.decode(state, self.model)
            py = copy.deepcopy(self.model)
            ck.apply(py, c)
            py.train_step(self.x, self.y, c.lr_inv)
            self.after[state] = ck.encode(py, c.step + 1, c.lr_inv)
        return self.after[state]


def classify(rep: SweepReport, where: str, rc: int, state: bytes | None, old: bytes, new: bytes,
             resumed: bytes | None, expect: Expect) -> None:
    """Count one cut: which state came back and whether training from it matched Python."""
    rep.cuts += 1
    if rc != 0 or state is None:
        rep.lost += 1
        rep.failures.append(f"{where}: load returned {rc}")
    elif state not in (old, new):
        rep.corrupt += 1
        rep.failures.append(f"{where}: loaded a state that is neither checkpoint")
    elif resumed != expect.resumed(state):
        rep.diverged += 1
        rep.failures.append(f"{where}: training after the load differs from Python")
    elif state == old:
        rep.old += 1
    else:
        rep.new += 1


def sweep_host(model: Model, batches: list, page_size: int = 256, tears=TEARS, name: str = "plhost") -> SweepReport:
    """Cut at every operation of a save with each tear in ``tears``; ``batches`` are four (x, y) batches."""
    t0 = time.perf_counter()
    from .compiled import CompiledModel

    if len(batches) < 4:
        raise ValueError("a power-loss sweep needs four training batches")
    batch = max(len(b[0]) for b in batches)
    cm = CompiledModel(convert(copy.deepcopy(model), batch=batch, train=True, name=name))
    lib = CkptLib(cm)
    size = ck.size(model)
    pages = ck.region_bytes(model, page_size) // page_size
    rep = SweepReport("host", page_size, size, pages * page_size)
    flash = NorFlash(page_size, pages)
    st = Storage(flash)
    lr = int(model.spec["lr_inv"])

    def boot_and_load():
        cm.reset()
        flash.power_on()
        return lib.load(st)

    # A0 in slot 0, A in slot 1, written by the C; the Python encoder must give the same flash bytes
    py = copy.deepcopy(model)
    blobs = []
    for i in range(2):
        x, y = batches[i]
        cm.train_batch(x, y)
        py.train_step(x, y, lr)
        if lib.save(st) != 0:
            raise RuntimeError("save failed on an intact flash")
        blobs.append(ck.encode(py, i + 1, lr, seq=i + 1))
    base = bytes(flash.mem)
    if base != ck.flash_image(model, page_size, blobs):
        raise RuntimeError("the C's flash image differs from nitro_mcu.checkpoint's")
    old = ck.encode(py, 2, lr)
    py.train_step(*batches[2], lr)
    new = ck.encode(py, 3, lr)
    expect = Expect(model, batches[3])

    # one uninterrupted save and load, to count their operations
    flash.power_on(base)
    cm.reset()
    rc = lib.load(st)
    rep.load_ops = dict(flash.stats)
    cm.train_batch(*batches[2])
    flash.power_on()
    if rc != 0 or lib.save(st) != 0 or lib.export(size) != new:
        raise RuntimeError("the uninterrupted save does not reproduce the new state")
    rep.save_ops = dict(flash.stats)
    n_ops = flash.ops

    for op in range(n_ops):
        for tear in tears:
            flash.power_on(base)
            cm.reset()
            if lib.load(st) != 0:
                raise RuntimeError("the starting flash does not load")
            cm.train_batch(*batches[2])
            flash.power_on()
            flash.arm(op, tear)
            lib.save(st)                       # its result is lost with the power
            rc = boot_and_load()
            state = lib.export(size) if rc == 0 else None
            resumed = None
            if state is not None:
                cm.train_batch(*batches[3])
                resumed = lib.export(size)
            classify(rep, f"op {op} ({tear})", rc, state, old, new, resumed, expect)
    rep.violations = list(flash.violations)
    rep.seconds = time.perf_counter() - t0
    return rep


def training_batches(data, batch: int, count: int = 4) -> list:
    """``count`` consecutive batches of the training images."""
    n = len(data.x_train)
    if n < batch * count:
        raise ValueError(f"the training data ({n} images) is smaller than {count} batches of {batch}")
    return [(np.ascontiguousarray(data.x_train[i * batch:(i + 1) * batch]),
             np.asarray(data.y_train[i * batch:(i + 1) * batch])) for i in range(count)]


def sweep_mcu(model: Model, batches: list, target: str = "m4", page_size: int = 256, cuts: int = 32,
              name: str = "plmcu", timeout: float = 300) -> SweepReport:
    """Cut at ``cuts`` instruction counts spread evenly over a save (first to last instruction) in QEMU.

    The starting flash (A0, A) is written by Python, so every cut also checks Python -> device; the device's
    checkpoints are decoded in Python, which trains on from them."""
    from .flashfw import FlashSession, build_flash_mcu, run_flash_mcu

    t0 = time.perf_counter()
    if len(batches) < 4:
        raise ValueError("a power-loss sweep needs four training batches")
    if cuts < 1:
        raise ValueError(f"the number of cuts must be positive, got {cuts}")
    batch = max(len(b[0]) for b in batches)
    conv = convert(copy.deepcopy(model), batch=batch, train=True, name=name)
    size = ck.size(model)
    rep = SweepReport(target, page_size, size, ck.region_bytes(model, page_size))
    lr = int(model.spec["lr_inv"])
    py = copy.deepcopy(model)
    blobs = []
    for i in range(2):
        py.train_step(*batches[i], lr)
        blobs.append(ck.encode(py, i + 1, lr, seq=i + 1))
    base = ck.flash_image(model, page_size, blobs)
    old = ck.encode(py, 2, lr)
    py.train_step(*batches[2], lr)
    new = ck.encode(py, 3, lr)
    expect = Expect(model, batches[3])
    insize = int(np.prod(model.input_shape))

    def cut_session(prof_load: bool) -> FlashSession:
        s = FlashSession(insize)
        if prof_load:
            s.prof(4)
        s.load()
        s.prof(0 if prof_load else 3)
        s.train(*batches[2])
        s.save()
        s.prof(0)
        s.export()
        return s

    # the code's own instructions, with a flash driver that only writes RAM
    counted = build_flash_mcu(conv, target, page_size, ram_only=True)
    for prof_load in (True, False):
        r = run_flash_mcu(counted, cut_session(prof_load), base, count=True, timeout=timeout)
        if r.results[0]["rc"] != 0 or r.results[0]["seq"] != 2 or r.results[-1] != new:
            raise RuntimeError(f"the uninterrupted run on {target} does not reproduce the new state")
        if prof_load:
            rep.load_insns = r.insns_region
            rep.load_ops = {k: r.results[0][k] for k in ("reads", "programs", "erases")}
        else:
            rep.save_insns = r.insns_region
            rep.save_ops = {k: r.results[2][k] for k in ("reads", "programs", "erases", "stages")}

    fw = build_flash_mcu(conv, target, page_size)
    full = run_flash_mcu(fw, cut_session(False), base, count=True, timeout=timeout)
    span = full.insns_region
    reboot = FlashSession(insize)
    reboot.load()
    reboot.export()
    reboot.train(*batches[3])
    reboot.export()
    for limit in sorted(set(np.linspace(0, span - 1, cuts).astype(np.int64).tolist())):
        r = run_flash_mcu(fw, cut_session(False), base, limit=limit, timeout=timeout)
        if not r.cut:
            raise RuntimeError(f"no power cut at instruction {limit} of a {span}-instruction save")
        after = run_flash_mcu(fw, reboot, r.flash, timeout=timeout).results
        rc = after[0]["rc"]
        classify(rep, f"instruction {limit} of {span}", rc, after[1] if rc == 0 else None, old, new, after[3],
                 expect)
    rep.seconds = time.perf_counter() - t0
    return rep


def demo_power_cut(model: Model, data, name: str, target: str = "m4", page_size: int = 256,
                   steps: int = 3, batch: int = 8) -> tuple[list, bool]:
    """The demo's story on the emulated core: train, save, train, lose power half-way through the second save;
    power on, load, train on; the result must equal Python training on from the checkpoint.  (lines, ok)"""
    from .flashfw import FlashSession, build_flash_mcu, run_flash_mcu, save_stages

    b = training_batches(data, batch, 2 * steps)
    conv = convert(copy.deepcopy(model), batch=batch, train=True, name=name)
    fw = build_flash_mcu(conv, target, page_size)
    insize = int(np.prod(model.input_shape))
    stages = save_stages(model, page_size)
    first = FlashSession(insize)
    first.load()
    for x, y in b[:steps]:
        first.train(x, y)
    first.save()
    for x, y in b[steps:]:
        first.train(x, y)
    first.cut(stages // 2)
    first.save()
    cut = run_flash_mcu(fw, first, b"\xff" * ck.region_bytes(model, page_size))
    second = FlashSession(insize)
    second.load()
    for x, y in b[steps:]:
        second.train(x, y)
    second.export()
    res = run_flash_mcu(fw, second, cut.flash).results
    py = copy.deepcopy(model)
    lr = int(model.spec["lr_inv"])
    for x, y in b[:steps] + b[steps:]:
        py.train_step(x, y, lr)
    ok = cut.cut and res[0]["rc"] == 0 and res[0]["steps"] == steps and res[-1] == ck.encode(py, 2 * steps, lr)
    lines = [f"train {steps} steps, save (checkpoint 1, {ck.size(model)} B), train {steps} more, power cut half-way "
             f"through the second save ({stages // 2} of {stages} flash writes)",
             f"power on: load -> checkpoint {res[0]['seq']} (step {res[0]['steps']}); the torn save is ignored; "
             f"train the same {steps} steps again",
             f"device state vs Python from the same checkpoint: {'bit-exact' if ok else 'MISMATCH'}"]
    return lines, ok
