"""Training recipes (nitro_mcu/trainer/recipes.py): the step schedule, test-set reads, the documented draw order,
determinism, which recipe a preset gets, and that the reference profile and the paper's recipe are untouched."""
from __future__ import annotations

import copy
import csv

import numpy as np
import pytest

import nitro_mcu as nm
from nitro_mcu import api
from nitro_mcu.spec import PRESETS, SpecError, normalize_spec
from nitro_mcu.trainer import loop as training
from nitro_mcu.trainer.network import Model
from nitro_mcu.trainer.optim import Schedule
from nitro_mcu.trainer.recipes import Recipe, paper_recipe, recipe_for, recipe_from_dict

from test_cli import run_main
from test_training import _FlatAccuracy, _tiny_data, lr_profile

SPEC = dict(kind="mlp", input_shape=[16], num_classes=3, hidden=[4])
SMALL = dict(kind="mlp", input_shape=[784], num_classes=10, hidden=[16])  # bundled-data runs in a fraction of mlp1's time
TUNED = ("mlp1", "mlp2", "mcu_cnn")


def test_step_schedule_multiplies_after_each_milestone_and_never_stops():
    s = Schedule(256, factor=3, milestones=(50, 30, 70, 30))
    used = []
    for epoch in range(1, 151):
        used.append(s.lr_inv)
        assert not s.end_epoch(epoch, 5000)  # constant accuracy would stop the paper's rule at 65
    assert lr_profile(used) == [(1, 256), (31, 768), (51, 2304), (71, 6912)]
    for bad in (dict(milestones=(0,)), dict(milestones=(5,), factor=0)):
        with pytest.raises(ValueError, match="milestones"):
            Schedule(512, **bad)


def test_train_loop_with_milestones_runs_every_epoch_and_keeps_the_best(monkeypatch):
    monkeypatch.setattr(training, "accuracy_bp", _FlatAccuracy(5000))
    rec = Recipe(epochs=80, lr_inv=256, milestones=(30, 50, 70))
    hist = nm.train(Model(SPEC, seed=0), _tiny_data(), epochs=80, recipe=rec, progress=False)
    assert len(hist.records) == 80 and not hist.stopped_early and hist.best_epoch == 1
    assert lr_profile([r.lr_inv for r in hist.records]) == [(1, 256), (31, 768), (51, 2304), (71, 6912)]


def test_test_reads_never_and_end(monkeypatch):
    """'never': only the validation split is evaluated; 'end': one more read, of the kept weights."""
    flat = _FlatAccuracy(5000)
    monkeypatch.setattr(training, "accuracy_bp", flat)
    hist = nm.train(Model(SPEC, seed=0), _tiny_data(), epochs=4, test_reads="never", progress=False)
    assert flat.calls == 4 and hist.test_at_best_bp == -1 and {r.test_acc_bp for r in hist.records} == {-1}
    assert hist.to_csv().splitlines()[1].split(",")[5] == ""  # no test figure in the CSV
    flat.calls = 0
    hist = nm.train(Model(SPEC, seed=0), _tiny_data(), epochs=4, test_reads="end", progress=False)
    assert flat.calls == 5 and hist.test_at_best_bp == 5000
    with pytest.raises(ValueError, match="test_reads"):
        nm.train(Model(SPEC, seed=0), _tiny_data(), epochs=1, test_reads="sometimes", progress=False)


def test_test_reads_end_is_the_kept_weights_and_refused_when_the_test_set_drives():
    data = nm.load_data("bundled", seed=3)
    model = nm.build("mlp1", seed=3)
    hist = nm.train(model, data, epochs=2, test_reads="end", progress=False)
    assert hist.test_at_best_bp / 10000 == nm.evaluate(model, data)["test_accuracy"] > 0
    with pytest.raises(ValueError, match="test set drives"):
        nm.train(nm.build("mlp1", profile="reference"), nm.load_data("bundled", monitor="test"), epochs=1,
                 test_reads="end", progress=False)


def _twin_epoch(model: Model, data, rec: Recipe, batch: int = 64) -> None:
    """One epoch of a recipe by hand, from the draw order documented in recipes.py / data.augment alone."""
    rng = data.rng
    n = len(data.x_train)
    perm = rng.permutation(n)
    pad, span = rec.crop_pad, 2 * rec.crop_pad + 1
    for b in range(n // batch):
        idx = perm[b * batch:(b + 1) * batch]
        xs = data.x_train[idx].copy()
        for i in range(len(xs)):
            if int(rng.below(2, 1)[0]) == 1:
                top, left = (int(v) for v in rng.below(span, 2))
                img = xs[i]
                padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), constant_values=img.min())
                xs[i] = padded[:, top:top + img.shape[1], left:left + img.shape[2]]
            if rec.flip and int(rng.below(2, 1)[0]) == 1:
                xs[i] = xs[i][:, :, ::-1]
        model.train_step(xs, data.y_train[idx], rec.lr_inv)


