"""Compile the generated C on the host and call it from Python (like emlearn's compiled classifiers).

    cm = nitro_mcu.compile_model(model, batch=8, train=True)
    cm.train_batch(x, y); cm.predict(x); cm.get_weights()

The shared library is built with the host C compiler (``cc``/``gcc``) and cached by every input of the build
(nitro_mcu/device/cache.py).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from . import Converted, convert
from ..device.cache import cache_dir, input_key
from ..device.flags import HOST_SHARED_CFLAGS
from ..device.toolchain import compiler_version
from ..trainer.network import Model


class CompileError(RuntimeError):
    pass


def build_shared(conv: Converted, cc: str | None = None, extra_flags=()) -> Path:
    """Write the sources and compile them into a shared library; returns its path (cached).

    The cache key covers the sources, the compiler, all flags and the compiler's version string."""
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise CompileError("no host C compiler found (apt-get install gcc)")
    flags = [*HOST_SHARED_CFLAGS, *extra_flags]
    out = cache_dir() / f"{conv.plan.name}_{input_key([cc, *flags], conv.sources, compiler_version(cc))}"
    lib = out / f"lib{conv.plan.name}.so"
    if lib.is_file():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    conv.save(file=out)
    tmp = out / f".lib{conv.plan.name}.so.{os.getpid()}"
    cmd = [cc, *flags, "-o", str(tmp), str(out / f"{conv.plan.name}.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"compiling the generated C failed: {proc.stderr.strip().splitlines()[0] if proc.stderr else ''}"
                           f"\n{proc.stderr}")
    os.replace(tmp, lib)
    return lib


class CompiledModel:
    """ctypes front-end of a generated model built as a host shared library."""

    def __init__(self, conv: Converted, cc: str | None = None):
        self.conv = conv
        self.plan = conv.plan
        self.name = conv.plan.name
        self.lib_path = build_shared(conv, cc)
        self.lib = ctypes.CDLL(str(self.lib_path))
        n = self.name
        self.num_classes = conv.plan.model.num_classes
        self.input_size = int(np.prod(conv.plan.model.input_shape))
        self.num_weights = sum(t.count for t in conv.plan.tensors)
        self._f = {}
        for fname, res, args in [
            ("init", None, []),
            ("predict", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p]),
            ("train_batch", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]),
            ("set_lr_inv", ctypes.c_int32, [ctypes.c_int32]),
            ("get_lr_inv", ctypes.c_int32, []),
            ("get_rng_state", ctypes.c_uint64, []),
            ("set_rng_state", None, [ctypes.c_uint64]),
            ("export_weights", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int32]),
            ("import_weights", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_int32]),
            ("force_dropout_masks", None, [ctypes.c_void_p]),
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

    def predict_scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 scores [N, classes], classes [N]) for int8 inputs [N, ...]."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8).reshape(len(x), self.input_size))
        scores = np.zeros((len(x), self.num_classes), dtype=np.int8)
        cls = np.zeros(len(x), dtype=np.int64)
        for i in range(len(x)):
            cls[i] = self._f["predict"](x[i].ctypes.data, scores[i].ctypes.data)
        return scores, cls

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_scores(x)[1]

    def train_batch(self, x: np.ndarray, y: np.ndarray, masks: list | None = None) -> int:
        """One training step; returns the number of correct training-mode predictions."""
        if not self.trainable:
            raise ValueError("this model was generated without --train")
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8).reshape(len(x), self.input_size))
        y = np.ascontiguousarray(np.asarray(y, dtype=np.uint8))
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
            raise ValueError("train_batch rejected the batch (size or label out of range)")
        return r

    def set_lr_inv(self, lr_inv: int):
        if self._f["set_lr_inv"](int(lr_inv)) != 0:
            raise ValueError(f"lr_inv must be positive, got {lr_inv}")

    @property
    def lr_inv(self) -> int:
        return self._f["get_lr_inv"]()

    @property
    def rng_state(self) -> int:
        return int(self._f["get_rng_state"]())

    @rng_state.setter
    def rng_state(self, v: int):
        self._f["set_rng_state"](int(v))

    def get_weights(self) -> dict:
        """All weight tensors as int arrays, by name (the device's state, for export to Python)."""
        if self.trainable:
            flat = np.zeros(self.num_weights, dtype=np.int32)
            if self._f["export_weights"](flat.ctypes.data, self.num_weights) != self.num_weights:
                raise RuntimeError("export_weights failed")
        else:
            flat = np.concatenate([t.values for t in self.plan.tensors]).astype(np.int32)
        out, i = {}, 0
        for t in self.plan.tensors:
            out[t.name] = flat[i:i + t.count].reshape(t.shape)
            i += t.count
        return out

    def set_weights(self, weights: dict):
        flat = np.ascontiguousarray(np.concatenate([np.asarray(weights[t.name]).reshape(-1)
                                                    for t in self.plan.tensors]).astype(np.int32))
        if self._f["import_weights"](flat.ctypes.data, len(flat)) != len(flat):
            raise ValueError("import_weights rejected the weights (count or range)")


def compile_model(model: Model, batch: int = 1, train: bool = False, name: str = "nitro_model",
                  cc: str | None = None) -> CompiledModel:
    return CompiledModel(convert(model, batch=batch, train=train, name=name), cc)
