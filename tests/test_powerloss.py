"""Power cuts during a checkpoint save: on the host at every flash operation with every tear, in the sanitizer
build of the harness at flash write-throughs, and on the emulated Cortex-M4 and RV32IMC at instruction counts; after each,
the load must give exactly the previous or the new state, and training from it must equal Python's."""
import copy
import json

import pytest

from nitro_mcu import checkpoint as ck
from nitro_mcu.codegen import convert
from nitro_mcu.device import flashfw
from nitro_mcu.device.flashsim import NorFlash
from nitro_mcu.device.powerloss import sweep_host, sweep_mcu
from nitro_mcu.trainer.network import Model

from test_checkpoint import TINY, batches
from test_cli import run_proc

PAGE = 64


def test_host_sweep_cuts_every_operation_with_every_tear_and_always_recovers():
    model = Model(TINY, "default", 16, seed=3)
    rep = sweep_host(model, batches(), PAGE)
    ops = rep.save_ops["program"] + rep.save_ops["erase"]
    assert rep.cuts == 3 * ops and ops == 2 * ck.slot_pages(model, PAGE) + 1      # erase + program each page, commit
    assert rep.ok and rep.recovered == rep.cuts and rep.corrupt == rep.lost == rep.diverged == 0, rep.text()
    assert rep.old > 0 and rep.new > 0 and not rep.violations
    assert rep.line() == f"power-loss: {rep.cuts} cuts, {rep.cuts} recovered exactly, 0 corrupt"
    wide = sweep_host(Model(TINY, "reference", 32, seed=4), batches(seed=2), 128, tears=("bits",), name="plh32")
    assert wide.ok, wide.text()


class WipesTheOtherSlot(NorFlash):
    """A faulty flash: losing power also erases the first page of slot 1 (which holds the previous checkpoint)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.on_cut = self.wipe

    def wipe(self, flash):
        first = len(flash.mem) // 2
        flash.mem[first:first + flash.page_size] = b"\xff" * flash.page_size


def test_the_sweep_notices_a_lost_checkpoint(monkeypatch):
    import nitro_mcu.device.powerloss as pl

    monkeypatch.setattr(pl, "NorFlash", WipesTheOtherSlot)
    rep = sweep_host(Model(TINY, "default", 16, seed=3), batches(), PAGE, tears=("half",))
    assert not rep.ok and rep.lost == rep.cuts - rep.new > 0 and "lost" in rep.line()


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_harness_flash_code_is_sanitizer_clean_through_cuts_at_write_throughs(tmp_path, cc):
    model = Model(TINY, "default", 16, seed=3)
    conv = convert(copy.deepcopy(model), batch=4, train=True, name="plsan")
    exe = flashfw.build_flash_host(conv, tmp_path, PAGE, cc=cc)
    py = copy.deepcopy(model)
    b = batches()
    py.train_step(*b[0], 512)
    old = ck.encode(py, 1)
    base = ck.flash_image(model, PAGE, [ck.with_seq(old, 1)])
    py.train_step(*b[1], 512)
    new = ck.encode(py, 2)

    def session(cut=None):
        s = flashfw.FlashSession(64)
        s.load()
        s.train(*b[1])
        if cut is not None:
            s.cut(cut)
        s.save()
        s.export()
        return s

    full = flashfw.run_flash_host(exe, session(), base)
    assert full.results[0]["rc"] == 0 and full.results[0]["steps"] == 1 and full.results[3] == new
    stages = full.results[2]["stages"]
    assert stages == flashfw.save_stages(model, PAGE) == ck.slot_pages(model, PAGE) * PAGE // 4 + ck.size(model) // 2 + 2
    reboot = flashfw.FlashSession(64)
    reboot.load()
    reboot.export()
    seen = set()
    for k in sorted({0, 1, stages // 3, stages // 2, stages - 2, stages - 1}):
        cut = flashfw.run_flash_host(exe, session(k), base)
        assert cut.cut
        res = flashfw.run_flash_host(exe, reboot, cut.flash).results
        assert res[0]["rc"] == 0 and res[1] in (old, new), k
        seen.add(res[1] == new)
    assert seen == {False}          # the commit is the last write-through: every cut before it keeps the old


@pytest.mark.parametrize("target", ["m4", "rv32imc"])
def test_mcu_sweep_cuts_at_instruction_counts_and_always_recovers(target):
    model = Model(TINY, "default", 16, seed=3)
    rep = sweep_mcu(model, batches(), target, PAGE, cuts=8)
    assert rep.ok and rep.cuts == 8 and rep.old > 0 and rep.new > 0, rep.text()
    assert rep.save_insns > 0 and rep.load_insns > 0 and rep.save_ops["erases"] == ck.slot_pages(model, PAGE)


def test_plugin_limit_cuts_before_the_first_region_instruction_and_leaves_flash_alone():
    model = Model(TINY, "default", 16, seed=3)
    conv = convert(copy.deepcopy(model), batch=4, train=True, name="plmcu")
    fw = flashfw.build_flash_mcu(conv, "m4", PAGE)
    base = ck.flash_image(model, PAGE, [ck.encode(model, 0, seq=1)])
    s = flashfw.FlashSession(64)
    s.load()
    s.prof(3)
    s.save()
    r = flashfw.run_flash_mcu(fw, s, base, limit=0)
    assert r.cut and r.results is None and r.flash == base


def test_powerloss_cli_prints_the_summary_line(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({"kind": "mlp", "input_shape": [784], "num_classes": 10, "hidden": [8]}))
    r = run_proc("powerloss", str(spec), "--target", "host", "--weights", "int16", "--page-size", "1024")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    cuts = int(last.split()[1])
    assert cuts > 0 and last == f"power-loss: {cuts} cuts, {cuts} recovered exactly, 0 corrupt"
    bad = run_proc("powerloss", str(spec), "--page-size", "30")
    assert bad.returncode == 2 and bad.stderr.startswith("nitro-mcu: error: page size") and "Traceback" not in bad.stderr
    part = run_proc("powerloss", str(spec), "--target", "stm32f405")
    assert part.returncode == 2 and part.stdout == "" and "Traceback" not in part.stderr
    assert part.stderr.startswith("nitro-mcu: error: target 'stm32f405' has no semihosting") and "rv32imc" in part.stderr
