"""Emulator regression: the generated C trains and predicts on emulated Cortex-M and RV32 cores bit-exactly like
Python.

Matrix: (M0 with a tiny MLP; RP2040 with mcu_cnn int16; M3, M4, M7, M33) x (mlp1, mcu_cnn) x (predict, train K
steps); both weight widths on M4, and an M4 DSP build at -O3. RV32 (QEMU virt cut down to RV32IMC / RV32IMAC) and
the STM32F405 and STM32F205 parts (QEMU netduinoplus2 and netduino2, through their USART, no semihosting): CI runs
the representative rows (RV32_CI_ROWS, STM32_CELLS); the whole RV32 matrix runs with NITRO_MCU_FULL_MATRIX=1 and is
skipped, with that reason printed, otherwise. Training cells start from a host pre-trained model
(tests/device_cases.py) with an lr_inv change mid-run, so that every tensor moves (verify fails otherwise) and the
held-out accuracy after device training means something. Needs the ARM toolchain and QEMU (scripts/setup.sh installs
them); a missing tool fails, never skips.
"""
import copy
import json
import os
import shutil
import struct
import subprocess
import time

import numpy as np
import pytest
from device_cases import TINY, Synthetic, bundled as bundled_data, pretrained

from grown import grow
from nitro_mcu.codegen import convert
from nitro_mcu.device.harness import build_mcu, run_mcu
from nitro_mcu.device.protocol import HarnessError, Session, parse_console_results, parse_results
from nitro_mcu.device.report import report, report_text
from nitro_mcu.device.targets import get_target
from nitro_mcu.device.toolchain import tool
from nitro_mcu.device.verify import verify
from nitro_mcu.spec import preset
from nitro_mcu.trainer.network import Model

K_STEPS = 20
LR_CHANGE = {10: 256}        # the generated lr_inv (512) for 10 steps, then a LRIV command
MIN_ACCURACY_BP = 7000       # held-out accuracy after device training, from pre-trained weights


@pytest.fixture(scope="module")
def bundled():
    return bundled_data()


def _check(rep, mode):
    assert rep.passed, rep.problem()
    if mode == "train":
        assert rep.steps == K_STEPS and rep.correct_device == rep.correct_python
        for t in rep.tensors:      # every tensor moved, by the same count on the device and in Python
            assert t.count and 0 < t.changed == t.changed_device, (t.name, t.changed, t.changed_device)
        assert rep.final.lr_inv_device == rep.final.lr_inv_python == 256
    else:
        assert rep.predictions == 100 and rep.scores_equal and rep.classes_equal
        assert all(t.changed == t.changed_device == 0 for t in rep.tensors)


MATRIX = [("m3", "mlp1", 32), ("m3", "mcu_cnn", 16), ("m7", "mlp1", 32), ("m7", "mcu_cnn", 16),
          ("m33", "mlp1", 32), ("m33", "mcu_cnn", 16), ("m4", "mlp1", 32), ("m4", "mlp1", 16),
          ("m4", "mcu_cnn", 16), ("m4", "mcu_cnn", 32)]


@pytest.mark.parametrize("mode", ["predict", "train"])
@pytest.mark.parametrize("target,preset_name,bits", MATRIX)
def test_device_matches_python_bit_for_bit(bundled, target, preset_name, bits, mode):
    model = pretrained(preset_name, bits)
    steps = K_STEPS if mode == "train" else 0
    rep = verify(model, bundled, target, steps=steps, batch=8, predictions=100, lr_schedule=LR_CHANGE,
                 name=f"{preset_name}{bits}")
    _check(rep, mode)
    assert rep.device_accuracy_bp >= MIN_ACCURACY_BP, rep.device_accuracy_bp


RV32_CI_ROWS = [("rv32imc", "mlp1", 32), ("rv32imac", "mcu_cnn", 16)]
RV32_MATRIX = [("rv32imc", "mlp1", 32), ("rv32imc", "mlp1", 16), ("rv32imc", "mcu_cnn", 16),
               ("rv32imc", "mcu_cnn", 32), ("rv32imac", "mlp1", 32), ("rv32imac", "mcu_cnn", 16)]
FULL_MATRIX = os.environ.get("NITRO_MCU_FULL_MATRIX") == "1"


