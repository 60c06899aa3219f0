"""The status codes of the generated C API, in one place: the header's enum, ``<name>_strerror`` and the Python
wrapper's messages all come from this table (docs/c_api.md)."""
from __future__ import annotations

# (suffix of <NAME>_ERR_..., value, what it means; {NAME}/{name} are filled in by the template)
ERRORS = (
    ("NULL", -1, "a required pointer argument is NULL"),
    ("NOT_INITIALISED", -2, "{name}_init() has not been called"),
    ("BATCH", -3, "batch size outside 1..{NAME}_MAX_BATCH"),
    ("LABEL", -4, "a label >= {NAME}_NUM_CLASSES (or of a spare class not yet added)"),
    ("RANGE", -5, "lr_inv outside 1..LR_INV_MAX, or a weight that does not fit"),
    ("COUNT", -6, "a weight count other than {NAME}_NUM_TRAINABLE_WEIGHTS"),
)

BY_VALUE = {value: suffix for suffix, value, _ in ERRORS}
