"""The documentation runs as written: every bash/sh and Python block of README.md, docs/*.md, examples/**/*.md
and renode/*.md is run, unchanged, from the root of a temporary copy of the repository, in the order of its file
(a block may use what an earlier block of the same file wrote).  A block that cannot run that way (full
datasets, hours of training, hardware, an installer) says why on the line before its fence:
``<!-- docs-test: skip (the reason) -->``.  Every fence names its language, so no command hides in an untagged
block.  ``nitro-mcu`` and ``python3`` run this checkout's package (a shim on PATH, PYTHONPATH), whatever is
installed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_GLOBS = ("README.md", "docs/*.md", "examples/**/*.md", "renode/*.md")
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<why>.+)\)\s*-->\s*$")
BLOCK_TIMEOUT = 900


@dataclass
class Block:
    path: str
    line: int
    lang: str
    code: str
    skip: str | None   # the reason, for a block marked skip


def doc_files(root: Path = REPO) -> list[Path]:
    found = {p for g in DOC_GLOBS for p in root.glob(g)}
    return sorted(p for p in found if "golden" not in p.parts and ".pytest_cache" not in p.parts)


def blocks(path: Path, root: Path = REPO) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        out.append(Block(str(path.relative_to(root)), text.count("\n", 0, m.start()) + 1, m.group(1),
                         m.group(2), skip.group("why").strip() if skip else None))
    return out


def repo_copy(dest: Path) -> Path:
    """The checkout's files (tracked, and untracked ones git does not ignore) copied to ``dest``."""
    try:
        names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]
    for n in filter(None, names):
        src = REPO / n
        if src.is_file():
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / n)
    return dest


def doc_env(root: Path, bindir: Path) -> dict:
    """PATH with a ``nitro-mcu`` that runs the copy's package; PYTHONPATH to the copy."""
    bindir.mkdir(exist_ok=True)
    shim = bindir / "nitro-mcu"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nitro_mcu.cli "$@"\n')
    shim.chmod(0o755)
    py = bindir / "python3"
    py.symlink_to(sys.executable)
    (bindir / "python").symlink_to(sys.executable)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(root),
               OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("NITRO_FIRMWARE_DIR", None)
    return env


def run_block(b: Block, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    if RUN_LANGS[b.lang] == "bash":
        cmd = ["bash", "-e", "-o", "pipefail", "-c", b.code]
    else:
        cmd = [env["PATH"].split(os.pathsep)[0] + "/python3", "-c", b.code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)


def run_file(doc: str, tmp: Path) -> list[str]:
    """Run the runnable blocks of one doc file in a fresh copy; returns the failures (file:line and output)."""
    root = repo_copy(tmp / "repo")
    env = doc_env(root, tmp / "bin")
    failures = []
    for b in blocks(root / doc, root):
        if b.lang not in RUN_LANGS or b.skip:
            continue
        r = run_block(b, root, env)
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
            failures.append(f"{b.path}:{b.line} ({b.lang}) exit {r.returncode}\n" + "\n".join(tail))
            break  # later blocks may need this one's files
    return failures


DOCS = [str(p.relative_to(REPO)) for p in doc_files()]
RUNNABLE = [d for d in DOCS if any(b.lang in RUN_LANGS and not b.skip for b in blocks(REPO / d))]


@pytest.mark.parametrize("doc", RUNNABLE)
def test_doc_blocks_run_as_written(doc, tmp_path):
    failures = run_file(doc, tmp_path)
    assert not failures, "\n\n".join(failures)


def test_every_fence_names_its_language_and_every_skip_its_reason():
    bad = [f"{b.path}:{b.line}" for d in DOCS for b in blocks(REPO / d) if not b.lang]
    assert not bad, f"untagged code fences (use bash, python, text, c, ...): {', '.join(bad)}"
    text = "\n".join((REPO / d).read_text(encoding="utf-8") for d in DOCS)
    markers = re.findall(r"<!--\s*docs-test[^>]*-->", text)
    assert all(SKIP.search(m) for m in markers), [m for m in markers if not SKIP.search(m)]


def test_the_runnable_docs_cover_the_main_paths():
    """The files a user starts from have runnable blocks: a test that found nothing to run proves nothing."""
    for doc in ("README.md", "docs/model_description.md", "examples/stream_classifier/README.md"):
        assert doc in RUNNABLE, f"{doc} has no runnable block"


def test_a_failing_block_fails_the_doc_test(tmp_path, monkeypatch):
    """The runner itself can fail: a block that exits non-zero is reported with its file and line, and the
    blocks after it do not run; a skip-marked block does not run at all."""
    doc = tmp_path / "src" / "README.md"
    doc.parent.mkdir()
    doc.write_text("# t\n\n<!-- docs-test: skip (never runs) -->\n```bash\nexit 3\n```\n\n"
                   "```bash\necho ok > a.txt\n```\n\n```python\nimport sys; sys.exit(open('a.txt').read() == 'ok\\n')\n```\n"
                   "\n```bash\ntouch never\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", doc.parent)
    monkeypatch.setattr(sys.modules[__name__], "repo_copy", lambda dest: shutil.copytree(doc.parent, dest))
    failures = run_file("README.md", tmp_path / "run")
    assert len(failures) == 1 and failures[0].startswith("README.md:12 (python) exit 1")
    assert (tmp_path / "run" / "repo" / "a.txt").is_file() and not (tmp_path / "run" / "repo" / "never").exists()
