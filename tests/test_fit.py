"""``nitro-mcu fit``: every listed part answers with the plan's RAM and flash of each trainable tail, instructions
counted on its emulated core, a time estimate from its clock and CPI range, and which tails fit."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from device_cases import TINY

import nitro_mcu as nm
from nitro_mcu.cli import main
from nitro_mcu.codegen.cost import tail_ram
from nitro_mcu.device.parts import CPI_TENTHS, PARTS
from nitro_mcu.device.targets import TARGETS

REPO = Path(__file__).resolve().parents[1]
# the datasheets' figures (device/parts.py cites them): name -> (core target, MHz, RAM KiB, flash KiB)
DATASHEETS = {"STM32F405": ("m4", 168, 192, 1024), "STM32F746": ("m7", 216, 320, 1024),
              "STM32L4R5": ("m4", 120, 640, 2048), "nRF52840": ("m4", 64, 256, 1024),
              "RP2040": ("rp2040", 133, 264, 2048), "RP2350": ("m33", 150, 520, 4096),
              "ESP32-C3": ("rv32imc", 160, 384, 4096)}


def test_the_parts_table_holds_the_datasheet_figures_and_a_core_that_is_emulated():
    assert {p.name: (p.target, p.clock_mhz, p.ram_bytes // 1024, p.flash_bytes // 1024) for p in PARTS.values()} \
        == DATASHEETS
    assert all(p.target in TARGETS and p.target in CPI_TENTHS for p in PARTS.values())
    assert all(lo < hi for lo, hi in CPI_TENTHS.values())


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    (d / "tiny.json").write_text(json.dumps(TINY))
    assert main(["fit", str(d / "tiny.json"), "--part", "all", "--json", str(d / "fit.json")]) == 0
    return json.loads((d / "fit.json").read_text())


def test_fit_answers_for_every_listed_part_with_counts_and_estimates(counted):
    tails = tail_ram(nm.build(TINY), 8)
    assert [t["label"] for t in counted["tails"]] == [t["label"] for t in tails]
    assert [t["ram_bytes"] for t in counted["tails"]] == [t["ram_bytes"] for t in tails]
    assert {p["name"] for p in counted["parts"]} == set(DATASHEETS)
    for p in counted["parts"]:
        core = counted["cores"][p["target"]]
        assert core["error"] is None, core["error"]
        steps = core["step"]
        assert set(steps) == {t["label"] for t in tails}
        assert steps["all (full training)"] > steps["output"] > core["inference"] > 0  # more trains, more work
        lo, hi = CPI_TENTHS[p["target"]]
        est = counted["estimates_ms"][p["name"]]["step"]["output"]
        assert est == pytest.approx([steps["output"] * lo / 10 / (p["clock_mhz"] * 1000),
                                     steps["output"] * hi / 10 / (p["clock_mhz"] * 1000)])


def test_fit_prints_a_table_per_part_and_whether_each_tail_fits(capsys, tmp_path):
    assert main(["fit", "mcu_cnn", "--part", "rp2040", "--no-count"]) == 0
    out = capsys.readouterr().out
    assert "RP2040: Cortex-M0+ at 133 MHz, 264 KiB RAM" in out and "ESTIMATE" in out
    rows = {t["label"]: t for t in tail_ram(nm.build("mcu_cnn"), 8)}
    for label, t in rows.items():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(label))
        ram, flash, fits = line[len("  ") + 26:].split()[:3]
        assert int(ram) == t["ram_bytes"]
        assert fits == ("yes" if t["ram_bytes"] <= 264 * 1024 and int(flash) <= 2048 * 1024 else "NO")
    assert main(["fit", "vgg8b", "--part", "nRF52840", "--no-count"]) == 0  # a model too big for 256 KiB
    out = capsys.readouterr().out
    assert re.search(r"all \(full training\)\s+\d+\s+\d+\s+NO", out)


def test_unknown_part_is_one_line_error_and_help_lists_the_parts(capsys):
    assert main(["fit", "mcu_cnn", "--part", "esp32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "esp32" in err and "STM32F405" in err and "RP2350" in err
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert all(name in out for name in DATASHEETS)


def test_fit_of_a_model_beyond_the_emulated_board_prints_the_table_and_why_it_was_not_counted(capsys, tmp_path):
    big = tmp_path / "big.json"  # int32 weights: 4.6 MB, beyond the 4 MiB flash of the emulated m4 board
    big.write_text(json.dumps({"kind": "mlp", "input_shape": [96], "num_classes": 4, "hidden": [1024, 1024]}))
    assert main(["fit", str(big), "--part", "STM32F405"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"all \(full training\)\s+\d+\s+\d+\s+NO\s+-\s+-", out)
    assert "not counted on the emulated m4" in out and "bytes of flash" in out
    assert "--target" not in out  # an option of verify/run, not of fit
    assert "nothing fits the STM32F405: int16 weights (--weights int16), a smaller --batch" in out


def test_fit_of_mcu_cnn_on_the_rp2040_counts_every_tail_on_the_emulated_rp2040(capsys):
    """docs/fit.md's example: every RP2040 row is counted on rp2040 (the 16 KiB m0 board held none)."""
    assert main(["fit", "mcu_cnn", "--part", "RP2040"]) == 0
    out = capsys.readouterr().out
    assert "counted on the emulated rp2040" in out and "not counted" not in out
    full = next(ln for ln in out.splitlines() if ln.strip().startswith("all (full training)")).split()
    assert full[5] == "yes" and int(full[6]) > 0
    example = next(ln for ln in (REPO / "docs" / "fit.md").read_text().splitlines() if ln.startswith("RP2040: "))
    assert re.search(r"all \(full training\)\s+\d+ insns", example), example   # counted there too
