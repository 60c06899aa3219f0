"""Training throughput on the host: the generated C (gcc -O2 shared library) vs the NumPy trainer.

Same model, same batches, same starting weights; the script also checks that both end bit-identical.
Usage: python benchmarks/codegen_speed.py [--steps 30] [--batch 8]
"""
import argparse
import time

import numpy as np

import nitro_mcu as nm
from nitro_mcu.device.compiled import compile_model
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="mlp1,mlp2,cnn_small,mcu_cnn")
    a = ap.parse_args()
    data = nm.load_data("bundled", 0)
    print(f"{'model':<10} {'weights':>7} {'batch':>5} {'python samples/s':>17} {'C samples/s':>12} {'C/python':>8}  equal")
    for name in a.models.split(","):
        bits = 16 if name == "mcu_cnn" else 32
        py = Model(preset(name), "default", bits, seed=0)
        cm = compile_model(Model(preset(name), "default", bits, seed=0), batch=a.batch, train=True, name="bench")
        batches = [(data.x_train[i * a.batch:(i + 1) * a.batch], data.y_train[i * a.batch:(i + 1) * a.batch])
                   for i in range(a.steps)]
        t0 = time.perf_counter()
        for x, y in batches:
            py.train_step(x, y, 512)
        t_py = time.perf_counter() - t0
        t0 = time.perf_counter()
        for x, y in batches:
            cm.train_batch(x, y)
        t_c = time.perf_counter() - t0
        got = cm.get_weights()
        equal = all(np.array_equal(got[k], v) for k, v in py.weights.items())
        n = a.steps * a.batch
        print(f"{name:<10} {'int' + str(bits):>7} {a.batch:>5} {n / t_py:>17.0f} {n / t_c:>12.0f} "
              f"{t_py / t_c:>8.2f}  {'bit-identical' if equal else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