@pytest.mark.parametrize("mode", ["predict", "train"])
@pytest.mark.parametrize("target,preset_name,bits", RV32_MATRIX)
def test_rv32_device_matches_python_bit_for_bit(bundled, target, preset_name, bits, mode):
    if (target, preset_name, bits) not in RV32_CI_ROWS and not FULL_MATRIX:
        pytest.skip("full RV32 matrix row: runs with NITRO_MCU_FULL_MATRIX=1 (CI runs RV32_CI_ROWS)")
    if mode == "predict" and not FULL_MATRIX:
        pytest.skip("RV32 prediction-only cell: runs with NITRO_MCU_FULL_MATRIX=1 (the training cell predicts too)")
    test_device_matches_python_bit_for_bit(bundled, target, preset_name, bits, mode)


# Layers on each side of the RV32 assembly steps' limits (templates/kernels/rv32/).  RV32_EDGES (batch 8): 3x3
# convs in rows steps (conv0 n = 18, 12-wide rows: a step of eight positions and one of four; conv2 n = 162), fc0
# from 1152 inputs (rows more than 1016 entries apart: the C loops of dot16x1), 17 rows (eight row pairs of the
# fused update and one row alone).  RV32_CONV_PATHS (batch 5: the transposed batch's zero padding): 14- and
# 7-wide rows (steps of eight + six, and of seven), odd filter counts (the one-filter step) before fused 2x2
# pools (inference: 14 -> 7, and the six pooled columns of a 7-wide map), the im2col path of the other kernel
# sizes (a 1x1 conv from 18 channels: dot8x2 with n = 18, steps of four plus two entries in C; a 5x5 one,
# n = 175: rows beyond the immediate offsets, the C loop), fc0 from 45 inputs (a dot8x1 step of five passes plus
# five entries in C; row pairs over an odd row length).  RV32_SMALL_BATCH (batch 3, NITRO_BP 4): row pairs with
# four deltas, dot16x1 and dot8x1 in assembly.
RV32_EDGES = {"kind": "cnn", "input_shape": [2, 12, 12], "num_classes": 10,
              "features": [["conv", 8, 3, 1, 1], ["conv", 18, 3, 1, 1], ["conv", 8, 3, 1, 1]], "fc_hidden": [17]}
RV32_CONV_PATHS = {"kind": "cnn", "input_shape": [2, 14, 14], "num_classes": 10,
                   "features": [["conv", 8, 3, 1, 1], ["conv", 18, 3, 1, 1], ["conv", 8, 1, 1, 0], ["conv", 7, 3, 1, 1],
                                ["maxpool", 2, 2], ["conv", 8, 5, 1, 2], ["conv", 5, 3, 1, 1], ["maxpool", 2, 2]],
                   "fc_hidden": [9]}
RV32_SMALL_BATCH = {"kind": "mlp", "input_shape": [40], "num_classes": 10, "hidden": [25, 9]}
# A padded map of 2 x 34 x 34 bytes, beyond an ADDI's immediate: the rows steps' channel step through a register.
RV32_WIDE_MAP = {"kind": "cnn", "input_shape": [2, 32, 32], "num_classes": 10,
                 "features": [["conv", 2, 3, 1, 1], ["maxpool", 2, 2]], "fc_hidden": []}
# Four channels of 22 x 22 padded cells (968 B a map): groups of two channels, not four (the fourth channel's
# offset, 2,904 B, is beyond the immediate); then a one-channel conv with five filters under a fused pool of a
# 20-wide map (inference: two-filter window steps and the one-filter step, five steps along each pooled row).
RV32_GROUPS = {"kind": "cnn", "input_shape": [4, 20, 20], "num_classes": 10,
               "features": [["conv", 1, 3, 1, 1], ["conv", 5, 3, 1, 1], ["maxpool", 2, 2]], "fc_hidden": []}


@pytest.mark.parametrize("spec,shape,batch", [(RV32_EDGES, (2, 12, 12), 8), (RV32_CONV_PATHS, (2, 14, 14), 5),
                                              (RV32_SMALL_BATCH, (40,), 3), (RV32_WIDE_MAP, (2, 32, 32), 4),
                                              (RV32_GROUPS, (4, 20, 20), 4)],
                         ids=["edges", "conv_paths", "small_batch", "wide_map", "groups"])
