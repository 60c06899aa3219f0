"""Sweeps: many training runs (models x seeds x options) as Ray tasks, gathered into one table (docs/sweeps.md).

Every run of a sweep is a :class:`RunConfig`; :func:`run_one` trains it (the model's recipe on a validation split,
a refit on train + validation per the recipe, one read of the test set for the final model) and returns its record.  :func:`run_sweep` sends the runs to Ray -- a local Ray by
default, an existing cluster with ``address`` -- and writes each finished record at once to ``<out>/runs/<key>.json``.
A run that raises, or whose worker dies, is reported and leaves ``<key>.failed.json``; the same sweep started again
skips the finished runs and re-runs only the failed or missing ones.  Then ``<out>/sweep.csv`` holds one row per
run and ``<out>/sweep.md`` the table: mean ± σ (population), min–max per configuration.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .fileio import atomic_write
from .spec import DEFAULT_BATCH

RECORD_COLS = ["key", "model", "dataset", "profile", "weight_bits", "seed", "monitor", "train_images", "val_images",
               "test_images", "epochs", "epochs_run", "best_epoch", "stopped_early", "final_lr_inv", "train_acc",
               "val_acc", "test_acc", "seconds", "refit_images", "refit_epochs", "refit_test_acc", "refit_seconds"]
GROUP_KEYS = ("model", "dataset", "profile", "weight_bits", "epochs", "monitor")


@dataclass(frozen=True)
class RunConfig:
    """One training run; ``dataset`` None means the model's own (its preset's), ``weights`` None its width."""

    model: str
    seed: int
    epochs: int | None = None  # cap on the recipe's length; None: the recipe's length
    dataset: str | None = None
    data_dir: str | None = None
    batch: int = DEFAULT_BATCH
    profile: str = "default"
    weights: int | None = None
    monitor: str | None = None  # None: the profile's (the test set under Q10, else a validation split)
    refit: bool | None = None  # None: the recipe's; only where a validation split drives the run
    augment: bool | None = None  # None: the recipe's
    recipe: str = "tuned"  # nitro_mcu/trainer/recipes.py: the model's own ("tuned") or the paper's
    test_reads: str = "once"  # once: the final model only; epoch: logged after every epoch too

    def key(self) -> str:
        """A file-name-safe identity: readable prefix, digest of every field."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(self.model).stem)
        return f"{stem}-s{self.seed}-{digest}"


TEST_READS = ("once", "epoch")


def run_one(cfg: dict, echo=None) -> dict:
    """Train one configuration (a :class:`RunConfig` as a dict) and return its record; runs inside a Ray task.

    The honest protocol (docs/profiles.md): the recipe's schedule on a validation split, then (per the recipe or
    ``refit``) a fresh model on train + validation for the best epoch count; the test set is read once, for the
    final model (the refit's, else the best validation epoch), unless it drives the run (Q10) or ``test_reads``
    is "epoch".  ``echo`` (serial runs only) receives one line per epoch."""
    from . import api
    from .trainer.malloc import tune_malloc

    c = RunConfig(**cfg)
    tune_malloc()  # a worker process only trains
    model, data, monitor, rec = setup(c)
    refit = monitor == "val" and len(data.x_val) > 0 and (rec.refit if c.refit is None else c.refit)
    reads = "epoch" if monitor == "test" or c.test_reads == "epoch" else "never" if refit else "end"
    augment = api.augment_for(c.augment, rec, data)
    epochs = rec.epochs if c.epochs is None else min(rec.epochs, c.epochs)

    def on_epoch(r):
        echo(f"    epoch {r.epoch:3d}  lr_inv {r.lr_inv:7d}  train {pct(r.train_acc_bp)}  {monitor} "
             f"{pct(r.monitor_acc_bp)}  test {pct(r.test_acc_bp) or '-'}  {r.seconds:.1f} s")

    t0 = time.perf_counter()
    hist = api.train(model, data, epochs, c.batch, augment=augment or False, schedule=True, progress=False,
                     on_epoch=on_epoch if echo else None, recipe=rec, test_reads=reads)
    best = hist.records[hist.best_epoch - 1]
    r = dict(key=c.key(), model=c.model, dataset=data.name, profile=c.profile, weight_bits=model.weight_bits,
             seed=c.seed, monitor=monitor, train_images=len(data.x_train), val_images=len(data.x_val),
             test_images=len(data.x_test), epochs=epochs, epochs_run=len(hist.records), best_epoch=hist.best_epoch,
             stopped_early=hist.stopped_early, final_lr_inv=hist.records[-1].lr_inv, train_acc_bp=best.train_acc_bp,
             val_acc_bp=hist.best_monitor_bp if monitor == "val" else None,
             test_acc_bp=None if hist.test_at_best_bp < 0 else hist.test_at_best_bp,
             seconds=round(time.perf_counter() - t0, 1), refit_images=None, refit_epochs=None,
             refit_test_acc_bp=None, refit_seconds=None)
    if refit:
        if echo:
            echo(f"    refit: {hist.best_epoch} epochs on train + val")
        t1 = time.perf_counter()
        _, full, rh = api.refit(model, data, hist, c.batch, augment=augment or False,
                                on_epoch=on_epoch if echo else None, test_reads="epoch" if reads == "epoch" else "end")
        r.update(refit_images=len(full.x_train), refit_epochs=len(rh.records), refit_test_acc_bp=rh.test_at_best_bp,
                 refit_seconds=round(time.perf_counter() - t1, 1))
    return r


