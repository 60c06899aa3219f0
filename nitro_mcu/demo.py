"""The main job (README's first command)."""
from __future__ import annotations

import time

from . import api


def run_demo(a) -> int:
    t0 = time.perf_counter()
    model = api.build("mlp1", "default", 32, a.seed)
    data = api.load_data("bundled", a.seed)
    print(f"[1/2] training mlp1 on the bundled MNIST subset ({len(data.x_train)} train / {len(data.x_val)} val / "
          f"{len(data.x_test)} test images), {a.epochs} epochs, integer arithmetic only", flush=True)
    hist = api.train(model, data, a.epochs, 64, progress=not a.quiet)
    ev = api.evaluate(model, data)
    path = api.save(model, f"{a.out}/mlp1.nitro", data=data, history=hist)
    bp = ev["test_acc_bp"]
    print(f"      test accuracy {bp // 100}.{bp % 100:02d} % (best epoch {hist.best_epoch}); model file {path}")
    print("[2/2] model summary")
    print(api.summary(model))
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