def test_rv32_assembly_remainders_and_c_fallbacks_train_bit_exactly(spec, shape, batch):
    model = Model(spec, "default", 16, seed=4)
    rep = verify(model, Synthetic(shape, n=64), "rv32imc", steps=4, batch=batch, predictions=20,
                 lr_schedule={0: 16}, name="rvedges")
    assert rep.passed, rep.problem()
    assert rep.scores_equal and rep.correct_device == rep.correct_python
    for t in rep.tensors:
        assert t.count and 0 < t.changed == t.changed_device, (t.name, t.changed, t.changed_device)


# The M4 inference paths of a conv whose 2x2 max-pool is fused (templates/kernels/dsp/conv.h.j2) on odd maps,
# whose last row and column the pool drops: one input channel on an 11x11 map (the unaligned gather), an even
# fan-in (36: whole windows, three then two filters a block) and an odd one (45: position pairs, padded rows).
# On RV32 the pooled rows steps (templates/kernels/rv32/conv.h.j2): eight + two pooled columns, four, two, and
# the one-filter step of an odd filter count.
FUSED_ODD = {"kind": "cnn", "input_shape": [1, 11, 11], "num_classes": 10,
             "features": [["conv", 4, 3, 1, 1], ["maxpool", 2, 2], ["conv", 5, 3, 1, 1], ["maxpool", 2, 2],
                          ["conv", 7, 3, 1, 1], ["maxpool", 2, 2]], "fc_hidden": []}


@pytest.mark.parametrize("target", ["m4", "rv32imc"])
def test_fused_pool_on_odd_maps_predicts_bit_exactly(target):
    model = Model(FUSED_ODD, "default", 16, seed=6)
    rng = np.random.default_rng(1)  # weights far above the init's, so that the pooled maps and the scores vary
    for name in ("conv0.fwd", "conv1.fwd", "conv2.fwd", "output"):
        b = 1500 if name == "output" else 2000
        model.weights[name] = rng.integers(-b, b + 1, size=model.weights[name].shape).astype(np.int16)
    data = Synthetic((1, 11, 11), n=64)
    assert len({tuple(r) for r in model.predict_scores(data.x_test)}) == 100
    rep = verify(model, data, target, steps=0, batch=8, predictions=100, name="fodd")
    assert [op.fused for op in convert(model, batch=8, train=True).plan.ops if op.kind == "maxpool"] == [True] * 3
    assert rep.passed, rep.problem()
    assert rep.predictions == 100 and rep.scores_equal and rep.classes_equal


def test_rv32_firmware_is_rv32imc_soft_float_and_the_emulated_cpu_has_no_fpu(bundled):
    """The ELF says RV32IMC, ilp32 soft-float; QEMU's CPU lacks F/D, so a float instruction would trap."""
    b = build_mcu(convert(pretrained("mlp1", 32), batch=8, train=True, name="mlp132"), "rv32imc")
    assert "-march=rv32imc" in b.cmd and "-mabi=ilp32" in b.cmd and b.compiler_version.startswith("riscv64")
    head = b.elf.read_bytes()[:52]
    assert head[18:20] == (243).to_bytes(2, "little") and int.from_bytes(head[36:40], "little") & 0x6 == 0
    attrs = subprocess.run([tool("riscv64-unknown-elf-readelf"), "-A", str(b.elf)], capture_output=True, text=True,
                           check=True).stdout
    assert '"rv32i2p1_m2p0_c2p0' in attrs and "_f2p" not in attrs and "_d2p" not in attrs
    t = get_target("rv32imc")
    assert "f=off" in t.qemu_args[-1] and "d=off" in t.qemu_args[-1]


STM32_CELLS = [("stm32f405", "soak_mlp", 16, 8), ("stm32f205", "soak_mlp", 16, 8)]


@pytest.mark.parametrize("target,preset_name,bits,batch", STM32_CELLS)
def test_stm32_part_trains_bit_exactly_through_its_usart(bundled, target, preset_name, bits, batch):
    """A real part's model (QEMU netduinoplus2, netduino2): commands in flash, results and exit line on USART2."""
    model = pretrained(preset_name, bits)
    rep = verify(model, bundled, target, steps=K_STEPS, batch=batch, predictions=100, lr_schedule=LR_CHANGE,
                 name=f"{preset_name}{bits}")
    _check(rep, "train")
    assert rep.device_accuracy_bp >= MIN_ACCURACY_BP, rep.device_accuracy_bp


