"""Cross builds of firmware with the target's cross gcc (arm-none-eabi-gcc, riscv64-unknown-elf-gcc), each proved
float-free, and a cache of them.

A cached build lives in a folder named by :func:`build_key`, the hash of every input of the build: the
compiler command (all flags and defines), the compiler's version string and the contents of the sources,
of the headers in its include folders and of the linker scripts (common.ld included).
"""
from __future__ import annotations

import dataclasses
import pickle
import shlex
import subprocess
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..fileio import atomic_write
from .cache import cache_dir, input_key
from .elf import NoFloatProofError, no_float_proof, section_sizes
from .flags import FIRMWARE_LIBS, firmware_cflags, firmware_ldflags
from .targets import BOARD_SOURCES, FIRMWARE_DIR, LD_DIR, Target, check_io, get_target
from .toolchain import BuildError, check_toolchain, compiler_version

KEY_DIR = Path("/nitro-build-folder")   # stands for the build folder while the key is computed


@dataclasses.dataclass
class BuildResult:
    elf: Path
    target: str
    io: str
    cmd: list                 # the exact compiler command (argv)
    compiler_version: str     # first line of `<cross>-gcc --version`
    sizes: dict               # section name -> bytes (text, rodata, data, bss, stack, psram, ...)
    map_file: Path | None = None

    @property
    def cmd_str(self) -> str:
        return shlex.join(str(c) for c in self.cmd)

    @property
    def flash_bytes(self) -> int:
        s = self.sizes
        return s.get("text", 0) + s.get("rodata", 0) + s.get("data", 0) + s.get("ARM.exidx", 0)

    @property
    def static_ram_bytes(self) -> int:
        return self.sizes.get("data", 0) + self.sizes.get("bss", 0)

    @property
    def stack_bytes(self) -> int:
        return self.sizes.get("stack", 0)


def _all_sources(sources: Iterable["str | Path"], board: bool) -> list[Path]:
    srcs = [Path(s) for s in sources]
    return [FIRMWARE_DIR / s for s in BOARD_SOURCES] + srcs if board else srcs


def firmware_command(gcc: str, target: "str | Target", sources: Iterable["str | Path"], out_dir: "str | Path",
                     *, name: str = "fw", include_dirs: Iterable["str | Path"] = (), defines: Iterable[str] = (),
                     io: str = "semihost", opt: str = "-O2", board: bool = True,
                     extra_cflags: Sequence[str] = (), stack_size: int | None = None) -> list[str]:
    """The argv that compiles and links ``sources`` (plus startup/board code) into ``out_dir/<name>.elf``."""
    t = get_target(target)
    check_io(io, t)
    out_dir = Path(out_dir)
    defs = list(defines) + t.board_defines(io)
    incs = [FIRMWARE_DIR] + [Path(i) for i in include_dirs]
    base = firmware_cflags(t, opt)
    if any(f.startswith("-mfloat-abi=") for f in extra_cflags) and "-mfloat-abi=soft" in base:
        base.remove("-mfloat-abi=soft")       # a second -mfloat-abi confuses multilib selection
    cmd = [gcc, *base, *extra_cflags]
    cmd += [f"-I{i}" for i in incs]
    cmd += [f"-D{d}" for d in defs]
    cmd += [str(s) for s in _all_sources(sources, board)]
    cmd += [*firmware_ldflags(t), f"-L{LD_DIR}", "-T", str(t.ld_path), f"-Wl,-Map={out_dir / f'{name}.map'}"]
    if stack_size is not None:
        cmd.append(f"-Wl,--defsym=__stack_size={int(stack_size)}")
    cmd += [*FIRMWARE_LIBS, "-o", str(out_dir / f"{name}.elf")]
    return cmd


