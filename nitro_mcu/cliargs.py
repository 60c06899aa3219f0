"""Argument helpers of the ``nitro-mcu`` command line: the parser (one-line usage errors, exit status 2), the
help formatter that shows every default, and the argument types (integers in range, weight widths)."""
from __future__ import annotations

import argparse

from .spec import INT32_MAX, SpecError, check_int


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