def test_stm32f405_firmware_has_no_semihosting_and_ends_with_the_exit_line():
    model = Model(TINY, "default", 16, seed=4)
    data = Synthetic((64,))
    conv = convert(model, batch=4, train=True, name="stm")
    s = Session(64)
    s.train(data.x_train[:4], data.y_train[:4])
    model.train_step(data.x_train[:4], data.y_train[:4], 512)
    s.weights()
    r = run_mcu(conv, s, "stm32f405")           # the files transport is not there: embedded, over USART2
    assert r.build.io == "uart" and "-DBOARD_NO_SEMIHOST" in r.build.cmd
    assert not any("semihosting" in c for c in r.run.cmd) and r.run.cmd[r.run.cmd.index("-M") + 1] == "netduinoplus2"
    assert r.run.lines[-2:] == ["NITRO-DONE 0", "NITRO-EXIT 0"] and r.run.exit_status == 0
    dis = subprocess.run([tool("arm-none-eabi-objdump"), "-d", str(r.build.elf)], capture_output=True, text=True,
                         check=True).stdout
    assert "\tbkpt\t" not in dis and "\twfi" in dis
    for k, w in model.weights.items():
        np.testing.assert_array_equal(r.results[-1].weights[k], w, err_msg=k)


@pytest.mark.parametrize("preset_name", ["mcu_cnn", "mlp1"])
def test_m4_dsp_build_at_O3_without_fwrapv_is_bit_exact(bundled, preset_name):
    """int16 on the M4 takes the SMLAD/SSAT paths; -O3 and no -fwrapv leave no room for signed-overflow UB."""
    model = pretrained(preset_name, 16)
    rep = verify(model, bundled, "m4", steps=K_STEPS, batch=8, predictions=100, lr_schedule=LR_CHANGE,
                 name=f"{preset_name}dsp", opt="-O3")
    _check(rep, "train")
    b = build_mcu(convert(model, batch=8, train=True, name=f"{preset_name}dsp"), "m4", opt="-O3")
    assert "-O3" in b.cmd and "-O2" not in b.cmd and "-fwrapv" not in b.cmd
    dis = subprocess.run([tool("arm-none-eabi-objdump"), "-d", str(b.elf)], capture_output=True, text=True,
                         check=True).stdout
    assert "\tsmlad\t" in dis and "\tssat\t" in dis


@pytest.mark.parametrize("mode", ["predict", "train"])
def test_m0_microbit_trains_a_tiny_mlp_in_16_kb(mode):
    model = Model(TINY, "default", 16, seed=3)
    data = Synthetic((64,))
    steps, preds = (K_STEPS, 10) if mode == "train" else (0, 100)
    rep = verify(model, data, "m0", steps=steps, batch=4, predictions=preds, name="tiny")
    assert rep.passed, rep.problem()
    if mode == "train":
        assert all(0 < t.changed == t.changed_device for t in rep.tensors)
    assert rep.stack_bytes and rep.stack_bytes < 4096


def test_rp2040_trains_mcu_cnn_int16_bit_exactly(bundled):
    """The model the 16 KiB m0 board cannot hold, on the RP2040's 264 KiB: the M0+ binary on the M3, unaligned
    accesses trapping (a fault would end the run)."""
    test_device_matches_python_bit_for_bit(bundled, "rp2040", "mcu_cnn", 16, "train")


def test_rp2040_counts_the_instructions_of_qemus_m0_for_the_same_step():
    """One training step of the same model on the same inputs: the M3 of rp2040 executes the M0+ code
    instruction for instruction, so its count equals the microbit M0's (m0) exactly."""
    from nitro_mcu.device.report import count_insns

    model = Model(TINY, "default", 16, seed=3)
    data = Synthetic((64,))
    conv = convert(model, batch=4, train=True, name="tiny")
    xs = [(data.x_train[:4], data.y_train[:4])]
    counts = {t: count_insns(conv, t, xs, data.x_test[:1], "train", timeout=120)[0] for t in ("m0", "rp2040")}
    assert counts["m0"] > 10_000 and counts["rp2040"] == counts["m0"], counts


