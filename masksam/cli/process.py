"""Process-wide settings the command-line tool makes before any work (a library import never does)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap and freed memory stays with the process (up to 2 GiB at the top).
_MMAP_THRESHOLD_BYTES = 1 << 30
_TRIM_THRESHOLD_BYTES = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed large blocks instead of handing them back to the kernel.

    By default glibc maps every block over 32 MiB separately and unmaps it when freed, so each of a model's
    large activations is page-faulted and zeroed by the kernel again at every step: on a CPU up to half of a
    training step was system time (measured: a LiteMedSAM step 19.4 s -> 11.2 s, inference 5.5-7.2 s ->
    5.0 s, peak memory 7.1 -> 8.4 GB; benchmarks/bench_train_step.py --keep-freed-memory). The same effect as
    the environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``.

    Returns:
        True where the settings were applied (Linux with glibc); False elsewhere, where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
