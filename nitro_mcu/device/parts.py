"""Common microcontroller parts for ``nitro-mcu fit``: core, clock, RAM and flash, and the emulated core that
stands in for each (device/targets.py), plus a cycles-per-instruction range per core for time estimates.

Figures from the manufacturers' datasheets (maximum CPU clock; all on-chip SRAM; on-chip flash, or the
reference board's QSPI flash for parts without any):
- STM32F405: ST DS8626 "STM32F405xx STM32F407xx" datasheet: Cortex-M4F up to 168 MHz, 1 MB flash, 192 KB SRAM
  (112 + 16 KB main SRAM, 64 KB core-coupled memory).
- STM32F746: ST DS10916 "STM32F745xx STM32F746xx" datasheet: Cortex-M7F up to 216 MHz, 1 MB flash, 320 KB SRAM
  (including 64 KB DTCM), plus 16 KB ITCM RAM (not counted).
- STM32L4R5: ST DS12023 "STM32L4R5xx STM32L4R7xx STM32L4R9xx" datasheet: Cortex-M4F up to 120 MHz, 2 MB flash,
  640 KB SRAM.
- nRF52840: Nordic "nRF52840 Product Specification" v1.7: Cortex-M4F at 64 MHz, 1 MB flash, 256 KB RAM.
- RP2040: Raspberry Pi "RP2040 Datasheet": dual Cortex-M0+ at 133 MHz, 264 KB SRAM, no on-chip flash
  (external QSPI; the Raspberry Pi Pico carries 2 MB).
- RP2350: Raspberry Pi "RP2350 Datasheet": dual Cortex-M33 at 150 MHz, 520 KB SRAM, no on-chip flash in the
  RP2350A/B (external QSPI; the Raspberry Pi Pico 2 carries 4 MB).
- ESP32-C3: Espressif "ESP32-C3 Series Datasheet": single-core 32-bit RISC-V (RV32IMC) up to 160 MHz, 400 KB
  SRAM of which 16 KB is the flash cache (384 KB counted), 4 MB flash in the ESP32-C3FH4's package (others:
  external SPI flash).

The CPI ranges are estimates (docs/fit.md gives their source: the cores' instruction timings in Arm's
Technical Reference Manuals; Espressif publishes none for the ESP32-C3, whose range is the widest): instructions
counted on the emulated core times the range, over the clock, bound the time of a step on the part, running from
zero-wait-state memory or a warm cache.
"""
from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Part:
    name: str
    core: str          # the part's CPU
    target: str        # the emulated core that counts its instructions (device/targets.py)
    clock_mhz: int     # maximum CPU clock
    ram_bytes: int     # on-chip SRAM
    flash_bytes: int   # on-chip flash (or the reference board's)
    datasheet: str


PARTS: dict[str, Part] = {p.name.lower(): p for p in (
    Part("STM32F405", "Cortex-M4F", "m4", 168, 192 * KiB, 1 * MiB, "ST DS8626"),
    Part("STM32F746", "Cortex-M7F", "m7", 216, 320 * KiB, 1 * MiB, "ST DS10916"),
    Part("STM32L4R5", "Cortex-M4F", "m4", 120, 640 * KiB, 2 * MiB, "ST DS12023"),
    Part("nRF52840", "Cortex-M4F", "m4", 64, 256 * KiB, 1 * MiB, "Nordic nRF52840 PS v1.7"),
    Part("RP2040", "Cortex-M0+", "rp2040", 133, 264 * KiB, 2 * MiB, "RP2040 Datasheet (Pico: 2 MB QSPI)"),
    Part("RP2350", "Cortex-M33", "m33", 150, 520 * KiB, 4 * MiB, "RP2350 Datasheet (Pico 2: 4 MB QSPI)"),
    Part("ESP32-C3", "RISC-V RV32IMC", "rv32imc", 160, 384 * KiB, 4 * MiB,
         "ESP32-C3 Series Datasheet (C3FH4: 4 MB in package)"),
)}

# cycles per instruction (low, high) of integer code like the generated kernels, per emulated core; tenths
CPI_TENTHS: dict[str, tuple[int, int]] = {
    "rp2040": (13, 20),  # Cortex-M0+: loads/stores 2 cycles, taken branches 2; 1-cycle multiplier (RP2040)
    "m4": (12, 18),   # Cortex-M4: loads 2 (pipelined 1), taken branches 2-4, MAC 1
    "m7": (7, 14),    # Cortex-M7: dual issue, caches / TCM; branch misses and cache misses the upper end
    "m33": (11, 17),  # Cortex-M33: as the M4, with a shorter pipeline (taken branches 2)
    "rv32imc": (12, 22),  # ESP32-C3: in-order, no published timings; load-use stalls, taken branches, flash cache
}


def get_part(name: str) -> Part:
    """The part of that name (any case), or a one-line ValueError listing them."""
    try:
        return PARTS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown part {name!r}; choose one of {', '.join(p.name for p in PARTS.values())} "
                         "or all") from None


def part_names() -> list[str]:
    return [p.name for p in PARTS.values()]


def ms_range(insns: int, part: Part) -> tuple[float, float]:
    """Estimated milliseconds for ``insns`` instructions at the part's clock, over its core's CPI range."""
    lo, hi = CPI_TENTHS[part.target]
    return insns * lo / (10_000 * part.clock_mhz), insns * hi / (10_000 * part.clock_mhz)