def test_a_recipe_epoch_follows_the_documented_draw_order():
    """Shuffle, then per batch and per sample: crop c = below(2), top/left = below(2p+1) if c, flip f = below(2)."""
    rec = Recipe(epochs=1, lr_inv=128, crop_pad=1, flip=True)
    model, data = nm.build("mlp1", seed=7), nm.load_data("bundled", seed=7)
    nm.train(model, data, epochs=1, recipe=rec, progress=False, test_reads="never")
    twin, tdata = nm.build("mlp1", seed=7), nm.load_data("bundled", seed=7)
    _twin_epoch(twin, tdata, rec)
    assert data.rng.state == tdata.rng.state
    for k in model.weights:
        np.testing.assert_array_equal(model.weights[k], twin.weights[k])


def test_a_recipe_run_is_determined_by_its_seed_and_never_by_test_reads():
    rec = api.recipe("mlp2")
    runs = []
    for reads in ("epoch", "never", "epoch"):
        model = nm.build(SMALL, seed=5)
        hist = nm.train(model, nm.load_data("bundled", seed=5), epochs=2, recipe=replace_ms(rec, (1,)),
                        test_reads=reads, progress=False)
        runs.append((model.weights, [(r.lr_inv, r.train_acc_bp, r.monitor_acc_bp) for r in hist.records]))
    assert runs[0][1] == runs[1][1] == runs[2][1] and runs[0][1][1][0] == 3 * runs[0][1][0][0]
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
        np.testing.assert_array_equal(runs[0][0][k], runs[2][0][k])


def replace_ms(rec: Recipe, milestones) -> Recipe:
    return Recipe(**{**rec.to_dict(), "milestones": tuple(milestones), "epochs": max(rec.epochs, 2)})


def test_the_paper_recipe_is_the_plain_train_call():
    """api.train with the paper's recipe = api.train without one (the behaviour before recipes), bit for bit."""
    out = []
    for rec in (None, api.recipe("mlp1", which="paper")):
        model = nm.build(SMALL, seed=2)
        hist = nm.train(model, nm.load_data("bundled", seed=2), epochs=2, recipe=rec, progress=False)
        out.append((model.weights, [(r.lr_inv, r.train_acc_bp, r.monitor_acc_bp, r.test_acc_bp)
                                    for r in hist.records]))
    assert out[0][1] == out[1][1] and out[0][1][0][0] == 512
    for k in out[0][0]:
        np.testing.assert_array_equal(out[0][0][k], out[1][0][k])


def test_which_recipe_a_preset_gets():
    for name in PRESETS:
        defaults = {k: PRESETS[name][k] for k in ("dataset", "augment") if k in PRESETS[name]}
        assert api.recipe(name, "reference") == api.recipe(name, which="paper") == paper_recipe(defaults)
        assert not api.recipe(name, "reference").refit and api.recipe(name, "reference").lr_inv is None
    for name in TUNED:
        r = api.recipe(name)
        assert r == recipe_from_dict(PRESETS[name]["recipe"]) and r.refit and r != api.recipe(name, "reference")
        assert all(0 < m < r.epochs for m in r.milestones)
    assert api.recipe("mlp3") == Recipe(crop_pad=2)  # no recipe of its own: the paper's, with its augmentation
    assert api.recipe("mlp3_fmnist") == Recipe(crop_pad=2, flip=True)
    assert api.recipe("mlp3", dataset="fashion-mnist") == Recipe(crop_pad=2, flip=True)
    assert api.recipe(dict(SPEC)) == Recipe() and Recipe().augment is None and Recipe(crop_pad=1).augment == (1, False)
    assert api.recipe(dict(SPEC, recipe=dict(lr_inv=64, flip=True))) == Recipe(lr_inv=64, flip=True)
    assert recipe_for({"recipe": {"lr_inv": 64}}, nm.PROFILES["reference"]) == Recipe()
    with pytest.raises(SpecError, match="recipe"):
        recipe_for({}, "default", "best")


@pytest.mark.parametrize("recipe, needle", [
    ([1], "'recipe' must be an object"), ({"lr": 5}, "unknown key(s) in 'recipe': lr"),
    ({"lr_inv": 0}, "recipe.lr_inv"), ({"epochs": 2.5}, "recipe.epochs"), ({"crop_pad": -1}, "recipe.crop_pad"),
    ({"flip": 1}, "recipe.flip"), ({"refit": "yes"}, "recipe.refit"), ({"factor": 0}, "recipe.factor"),
    ({"epochs": 10, "milestones": [5, 3]}, "increasing"), ({"epochs": 10, "milestones": [10]}, "[1, 9]"),
])
def test_a_bad_recipe_is_one_line_naming_the_key(recipe, needle):
    with pytest.raises(SpecError) as e:
        normalize_spec(dict(SPEC, recipe=recipe))
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert "recipe" not in normalize_spec(dict(SPEC, recipe={"lr_inv": 64}))  # a training default, not architecture


