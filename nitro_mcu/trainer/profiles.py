"""Reference quirks (docs/algorithm.md §9, Q1-Q14) as named switches, grouped into two profiles.

``reference`` reproduces the official implementation bit for bit (golden vectors); ``default`` fixes
what is a bug there.  docs/profiles.md explains every choice.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Quirks:
    error_wrap_int8: bool  # Q1: e = int8(y_hat - y) wraps (-159 -> +97); off: exact e in [-159, 127]
    cnn_fc_double_update: bool  # Q2: CNN FC blocks run their block step twice per batch
    conv_amp_adjust: bool  # Q3: True = the *intended* amp*floor(H^2/(kh*kw)); False = as executed (640)
    maxpool_pad_zero: bool  # Q4: head max-pool pads act as 0; off: they never win (-infinity)
    relu_grad_asymmetric_sat: bool  # Q5: ReLU grad 0 at x=127 but 1/4 at x=-127; off: 0 at both ends
    cnn_fe_tail_dropout: bool  # Q6: insert Dropout(fc_dropout) before the last feature-extractor layer
    augment_per_batch: bool  # Q8: one augmentation draw per batch, crop pad = batch minimum
    drop_last_eval: bool  # Q9: evaluation drops the last partial batch
    monitor_test: bool  # Q10: schedule and model selection on test accuracy (no validation split)
    loss_wrap_int8: bool  # Q12: logged loss squares in int8 (logging only)
    maxpool_pad_one_sided: bool  # Q14: head pool windows start at -pad; bottom/right pad never read

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Quirks":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown quirk switch(es): {', '.join(sorted(unknown))}")
        missing = names - set(d)
        if missing:
            raise ValueError(f"missing quirk switch(es): {', '.join(sorted(missing))}")
        return cls(**{k: bool(v) for k, v in d.items()})


REFERENCE = Quirks(
    error_wrap_int8=True,
    cnn_fc_double_update=True,
    conv_amp_adjust=False,
    maxpool_pad_zero=True,
    relu_grad_asymmetric_sat=True,
    cnn_fe_tail_dropout=True,
    augment_per_batch=True,
    drop_last_eval=True,
    monitor_test=True,
    loss_wrap_int8=True,
    maxpool_pad_one_sided=True,
)

DEFAULT = replace(
    REFERENCE,
    error_wrap_int8=False,
    cnn_fc_double_update=False,
    maxpool_pad_zero=False,
    cnn_fe_tail_dropout=False,
    augment_per_batch=False,
    drop_last_eval=False,
    monitor_test=False,
    loss_wrap_int8=False,
    maxpool_pad_one_sided=False,
)

PROFILES = {"default": DEFAULT, "reference": REFERENCE}


def get_profile(name: str, **overrides) -> Quirks:
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]
