"""The one exception of the data path."""
from __future__ import annotations


class DataError(ValueError):
    """A data problem (missing/corrupt file, wrong shape or dtype, bad labels); the message is one line."""
