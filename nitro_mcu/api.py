"""The Python verbs behind the CLI: build, load_data, train, evaluate, save, load, summary."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .trainer import data as D
from . import modelfile
from .codegen.cost import tensor_macs
from .spec import PRESETS, SpecError, preset
from .trainer.network import Model
from .trainer.loop import History, accuracy_bp, refit_schedule
from .trainer.loop import train as _train


def resolve_spec(model: str | dict) -> tuple[dict, dict]:
    """A preset name, a JSON file path or a dict -> (description, preset training defaults)."""
    if isinstance(model, dict):
        return dict(model), {}
    if model in PRESETS:
        spec = preset(model)
        return spec, {k: spec.get(k) for k in ("dataset", "augment")}
    p = Path(model)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise SpecError(f"{p}: no such model description file")
        try:
            spec = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SpecError(f"{p}: malformed JSON ({e.msg} at line {e.lineno})") from None
        defaults = {k: spec[k] for k in ("dataset", "augment") if isinstance(spec, dict) and k in spec}
        if not isinstance(defaults.get("augment", False), bool):
            raise SpecError(f"{p}: 'augment' must be true or false, got {defaults['augment']!r}")
        if not isinstance(defaults.get("dataset", ""), str):
            raise SpecError(f"{p}: 'dataset' must be a dataset name, got {defaults['dataset']!r}")
        return spec, defaults
    raise SpecError(f"unknown preset '{model}' (and no such JSON file); presets: {', '.join(PRESETS)}")


def build(model: str | dict, profile: str = "default", weight_bits: int = 32, seed: int = 0) -> Model:
    """A freshly initialised model from a preset name, a JSON file or a description dict."""
    spec, _ = resolve_spec(model)
    return Model(spec, profile, weight_bits=weight_bits, seed=seed)


def load_data(name: str = "bundled", seed: int = 0, data_dir=None, val_size=None, monitor: str = "val",
              norm: dict | None = None) -> D.Prepared:
    """Load and pre-process a dataset (shuffle, validation split, integer normalisation)."""
    ds = D.load_dataset(name, data_dir)
    prep = D.prepare(ds, seed, val_size=val_size, monitor=monitor)
    prep.name = ds.name
    prep.source = (name, data_dir)
    if norm:  # a trained model's statistics override the ones computed here
        mu, mad = norm["mu"], norm["mad"]
        prep.x_train = D.normalize(ds.x_train[prep.train_index], mu, mad)
        prep.x_val = D.normalize(ds.x_train[prep.val_index], mu, mad) if len(prep.val_index) else prep.x_val
        prep.x_test = D.normalize(ds.x_test, mu, mad)
        prep.mu, prep.mad = mu, mad
    return prep


def check_compatible(model: Model, data: D.Prepared) -> None:
    shape = tuple(data.x_train.shape[1:]) if len(data.x_train) else tuple(data.x_test.shape[1:])
    need = model.input_shape
    flat_ok = model.spec["kind"] == "mlp" and int(np.prod(shape)) == int(np.prod(need))
    if shape != need and not flat_ok:
        raise SpecError(f"the data has samples of shape {shape}, the model expects {need}")
    if data.num_classes != model.num_classes:
        raise SpecError(f"the data has {data.num_classes} classes, the model {model.num_classes}")


def train(model: Model, data: D.Prepared, epochs: int = 5, batch_size: int = 64, lr_inv=None, augment=None,
          schedule: bool = True, progress: bool = False, on_epoch=None, lr_schedule=None, resume=None,
          on_checkpoint=None) -> History:
    """Train in place (best weights by the monitor are kept); ``augment``: True, False/None or (pad, flip).

    ``lr_schedule`` (one lr_inv per epoch) replays a fixed schedule and keeps the final weights instead.
    ``resume``/``on_checkpoint``: continue from, and receive after each epoch, a loop state (nitro_mcu/resume.py).
    """
    check_compatible(model, data)
    if augment is True:
        augment = D.augment_defaults(getattr(data, "name", "mnist"))
    return _train(model, data, epochs, batch_size, lr_inv, augment or None, schedule, progress, on_epoch,
                  lr_schedule=lr_schedule, resume=resume, on_checkpoint=on_checkpoint)


def refit(model: Model, data: D.Prepared, history: History, batch_size: int = 64, augment=None,
          progress: bool = False, on_epoch=None) -> tuple[Model, D.Prepared, History]:
    """Retrain on training + validation images with the schedule a validation-driven run found.

    ``model`` and ``data`` are those of the finished run (its seed, profile, width and dataset are reused;
    ``model``'s weights are not).  A fresh model from the same seed trains on all training images for
    ``history.best_epoch`` epochs, each at the lr_inv that run used (:func:`~nitro_mcu.trainer.loop.refit_schedule`),
    and keeps its final weights: the test set is never used to choose anything.  Returns the new model,
    its data (statistics recomputed on all training images) and its history.
    """
    lr = refit_schedule(history)
    if not len(data.x_val) or data.source is None:
        raise ValueError("a refit needs data loaded by load_data with a validation split")
    full = load_data(data.source[0], model.seed, data.source[1], val_size=0, monitor="val")
    fresh = Model(model.spec, model.quirks, weight_bits=model.weight_bits, seed=model.seed)
    hist = train(fresh, full, len(lr), batch_size, augment=augment, schedule=False, progress=progress,
                 on_epoch=on_epoch, lr_schedule=lr)
    return fresh, full, hist


def evaluate(model: Model, data: D.Prepared) -> dict:
    """Accuracies in percent (strings with two decimals come from integer basis points)."""
    check_compatible(model, data)
    out = {"test_acc_bp": accuracy_bp(model, data.x_test, data.y_test, model.quirks.drop_last_eval),
           "test_images": int(len(data.x_test))}
    if len(data.x_val):
        out["val_acc_bp"] = accuracy_bp(model, data.x_val, data.y_val, model.quirks.drop_last_eval)
    return out


def save(model: Model, path, data: D.Prepared | None = None, history: History | None = None,
         extra: dict | None = None, files: dict | None = None) -> Path:
    norm = {}
    if data is not None:
        norm = {"mu": [int(v) for v in data.mu], "mad": [int(v) for v in data.mad],
                "dataset": getattr(data, "name", None)}
    training = dict(extra or {})
    if history is not None:
        training.update(best_epoch=history.best_epoch, epochs_run=len(history.records),
                        monitor=history.monitor,
                        best_monitor_bp=None if history.monitor == "none" else history.best_monitor_bp,
                        test_at_best_bp=history.test_at_best_bp, stopped_early=history.stopped_early,
                        final_lr_inv=history.records[-1].lr_inv if history.records else None)
    return modelfile.save(model, path, norm=norm, training=training, files=files)


def load(path) -> tuple[Model, dict]:
    return modelfile.load(path)


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
    from .trainer.profiles import PROFILES

    for name, q in PROFILES.items():
        if q == model.quirks:
            return name
    return "custom"
