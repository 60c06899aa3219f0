"""Power-loss sweeps of the checkpoint code and its costs on the Cortex-M4 (docs/checkpoint.md).

Host: every program/erase operation of a save, every tear; then the same sweep on builds with one defence removed
(NITRO_CKPT_ABLATE_*: commit order, CRC check, sequence number), on a deterministic sample of the operations
(--ablation-stride).  M4 (QEMU mps2-an386): --cuts instruction counts spread over a save, intact and without the
sequence number.  Also the checkpoint code's static RAM, flash and stack from the firmware ELF and a run, and the
RAM buffer the storage HAL needs with --sector-size sectors: one program page now, one erase unit before.
Usage: python benchmarks/powerloss.py [--model mcu_cnn] [--weights int16] [--page-size 256]
       [--sector-size 131072] [--cuts 100] [--ablation-stride 16] [--out benchmarks/results/powerloss_mcu_cnn.md]
"""
import argparse
import copy
import subprocess
import time
from pathlib import Path

from nitro_mcu import api, checkpoint as ck
from nitro_mcu.codegen import convert
from nitro_mcu.device.flashfw import FlashSession, build_flash_mcu, run_flash_mcu
from nitro_mcu.device.flashsim import TEARS
from nitro_mcu.device.powerloss import ABLATIONS, sweep_host, sweep_mcu, training_batches
from nitro_mcu.device.toolchain import tool
from nitro_mcu.fileio import atomic_write


