"""Power cuts during a checkpoint save: on the host at every flash operation with every tear, in the sanitizer
build of the harness at flash write-throughs, and on the emulated Cortex-M4 and RV32IMC at instruction counts; after
each, the load must give exactly the previous or the new state, and training from it must equal Python's.  With one
defence removed (a test build's NITRO_CKPT_ABLATE_* switch) the same sweep must report lost or corrupt states;
large-sector flash (128 KB sectors, 256-byte pages) is swept on the host and on the M4."""
import copy
import json
import zlib

import pytest

from nitro_mcu import checkpoint as ck
from nitro_mcu.codegen import convert
from nitro_mcu.device import flashfw
from nitro_mcu.device.flashsim import TEARS, NorFlash, crc_blind_bits
from nitro_mcu.device.powerloss import ABLATIONS, sweep_host, sweep_mcu
from nitro_mcu.trainer.network import Model

from test_checkpoint import TINY, batches
from test_cli import run_proc

PAGE = 64
BIG_PAGE, BIG_SECTOR = 256, 128 * 1024      # an STM32F4-class part: 128 KB sectors, programmed 256 B at a time


def test_host_sweep_cuts_every_operation_with_every_tear_and_always_recovers():
    model = Model(TINY, "default", 16, seed=3)
    rep = sweep_host(model, batches(), PAGE)
    ops = rep.save_ops["program"] + rep.save_ops["erase"]
    assert rep.cuts == len(TEARS) * ops and ops == 2 * ck.slot_sectors(model, PAGE) + 1   # erase + program each page, commit
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


@pytest.mark.parametrize("cc,page,sector", [("gcc", PAGE, PAGE), ("clang", PAGE, PAGE), ("gcc", BIG_PAGE, BIG_SECTOR)])
def test_harness_flash_code_is_sanitizer_clean_through_cuts_at_write_throughs(tmp_path, cc, page, sector):
    model = Model(TINY, "default", 16, seed=3)
    conv = convert(copy.deepcopy(model), batch=4, train=True, name="plsan")
    exe = flashfw.build_flash_host(conv, tmp_path, page, cc=cc, sector=sector)
    py = copy.deepcopy(model)
    b = batches()
    py.train_step(*b[0], 512)
    old = ck.encode(py, 1)
    base = ck.flash_image(model, sector, [ck.with_seq(old, 1)])
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
    erase_step = 4 if sector == page else page                      # a word, or a page of a larger sector
    assert stages == flashfw.save_stages(model, page, sector) == \
        ck.slot_bytes(model, sector) // erase_step + ck.size(model) // 2 + 2
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


