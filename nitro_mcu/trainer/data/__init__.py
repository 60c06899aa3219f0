"""Datasets, integer pre-processing, batching and augmentation (docs/algorithm.md §5).

Everything here is integer-only: images are loaded as uint8, normalised to int8 with the integer
statistics of §5.1, and augmented in int8.  All randomness comes from the project PRNG
(:class:`nitro_mcu.trainer.rng.Rng`, stream ``STREAM_DATA``), in a documented draw order, so that C code
can reproduce every draw.  The flow, one module each:

- :mod:`.formats` -- IDX and CIFAR-10 pickle files as raw arrays;
- :mod:`.datasets` -- :class:`Dataset`, dataset names, folders and the bundled subset (:func:`load_dataset`);
- :mod:`.userdata` -- your own data: arrays, .npz, a CSV of features, a folder of images (:func:`load_source`);
- :mod:`.normalization` -- integer statistics and the uint8 -> int8 table;
- :mod:`.split` -- shuffle, validation split and normalisation (:func:`prepare`, :class:`Prepared`);
- :mod:`.batching` -- one-hot targets and epoch batches;
- :mod:`.augmentation` -- random crop and flip in int8.

Every data problem raises :class:`DataError` with a one-line message.  This package re-exports the public
names of those modules.
"""
from __future__ import annotations

from .augmentation import augment, augment_defaults
from .batching import DEFAULT_ONE_HOT, batches, num_batches, one_hot
from .datasets import (BUNDLED_RESOURCE, CIFAR10_CLASSES, DATASET_NAMES, FASHION_CLASSES, MNIST_CLASSES, NO_FILES,
                       Dataset, canonical_name, load_bundled, load_cifar10, load_dataset)
from .errors import DataError
from .formats import IDX_FILES, find_idx, find_idx_files, load_idx
from .normalization import (INPUT_DTYPES, NORM_CENTRE, NORM_CONSTANT, compute_norm_stats, input_dtype,
                            normalization_lut, normalize, normalize_raw)
from .split import DEFAULT_STATS_IMAGES, Prepared, prepare
from .userdata import is_user_source, load_source

__all__ = ["augment", "augment_defaults", "DEFAULT_ONE_HOT", "batches", "num_batches", "one_hot", "BUNDLED_RESOURCE",
           "CIFAR10_CLASSES", "DATASET_NAMES", "NO_FILES", "FASHION_CLASSES", "MNIST_CLASSES", "Dataset",
           "canonical_name",
           "load_bundled", "load_cifar10", "load_dataset", "DataError", "IDX_FILES", "find_idx", "find_idx_files",
           "load_idx", "INPUT_DTYPES", "input_dtype", "normalize_raw", "NORM_CENTRE", "NORM_CONSTANT", "compute_norm_stats", "normalization_lut", "normalize",
           "DEFAULT_STATS_IMAGES", "Prepared", "prepare", "is_user_source", "load_source"]
