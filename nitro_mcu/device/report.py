"""What training and inference cost on a target: flash, static RAM, stack and instructions (QEMU TCG plugin),
per inference, per training step and per layer, as a dict, text, JSON or a PNG chart.
"""
from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path

import numpy as np

from ..codegen import convert
from ..codegen.cost import PHASES, op_macs, tail_ram, tail_ram_text
from ..fileio import atomic_write
from ..trainer.network import Model
from .harness import run_mcu
from .protocol import Session, parse_console_results
from .qemu import run_qemu
from .renode import RENODE_TESTED, renode_results, run_renode
from .verify import batches, run_session


def report(model: Model, target: str = "m4", batch: int = 8, data=None, steps: int = 2, predictions: int = 5,
           per_layer: bool = True, name: str = "nitro_model", timeout: float = 600, trainable=None,
           emulator: str = "qemu") -> dict:
    """Flash, static RAM, stack, instructions per inference / training step / MAC (and per layer), and the
    planned RAM of training each tail next to full training.  ``trainable``: as in :func:`~.verify.verify`.

    ``emulator`` 'renode': also run the training session on Renode and put Renode's own instruction counter
    next to the QEMU plugin's total for the same firmware (``renode`` entry); the per-step and per-layer
    counts need the plugin's region markers, so they stay QEMU's."""
    model = copy.deepcopy(model)
    if trainable is not None:
        model.set_trainable(trainable)
    conv = convert(model, batch=batch, train=True, name=name)
    xs = [(x, y) for x, y in batches(data, steps, batch)]
    xp = data.x_test[:predictions]

    t0 = time.perf_counter()
    # run 1: training steps counted; run 2: predictions counted (same firmware, same inputs)
    per_step, r_train = count_insns(conv, target, xs, xp, "train", timeout)
    per_inf, r_pred = count_insns(conv, target, xs, xp, "predict", timeout)
    macs = op_macs(conv.plan)
    infer_macs = sum(r["infer_macs"] for r in macs)
    executed = sum(r["infer_macs_executed"] for r in macs)  # a fused max-pool's conv skips what the pool drops
    train_macs = sum(r["train_macs"] for r in macs)
    b = r_train.build
    out = dict(
        target=target, model=model.spec.get("name") or model.spec["kind"], weight_bits=model.weight_bits,
        batch=batch, compiler=b.compiler_version, cflags=_flags(b),
        flash_bytes=b.flash_bytes, static_ram_bytes=b.static_ram_bytes, stack_bytes=r_train.stack_bytes,
        total_ram_bytes=b.static_ram_bytes + (r_train.stack_bytes or 0),
        harness_ram_bytes=b.static_ram_bytes - conv.plan.ram_bytes,
        model_ram_bytes=conv.plan.ram_bytes, arena_bytes=conv.plan.arena_bytes,
        weight_bytes=conv.plan.weight_bytes, weight_ram_bytes=conv.plan.train_weight_bytes,
        trainable=[n for n in model.block_names if model.trains(n)], tail_ram=tail_ram(model, batch),
        insns_per_train_step=int(per_step), insns_per_inference=int(per_inf),
        train_macs=train_macs, infer_macs=infer_macs, infer_macs_executed=executed,
        insns_per_mac_train=round(per_step / train_macs, 3) if train_macs else None,
        insns_per_mac_infer=round(per_inf / infer_macs, 3) if infer_macs else None,
        insns_per_mac_infer_executed=round(per_inf / executed, 3) if executed else None,
        layers=[],
    )
    if per_layer:
        for row in macs:
            if row["kind"] == "dropout":
                continue
            streamed = row["op"] < conv.plan.prefix  # runs as at inference: no phase markers
            rt = _op_count(conv, xs, xp, 100 + row["op"], target, timeout, train=True)
            ri = _op_count(conv, xs, xp, row["op"], target, timeout, train=False)
            phases = {ph: _op_count(conv, xs, xp, phase_id(row["op"], ph), target, timeout, train=True) // max(1, len(xs))
                      for ph in PHASES if ph in row["phase_macs"] and not streamed}
            out["layers"].append(dict(row, train_insns=rt // max(1, len(xs)), infer_insns=ri // max(1, len(xp)),
                                      phase_insns=phases))
    if emulator == "renode":
        out["renode"] = renode_cross_check(conv, count_session(conv, xs, xp, "train"), target)
    elif emulator != "qemu":
        raise ValueError(f"unknown emulator '{emulator}'; choose qemu or renode")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def count_insns(conv, target: str, xs, xp, what: str, timeout: float = 600):
    """(instructions per training step or per inference, the run) on ``target``: ``what`` "train" counts the
    training steps on the batches ``xs`` (then predicts ``xp``); "predict" trains on ``xs`` uncounted, then counts
    the predictions of ``xp``.  Totals come from a build without per-op markers: no measuring overhead."""
    r = run_session(conv, count_session(conv, xs, xp, what), target, "qemu", timeout, count_insns=True)
    return r.run.insns_region / max(1, r.run.regions), r


def count_session(conv, xs, xp, what: str) -> Session:
    """The session :func:`count_insns` runs: the counted region brackets the training steps or the predictions."""
    s = Session(int(np.prod(conv.plan.model.input_shape)))
    s.prof(1 if what == "train" else 0)
    for x, y in xs:
        s.train(x, y)
    s.prof(0 if what == "train" else 2)
    s.predict(xp)
    return s


