"""The ``nitro-mcu`` command line.  Bad input is one line on stderr and exit status 2, never a traceback."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from . import api, checkpoint_cli, fileio, resume, sweep_cli
from ._version import __version__
from .cliargs import (SPARE_HELP, TRAINABLE_HELP, Interrupted, Parser, c_name, int_in, is_model_file,
                      load_or_build, non_negative, out_file, positive, spare_classes, weights_bits)
from .spec import DEFAULT_BATCH, DEFAULT_EPOCHS, PRESETS
from .trainer import data as D
from .trainer.curves import plot_curves
from .trainer.loop import check_batch, format_pct
from .trainer.malloc import tune_malloc
from .trainer.profiles import PROFILES
from .trainer.lrsearch import AUTO_EPOCHS, CANDIDATES, SEARCH_EPOCHS
from .trainer.recipes import RECIPE_CHOICES, recipe_for


class UsageError(ValueError):
    pass


def train_outputs(name: str) -> list[str]:
    """The files ``train --name NAME`` may write into --out."""
    return [f"{name}.nitro", f"{name}_metrics.csv", f"{name}_curves.png", f"{name}_refit_metrics.csv"]


def cmd_train(a) -> int:
    with contextlib.ExitStack() as held:  # the --out lock, taken once the inputs are checked
        return _train(a, held)


def _train(a, held) -> int:
    tune_malloc()  # this process trains: keep the step temporaries' heap (opt-in; see trainer/malloc.py)
    norm, tuning = None, is_model_file(a.model)
    if tuning:  # fine-tuning: the model file's weights and input statistics, then --trainable
        model, meta = api.load(a.model)
        norm, defaults = meta.get("norm") or None, {"dataset": (meta.get("norm") or {}).get("dataset")}
        if a.refit:
            raise UsageError("--refit retrains from the initial weights: it does not apply to a model file")
    else:
        spec, defaults = api.resolve_spec(a.model)
    dataset = a.data or defaults.get("dataset") or "bundled"
    if a.data is None and D.canonical_name(dataset) not in D.NO_FILES and a.data_dir is None and \
            not Path(dataset).is_dir():
        # presets name their paper dataset; without --data-dir use the bundled subset, and say so
        print(f"note: {a.model} names the dataset '{dataset}'; without --data-dir it trains on the bundled "
              "MNIST subset", flush=True)
        dataset = "bundled"
    if not tuning:
        model = api.build(spec, a.profile, a.weights, a.seed)
    # a description without lr_inv (not a preset, no recipe lr_inv): lr_inv searched, epochs by early stopping
    auto = (a.lr_inv is None and not tuning and a.model not in PRESETS and "lr_inv" not in spec
            and "lr_inv" not in spec.get("recipe", {}) and a.profile != "reference" and a.recipe == "tuned"
            and a.monitor == "val" and a.val_size != 0 and not a.no_schedule)
    a.epochs = a.epochs or (AUTO_EPOCHS if auto else DEFAULT_EPOCHS)
    if a.trainable:
        model.set_trainable(a.trainable)
    monitor = "test" if model.quirks.monitor_test or a.monitor == "test" else "val"
    if a.refit and (monitor != "val" or a.val_size == 0):
        raise UsageError("--refit needs a validation split (monitor 'val', --val-size > 0, a profile without Q10)")
    out = Path(a.out)
    name = fileio.check_stem(a.name or (a.model if a.model in PRESETS else
                                        Path(a.model).stem + ("_tuned" if tuning else "")))
    fileio.check_names(out, train_outputs(name))
    if tuning and (out / f"{name}.nitro").resolve() == Path(a.model).resolve():
        raise UsageError(f"--out/--name would overwrite {a.model}, the model being fine-tuned; choose another --name")
    resume.check_out(out, resume.output_bytes(model))
    data = api.load_data(dataset, a.seed, a.data_dir, a.val_size if monitor == "val" else 0, monitor,
                         test=a.test_data, test_size=a.test_size, norm=norm)
    api.check_compatible(model, data)  # before the lock, the run's lines and the lr_inv search
    check_batch(len(data.x_train), a.batch)
    # a model file fine-tunes with the paper's recipe (its own description carries none): no augmentation
    rec = recipe_for(defaults, model.quirks, a.recipe, data.name)
    if a.refit is None:  # the recipe's choice, where there is a validation split
        a.refit = rec.refit and monitor == "val" and a.val_size != 0 and not tuning
    augment = api.augment_for(a.augment, rec, data)
    held.enter_context(fileio.folder_lock(out))  # a second writer of --out is refused from here on
    if not a.resume and not a.force:
        resume.check_not_replacing(out / f"{name}.nitro")
    keeper = resume.Keeper(out, name, model, data, resume.run_options(a, dataset, monitor, augment, rec), a.resume)
    if keeper.state is not None:
        done = keeper.state.epoch >= a.epochs or keeper.state.history.stopped_early
        if done and keeper.finished:
            raise UsageError(f"--resume: {keeper.path} already holds {keeper.state.epoch} epoch(s)"
                             f"{' and stopped early' if keeper.state.history.stopped_early else ''}: with --epochs "
                             f"{a.epochs} there is nothing left to train")
        # done but not finished: interrupted after its last epoch (in the refit or before the final files)
        print(f"resuming {keeper.path} after epoch {keeper.state.epoch}"
              + (": its epochs are done; finishing the run" if done else ""), flush=True)
    frozen = "" if model.all_trainable else f", training {','.join(n for n in model.block_names if model.trains(n))}"
    print(f"training {a.model} ({model.spec['kind']}, profile {api.profile_name(model)}, int{model.weight_bits} "
          f"weights{frozen}) on {api.data_origin(data)}: {len(data.x_train)} train / {len(data.x_val)} val / "
          f"{len(data.x_test)} test {api.sample_noun(data)}, batch {a.batch}, seed {a.seed}", flush=True)
    print(f"recipe ({a.recipe}): {rec.describe()}; this run: {a.epochs} epoch(s)"
          f"{'' if a.lr_inv is None else f', lr_inv {a.lr_inv}'}{', lr_inv searched on validation' if auto else ''}{', no schedule' if a.no_schedule else ''}, "
          f"augment {augment or 'none'}, refit {'yes' if a.refit else 'no'}", flush=True)
    t0 = time.perf_counter()
    try:
        if auto and keeper.state is None:
            print(f"lr_inv search on the validation split: {len(CANDIDATES)} candidates x {SEARCH_EPOCHS} epochs "
                  "(--lr-inv N to skip it)", flush=True)
        lr = keeper.state.lr_inv if auto and keeper.state is not None else "auto" if auto else a.lr_inv
        hist = api.train(model, data, a.epochs, a.batch, lr, augment or False, not a.no_schedule,
                         progress=False if a.quiet else None, resume=keeper.state, on_checkpoint=keeper.save_epoch,
                         recipe=rec)
        if hist.lr_search is not None:
            print(f"chose {hist.lr_search.describe()}", flush=True)
        dt = time.perf_counter() - t0
        extra = {"epochs": a.epochs, "batch_size": a.batch, "seconds": round(dt, 1), "augment": bool(augment),
                 "recipe": rec.to_dict()}
        fileio.atomic_write(out / f"{name}_metrics.csv", hist.to_csv().encode())
        png = plot_curves(hist, out / f"{name}_curves.png", 10000 // model.num_classes)
        ev = api.evaluate_bp(model, data)
        if auto:
            print(f"epochs: early stopping on validation ended the run after {len(hist.records)} of at most "
                  f"{a.epochs}" if hist.stopped_early else f"epochs: all {len(hist.records)} run (no early stop)",
                  flush=True)
        print(f"best epoch {hist.best_epoch}: {hist.monitor} {format_pct(hist.best_monitor_bp)}, "
              f"test {format_pct(ev['test_acc_bp'])} "
              f"({ev['test_images']} {api.sample_noun(data)}); {len(hist.records)} epochs in {dt:.1f} s")
        written = [out / f"{name}_metrics.csv"]
        if a.refit:
            print(f"refit: a fresh model on all {len(data.x_train) + len(data.x_val)} training "
                  f"{api.sample_noun(data)} for "
                  f"{hist.best_epoch} epoch(s) with the same lr_inv per epoch; final weights kept", flush=True)
            t1 = time.perf_counter()
            model, data, rhist = api.refit(model, data, hist, a.batch, augment, progress=False if a.quiet else None)
            extra["refit"] = {"epochs": len(rhist.records), "lr_schedule": [r.lr_inv for r in rhist.records],
                              "seconds": round(time.perf_counter() - t1, 1), "val_best_epoch": hist.best_epoch,
                              "val_best_bp": hist.best_monitor_bp, "val_run_test_bp": hist.test_at_best_bp}
            fileio.atomic_write(out / f"{name}_refit_metrics.csv", rhist.to_csv().encode())
            written.append(out / f"{name}_refit_metrics.csv")
            print(f"refit: test {format_pct(rhist.test_at_best_bp)} after {len(rhist.records)} epoch(s) "
                  f"in {time.perf_counter() - t1:.1f} s")
            hist = rhist
    except KeyboardInterrupt:   # the last finished epoch's checkpoint is kept: --resume continues or finishes
        raise Interrupted(keeper.interrupted()) from None
    model_path = keeper.write(model, data, hist, extra)
    print(f"wrote {model_path}, " + ", ".join(map(str, written)) + (f", {png}" if png else
                                                                   " (no PNG: pip install matplotlib)"))
    return 0


def cmd_eval(a) -> int:
    model, meta = api.load(a.model)
    norm = meta.get("norm") or {}
    info = norm.get("load_info")
    dataset = api.dataset_for(a.data, norm.get("dataset"), a.data_dir, info)
    test = info.get("test_source") if info and a.data is None else None
    data = api.load_data(dataset, meta["seed"], a.data_dir, 0, "test", norm=norm or None, test=test)
    api.check_compatible(model, data)
    api.check_same_data(norm, data)
    ev = api.evaluate_bp(model, data)
    if a.json:
        print(json.dumps(api.as_fractions(ev)))
    else:
        print(f"{a.model}: test accuracy {format_pct(ev['test_acc_bp'])} on {ev['test_images']} test "
              f"{api.sample_noun(data)} of "
              f"{api.data_origin(data)}")
    return 0


def cmd_summary(a) -> int:
    if is_model_file(a.model):
        model, _ = api.load(a.model)
    else:
        model = api.build(a.model, a.profile, a.weights, a.seed)
    if a.json:
        print(json.dumps(api.summary_rows(model), indent=1))
    else:
        print(api.summary(model))
    return 0


def cmd_spec(a) -> int:
    from .spec import description_json, full_description

    if is_model_file(a.model):
        model, meta = api.load(a.model)
        start = (meta.get("training") or {}).get("initial_lr_inv")  # searched or --lr-inv: not the spec's default
        desc = full_description({**model.spec, **({"lr_inv": start} if start else {})})
    else:
        spec, _ = api.resolve_spec(a.model)
        desc = full_description(spec)
    text = description_json(desc)
    if a.out:
        from .fileio import atomic_write

        atomic_write(a.out, text.encode())
        print(f"wrote {a.out}")
    else:
        print(text, end="")
    return 0


def c_prefix(model: str) -> str:
    """The default C prefix: the model's name (preset, or the file's stem) as a C identifier."""
    from .codegen.render import c_identifier

    return c_identifier(model if model in PRESETS else Path(model).stem)


def cmd_generate(a) -> int:
    from .codegen import convert, fp32_backprop_bytes
    from .codegen.cost import tail_ram, tail_ram_text

    model, meta = load_or_build(a.model, a.profile, a.weights, a.seed, a.trainable, with_meta=True)
    norm = meta.get("norm") or {}
    if a.trainable and not a.train:
        raise UsageError("--trainable needs --train (an inference build has no training)")
    if (a.spare_classes or a.rehearsal) and not a.train:  # new classes (docs/new_classes.md)
        raise UsageError("--spare-classes and --rehearsal need --train (a new class is learnt on the device)")
    name = a.name or c_prefix(a.model)
    if Path(a.out).suffix == ".h":
        fileio.check_output_file(a.out, "--out")
    else:
        fileio.check_names(a.out, [f"{name}_kernels.h", f"{name}.mk", "CMakeLists.txt"])
    classes = [c.strip() for c in a.classes.split(",")] if a.classes else norm.get("classes")
    if a.classes and len(classes) != model.num_classes:
        raise UsageError(f"--classes names {len(classes)} classes, the model has {model.num_classes}")
    final_lr = (meta.get("training") or {}).get("final_lr_inv") if a.train else None
    conv = convert(model, batch=a.batch, train=a.train, name=name, ram_limit=a.ram_limit,
                   norm=norm if "mu" in norm else None, spare_classes=a.spare_classes, rehearsal=a.rehearsal,
                   classes=classes, lr_inv=final_lr)
    paths = conv.save(file=a.out)
    print(api.summary(model))
    print()
    print(conv.memory_report())
    if a.train:
        fp = fp32_backprop_bytes(model, a.batch)
        print(f"{'float32 back-propagation, same net and batch':<44} {fp['total']:>10}  "
              f"(nitro uses {100 * conv.plan.ram_bytes // fp['total']} % of it)")
        print()
        print(tail_ram_text(tail_ram(model, a.batch)))
    if model.weight_bits == 32:  # descriptions and presets default to int32: say what int16 buys
        print("note: int32 weights run the portable C kernels on every core; the Cortex-M4/M7/M33 DSP and the RV32 "
              "kernels take int16 weights, which also halve the weight memory (--weights int16 when training and "
              "generating; check the accuracy it trains to)")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _model_and_data(a):
    from .device.capacity import check_fits
    from .device.targets import get_board

    model, meta_norm = load_or_build(a.model, a.profile, a.weights, a.seed, a.trainable)
    a.name = a.name or c_prefix(a.model)
    if a.target != "host":   # before any data is read or anything built
        check_fits(model, get_board(a.target), a.batch)
    dataset = api.dataset_for(a.data, (meta_norm or {}).get("dataset"), a.data_dir, (meta_norm or {}).get("load_info"))
    data = api.load_data(dataset, a.seed, a.data_dir, norm=meta_norm)
    api.check_compatible(model, data)
    if meta_norm:
        api.check_same_data(meta_norm, data)
    return model, data


def cmd_verify(a) -> int:
    from .device.verify import check_bounds, check_emulator, choose_lr_inv, verify

    if a.json:
        fileio.check_output_file(a.json, "--json")
    check_emulator(a.target, a.emulator)   # before the data, the fit and choose_lr_inv's Python simulation
    model, data = _model_and_data(a)
    check_bounds(model, a.steps, a.batch, min(a.predictions, len(data.x_test)))
    print(f"{'running' if a.cmd == 'run' else 'verifying'} {a.model} on {a.target} ({a.emulator}): {a.steps} training "
          f"steps of batch {a.batch}, {a.predictions} predictions", flush=True)
    choice = choose_lr_inv(model, data, a.steps, a.batch, allow_still=a.allow_still, lr_inv=a.lr_inv)
    if a.steps:
        print(choice.describe(a.steps), flush=True)
    rep = verify(model, data, a.target, a.steps, a.batch, a.predictions, emulator=a.emulator, name=a.name,
                 allow_still=a.allow_still, lr_inv=choice)
    print(rep.table())
    print(f"device: held-out accuracy {format_pct(rep.device_accuracy_bp)} on {rep.predictions} "
          f"{api.sample_noun(data)} after "
          f"{rep.steps} training steps on the device; stack {rep.stack_bytes} B; {rep.seconds:.1f} s")
    if a.json:
        print(f"wrote {rep.write_json(a.json)}")
    print(rep.problem() or "bit-exact")
    return 0 if rep.passed else 1


def cmd_report(a) -> int:
    from .fileio import atomic_write
    from .device.report import plot_report, report, report_json, report_text
    from .device.verify import check_emulator

    for opt, path in (("--json", a.json), ("--png", a.png)):
        if path:
            fileio.check_output_file(path, opt)
    for emulator in dict.fromkeys(["qemu", a.emulator]):   # QEMU counts; Renode, if asked, cross-checks
        check_emulator(a.target, emulator)
    model, data = _model_and_data(a)
    from .device.verify import check_bounds

    check_bounds(model, a.steps, a.batch, min(a.predictions, len(data.x_test)))
    r = report(model, a.target, a.batch, data, steps=a.steps, predictions=a.predictions,
               per_layer=not a.no_per_layer, name=a.name, emulator=a.emulator)
    print(report_text(r))
    if a.json:
        atomic_write(Path(a.json), report_json(r).encode())
        print(f"wrote {a.json}")
    if a.png:
        png = plot_report(r, Path(a.png))
        print(f"wrote {png}" if png else "no PNG (per-layer counts off, or matplotlib missing)")
    return 1 if r.get("renode") and not r["renode"]["results_equal"] else 0   # CI: Renode must agree with QEMU


def cmd_fit(a) -> int:
    from .device.fit import fit, fit_json, fit_text
    from .device.parts import PARTS, get_part
    from .fileio import atomic_write

    parts = list(PARTS.values()) if a.part in (None, "all") else [get_part(a.part)]  # checked before work
    model, _ = load_or_build(a.model, a.profile, a.weights, a.seed)
    res = fit(model, parts, a.batch, count=not a.no_count, seed=a.seed,
              name=a.model if a.model in PRESETS else Path(a.model).name)
    print(fit_text(res))
    if a.json:
        atomic_write(Path(a.json), json.dumps(fit_json(res), indent=1).encode())
        print(f"wrote {a.json}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    tune_malloc()
    return run_demo(a)


def lr_inv_or_auto(s: str):
    """An argparse type: 'auto' or an lr_inv (a positive int32)."""
    if s == "auto":
        return s
    try:
        return positive(s)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer in [1, 2147483647], got '{s}'") from None


def build_parser() -> argparse.ArgumentParser:
    from .device.targets import DEFAULT_TARGET, EXTRA_BOARDS, TARGETS
    from .device.verify import MAX_BATCH, MAX_STEPS

    p = Parser(prog="nitro-mcu", description="Integer-only NITRO-D training for microcontrollers.")
    p.add_argument("--version", action="version", version=f"nitro-mcu {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    widths = "int16|int32"
    width_help = "weight width (default: the preset's, int16 for mcu_cnn; else int32)"

    t = sub.add_parser("train", help="train a preset or JSON model description, or fine-tune a model file")
    t.add_argument("model", help=f"preset ({', '.join(PRESETS)}), model description .json, or a trained .nitro "
                                 "file to fine-tune (its weights and input statistics)")
    t.add_argument("--data", help="dataset: bundled, mnist, fashion-mnist, cifar10, a folder of IDX / CIFAR-10 "
                                  "files, or your own: an .npz, a .csv of features, a folder of images with one "
                                  "sub-folder per class (docs/own_data.md; default: the preset's with --data-dir, "
                                  "else bundled)")
    t.add_argument("--data-dir", help="folder with the standard IDX / CIFAR-10 files")
    t.add_argument("--test-data", help="your own data: a separate .npz / .csv / image folder as the test set")
    t.add_argument("--test-size", type=positive, default=None,
                   help="your own data without a test set: samples held out for testing (default: a sixth)")
    t.add_argument("--epochs", type=int_in(1, 10**6), default=None,
                   help=f"training epochs, at most (default {DEFAULT_EPOCHS}; {AUTO_EPOCHS} with early stopping for a "
                        "description without lr_inv; a recipe runs whole with its length: docs/profiles.md)")
    t.add_argument("--batch", type=int_in(1, 2**20), default=DEFAULT_BATCH, help="training batch size")
    t.add_argument("--seed", type=int_in(0, 2**64 - 1), default=0, help="seed of every random draw")
    t.add_argument("--profile", choices=list(PROFILES), default="default", help="quirk profile (docs/profiles.md)")
    t.add_argument("--weights", type=weights_bits, default=None, metavar=widths, help=width_help)
    t.add_argument("--lr-inv", type=positive, default=None,
                   help="initial inverse learning rate (default: the recipe's or the description's; a description "
                        "without one: searched on the validation split, docs/own_data.md)")
    t.add_argument("--val-size", type=non_negative, default=None, help="validation images (default: 10 %%)")
    t.add_argument("--monitor", choices=["val", "test"], default="val",
                   help="set that drives the schedule (test = the paper's Q10 behaviour)")
    t.add_argument("--recipe", choices=list(RECIPE_CHOICES), default="tuned",
                   help="training recipe: the preset's own, chosen on validation only (tuned; the paper's for "
                        "descriptions without one and in the reference profile), or the paper's; "
                        "docs/profiles.md")
    t.add_argument("--augment", dest="augment", action="store_true", default=None,
                   help="augment the training images (default: as the recipe)")
    t.add_argument("--no-augment", dest="augment", action="store_false", help="do not augment")
    t.add_argument("--no-schedule", action="store_true", help="constant lr_inv: no plateau, step or early stop")
    t.add_argument("--trainable", metavar="BLOCKS", help=TRAINABLE_HELP)
    t.add_argument("--refit", dest="refit", action="store_true", default=None,
                   help="then retrain on training + validation images for the best epoch count and save that "
                        "(default: as the recipe, where there is a validation split; not for a model file)")
    t.add_argument("--no-refit", dest="refit", action="store_false", help="no refit")
    t.add_argument("--out", default="out", help="output folder")
    t.add_argument("--name", help="file stem of the outputs (default: the model name)")
    t.add_argument("--quiet", action="store_true", help="no progress bar (default: one on a terminal)")
    t.add_argument("--resume", action="store_true", help="continue the run kept in --out (same options)")
    t.add_argument("--force", action="store_true",
                   help="start afresh even where --out holds a resumable run of this --name (it is replaced)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="test accuracy of a trained model file")
    e.add_argument("model", help="trained .nitro file")
    e.add_argument("--data", help="dataset, .npz, .csv or image folder (default: the one it was trained on; "
                                  "your own data without a test set: the part held out in training)")
    e.add_argument("--data-dir", help="folder with the standard IDX / CIFAR-10 files")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("summary", help="per-layer table of a model file or preset")
    s.add_argument("model", help="trained .nitro file, preset name or JSON description")
    s.add_argument("--profile", choices=list(PROFILES), default="default", help="quirk profile")
    s.add_argument("--weights", type=weights_bits, default=None, metavar=widths, help=width_help)
    s.add_argument("--seed", type=int_in(0, 2**64 - 1), default=0, help="seed of the initial weights")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(func=cmd_summary)

    sp = sub.add_parser("spec", help="print a preset's (or a model file's) description as JSON, every default "
                                      "written out: a start for your own (docs/model_description.md)")
    sp.add_argument("model", help="preset name, JSON description or trained .nitro file")
    sp.add_argument("--out", help="write it to this file instead of printing it")
    sp.set_defaults(func=cmd_spec)

    g = sub.add_parser("generate", help="emit C (header, source, kernels, CMake and Makefile glue) for a model")
    g.add_argument("model", help="trained .nitro file, preset name or JSON description")
    g.add_argument("--out", required=True, help="output folder (or a .h path: one header holding everything)")
    g.add_argument("--train", action="store_true", help="include on-device training (IntegerSGD)")
    g.add_argument("--weights", type=weights_bits, default=None, metavar=widths,
                   help="weight width (default: the model file's or the preset's, else int32)")
    g.add_argument("--batch", type=int_in(1, 4096), default=8, help="maximum training batch")
    g.add_argument("--name", type=c_name, help="C identifier prefix (default: the model's name: the preset, or the file's stem, "
                                  "as a C identifier)")
    g.add_argument("--classes", metavar="A,B,...", help="class names for <name>_class_name, one per class "
                                                          "(default: the model file's, from its training data, else "
                                                          "the class indices)")
    g.add_argument("--profile", choices=list(PROFILES), default="default", help="for presets / JSON models")
    g.add_argument("--seed", type=int_in(0, 2**64 - 1), default=0, help="for presets / JSON models")
    g.add_argument("--ram-limit", type=positive, default=None, metavar="BYTES",
                   help="fail if weights in RAM + arena exceed this")
    g.add_argument("--trainable", metavar="BLOCKS", help=TRAINABLE_HELP + "; frozen weights are constants in flash")
    # ---- new classes on the device (docs/new_classes.md) ----
    g.add_argument("--spare-classes", type=spare_classes, default=0, metavar="N", help=SPARE_HELP + "; needs --train")
    g.add_argument("--rehearsal", type=int_in(0, 255), default=None, metavar="R",
                   help="exemplars per class kept in flash for rehearsal (default: 4 with --spare-classes, else 0)")
    g.set_defaults(func=cmd_generate)

    def device_args(sp, verify_cmd=True, extra_targets=()):
        sp.add_argument("model", help="trained .nitro file, preset name or JSON description")
        sp.add_argument("--target", choices=[*TARGETS, *extra_targets], default=DEFAULT_TARGET,
                        help="emulated core or part (docs/toolchain.md)")
        sp.add_argument("--batch", type=int_in(1, MAX_BATCH), default=8, help="training batch on the device")
        sp.add_argument("--weights", type=weights_bits, default=None, metavar=widths, help=width_help)
        sp.add_argument("--profile", choices=list(PROFILES), default="default", help="for presets / JSON models")
        sp.add_argument("--data", help="dataset for the batches (default: the model's, else bundled)")
        sp.add_argument("--data-dir", help="folder with the standard IDX / CIFAR-10 files")
        sp.add_argument("--seed", type=int_in(0, 2**64 - 1), default=0, help="seed of the data order")
        sp.add_argument("--name", type=c_name, help="C identifier prefix (default: the model's name as a C identifier)")
        sp.add_argument("--trainable", metavar="BLOCKS", help=TRAINABLE_HELP)
        if verify_cmd:
            sp.add_argument("--steps", type=int_in(0, MAX_STEPS), default=20, help="training steps on the device")
            sp.add_argument("--predictions", type=non_negative, default=100, help="predictions on the device")
            sp.add_argument("--emulator", choices=["qemu", "renode"], default="qemu",
                            help="qemu, or renode (tested with Renode 1.15.3; renode/README.md); the board "
                                 "targets (stm32f4-discovery) run on renode only")
            sp.add_argument("--allow-still", action="append", default=[], metavar="TENSOR",
                            help="a trainable tensor allowed not to change in the run (repeatable); any other "
                                 "trainable tensor that does not move fails the verdict, and so does a frozen "
                                 "tensor that moves")
            sp.add_argument("--lr-inv", type=lr_inv_or_auto, default="auto", metavar="N|auto",
                            help="lr_inv of the proof run: auto keeps the model's when a Python simulation of the "
                                 "same steps moves every trainable tensor, else takes the largest of lr_inv/2, "
                                 "lr_inv/4, ... that does, and prints its choice")
            sp.add_argument("--json", metavar="FILE", type=out_file, help="also write the whole verdict as JSON")
            sp.set_defaults(func=cmd_verify)

    v = sub.add_parser("verify", help="train K steps on the emulated MCU and compare every weight with Python")
    device_args(v, extra_targets=EXTRA_BOARDS)
    r = sub.add_parser("run", help="generate, build, train and predict on the emulated MCU (verified)")
    device_args(r, extra_targets=EXTRA_BOARDS)
    rp = sub.add_parser("report", help="flash, RAM, stack and instruction counts on the emulated MCU")
    device_args(rp, verify_cmd=False)
    rp.add_argument("--steps", type=int_in(1, MAX_STEPS), default=2, help="training steps measured")
    rp.add_argument("--predictions", type=positive, default=5, help="inferences measured")
    rp.add_argument("--json", type=out_file, help="also write the report as JSON")
    rp.add_argument("--png", type=out_file, help="also write a per-layer bar chart")
    rp.add_argument("--no-per-layer", action="store_true", help="skip the per-layer counts (faster)")
    rp.add_argument("--emulator", choices=["qemu", "renode"], default="qemu",
                    help="renode: also run the training steps on Renode and compare its instruction counter "
                         "with the QEMU plugin's")
    rp.set_defaults(func=cmd_report)

    from .device.parts import part_names

    f = sub.add_parser("fit", help="does a model train on a part: RAM, flash, instructions and estimated ms per "
                                   "step of every trainable tail (docs/fit.md)")
    f.add_argument("model", help="trained .nitro file, preset name or JSON description")
    f.add_argument("--part", metavar="NAME", help=f"{', '.join(part_names())}, or all (default: all)")
    f.add_argument("--batch", type=int_in(1, 4096), default=8, help="training batch on the device")
    f.add_argument("--weights", type=weights_bits, default=None, metavar=widths, help=width_help)
    f.add_argument("--profile", choices=list(PROFILES), default="default", help="for presets / JSON models")
    f.add_argument("--seed", type=int_in(0, 2**64 - 1), default=0, help="for presets / JSON models and the inputs")
    f.add_argument("--no-count", action="store_true", help="memory only: no build, no emulator (fast)")
    f.add_argument("--json", metavar="FILE", type=out_file, help="also write the whole fit as JSON")
    f.set_defaults(func=cmd_fit)

    d = sub.add_parser("demo", help="the main job: train, generate C, train on the emulated MCU, verify, report")
    d.add_argument("--out", default="out/demo", help="output folder")
    d.add_argument("--epochs", type=positive, default=8, help="training epochs")
    d.add_argument("--seed", type=int_in(0, 2**64 - 1), default=0, help="seed of every random draw")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)
    checkpoint_cli.register(sub, device_args, _model_and_data)
    sweep_cli.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except KeyboardInterrupt as e:   # one line, whoever caught it first (Interrupted says what was kept)
        print(e.message if isinstance(e, Interrupted) else "nitro-mcu: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, ZeroDivisionError, OverflowError, RuntimeError, MemoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"nitro-mcu: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
