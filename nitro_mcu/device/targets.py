"""The targets: one row per core or part, with its instruction set, QEMU machine, linker script, memory map and UART.

Each instruction set (:data:`ISAS`) names its cross toolchain, its QEMU system emulator and its C library: the
one place the device wing learns which programs build and run a target (flags.py holds the compile flags).

The board support files (startup, linker scripts, board I/O, harness) live in ``firmware/`` of a checkout, or in
``nitro_mcu/firmware`` of an installed wheel; ``NITRO_FIRMWARE_DIR`` overrides both.  The Renode files likewise
live in ``renode/`` or ``nitro_mcu/renode``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

_PKG_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = _PKG_DIR.parent
# a checkout has firmware/ at the repository root; an installed wheel carries it as nitro_mcu/firmware
_FW_DEFAULT = REPO_ROOT / "firmware" if (REPO_ROOT / "firmware" / "harness.c").is_file() \
    else _PKG_DIR / "firmware"
FIRMWARE_DIR = Path(os.environ.get("NITRO_FIRMWARE_DIR", _FW_DEFAULT))
RENODE_DIR = REPO_ROOT / "renode" if (REPO_ROOT / "renode" / "harness.robot").is_file() else _PKG_DIR / "renode"
LD_DIR = FIRMWARE_DIR / "ld"
PLUGIN_DIR = FIRMWARE_DIR / "qemu_plugin"
BOARD_SOURCES = ("startup.c", "board_semihost.c", "board_uart.c")
IO_KINDS = ("semihost", "uart")   # console over semihosting, or over the target's UART (exit: semihosting)


@dataclasses.dataclass(frozen=True)
class Isa:
    """An instruction set: the programs that build, inspect and run its firmware."""
    name: str                 # "arm" (Thumb, Cortex-M) or "riscv" (RV32)
    prefix: str               # cross toolchain prefix: <prefix>gcc, <prefix>nm, <prefix>objdump, ...
    gcc_package: str          # Debian packages of the compiler, the binutils, QEMU and the C library
    binutils_package: str
    qemu: str                 # QEMU system emulator
    qemu_package: str
    libc_probe: tuple         # gcc arguments that print the path of a C library file (checked to exist)
    libc_package: str
    elf_machine: int          # e_machine of its ELF files (EM_ARM 40, EM_RISCV 243)

    def tool(self, name: str) -> str:
        """Program name of cross tool ``name`` (gcc, nm, objdump, size, readelf)."""
        return self.prefix + name


ISAS: dict[str, Isa] = {
    "arm": Isa("arm", "arm-none-eabi-", "gcc-arm-none-eabi", "binutils-arm-none-eabi", "qemu-system-arm",
               "qemu-system-arm", ("-mthumb", "-mcpu=cortex-m4", "-print-file-name=libc_nano.a"),
               "libnewlib-arm-none-eabi", 40),
    "riscv": Isa("riscv", "riscv64-unknown-elf-", "gcc-riscv64-unknown-elf", "binutils-riscv64-unknown-elf",
                 "qemu-system-riscv32", "qemu-system-misc",
                 ("-march=rv32imc", "-mabi=ilp32", "-print-file-name=picolibc.specs"),
                 "picolibc-riscv64-unknown-elf", 243),
}


@dataclasses.dataclass(frozen=True)
class Target:
    name: str                 # m0, m3, m4, m7, m33, rp2040, rv32imc, rv32imac, stm32f405, stm32f205
    core: str                 # human-readable core name
    cpu_flags: tuple          # compiler flags selecting the CPU
    qemu_machine: str         # QEMU -M
    linker_script: str        # file name in firmware/ld/
    uart_kind: str            # "cmsdk", "nrf51", "stm32" or "ns16550"
    uart_base: int
    code_base: int
    code_size: int
    ram_base: int
    ram_size: int
    psram_base: int | None    # None: no PSRAM on this machine
    psram_size: int
    unicorn_cpu: str          # name of the UC_CPU_ARM_* constant ("" where Unicorn does not model the core)
    arch: str                 # armv6-m, armv7-m, armv7e-m, armv8-m.main, rv32imc, rv32imac
    isa: str = "arm"          # key of ISAS
    qemu_args: tuple = ()     # machine options after -M (RISC-V: no OpenSBI firmware, the CPU's extensions)
    semihosting: bool = True  # False: a real part's firmware has no debugger attached; the console is the UART,
    #                           the commands are compiled in, and the run ends with the exit line (board_exit)
    uart_serial: int = 0      # which of QEMU's serial ports (-serial, in order) is the UART at uart_base
    unaligned_trap: bool = False  # startup.c sets CCR.UNALIGN_TRP: an ARMv7-M core then faults on an unaligned
    #                               LDR/STR/LDRH/STRH, as an ARMv6-M core always does

    @property
    def ld_path(self) -> Path:
        return LD_DIR / self.linker_script

    @property
    def isa_info(self) -> Isa:
        return ISAS[self.isa]

    def uart_defines(self) -> list[str]:
        kind = {"cmsdk": "BOARD_UART_CMSDK", "nrf51": "BOARD_UART_NRF51", "stm32": "BOARD_UART_STM32",
                "ns16550": "BOARD_UART_NS16550"}[self.uart_kind]
        return ["BOARD_IO_UART", kind, f"BOARD_UART_BASE=0x{self.uart_base:08X}u"]

    def board_defines(self, io: str) -> list[str]:
        """Defines the board code needs for ``io``: the UART's, BOARD_NO_SEMIHOST on a part without it and
        BOARD_UNALIGN_TRAP where unaligned accesses must fault."""
        return (self.uart_defines() if io == "uart" else []) + ([] if self.semihosting else ["BOARD_NO_SEMIHOST"]) \
            + (["BOARD_UNALIGN_TRAP"] if self.unaligned_trap else [])


KiB = 1024
MiB = 1024 * 1024

TARGETS: dict[str, Target] = {
    "m0": Target("m0", "Cortex-M0+ (runs on QEMU's Cortex-M0)", ("-mcpu=cortex-m0plus",), "microbit",
                 "microbit.ld", "nrf51", 0x40002000, 0x00000000, 256 * KiB, 0x20000000, 16 * KiB,
                 None, 0, "UC_CPU_ARM_CORTEX_M0", "armv6-m"),
    "m3": Target("m3", "Cortex-M3", ("-mcpu=cortex-m3",), "mps2-an385",
                 "mps2-an385.ld", "cmsdk", 0x40004000, 0x00000000, 4 * MiB, 0x20000000, 4 * MiB,
                 0x21000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M3", "armv7-m"),
    "m4": Target("m4", "Cortex-M4 (soft-float ABI)", ("-mcpu=cortex-m4",), "mps2-an386",
                 "mps2-an386.ld", "cmsdk", 0x40004000, 0x00000000, 4 * MiB, 0x20000000, 4 * MiB,
                 0x21000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M4", "armv7e-m"),
    "m7": Target("m7", "Cortex-M7 (soft-float ABI)", ("-mcpu=cortex-m7",), "mps2-an500",
                 "mps2-an500.ld", "cmsdk", 0x40004000, 0x00000000, 4 * MiB, 0x20000000, 4 * MiB,
                 0x60000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M7", "armv7e-m"),
    "m33": Target("m33", "Cortex-M33 (Secure, soft-float ABI)", ("-mcpu=cortex-m33",), "mps2-an505",
                  "mps2-an505.ld", "cmsdk", 0x50200000, 0x10000000, 4 * MiB, 0x38000000, 4 * MiB,
                  0x80000000, 16 * MiB, "UC_CPU_ARM_CORTEX_M33", "armv8-m.main"),
    # the RP2040's memory (264 KiB SRAM, 2 MiB flash) for the M0+ binary, run on mps2-an385's M3: ARMv6-M is a
    # subset of ARMv7-M, so the same instructions run; UNALIGN_TRP makes the M3 fault where the M0+ would
    "rp2040": Target("rp2040", "Cortex-M0+ (RP2040: 264 KiB SRAM; runs on QEMU mps2-an385's M3 with unaligned "
                               "accesses trapping)", ("-mcpu=cortex-m0plus",), "mps2-an385", "rp2040.ld", "cmsdk",
                     0x40004000, 0x00000000, 2 * MiB, 0x20000000, 264 * KiB, None, 0, "UC_CPU_ARM_CORTEX_M0",
                     "armv6-m", unaligned_trap=True),
    # RV32 on QEMU's virt board (-bios none: the reset ROM jumps to 0x80000000), its CPU cut down to the
    # part's extensions (no F/D: a float instruction traps), the part's SRAM carved out of virt's DRAM
    "rv32imc": Target("rv32imc", "RV32IMC (ESP32-C3 class: 400 KiB SRAM)", ("-march=rv32imc", "-mabi=ilp32"),
                      "virt", "rv32-virt-400k.ld", "ns16550", 0x10000000, 0x80000000, 4 * MiB,
                      0x80400000, 400 * KiB, None, 0, "", "rv32imc", isa="riscv",
                      qemu_args=("-bios", "none", "-cpu", "rv32,a=off,f=off,d=off,c=on,m=on")),
    "rv32imac": Target("rv32imac", "RV32IMAC (ESP32-C6 / RP2350 Hazard3 class: 512 KiB SRAM)",
                       ("-march=rv32imac", "-mabi=ilp32"), "virt", "rv32-virt-512k.ld", "ns16550", 0x10000000,
                       0x80000000, 4 * MiB, 0x80400000, 512 * KiB, None, 0, "", "rv32imac", isa="riscv",
                       qemu_args=("-bios", "none", "-cpu", "rv32,a=on,f=off,d=off,c=on,m=on")),
    # a real part: QEMU's model of the STM32F405 SoC, reached through its USART2 as firmware on the chip would
    "stm32f405": Target("stm32f405", "STM32F405 Cortex-M4 (soft-float ABI) on QEMU netduinoplus2", ("-mcpu=cortex-m4",),
                        "netduinoplus2", "stm32f405.ld", "stm32", 0x40004400, 0x08000000, 1 * MiB,
                        0x20000000, 128 * KiB, 0x10000000, 64 * KiB, "UC_CPU_ARM_CORTEX_M4", "armv7e-m",
                        semihosting=False, uart_serial=1),
    "stm32f205": Target("stm32f205", "STM32F205 Cortex-M3 on QEMU netduino2", ("-mcpu=cortex-m3",),
                        "netduino2", "stm32f205.ld", "stm32", 0x40004400, 0x08000000, 768 * KiB,
                        0x20000000, 128 * KiB, None, 0, "UC_CPU_ARM_CORTEX_M3", "armv7-m",
                        semihosting=False, uart_serial=1),
}
DEFAULT_TARGET = "m4"

# Real boards without a QEMU machine: built for hardware and run on Renode's board model (--emulator renode).
# Pass the Target object itself to build_firmware(); run_qemu() does not accept them.
EXTRA_BOARDS: dict[str, Target] = {
    "stm32f4-discovery": Target("stm32f4-discovery", "STM32F407VG Cortex-M4 (soft-float ABI)", ("-mcpu=cortex-m4",),
                                "", "stm32f407.ld", "stm32", 0x40004400, 0x08000000, 1 * MiB,
                                0x20000000, 128 * KiB, 0x10000000, 64 * KiB, "UC_CPU_ARM_CORTEX_M4", "armv7e-m"),
}


def get_target(target: "str | Target") -> Target:
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except (KeyError, TypeError):
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}") from None


def get_board(target: "str | Target") -> Target:
    """The Target row of a core of TARGETS or of a board of EXTRA_BOARDS (Renode only); ValueError otherwise."""
    return EXTRA_BOARDS[target] if isinstance(target, str) and target in EXTRA_BOARDS else get_target(target)


def check_io(io: str, target: "Target | None" = None) -> None:
    if io not in IO_KINDS:
        raise ValueError(f"io must be 'semihost' or 'uart', not {io!r}")
    if target is not None and io == "semihost" and not target.semihosting:
        raise ValueError(f"target {target.name!r} has no semihosting: its console is the UART (io='uart')")
