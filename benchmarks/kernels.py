"""Instructions per MAC of the generated kernels on emulated Cortex-M cores, per layer and per model, next to
CMSIS-NN's inference figures for the same layer shapes.

QEMU with the project's instruction-count plugin (`nitro_mcu.device.report`): int16 weights, batch 8, every
preset whose training plan fits the emulated board's RAM (M4 and M7), and the tiny MLP of the M0 test
(batch 4, 16 KB RAM).  The CMSIS-NN column: CMSIS-NN commit 99f736a, int8 weights, -O2, DSP path (SMLAD),
measured on the same emulator, compiler and counter; it has no training.
--ops: the per-op, per-ISA table instead (issue 24): mcu_cnn and mlp1 on M3 (portable C), M4 (DSP) and rv32imc
(RV32), instructions per MAC of each op summed over the model's layers from `report`'s phase table.
Usage: python benchmarks/kernels.py [--targets m4,m7] [--models mlp1,...] [--no-m0] [--ops] [--json F]
"""
import argparse
import json

import numpy as np

import nitro_mcu as nm
from nitro_mcu.codegen import convert
from nitro_mcu.device.report import report
from nitro_mcu.device.targets import get_target
from nitro_mcu.fileio import atomic_write
from nitro_mcu.spec import PRESETS, estimate_size, preset
from nitro_mcu.trainer.network import Model

CMSIS_NN = {"FC 784->100": 1.94, "FC 100->50": 2.41, "FC 288->64": 2.06, "FC 64->10": 2.88, "FC 50->10": 3.29,
            "conv 3x3 1->8, 28x28": 14.0, "conv 3x3 8->16, 14x14": 2.88, "conv 3x3 16->32, 7x7": 2.17}
TINY = dict(kind="mlp", input_shape=[64], num_classes=10, hidden=[16], fwd_decay_inv=12000, head_decay_inv=3000)
BATCH = 8
HEADROOM = 64 * 1024  # harness buffers, stack and the firmware's own data, on top of the model's RAM


class Subsampled:
    """The bundled images on an 8 x 8 grid (every third pixel), flattened: inputs for the tiny 64-input MLP."""

    def __init__(self, data):
        self.x_train = np.ascontiguousarray(data.x_train[:, 0, 2:26:3, 2:26:3].reshape(len(data.x_train), 64))
        self.y_train = data.y_train
        self.x_test = np.ascontiguousarray(data.x_test[:, 0, 2:26:3, 2:26:3].reshape(len(data.x_test), 64))


def fits(name: str, target: str) -> bool:
    """Whether the preset's int16 training plan (weights + arena) fits the target's RAM and its flash."""
    t = get_target(target)
    if 2 * estimate_size(preset(name))[0] > t.ram_size:  # an upper bound of the weights alone: skip the build
        return False
    plan = convert(Model(preset(name), "default", 16, seed=0), batch=BATCH, train=True, name="fit").plan
    return plan.ram_bytes + HEADROOM <= t.ram_size and 2 * plan.weight_bytes + HEADROOM <= t.code_size


def layer_label(model: Model, name: str) -> str:
    """'FC a->b' or 'conv kxk a->b, hxw', the keys of CMSIS_NN."""
    shapes = model.param_shapes()
    if name == "output":
        o, i = shapes["output"]
        return f"FC {i}->{o}"
    blk = next(b for b in model.blocks if b.name == name)
    if blk.kind == "linear":
        return f"FC {blk.d_in}->{blk.d_out}"
    return f"conv {blk.k}x{blk.k} {blk.c_in}->{blk.c_out}, {blk.h_in}x{blk.w_in}"


def rows_of(name: str, model: Model, r: dict) -> list[dict]:
    out = [dict(model=name, target=r["target"], layer="(whole model)", train=r["insns_per_mac_train"],
                infer=r["insns_per_mac_infer"], cmsis=None)]
    for L in r["layers"]:
        if not L["train_macs"]:
            continue
        label = layer_label(model, L["name"])
        out.append(dict(model=name, target=r["target"], layer=f"{L['name']}: {label}",
                        train=round(L["train_insns"] / L["train_macs"], 2),
                        infer=round(L["infer_insns"] / L["infer_macs"], 2), cmsis=CMSIS_NN.get(label)))
    return out


OP_TARGETS = {"m3": "portable C (M3)", "m4": "DSP (M4)", "rv32imc": "RV32 (rv32imc)"}
# (label, layer kinds, phase) of the per-op table; the forward weights' gradient is fused with their update
OPS = [("fc forward", ("linear", "output"), "forward"), ("conv forward", ("conv",), "forward"),
       ("weight gradient + update", ("linear", "output", "conv"), "gradient"),
       ("back-prop", ("linear", "conv"), "backprop"), ("heads (forward + error)", ("linear", "conv"), "head"),
       ("head gradient + update", ("linear", "conv"), "head_update")]


