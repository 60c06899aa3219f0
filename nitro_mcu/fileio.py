"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``, so a reader sees
the old file or the new one, never half of one.  New files get the usual permissions (0666 less the umask)."""
from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import stat
import sys
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


# ---- a set of files replaced all at once --------------------------------------------------------------------
STAGE_TAG = ".nitro-stage-"  # sibling folders named .<folder><STAGE_TAG><pid>-<hex>: a run in progress (or killed)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2_exchange():
    """glibc's renameat2 (Linux 3.15+, glibc 2.28+) as a callable (a, b) -> errno, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def exchange(a: Path, b: Path) -> int:
        rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        return ctypes.get_errno() if rc != 0 else 0

    return exchange


def _swappable(folder: Path) -> bool:
    """A folder whose whole content may be swapped: a real folder of ours that holds plain files only and is
    neither a mount point nor (an ancestor of) this process's working directory."""
    try:
        st = os.lstat(folder)
        cwd, real = Path(os.path.realpath(os.getcwd())), Path(os.path.realpath(folder))
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or os.path.ismount(folder):
        return False
    if real == cwd or real in cwd.parents:
        return False
    return all(e.is_file(follow_symlinks=False) for e in os.scandir(folder))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_orphans(parent: Path, name: str) -> None:
    """Staging folders left by runs that were killed (their process is gone)."""
    prefix = f".{name}{STAGE_TAG}"
    for e in os.scandir(parent):
        if not e.name.startswith(prefix):
            continue
        try:
            pid = int(e.name[len(prefix):].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(e.path, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def replace_file_set(folder: str | os.PathLike, files: dict[str, str | bytes], on_step=None) -> list[Path]:
    """Write ``files`` into ``folder`` so that, whenever the process is killed, ``folder`` holds every old file
    or every new one, never a mix; other files of ``folder`` are kept.

    On Linux the folder's next state is staged as a hidden sibling (the new files written and synced, every
    other file hard-linked) and swapped in by one ``renameat2(RENAME_EXCHANGE)``; the old state is removed
    after.  A new folder is staged and renamed into place.  Fallback, where that is not possible (another OS,
    a filesystem without RENAME_EXCHANGE or hard links, a folder holding sub-folders or links, the working
    directory): :func:`write_files`, which replaces one file after another; the generated C then refuses a
    mixed set at compile time (a generation id, see docs/c_api.md).  ``on_step(label)`` is called after each
    step (tests kill the process there)."""
    folder = Path(folder).absolute()
    step = on_step or (lambda label: None)
    data = {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in files.items()}
    exchange = _renameat2_exchange()
    exists = os.path.lexists(folder)
    if exchange is None or (exists and not _swappable(folder)):
        return write_files(folder, data)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = folder.parent / f".{folder.name}{STAGE_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _remove_orphans(folder.parent, folder.name)
        os.mkdir(stage)
    except OSError:  # a parent we may not write (or list): replace the files inside the folder instead
        return write_files(folder, data)
    try:
        kept = set()
        if exists:
            os.chmod(stage, stat.S_IMODE(os.stat(folder).st_mode))
            for e in os.scandir(folder):
                if e.name not in data:
                    os.link(e.path, stage / e.name, follow_symlinks=False)
                    kept.add(e.name)
                    step(f"linked {e.name}")
        for fname, blob in data.items():
            os.replace(_stage(stage / fname, blob), stage / fname)
            step(f"staged {fname}")
        _fsync_dir(stage)
        if exists:
            err = exchange(stage, folder)
            if err:
                raise OSError(err, os.strerror(err))
        else:
            os.rename(stage, folder)
        step("swapped")
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EXDEV, errno.EMLINK,
                       errno.ENOTSUP, errno.ENOTEMPTY, errno.EEXIST):
            return write_files(folder, data)  # no RENAME_EXCHANGE or hard links here, or a race: fall back
        raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _fsync_dir(folder.parent)
    if exists:  # the stage path now holds the old state; keep what appeared there meanwhile
        for e in os.scandir(stage):
            if e.name not in data and e.name not in kept and not os.path.lexists(folder / e.name):
                os.rename(e.path, folder / e.name)
        shutil.rmtree(stage, ignore_errors=True)
        step("removed the old files")
    return [folder / f for f in data]
