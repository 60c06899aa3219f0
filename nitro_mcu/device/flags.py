"""The compile-flag table: every compiler call of the project takes its flags from here.

Firmware: the CPU flags of each target (``Target.cpu_flags`` in targets.py) plus the common flags of its
instruction set below (Cortex-M: Thumb, soft-float ABI; RV32: the ilp32 soft-float ABI is in the CPU flags).
Host: the selftest build, the harness build, the shared library of device/compiled.py, the trainer's GEMM
kernels, the warning check of the generated C and the QEMU plugin.  No build uses ``-fwrapv``: the generated C and the firmware are UB-free without
it, which the host sanitizer builds check (no signed overflow is defined away) and the bit-exact emulator runs
confirm, at -O2 and at -O3 (tests/test_emulator.py).
"""
from __future__ import annotations

from .targets import Target, get_target

WARNINGS = ("-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion")
# what firmware projects often add on top (the generated C is dropped into them): checked on every build
PROJECT_WARNINGS = ("-Wshadow", "-Wpedantic", "-Wundef", "-Wcast-align", "-Wcast-qual", "-Wmissing-prototypes",
                    "-Wstrict-prototypes", "-Wmissing-declarations", "-Wredundant-decls", "-Wwrite-strings", "-Wvla",
                    "-Wpointer-arith")

# arm-none-eabi-gcc; the optimisation level goes after "-mthumb" (see firmware_cflags)
FIRMWARE_CFLAGS = (
    "-mthumb", "-g", "-std=c11", "-ffreestanding", "-fno-common", "-ffunction-sections",
    "-fdata-sections", *WARNINGS,
    *PROJECT_WARNINGS, "-Wdouble-promotion", "-Wfloat-conversion", "-Werror", "-mfloat-abi=soft",
)
FIRMWARE_LDFLAGS = ("-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")
FIRMWARE_LIBS = ("-lgcc",)
# riscv64-unknown-elf-gcc with picolibc: the same C flags less the ARM ones; no F/D in -march, ilp32
RV32_FIRMWARE_CFLAGS = (
    "-g", "-std=c11", "-ffreestanding", "-fno-common", "-ffunction-sections", "-fdata-sections", *WARNINGS,
    *PROJECT_WARNINGS, "-Wdouble-promotion", "-Wfloat-conversion", "-Werror",
)
RV32_FIRMWARE_LDFLAGS = ("-nostartfiles", "--specs=picolibc.specs", "-Wl,--gc-sections")

# firmware C on the host (firmware/board_host.c), for output diffs: as the firmware
HOST_FIRMWARE_CFLAGS = ("-O1", "-g", "-std=c11", *WARNINGS, "-Wshadow", "-Werror")
# harness + generated C on the host: UBSan (sanitize_flags) reports any signed overflow
HOST_HARNESS_CFLAGS = ("-std=c11", "-O1", "-g", *WARNINGS, "-Wshadow", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all")
CLANG_SANITIZE_FLAGS = ("-fsanitize=implicit-conversion",)
# the generated C as a host shared library for ctypes (device/compiled.py)
HOST_SHARED_CFLAGS = ("-std=c11", "-O2", "-fPIC", "-shared", *WARNINGS, "-Werror", "-DNITRO_TEST_HOOKS")
# the trainer's integer GEMM kernels (nitro_mcu/trainer/native/intgemm.c), a host shared library for ctypes;
# the SIMD variants carry their own target attributes, so the library runs on any x86-64 and picks at run time
HOST_KERNEL_CFLAGS = ("-std=c11", "-O2", "-fPIC", "-shared", *WARNINGS, "-Werror")
# the generated C must compile warning-free under these with gcc and clang (tests/test_codegen.py)
STRICT_CFLAGS = ("-std=c11", "-O2", *WARNINGS, *PROJECT_WARNINGS, "-Wunused-macros", "-Werror")
# the QEMU instruction-count plugin (firmware/qemu_plugin/insncount.c), a host shared library
PLUGIN_CFLAGS = ("-O2", "-shared", "-fPIC", "-Wall", "-Wextra")


def firmware_cflags(target: "str | Target", opt: str = "-O2") -> list[str]:
    """Compile flags for a target's firmware, without include dirs or defines."""
    t = get_target(target)
    if t.isa == "riscv":
        return [*t.cpu_flags, opt, *RV32_FIRMWARE_CFLAGS]
    return [*t.cpu_flags, FIRMWARE_CFLAGS[0], opt, *FIRMWARE_CFLAGS[1:]]


def firmware_ldflags(target: "str | Target") -> tuple:
    """Link flags (before the linker script) for a target's firmware."""
    return RV32_FIRMWARE_LDFLAGS if get_target(target).isa == "riscv" else FIRMWARE_LDFLAGS


def sanitize_flags(cc: str) -> list[str]:
    """UBSan + ASan, plus clang's implicit-conversion checks when ``cc`` is clang."""
    return [*SANITIZE_FLAGS, *(CLANG_SANITIZE_FLAGS if "clang" in cc else ())]
