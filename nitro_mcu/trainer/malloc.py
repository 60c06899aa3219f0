"""Opt-in glibc allocator tuning for processes that train: the library never calls it.

A training step allocates and frees a few MB of NumPy temporaries.  With glibc's default dynamic
thresholds those blocks are trimmed back to the OS and page-faulted in again on the next step; on VMs with
free-page reporting (e.g. Firecracker) each refault is very expensive, and this halves the MLP training
speed.  The setting is process-wide, so only programs that own their process call it: the CLI's ``train``
and ``demo`` and the benchmarks.
"""
from __future__ import annotations

import ctypes
import functools
import os

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20


@functools.cache
def tune_malloc() -> bool:
    """Keep freed heap memory in the process (glibc ``mallopt``); runs once per process.

    Sets M_MMAP_THRESHOLD = 32 MiB and M_TRIM_THRESHOLD = 256 MiB, so up to 256 MiB of freed memory stays
    for reuse.  Numerically irrelevant; a no-op off glibc, or with the environment variable
    NITRO_MCU_MALLOC_TUNE=0.  Returns whether the setting is active.  ``tune_malloc.cache_info().currsize``
    is 0 while it has not run.
    """
    if os.environ.get("NITRO_MCU_MALLOC_TUNE", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