def test_reference_profile_with_dropout_on_m4_matches_python(bundled):
    spec = dict(preset("cnn_small"), dropout=0.1)
    model = Model(spec, "reference", 32, seed=2)
    rep = verify(model, bundled, "m4", steps=6, batch=4, predictions=20, lr_schedule={0: 128}, name="drop")
    assert rep.passed, rep.problem()
    assert all(0 < t.changed == t.changed_device for t in rep.tensors)
    assert rep.final.rng_python != model.dropout_rng.state     # the masks drew from the PRNG


def test_learning_rate_schedule_reaches_the_device(bundled):
    rep = verify(pretrained("mlp1", 16), bundled, "m4", steps=6, batch=8, predictions=5, lr_schedule={3: 1536},
                 name="sched")
    assert rep.passed, rep.problem()
    assert rep.final.lr_inv_device == 1536


def test_a_mismatch_is_reported_never_hidden(monkeypatch):
    """The device starts from weights one unit away from Python's: verify must report, never say bit-exact."""
    import nitro_mcu.device.verify as V

    device_model = Model(TINY, "default", 16, seed=3)
    python_model = Model(TINY, "default", 16, seed=3)
    python_model.weights["block0.fwd"][0, 1] += 1
    monkeypatch.setattr(V, "convert", lambda m, **kw: convert(device_model, **kw))
    rep = verify(python_model, Synthetic((64,)), "m4", steps=2, batch=4, predictions=5, name="sab")
    assert not rep.bit_exact
    bad = [t for t in rep.tensors if not t.equal]
    assert bad and bad[0].name == "block0.fwd"
    assert rep.first_mismatch().startswith("tensor block0.fwd index [")


def test_crash_timeout_and_garbled_output_are_errors(bundled):
    model = Model(TINY, "default", 16, seed=3)
    conv = convert(model, batch=4, train=True, name="errs")
    # a command file that breaks the protocol: the harness exits non-zero -> HarnessError
    s = Session(64)
    s.commands.append(b"XXXX")
    with pytest.raises(HarnessError, match="harness failed"):
        run_mcu(conv, s, "m4")
    # garbled result bytes
    s2 = Session(64)
    s2.weights()
    with pytest.raises(HarnessError, match="garbled"):
        parse_results(b"WGHT" + struct.pack("<i", 5), conv, s2.expect)
    with pytest.raises(HarnessError, match="garbled"):
        parse_results(b"TRAN\x00\x00\x00\x00", conv, ["PRED"])
    # a run far longer than its timeout: 8,000 steps of a 64-256-128-10 MLP take ~12 s here (the tiny MLP's
    # 20,000 steps finished within 1 s once the kernels got faster, so the timeout never fired)
    wide = convert(Model(dict(TINY, hidden=[256, 128]), "default", 16, seed=3), batch=4, train=True, name="errs")
    s3 = Session(64)
    x = np.zeros((4, 64), np.int8)
    for _ in range(8000):
        s3.train(x, np.zeros(4, np.uint8))
    t0 = time.perf_counter()
    with pytest.raises(HarnessError, match="timed out"):
        run_mcu(wide, s3, "m4", timeout=1)
    assert time.perf_counter() - t0 < 30


def _qemu_and_unicorn(conv, session):
    import tempfile
    from pathlib import Path

    from nitro_mcu.device.qemu import run_qemu
    from nitro_mcu.device.unicorn import run_unicorn

    b = build_mcu(conv, "m4")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "cmd.bin").write_bytes(session.to_bytes())
        q = run_qemu(b.elf, "m4", cwd=d, count_insns=True)
        u = run_unicorn(b.elf, "m4", cwd=d, timeout=120)
    return q, u


@pytest.mark.parametrize("case", ["tiny", "mcu_cnn-train", "mcu_cnn-infer"])
def test_instruction_counts_of_qemu_plugin_equal_unicorn(case, bundled):
    """Two engines count the same instructions: the tiny MLP (a training step counted, then predictions)
    and mcu_cnn int16 with the DSP paths, a training step (batch 1) and an inference in regions of their own."""
    if case == "tiny":
        conv = convert(Model(TINY, "default", 16, seed=3), batch=4, train=True, name="uc")
        data, n, size = Synthetic((64,)), 4, 64
    else:
        conv = convert(pretrained("mcu_cnn", 16), batch=8, train=True, name="uccnn")
        data, n, size = bundled, 1, 784
    s = Session(size)
    s.prof(2 if case == "mcu_cnn-infer" else 1)
    if case != "mcu_cnn-infer":
        s.train(data.x_train[:n], data.y_train[:n])
    if case != "mcu_cnn-train":
        s.predict(data.x_test[:1 if case == "mcu_cnn-infer" else 2])
    s.prof(0)
    q, u = _qemu_and_unicorn(conv, s)
    assert q.insns_region and q.insns_region == u.insns_region and q.regions == u.regions
    assert q.regions == 1
    assert q.insns_total == u.insns_total and q.stdout == u.stdout
    if case == "mcu_cnn-train":
        assert q.insns_region > 1_000_000       # a real training step, not an empty region


