"""Process-level settings that make per-frame tracking fast on the CPU.

glibc gives the freed activation buffers of every forward pass back to the operating system and
takes them again on the next frame: thousands of page faults per ``update()`` (about a third of a
frame's time on a 2-core CPU). :func:`keep_freed_memory` raises glibc's trim and mmap thresholds
so freed buffers stay in the process and are reused; results are bit-identical. It changes a
process-wide allocator setting, once; ``IEN_KEEP_FREED_MEMORY=0`` in the environment turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024       # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Keep freed heap memory for reuse (glibc ``mallopt``); True when the settings are in force.

    A no-op returning False where the C library is not glibc or the environment variable
    ``IEN_KEEP_FREED_MEMORY`` is ``0``. Safe to call many times.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("IEN_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                    and mallopt(_M_TOP_PAD, 64 * 1024 * 1024))
    return _applied
