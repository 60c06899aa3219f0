"""``nitro-mcu fit``: does a model train on a given part, and how long does a step take there?

For every trainable tail (codegen/cost.py ``tail_ram``: the output layer alone, then one more block at a time,
up to full training) the memory plan gives the RAM of training and the weight bytes in flash; the instructions
of one training step (each tail) and of one inference are counted on the emulated core that matches each part
(device/parts.py, through report.count_insns), and an estimated time follows from the part's clock and its
core's CPI range.  Counting needs the Arm toolchain and QEMU; ``count=False`` gives memory only.
"""
from __future__ import annotations

import numpy as np

from ..codegen import convert
from ..codegen.cost import tail_ram
from ..trainer.network import Model
from ..trainer.rng import STREAM_DATA, Rng
from .capacity import FitError
from .parts import PARTS, Part, ms_range
from .protocol import EmulatorError, HarnessError
from .report import count_insns
from .targets import TARGETS
from .toolchain import BuildError


def fit(model: Model, parts: list[Part] | None = None, batch: int = 8, count: bool = True, seed: int = 0,
        timeout: float = 600, name: str | None = None) -> dict:
    """Per tail: RAM and flash from the plan; per core the parts need: instructions per training step (each
    tail) and per inference, the firmware's flash and stack, or why they could not be counted."""
    parts = list(PARTS.values()) if parts is None else parts
    tails = tail_ram(model, batch)
    for t in tails:
        t["flash_bytes"] = t["weight_ram_bytes"] + t["weight_flash_bytes"]  # frozen + the trainable ones' reset copy
    r = Rng(seed, STREAM_DATA)  # counts barely depend on the values: random int8 inputs and labels
    x = r.randint(-128, 127, (batch, *model.input_shape)).astype(np.int8)
    y = r.randint(0, model.num_classes - 1, (batch,))
    cores = {}
    for target in dict.fromkeys(p.target for p in parts):
        cores[target] = _count(model, tails, target, batch, x, y, timeout) if count else None
    return dict(model=name or model.spec["kind"], weight_bits=model.weight_bits, batch=batch,
                tails=tails, parts=parts, cores=cores)


def _count(model: Model, tails: list, target: str, batch: int, x, y, timeout: float) -> dict:
    """Each tail's step counted where its firmware builds and runs on the emulated board (the M0's has 16 KiB of
    RAM); the inference on the largest tail that did."""
    out = dict(step={}, flash={}, stack={}, inference=None, error=None)
    board = TARGETS[target]
    built = None
    for t in tails:
        conv = convert(model, batch=batch, train=True, name="fit", trainable=t["trainable"])
        try:
            step, run = count_insns(conv, target, [(x, y)], x[:1], "train", timeout)
        except (FitError, BuildError, HarnessError, EmulatorError) as e:
            if isinstance(e, FitError):  # refused before the build; its hint names options of verify/run, not fit's
                why = str(e).split(";")[0]
            elif "overflow" in str(e) or t["ram_bytes"] >= board.ram_size:  # the board, not the part, is too small
                why = (f"the emulated {target} board ({board.qemu_machine}) has {board.ram_size // 1024} KiB RAM, "
                       f"this tail needs {t['ram_bytes']} B plus the test harness")
            else:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                why = f"{first[:200]}"
            out["error"] = out["error"] or f"not counted on the emulated {target} where '-': {why}"
            continue
        out["step"][t["label"]], out["flash"][t["label"]] = int(step), run.build.flash_bytes
        out["stack"][t["label"]] = run.stack_bytes or 0
        built = conv
    if built is not None:
        out["inference"] = int(count_insns(built, target, [(x, y)], x[:1], "predict", timeout)[0])
    return out


def _ms(insns: int | None, part: Part) -> str:
    if insns is None:
        return "-"
    lo, hi = ms_range(insns, part)
    return f"{lo:.3g}-{hi:.3g}"


def fit_text(res: dict) -> str:
    """The fit as tables: one per part, a row per trainable tail."""
    lines = [f"model {res['model']} (int{res['weight_bits']} weights, training batch {res['batch']}): RAM and flash "
             "from the memory plan; instructions counted on the emulated core; ms = instructions x CPI / clock, "
             "an ESTIMATE (CPI range per core: docs/fit.md)"]
    for p in res["parts"]:
        c = res["cores"][p.target]
        lines += ["", f"{p.name}: {p.core} at {p.clock_mhz} MHz, {p.ram_bytes // 1024} KiB RAM, "
                      f"{p.flash_bytes // 1024} KiB flash ({p.datasheet}); counted on the emulated {p.target}"]
        lines.append(f"  {'trains':<26} {'RAM B':>9} {'flash B':>9} {'fits':>5} {'insns/step':>12} {'ms/step (est.)':>16}")
        any_fits = False
        for t in res["tails"]:
            label = t["label"]
            counted = c is not None and label in c["step"]
            ram = t["ram_bytes"] + (c["stack"][label] if counted else 0)
            flash = c["flash"][label] if counted else t["flash_bytes"]
            ok = ram <= p.ram_bytes and flash <= p.flash_bytes
            insns = c["step"][label] if counted else None
            lines.append(f"  {label:<26} {ram:>9} {flash:>9} {'yes' if ok else 'NO':>5} {insns or '-':>12} "
                         f"{_ms(insns, p):>16}")
            any_fits = any_fits or ok
        if not any_fits:  # say what to change, not only NO
            lines.append(f"  (nothing fits the {p.name}: "
                         + ("int16 weights (--weights int16), " if res["weight_bits"] == 32 else "")
                         + "a smaller --batch or a smaller model)")
        if c is None:
            lines.append("  (instructions not counted: --no-count; RAM is the plan's without stack, flash the "
                         "weights without code)")
            continue
        if c["error"]:
            lines.append(f"  ({c['error']}; there RAM and flash are the plan's)")
        if c["step"]:
            lines.append(f"  inference: {c['inference']} instructions, {_ms(c['inference'], p)} ms (est.); counted "
                         "rows: RAM includes the stack high-water, flash is the whole test firmware (harness, libc)")
    return "\n".join(lines)


def fit_json(res: dict) -> dict:
    """JSON-ready: the parts as dicts, with the estimated ms ranges per tail and per inference."""
    out = dict(res, parts=[vars(p) for p in res["parts"]])
    out["estimates_ms"] = {
        p.name: {"step": {k: ms_range(v, p) for k, v in (res["cores"][p.target] or {}).get("step", {}).items()},
                 "inference": ms_range(res["cores"][p.target]["inference"], p)
                 if res["cores"][p.target] and res["cores"][p.target]["inference"] else None}
        for p in res["parts"]}
    return out
