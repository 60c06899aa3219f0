"""All-or-nothing generate: a process killed at any step of ``save`` leaves the output folder with the complete
old set of files or the complete new one (other files kept); where the folder cannot be swapped whole, every
state it passes through is a complete set or refuses to compile."""
from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nitro_mcu import fileio
from nitro_mcu.codegen import convert, render
from nitro_mcu.trainer.network import Model

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(kind="mlp", input_shape=[16], num_classes=3, hidden=[8])
OTHER = dict(SPEC, hidden=[12, 5])


@pytest.fixture(scope="module")
def old_new():
    old = convert(Model(SPEC, "default", 16, seed=1), batch=2, train=True, name="m")
    new = convert(Model(OTHER, "default", 16, seed=2), batch=4, train=True, name="m")
    return old, new


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() if p.is_file() else "folder" for p in folder.iterdir()} if folder.exists() else None


def expected(conv, extra: dict) -> dict:
    return {**{k: v.encode() for k, v in conv.files.items()}, **extra}


def steps_of(conv, folder: Path) -> list[str]:
    seen = []
    fileio.replace_file_set(folder, conv.files, on_step=seen.append)
    return seen


def killed_save(conv, folder: Path, at_step: int | None = None, at_replace: int | None = None) -> int:
    """Run conv.save(file=folder) in a forked child that dies (os._exit, no clean-up) at a step of the swap
    or at the n-th os.replace; returns the child's exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            if at_step is not None:
                count = iter(range(10**6))

                def die(label):
                    if next(count) == at_step:
                        os._exit(9)

                render.replace_file_set = functools.partial(fileio.replace_file_set, on_step=die)
            if at_replace is not None:
                real, n = os.replace, iter(range(10**6))

                def replace(a, b):
                    real(a, b)
                    if next(n) == at_replace:
                        os._exit(9)

                os.replace = replace
            conv.save(file=folder)
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def no_stage_left(parent: Path):
    return not [p for p in parent.iterdir() if fileio.STAGE_TAG in p.name]


def test_a_kill_at_any_step_leaves_the_old_set_or_the_new_one(old_new, tmp_path):
    old, new = old_new
    folder = tmp_path / "fw"
    old.save(file=folder)
    (folder / "notes.txt").write_text("the user's own file")
    mine = {"notes.txt": b"the user's own file"}
    probe_existing = tmp_path / "probe"
    old.save(file=probe_existing)
    (probe_existing / "notes.txt").write_text("x")
    steps = steps_of(new, probe_existing)
    assert steps[0] == "linked notes.txt" and "swapped" in steps and steps[-1] == "removed the old files"
    seen = set()
    for k in range(len(steps)):
        old.save(file=folder)
        assert snapshot(folder) == expected(old, mine)
        assert killed_save(new, folder, at_step=k) == 9
        state = snapshot(folder)
        assert state in (expected(old, mine), expected(new, mine)), (k, steps[k], sorted(state))
        seen.add("new" if state == expected(new, mine) else "old")
    assert seen == {"old", "new"}  # kills before the swap keep the old set, after it the new one
    new.save(file=folder)  # the next run completes and removes what the killed runs left behind
    assert snapshot(folder) == expected(new, mine) and no_stage_left(tmp_path)


def test_a_kill_while_creating_the_folder_leaves_no_folder_or_the_whole_set(old_new, tmp_path):
    _, new = old_new
    steps = steps_of(new, tmp_path / "probe")
    assert steps[-1] == "swapped"
    for k in range(len(steps)):
        folder = tmp_path / f"fresh{k}"
        assert killed_save(new, folder, at_step=k) == 9
        assert snapshot(folder) in (None, expected(new, {})), k
    for k in range(len(steps)):  # each folder's next run removes what a killed run left beside it
        new.save(file=tmp_path / f"fresh{k}")
    assert no_stage_left(tmp_path)


def test_without_a_whole_folder_swap_every_mixed_state_refuses_to_compile(old_new, tmp_path):
    """A folder holding a sub-folder is not swapped: files are replaced one by one (the fallback), and each
    intermediate mix of old and new C files stops at an #error instead of building a mismatched model."""
    old, new = old_new
    folder = tmp_path / "fw"
    n_files = len(new.files)
    mixes = 0
    for k in range(n_files):
        old.save(file=folder)
        (folder / "sub").mkdir(exist_ok=True)
        assert killed_save(new, folder, at_replace=k) == 9
        c_files = {n: b for n, b in snapshot(folder).items() if n.startswith("m") and n.endswith((".c", ".h"))}
        if c_files in ({n: v.encode() for n, v in conv.sources.items()} for conv in (old, new)):
            continue  # the C sources are one run's (the build glue names files only)
        mixes += 1
        r = subprocess.run(["gcc", "-std=c11", "-c", "-o", os.devnull, str(folder / "m.c")], capture_output=True,
                           text=True)
        assert r.returncode != 0 and "is not from the generator run of m.c" in r.stderr, (k, r.stderr)
    assert mixes >= 2
    new.save(file=folder)
    names = {n for n in snapshot(folder) if not n.endswith(".tmp")}  # a killed run's hidden temporaries
    assert names == set(new.files) | {"sub"}


CHILD = textwrap.dedent("""
    import sys
    from nitro_mcu.codegen import convert
    from nitro_mcu.trainer.network import Model
    a = convert(Model({spec!r}, "default", 16, seed=1), batch=2, train=True, name="m")
    b = convert(Model({other!r}, "default", 16, seed=2), batch=4, train=True, name="m")
    a.save(file=sys.argv[1])
    print("ready", flush=True)
    while True:
        b.save(file=sys.argv[1])
        a.save(file=sys.argv[1])
""")


def test_sigkill_at_random_moments_never_leaves_a_mixed_folder(old_new, tmp_path):
    old, new = old_new
    folder = tmp_path / "fw"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    rnd = random.Random(12)
    for _ in range(4):
        p = subprocess.Popen([sys.executable, "-c", CHILD.format(spec=SPEC, other=OTHER), str(folder)],
                             stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.01, 0.3))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert snapshot(folder) in (expected(old, {}), expected(new, {}))
