"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``, so a reader sees
the old file or the new one, never half of one.  New files get the usual permissions (0666 less the umask)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _stage(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def write_files(folder: str | os.PathLike, files: dict[str, str | bytes]) -> list[Path]:
    """Write several files into ``folder``, each atomically; all are written and synced before the first
    replace, so a failure while writing (a full disk) leaves every old file as it was."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    moved = 0
    try:
        for fname, data in files.items():
            dst = folder / fname
            staged.append((_stage(dst, data.encode() if isinstance(data, str) else data), dst))
        for tmp, dst in staged:
            os.replace(tmp, dst)
            moved += 1
    except BaseException:
        for tmp, _ in staged[moved:]:
            _discard(tmp)
        raise
    return [dst for _, dst in staged]


def _stage(path: Path, data: bytes) -> Path:
    """A new temporary sibling of ``path`` holding ``data``, flushed to disk."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:  # O_EXCL: never reuse a name; mode 0666 so the umask decides, as for open()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _discard(tmp: Path) -> None:
    """Remove a temporary file that was not (or could not be) moved into place."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