def test_host_sweep_on_128k_sectors_with_256_byte_pages_recovers_every_cut():
    model = Model(TINY, "default", 16, seed=3)
    rep = sweep_host(model, batches(), BIG_PAGE, sector_size=BIG_SECTOR)
    assert rep.region_bytes == 2 * BIG_SECTOR and rep.save_ops["erase"] == 1     # one sector per slot
    assert rep.save_ops["program"] == -(-ck.size(model) // BIG_PAGE) + 1          # page by page, then the commit
    assert rep.cuts == len(TEARS) * (rep.save_ops["program"] + 1)
    assert rep.ok and rep.old > 0 and rep.new > 0 and not rep.violations, rep.text()


@pytest.mark.parametrize("ablate", ABLATIONS)
def test_the_sweep_reports_lost_or_corrupt_state_when_any_one_defence_is_removed(ablate):
    """The intact build recovers every cut of this very sweep (the test above); without the commit order, the CRC
    check or the sequence number it must not."""
    rep = sweep_host(Model(TINY, "default", 16, seed=3), batches(), BIG_PAGE, sector_size=BIG_SECTOR, ablate=ablate,
                     name="plabl")
    assert rep.build == ablate and rep.cuts == len(TEARS) * (rep.save_ops["program"] + 1)
    assert not rep.ok and rep.lost + rep.corrupt > 0 and rep.diverged == 0, rep.text()


def test_without_the_early_and_blind_tears_a_missing_crc_check_or_commit_order_goes_unseen():
    """Why the adversarial tears exist: with half/bits/after alone each of the two defences covers the other."""
    model = Model(TINY, "default", 16, seed=3)
    for ablate in ("commit_order", "crc"):
        rep = sweep_host(model, batches(), BIG_PAGE, sector_size=BIG_SECTOR, ablate=ablate, name="plabl",
                         tears=("half", "bits", "after"))
        assert rep.ok and rep.recovered == rep.cuts > 0, ablate


def test_ablation_switches_refuse_to_build_without_test_hooks(tmp_path):
    import subprocess

    conv = convert(Model(TINY, "default", 16), batch=4, train=True, name="plsw")
    conv.save(file=tmp_path)
    for ablate in ABLATIONS:
        r = subprocess.run(["gcc", "-std=c11", "-c", "-o", str(tmp_path / "x.o"), f"-DNITRO_CKPT_ABLATE_{ablate.upper()}",
                            str(tmp_path / "plsw.c")], capture_output=True, text=True)
        assert r.returncode != 0 and "test builds only" in r.stderr, ablate


def test_crc_blind_tear_leaves_the_crc_of_any_message_around_it_unchanged():
    data = bytes(range(7, 7 + 60))
    flip = crc_blind_bits(data)
    assert flip and all(not data[p // 8] >> (p % 8) & 1 for p in flip)      # only bits still to be programmed
    torn = bytearray(data)
    for p in flip:
        torn[p // 8] |= 1 << (p % 8)
    for pre, post in ((b"", b""), (b"NCKP" * 9, b"\x00" * 37)):
        assert zlib.crc32(pre + bytes(torn) + post) == zlib.crc32(pre + data + post) and bytes(torn) != data
    assert crc_blind_bits(b"\xff" * 60) == []                                 # nothing left to tear


@pytest.mark.parametrize("target", ["m4", "rv32imc"])
def test_mcu_sweep_cuts_at_instruction_counts_and_always_recovers(target):
    model = Model(TINY, "default", 16, seed=3)
    rep = sweep_mcu(model, batches(), target, PAGE, cuts=8)
    assert rep.ok and rep.cuts == 8 and rep.old > 0 and rep.new > 0, rep.text()
    assert rep.save_insns > 0 and rep.load_insns > 0 and rep.save_ops["erases"] == ck.slot_sectors(model, PAGE)


def test_m4_sweep_on_128k_sectors_recovers_and_sees_a_missing_sequence_number():
    model = Model(TINY, "default", 16, seed=3)
    rep = sweep_mcu(model, batches(), "m4", BIG_PAGE, cuts=6, sector_size=BIG_SECTOR)
    assert rep.ok and rep.cuts == 6 and rep.old > 0 and rep.new > 0, rep.text()
    assert rep.save_ops["erases"] == 1 and rep.save_ops["stages"] == flashfw.save_stages(model, BIG_PAGE, BIG_SECTOR)
    abl = sweep_mcu(model, batches(), "m4", BIG_PAGE, cuts=2, sector_size=BIG_SECTOR, ablate="seq")
    assert not abl.ok and abl.corrupt + abl.lost == abl.cuts == 2, abl.text()


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
    r = run_proc("powerloss", str(spec), "--target", "host", "--weights", "int16", "--page-size", "1024",
                 "--sector-size", "131072")
    assert r.returncode == 0, r.stderr
    assert "1024-byte pages, 131072-byte sectors" in r.stdout
    last = r.stdout.strip().splitlines()[-1]
    cuts = int(last.split()[1])
    assert cuts > 0 and last == f"power-loss: {cuts} cuts, {cuts} recovered exactly, 0 corrupt"
    bad = run_proc("powerloss", str(spec), "--page-size", "30")
    assert bad.returncode == 2 and bad.stderr.startswith("nitro-mcu: error: page size") and "Traceback" not in bad.stderr
    bad = run_proc("powerloss", str(spec), "--page-size", "256", "--sector-size", "384")
    assert bad.returncode == 2 and "sector size must be a multiple of the page size (256)" in bad.stderr
    part = run_proc("powerloss", str(spec), "--target", "stm32f405")
    assert part.returncode == 2 and part.stdout == "" and "Traceback" not in part.stderr
    assert part.stderr.startswith("nitro-mcu: error: target 'stm32f405' has no semihosting") and "rv32imc" in part.stderr
