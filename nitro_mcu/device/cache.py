"""Build caches: a build is named by the hash of every input, so one is reused only while all of them are the same."""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence


def cache_dir() -> Path:
    """The cache folder of generated-C builds: ``$NITRO_MCU_CACHE``, else ``<tmp>/nitro_mcu_cache``."""
    d = Path(os.environ.get("NITRO_MCU_CACHE", Path(tempfile.gettempdir()) / "nitro_mcu_cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def input_key(argv: Sequence[str], files: Mapping[str, "str | bytes"], compiler_version: str) -> str:
    """16 hex digits over a compiler command (all its flags), the compiler's version string and the
    contents of every file the command reads (by name)."""
    h = hashlib.sha256()
    for part in (*argv, "--version", compiler_version):
        h.update(str(part).encode() + b"\0")
    for name in sorted(files):
        data = files[name]
        data = data.encode() if isinstance(data, str) else bytes(data)
        h.update(str(name).encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def cached_shared_library(stem: str, cc: str, flags: Sequence[str], files: Mapping[str, "str | bytes"],
                          compiler_version: str, write: Callable[[Path], Path],
                          root: "str | Path | None" = None) -> "Path | subprocess.CompletedProcess":
    """``<root>/<stem>_<input_key>/lib<stem>.so``, built by ``cc flags -o lib<stem>.so <source>`` unless it exists
    (``root``: :func:`cache_dir` unless given).

    ``write(folder)`` puts the sources into a private build folder and returns the file to compile, so parallel
    builds of one key never see each other's files; the library appears whole (os.replace) or not at all.
    Returns the library's path, or the failed compiler run (the caller words its own error).
    """
    out = (Path(root) if root is not None else cache_dir()) / f"{stem}_{input_key([cc, *flags], files, compiler_version)}"
    lib = out / f"lib{stem}.so"
    if lib.is_file():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as d:
        tmp = Path(d) / lib.name
        proc = subprocess.run([cc, *flags, "-o", str(tmp), str(write(Path(d)))], capture_output=True, text=True)
        if proc.returncode != 0:
            return proc
        os.replace(tmp, lib)
    return lib
