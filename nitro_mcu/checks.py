"""The value checks of model descriptions and training settings, and their error: one-line ``SpecError``
messages naming the offending key.  A leaf module (nothing of the package imported), so that spec.py and the
modules spec.py itself calls (trainer/recipes.py) share it without an import circle; spec.py re-exports it."""
from __future__ import annotations

import numpy as np


class SpecError(ValueError):
    """A model description that cannot be built; the message names the offending key."""


INT32_MAX = 2**31 - 1
# Size limits checked before anything is allocated (the trainer holds every weight, plus one uint64 draw per
# weight while initialising them; the generated C counts values in int32).
MAX_WEIGHTS = 2**27
MAX_VALUES_PER_SAMPLE = 2**24


def is_int(v) -> bool:
    """A true integer: Python or NumPy int, not bool (JSON's true is no layer width)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_int(what: str, v, lo: int = 1, hi: int = INT32_MAX, error=SpecError) -> int:
    """``v`` as an int if it is an integer in [lo, hi], else ``error`` naming ``what``."""
    if not is_int(v) or not lo <= v <= hi:
        raise error(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)
