"""Whether a model's firmware can fit a target, checked before anything is built: a sentence, not a linker error.

The firmware's static RAM is at least the generator's plan (trainable weights + arena,
:attr:`~nitro_mcu.codegen.ops.Plan.ram_bytes`), plus the harness's own buffers (one batch of inputs and labels,
the weight export chunk, the scores: firmware/harness.c) and the stack the linker script reserves; its flash is
at least every weight (frozen ones as constants, trainable ones as their reset copy).  Both are lower bounds:
a model refused here can never link.  The refusal names the largest trainable tail that fits
(:func:`~nitro_mcu.codegen.cost.tail_ram`, the table ``generate`` and ``report`` print).
"""
from __future__ import annotations

import copy
import re
from functools import cache

import numpy as np

from ..codegen.cost import largest_tail
from ..codegen.plan import build
from ..trainer.network import Model
from .targets import Target, get_target

HARNESS_WEIGHT_CHUNK_BYTES = 256 * 4   # harness.c: int32_t wbuf[WCHUNK], WCHUNK 256


class FitError(ValueError):
    """The model cannot fit the target: one line with both figures and what would fit."""


@cache
def stack_bytes(ld_path) -> int:
    """The stack the target's linker script reserves by default (``__stack_size``)."""
    if not ld_path.is_file():
        return 0
    m = re.search(r"__stack_size\s*:\s*(0x[0-9a-fA-F]+|\d+)\s*;", ld_path.read_text())
    return int(m.group(1), 0) if m else 0


def harness_ram(model: Model, batch: int, train: bool = True) -> int:
    """The harness's static buffers: a batch of int8 inputs and labels and the weight export chunk (a training
    build) or one input (inference), and the int8 scores."""
    n = int(np.prod(model.input_shape))
    return (batch * (n + 1) + HARNESS_WEIGHT_CHUNK_BYTES if train else n) + model.num_classes


def needs(model: Model, batch: int, target: "str | Target", ram_bytes: int, weight_bytes: int,
          train: bool = True, flash_in_ram: int = 0) -> dict:
    """Lower bounds of the firmware's RAM and flash on ``target``, from the plan's RAM (trainable weights +
    arena) and the weight bytes the C holds; ``flash_in_ram``: the emulated board flash's RAM array
    (firmware/flash_file.c), for the checkpoint and power-loss builds."""
    t = get_target(target)
    stack = stack_bytes(t.ld_path)
    harness = harness_ram(model, batch, train)
    return dict(plan=ram_bytes, harness=harness, stack=stack, flash_in_ram=flash_in_ram,
                ram=ram_bytes + harness + stack + flash_in_ram, flash=weight_bytes, ram_size=t.ram_size,
                flash_size=t.code_size)


def check_fits(model: Model, target: "str | Target", batch: int, plan=None, flash_in_ram=None) -> None:
    """Raise :class:`FitError` when the training firmware of ``model`` (its trainable set, ``batch``; or the
    harness firmware of ``plan``, a generator plan) cannot fit ``target``'s RAM or flash; the message gives
    both figures and the largest trainable tail that fits.  ``flash_in_ram``: model -> the bytes of its
    emulated board flash in RAM (a build with firmware/flash_file.c), or None."""
    t = get_target(target)
    p = plan if plan is not None else build(model, batch, True)
    emulated = flash_in_ram or (lambda m: 0)
    n = needs(model, batch, t, p.ram_bytes, p.weight_bytes, p.train, emulated(model))
    if n["ram"] <= n["ram_size"] and n["flash"] <= n["flash_size"]:
        return
    if n["flash"] > n["flash_size"]:
        raise FitError(f"the model cannot fit {t.name}: its weights alone need {n['flash']} bytes of flash, the "
                       f"target has {n['flash_size']}; a smaller model"
                       + (", int16 weights (--weights int16)" if model.weight_bits == 32 else "")
                       + " or another --target")
    def need(r):
        return needs(model, batch, t, r["ram_bytes"], r["weight_ram_bytes"] + r["weight_flash_bytes"],
                     flash_in_ram=emulated(copy.copy(model).set_trainable(r["trainable"])))

    best, tails = largest_tail(model, batch, lambda r: need(r)["ram"] <= n["ram_size"] and
                               need(r)["flash"] <= n["flash_size"])
    flash = f" + emulated flash {n['flash_in_ram']}" if n["flash_in_ram"] else ""
    what = (f"the model's training firmware needs at least {n['ram']} bytes of RAM on {t.name} (plan {n['plan']} "
            f"+ harness {n['harness']} + stack {n['stack']}{flash}), the target has {n['ram_size']}")
    if best:
        hint = (f"the largest trainable tail that fits is {best['label']} ({need(best)['ram']} bytes): use "
                f"--trainable {','.join(best['trainable'])}")
    else:
        hint = (f"not even the output layer alone fits ({need(tails[0])['ram']} bytes at batch {batch}): a "
                "smaller --batch, a smaller model or another --target")
    raise FitError(f"{what}; {hint}")
