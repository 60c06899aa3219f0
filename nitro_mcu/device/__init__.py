"""The device wing: Cortex-M targets and toolchains, firmware builds, emulators (QEMU, Unicorn, Renode), the
harness protocol, bit-exact verification against the trainer and the cost report.

  targets    the Target table (core, QEMU machine, linker script, memory map, UART)
  toolchain  finding programs and their versions; errors name the apt package
  flags      the compile-flag table (firmware per target, host builds, sanitizers)
  cache      the cache folder and the key over every input of a build
  firmware   cross builds (each proved float-free) and their cache
  elf        section sizes, symbols, flash/RAM/stack use, the no-float proof
  qemu       the instruction-count plugin and QEMU runs
  host       host builds of firmware C and running them
  unicorn    the Unicorn cross-check of instruction counts
  protocol   the command blob, the sentinel line and the harness results
  harness    building and running the harness with a generated model, on the host or an emulated MCU
  compiled   the generated C as a host shared library called from Python (nitro_mcu.compile_model)
  verify     device vs Python, bit for bit, every tensor moved;  report: what it costs;  renode: the Renode runner

The build-and-run API is re-exported here (``from nitro_mcu import device``).
"""
from .elf import FLOAT_INSN_RE, MemoryUsage, NoFloatProofError, no_float_proof, section_sizes, stack_and_ram, \
    symbol_address
from .firmware import BuildResult, build_cached, build_firmware, firmware_command
from .host import build_host, run_host
from .protocol import EmulatorError, RunResult
from .qemu import build_insn_plugin, qemu_command, run_qemu
from .targets import DEFAULT_TARGET, EXTRA_BOARDS, FIRMWARE_DIR, LD_DIR, PLUGIN_DIR, TARGETS, Target, get_target
from .toolchain import BuildError, ToolchainError, check_toolchain

__all__ = [
    "Target", "TARGETS", "EXTRA_BOARDS", "DEFAULT_TARGET", "FIRMWARE_DIR", "LD_DIR", "PLUGIN_DIR", "get_target",
    "ToolchainError", "BuildError", "NoFloatProofError", "EmulatorError", "check_toolchain",
    "BuildResult", "RunResult", "MemoryUsage", "build_firmware", "build_cached", "firmware_command",
    "no_float_proof", "FLOAT_INSN_RE", "section_sizes", "stack_and_ram", "symbol_address",
    "run_qemu", "qemu_command", "build_insn_plugin", "build_host", "run_host",
]
