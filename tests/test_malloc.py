"""tune_malloc changes the whole process's allocator: only programs opt in (CLI train and demo), never the library."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nitro_mcu import cli

REPO = Path(__file__).resolve().parents[1]

LIBRARY_RUN = """
import nitro_mcu as nm
from nitro_mcu.trainer.malloc import tune_malloc
model = nm.build({"kind": "mlp", "input_shape": [784], "num_classes": 10, "hidden": [16]}, seed=1)
data = nm.load_data("bundled", seed=1)
hist = nm.train(model, data, epochs=1, batch_size=64)
nm.evaluate(model, data)
nm.save(model, sys.argv[1], data=data, history=hist)
nm.load(sys.argv[1])
assert len(hist.records) == 1
print(tune_malloc.cache_info().currsize)
"""


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"), **env}
    return subprocess.run([sys.executable, "-c", "import sys\n" + code, *args], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=300)


def test_building_and_training_through_the_library_never_tunes_malloc(tmp_path):
    r = _python(LIBRARY_RUN, str(tmp_path / "m.nitro"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0"], r.stdout  # the memoised function never ran in that process


def test_tune_malloc_runs_once_and_honours_the_opt_out():
    code = "from nitro_mcu.trainer.malloc import tune_malloc\nprint(tune_malloc(), tune_malloc(), " \
           "tune_malloc.cache_info().hits)"
    off = _python(code, NITRO_MCU_MALLOC_TUNE="0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["False", "False", "1"]
    on = _python(code)
    assert on.returncode == 0, on.stderr
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        glibc = False
    assert on.stdout.split() == [str(glibc), str(glibc), "1"], on.stdout  # active wherever glibc's mallopt is


def test_cli_train_and_demo_opt_in(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append("tune") or True)
    (tmp_path / "tiny.json").write_text(json.dumps(dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[8])))
    rc = cli.main(["train", str(tmp_path / "tiny.json"), "--epochs", "1", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    assert calls == ["tune"]
    import nitro_mcu.demo

    monkeypatch.setattr(nitro_mcu.demo, "run_demo", lambda a: calls.append("demo") or 0)
    assert cli.main(["demo", "--out", str(tmp_path / "d")]) == 0
    assert calls == ["tune", "tune", "demo"]  # tuned before the demo trains
