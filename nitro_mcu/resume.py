"""Host training that never loses work (docs/checkpoint.md): the output folder is checked before training, every
finished epoch is kept in the run's ``.nitro`` file, and ``nitro-mcu train --resume`` continues from it.

The ``.nitro`` holds the model a run would return if it ended there (the best weights so far) and, as the member
``files/resume.ckpt``, a device-format checkpoint of the current weights, dropout PRNG, lr_inv and step, with the
rest of the loop's state (data PRNG, schedule monitors, history, the options that shape the run) in
``training.resume``.  Both are written in one atomic replace after each epoch.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from . import api, checkpoint as ck, modelfile
from .fileio import atomic_write
from .trainer.loop import EpochRecord, History
from .trainer.network import Model
from .trainer.rng import Rng
from .trainer.state import TrainState

MEMBER = "resume.ckpt"
MAX_EPOCHS = 10**6  # train --epochs' bound
SLACK = 1 << 20   # metrics, curves and the zip's own bytes


class ResumeError(ValueError):
    """A run that cannot be resumed, or an output folder that cannot take the outputs."""


def output_bytes(model: Model) -> int:
    """About the most the outputs of a run take: weights twice (model and checkpoint) and the small files."""
    return 2 * ck.size(model) + SLACK


def check_out(out: Path, need: int) -> None:
    """A one-line error unless ``out`` can be created, written and has ``need`` bytes free."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".nitro-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ResumeError(f"--out {out}: not writable ({e.strerror or e})") from None
    free = shutil.disk_usage(out).free
    if free < need:
        raise ResumeError(f"--out {out}: {free} bytes free, the outputs need about {need}")


BP = (-1, 10000)  # accuracies in basis points; -1: none yet
RECORD_FIELDS = {name: modelfile.Field("number" if name == "seconds" else "int") for name in
                 ("epoch", "lr_inv", "train_acc_bp", "train_loss", "monitor_acc_bp", "test_acc_bp", "seconds")}
HISTORY_FIELDS = {
    "records": modelfile.Field("list", check=lambda v: None if all(isinstance(r, dict) for r in v)
                               else "must be a list of objects"),
    "best_epoch": modelfile.Field("int", check=modelfile.in_range(0, MAX_EPOCHS)),
    "best_monitor_bp": modelfile.Field("int", check=modelfile.in_range(-1, 2**31 - 1)),
    "test_at_best_bp": modelfile.Field("int", check=modelfile.in_range(-1, 10000)),
    "stopped_early": modelfile.Field("bool"),
    "monitor": modelfile.Field("str", check=modelfile.one_of("val", "test", "none")),
}
PAIR = modelfile.each_in(-2**31, 2**31 - 1, 2)
RESUME_FIELDS = {  # training.resume of a run's .nitro (Keeper._files writes it)
    "epoch": modelfile.Field("int", check=modelfile.in_range(1, MAX_EPOCHS)),
    "plateau": modelfile.Field("int_list", check=lambda v: PAIR(v) or (None if len(v) == 2 else
                                                                       f"must be [best, counter], got {v}")),
    "stopper": modelfile.Field("int_list", check=lambda v: PAIR(v) or (None if len(v) == 2 else
                                                                       f"must be [best, counter], got {v}")),
    "data_rng": modelfile.Field("str", check=modelfile.decimal_u64),
    "options": modelfile.Field("dict"),
    "history": modelfile.Field("dict", fields=HISTORY_FIELDS),
    "finished": modelfile.Field("bool", False),  # the run's final file (absent: an epoch checkpoint)
}


def check_record(res: dict, where: str) -> None:
    """The resume record field by field, and its consistency: one history record per finished epoch."""
    modelfile.check_fields(res, RESUME_FIELDS, where, ResumeError, "training.resume.")
    records = res["history"]["records"]
    for i, r in enumerate(records):
        modelfile.check_fields(r, RECORD_FIELDS, where, ResumeError, f"training.resume.history.records[{i}].")
        if r["epoch"] != i + 1:
            raise ResumeError(f"{where}: field 'training.resume.history.records[{i}].epoch' is {r['epoch']}, not {i + 1}")
    if len(records) != res["epoch"]:
        raise ResumeError(f"{where}: field 'training.resume.epoch' is {res['epoch']} but the history holds "
                          f"{len(records)} epoch(s)")
    if res["history"]["best_epoch"] > res["epoch"]:
        raise ResumeError(f"{where}: field 'training.resume.history.best_epoch' is {res['history']['best_epoch']}, after the "
                          f"last epoch {res['epoch']}")


def check_not_replacing(path: Path) -> None:
    """A fresh run must not silently replace a resumable run kept in ``path``."""
    meta = modelfile.read_meta(path) if path.is_file() else None
    res = ((meta or {}).get("training") or {}).get("resume") if isinstance((meta or {}).get("training"), dict) \
        else None
    if isinstance(res, dict):
        raise ResumeError(f"{path} holds a resumable run (epoch {res.get('epoch')!r}): continue it with --resume, "
                          "or start afresh and replace it with --force")


