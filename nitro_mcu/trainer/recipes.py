"""Training recipes: how long, how fast, with what augmentation and whether to refit (not architecture).

A preset's description may carry a ``recipe`` (a training default, like ``dataset``; nitro_mcu/spec.py):
the default-profile recipe chosen for it on a validation split only (docs/profiles.md, "Training recipes").
Without one, and always in the ``reference`` profile, a run uses the paper's recipe (§5.3): the
description's lr_inv, the plateau / early-stop rule, at most 150 epochs, the paper's augmentation when
the description's ``augment`` is true.

Every element is integer and seeded, and the recipe adds no random draw of its own.  Per epoch the data
stream (rng.STREAM_DATA) gives, in this order: the shuffle (``Rng.permutation``), then for each full batch
in turn the augmentation draws of data.augment (per sample: crop c = below(2), top/left = below(2*pad+1)
when c = 1, then flip f = below(2)); Dropout draws from its own stream.  The step schedule multiplies
lr_inv by an integer after fixed epochs; the refit replays the validation run's lr_inv per epoch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..checks import INT32_MAX, SpecError, check_int, is_int
from .data import augment_defaults
from .profiles import PROFILES, Quirks

PAPER_EPOCHS = 150
RECIPE_CHOICES = ("tuned", "paper")  # the description's own recipe (else the paper's), or the paper's
MAX_EPOCHS = 10**6
MAX_CROP_PAD = 64


@dataclass(frozen=True)
class Recipe:
    epochs: int = PAPER_EPOCHS  # at most; the validation monitor picks the best epoch up to here
    lr_inv: int | None = None  # initial inverse learning rate; None = the description's
    crop_pad: int = 0  # data.augment RandomCrop pad, applied with p = 1/2 (0 = no crop)
    flip: bool = False  # data.augment horizontal flip with p = 1/2
    milestones: tuple = ()  # lr_inv x factor after these epochs, no plateau, no early stop; () = paper rule
    factor: int = 3
    refit: bool = False  # then retrain on train + validation for the best validation epoch count

    @property
    def augment(self) -> tuple | None:
        """(crop_pad, flip) for data.augment, or None."""
        return (self.crop_pad, self.flip) if self.crop_pad or self.flip else None

    def to_dict(self) -> dict:
        """JSON-ready (the model file's ``training.recipe``)."""
        return {**asdict(self), "milestones": list(self.milestones)}

    def describe(self) -> str:
        sched = (f"lr_inv x{self.factor} after epochs {', '.join(map(str, self.milestones))}" if self.milestones
                 else f"plateau x{self.factor} (patience 15 from epoch 10), early stop (patience 35 from epoch 30)")
        aug = (f"crop pad {self.crop_pad} p=1/2" if self.crop_pad else "") + \
              (f"{', ' if self.crop_pad else ''}flip p=1/2" if self.flip else "")
        return (f"at most {self.epochs} epochs, lr_inv {self.lr_inv or 'of the description'}, {sched}, "
                f"{aug or 'no augmentation'}{', refit on train + val' if self.refit else ''}")


def recipe_from_dict(d) -> Recipe:
    """A description's ``recipe`` object, checked key by key (one-line SpecError)."""
    if not isinstance(d, dict):
        raise SpecError(f"'recipe' must be an object, got {d!r}")
    unknown = set(d) - set(Recipe.__dataclass_fields__)
    if unknown:
        raise SpecError(f"unknown key(s) in 'recipe': {', '.join(sorted(unknown))}")
    epochs = check_int("'recipe.epochs'", d.get("epochs", PAPER_EPOCHS), 1, MAX_EPOCHS)
    lr = d.get("lr_inv")
    if lr is not None:
        check_int("'recipe.lr_inv'", lr, 1, INT32_MAX)
    check_int("'recipe.crop_pad'", d.get("crop_pad", 0), 0, MAX_CROP_PAD)
    check_int("'recipe.factor'", d.get("factor", 3), 1, 1 << 16)
    for key in ("flip", "refit"):
        if not isinstance(d.get(key, False), bool):
            raise SpecError(f"'recipe.{key}' must be true or false, got {d[key]!r}")
    ms = d.get("milestones", [])
    if not isinstance(ms, (list, tuple)) or not all(is_int(m) and 1 <= m < epochs for m in ms) \
            or list(ms) != sorted(set(ms)):
        raise SpecError(f"'recipe.milestones' must be increasing epochs in [1, {epochs - 1}], got {ms!r}")
    return Recipe(**{**d, "milestones": tuple(int(m) for m in ms)})


def paper_recipe(defaults: dict, dataset: str | None = None) -> Recipe:
    """The paper's recipe for a description's training defaults ({"dataset": ..., "augment": bool}): with
    ``augment`` true, the paper pipeline (§5.2) of ``dataset`` (default: the description's)."""
    if not defaults.get("augment"):
        return Recipe()
    pad, flip = augment_defaults(dataset or defaults.get("dataset") or "")
    return replace(Recipe(), crop_pad=pad, flip=flip)


def recipe_for(defaults: dict, profile: str | Quirks = "default", which: str = "tuned",
               dataset: str | None = None) -> Recipe:
    """The recipe a description trains with: its own ("tuned"; not in the reference profile) or the paper's."""
    if which not in RECIPE_CHOICES:
        raise SpecError(f"recipe must be one of {', '.join(RECIPE_CHOICES)}, got {which!r}")
    reference = profile == "reference" or profile == PROFILES["reference"]
    if which == "paper" or reference or "recipe" not in defaults:
        return paper_recipe(defaults, dataset)
    return recipe_from_dict(defaults["recipe"])