def symbols(elf) -> dict:
    """name -> (size, nm type letter) of the ELF's sized symbols."""
    out = subprocess.run([tool("arm-none-eabi-nm"), "-S", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    return {p[3]: (int(p[1], 16), p[2]) for p in (line.split() for line in out.splitlines()) if len(p) == 4}


def code_sizes(elf) -> dict:
    """Bytes of the checkpoint code's symbols (ckpt_*, train_steps, <name>_ckpt_*) by RAM / flash."""
    sizes = {"ram": 0, "flash": 0}
    for name, (size, kind) in symbols(elf).items():
        if "ckpt" in name or name == "train_steps":
            sizes["ram" if kind in "bBdD" else "flash"] += size
    return sizes


def outcome(r) -> str:
    return (f"{r.cuts} cuts: {r.recovered} recovered exactly ({r.old} old, {r.new} new), {r.corrupt} corrupt, "
            f"{r.lost} lost" + (f", {r.diverged} diverged" if r.diverged else "")
            + (f"; uninterrupted run wrong ({r.setup[0]})" if r.setup else ""))


def failing_tears(r) -> str:
    seen = {}
    for f in r.failures:
        key = f.split("(")[1].split(")")[0] if "(" in f else "instruction count"
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in seen.items()) if r.lost + r.corrupt else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mcu_cnn")
    ap.add_argument("--weights", type=int, default=16)
    ap.add_argument("--page-size", type=int, default=256)
    ap.add_argument("--sector-size", type=int, default=None, help="erase unit (default: the page size)")
    ap.add_argument("--cuts", type=int, default=100)
    ap.add_argument("--ablation-stride", type=int, default=16)
    ap.add_argument("--ablations-only", action="store_true", help="only the host sweeps of the ablated builds")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    sector = ck.check_geometry(a.page_size, a.sector_size)
    model = api.build(a.model, "default", a.weights, seed=0)
    data = api.load_data("bundled", 0)
    batches = training_batches(data, 8)

    t0 = time.perf_counter()
    ablated = {}
    for ab in ABLATIONS:
        ablated[ab] = sweep_host(model, batches, a.page_size, sector_size=sector, ablate=ab, name="plabl",
                                 stride=a.ablation_stride)
        print(ablated[ab].text(), flush=True)
    abl_rows = [(f"host, without {ab.replace('_', ' ')}: every {a.ablation_stride}th operation + boundaries x "
             f"{len(TEARS)} tears", f"{outcome(r_)}; failing tears: {failing_tears(r_)}") for ab, r_ in ablated.items()]
    if a.ablations_only:
        md = (f"{a.model}, int{a.weights}, {a.page_size} B pages, {sector:,} B sectors (slots of "
              f"{ck.slot_sectors(model, sector)} sectors)\n\n| | |\n|---|---|\n"
              + "\n".join(f"| {k} | {v} |" for k, v in abl_rows) + f"\n\n{time.perf_counter() - t0:.0f} s.\n")
        print(md)
        if a.out:
            atomic_write(Path(a.out), md.encode())
        return 0
    host = sweep_host(model, batches, a.page_size, sector_size=sector)
    print(host.text(), flush=True)
    t_host = time.perf_counter() - t0
    mcu = sweep_mcu(model, batches, "m4", a.page_size, a.cuts, sector_size=sector)
    print(mcu.text(), flush=True)
    mcu_seq = sweep_mcu(model, batches, "m4", a.page_size, 4, sector_size=sector, ablate="seq", name="plmcuabl")
    print(mcu_seq.text(), flush=True)

    conv = convert(copy.deepcopy(model), batch=8, train=True, name="plmcu")
    fw = build_flash_mcu(conv, "m4", a.page_size, ram_only=True, sector=sector)
    # the earlier interface had one size for program and erase unit: its buffer was a whole sector
    before = build_flash_mcu(conv, "m4", sector, ram_only=True, sector=sector)
    buf_now, buf_before = symbols(fw.elf)["flash_page"][0], symbols(before.elf)["flash_page"][0]
    s = FlashSession(1)
    s.load()
    s.save()
    s.export()
    r = run_flash_mcu(fw, s, b"\xff" * ck.region_bytes(model, sector))
    sizes = code_sizes(fw.elf)
    c = ck.size(model)
    n_ops = host.save_ops["program"] + host.save_ops["erase"]
    rows = [
        ("model", f"{a.model}, int{a.weights} weights, {ck.num_weights(model)} weights"),
        ("checkpoint", f"{c:,} B ({ck.HEADER_BYTES} B header, {c - ck.HEADER_BYTES - 4:,} B weights and padding, "
                       f"4 B CRC)"),
        ("flash", f"{a.page_size} B program pages, {sector:,} B sectors; region {ck.region_bytes(model, sector):,} B: "
                  f"two slots of {ck.slot_sectors(model, sector)} sector(s)"),
        (f"host, intact: every operation ({n_ops}) x {len(TEARS)} tears ({', '.join(TEARS)})", outcome(host)),
        *abl_rows,
        ("M4, intact: cuts at instruction counts over a save", outcome(mcu)),
        ("M4, without sequence number", outcome(mcu_seq)),
        ("M4: one save", f"{mcu.save_insns:,} instructions; {mcu.save_ops['erases']} erases, "
                         f"{mcu.save_ops['programs']} programs, {mcu.save_ops['reads']} reads"),
        ("M4: one load", f"{mcu.load_insns:,} instructions; {mcu.load_ops['reads']} reads"),
        ("RAM buffer of the storage HAL", f"{buf_now:,} B now (one program page); {buf_before:,} B with the earlier "
                                          f"interface (one erase unit)"),
        ("extra RAM for saving", f"that buffer + {sizes['ram']} B static; stack high-water of a load + save + export "
                                 f"run {r.stack} B"),
        ("checkpoint code in flash", f"{sizes['flash']:,} B"),
    ]
    md = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    md += (f"\nHost sweeps {t_host:.0f} s, M4 sweeps {time.perf_counter() - t0 - t_host:.0f} s "
           f"(a loaded shared machine).\n")
    print(md)
    if a.out:
        atomic_write(Path(a.out), md.encode())
    ok = host.ok and mcu.ok and not any(r_.ok for r_ in ablated.values()) and not mcu_seq.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