def op_rows(model: Model, r: dict) -> dict[str, tuple]:
    """label -> (instructions, MACs, CMSIS-NN inference per MAC or None) of each op of one report; pool/scaling:
    the max-pool layers' instructions over the model's MACs (they have none of their own)."""
    out = {}
    for label, kinds, phase in OPS:
        layers = [L for L in r["layers"] if L["kind"] in kinds and L.get("phase_macs", {}).get(phase)]
        insns = sum(L["phase_insns"][phase] for L in layers)
        macs = sum(L["phase_macs"][phase] for L in layers)
        cm = None
        if phase == "forward" and layers:
            figs = [(CMSIS_NN.get(layer_label(model, L["name"])), L["infer_macs"]) for L in layers]
            if all(f is not None for f, _ in figs):  # MAC-weighted over the op's layers
                cm = round(sum(f * m for f, m in figs) / sum(m for _, m in figs), 2)
        if macs:
            out[label] = (insns, macs, cm)
    pool = [L for L in r["layers"] if L["kind"] == "maxpool"]
    if pool:
        out["pool (per model MAC)"] = (sum(L["train_insns"] for L in pool), r["train_macs"], None)
    return out


def print_op_table(results: list[tuple[str, Model, dict]]) -> None:
    """One table per model: ops down, ISAs across (training step, int16, batch 8)."""
    for name in dict.fromkeys(n for n, _, _ in results):
        per = {r["target"]: op_rows(m, r) for n, m, r in results if n == name}
        targets = [t for t in OP_TARGETS if t in per]
        print(f"\n{name}: instructions per MAC by op (training step)")
        print(f"{'op':<26}" + "".join(f"{OP_TARGETS[t]:>17}" for t in targets) + f"{'CMSIS-NN infer':>16}")
        labels = dict.fromkeys(lb for t in targets for lb in per[t])
        for lb in labels:
            cells = [per[t].get(lb) for t in targets]
            cm = next((c[2] for c in cells if c and c[2]), None)
            print(f"{lb:<26}" + "".join(f"{c[0] / c[1]:>17.2f}" if c else f"{'-':>17}" for c in cells)
                  + f"{cm if cm else '-':>16}")
        runs = {t: r for n, _, r in results for t in targets if n == name and r["target"] == t}
        print(f"{'whole model train':<26}" + "".join(f"{runs[t]['insns_per_mac_train']:>17.2f}" for t in targets))
        print(f"{'whole model infer':<26}" + "".join(f"{runs[t]['insns_per_mac_infer']:>17.2f}" for t in targets))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="m4,m7")
    ap.add_argument("--models", help="comma-separated presets (default: every preset that fits the target)")
    ap.add_argument("--no-m0", action="store_true", help="skip the tiny MLP on M0")
    ap.add_argument("--ops", action="store_true", help="the per-op, per-ISA table (mcu_cnn and mlp1 on m3, m4, "
                    "rv32imc unless --targets/--models say otherwise)")
    ap.add_argument("--json", help="also write every report as JSON")
    a = ap.parse_args()
    if a.ops:
        a.targets = a.targets if a.targets != "m4,m7" else ",".join(OP_TARGETS)
        a.models, a.no_m0 = a.models or "mcu_cnn,mlp1", True
    bundled = nm.load_data("bundled", 0)
    names = a.models.split(",") if a.models else list(PRESETS)
    runs = [(t, n, Model(preset(n), "default", 16, seed=0), bundled, BATCH)
            for t in a.targets.split(",") for n in names if a.models or fits(n, t)]
    if not a.no_m0:
        runs.append(("m0", "tiny 64-16-10", Model(TINY, "default", 16, seed=3), Subsampled(bundled), 4))
    rows, reports, results = [], [], []
    for target, name, model, data, batch in runs:
        r = report(model, target, batch, data, steps=2, predictions=4, name="bench")
        reports.append(dict(r, model=name))
        results.append((name, model, r))
        rows += rows_of(name, model, r)
    if a.ops:
        print_op_table(results)
    print(f"{'target':<8} {'model':<14} {'layer':<32} {'train /MAC':>10} {'infer /MAC':>10} {'CMSIS-NN':>9}")
    for w in rows:
        cm = f"{w['cmsis']:.2f}" if w["cmsis"] else "-"
        print(f"{w['target']:<8} {w['model']:<14} {w['layer']:<32} {w['train']:>10} {w['infer']:>10} {cm:>9}")
    print(f"\n{'target':<8} {'model':<14} {'flash B':>9} {'RAM B':>9} {'insns/step':>11} {'insns/inference':>15}")
    for r in reports:
        print(f"{r['target']:<8} {r['model']:<14} {r['flash_bytes']:>9} {r['total_ram_bytes']:>9} "
              f"{r['insns_per_train_step']:>11} {r['insns_per_inference']:>15}")
    if a.json:
        atomic_write(a.json, json.dumps(reports, indent=1).encode())


if __name__ == "__main__":
    main()
