"""Argument helpers of the ``nitro-mcu`` command line: the parser (one-line usage errors, exit status 2), the
help formatter that shows every default, the argument types (integers in range, weight widths) and the MODEL
argument (a .nitro file, a preset or a JSON description) shared by the verbs of cli.py and checkpoint_cli.py."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import api
from .spec import INT32_MAX, PRESETS, SpecError, check_int


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line that says what was kept (printed once, by ``cli.main``)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the CLI's one line on stderr and exit status 2 (no usage dump)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        cmd = self.prog.split(" ", 1)[1] + " " if " " in self.prog else ""
        self.exit(2, f"nitro-mcu: error: {message} (see: nitro-mcu {cmd}--help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to every option that takes a value, has a default and does not state it itself."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0
                or not action.option_strings or "default" in text):
            return text  # flags (store_true / store_false) and None defaults say what they mean themselves
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def weights_bits(s: str) -> int:
    table = {"int16": 16, "int32": 32, "16": 16, "32": 32}
    if s not in table:
        raise argparse.ArgumentTypeError(f"weight width must be int16 or int32, got '{s}'")
    return table[s]


def int_in(lo: int, hi: int = INT32_MAX, what: str = "an integer"):
    """An argparse type: an integer in [lo, hi]."""

    def parse(s: str) -> int:
        try:
            return check_int(what, int(s), lo, hi)
        except (ValueError, SpecError):
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got '{s}'") from None

    parse.__name__ = f"integer in [{lo}, {hi}]"
    return parse


positive = int_in(1)
non_negative = int_in(0)


def is_model_file(model: str) -> bool:
    return model.endswith(".nitro") or (Path(model).is_file() and model not in PRESETS and not model.endswith(".json"))


def load_or_build(model: str, profile: str, weights: int | None, seed: int = 0, trainable: str | None = None,
                  with_meta: bool = False):
    """(model, input statistics or None): a .nitro file (weights converted to the requested width if they fit)
    or a fresh preset/JSON model; ``trainable`` (comma-separated block names) replaces its trainable set.
    ``with_meta``: (model, the model file's metadata, {} for a preset or description) instead."""
    norm, meta = None, {}
    if is_model_file(model):
        m, meta = api.load(model)
        norm = meta.get("norm") or None
        if weights is not None and weights != m.weight_bits:
            from .trainer.network import Model

            m = Model(m.spec, m.quirks, weights, m.seed, m.weights, sorted(m.trainable))  # checks the range
            m.input_norm = norm
    else:
        m = api.build(model, profile, weights, seed)
    if trainable:
        m.set_trainable(trainable)
    return (m, meta) if with_meta else (m, norm)


TRAINABLE_HELP = ("comma-separated blocks that train (e.g. fc0,output; see summary); the others stay frozen "
                  "(default: all, or the model file's set)")
SPARE_HELP = "output slots for classes added on the device (<name>_add_class)"
spare_classes = int_in(0, 255)   # labels are uint8


MAX_C_NAME = 63  # C11 guarantees 63 significant characters of an internal identifier


def c_name(s: str) -> str:
    """An argparse type: a C identifier prefix (the generated files and symbols are named after it)."""
    if not s.isidentifier() or not s.isascii() or s.startswith("_") or len(s) > MAX_C_NAME:
        raise argparse.ArgumentTypeError(f"--name must be a C identifier of 1..{MAX_C_NAME} characters that does "
                                         f"not begin with '_', got {s[:80]!r}")
    return s


def out_file(s: str) -> str:
    """An argparse type: an output file name that is not empty (``--json "$UNSET"`` would write nothing)."""
    if not s.strip():
        raise argparse.ArgumentTypeError("an empty file name")
    return s
