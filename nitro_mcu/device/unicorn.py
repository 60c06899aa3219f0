"""Unicorn cross-check for instruction counts (docs/toolchain.md §6.3).

Runs the same ELF as QEMU: loads its segments (pyelftools), maps the board's memory,
takes SP/PC from the vector table, services semihosting (``bkpt 0xAB``: WRITEC,
WRITE0, OPEN, CLOSE, READ, WRITE, FLEN, ISTTY, SEEK, ERRNO, EXIT, EXIT_EXTENDED),
counts instructions per basic block (capstone sizes each block, which counts
IT-skipped instructions like QEMU's plugin does) and honours the
``prof_start``/``prof_stop`` markers with the same convention as the plugin
(region = instructions in [prof_start, prof_stop)).

unicorn, capstone and pyelftools are imported lazily:
``pip install unicorn capstone pyelftools``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .protocol import EmulatorError, RunResult, check_exit, sentinel_status
from .targets import Target, get_target

__all__ = ["run_unicorn", "UnicornMissingError"]

SEMIHOST_BKPT = 0xBEAB          # Thumb encoding of bkpt 0xAB
EXIT_SENTINEL = "__nitro_exit__"


class UnicornMissingError(ImportError):
    pass


def _imports():
    try:
        import unicorn
        import unicorn.arm_const as arm
        import capstone
        from elftools.elf.elffile import ELFFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnicornMissingError(
            f"the Unicorn cross-check needs unicorn, capstone and pyelftools ({exc}); "
            "install them with: pip install unicorn capstone pyelftools") from None
    return unicorn, arm, capstone, ELFFile


def _page_align(lo: int, hi: int, page: int = 0x1000) -> tuple[int, int]:
    lo &= ~(page - 1)
    hi = (hi + page - 1) & ~(page - 1)
    return lo, hi - lo


def run_unicorn(elf: "str | Path", target: "str | Target" = "m4", cwd: "str | Path | None" = None,
                timeout: float = 60, *, max_insns: int = 0, check: bool = True,
                expect_status: int = 0, at_exit=None) -> RunResult:
    """Run ``elf`` on Unicorn's model of ``target``'s core; returns output and counts.

    Semihosting file paths are relative to ``cwd`` (default: the ELF's folder).  UART output
    (CMSDK or nRF51 at the target's base) is captured as well.  ``at_exit(read)``, if given, is called after the
    run with ``read(address, n) -> bytes`` on the final memory (what an emulator reads out of RAM at the end).
    With ``check`` raises EmulatorError on a fault, a timeout, a wrong exit status or a missing sentinel.
    """
    t = get_target(target)
    if not t.unicorn_cpu or not t.semihosting:
        raise ValueError(f"the Unicorn cross-check models the Cortex-M targets with semihosting, not {t.name!r}")
    unicorn, arm, capstone, ELFFile = _imports()
    elf = Path(elf).resolve()
    cwd = Path(cwd) if cwd is not None else elf.parent

    mu = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB | unicorn.UC_MODE_MCLASS)
    mu.ctl_set_cpu_model(getattr(arm, t.unicorn_cpu))

    regions = [(t.code_base, t.code_size), (t.ram_base, t.ram_size)]
    if t.psram_base is not None:
        regions.append((t.psram_base, t.psram_size))
    for base, size in regions:
        mu.mem_map(base, size)
    mu.mem_map(t.uart_base, 0x1000)
    if t.unaligned_trap:   # startup.c's CCR write, into plain memory: Unicorn (a count cross-check) does not
        mu.mem_map(0xE000E000, 0x1000)   # fault on unaligned accesses, not even on its M0 model; QEMU does

    with open(elf, "rb") as f:
        ef = ELFFile(f)
        for seg in ef.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_filesz"] == 0:
                continue
            data = seg.data()
            mu.mem_write(seg["p_paddr"], data)
        markers = {}
        symtab = ef.get_section_by_name(".symtab")
        if symtab is not None:
            for name in ("prof_start", "prof_stop"):
                syms = symtab.get_symbol_by_name(name)
                if syms:
                    markers[name] = syms[0]["st_value"] & ~1

    vt = t.code_base
    sp = int.from_bytes(mu.mem_read(vt, 4), "little")
    pc = int.from_bytes(mu.mem_read(vt + 4, 4), "little")
    mu.reg_write(arm.UC_ARM_REG_SP, sp)

    md = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)
    block_len: dict = {}
    st = {"count": 0, "region": 0, "regions": 0, "begin": None, "exit": None, "fault": None}
    out: list[str] = []
    files: dict = {}
    next_fd = [3]
    start_addr = markers.get("prof_start", -1)
    stop_addr = markers.get("prof_stop", -1)

    def on_block(uc, address, size, _ud):
        key = (address, size)
        n = block_len.get(key)
        if n is None:
            code = bytes(uc.mem_read(address, size))
            n = sum(1 for _ in md.disasm_lite(code, address))
            block_len[key] = n
        if address == start_addr:
            st["begin"] = st["count"]
        elif address == stop_addr and st["begin"] is not None:
            st["region"] += st["count"] - st["begin"]
            st["regions"] += 1
            st["begin"] = None
        st["count"] += n

    def rd32(uc, addr):
        return int.from_bytes(uc.mem_read(addr, 4), "little")

    def cstr(uc, addr, limit=4096):
        b = bytearray()
        while len(b) < limit:
            c = uc.mem_read(addr + len(b), 1)[0]
            if c == 0:
                break
            b.append(c)
        return b.decode("utf-8", "replace")

    open_modes = ["rb", "rb", "r+b", "r+b", "wb", "wb", "w+b", "w+b", "ab", "ab", "a+b", "a+b"]

    def semihost(uc, op, arg):
        if op == 0x03:                                   # SYS_WRITEC
            out.append(chr(uc.mem_read(arg, 1)[0]))
            return 0
        if op == 0x04:                                   # SYS_WRITE0
            out.append(cstr(uc, arg, 1 << 20))
            return 0
        if op == 0x01:                                   # SYS_OPEN
            path = bytes(uc.mem_read(rd32(uc, arg), rd32(uc, arg + 8))).decode()
            mode = rd32(uc, arg + 4)
            if path == ":tt":
                fd = next_fd[0]; next_fd[0] += 1
                files[fd] = "tty"
                return fd
            try:
                fh = open(Path(cwd) / path, open_modes[mode] if mode < 12 else "rb")
            except OSError:
                return 0xFFFFFFFF
            fd = next_fd[0]; next_fd[0] += 1
            files[fd] = fh
            return fd
        if op == 0x02:                                   # SYS_CLOSE
            fh = files.pop(rd32(uc, arg), None)
            if fh is None:
                return 0xFFFFFFFF
            if fh != "tty":
                fh.close()
            return 0
        if op == 0x05:                                   # SYS_WRITE -> bytes NOT written
            fd, buf, n = rd32(uc, arg), rd32(uc, arg + 4), rd32(uc, arg + 8)
            fh = files.get(fd)
            data = bytes(uc.mem_read(buf, n))
            if fh == "tty" or fd in (1, 2) and fh is None:
                out.append(data.decode("utf-8", "replace"))
                return 0
            if fh is None:
                return n
            return n - fh.write(data)
        if op == 0x06:                                   # SYS_READ -> bytes NOT read
            fd, buf, n = rd32(uc, arg), rd32(uc, arg + 4), rd32(uc, arg + 8)
            fh = files.get(fd)
            if fh is None or fh == "tty":
                return n if fh == "tty" else 0xFFFFFFFF
            data = fh.read(n)
            uc.mem_write(buf, data)
            return n - len(data)
        if op == 0x0C:                                   # SYS_FLEN
            fh = files.get(rd32(uc, arg))
            if fh is None or fh == "tty":
                return 0xFFFFFFFF
            return os.fstat(fh.fileno()).st_size
        if op == 0x09:                                   # SYS_ISTTY
            return 1 if files.get(rd32(uc, arg)) == "tty" else 0
        if op == 0x0A:                                   # SYS_SEEK
            fh = files.get(rd32(uc, arg))
            if fh is None or fh == "tty":
                return 0xFFFFFFFF
            fh.seek(rd32(uc, arg + 4))
            return 0
        if op == 0x13:                                   # SYS_ERRNO
            return 0
        if op == 0x20:                                   # SYS_EXIT_EXTENDED
            reason, code = rd32(uc, arg), rd32(uc, arg + 4)
            st["exit"] = (code if code < 0x80000000 else code - (1 << 32)) if reason == 0x20026 else 1
            uc.emu_stop()
            return 0
        if op == 0x18:                                   # SYS_EXIT (reason only on AArch32)
            st["exit"] = 0 if arg == 0x20026 else 1
            uc.emu_stop()
            return 0
        st["fault"] = f"unsupported semihosting operation 0x{op:02x}"
        uc.emu_stop()
        return 0xFFFFFFFF

    def on_intr(uc, intno, _ud):
        pc_now = uc.reg_read(arm.UC_ARM_REG_PC)
        bk = None
        for cand in (pc_now, pc_now - 2):
            try:
                if int.from_bytes(uc.mem_read(cand, 2), "little") == SEMIHOST_BKPT:
                    bk = cand
                    break
            except unicorn.UcError:
                pass
        if bk is None:
            st["fault"] = f"CPU exception {intno} at pc=0x{pc_now:08x}"
            uc.emu_stop()
            return
        r0 = semihost(uc, uc.reg_read(arm.UC_ARM_REG_R0), uc.reg_read(arm.UC_ARM_REG_R1))
        uc.reg_write(arm.UC_ARM_REG_R0, r0 & 0xFFFFFFFF)
        if st["exit"] is None and st["fault"] is None:
            uc.reg_write(arm.UC_ARM_REG_PC, (bk + 2) | 1)

    # UART capture: CMSDK DATA at +0x000 (STATE reads 0 = never full); nRF51 TXD at +0x51C,
    # EVENTS_TXDRDY at +0x11C set to 1 after each byte.
    def on_uart_write(uc, _access, address, _size, value, _ud):
        off = address - t.uart_base
        if t.uart_kind == "cmsdk" and off == 0x000:
            out.append(chr(value & 0xFF))
        elif t.uart_kind == "nrf51" and off == 0x51C:
            out.append(chr(value & 0xFF))
            uc.mem_write(t.uart_base + 0x11C, (1).to_bytes(4, "little"))

    mu.hook_add(unicorn.UC_HOOK_BLOCK, on_block)
    mu.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    mu.hook_add(unicorn.UC_HOOK_MEM_WRITE, on_uart_write, begin=t.uart_base, end=t.uart_base + 0xFFF)

    t0 = time.monotonic()
    timed_out = False
    try:
        # One call for the whole run: resuming after a time slice would restart mid-block and count the rest of
        # that block twice (the block hook counts a block when it starts).
        mu.emu_start(pc | 1, 0xFFFFFFFF, timeout=int(timeout * 1e6), count=max_insns)
        if st["exit"] is None and st["fault"] is None:
            if max_insns:
                st["fault"] = f"instruction limit {max_insns} reached"
            else:
                timed_out = True
    except unicorn.UcError as exc:
        st["fault"] = f"{exc} at pc=0x{mu.reg_read(arm.UC_ARM_REG_PC):08x}"
    finally:
        for fh in files.values():
            if fh != "tty":
                fh.close()
    if at_exit is not None:
        at_exit(lambda address, n: bytes(mu.mem_read(address, n)))

    stdout = "".join(out)
    res = RunResult(stdout=stdout, stderr="", exit_status=st["exit"], sentinel_status=sentinel_status(stdout),
                    cmd=["unicorn", t.unicorn_cpu, str(elf)], wall_s=time.monotonic() - t0, insns_total=st["count"],
                    insns_region=st["region"], regions=st["regions"], timed_out=timed_out)
    if check:
        where = f"{elf.name} on Unicorn {t.unicorn_cpu}"
        if timed_out:
            raise EmulatorError(f"Unicorn timed out after {timeout:g} s running {where}")
        if st["fault"] is not None:
            raise EmulatorError(f"Unicorn stopped on a fault running {where}: {st['fault']}")
        check_exit(res, where, expect_status)
    return res