def renode_cross_check(conv, session: Session, target: str) -> dict:
    """Renode's ``ExecutedInstructions`` after ``session`` against the QEMU plugin's total for the same ELF, and
    Renode's results (read out of the board's RAM) against QEMU's over the UART transport."""
    ren = run_renode(conv, session, target)
    q = run_qemu(ren.build.elf, target, io="uart", count_insns=True, timeout=600)
    uart = run_mcu(conv, session, target, transport="embedded").run   # QEMU reads no RAM out: results on the UART
    r, qn = ren.run.insns_total, q.insns_total
    return dict(version=RENODE_TESTED, insns_total=r, qemu_insns_total=qn,
                difference=None if r is None or qn is None else r - qn,
                results_equal=renode_results(ren.run) == parse_console_results(uart.stdout))


def phase_id(op: int, phase: str) -> int:
    """The marker id of one phase of op ``op``'s training step (templates/nitro_kernels.h.j2)."""
    return 10000 + 10 * op + PHASES.index(phase)


def _flags(b) -> str:
    keep = [f for f in b.cmd[1:] if f.startswith(("-m", "-O", "-std", "-f")) and "=" not in f or
            f.startswith(("-mcpu", "-mfloat-abi", "-march", "-mabi"))]
    return " ".join(dict.fromkeys(keep))


def _op_count(conv, xs, xp, op_id, target, timeout, train: bool) -> int:
    s = Session(int(np.prod(conv.plan.model.input_shape)))
    s.prof(1000 + op_id)
    if train:
        for x, y in xs:
            s.train(x, y)
    else:
        s.predict(xp)
    r = run_session(conv, s, target, "qemu", timeout, count_insns=True, profile_ops=True)
    return int(r.run.insns_region or 0)


def report_text(r: dict) -> str:
    kb = 1024
    lines = [
        f"cost on {r['target']} ({r['compiler']}; {r['cflags']})",
        f"  flash (text+rodata+data)      {r['flash_bytes']:>10} B  ({r['flash_bytes'] / kb:.1f} KiB)",
        f"  static RAM (data+bss)         {r['static_ram_bytes']:>10} B  (model {r['model_ram_bytes']}: weights "
        f"{r['weight_ram_bytes']} + arena {r['arena_bytes']}; harness buffers {r['harness_ram_bytes']})",
        f"  stack high-water              {r['stack_bytes']:>10} B",
        f"  RAM total (static + stack)    {r['total_ram_bytes']:>10} B  ({r['total_ram_bytes'] / kb:.1f} KiB)",
        f"  instructions per training step {r['insns_per_train_step']:>9}  (batch {r['batch']}, {r['train_macs']} MACs: "
        f"{r['insns_per_mac_train']} per MAC)",
        f"  instructions per inference    {r['insns_per_inference']:>10}  ({r['infer_macs']} MACs: "
        f"{r['insns_per_mac_infer']} per MAC; {r['infer_macs_executed']} executed: "
        f"{r['insns_per_mac_infer_executed']} per executed MAC)",
    ]
    if r["layers"]:
        lines.append(f"  {'layer':<14} {'train insns':>12} {'train MACs':>11} {'/MAC':>6} {'infer insns':>12} "
                     f"{'infer MACs':>11} {'/MAC':>6} {'executed':>9} {'/MAC':>6}")
        for L in r["layers"]:
            tpm = f"{L['train_insns'] / L['train_macs']:.2f}" if L["train_macs"] else "-"
            ipm = f"{L['infer_insns'] / L['infer_macs']:.2f}" if L["infer_macs"] else "-"
            epm = f"{L['infer_insns'] / L['infer_macs_executed']:.2f}" if L["infer_macs_executed"] else "-"
            lines.append(f"  {L['name']:<14} {L['train_insns']:>12} {L['train_macs']:>11} {tpm:>6} "
                         f"{L['infer_insns']:>12} {L['infer_macs']:>11} {ipm:>6} {L['infer_macs_executed']:>9} {epm:>6}")
        lines += phase_lines(r["layers"])
    if r.get("tail_ram"):
        lines.append(f"  trainable: {', '.join(r['trainable'])}; planned model RAM (static RAM above less the harness):")
        lines += ["  " + ln for ln in tail_ram_text(r["tail_ram"]).splitlines()]
    if r.get("renode"):
        rn = r["renode"]
        lines.append(f"  Renode {rn['version']} ExecutedInstructions {rn['insns_total']} vs QEMU plugin "
                     f"{rn['qemu_insns_total']} for the same firmware (difference {rn['difference']}; results "
                     f"{'identical' if rn['results_equal'] else 'DIFFER'})")
    return "\n".join(lines)


def phase_lines(layers: list[dict]) -> list[str]:
    """The training step of each layer by phase: instructions per step and per MAC of that phase."""
    lines = ["  training step by phase (instructions, per MAC in brackets):",
             f"  {'layer':<14}" + "".join(f" {ph:>19}" for ph in PHASES)]
    for L in layers:
        if not L.get("phase_insns"):
            continue
        cells = []
        for ph in PHASES:
            n, macs = L["phase_insns"].get(ph), L["phase_macs"].get(ph)
            cells.append(f" {'-':>19}" if n is None else f" {n:>11} ({n / macs:5.2f})" if macs else f" {n:>19}")
        lines.append(f"  {L['name']:<14}" + "".join(cells))
    return lines


def plot_report(r: dict, path: Path) -> Path | None:
    """PNG bar chart of instructions per layer (training step and inference)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    layers = r["layers"]
    if not layers:
        return None
    names = [L["name"] for L in layers]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(x, [L["train_insns"] for L in layers], color="tab:orange")
    axes[0].set_title(f"training step (batch {r['batch']}) on {r['target']}")
    axes[1].bar(x, [L["infer_insns"] for L in layers], color="tab:blue")
    axes[1].set_title(f"inference on {r['target']}")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_ylabel("instructions")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def report_json(r: dict) -> str:
    return json.dumps(r, indent=1)
