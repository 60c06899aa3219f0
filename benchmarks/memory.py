"""Static memory of on-device training: the generator's exact plan vs float32 back-propagation.

Float32 back-propagation here means: the same network without local heads, float32 weights and
gradients, and every activation the backward pass keeps (each layer's input, pre-activation and output,
pool masks, dropout masks) for the whole batch.  Usage: python benchmarks/memory.py [--batch 8]
"""
import argparse

from nitro_mcu.codegen.cost import fp32_backprop_bytes
from nitro_mcu.codegen.plan import plan
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    print(f"{'model':<10} {'weights':>7} {'batch':>5} {'weights B':>10} {'arena B':>9} {'total B':>9} "
          f"{'fp32 BP B':>10} {'saving':>7}")
    for name, bits in (("mcu_cnn", 16), ("mcu_cnn", 32), ("cnn_small", 16), ("mlp1", 16), ("mlp1", 32),
                       ("mlp2", 16)):
        m = Model(preset(name), "default", bits)
        p = plan(m, a.batch, True, "m")
        fp = fp32_backprop_bytes(m, a.batch)
        print(f"{name:<10} {'int' + str(bits):>7} {a.batch:>5} {p.weight_bytes:>10} {p.arena_bytes:>9} "
              f"{p.ram_bytes:>9} {fp['total']:>10} {100 - 100 * p.ram_bytes / fp['total']:>6.1f}%")


if __name__ == "__main__":
    main()