@pytest.mark.parametrize("target", ["m4", "rv32imc"])
def test_report_measures_memory_and_instructions(bundled, target):
    model = Model(preset("mcu_cnn"), "default", 16, seed=0)
    r = report(model, target, 8, bundled, steps=1, predictions=2, per_layer=False, name="rep")
    assert r["static_ram_bytes"] >= r["model_ram_bytes"] > 0 and 0 < r["stack_bytes"] < 8192
    assert r["total_ram_bytes"] <= 256 * 1024  # on-device training of the MCU CNN, int16, batch 8
    # a real step and inference, not an empty region: at most two MACs an instruction (SMLAD) of those
    # executed (a fused 2x2 pool skips the conv positions it drops, docs/codegen.md: conv2's 13 of 49)
    assert r["insns_per_train_step"] > r["train_macs"] > 0
    assert r["insns_per_inference"] > r["infer_macs_executed"] // 2 > 0 and r["infer_macs_executed"] < r["infer_macs"]
    assert r["insns_per_mac_infer_executed"] == round(r["insns_per_inference"] / r["infer_macs_executed"], 3)
    assert f"{r['infer_macs_executed']} executed" in report_text(r)
    assert r["flash_bytes"] > r["weight_bytes"]


def test_unknown_target_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown target 'm9'"):
        get_target("m9")


def _embedded_case():
    """A tiny MLP, its converted harness and a session of 3 training steps, 10 predictions and a weight dump."""
    model = Model(TINY, "default", 16, seed=4)
    data = Synthetic((64,))
    conv = convert(model, batch=4, train=True, name="emb")
    s = Session(64)
    for i in range(3):
        s.train(data.x_train[i * 4:(i + 1) * 4], data.y_train[i * 4:(i + 1) * 4])
        model.train_step(data.x_train[i * 4:(i + 1) * 4], data.y_train[i * 4:(i + 1) * 4], 512)
    s.predict(data.x_test[:10])
    s.weights()
    return model, data, conv, s


def test_embedded_transport_over_uart_matches_python():
    """The Renode/board transport (commands compiled in, results as hex on the UART), exercised on QEMU."""
    model, data, conv, s = _embedded_case()
    r = run_mcu(conv, s, "m4", transport="embedded")
    assert r.build.io == "uart"
    weights, rng, _ = r.results[-1]
    for k, w in model.weights.items():
        np.testing.assert_array_equal(weights[k], w, err_msg=k)
    np.testing.assert_array_equal(r.results[-2][0], model.predict_scores(data.x_test[:10]))


def test_ram_result_buffer_spills_to_the_uart_and_decodes_like_the_uart_stream():
    """Renode's transport keeps the results in a RAM buffer, read out after the run; a buffer smaller than the
    results spills to the UART each time it fills.  UART spill + what stays in RAM (read out of Unicorn's memory
    the way harness.robot reads Renode's) is the UART transport's byte stream, for a buffer sized by
    renode.session_work (no spill) and for one of 40 bytes (many spills, not on a 32-byte line boundary)."""
    from nitro_mcu.device.elf import symbol_address
    from nitro_mcu.device.renode import renode_results, session_work
    from nitro_mcu.device.unicorn import run_unicorn

    _, _, conv, s = _embedded_case()
    want = parse_console_results(run_mcu(conv, s, "m4", transport="embedded").run.stdout)
    assert session_work(conv, s)[1] == len(want) > 1000
    for size, spills in ((len(want), False), (40, True)):
        b = build_mcu(conv, "m4", None, io="uart", embedded_cmd=s.to_bytes(), res_ram=size)
        buf, fill = symbol_address(b.elf, "nitro_res_ram"), symbol_address(b.elf, "nitro_res_fill")
        ram = []
        r = run_unicorn(b.elf, "m4", at_exit=lambda read: ram.append(read(buf, int.from_bytes(read(fill, 4),
                                                                                              "little"))))
        r.ram_results = ram[0]
        assert ("RES " in r.stdout) == spills and 0 < len(r.ram_results) <= size
        assert renode_results(r) == want


