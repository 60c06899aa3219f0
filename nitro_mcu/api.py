"""The Python verbs behind the CLI: build, load_data, train, evaluate, save, load, summary."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .trainer import data as D
from . import modelfile
from .codegen.cost import tensor_macs
from .spec import (DEFAULT_BATCH, DEFAULT_EPOCHS, DEFAULT_WEIGHT_BITS, INT32_MAX, PRESETS, TRAIN_KEYS, SpecError,
                   check_int, check_train_keys, is_int, normalize_spec, preset)
from .trainer.profiles import PROFILES, Quirks
from .trainer.network import Model
from .trainer.loop import History, accuracy_bp, refit_schedule
from .trainer.loop import train as _train
from .trainer.recipes import Recipe, recipe_for


def resolve_spec(model: str | dict) -> tuple[dict, dict]:
    """A preset name, a JSON file path or a dict -> (description, its training defaults: TRAIN_KEYS)."""
    if isinstance(model, dict):
        check_train_keys(model)
        return dict(model), {k: model[k] for k in TRAIN_KEYS if k in model}
    if not isinstance(model, (str, Path)):
        raise SpecError(f"a model is a preset name, a JSON file or a description dict, got {type(model).__name__}")
    if model in PRESETS:
        spec = preset(model)
        return spec, {k: spec[k] for k in TRAIN_KEYS if k in spec}
    p = Path(model)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise SpecError(f"{p}: no such model description file")
        try:
            spec = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SpecError(f"{p}: malformed JSON ({e.msg} at line {e.lineno})") from None
        except (UnicodeDecodeError, OSError) as e:
            raise SpecError(f"{p}: unreadable model description ({e})") from None
        if not isinstance(spec, dict):
            raise SpecError(f"{p}: a model description must be a JSON object")
        try:
            check_train_keys(spec)
            normalize_spec(spec)  # every problem of the file, before anything is built
        except SpecError as e:
            raise SpecError(f"{p}: {e}") from None
        return spec, {k: spec[k] for k in TRAIN_KEYS if k in spec}
    raise SpecError(f"unknown preset '{model}' (and no such JSON file); presets: {', '.join(PRESETS)}")


def build(model: str | dict, profile: str = "default", weight_bits: int | None = None, seed: int = 0) -> Model:
    """A freshly initialised model from a preset name, a JSON file or a description dict.

    ``weight_bits`` None: the width the preset or description names (``mcu_cnn``: 16), else 32."""
    spec, defaults = resolve_spec(model)
    if weight_bits is None:
        weight_bits = defaults.get("weight_bits", DEFAULT_WEIGHT_BITS)
    if not is_int(weight_bits) or weight_bits not in (16, 32):
        raise SpecError(f"weight_bits must be 16 or 32, got {weight_bits!r}")
    check_int("seed", seed, 0, 2**64 - 1)
    if profile not in PROFILES and not isinstance(profile, Quirks):
        raise SpecError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return Model(spec, profile, weight_bits=weight_bits, seed=seed)


def load_data(name="bundled", seed: int = 0, data_dir=None, val_size=None, monitor: str = "val",
              norm: dict | None = None, test=None, test_size: int | None = None,
              num_classes: int | None = None) -> D.Prepared:
    """Load and pre-process a dataset (shuffle, validation split, integer normalisation).

    ``name``: a dataset name (bundled, mnist, fashion-mnist, cifar10) or folder of IDX / CIFAR-10 files, or your
    own data (nitro_mcu/trainer/data/userdata.py): ``(x, y)`` arrays, a dict of arrays, an ``.npz``, a CSV of
    features or a folder of images with one sub-folder per class.  ``test`` is a separate test source for your
    own data; without one, ``test_size`` samples (default a sixth) are held out.  ``num_classes`` (a model's)
    admits integer labels that leave classes out.  The statistics come from the training part only.
    With ``norm`` (a trained model's statistics), those normalise every split instead, and
    ``pixel_stats`` holds the test images' own statistics for :func:`check_same_data`."""
    check_int("seed", seed, 0, 2**64 - 1)
    if val_size is not None:
        check_int("val_size", val_size, 0, 2**31 - 1)
    if test_size is not None:
        check_int("test_size", test_size, 1, 2**31 - 1)
    if D.is_user_source(name) or test is not None:
        ds = D.load_source(name, seed, test, test_size, (norm or {}).get("load_info"), num_classes)
    elif test_size is not None:
        raise SpecError("test_size applies to your own data (arrays, .npz, .csv, image folders), not to "
                        f"{name}, which has its own test set")
    else:
        ds = D.load_dataset(name, data_dir)
    prep = D.prepare(ds, seed, val_size=val_size, monitor=monitor)
    prep.name = ds.name
    prep.source = (name, data_dir)
    prep.reload = {"test": test, "test_size": test_size, "num_classes": num_classes}
    if norm:  # a trained model's statistics override the ones computed here
        mu, mad = norm["mu"], norm["mad"]
        prep.pixel_stats = tuple(v.tolist() for v in D.compute_norm_stats(ds.x_test))
        prep.own_stats = tuple(v.tolist() for v in D.compute_norm_stats(ds.x_train[prep.train_index]))
        prep.x_train = D.normalize(ds.x_train[prep.train_index], mu, mad)
        prep.x_val = D.normalize(ds.x_train[prep.val_index], mu, mad) if len(prep.val_index) else prep.x_val
        prep.x_test = D.normalize(ds.x_test, mu, mad)
        prep.mu, prep.mad = mu, mad
    return prep


def dataset_for(asked: str | None, trained_on: str | None, data_dir, load_info: dict | None = None) -> str:
    """The dataset to evaluate on: the one asked for, else the model's; a model of the bundled MNIST subset
    with a --data-dir reads MNIST from there (so the files are checked against the model, not ignored).
    A model of your own data names the file or folder it was read from (``load_info``)."""
    if asked:
        return asked
    if load_info:
        if "source" not in load_info:
            raise SpecError(f"the model was trained on arrays ({trained_on}): name the data to evaluate on")
        return load_info["source"]
    if data_dir is not None and (trained_on or "bundled") == "bundled":
        return "mnist"
    return trained_on or "bundled"


def data_folder(data: D.Prepared) -> str | None:
    """The folder ``data`` was read from (None: the bundled subset or arrays)."""
    name, data_dir = data.source if data.source else (data.name, None)
    if not isinstance(name, (str, Path)):
        return None  # arrays
    if D.canonical_name(str(name)) == "bundled":
        return None
    if data_dir is not None:
        return str(data_dir)
    return str(name) if D.canonical_name(str(name)) is None and Path(str(name)).is_dir() else None


def data_origin(data: D.Prepared) -> str:
    """Where ``data`` came from, in words: its dataset name and folder."""
    folder = data_folder(data)
    if folder is None:
        return f"{data.name} (the MNIST subset in the package)" if data.name == "bundled" else str(data.name)
    return f"{data.name} (files in {folder})"


def sample_noun(data: D.Prepared) -> str:
    """What one sample of ``data`` is called in the command line's lines: feature rows are not images."""
    return "samples" if (data.load_info or {}).get("kind") == "features" else "images"


# A model's training images and these test images differ by more than this in pixel mean or mean deviation
# (pixel - 128 units): another dataset.  MNIST and its bundled subset differ by 2, MNIST and FashionMNIST by 40.
PIXEL_STATS_TOLERANCE = 16


def check_same_data(norm: dict, data: D.Prepared) -> None:
    """Refuse data that is detectably not what the model was trained on: another dataset name, or test
    images whose pixel statistics are far from the training images' (same file names, other pictures)."""
    trained = norm.get("dataset")
    family = {"bundled": "mnist"}
    a = D.canonical_name(str(trained)) if trained else None
    b = D.canonical_name(str(data.name))
    if a and b and family.get(a, a) != family.get(b, b):
        raise SpecError(f"the model was trained on {trained}, the data is {data_origin(data)}: evaluate it on "
                        "the dataset it was trained on")
    stats = getattr(data, "pixel_stats", None)
    if stats is None or "mu" not in norm or (norm.get("load_info") or {}).get("kind") == "features":
        return  # features have no common scale to compare
    own = (norm.get("data_mu", norm["mu"]), norm.get("data_mad", norm["mad"]))  # the training images' statistics
    for ch, (mu, mad, mu_d, mad_d) in enumerate(zip(*own, *stats)):
        if abs(int(mu) - mu_d) > PIXEL_STATS_TOLERANCE or abs(int(mad) - mad_d) > PIXEL_STATS_TOLERANCE:
            raise SpecError(f"the images of {data_origin(data)} do not look like the model's training data "
                            f"({trained or 'unnamed'}): channel {ch} pixel mean {mu_d} and mean deviation {mad_d}, "
                            f"the model's {int(mu)} and {int(mad)}; is --data-dir the right dataset?")


def check_compatible(model: Model, data: D.Prepared) -> None:
    """Refuse data whose sample shape or class count differs from the model's."""
    shape = tuple(data.x_train.shape[1:]) if len(data.x_train) else tuple(data.x_test.shape[1:])
    need = model.input_shape
    flat_ok = model.spec["kind"] == "mlp" and int(np.prod(shape)) == int(np.prod(need))
    hint = ("; describe a model for it in a JSON file (\"input_shape\", \"num_classes\"; docs/own_data.md)"
            if data.load_info else "")
    if shape != need and not flat_ok:
        got = (f"{int(np.prod(shape))} features per sample" if data.load_info.get("kind") == "features"
               else f"samples of shape {shape} (channels, height, width)")  # features are [F, 1, 1] inside
        raise SpecError(f"the data has {got}, the model expects {need}{hint}")
    if data.num_classes != model.num_classes:
        raise SpecError(f"the data has {data.num_classes} classes, the model {model.num_classes}{hint}")


def check_train_args(epochs, batch_size, lr_inv, lr_schedule) -> None:
    """Hyper-parameters are integers in range, or refused (512.7 is not an lr_inv)."""
    check_int("epochs", epochs, 1, 10**6)
    check_int("batch_size", batch_size, 1, 2**20)
    if lr_inv is not None and lr_inv != "auto":
        check_int("lr_inv", lr_inv, 1, INT32_MAX)
    if lr_schedule is not None:
        if isinstance(lr_schedule, (str, bytes)) or not hasattr(lr_schedule, "__len__") or not len(lr_schedule):
            raise SpecError("lr_schedule must be a non-empty list of lr_inv values")
        for v in lr_schedule:
            check_int("every lr_inv of lr_schedule", v, 1, INT32_MAX)


def recipe(model: str | dict, profile="default", which: str = "tuned", dataset: str | None = None) -> Recipe:
    """The training recipe of a preset, JSON file or description (nitro_mcu/trainer/recipes.py): its own
    ("tuned"; the paper's where it has none, and always in the reference profile) or the paper's, whose
    augmentation is that of ``dataset`` (default: the description's)."""
    _, defaults = resolve_spec(model)
    return recipe_for(defaults, profile, which, dataset)


def augment_for(augment, recipe: Recipe | None, data: D.Prepared) -> tuple | None:
    """(crop_pad, flip) or None.  ``augment`` None: the recipe's; True: the recipe's if it has one, else the
    paper pipeline of the data's dataset; False: none; a (pad, flip) pair: that."""
    if augment is None:
        return recipe.augment if recipe is not None else None
    if augment is True:
        return (recipe and recipe.augment) or D.augment_defaults(getattr(data, "name", "mnist"))
    return augment or None


def train(model: Model, data, epochs: int = DEFAULT_EPOCHS, batch_size: int = DEFAULT_BATCH, lr_inv=None,
          augment=None, schedule: bool = True, progress: bool | None = None, on_epoch=None,
          lr_schedule=None, resume=None, on_checkpoint=None, recipe: Recipe | None = None,
          test_reads: str = "epoch", trainable=None) -> History:
    """Train in place (best weights by the monitor are kept); ``augment``: True, False/None or (pad, flip).

    ``data`` is what :func:`load_data` returns, or anything it reads: ``(x, y)`` arrays, an ``.npz``, a CSV, a
    folder (loaded with the model's seed; ``history.data`` is then the prepared data, for :func:`save`).
    ``recipe`` (see :func:`recipe`) gives lr_inv and augmentation where those are None, and its step schedule
    (``epochs`` still caps the run: pass ``recipe.epochs`` for its full length; a refit is :func:`refit`).
    ``lr_schedule`` (one lr_inv per epoch) replays a fixed schedule and keeps the final weights instead.
    ``progress`` None: a progress bar when stderr is a terminal (the CLI's default too).
    ``resume``/``on_checkpoint``: continue from, and receive after each epoch, a loop state (nitro_mcu/resume.py).
    ``test_reads``: "epoch", "end" or "never" (nitro_mcu/trainer/loop.py).
    ``lr_inv="auto"``: chosen on the validation split by a short search (nitro_mcu/trainer/lrsearch.py; the run's
    ``history.lr_search`` says what was tried); pair it with ``epochs=lrsearch.AUTO_EPOCHS`` and the schedule, so
    that early stopping on validation picks the length.
    ``trainable``: the block names that train (e.g. ``["fc0", "output"]``), the others stay frozen; it stays
    set on the model (:meth:`~nitro_mcu.trainer.network.Model.set_trainable`), so that ``save`` records it and
    ``convert`` generates the same partial training.  None: the model's current set (all, unless set).
    """
    check_train_args(epochs, batch_size, lr_inv, lr_schedule)
    if not isinstance(data, D.Prepared):
        data = load_data(data, model.seed, num_classes=model.num_classes)
    check_compatible(model, data)
    if trainable is not None:
        model.set_trainable(trainable)
    if progress is None:
        progress = sys.stderr.isatty()
    augment = augment_for(augment, recipe, data)
    if lr_inv is None and recipe is not None:
        lr_inv = recipe.lr_inv
    search = None
    if lr_inv == "auto":
        from .trainer.lrsearch import search_lr_inv

        search = search_lr_inv(model, data, batch_size, augment=augment)
        lr_inv = search.chosen
    steps = dict(milestones=recipe.milestones, factor=recipe.factor) if recipe is not None else {}
    hist = _train(model, data, epochs, batch_size, lr_inv, augment, schedule, progress, on_epoch,
                  lr_schedule=lr_schedule, resume=resume, on_checkpoint=on_checkpoint, test_reads=test_reads, **steps)
    hist.data = data
    hist.lr_search = search
    model.input_norm = norm_record(data)  # what nm.normalize and convert use for raw inputs
    return hist


def refit(model: Model, data: D.Prepared, history: History, batch_size: int = DEFAULT_BATCH, augment=None,
          progress: bool | None = None, on_epoch=None, test_reads: str = "epoch") -> tuple[Model, D.Prepared, History]:
    """Retrain on training + validation images with the schedule a validation-driven run found.

    ``model`` and ``data`` are those of the finished run (its seed, profile, width and dataset are reused;
    ``model``'s weights are not).  A fresh model from the same seed trains on all training images for
    ``history.best_epoch`` epochs, each at the lr_inv that run used (:func:`~nitro_mcu.trainer.loop.refit_schedule`),
    and keeps its final weights: the test set is never used to choose anything.  Returns the new model,
    its data (statistics recomputed on all training images) and its history.  ``augment``: as the run's
    (its recipe's); ``test_reads`` "end": the test set is read once, for the final weights.
    """
    lr = refit_schedule(history)
    if not len(data.x_val) or data.source is None:
        raise ValueError("a refit needs data loaded by load_data with a validation split")
    full = load_data(data.source[0], model.seed, data.source[1], val_size=0, monitor="val", **data.reload)
    fresh = Model(model.spec, model.quirks, weight_bits=model.weight_bits, seed=model.seed,
                  trainable=sorted(model.trainable))
    hist = train(fresh, full, len(lr), batch_size, augment=augment, schedule=False, progress=progress,
                 on_epoch=on_epoch, lr_schedule=lr, test_reads=test_reads)
    return fresh, full, hist


def evaluate(model: Model, data: D.Prepared) -> dict:
    """``test_accuracy`` (and ``val_accuracy`` where there is a validation split) as fractions in [0, 1], to
    1/10000 as the training log prints them, plus ``test_images``, ``dataset`` and ``data_dir``: where the
    data came from.  E.g. ``{"test_accuracy": 0.9708, "test_images": 1000, ...}``."""
    return as_fractions(evaluate_bp(model, data))


def as_fractions(ev: dict) -> dict:
    """An :func:`evaluate_bp` answer with its ``*_acc_bp`` entries as ``*_accuracy`` fractions."""
    return {(k[:-len("_acc_bp")] + "_accuracy" if k.endswith("_acc_bp") else k): (v / 10000 if k.endswith("_acc_bp")
            else v) for k, v in ev.items()}


def evaluate_bp(model: Model, data: D.Prepared) -> dict:
    """:func:`evaluate` in basis points (integers: the trainer's and the log's own unit), for the CLI."""
    check_compatible(model, data)
    out = {"test_acc_bp": accuracy_bp(model, data.x_test, data.y_test, model.quirks.drop_last_eval),
           "test_images": int(len(data.x_test)), "dataset": data.name, "data_dir": data_folder(data)}
    if len(data.x_val):
        out["val_acc_bp"] = accuracy_bp(model, data.x_val, data.y_val, model.quirks.drop_last_eval)
    return out


def norm_record(data: D.Prepared) -> dict:
    """The input statistics of ``data`` as a model file keeps them (``norm``): mu, mad, the raw input type
    (u8, s16, s32: normalization.INPUT_DTYPES), the dataset and how your own data was read."""
    info = getattr(data, "load_info", None) or {}
    norm = {"mu": [int(v) for v in data.mu], "mad": [int(v) for v in data.mad],
            "dtype": D.input_dtype({"load_info": info}), "dataset": getattr(data, "name", None)}
    if info:
        norm["load_info"] = info  # how your own data was read: later data is read alike
    if getattr(data, "classes", None):
        norm["classes"] = [str(c) for c in data.classes]   # the header's class names (generate)
    own = getattr(data, "own_stats", None)  # normalised with another model's statistics (fine-tuning)
    if own is not None and (list(own[0]) != norm["mu"] or list(own[1]) != norm["mad"]):
        norm.update(data_mu=[int(v) for v in own[0]], data_mad=[int(v) for v in own[1]])
    return norm


def save(model: Model, path, data: D.Prepared | None = None, history: History | None = None,
         extra: dict | None = None, files: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (a ``.nitro`` file, atomically) with the input statistics, dataset and class
    names of ``data`` (default: the model's own, from training or loading) and, from ``history``, how training went
    (``final_lr_inv`` included: the lr_inv ``generate`` starts on-device training with).  Returns the path."""
    norm = norm_record(data) if data is not None else dict(model.input_norm or {})
    training = dict(extra or {})
    if history is not None:
        training.update(best_epoch=history.best_epoch, epochs_run=len(history.records),
                        monitor=history.monitor,
                        best_monitor_bp=None if history.monitor == "none" else history.best_monitor_bp,
                        test_at_best_bp=history.test_at_best_bp, stopped_early=history.stopped_early,
                        final_lr_inv=history.records[-1].lr_inv if history.records else None,
                        initial_lr_inv=history.records[0].lr_inv if history.records else None)
    return modelfile.save(model, path, norm=norm, training=training, files=files)


class Loaded(NamedTuple):
    """What :func:`load` returns: the model and the file's metadata.  A named pair, so both
    ``loaded.model`` and ``model, meta = nm.load(path)`` work."""
    model: Model
    meta: dict   # the whole metadata: "norm", "training", "seed", the format version, ...

    @property
    def norm(self) -> dict:
        """The input statistics of the training data (``mu``, ``mad`` per channel), its dataset name and class
        names; {} when the model was saved without data."""
        return self.meta.get("norm") or {}

    @property
    def training(self) -> dict:
        """How the model was trained: epochs, best epoch, ``final_lr_inv`` (where training ended), ..."""
        return self.meta.get("training") or {}


def load(path) -> Loaded:
    """Read a ``.nitro`` model file (written by :func:`save` or ``nitro-mcu train``), checked whole (format,
    checksum, weight ranges): returns a :class:`Loaded` pair ``(model, meta)``, e.g.
    ``model, meta = nm.load("out/mlp1.nitro")`` or ``nm.load(path).model``."""
    model, meta = modelfile.load(path)
    model.input_norm = meta.get("norm") or None  # what nm.normalize and convert use for raw inputs
    return Loaded(model, meta)


def normalize(model, raw) -> np.ndarray:
    """Raw readings -> the int8 inputs of ``model`` (a Model trained on data or loaded from a file, or a .nitro
    path): exactly what the generated ``<name>_normalize_<dtype>`` computes on the device.

    ``raw``: integers of the model's raw input type (u8 pixels, s16 or s32 readings; a CSV's decimals as
    value * 10**decimals), samples of the model's input size back to back in any shape; returns int8 of that shape.
    """
    if isinstance(model, (str, Path)):
        model, _ = load(model)
    if not isinstance(model, Model):
        raise SpecError(f"normalize needs a model (or a .nitro path), got {type(model).__name__}")
    norm = model.input_norm
    if not norm or "mu" not in norm:
        raise SpecError("the model has no input statistics: train it on data (nm.train) or load a model file "
                        "trained on data")
    return D.normalize_raw(raw, norm["mu"], norm["mad"], D.input_dtype(norm), int(np.prod(model.input_shape)))


def summary_rows(model: Model) -> list[dict]:
    """:meth:`Model.describe` rows plus MACs per sample from the generator's plan: ``macs`` at inference
    (0 for heads, which run only in training) and ``train_macs`` in a training step."""
    macs = tensor_macs(model)
    return [dict(r, macs=macs[r["name"]][0], train_macs=macs[r["name"]][1]) for r in model.describe()]


def summary(model: Model) -> str:
    """Per-layer table: shape, scaling factor, init bound, weights, MACs per sample, bytes."""
    rows = summary_rows(model)
    head = (f"{'layer':<12} {'what':<46} {'SF':>9} {'b':>3} {'amp':>6} {'decay':>6} {'weights':>9} {'infer MACs':>10} "
            f"{'train MACs':>10} {'bytes':>9}")
    lines = [f"{model.spec['kind']} | profile {profile_name(model)} | int{model.weight_bits} weights | MACs per sample",
             head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<12} {r['desc']:<46} {r['sf']:>9} {r['bound']:>3} {r['amp']:>6} {r['decay']:>6} "
                     f"{r['weights']:>9} {r['macs']:>10} {r['train_macs']:>10} {r['bytes']:>9}")
    tw = sum(r["weights"] for r in rows)
    lines.append("-" * len(head))
    heads = sum(r["weights"] for r in rows if r["name"].endswith(".head"))
    lines.append(f"{'total':<12} {f'{heads} weights in heads':<46} {'':>9} {'':>3} {'':>6} {'':>6} {tw:>9} "
                 f"{sum(r['macs'] for r in rows):>10} {sum(r['train_macs'] for r in rows):>10} "
                 f"{sum(r['bytes'] for r in rows):>9}")
    return "\n".join(lines)


def profile_name(model: Model) -> str:
    for name, q in PROFILES.items():
        if q == model.quirks:
            return name
    return "custom"