def run_options(a, dataset: str, monitor: str, augment, recipe) -> dict:
    """The options that decide every draw and step of a run: a resumed run must use the same."""
    return {"dataset": dataset, "seed": a.seed, "batch": a.batch, "profile": a.profile, "weights": a.weights,
            "val_size": a.val_size, "monitor": monitor, "augment": list(augment) if augment else False,
            "schedule": not a.no_schedule, "lr_inv": a.lr_inv, "recipe": recipe.to_dict(),
            "test_data": getattr(a, "test_data", None), "test_size": getattr(a, "test_size", None)}


class Keeper:
    """Writes the epoch checkpoints of one run and reads them back for ``--resume``."""

    def __init__(self, out: Path, name: str, model: Model, data, options: dict, resume: bool = False):
        self.path = Path(out) / f"{name}.nitro"
        self.metrics = Path(out) / f"{name}_metrics.csv"
        self.model, self.data, self.options = model, data, options
        self.finished = False   # the file read for --resume is a finished run's, not an epoch checkpoint
        self.state: TrainState | None = self._read() if resume else None
        self.last = self.state

    def _steps(self, epoch: int) -> int:
        return epoch * (len(self.data.x_train) // self.options["batch"])

    def _files(self, state: TrainState) -> tuple[Model, dict, dict]:
        """The .nitro's model (selected weights), its resume metadata and the checkpoint member."""
        m = self.model
        cur = Model(m.spec, m.quirks, m.weight_bits, m.seed, state.weights, sorted(m.trainable))
        cur.dropout_rng = Rng(0, state=state.dropout_rng)
        blob = ck.encode(cur, self._steps(state.epoch), state.lr_inv)
        kept = cur if state.best_weights is None else Model(m.spec, m.quirks, m.weight_bits, m.seed,
                                                            state.best_weights, sorted(m.trainable))
        kept.dropout_rng = Rng(0, state=state.dropout_rng)
        h = state.history
        meta = {"epoch": state.epoch, "plateau": list(state.plateau), "stopper": list(state.stopper),
                "data_rng": str(state.data_rng), "options": self.options,
                "history": {"records": [dataclasses.asdict(r) for r in h.records], "best_epoch": h.best_epoch,
                            "best_monitor_bp": h.best_monitor_bp, "test_at_best_bp": h.test_at_best_bp,
                            "stopped_early": h.stopped_early, "monitor": h.monitor}}
        return kept, meta, {MEMBER: blob}

    def save_epoch(self, state: TrainState) -> None:
        """After each finished epoch: the metrics so far, then the model file with the state to resume."""
        atomic_write(self.metrics, state.history.to_csv().encode())
        kept, meta, files = self._files(state)
        api.save(kept, self.path, data=self.data, history=state.history, extra={"resume": meta}, files=files)
        self.last = state

    def write(self, model: Model, data, hist: History, extra: dict) -> Path:
        """The final model file (``model`` may be a refit's); it keeps the run's last state for ``--resume``."""
        files = None
        if self.last is not None:
            _, meta, files = self._files(self.last)
            extra = dict(extra, resume=dict(meta, finished=True))
        return api.save(model, self.path, data=data, history=hist, extra=extra, files=files)

    def interrupted(self) -> str:
        if self.last is None:
            return "nitro-mcu: interrupted before the first epoch finished; nothing was written"
        return (f"nitro-mcu: interrupted; {self.path} keeps epoch {self.last.epoch} "
                f"(continue with the same command and --resume)")

    def _read(self) -> TrainState:
        where = f"--resume: {self.path}"
        if not self.path.is_file():
            raise ResumeError(f"{where}: no such file (nothing to resume)")
        kept, meta, files = modelfile.load_files(self.path)
        res = meta["training"].get("resume")
        if not isinstance(res, dict) or MEMBER not in files:
            raise ResumeError(f"{where}: the file holds no resumable run")
        check_record(res, where)
        # files written before the flag existed: only the final write records the run's seconds
        self.finished = bool(res.get("finished", "seconds" in meta["training"]))
        for k, v in self.options.items():
            if res["options"].get(k) != v:
                was, now = ("unset (the default)" if o is None else repr(o) for o in (res["options"].get(k), v))
                raise ResumeError(f"{where}: the run used {k} {was}, not {now}")
        try:
            ck.check_version(files[MEMBER])
            c = ck.decode(files[MEMBER], self.model)
        except ck.CheckpointError as e:
            raise ResumeError(f"{where}: {e}") from None
        if ck.fingerprint(kept) != ck.fingerprint(self.model):
            raise ResumeError(f"{where}: the file holds another model")
        h = res["history"]
        hist = History([EpochRecord(**{k: r[k] for k in RECORD_FIELDS}) for r in h["records"]], h["best_epoch"], h["best_monitor_bp"],
                       h["test_at_best_bp"], h["stopped_early"], h["monitor"])
        best = None if hist.monitor == "none" else dict(kept.weights)
        return TrainState(res["epoch"], c.lr_inv, tuple(res["plateau"]), tuple(res["stopper"]), int(res["data_rng"]),
                          c.rng_state, c.tensors(self.model), best, hist)
