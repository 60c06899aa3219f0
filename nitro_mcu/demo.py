"""The main job (README's first command): train -> generate C -> train on the emulated MCU -> verify -> survive a
power cut -> cost."""
from __future__ import annotations

import time
from pathlib import Path

from . import api
from .trainer.loop import format_pct


def run_demo(a) -> int:
    from .codegen import convert, fp32_backprop_bytes
    from .fileio import atomic_write
    from .device.powerloss import demo_power_cut
    from .device.report import plot_report, report, report_json, report_text
    from .device.verify import verify

    t0 = time.perf_counter()
    out = Path(a.out)
    target = "m4"
    model = api.build("mcu_cnn", "default", 16, a.seed)
    data = api.load_data("bundled", a.seed)
    print(f"[1/6] training the MCU CNN (int16 weights) on the bundled MNIST subset: {len(data.x_train)} train / "
          f"{len(data.x_val)} val / {len(data.x_test)} test images, {a.epochs} epochs, integer arithmetic only",
          flush=True)
    hist = api.train(model, data, a.epochs, 64, schedule=False, progress=False if a.quiet else None)  # None: on a tty
    ev = api.evaluate_bp(model, data)
    path = api.save(model, out / "mcu_cnn.nitro", data=data, history=hist)
    print(f"      test accuracy {format_pct(ev['test_acc_bp'])} (best epoch {hist.best_epoch}); model file {path}")

    print("[2/6] generating C for on-device training (batch 8)", flush=True)
    conv = convert(model, batch=8, train=True, name="mnist_cnn")
    files = conv.save(file=out / "c")
    fp = fp32_backprop_bytes(model, 8)
    print("      " + conv.memory_report().replace("\n", "\n      "))
    print(f"      float32 back-propagation of the same net and batch would need {fp['total']} bytes: nitro uses "
          f"{100 * conv.plan.ram_bytes // fp['total']} % of that")
    print("      wrote " + ", ".join(str(f) for f in files))

    steps, preds = 20, 200
    print(f"[3/6] on the emulated Cortex-M4 (QEMU mps2-an386): {steps} training steps, then {preds} predictions "
          f"on held-out images", flush=True)
    rep = verify(model, data, target, steps=steps, batch=8, predictions=preds, name="mnist_cnn")
    print(f"      device accuracy on the held-out images after on-device training: {format_pct(rep.device_accuracy_bp)}")

    print("[4/6] bit-exactness: every weight, score and the PRNG state, device vs Python; every tensor moved")
    print("      " + rep.table().replace("\n", "\n      "))
    verdict = rep.problem() or "bit-exact"
    print(f"      {verdict}")

    print("[5/6] learning that survives power loss: checkpoints in the device's flash (two slots, committed last)",
          flush=True)
    lines, kept = demo_power_cut(model, data, "mnist_cnn", target)
    print("      " + "\n      ".join(lines))
    verdict = verdict if kept else f"power-loss recovery MISMATCH ({verdict})"

    print("[6/6] cost report", flush=True)
    r = report(rep.python_model, target, 8, data, steps=2, predictions=5, per_layer=True, name="mnist_cnn")
    print("      " + report_text(r).replace("\n", "\n      "))
    atomic_write(out / "report.json", report_json(r).encode())
    png = plot_report(r, out / "report.png")
    print(f"      wrote {out / 'report.json'}" + (f", {png}" if png else ""))
    print(f"done in {time.perf_counter() - t0:.1f} s: {verdict}")
    return 0 if rep.passed and kept else 1
