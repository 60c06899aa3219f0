"""Where the tests find their files: the golden vectors travel with the repository (tests/golden); the full
MNIST / FashionMNIST IDX files are optional and come from NITRO_MCU_DATA_DIR (a folder holding ``mnist/`` and
``fashion-mnist/``). Tests that need them skip, with this reason printed, when it is unset or incomplete."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
DATA_ENV = "NITRO_MCU_DATA_DIR"
DATASETS = Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None


def dataset_dir(name: str) -> Path | None:
    """The folder of a full dataset (``mnist`` or ``fashion-mnist``), or None where it is not available."""
    if DATASETS is None or not any((DATASETS / name).glob("train-images*")):
        return None
    return DATASETS / name


def needs_dataset(name: str):
    why = (f"full {name} not available: set {DATA_ENV} to a folder holding {name}/ (IDX files)"
           if DATASETS is None else f"{DATASETS / name} holds no IDX files")
    return pytest.mark.skipif(dataset_dir(name) is None, reason=why)
