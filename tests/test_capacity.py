"""A target that cannot fit the model is one line and exit status 2 before anything is built, with both figures
and the largest trainable tail that fits; the figures are lower bounds of what the linker places, and the tail
named does build and verify."""
from __future__ import annotations

import json
import re

import pytest
from device_cases import TINY

from nitro_mcu import api, cli
from nitro_mcu.codegen import convert
from nitro_mcu.device.capacity import check_fits, needs
from nitro_mcu.device.harness import build_mcu
from nitro_mcu.device.targets import TARGETS
from nitro_mcu.trainer.network import Model

# 784 -> 16 -> 16 -> 10: with batch 2 and int16 weights, block0's 784 x 16 weights in RAM overflow the M0's
# 16 KB, while block1 and the output layer train in a few KB
SMALL = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[16, 16])


def _cli(capsys, *args):
    rc = cli.main([*map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("cmd", ["run", "verify", "report", "powerloss"])
def test_mcu_cnn_on_the_m0_is_one_sentence_with_both_figures(cmd, capsys, monkeypatch):
    def no_build(*a, **k):
        raise AssertionError("a firmware build started")
    monkeypatch.setattr("nitro_mcu.device.firmware.build_firmware", no_build)
    rc, out, err = _cli(capsys, cmd, "mcu_cnn", "--target", "m0")
    plan = convert(api.build("mcu_cnn"), batch=8, train=True).plan
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"plan {plan.ram_bytes} " in err and "the target has 16384" in err and "m0" in err
    assert "not even the output layer alone fits" in err and "--batch" in err and "ld returned" not in err
    known = {o for act in cli.build_parser()._subparsers._group_actions[0].choices[cmd]._actions
             for o in act.option_strings}
    assert set(re.findall(r"--[a-z-]+", err)) <= known      # the hint names only options the command has


def test_the_largest_tail_that_fits_is_named_and_it_verifies(tmp_path, capsys):
    desc = tmp_path / "small.json"
    desc.write_text(json.dumps(SMALL))
    common = ["--target", "m0", "--batch", "2", "--weights", "int16"]
    rc, _, err = _cli(capsys, "run", desc, *common)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.rstrip().endswith("use --trainable block1,output"), err
    rc, out, err = _cli(capsys, "verify", desc, *common, "--trainable", "block1,output", "--predictions", "10")
    assert rc == 0 and out.rstrip().endswith("bit-exact"), out + err


def test_an_oversized_flash_says_so_and_suggests_int16_only_for_int32(capsys):
    rc, _, err = _cli(capsys, "verify", "mlp1", "--target", "m0")
    weights = 4 * sum(w.size for w in api.build("mlp1").weights.values())
    assert rc == 2 and f"need {weights} bytes of flash" in err and "262144" in err and "--weights int16" in err
    rc, _, err = _cli(capsys, "verify", "mlp1", "--target", "m0", "--weights", "int16")
    assert rc == 2 and "--weights" not in err and "of RAM" in err     # int16 fits the flash, not the RAM


@pytest.mark.parametrize("case", ["tiny_m0", "mcu_cnn_m4"])
def test_the_figures_are_lower_bounds_of_the_linked_firmware(case):
    """What the check counts is never more than what the linker places: it cannot refuse a model that fits."""
    model, batch, target = ((Model(TINY, "default", 16, seed=3), 4, "m0") if case == "tiny_m0"
                            else (api.build("mcu_cnn"), 8, "m4"))
    conv = convert(model, batch=batch, train=True, name="fit")
    check_fits(model, target, batch)
    n = needs(model, batch, target, conv.plan.ram_bytes, conv.plan.weight_bytes)
    b = build_mcu(conv, target)
    assert n["ram"] <= b.static_ram_bytes + b.stack_bytes <= TARGETS[target].ram_size
    assert n["stack"] == b.stack_bytes and n["flash"] <= b.flash_bytes


def test_a_power_loss_sweep_counts_its_emulated_flash_in_ram_and_the_tail_it_names_links(capsys, monkeypatch):
    """firmware/flash_file.c keeps the flash region in a RAM array: mlp1 (int32) trains in rv32imc's 400 KiB, but
    not beside two checkpoint slots of its weights.  One line before any build, not a linker error; the tail
    it names links, with the figures a lower bound of what the linker placed."""
    from nitro_mcu import checkpoint as ck
    from nitro_mcu.device import flashfw

    build = flashfw.build_cached
    monkeypatch.setattr(flashfw, "build_cached", lambda *a, **k: pytest.fail("a firmware build started"))
    rc, out, err = _cli(capsys, "powerloss", "mlp1", "--target", "rv32imc", "--cuts", "2")
    model = api.build("mlp1")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"emulated flash {ck.region_bytes(model, 256)})" in err and "the target has 409600" in err
    assert err.rstrip().endswith("use --trainable block1,output"), err
    monkeypatch.setattr(flashfw, "build_cached", build)
    tail = model.set_trainable(["block1", "output"])
    conv = convert(tail, batch=8, train=True, name="pltail")
    b = flashfw.build_flash_mcu(conv, "rv32imc", 256)
    n = needs(tail, 8, "rv32imc", conv.plan.ram_bytes, conv.plan.weight_bytes, flash_in_ram=ck.region_bytes(tail, 256))
    assert n["ram"] <= b.static_ram_bytes + b.stack_bytes <= TARGETS["rv32imc"].ram_size