def setup(c: RunConfig, loaded: dict | None = None):
    """(model, data, monitor, recipe) of one run, checked: the model builds, the data loads and fits it.
    ``loaded`` caches data sets across calls (key: how they were loaded)."""
    from . import api

    if c.test_reads not in TEST_READS:
        raise ValueError(f"test_reads must be one of {', '.join(TEST_READS)}, got {c.test_reads!r}")
    spec, defaults = api.resolve_spec(c.model)
    dataset = c.dataset or defaults.get("dataset") or "bundled"
    if c.dataset is None and c.data_dir is None:
        dataset = "bundled"  # a preset's paper dataset needs its files: without data_dir, the bundled subset
    model = api.build(spec, c.profile, c.weights, c.seed)
    monitor = c.monitor or ("test" if model.quirks.monitor_test else "val")
    if c.refit and monitor != "val":
        raise ValueError("refit needs a validation split (monitor 'val', a profile without Q10)")
    loaded = {} if loaded is None else loaded
    how = (dataset, c.seed, c.data_dir, monitor)
    if how not in loaded:
        loaded[how] = api.load_data(dataset, c.seed, c.data_dir, None if monitor == "val" else 0, monitor)
    data = loaded[how]
    api.check_compatible(model, data)
    return model, data, monitor, api.recipe(c.model, c.profile, c.recipe, data.name)


def check(configs: list[RunConfig], out: Path) -> None:
    """Everything a sweep can check before its first task, so that bad input writes nothing: the output folder
    takes the run files, and each distinct model / data combination builds, loads and fits (with the first seed)."""
    from .fileio import check_names, check_output_file

    out = Path(out)
    check_output_file(out / "sweep.csv", "--out")
    check_names(out / "runs", [f"{c.key()}.failed.json" for c in configs], "a run file")
    loaded, seen = {}, set()
    for c in configs:
        ident = asdict(c) | {"seed": configs[0].seed}
        key = json.dumps(ident, sort_keys=True)
        if key not in seen:
            seen.add(key)
            setup(RunConfig(**ident), loaded)


@dataclass
class SweepResult:
    records: list  # the finished runs of this sweep, in configuration order
    failures: dict  # key -> one-line error, for the runs that failed this time
    reused: int  # finished runs found on disk and not redone

    @property
    def ok(self) -> bool:
        return not self.failures


def run_sweep(configs: list[RunConfig], out: Path, address: str | None = None, num_cpus: int | None = None,
              serial: bool = False, echo=print, task=run_one, verbose: bool = False) -> SweepResult:
    """Run every configuration not finished yet under ``out``, as Ray tasks (or in this process with ``serial``),
    then write ``sweep.csv`` and ``sweep.md``.  ``task`` is the function each run calls (default :func:`run_one`).
    ``verbose``: per-epoch lines through ``echo``; serial only (Ray workers do not print)."""
    if verbose and not serial:
        raise ValueError("per-epoch lines need a serial sweep: Ray workers do not print")
    out = Path(out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    done, todo = {}, []
    for c in configs:
        p = runs / f"{c.key()}.json"
        if p.is_file():
            done[c.key()] = json.loads(p.read_text())
        else:
            todo.append(c)
    if done:
        echo(f"{len(done)} of {len(configs)} run(s) already finished in {runs}: kept, not redone")
    failures = {}

    def finished(c: RunConfig, rec: dict | None, err: str | None):
        if err is None:
            atomic_write(runs / f"{c.key()}.json", json.dumps(rec, indent=1).encode())
            (runs / f"{c.key()}.failed.json").unlink(missing_ok=True)
            done[c.key()] = rec
            echo(f"  {describe(c)}: {line(rec)}")
        else:
            atomic_write(runs / f"{c.key()}.failed.json", json.dumps({"config": asdict(c), "error": err}).encode())
            failures[c.key()] = err
            echo(f"  {describe(c)}: FAILED: {err}")

    if todo:
        echo(f"running {len(todo)} run(s) " + ("in this process" if serial else
                                               f"as Ray tasks ({'cluster ' + address if address else 'local Ray'})"))
        if serial:
            for c in todo:
                try:
                    finished(c, task(asdict(c), echo) if verbose else task(asdict(c)), None)
                except Exception as e:  # noqa: BLE001 - a run's failure is reported, the sweep goes on
                    finished(c, None, one_line(e))
        else:
            _run_ray(todo, address, num_cpus, finished, task)
    records = [done[c.key()] for c in configs if c.key() in done]
    write_tables(out, records, configs)
    return SweepResult(records, failures, len(configs) - len(todo))


def _run_ray(todo: list[RunConfig], address, num_cpus, finished, task) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("sweeps run on Ray: pip install ray (or pass --serial to run here, one after another)") \
            from None
    started = not ray.is_initialized()
    if started:
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env = {"env_vars": {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}}  # 1 CPU a task
        if address:  # a cluster: ship this package's code to its workers
            env["py_modules"] = [str(Path(__file__).resolve().parent)]
        else:  # a local Ray: the workers import this very package
            env["env_vars"]["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")]))
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 logging_level="WARNING", log_to_driver=False, runtime_env=env)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(task)
        pending = {remote.remote(asdict(c)): c for c in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            c = pending.pop(ready[0])
            try:
                finished(c, ray.get(ready[0]), None)
            except Exception as e:  # noqa: BLE001 - RayTaskError (the run raised), WorkerCrashedError (killed), ...
                finished(c, None, one_line(getattr(e, "cause", None) or e))
    finally:
        if started:
            ray.shutdown()


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}".rstrip(": ")


