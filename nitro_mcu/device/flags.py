"""The compile-flag table: every compiler call of the project takes its flags from here.

Firmware: the CPU flags of each target (``Target.cpu_flags`` in targets.py) plus the common flags below.
Host: the selftest build, the harness build, the shared library of device/compiled.py, the warning check of the
generated C and the QEMU plugin.  No build uses ``-fwrapv``: the generated C and the firmware are UB-free without
it, which the host sanitizer builds check (no signed overflow is defined away) and the bit-exact emulator runs
confirm, at -O2 and at -O3 (tests/test_emulator.py).
"""
from __future__ import annotations

from .targets import Target, get_target

WARNINGS = ("-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion")

# arm-none-eabi-gcc; the optimisation level goes after "-mthumb" (see firmware_cflags)
FIRMWARE_CFLAGS = (
    "-mthumb", "-g", "-std=c11", "-ffreestanding", "-fno-common", "-ffunction-sections",
    "-fdata-sections", *WARNINGS,
    "-Wdouble-promotion", "-Wfloat-conversion", "-Werror", "-mfloat-abi=soft",
)
FIRMWARE_LDFLAGS = ("-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")
FIRMWARE_LIBS = ("-lgcc",)

# firmware C on the host (firmware/board_host.c), for output diffs: as the firmware
HOST_FIRMWARE_CFLAGS = ("-O1", "-g", "-std=c11", *WARNINGS, "-Wshadow", "-Werror")
# harness + generated C on the host: UBSan (sanitize_flags) reports any signed overflow
HOST_HARNESS_CFLAGS = ("-std=c11", "-O1", "-g", *WARNINGS, "-Wshadow", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all")
CLANG_SANITIZE_FLAGS = ("-fsanitize=implicit-conversion",)
# the generated C as a host shared library for ctypes (device/compiled.py)
HOST_SHARED_CFLAGS = ("-std=c11", "-O2", "-fPIC", "-shared", *WARNINGS, "-Werror", "-DNITRO_TEST_HOOKS")
# the generated C must compile warning-free under these with gcc and clang (tests/test_codegen.py)
STRICT_CFLAGS = ("-std=c11", "-O2", *WARNINGS, "-Wshadow", "-Werror")
# the QEMU instruction-count plugin (firmware/qemu_plugin/insncount.c), a host shared library
PLUGIN_CFLAGS = ("-O2", "-shared", "-fPIC", "-Wall", "-Wextra")


def firmware_cflags(target: "str | Target", opt: str = "-O2") -> list[str]:
    """Compile flags for a target's firmware, without include dirs or defines."""
    t = get_target(target)
    return [*t.cpu_flags, FIRMWARE_CFLAGS[0], opt, *FIRMWARE_CFLAGS[1:]]


def sanitize_flags(cc: str) -> list[str]:
    """UBSan + ASan, plus clang's implicit-conversion checks when ``cc`` is clang."""
    return [*SANITIZE_FLAGS, *(CLANG_SANITIZE_FLAGS if "clang" in cc else ())]
