"""Build caches: a build is named by the hash of every input, so one is reused only while all of them are the same."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence


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
