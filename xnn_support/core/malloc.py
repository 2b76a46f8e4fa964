"""Keep freed memory in the process instead of handing it back to the OS after every tensor.

glibc's malloc serves large blocks (here: per-step tensors of the sigma engine and the point nets)
with ``mmap`` and gives them back with ``munmap`` on free, so every step faults in and zeroes fresh
pages in the kernel. Measured 2026-12-02 on the 2-core CPU machine, notebook 06's rotation metric of one
Mini-PointNet++ (default budget, one thread): 24.1 s wall with 19.0 s user + 9.4 s system time, against
13.2 s with 16.0 s user + 0.7 s system time after :func:`tune_malloc`, with a bit-identical result.
Inside a cold ``make reproduce`` the session's system time exceeded its user time (9347 s vs 7831 s).

:func:`tune_malloc` raises glibc's mmap threshold (blocks up to 256 MiB come from the heap), its trim
threshold (up to 512 MiB free at the heap top stay mapped) and its top pad (64 MiB). The cost is a
higher resident size after a peak. It runs when :mod:`xnn_support` is imported (every notebook kernel
and worker process); set ``XNN_MALLOC=default`` to leave malloc as it is. Elsewhere than glibc it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["tune_malloc", "MALLOC_SETTINGS"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: mallopt parameter -> bytes
MALLOC_SETTINGS = {_M_MMAP_THRESHOLD: 256 << 20, _M_TRIM_THRESHOLD: 512 << 20, _M_TOP_PAD: 64 << 20}


def tune_malloc() -> bool:
    """Apply :data:`MALLOC_SETTINGS` with glibc's ``mallopt``; True when applied (False: not glibc, or
    ``XNN_MALLOC=default``)."""
    if os.environ.get("XNN_MALLOC", "").strip().lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    return all(mallopt(k, v) == 1 for k, v in MALLOC_SETTINGS.items())