def test_renode_harness_suite_passes_a_robot_dry_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    renode = Path(__file__).resolve().parents[1] / "renode"
    proc = subprocess.run([sys.executable, "-m", "robot", "--dryrun", "--output", "NONE", "--report", "NONE", "--log",
                           "NONE", "--variable", f"RENODEKEYWORDS:{renode / 'stub_keywords.robot'}",
                           str(renode / "harness.robot")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "1 passed, 0 failed" in proc.stdout, proc.stdout


def test_renode_emulator_without_renode_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))        # no renode-test, whether or not this machine has one
    with pytest.raises(HarnessError, match="Renode is not installed"):
        verify(Model(TINY, "default", 16), Synthetic((64,)), "m4", steps=1, batch=4, predictions=1,
               emulator="renode")


NO_RENODE = "renode-test is not on PATH (Renode not installed: see renode/README.md); Renode cells skipped"
needs_renode = pytest.mark.skipif(shutil.which("renode-test") is None, reason=NO_RENODE)

# The regression matrix on Renode: every core Renode models (its own CPU models, the QEMU machines' memory maps
# and UARTs), training cells only (they also predict 100 images): every tensor moves, bit-exact.  int16 on the
# DSP cores (m4, m7, m33) takes the SMLAD paths; mcu_cnn's max-pool there takes SSUB8 + SEL, which Renode 1.15.3
# emulates wrongly (tests/test_firmware_infra.py::test_ssub8_sel_lane_maximum_follows_the_arm_arm_on_renode), so
# those cells are expected to fail until Renode is fixed (strict: a pass fails them, to be noticed).
RENODE_SSUB8_BUG = pytest.mark.xfail(strict=True, raises=AssertionError,
                                     reason="Renode 1.15.3 mis-sets SSUB8's GE flags: the DSP max-pool differs")
RENODE_MATRIX = [("m3", "mlp1", 32), ("m3", "mcu_cnn", 16), ("m4", "mlp1", 32), ("m4", "mlp1", 16),
                 ("m7", "mlp1", 32), ("m7", "mlp1", 16), ("m33", "mlp1", 32), ("m33", "mlp1", 16),
                 *(pytest.param(t, "mcu_cnn", 16, marks=RENODE_SSUB8_BUG) for t in ("m4", "m7", "m33"))]


@needs_renode
@pytest.mark.parametrize("target,preset_name,bits", RENODE_MATRIX)
def test_renode_trains_bit_exactly_like_python(bundled, target, preset_name, bits):
    rep = verify(pretrained(preset_name, bits), bundled, target, steps=K_STEPS, batch=8, predictions=100,
                 lr_schedule=LR_CHANGE, emulator="renode", name=f"ren{preset_name}{bits}")
    _check(rep, "train")
    _check_scores(rep)


def _check_scores(rep):
    assert rep.predictions == 100 and rep.scores_equal and rep.classes_equal
    assert rep.device_accuracy_bp >= MIN_ACCURACY_BP, rep.device_accuracy_bp


@needs_renode
def test_renode_m0_trains_bit_exactly_like_python():
    rep = verify(Model(TINY, "default", 16, seed=3), Synthetic((64,)), "m0", steps=K_STEPS, batch=4,
                 predictions=10, emulator="renode", name="rentiny")
    assert rep.passed, rep.problem()
    assert all(0 < t.changed == t.changed_device for t in rep.tensors)


@needs_renode
def test_renode_real_board_stm32f4_discovery_trains_bit_exactly(bundled):
    """Renode's own STM32F4 Discovery description (STM32F407VG, 128 KiB SRAM; through
    renode/stm32f4_discovery_kit_offline.repl), output through its real USART2 model: an MNIST MLP that fits the
    board's RAM, int16 (the SMLAD paths), with dropout (the PRNG on the device)."""
    rep = verify(pretrained("soak_mlp", 16), bundled, "stm32f4-discovery", steps=K_STEPS, batch=8,
                 predictions=100, lr_schedule=LR_CHANGE, emulator="renode", name="renf4")
    _check(rep, "train")
    _check_scores(rep)


