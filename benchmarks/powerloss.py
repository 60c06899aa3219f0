"""Power-loss sweeps of the checkpoint code and its costs on the Cortex-M4 (docs/checkpoint.md).

Host: every program/erase operation of a save, every tear.  M4 (QEMU mps2-an386): --cuts instruction counts
spread over a save.  Also the checkpoint code's static RAM, flash and stack from the firmware ELF and a run.
Usage: python benchmarks/powerloss.py [--model mcu_cnn] [--weights int16] [--page-size 256] [--cuts 100]
       [--out benchmarks/results/powerloss_mcu_cnn.md]
"""
import argparse
import copy
import subprocess
import time
from pathlib import Path

from nitro_mcu import api, checkpoint as ck
from nitro_mcu.codegen import convert
from nitro_mcu.device.flashfw import FlashSession, build_flash_mcu, run_flash_mcu
from nitro_mcu.device.powerloss import sweep_host, sweep_mcu, training_batches
from nitro_mcu.device.toolchain import tool
from nitro_mcu.fileio import atomic_write


def code_sizes(elf) -> dict:
    """Bytes of the checkpoint code's symbols (ckpt_*, train_steps, <name>_ckpt_*) by RAM / flash."""
    out = subprocess.run([tool("arm-none-eabi-nm"), "-S", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sizes = {"ram": 0, "flash": 0}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and ("ckpt" in parts[3] or parts[3] == "train_steps"):
            sizes["ram" if parts[2] in "bBdD" else "flash"] += int(parts[1], 16)
    return sizes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mcu_cnn")
    ap.add_argument("--weights", type=int, default=16)
    ap.add_argument("--page-size", type=int, default=256)
    ap.add_argument("--cuts", type=int, default=100)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    model = api.build(a.model, "default", a.weights, seed=0)
    data = api.load_data("bundled", 0)
    batches = training_batches(data, 8)

    t0 = time.perf_counter()
    host = sweep_host(model, batches, a.page_size)
    print(host.text(), flush=True)
    mcu = sweep_mcu(model, batches, "m4", a.page_size, a.cuts)
    print(mcu.text(), flush=True)

    conv = convert(copy.deepcopy(model), batch=8, train=True, name="plmcu")
    fw = build_flash_mcu(conv, "m4", a.page_size, ram_only=True)
    s = FlashSession(1)
    s.load()
    s.save()
    s.export()
    r = run_flash_mcu(fw, s, b"\xff" * ck.region_bytes(model, a.page_size))
    sizes = code_sizes(fw.elf)
    c = ck.size(model)
    rows = [
        ("model", f"{a.model}, int{a.weights} weights, {ck.num_weights(model)} weights"),
        ("checkpoint", f"{c:,} B ({ck.HEADER_BYTES} B header, {c - ck.HEADER_BYTES - 4:,} B weights and padding, "
                       f"4 B CRC)"),
        ("flash region", f"{ck.region_bytes(model, a.page_size):,} B: two slots of {ck.slot_sectors(model, a.page_size)}"
                         f" pages of {a.page_size} B"),
        ("host: cuts (every operation x half, bits, after)", f"{host.cuts}: {host.recovered} recovered exactly "
                                                             f"({host.old} old, {host.new} new), {host.corrupt} corrupt"),
        ("M4: cuts (instruction counts over a save)", f"{mcu.cuts}: {mcu.recovered} recovered exactly "
                                                      f"({mcu.old} old, {mcu.new} new), {mcu.corrupt} corrupt"),
        ("M4: one save", f"{mcu.save_insns:,} instructions; {mcu.save_ops['erases']} erases, "
                         f"{mcu.save_ops['programs']} programs, {mcu.save_ops['reads']} reads"),
        ("M4: one load", f"{mcu.load_insns:,} instructions; {mcu.load_ops['reads']} reads"),
        ("extra RAM for saving", f"one page buffer ({a.page_size} B, the caller's) + {sizes['ram']} B static; "
                                 f"stack high-water of a load + save + export run {r.stack} B"),
        ("checkpoint code in flash", f"{sizes['flash']:,} B"),
    ]
    md = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"
    md += f"\n{time.perf_counter() - t0:.0f} s in all.\n"
    print(md)
    if a.out:
        atomic_write(Path(a.out), md.encode())
    return 0 if host.ok and mcu.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
