"""Host training that never loses work: epoch checkpoints in the run's .nitro, --resume bit-identical to a
straight run (2 epochs = 1 + resume 1), Ctrl-C keeps the last finished epoch, --out checked before training, device checkpoints imported."""
import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nitro_mcu import checkpoint as ck, modelfile
from nitro_mcu.codegen import convert
from nitro_mcu.device.compiled import CompiledModel
from nitro_mcu.device.flashsim import CkptLib, NorFlash, Storage
from nitro_mcu.resume import MEMBER, ResumeError, check_out
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.rng import Rng

from test_cli import REPO, run_proc

SPEC = {"kind": "mlp", "input_shape": [784], "num_classes": 10, "hidden": [12], "dropout": 0.1}
ARGS = ["--augment", "--quiet", "--seed", "5"]


def train(tmp, *extra):
    return run_proc("train", str(tmp / "tiny.json"), "--out", str(tmp / "out"), *ARGS, *extra)


def outputs(folder: Path):
    model, meta, files = modelfile.load_files(folder / "tiny.nitro")
    csv = [",".join(line.split(",")[:6]) for line in (folder / "tiny_metrics.csv").read_text().splitlines()]
    return model, meta, files, csv          # the metrics without the wall-clock column


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    (tmp / "tiny.json").write_text(json.dumps(SPEC))
    r = train(tmp, "--epochs", "2")
    assert r.returncode == 0, r.stderr
    return outputs(tmp / "out")


def same_run(a, b):
    (ma, meta_a, fa, csv_a), (mb, meta_b, fb, csv_b) = a, b
    for k, w in ma.weights.items():
        np.testing.assert_array_equal(mb.weights[k], w, err_msg=k)
    assert ma.dropout_rng.state == mb.dropout_rng.state and fa[MEMBER] == fb[MEMBER]
    assert csv_a == csv_b and len(csv_a) == 3
    ta, tb = meta_a["training"], meta_b["training"]
    for k in ("best_epoch", "epochs_run", "best_monitor_bp", "test_at_best_bp", "final_lr_inv"):
        assert ta[k] == tb[k], k


def test_one_epoch_then_resume_one_equals_two_straight(tmp_path, straight):
    (tmp_path / "tiny.json").write_text(json.dumps(SPEC))
    assert train(tmp_path, "--epochs", "1").returncode == 0
    _, meta, files, _ = outputs(tmp_path / "out")
    assert meta["training"]["resume"]["epoch"] == 1 and ck.decode(files[MEMBER]).step == 70   # 4500 // 64
    r = train(tmp_path, "--epochs", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "after epoch 1" in r.stdout
    same_run(straight, outputs(tmp_path / "out"))
    umask = os.umask(0)
    os.umask(umask)
    for f in (tmp_path / "out").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f        # normal permissions, not 0600
    bad = train(tmp_path, "--epochs", "2", "--resume", "--batch", "32")
    assert bad.returncode == 2 and "the run used batch 64, not 32" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    unset = train(tmp_path, "--epochs", "2", "--resume", "--lr-inv", "64")   # an option the run left to its default
    assert unset.returncode == 2 and "the run used lr_inv unset (the default), not 64" in unset.stderr, unset.stderr
    none = run_proc("train", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "empty"), "--resume", *ARGS)
    assert none.returncode == 2 and "nothing to resume" in none.stderr
    # a run saved by a version-1 nitro-mcu (no active-class count) is refused by its version, in one line
    from test_checkpoint import v1_blob
    model, meta, files, _ = outputs(tmp_path / "out")
    step = ck.decode(files[MEMBER]).step
    modelfile.save(model, tmp_path / "out" / "tiny.nitro", norm=meta.get("norm"), training=meta["training"],
                   files={**files, MEMBER: v1_blob(model, step, meta["training"]["final_lr_inv"])})
    old = train(tmp_path, "--epochs", "3", "--resume")
    assert old.returncode == 2 and "format version 1 is not supported" in old.stderr, old.stderr
    assert len(old.stderr.strip().splitlines()) == 1


def test_ctrl_c_keeps_the_last_finished_epoch_and_resume_completes_the_run(tmp_path, straight):
    (tmp_path / "tiny.json").write_text(json.dumps(SPEC))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nitro_mcu.cli", "train", str(tmp_path / "tiny.json"), "--out",
           str(tmp_path / "out"), *ARGS, "--epochs", "2"]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = tmp_path / "out" / "tiny.nitro"
    t0 = time.monotonic()
    while not target.exists() and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert p.returncode == 130 and err.count("interrupted") == 1 and "Traceback" not in err, err
    _, meta, _, _ = outputs(tmp_path / "out")
    # the interrupt lands after epoch 1's file appeared: in epoch 2, or (a loaded machine) after it finished
    kept = meta["training"]["resume"]["epoch"]
    assert kept in (1, 2) and f"keeps epoch {kept} " in err and "finished" not in meta["training"]["resume"], err
    r = train(tmp_path, "--epochs", "2", "--resume")
    assert r.returncode == 0, r.stderr
    same_run(straight, outputs(tmp_path / "out"))