@needs_renode
def test_renode_instruction_counter_agrees_with_the_qemu_plugin(bundled):
    """Renode's ExecutedInstructions and the QEMU plugin count the same firmware to within a few instructions
    (the final semihosting exit differs), and Renode's results read out of RAM equal QEMU's over the UART."""
    r = report(pretrained("mlp1", 32), "m4", 8, bundled, steps=2, predictions=5, per_layer=False,
               emulator="renode")["renode"]
    assert r["results_equal"] is True
    assert r["insns_total"] > 1_000_000 and abs(r["difference"]) <= 4, r       # measured: 1 (the final bkpt)


@pytest.mark.parametrize("target,preset_name", [("m4", "mlp1"), ("m4", "mcu_cnn"), ("m3", "mlp1"), ("m3", "mcu_cnn")])
def test_device_is_exact_from_grown_weights_and_partial_batches(bundled, target, preset_name):
    """The kernels' slow paths (deltas beyond 2^15, gradients beyond int32) and batches below the maximum,
    on a DSP core (M4) and on the plain-C path (M3)."""
    model = grow(Model(preset(preset_name), "default", 16, seed=5), seed=6)
    conv = convert(copy.deepcopy(model), batch=8, train=True, name=f"grown_{preset_name}")
    s = Session(int(np.prod(model.input_shape)))
    for i, b in enumerate((8, 5, 7)):
        x, y = bundled.x_train[8 * i:8 * i + b], bundled.y_train[8 * i:8 * i + b]
        s.train(x, y)
        model.train_step(x, y, model.spec["lr_inv"])
    s.weights()
    dev_weights = run_mcu(conv, s, target).results[-1].weights
    for name, w in model.weights.items():
        np.testing.assert_array_equal(dev_weights[name], w, err_msg=name)


def _cli_verify(args, tmp_path, capsys):
    from nitro_mcu import cli

    out = tmp_path / "v.json"
    rc = cli.main(["verify", *map(str, args), "--target", "m4", "--json", str(out)])
    text = capsys.readouterr().out
    return rc, text, json.loads(out.read_text())


def _every_tensor_moved(v):
    assert v["verdict"] == "bit-exact" and v["still"] == [], v["problem"]
    for t in v["tensors"]:
        assert t["trainable"] and 0 < t["changed"] == t["changed_device"], t


@pytest.mark.parametrize("preset_name", ["mlp1", "mcu_cnn"])
def test_verify_proves_a_fresh_preset_with_every_tensor_moved(preset_name, tmp_path, capsys):
    """The fresh preset's own lr_inv leaves a tensor still in 20 steps; the proof run says so, takes a smaller
    lr_inv chosen in Python, and passes with every tensor moved on the device and in Python."""
    rc, text, v = _cli_verify([preset_name], tmp_path, capsys)
    assert rc == 0, text
    _every_tensor_moved(v)
    c = v["lr_choice"]
    assert c["how"] == "smaller" and c["lr_inv"] < c["model_lr_inv"] == 512 and c["still_at_model"], c
    assert v["lr_inv"] == {"device": c["lr_inv"], "python": c["lr_inv"]}
    assert f"proof run: lr_inv {c['lr_inv']} instead of the model's 512" in text


def test_verify_proves_a_json_description_and_a_one_epoch_model(bundled, tmp_path, capsys):
    import nitro_mcu as nm

    desc = tmp_path / "small.json"
    desc.write_text(json.dumps(dict(kind="mlp", input_shape=[1, 28, 28], num_classes=10, hidden=[48, 24])))
    rc, text, v = _cli_verify([desc], tmp_path, capsys)
    assert rc == 0, text
    _every_tensor_moved(v)
    model = nm.build("mcu_cnn", seed=0)
    hist = nm.train(model, bundled, epochs=1, batch_size=64, progress=False)
    path = nm.save(model, tmp_path / "one.nitro", data=bundled, history=hist)
    rc, text, v = _cli_verify([path], tmp_path, capsys)
    assert rc == 0, text
    _every_tensor_moved(v)
    assert "proof run: lr_inv" in text
