"""Compile the generated C on the host and call it from Python (like emlearn's compiled classifiers): a device
concern (a host build and run of the C), so it lives in the device wing; ``nitro_mcu.compile_model`` is it.

    cm = nitro_mcu.compile_model(model, batch=8, train=True)
    cm.train_batch(x, y); cm.predict(x); cm.get_weights()

The shared library is built with the host C compiler (``cc``/``gcc``) and cached by every input of the build
(nitro_mcu/device/cache.py).  Every argument is checked before the C sees it (dtype, range, shape, batch size,
labels, lr_inv, weights): bad input raises a one-line :class:`InputError` and changes nothing.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ..codegen import Converted, convert, status
from ..codegen.render import DEFAULT_NAME, lr_inv_max
from ..spec import check_int, is_int
from ..trainer.network import Model
from .cache import cached_shared_library
from .flags import HOST_SHARED_CFLAGS
from .toolchain import compiler_version, find_host_cc


class CompileError(RuntimeError):
    pass


class InputError(ValueError):
    """An argument the compiled model refuses before calling C; the message names it and the problem."""




def build_shared(conv: Converted, cc: str | None = None, extra_flags=()) -> Path:
    """Compile the sources into a shared library; returns its path (cached by the sources, the compiler, all flags
    and the compiler's version string: nitro_mcu/device/cache.py)."""
    cc = find_host_cc(cc)
    name = conv.plan.name

    def write(d: Path) -> Path:
        conv.save(file=d)
        return d / f"{name}.c"

    got = cached_shared_library(name, cc, [*HOST_SHARED_CFLAGS, *extra_flags], conv.sources, compiler_version(cc),
                                write)
    if isinstance(got, Path):
        return got
    first = got.stderr.strip().splitlines()[0] if got.stderr.strip() else ""
    raise CompileError(f"compiling the generated C failed: {first}\n{got.stderr}")


def int_array(what: str, a, lo: int, hi: int) -> np.ndarray:
    """``a`` as an int64 array if it holds integers in [lo, hi]; else an InputError naming ``what``."""
    arr = np.asarray(a)
    if arr.dtype == object:  # Python ints too large for int64, or mixed types
        vals = arr.reshape(-1).tolist()
        if not all(is_int(v) for v in vals):
            raise InputError(f"{what} must be integers, got {next(v for v in vals if not is_int(v))!r}")
        bad = next((v for v in vals if not lo <= v <= hi), None)
        raise InputError(f"{what} must lie in [{lo}, {hi}], got {bad}")
    if arr.dtype.kind not in "iu":
        sample = arr.reshape(-1)[:1].tolist()
        raise InputError(f"{what} must be integers in [{lo}, {hi}], got {arr.dtype} values"
                         + (f" such as {sample[0]!r}" if sample else ""))
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr.min() if arr.min() < lo else arr.max()
        idx = tuple(int(i) for i in np.argwhere(arr == bad)[0])
        raise InputError(f"{what} must lie in [{lo}, {hi}], got {int(bad)} at index {idx}")
    return arr.astype(np.int64, copy=False)


_RAW_CTYPES = {"u8": ctypes.c_uint8, "s16": ctypes.c_int16, "s32": ctypes.c_int32}  # one raw reading


class CompiledModel:
    """ctypes front-end of a generated model built as a host shared library."""

    def __init__(self, conv: Converted, cc: str | None = None, extra_flags=()):
        self.conv = conv
        self.plan = conv.plan
        self.name = conv.plan.name
        self.lib_path = build_shared(conv, cc, extra_flags)   # extra_flags: test switches (-DNITRO_CKPT_ABLATE_*)
        self.lib = ctypes.CDLL(str(self.lib_path))
        n = self.name
        model = conv.plan.model
        self.num_classes = model.num_classes
        self.input_shape = tuple(model.input_shape)
        self.input_size = int(np.prod(model.input_shape))
        self.num_weights = sum(t.count for t in conv.plan.tensors if t.trainable)  # what export/import carry
        self.max_batch = conv.plan.batch
        self.lr_inv_max = lr_inv_max(conv.plan)
        self.weight_range = (-(2 ** (model.weight_bits - 1)), 2 ** (model.weight_bits - 1) - 1)
        self._f = {}
        for fname, res, args in [
            ("init", None, []),
            ("predict", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p]),
            ("train_batch", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]),
            ("train_sample", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_void_p]),
            ("pending_samples", ctypes.c_int32, []),
            (f"normalize_{conv.plan.norm.dtype if conv.plan.norm else 'u8'}", ctypes.c_int32,
             [ctypes.c_void_p, ctypes.c_void_p]),
            ("window_init", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int32]),
            ("window_push", ctypes.c_int32, [ctypes.c_void_p, _RAW_CTYPES[conv.plan.norm.dtype if conv.plan.norm
                                                                       else "u8"]]),
            ("window_read", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p]),
            ("set_lr_inv", ctypes.c_int32, [ctypes.c_int32]),
            ("get_lr_inv", ctypes.c_int32, []),
            ("get_rng_state", ctypes.c_uint64, []),
            ("set_rng_state", None, [ctypes.c_uint64]),
            ("export_weights", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int32]),
            ("import_weights", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int32]),
            ("force_dropout_masks", None, [ctypes.c_void_p]),
            # new classes (templates/classes.*.j2): present only with spare slots or a rehearsal buffer
            ("add_class", ctypes.c_int32, []),
            ("active_classes", ctypes.c_int32, []),
            ("rehearsal_clear", ctypes.c_int32, [ctypes.c_void_p]),
            ("rehearsal_open", ctypes.c_int32, [ctypes.c_void_p]),
            ("rehearsal_add", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint8]),
            ("rehearsal_count", ctypes.c_int32, [ctypes.c_int32]),
            ("train_rehearsal", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                                                 ctypes.c_int32]),
        ]:
            f = getattr(self.lib, f"{n}_{fname}", None)
            if f is None:
                continue
            f.restype = res
            f.argtypes = args
            self._f[fname] = f
        self._keep = None
        self._f["init"]()

    @property
    def trainable(self) -> bool:
        return "train_batch" in self._f

    def reset(self):
        self._f["init"]()

    def _status(self, fname: str, code: int) -> str:
        return f"{self.name}_{fname} returned {self.name.upper()}_ERR_{status.BY_VALUE.get(code, code)}"

    def check_inputs(self, x) -> np.ndarray:
        """``x`` as a C-contiguous int8 array [N, INPUT_SIZE]: int8 values, N samples of the model's shape."""
        arr = int_array("input values (int8)", x, -128, 127)
        shape = tuple(arr.shape)
        per = shape[1:]
        ok = per in (self.input_shape, (self.input_size,)) or (
            self.plan.model.spec["kind"] == "mlp" and len(per) > 0 and int(np.prod(per)) == self.input_size)
        if not ok:
            raise InputError(f"inputs must have shape [N, {', '.join(map(str, self.input_shape))}] or "
                             f"[N, {self.input_size}], got {list(shape)}")
        return np.ascontiguousarray(arr.reshape(len(arr), self.input_size).astype(np.int8))

    def check_labels(self, y, n: int) -> np.ndarray:
        """``y`` as uint8 labels: ``n`` integers in [0, classes)."""
        arr = int_array("labels", y, 0, self.num_classes - 1)  # the C refuses an inactive spare slot
        if arr.ndim != 1 or len(arr) != n:
            raise InputError(f"{n} input sample(s) need {n} labels (a 1-D array), got shape {list(arr.shape)}")
        return np.ascontiguousarray(arr.astype(np.uint8))

    def predict_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 scores [N, classes], classes [N]) for int8 inputs [N, ...]."""
        x = self.check_inputs(x)
        scores = np.zeros((len(x), self.num_classes), dtype=np.int8)
        cls = np.zeros(len(x), dtype=np.int64)
        for i in range(len(x)):
            cls[i] = self._f["predict"](x[i].ctypes.data, scores[i].ctypes.data)
            if cls[i] < 0:
                raise RuntimeError(self._status("predict", int(cls[i])))
        return scores, cls

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_scores(x)[1]

    def train_batch(self, x: np.ndarray, y: np.ndarray, masks: list | None = None) -> int:
        """One training step; returns the number of correct training-mode predictions."""
        if not self.trainable:
            raise InputError("this model was generated without --train")
        x = self.check_inputs(x)
        if not 1 <= len(x) <= self.max_batch:
            raise InputError(f"a batch holds 1..{self.max_batch} samples (the generated MAX_BATCH), got {len(x)}")
        y = self.check_labels(y, len(x))
        if masks is not None:
            arrs = [np.ascontiguousarray(m, dtype=np.uint8) for m in masks]
            ptrs = (ctypes.c_void_p * len(arrs))(*[a.ctypes.data for a in arrs])
            self._keep = (arrs, ptrs)
            self._f["force_dropout_masks"](ctypes.cast(ptrs, ctypes.c_void_p))
        r = self._f["train_batch"](x.ctypes.data, y.ctypes.data, len(x))
        if masks is not None:
            self._f["force_dropout_masks"](None)
            self._keep = None
        if r < 0:
            raise RuntimeError(self._status("train_batch", r))
        return r

    def train_sample(self, x: np.ndarray, label: int) -> int | None:
        """Stream one sample (``x`` of the model's shape); returns the batch's correct count when it completed
        a batch of MAX_BATCH samples, else None."""
        if not self.trainable:
            raise InputError("this model was generated without --train")
        xs = self.check_inputs(np.asarray(x)[None])
        y = self.check_labels([label], 1)
        correct = ctypes.c_int32(-1)
        r = self._f["train_sample"](xs.ctypes.data, int(y[0]), ctypes.byref(correct))
        if r < 0:
            raise RuntimeError(self._status("train_sample", r))
        return correct.value if r == 1 else None

    @property
    def pending_samples(self) -> int:
        return self._f["pending_samples"]()

    def _raw(self, raw, what: str) -> np.ndarray:
        """``raw`` checked against the model's raw input type: int64 values of that type's range."""
        n = self.plan.norm
        if n is None:
            raise InputError("this model was generated without input statistics (convert(..., norm=...))")
        return int_array(f"{what} ({n.ctype})", raw, n.lo, n.hi)

    def normalize(self, raw) -> np.ndarray:
        """The generated ``<name>_normalize_<dtype>``: raw samples [N, ...] -> int8 [N, INPUT_SIZE]."""
        n = self.plan.norm
        arr = self._raw(raw, "raw input values")
        arr = np.ascontiguousarray(arr.reshape(len(arr), -1).astype(np.dtype(n.ctype[:-2])))
        if arr.shape[1] != self.input_size:
            raise InputError(f"raw samples must hold {self.input_size} values, got {arr.shape[1]}")
        out = np.zeros(arr.shape, dtype=np.int8)
        f = self._f[f"normalize_{n.dtype}"]
        for i in range(len(arr)):
            r = f(arr[i].ctypes.data, out[i].ctypes.data)
            if r != 0:
                raise RuntimeError(self._status(f"normalize_{n.dtype}", r))
        return out

    def normalize_u8(self, raw) -> np.ndarray:
        """:meth:`normalize` of a model trained on uint8 values (its C function is ``<name>_normalize_u8``)."""
        if self.plan.norm is not None and self.plan.norm.dtype != "u8":
            raise InputError(f"this model's raw input type is {self.plan.norm.dtype}: no normalize_u8")
        return self.normalize(raw)

    def windows(self, readings, hop: int) -> list[tuple[int, np.ndarray]]:
        """Push ``readings`` one at a time through ``<name>_window_push`` (a fresh window, ``hop``); for each
        ready window, (the index of the reading that completed it, ``<name>_window_read``'s int8 input)."""
        vals = self._raw(readings, "readings").reshape(-1)
        w = ctypes.create_string_buffer(8 * self.input_size + 64)  # holds the struct (raw ring + 4 int32)
        r = self._f["window_init"](w, int(hop))
        if r != 0:
            raise InputError(f"window hop must lie in [1, {self.input_size}], got {hop}")
        out, x = [], np.zeros(self.input_size, dtype=np.int8)
        for i, v in enumerate(vals.tolist()):
            r = self._f["window_push"](w, v)
            if r < 0:
                raise RuntimeError(self._status("window_push", r))
            if r == 1:
                if self._f["window_read"](w, x.ctypes.data) != 0:
                    raise RuntimeError("window_read failed on a ready window")
                out.append((i, x.copy()))
        return out

    # ---- new classes (docs/new_classes.md); ``st``: a nitro_mcu.device.flashsim.Storage ----------------
    @property
    def active_classes(self) -> int:
        return self._f["active_classes"]() if "active_classes" in self._f else self.num_classes

    def _classes_fn(self, fname: str):
        if fname not in self._f:
            raise InputError(f"this model was generated without {fname} (convert(..., spare_classes=N) / "
                             "generate --spare-classes N)")
        return self._f[fname]

    def add_class(self) -> int:
        """Activate the next spare slot; returns its class index."""
        r = self._classes_fn("add_class")()
        if r < 0:
            raise RuntimeError(self._status("add_class", r))
        return r

    def rehearsal_clear(self, st) -> int:
        return self._classes_fn("rehearsal_clear")(st.ref)

    def rehearsal_open(self, st) -> int:
        """The number of exemplars in the region, or a negative status."""
        return self._classes_fn("rehearsal_open")(st.ref)

    def rehearsal_count(self, label: int = -1) -> int:
        return self._classes_fn("rehearsal_count")(int(label))

    def rehearsal_add(self, st, x, label: int) -> int:
        """Keep one exemplar in the region; returns its index or a negative status."""
        xs = self.check_inputs(np.asarray(x)[None])
        lab = check_int("label", label, 0, 255, error=InputError)
        return self._classes_fn("rehearsal_add")(st.ref, xs.ctypes.data, lab)

    def train_rehearsal(self, st, x, y, k: int) -> int:
        """One step on the new samples ``x``, ``y`` (possibly none) and ``k`` exemplars drawn from flash."""
        n = 0 if x is None else len(x)
        xs = self.check_inputs(x) if n else np.zeros((1, self.input_size), np.int8)
        ys = self.check_labels(y, n) if n else np.zeros(1, np.uint8)
        r = self._classes_fn("train_rehearsal")(st.ref, xs.ctypes.data, ys.ctypes.data, n, int(k))
        if r < 0:
            raise RuntimeError(self._status("train_rehearsal", r))
        return r

    def set_lr_inv(self, lr_inv: int):
        v = check_int("lr_inv", lr_inv, 1, self.lr_inv_max, error=InputError)
        r = self._f["set_lr_inv"](v)
        if r != 0:
            raise RuntimeError(self._status("set_lr_inv", r))

    @property
    def lr_inv(self) -> int:
        return self._f["get_lr_inv"]()

    @property
    def rng_state(self) -> int:
        return int(self._f["get_rng_state"]())

    @rng_state.setter
    def rng_state(self, v: int):
        self._f["set_rng_state"](check_int("rng_state", v, 0, 2**64 - 1, error=InputError))

    def get_weights(self) -> dict:
        """Every weight tensor the C holds, as int arrays by name: the trainable ones exported from the device
        state, the constants (frozen or inference-only) as generated."""
        flat = np.zeros(self.num_weights, dtype=np.int32)
        if self.trainable:
            r = self._f["export_weights"](flat.ctypes.data, self.num_weights)
            if r != self.num_weights:
                raise RuntimeError(self._status("export_weights", r))
        out, i = {}, 0
        for t in self.plan.tensors:
            if t.trainable:
                out[t.name] = flat[i:i + t.count].reshape(t.shape)
                i += t.count
            else:
                out[t.name] = t.values.astype(np.int32).reshape(t.shape)
        return out

    def set_weights(self, weights: dict):
        """Import every trainable tensor (a dict by name, shapes as :meth:`get_weights`); integers of the weight
        width.  Frozen tensors are constants and are not imported."""
        if not self.trainable:
            raise InputError("this model was generated without --train: its weights are constants")
        if not isinstance(weights, dict):
            raise InputError(f"weights must be a dict of tensors by name, got {type(weights).__name__}")
        tensors = [t for t in self.plan.tensors if t.trainable]
        names = [t.name for t in tensors]
        if set(weights) != set(names):
            missing, extra = sorted(set(names) - set(weights)), sorted(set(weights) - set(names))
            raise InputError(f"weights must hold exactly the tensors {', '.join(names)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(map(str, extra))}" if extra else ""))
        parts = []
        for t in tensors:
            a = int_array(f"weights of {t.name} (int{self.plan.model.weight_bits})", weights[t.name],
                          *self.weight_range)
            if a.size != t.count or (a.ndim > 1 and list(a.shape) != list(t.shape)):
                raise InputError(f"weights of {t.name} must have shape {list(t.shape)}, got {list(a.shape)}")
            parts.append(a.reshape(-1))
        flat = np.ascontiguousarray(np.concatenate(parts).astype(np.int32))
        r = self._f["import_weights"](flat.ctypes.data, len(flat))
        if r != len(flat):
            raise RuntimeError(self._status("import_weights", r))


def compile_model(model: Model, batch: int = 1, train: bool = False, name: str = DEFAULT_NAME,
                  cc: str | None = None, spare_classes: int = 0, rehearsal: int | None = None) -> CompiledModel:
    return CompiledModel(convert(model, batch=batch, train=train, name=name, spare_classes=spare_classes,
                                 rehearsal=rehearsal), cc)
