"""The Cortex-M targets: one row per core, with its QEMU machine, linker script, memory map and UART.

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
class Target:
    name: str                 # m0, m3, m4, m7, m33
    core: str                 # human-readable core name
    cpu_flags: tuple          # compiler flags selecting the CPU
    qemu_machine: str         # qemu-system-arm -M
    linker_script: str        # file name in firmware/ld/
    uart_kind: str            # "cmsdk" or "nrf51"
    uart_base: int
    code_base: int
    code_size: int
    ram_base: int
    ram_size: int
    psram_base: int | None    # None: no PSRAM on this machine
    psram_size: int
    unicorn_cpu: str          # name of the UC_CPU_ARM_* constant
    arch: str                 # armv6-m, armv7-m, armv7e-m, armv8-m.main

    @property
    def ld_path(self) -> Path:
        return LD_DIR / self.linker_script

    def uart_defines(self) -> list[str]:
        kind = {"cmsdk": "BOARD_UART_CMSDK", "nrf51": "BOARD_UART_NRF51", "stm32": "BOARD_UART_STM32"}[self.uart_kind]
        return ["BOARD_IO_UART", kind, f"BOARD_UART_BASE=0x{self.uart_base:08X}u"]


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


def check_io(io: str) -> None:
    if io not in IO_KINDS:
        raise ValueError(f"io must be 'semihost' or 'uart', not {io!r}")
