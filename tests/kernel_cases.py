"""The models whose generated C the kernel-layout test pins byte for byte (tests/test_kernel_sources.py).

Each case is (id, spec, profile, weight_bits, batch, train, trainable).  They cover every kernel kind the
generator emits: both model kinds, both weight widths, both profiles, training and inference-only builds, a
tail-trained (frozen-prefix) build, dropout, and the mixed-input models of issue 22 (an int8-fed and an
int16-fed kernel of the same op in one model).

Run ``PYTHONPATH=$PWD python3 tests/kernel_cases.py`` to print the digests as JSON (the fixture format).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

from nitro_mcu.codegen.render import convert
from nitro_mcu.device.flags import firmware_cflags
from nitro_mcu.device.targets import get_target
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model


def _with(name: str, **changes) -> dict:
    s = preset(name)
    s.update(changes)
    return s


# A conv fed int8 (the input) and one fed int16 (a dropout's output): both conv_step kernels in one file.
MIXED_CNN = {"kind": "cnn", "input_shape": [1, 6, 6], "num_classes": 3,
             "features": [["conv", 2, 3, 1, 1], ["dropout", 0.5], ["conv", 2, 3, 1, 1]]}
# Every op fed both int8 and int16: conv, max-pool, linear and dropout itself (after a block, after a dropout).
MIXED_ALL = {"kind": "cnn", "input_shape": [2, 8, 8], "num_classes": 4,
             "features": [["conv", 3, 3, 1, 1], ["dropout", 0.25], ["maxpool", 2, 2], ["dropout", 0.5],
                          ["conv", 4, 3, 1, 1], ["maxpool", 2, 2], ["conv", 4, 1, 1, 0]],
             "fc_hidden": [6, 5], "dropout": 0.2}
# An MLP whose first hidden layer reads the int8 input and whose later layers read dropout outputs (int16).
MIXED_MLP = {"kind": "mlp", "input_shape": [12], "num_classes": 3, "hidden": [7, 5], "dropout": 0.3}

CASES = [
    ("mlp1_i32_train", preset("mlp1"), "default", 32, 8, True, None),
    ("mlp1_i16_train", preset("mlp1"), "default", 16, 8, True, None),
    ("mlp1_i16_infer", preset("mlp1"), "default", 16, 1, False, None),
    ("mlp1_ref_i32_train", preset("mlp1"), "reference", 32, 16, True, None),
    ("mlp1_dropout_i16_train", _with("mlp1", dropout=0.2), "default", 16, 8, True, None),
    ("mlp1_i16_tail", preset("mlp1"), "default", 16, 8, True, ["block1", "output"]),
    ("mcu_cnn_i16_train", preset("mcu_cnn"), "default", 16, 8, True, None),
    ("mcu_cnn_i16_infer", preset("mcu_cnn"), "default", 16, 1, False, None),
    ("mcu_cnn_i32_train", preset("mcu_cnn"), "default", 32, 4, True, None),
    ("mcu_cnn_i16_tail", preset("mcu_cnn"), "default", 16, 8, True, ["fc0", "output"]),
    ("mcu_cnn_ref_i16_train", preset("mcu_cnn"), "reference", 16, 8, True, None),
    ("cnn_small_i16_train", preset("cnn_small"), "default", 16, 4, True, None),
    ("cnn_small_i32_infer", preset("cnn_small"), "default", 32, 2, False, None),
    ("cnn_small_dropout_i32_train", _with("cnn_small", dropout=0.1), "default", 32, 4, True, None),
    ("mixed_cnn_i16_train", MIXED_CNN, "default", 16, 2, True, None),
    ("mixed_cnn_i32_train", MIXED_CNN, "default", 32, 2, True, None),
    ("mixed_all_i16_train", MIXED_ALL, "default", 16, 3, True, None),
    ("mixed_all_i32_ref_train", MIXED_ALL, "reference", 32, 3, True, None),
    ("mixed_all_i16_infer", MIXED_ALL, "default", 16, 2, False, None),
    ("mixed_mlp_i16_train", MIXED_MLP, "default", 16, 5, True, None),
]


# Every core whose kernels differ (one per instruction set and backend): the host compiler and the cross ones.
CORES = ("host", "m0", "m3", "m4", "m7", "m33", "rv32imc")


def sources(case) -> dict[str, str]:
    _, spec, profile, bits, batch, train, trainable = case
    model = Model(spec, profile, bits, seed=3)
    return convert(model, batch=batch, train=train, name="pin", trainable=trainable).sources


def compiler(core: str) -> list[str]:
    """The compiler command of ``core`` with its firmware flags (the host's: gcc -O2)."""
    if core == "host":
        return ["gcc", "-std=c11", "-O2"]
    # warnings select nothing, and a kernels header preprocessed as the main file would trip -Wunused-macros
    return [get_target(core).isa_info.tool("gcc"), *(f for f in firmware_cflags(core) if not f.startswith("-W"))]


def compiled_kernels(text: str, core: str) -> str:
    """What ``core``'s compiler sees of a kernel file: preprocessed with its own flags, so that only the backend
    branches it selects remain.  The #include lines are left out (the system headers differ between
    toolchains), and so is the generation id (a hash of all three files)."""
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#include"))
    return subprocess.run([*compiler(core), "-E", "-P", "-x", "c", "-"], input=body, capture_output=True,
                          text=True, check=True).stdout


def missing_compilers() -> list[str]:
    return [c for c in CORES if shutil.which(compiler(c)[0]) is None]


def digests_of(case) -> dict[str, str]:
    """sha256 of <name>.h and <name>.c (generation id masked) and of the kernels as each core compiles them."""
    src = {f: re.sub(r"0x[0-9a-f]{16}ULL", "GENERATION", t) for f, t in sources(case).items()}
    out = {f: hashlib.sha256(src[f].encode()).hexdigest() for f in ("pin.c", "pin.h")}
    for core in CORES:
        out[f"pin_kernels.h@{core}"] = hashlib.sha256(compiled_kernels(src["pin_kernels.h"], core).encode()).hexdigest()
    return out


def digests() -> dict[str, dict[str, str]]:
    return {c[0]: digests_of(c) for c in CASES}


if __name__ == "__main__":
    print(json.dumps(digests(), indent=1, sort_keys=True))