def build_firmware(sources: Iterable["str | Path"], target: "str | Target", out_dir: "str | Path",
                   include_dirs: Iterable["str | Path"] = (), defines: Iterable[str] = (),
                   io: str = "semihost", opt: str = "-O2", *, name: str = "fw",
                   board: bool = True, extra_cflags: Sequence[str] = (),
                   stack_size: int | None = None, timeout: float = 300) -> BuildResult:
    """Cross-compile and link ``sources`` (plus startup/board code) into ``out_dir/<name>.elf``.

    io: 'semihost' (console via semihosting) or 'uart' (the target's UART; exit still via
    semihosting).  defines: 'NAME' or 'NAME=value'.  extra_cflags are appended after the
    standard flags (so e.g. ``-mfloat-abi=hard -mfpu=fpv4-sp-d16`` override the soft ABI).
    Every build runs :func:`no_float_proof`; a violation raises NoFloatProofError.
    """
    t = get_target(target)
    check_io(io, t)
    gcc = check_toolchain(qemu=False, isa=t.isa)[t.isa_info.tool("gcc")]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = list(sources)
    for s in _all_sources(sources, board):
        if not s.exists():
            raise BuildError(f"source file not found: {s}")
    cmd = firmware_command(gcc, t, sources, out_dir, name=name, include_dirs=include_dirs, defines=defines, io=io,
                           opt=opt, board=board, extra_cflags=extra_cflags, stack_size=stack_size)
    elf = out_dir / f"{name}.elf"

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        lines = err.splitlines()
        # the linker's "region `RAM' overflowed by N bytes" says more than collect2's summary line
        first = next((ln for ln in lines if "overflowed by" in ln), None) or \
            next((ln for ln in lines if "error" in ln), lines[0] if lines else "")
        raise BuildError(f"{t.isa_info.tool('gcc')} failed for target {t.name}: {first}\n{err}", cmd, err)

    result = BuildResult(elf=elf, target=t.name, io=io, cmd=cmd, compiler_version=compiler_version(gcc),
                         sizes=section_sizes(elf), map_file=out_dir / f"{name}.map")
    violations = no_float_proof(elf)
    if violations:
        more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
        raise NoFloatProofError(f"no-float proof failed for {elf.name} ({t.name}): "
                                f"{', '.join(violations[:3])}{more}",
                                elf, violations)
    return result


def build_key(cmd: Sequence[str], out_dir: "str | Path", generated: Mapping[str, "str | bytes"] = {}) -> str:
    """The cache key of the cross build ``cmd``: its argv, the compiler's version and every file it reads.

    Read are the sources (every argument that is not an option), the ``.h`` files of each ``-I`` folder
    and the ``.ld`` files of each ``-L`` folder and of ``-T``.  Files of ``out_dir`` come from ``generated`` (name -> contents): on a
    cache miss they are written there only after the key is known.
    """
    out_dir = Path(out_dir)
    files: dict[str, "str | bytes"] = {}

    def add(path: Path):
        if path.parent == out_dir:
            if path.name not in generated:
                raise ValueError(f"{path.name} is read from the build folder but not among the generated files")
            files[str(path)] = generated[path.name]
        else:
            files[str(path)] = path.read_bytes()

    def add_dir(d: Path, suffix: str):
        names = [n for n in generated if n.endswith(suffix)] if d == out_dir else \
            [p.name for p in d.glob(f"*{suffix}")]
        for n in sorted(names):
            add(d / n)

    args = iter(cmd[1:])
    for arg in args:
        if arg == "-o":
            next(args)                        # the output
        elif arg == "-T":
            add(Path(next(args)))
        elif arg.startswith("-I"):
            add_dir(Path(arg[2:]), ".h")
        elif arg.startswith("-L"):
            add_dir(Path(arg[2:]), ".ld")
        elif not arg.startswith("-"):
            add(Path(arg))
    return input_key(cmd, files, compiler_version(cmd[0]))


def _located(sources: Sequence["str | Path"], d: Path) -> list[Path]:
    return [Path(s) if Path(s).is_absolute() else d / s for s in sources]


def cache_key(sources: Sequence["str | Path"], target: "str | Target", generated: Mapping[str, str], *,
              name: str, **options) -> str:
    """The :func:`build_key` of a :func:`build_cached` build (same arguments, less ``timeout``)."""
    t = get_target(target)
    gcc = check_toolchain(qemu=False, isa=t.isa)[t.isa_info.tool("gcc")]
    cmd = firmware_command(gcc, target, _located(sources, KEY_DIR), KEY_DIR, name=name, include_dirs=[KEY_DIR],
                           **options)
    return build_key(cmd, KEY_DIR, generated)


def build_cached(sources: Sequence["str | Path"], target: "str | Target", generated: Mapping[str, str], *,
                 name: str, timeout: float = 300, **options) -> BuildResult:
    """:func:`build_firmware` once per set of inputs, in a cache folder named by :func:`build_key`.

    ``generated`` (file name -> text) is written into the build folder, which is also an include folder;
    relative ``sources`` name files there.  ``options`` are the build options of :func:`firmware_command`.
    """
    d = cache_dir() / f"fw_{name}_{cache_key(sources, target, generated, name=name, **options)}"
    stamp = d / "build.pickle"
    if stamp.is_file():
        return pickle.loads(stamp.read_bytes())
    for fname, text in generated.items():
        atomic_write(d / fname, text.encode())
    b = build_firmware(_located(sources, d), target, d, include_dirs=[d], name=name, timeout=timeout, **options)
    atomic_write(stamp, pickle.dumps(b))
    return b