def test_the_reference_profile_cli_run_is_the_papers(tmp_path, capsys):
    """--profile reference: lr_inv 512 (the description's), no augmentation, no refit, whatever the preset's recipe."""
    rc, text, err = run_main(capsys, "train", "mlp1", "--profile", "reference", "--epochs", "1", "--quiet",
                             "--out", str(tmp_path / "r"))
    assert rc == 0, err
    assert "refit: a fresh" not in text and "augment none" in text
    assert [r["lr_inv"] for r in csv.DictReader((tmp_path / "r" / "mlp1_metrics.csv").open())] == ["512"]
    meta = nm.load(tmp_path / "r" / "mlp1.nitro")[1]["training"]
    assert meta["recipe"] == Recipe().to_dict() and meta["augment"] is False


def test_the_cli_trains_with_the_recipe_and_refits_by_default(tmp_path, capsys):
    rc, text, err = run_main(capsys, "train", "mlp2", "--epochs", "1", "--quiet", "--out", str(tmp_path / "t"))
    assert rc == 0, err
    assert "refit: a fresh model on all 5000 training images" in text and "augment (1, False)" in text
    assert [r["lr_inv"] for r in csv.DictReader((tmp_path / "t" / "mlp2_metrics.csv").open())] == ["256"]
    meta = nm.load(tmp_path / "t" / "mlp2.nitro")[1]["training"]
    assert meta["recipe"] == api.recipe("mlp2").to_dict() and meta["monitor"] == "none"  # the refit's model
    rc, text, err = run_main(capsys, "train", "mlp2", "--epochs", "1", "--quiet", "--recipe", "paper", "--no-augment",
                             "--out", str(tmp_path / "p"))
    assert rc == 0 and "refit: a fresh" not in text and "augment none" in text, err
    assert [r["lr_inv"] for r in csv.DictReader((tmp_path / "p" / "mlp2_metrics.csv").open())] == ["512"]
    rc, text, err = run_main(capsys, "train", "mlp2", "--epochs", "1", "--quiet", "--no-refit", "--lr-inv", "300",
                             "--out", str(tmp_path / "n"))
    assert rc == 0 and "refit: a fresh" not in text, err
    assert [r["lr_inv"] for r in csv.DictReader((tmp_path / "n" / "mlp2_metrics.csv").open())] == ["300"]


def test_presets_keep_their_architecture():
    """The recipe is a training default: the built description (weights, codegen) is what it was."""
    for name in TUNED:
        spec = copy.deepcopy(PRESETS[name])
        del spec["recipe"]
        assert normalize_spec(copy.deepcopy(PRESETS[name])) == normalize_spec(spec)


def recipe_row(name: str) -> str:
    """The docs/profiles.md row of a preset's recipe."""
    r, spec = api.recipe(name), PRESETS[name]
    aug = ", ".join(([f"crop ±{r.crop_pad}, p = 1/2"] if r.crop_pad else []) + (["flip, p = 1/2"] if r.flip else []))
    lr = r.lr_inv or f"the description's ({spec.get('lr_inv', 512)})"
    sched = f"×{r.factor} after epochs {', '.join(map(str, r.milestones))}" if r.milestones else "the paper's"
    return f"| {name} | {r.epochs} | {lr} | {aug or 'none'} | {sched} | {'yes' if r.refit else 'no'} |"


def test_docs_recipe_table_matches_the_code():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "profiles.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:] in PRESETS]
    assert rows == [recipe_row(n) for n in PRESETS if "recipe" in PRESETS[n]]


def test_the_accuracy_benchmark_reads_the_test_set_once(tmp_path, monkeypatch):
    """The honest protocol: the validation run never reads the test set; the refit model is read once, at the end."""
    import importlib.util
    from pathlib import Path

    from nitro_mcu.trainer import malloc

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sizes, real = [], training.accuracy_bp

    def counting(model, x, *args, **kwargs):
        sizes.append(len(x))
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(training, "accuracy_bp", counting)
    monkeypatch.setattr(malloc, "tune_malloc", lambda: None)
    assert bench.main(["--models", "mlp1", "--dataset", "bundled", "--seeds", "1", "--max-epochs", "2", "--serial",
                       "--out", str(tmp_path / "acc")]) == 0  # serial: the runs train here, where reads are counted
    assert sizes == [500, 500, 1000]  # two validation epochs, then one read of the 1,000 test images by the refit
    row = next(csv.DictReader((tmp_path / "acc.csv").open()))
    assert row["test_acc"] == "" and float(row["refit_test_acc"]) > 0 and row["val_acc"]
