"""The C heap during training: keep freed memory in the process instead of handing it back to the system.

glibc's malloc serves every block above its mmap threshold (at most 32 MB) with fresh pages mapped for that
block alone and unmapped when it is freed. Training a 512 px U-Net on batches of 10 allocates and frees
activations of up to 170 MB at every step, so each step maps, zero-fills and unmaps several gigabytes: on a
2-core CPU about 2.3 million page faults and 12 s of system time per step. Retaining freed memory (what
jemalloc or tcmalloc do, and what PyTorch's CPU tuning guide recommends them for) removes that cost; the
price is a higher resident-memory high-water mark, since freed blocks are not returned until the end.
It concerns memory the C heap serves, so CPU training only: a GPU's activations are not glibc's.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
"""glibc's mallopt parameters and the values it starts with (malloc/malloc.c, mallopt(3))."""
RETAINED = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
"""No block gets pages of its own and the heap's free top is never trimmed: freed memory stays for reuse."""

_depth = 0
"""How many ``retained_freed_memory`` blocks that applied the setting are open (mallopt has no getter)."""

USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
"""Environment variables through which a user tunes glibc's malloc: when set, flairkit leaves it alone."""


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc and its malloc has not been tuned by the user, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if any(name in os.environ for name in USER_SETTINGS):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextmanager
def retained_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, memory the process frees stays in its heap for reuse (glibc only).

    Yields whether this block applies the setting: False when ``enabled`` is off (whatever an enclosing
    block set stays in force), on other C libraries, or when the user tunes malloc through ``MALLOC_*_`` or
    ``GLIBC_TUNABLES`` variables. Blocks nest: leaving an inner one keeps the enclosing block's setting;
    leaving the outermost one sets glibc's starting values back and hands the retained memory back to
    the system.

    What cannot be restored: glibc has no getter for these parameters, and until a program calls mallopt
    on M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD or M_MMAP_MAX it adapts its mmap threshold to the
    program (each freed mapped block larger than the threshold, up to 32 MiB, raises it, and the trim
    threshold to twice it). The first such call switches that adaptation off for the rest of the process
    (malloc.c sets ``no_dyn_threshold`` and never clears it): after the block the mmap threshold stays
    where the adaptation had left it and the trim threshold is 128 KiB, where it may have been higher.
    Values other code set with mallopt before the block are not known either.
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    if _depth == 0:
        _set(libc, RETAINED)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            _set(libc, GLIBC_DEFAULTS)
            libc.malloc_trim(0)


def _set(libc: ctypes.CDLL, values: dict[int, int]) -> None:
    for parameter, value in values.items():
        libc.mallopt(parameter, value)


def release_freed_memory() -> None:
    """Hand the free pages of the C heap back to the system (glibc's ``malloc_trim``; nothing on other C libraries,
    when the user tunes malloc, or inside :func:`retained_freed_memory`).

    glibc keeps freed blocks below its mmap threshold (up to 32 MiB) in its arenas and only trims their top: in a
    long detection the buffers of thousands of blocks, freed by other threads than those that made them, would
    otherwise pile up in the resident memory.
    """
    libc = _glibc()
    if libc is not None and _depth == 0:
        libc.malloc_trim(0)