def describe(c: RunConfig) -> str:
    return f"{c.model} seed {c.seed}" + (f" on {c.dataset}" if c.dataset else "")


def pct(bp) -> str:
    from .trainer.loop import format_bp

    return "" if bp is None else format_bp(bp)


def line(r: dict) -> str:
    val = "" if r["val_acc_bp"] is None else f"val {pct(r['val_acc_bp'])} %, "
    test = "test not read" if r["test_acc_bp"] is None else f"test {pct(r['test_acc_bp'])} %"
    refit = "" if r["refit_test_acc_bp"] is None else \
        f"; refit on {r['refit_images']}: test {pct(r['refit_test_acc_bp'])} %, {r['refit_seconds']:.1f} s"
    return f"{val}{test}, best epoch {r['best_epoch']} of {r['epochs_run']}, {r['seconds']:.1f} s{refit}"


def summarize(records: list, keys: tuple = GROUP_KEYS) -> list[dict]:
    """One row per group of ``keys`` (default: the configuration, all fields but the seed): runs, mean ± σ,
    min–max of test, validation and refit accuracy, mean epochs run and seconds."""
    groups = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    rows = []
    for key, rs in groups.items():
        row = dict(zip(keys, key), runs=len(rs), seeds=[r["seed"] for r in rs],
                   test=stats([r["test_acc_bp"] for r in rs if r["test_acc_bp"] is not None]),
                   val=stats([r["val_acc_bp"] for r in rs if r["val_acc_bp"] is not None]),
                   refit=stats([r["refit_test_acc_bp"] for r in rs if r["refit_test_acc_bp"] is not None]),
                   epochs_run=statistics.fmean(r["epochs_run"] for r in rs),
                   seconds=statistics.fmean(r["seconds"] for r in rs))
        rows.append(row)
    return rows


def stats(bps: list) -> dict | None:
    """mean, population σ, min and max of accuracies in basis points, as percentages; None for no values."""
    if not bps:
        return None
    v = [b / 100 for b in bps]
    return dict(n=len(v), mean=statistics.fmean(v), std=statistics.pstdev(v), lo=min(v), hi=max(v))


def fmt(s: dict | None) -> str:
    return "–" if s is None else f"{s['mean']:.2f} ± {s['std']:.2f} ({s['lo']:.2f}–{s['hi']:.2f})"


def table(records: list) -> str:
    head = "| Model | Data | Profile | Weights | Epochs | Monitor | Runs | Test % mean ± σ (min–max) | Val % | Refit test % | " \
           "Epochs run | s per run |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summarize(records):
        lines.append(f"| {s['model']} | {s['dataset']} | {s['profile']} | int{s['weight_bits']} | {s['epochs']} | "
                     f"{s['monitor']} | {s['runs']} | **{fmt(s['test'])}** | {fmt(s['val'])} | {fmt(s['refit'])} | "
                     f"{s['epochs_run']:.0f} | {s['seconds']:.0f} |")
    return "\n".join(lines)


def csv_text(records: list, cols: list = RECORD_COLS) -> str:
    """One row per run; accuracies as percentages, empty where not measured (a test set not read)."""
    rows = [",".join(cols)]
    for r in records:
        row = {**r, "train_acc": pct(r["train_acc_bp"]), "val_acc": pct(r["val_acc_bp"]),
               "test_acc": pct(r["test_acc_bp"]), "refit_test_acc": pct(r["refit_test_acc_bp"])}
        rows.append(",".join("" if row.get(c) is None else str(row[c]) for c in cols))
    return "\n".join(rows) + "\n"


def write_tables(out: Path, records: list, configs: list[RunConfig]) -> None:
    atomic_write(out / "sweep.csv", csv_text(records).encode())
    missing = len(configs) - len(records)
    md = ["# Sweep", "", f"{len(records)} of {len(configs)} run(s) finished"
          + (f"; {missing} failed or not run yet (run the same sweep again to run them)" if missing else "") + ".",
          "The test set is read once per run, for the final model: the refit's (Refit test), else the best "
          "validation epoch's (Test; – where a refit followed); σ is the population standard deviation over the seeds.", "", table(records), ""]
    atomic_write(out / "sweep.md", "\n".join(md).encode())
