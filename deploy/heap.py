"""Keep freed heap memory in the serving process instead of handing it back to the OS.

Every LIBERO request makes msgpack allocate, and soon free, two ~150 KB image buffers.
With glibc's default *dynamic* thresholds the freed top of the heap is trimmed back to
the kernel, so the next request faults those pages in again: 42 minor page faults per
request were measured in the server process, about 0.1 ms of CPU each time on a VM.
Fixed thresholds (which also switch the dynamic adjustment off) keep the pages mapped;
the cost is at most ``trim_bytes`` of idle heap, nothing next to a model's weights.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["retain_freed_memory"]

logger = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(trim_bytes: int = 256 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Set fixed malloc trim/mmap thresholds; returns False where mallopt is unavailable (non-glibc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_TRIM_THRESHOLD, trim_bytes)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes))
    logger.debug("malloc thresholds fixed (trim %d, mmap %d): %s", trim_bytes, mmap_bytes, ok)
    return ok
