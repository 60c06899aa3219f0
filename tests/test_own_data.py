"""Your own data: arrays, .npz, CSV and image folders through load_data / train / the CLI, and their clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu import api
from nitro_mcu.trainer import data as D
from nitro_mcu.trainer.loop import chance_note

REPO = Path(__file__).resolve().parents[1]
TAB = {"kind": "mlp", "input_shape": [3], "num_classes": 3, "hidden": [16]}


def bundled_images(n=600):
    ds = D.load_dataset("bundled")
    return ds.x_train[:n, 0], ds.y_train[:n]


def write_csv(path: Path, n=240, header=True, seed=0):
    rng = np.random.default_rng(seed)
    names = ("setosa", "versicolor", "virginica")
    rows = []
    for i in range(n):
        c = i % 3
        v = rng.normal(loc=[c, 2 * c, -c], scale=0.5)
        rows.append(f"{v[0]:.1f},{v[1]:.2f},{int(10 * v[2])},{names[c]}")
    path.write_text(("length,width,petal,species\n" if header else "") + "\n".join(rows) + "\n")
    return path


def test_arrays_train_directly_and_stats_come_from_the_training_part():
    x, y = bundled_images()
    model = nm.build("mlp1", seed=3)
    hist = nm.train(model, (x, y), epochs=1, progress=False)
    data = hist.data
    assert data.name == "arrays" and len(data.x_test) == len(x) // 6
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == len(x)
    # statistics of the training part only (the held-out test and the validation split play no part)
    ds = D.load_source((x, y), seed=3, num_classes=10)
    mu, mad = D.compute_norm_stats(ds.x_train[data.train_index])
    assert data.mu.tolist() == mu.tolist() and data.mad.tolist() == mad.tolist()
    # the same seed holds out the same samples; another seed others
    again = nm.load_data((x, y), seed=3)
    assert np.array_equal(again.x_test, data.x_test) and np.array_equal(again.y_test, data.y_test)
    assert not np.array_equal(nm.load_data((x, y), seed=4).y_test, data.y_test)


def test_array_layouts_and_npz(tmp_path):
    x, y = bundled_images(120)
    nchw = nm.load_data((x[:, None], y), val_size=0)
    nhwc = nm.load_data((x[:, :, :, None], y), val_size=0)
    gray = nm.load_data((x, y), val_size=0)
    assert nchw.x_train.shape[1:] == (1, 28, 28)
    assert np.array_equal(nchw.x_train, nhwc.x_train) and np.array_equal(nchw.x_train, gray.x_train)
    np.savez(tmp_path / "pair.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    d = nm.load_data(str(tmp_path / "pair.npz"), val_size=10)
    assert d.name == "pair" and len(d.x_test) == 20 and len(d.x_train) == 90
    np.savez(tmp_path / "one.npz", x=x, y=y)
    assert len(nm.load_data(str(tmp_path / "one.npz"), test_size=30).x_test) == 30


def test_features_are_normalised_per_column():
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 5, 300), rng.integers(-40000, 40000, 300), np.full(300, 7)], axis=1)
    y = (x[:, 1] > 0).astype(np.int64) + (x[:, 0] > 2)
    d = nm.load_data((x, y), val_size=0)
    assert d.x_train.shape[1:] == (3, 1, 1) and d.x_train.dtype == np.int8
    assert d.mad.tolist()[2] == 1  # a constant column normalises to a constant, not an error
    v = x[np.sort(D.userdata.Rng(0, D.userdata.STREAM_HOLDOUT).permutation(300)[:250])] - 128
    ref_mu = [int(np.trunc(c.sum() / len(c))) for c in v.T]
    assert sorted(d.mu.tolist()) == sorted(ref_mu)
    # the formula for int64 features is the table's for pixels
    px = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16).repeat(2, axis=0)
    mu, mad = D.compute_norm_stats(px)
    assert np.array_equal(D.normalize(px, mu, mad), D.normalize(px.astype(np.int64), mu, mad))
    assert [mu.tolist(), mad.tolist()] == [m.tolist() for m in D.compute_norm_stats(px.astype(np.int64))]


def test_csv_round_trip_through_the_model_file(tmp_path):
    csv_path = write_csv(tmp_path / "flowers.csv")
    data = nm.load_data(str(csv_path))
    assert data.classes == ("setosa", "versicolor", "virginica")
    assert data.load_info["decimals"] == [1, 2, 0] and data.load_info["label_column"] == "species"
    model = nm.build(TAB)
    hist = nm.train(model, data, epochs=3, progress=False)
    nm.save(model, tmp_path / "m.nitro", data=data, history=hist)
    loaded, meta = nm.load(tmp_path / "m.nitro")
    info = meta["norm"]["load_info"]
    assert info["source"] == str(csv_path.resolve()) and meta["norm"]["mu"] == data.mu.tolist()
    again = nm.load_data(info["source"], 0, None, 0, "test", norm=meta["norm"])
    assert np.array_equal(again.x_test, data.x_test)
    assert nm.evaluate(loaded, again)["test_accuracy"] == nm.evaluate(model, data)["test_accuracy"]
    # no header: the last column is the label; integer labels stay integers
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"{i % 5},{(i * 7) % 11},{i % 2}\n" for i in range(60)))
    p = nm.load_data(str(plain), val_size=0)
    assert p.classes is None and p.num_classes == 2 and p.x_train.shape[1:] == (2, 1, 1)


def test_csv_without_a_header_keeps_its_first_row_when_the_labels_are_names(tmp_path):
    rows = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(12))
    (tmp_path / "named.csv").write_text(rows)
    p = nm.load_data(str(tmp_path / "named.csv"), val_size=0, test_size=2)
    assert len(p.x_train) + len(p.x_test) == 12 and p.classes == ("a", "b")
    assert p.load_info["label_column"] == 2  # by position: there is no header to name it
    (tmp_path / "pandas.csv").write_text("0,1,label\n" + rows)  # DataFrame.to_csv: numbered feature columns
    p = nm.load_data(str(tmp_path / "pandas.csv"), val_size=0, test_size=2)
    assert len(p.x_train) + len(p.x_test) == 12 and p.load_info["label_column"] == "label"


@pytest.mark.parametrize("text, needle", [
    ("a,b,label\n1,2,0\n1,x,1\n", "row 3, b: 'x' is not a number"),
    ("a,b,label\n1,2,0\n1,2\n", "row 3 has 2 columns"),
    ("a,label\n0.1234567,0\n1,1\n", "more than 6 decimals"),
    ("a,label\n5e12,0\n1,1\n", "beyond 2**31"),
    ("a,label\n1,0\n2,2\n3,0\n", "class 1 has no sample"),
    ("", "the CSV is empty"),
    ("a;b;label\n1;2;0\n3;4;1\n", "cells separated by ';': separate the values with commas"),
    ("1\t2\t0\n3\t4\t1\n", "cells separated by tabs: separate the values with commas"),
])
def test_csv_errors(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(D.DataError, match=needle.replace("*", r"\*").replace("(", r"\(")):
        nm.load_data(str(p))


def test_csv_more_decimals_than_the_model_read_is_refused(tmp_path):
    csv_path = write_csv(tmp_path / "f.csv")
    info = nm.load_data(str(csv_path)).load_info
    other = tmp_path / "g.csv"
    other.write_text("length,width,petal,species\n" + "1.25,1.0,3,setosa\n" * 4)
    with pytest.raises(D.DataError, match="more decimals than the model's data"):
        D.load_source(str(other), info=info)


@pytest.mark.parametrize("bad, needle", [
    ((np.zeros((20, 4)), np.zeros(20, int)), "holds floats"),
    ((np.zeros((20, 4), int), np.zeros(20)), "labels are integers 0..K-1 or class names"),
    ((np.zeros((20, 4), int), np.zeros(19, int)), "19 labels for 20 samples"),
    ((np.zeros((20, 4), int), -np.ones(20, int)), "label -1 is negative"),
    ((np.full((20, 8, 8), 300), np.arange(20) % 2), r"pixels must lie in \[0, 255\], found 300"),
    ((np.full((20, 16, 3), -300, np.int16), np.arange(20) % 2), r"windows of readings are features: x.reshape\(len\(x\), -1\)"),
    ((np.zeros(20, int), np.zeros(20, int)), "must be \\[N, F\\] features"),
    ((np.zeros((20, 4), int), np.zeros((20, 2), int)), "must be 1-D"),
    ((np.zeros((20, 4), int),), "a pair \\(x, y\\)"),
])
def test_array_errors_are_one_clear_line(bad, needle):
    with pytest.raises(D.DataError, match=needle) as e:
        nm.load_data(bad)
    assert "\n" not in str(e.value)


def test_train_checks_hyper_parameters_first_then_labels_against_the_model():
    x, y = bundled_images(200)
    model = nm.build("mlp1")
    with pytest.raises(ValueError, match="epochs"):
        nm.train(model, (x.astype(float), y), epochs=0)  # hyper-parameters are refused before the data is read
    with pytest.raises(D.DataError, match="label 12 is outside the 10 classes"):
        nm.train(model, (x, np.where(np.arange(200) == 5, 12, y)), epochs=1, progress=False)
    with pytest.raises(ValueError, match='describe a model for it in a JSON file'):
        nm.train(model, (np.ones((50, 3), int), np.arange(50) % 2), epochs=1, progress=False)


def make_image_folder(root: Path, rgb: bool, split: bool):
    from PIL import Image  # a test extra: never skipped
    rng = np.random.default_rng(1)
    parts = [root / "train", root / "test"] if split else [root]
    for part in parts:
        for c, name in enumerate(("cat", "dog")):
            (part / name).mkdir(parents=True)
            for i in range(12):
                a = rng.integers(0, 80, (10, 12)) + 150 * c
                img = np.stack([a, a // 2, 255 - a], -1) if rgb else a
                Image.fromarray(img.astype(np.uint8)).save(part / name / f"{i}.png")


@pytest.mark.parametrize("rgb, split", [(False, False), (True, True)])
def test_image_folder(tmp_path, rgb, split):
    make_image_folder(tmp_path / "pets", rgb, split)
    d = nm.load_data(str(tmp_path / "pets"), val_size=2)
    assert d.classes == ("cat", "dog") and d.x_train.shape[1:] == ((3 if rgb else 1), 10, 12)
    assert len(d.x_test) == (24 if split else 24 // 6)
    spec = {"kind": "cnn", "input_shape": list(d.x_train.shape[1:]), "num_classes": 2,
            "features": [["conv", 4, 3, 1, 1], ["maxpool", 2, 2]], "fc_hidden": [8]}
    nm.train(nm.build(spec), d, epochs=1, batch_size=8, progress=False)


def test_image_folder_errors(tmp_path, monkeypatch):
    from PIL import Image  # a test extra: never skipped
    make_image_folder(tmp_path / "pets", False, False)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "pets" / "dog" / "odd.png")
    with pytest.raises(D.DataError, match="resize the images to one size"):
        nm.load_data(str(tmp_path / "pets"))
    monkeypatch.setitem(sys.modules, "PIL", None)  # Pillow missing: one line that says how to get it
    with pytest.raises(D.DataError, match=r"needs Pillow: pip install 'nitro-mcu\[images\]'"):
        nm.load_data(str(tmp_path / "pets"))


def test_chance_note():
    assert "near chance" in chance_note(1, 1050, 10)
    assert chance_note(1, 3000, 10) == "" and chance_note(9, 1000, 10) == ""


def test_cli_trains_and_evaluates_a_csv(tmp_path):
    csv_path = write_csv(tmp_path / "flowers.csv", n=300)
    (tmp_path / "tab.json").write_text(json.dumps(TAB))
    env_cmd = [sys.executable, "-m", "nitro_mcu.cli"]
    r = subprocess.run(env_cmd + ["train", str(tmp_path / "tab.json"), "--data", str(csv_path), "--epochs", "2",
                                  "--test-size", "60", "--out", str(tmp_path / "o"), "--quiet"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "/ 60 test samples" in r.stdout and "(60 samples)" in r.stdout  # features, not images
    png = tmp_path / "o" / "tab_curves.png"
    assert png.is_file() or "no PNG" in r.stdout
    e = subprocess.run(env_cmd + ["eval", str(tmp_path / "o" / "tab.nitro"), "--json"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert e.returncode == 0, e.stderr
    assert json.loads(e.stdout)["test_images"] == 60
    e = subprocess.run(env_cmd + ["eval", str(tmp_path / "o" / "tab.nitro")], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert "on 60 test samples of flowers" in e.stdout, e.stdout
    bad = subprocess.run(env_cmd + ["train", "mlp1", "--data", str(csv_path), "--epochs", "1", "--out",
                                    str(tmp_path / "o2")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "describe a model" in bad.stderr


def test_standard_names_refuse_test_size():
    with pytest.raises(ValueError, match="test_size applies to your own data"):
        api.load_data("bundled", test_size=10)


@pytest.mark.parametrize("name, needle", [
    ("windows.npy", "windows.npy: no such file or folder"),
    ("logs/", "logs/: no such file or folder"),
    ("windows.txt", "windows.txt: your own data is an .npz \\(np.savez\\(file, x=x, y=y\\)\\), a .csv or a folder"),
])
def test_a_file_of_another_kind_is_refused_naming_the_formats_of_own_data(tmp_path, monkeypatch, name, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "windows.txt").write_text("1,2,0\n")
    with pytest.raises(D.DataError, match=needle):
        nm.load_data(name)


@pytest.mark.parametrize("shape, args, needle", [
    ([7], [], "the data has 3 features per sample, the model expects (7,)"),
    ([3], ["--batch", "64"], "the training part holds 45 samples, fewer than one batch (64): choose a batch of at "
                             "most 45 (--batch, batch_size=)"),  # 60 rows: 10 held out for testing, 5 for validation
])
def test_cli_refuses_data_that_cannot_train_before_it_prints_or_trains(tmp_path, shape, args, needle):
    csv_path = write_csv(tmp_path / "flowers.csv", n=60)
    (tmp_path / "m.json").write_text(json.dumps({**TAB, "input_shape": shape}))
    r = subprocess.run([sys.executable, "-m", "nitro_mcu.cli", "train", str(tmp_path / "m.json"), "--data",
                        str(csv_path), "--out", str(tmp_path / "o"), "--quiet", *args],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout  # no "training ..." or "lr_inv search" line first
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_a_test_source_with_labels_of_another_kind_names_the_label_not_a_class_count(tmp_path):
    named = write_csv(tmp_path / "named.csv", n=60)  # class names setosa, versicolor, virginica
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("length,width,petal,species\n" + "".join(f"{i % 5},{i % 7},{i % 3},{i % 3}\n" for i in range(30)))
    with pytest.raises(D.DataError, match="label '0' is not one of the classes setosa, versicolor, virginica"):
        nm.load_data(str(named), test=str(numbered))