def test_out_is_checked_before_training(tmp_path, monkeypatch):
    (tmp_path / "tiny.json").write_text(json.dumps(SPEC))
    (tmp_path / "file").write_text("x")
    t0 = time.monotonic()
    r = run_proc("train", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "file" / "out"), *ARGS)
    assert r.returncode == 2 and "not writable" in r.stderr and "training" not in r.stdout
    assert time.monotonic() - t0 < 30
    import nitro_mcu.resume as res

    monkeypatch.setattr(res.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(ResumeError, match="1000 bytes free"):
        check_out(tmp_path / "ok", 5000)


def test_a_device_flash_dump_becomes_a_nitro_file_and_goes_back(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(SPEC))
    model = Model(SPEC, "default", 16, seed=0)
    cm = CompiledModel(convert(copy.deepcopy(model), batch=4, train=True, name="imp"))
    lib = CkptLib(cm)
    py = copy.deepcopy(model)
    r = Rng(3, 9)
    cm.set_lr_inv(300)
    for _ in range(3):
        x, y = r.randint(-128, 127, (4, 784)).astype(np.int8), r.randint(0, 9, (4,))
        cm.train_batch(x, y)
        py.train_step(x, y, 300)
    page = 512
    flash = NorFlash(page, ck.region_bytes(model, page) // page)
    assert lib.save(Storage(flash)) == 0 and lib.save(Storage(flash)) == 0
    (tmp_path / "dump.bin").write_bytes(bytes(flash.mem))
    out = tmp_path / "dev.nitro"
    res = run_proc("import-checkpoint", str(tmp_path / "dump.bin"), "--model", str(spec), "--weights", "int16",
                   "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "step 3" in res.stdout and "sequence 2" in res.stdout
    m, meta = modelfile.load(out)
    for k, w in py.weights.items():
        np.testing.assert_array_equal(m.weights[k], w, err_msg=k)
    assert m.dropout_rng.state == py.dropout_rng.state and meta["training"]["final_lr_inv"] == 300
    back = tmp_path / "back.ckpt"
    assert run_proc("export-checkpoint", str(out), "--out", str(back)).returncode == 0
    assert back.read_bytes() == ck.encode(py, 3, 300)
    img = tmp_path / "img.bin"
    assert run_proc("export-checkpoint", str(out), "--out", str(img), "--flash-image", "--page-size", "512").returncode == 0
    cm.reset()
    assert lib.load(Storage(NorFlash(page, ck.region_bytes(model, page) // page, img.read_bytes()))) == 0
    assert lib.export(ck.size(model)) == ck.encode(py, 3, 300)
    wrong = run_proc("import-checkpoint", str(tmp_path / "dump.bin"), "--model", str(spec), "--out", str(out))
    assert wrong.returncode == 2 and "neither a checkpoint of this model" in wrong.stderr    # int32 model


def test_a_run_interrupted_after_its_last_epoch_is_finished_by_resume(tmp_path, straight):
    """Ctrl-C in the refit, or before the final files, leaves the last epoch's checkpoint: --resume finishes the
    run from it (it used to answer 'nothing left to train'); a finished run is still refused."""
    from test_refused_up_front import rewrite

    (tmp_path / "tiny.json").write_text(json.dumps(SPEC))
    assert train(tmp_path, "--epochs", "2").returncode == 0
    path = tmp_path / "out" / "tiny.nitro"

    def legacy(meta):           # a finished run written before the flag: its seconds say it is finished
        del meta["training"]["resume"]["finished"]
    rewrite(path, legacy)
    done = train(tmp_path, "--epochs", "2", "--resume")
    assert done.returncode == 2 and "nothing left to train" in done.stderr, done.stderr

    def last_epoch_only(meta):  # what the last epoch's checkpoint holds: no final-write fields
        for k in ("seconds", "epochs", "batch_size", "augment", "recipe"):
            meta["training"].pop(k, None)
    rewrite(path, last_epoch_only)
    r = train(tmp_path, "--epochs", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert "after epoch 2: its epochs are done; finishing the run" in r.stdout
    same_run(straight, outputs(tmp_path / "out"))
    again = train(tmp_path, "--epochs", "2", "--resume")
    assert again.returncode == 2 and "nothing left to train" in again.stderr, again.stderr
