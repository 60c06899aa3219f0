"""nitro_mcu: integer-only NITRO-D training in NumPy, and the same training as generated C for MCUs.

The Python API mirrors the CLI verbs::

    import nitro_mcu as nm
    model = nm.build("mlp1", profile="default", weight_bits=32, seed=0)
    data = nm.load_data("bundled", seed=0)
    history = nm.train(model, data, epochs=5, recipe=nm.recipe("mlp1"))  # the preset's recipe (docs/profiles.md)
    model, data, _ = nm.refit(model, data, history, augment=nm.recipe("mlp1").augment)  # retrain on train + val
    nm.save(model, "mlp1.nitro", data=data)
    print(nm.summary(model)); print(nm.evaluate(model, data))
"""
from __future__ import annotations

from ._version import __version__
from .api import build, evaluate, load, load_data, recipe, refit, save, summary, train
from .codegen import convert
from .device.compiled import compile_model
from .spec import PRESETS
from .trainer.network import Model
from .trainer.profiles import PROFILES
from .trainer.recipes import Recipe

__all__ = ["__version__", "build", "evaluate", "load", "load_data", "recipe", "refit", "save", "summary", "train",
           "convert", "compile_model", "Model", "PRESETS", "PROFILES", "Recipe"]
