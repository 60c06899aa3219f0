"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``, so a reader sees
the old file or the new one, never half of one.  New files get the usual permissions (0666 less the umask).

Also the checks an output needs before any work starts (:func:`check_stem`, :func:`check_names`,
:func:`check_output_file`), the lock that keeps a second writer out of an output folder (:func:`folder_lock`),
and the removal of temporary files that a killed writer left behind (:func:`remove_stale_temporaries`)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
import sys
import time
from pathlib import Path


class OutputError(ValueError):
    """An output name or path that cannot be written; the message is one line naming it."""


# ---- names and paths checked before work starts -------------------------------------------------------------
# A temporary sibling is ".<name>.<pid>-<8 hex>.tmp": the pid (at most 10 digits) lets a later writer tell a
# killed writer's leftovers from a live one's.
TMP_OVERHEAD = len(".") + len(".") + 10 + len("-") + 8 + len(".tmp")
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})-[0-9a-f]{8}\.tmp$")
_OLD_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")   # the name before the pid was in it
OLD_TMP_AGE_S = 3600  # such a file (no pid to ask) is stale once this old: no write takes an hour
LOCK_NAME = ".nitro-mcu.lock"


def check_stem(name, what: str = "--name") -> str:
    """``name`` as a plain file stem: not empty, no path separator, no '..', no control character."""
    if not isinstance(name, str) or not name:
        raise OutputError(f"{what} must be a non-empty file stem, got {name!r}")
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    bad = next((c for c in name if c in seps or ord(c) < 32 or c == "\x7f"), None)
    if bad is not None or ".." in name or os.path.isabs(name) or name == ".":
        why = f"a path separator {bad!r}" if bad in seps else "a control character" if bad else "'..' or an absolute path"
        raise OutputError(f"{what} {name!r} must be a plain file stem (no folder part): it holds {why}; "
                          "choose the folder with --out")
    return name


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    p = path
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or of its nearest existing ancestor) takes."""
    try:
        return os.pathconf(_existing(Path(folder).absolute()), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_names(folder: str | os.PathLike, names, what: str = "--name") -> None:
    """Every file name in ``names`` (and its temporary sibling) fits the file system of ``folder``."""
    limit = name_max(folder)
    for n in names:
        if len(os.fsencode(n)) + TMP_OVERHEAD > limit:
            raise OutputError(f"{what}: the output file name {n[:24]}... has {len(os.fsencode(n))} bytes; the "
                              f"file system of {folder} takes {limit} per name, {TMP_OVERHEAD} of them for the "
                              "temporary copy: choose a shorter name")


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """A file that can be written: not a folder, its name fits, its nearest existing folder is writable.
    Nothing is created; returns the resolved path."""
    p = Path(path).expanduser().absolute()
    if p.name in ("", ".", ".."):
        raise OutputError(f"{what} {path}: names a folder, not a file")
    if p.is_dir():
        raise OutputError(f"{what} {path}: is a folder, not a file")
    base = _existing(p.parent)
    if not base.is_dir():
        raise OutputError(f"{what} {path}: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {base} is not writable")
    check_names(base, [p.name], what)
    return p.resolve()


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
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
    remove_stale_temporaries(folder)
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
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a pid no process can have
        return False
    except (PermissionError, OSError):
        return True  # another user's process (or we cannot tell): leave its files alone
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.NAME.<pid>-<hex>.tmp``) that a killed writer left in ``folder``: those
    whose writer process is gone.  A live writer's are kept (it renames or removes them itself); a file of the
    older name without a pid is removed once it is OLD_TMP_AGE_S old.  Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")):
            continue
        m = _TMP.match(e.name)
        try:
            if m:
                pid = int(m["pid"])
                stale = pid != os.getpid() and not _alive(pid)
            else:
                stale = bool(_OLD_TMP.match(e.name)) and now - e.stat(follow_symlinks=False).st_mtime > OLD_TMP_AGE_S
            if stale and e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "--out"):
    """Hold an exclusive lock on ``folder`` (``<folder>/.nitro-mcu.lock``, flock) while writing into it: a second
    nitro-mcu process that asks for it gets a one-line OutputError at once.  The lock file is removed on
    release.  Without fcntl (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputError(f"{what} {folder}: another nitro-mcu process{f' (pid {holder})' if holder else ''} "
                              "is writing there; wait for it or choose another folder") from None
        except OSError:
            os.close(fd)  # a file system without locks: go on unlocked
            yield
            return
        try:  # the file we locked must still be the one at the path (a releaser may have unlinked it)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


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
