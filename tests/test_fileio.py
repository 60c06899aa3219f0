"""Atomic writes (nitro_mcu.fileio): whole files or the old ones, usual permissions, no temporary files left."""
import os
import stat

import pytest

from nitro_mcu.fileio import atomic_write, write_files


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_write_replaces_whole_files_with_umask_permissions(tmp_path, umask_027):
    path = atomic_write(tmp_path / "sub" / "a.bin", b"first")
    assert path == tmp_path / "sub" / "a.bin" and path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, not mkstemp's 0600
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second" and os.listdir(path.parent) == ["a.bin"]


def test_write_files_replaces_nothing_when_one_file_cannot_be_written(tmp_path):
    paths = write_files(tmp_path, {"m.c": "int x;\n", "m.h": b"#define X 1\n"})
    assert [p.name for p in paths] == ["m.c", "m.h"] and paths[1].read_bytes() == b"#define X 1\n"
    with pytest.raises(TypeError):
        write_files(tmp_path, {"m.c": "int y;\n", "m.h": 42})  # the second file fails while staging
    assert (tmp_path / "m.c").read_text() == "int x;\n"
    assert sorted(os.listdir(tmp_path)) == ["m.c", "m.h"]


def test_a_failed_replace_leaves_no_temporary_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("x")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "d", b"data")  # a non-empty directory cannot be replaced by a file
    assert sorted(os.listdir(tmp_path)) == ["d"]
