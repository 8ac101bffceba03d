"""Process-level settings that make per-frame tracking fast on the CPU.

glibc gives the freed activation buffers of every forward pass back to the operating system and
takes them again on the next frame: thousands of page faults per ``update()`` (about a third of a
frame's time on a 2-core CPU). :func:`keep_freed_memory` raises glibc's trim and mmap thresholds
so freed buffers stay in the process and are reused; results are bit-identical. It changes a
process-wide allocator setting, once; ``IEN_KEEP_FREED_MEMORY=0`` in the environment turns it off.

:func:`apply_thread_policy` is the one CPU thread policy of ``tools/track.py``,
``tools/evaluate.py``, ``tools/benchmark_fps.py``, ``tools/benchmark_training.py`` and the
classification trainer: torch, OpenCV (crops, OpenCV trackers) and
ONNX Runtime (sessions built afterwards read torch's count) all get the same number of threads,
by default the cores not already busy. :func:`check_threads` is the one bound on a thread count a
user gives (at most the machine's CPUs); :func:`max_workers` (worker processes) and
:func:`memory_bytes` are the machine's limits that other bounds on user input are derived from.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory", "default_threads", "apply_thread_policy", "check_threads", "max_workers",
           "memory_bytes"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024       # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_applied: bool | None = None
WORKERS_PER_CPU = 4                      # the bound of max_workers


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


def default_threads() -> int:
    """CPU threads for inference: the cores not already busy (1-minute load average), at least one.

    Small per-frame workloads slow down badly when their threads compete with other processes
    for the same cores (measured: 2 threads on 2 busy cores ran 7x slower than 1 thread).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores, int(round(cores - busy))))


def check_threads(threads) -> int:
    """``threads`` when it is a whole number from 1 to the machine's CPUs (``os.cpu_count()``),
    else a ValueError "threads must ...". More threads than CPUs only compete for the same cores
    (see :func:`default_threads`), and a typo such as 100000 would make every OpenCV and torch
    thread pool start that many threads."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    most = os.cpu_count() or 1
    if threads > most:
        raise ValueError(f"threads must be at most {most} (the CPUs of this machine), got {threads}")
    return threads


def max_workers() -> int:
    """The most worker processes (DataLoader workers, generator processes) a user may ask for:
    ``WORKERS_PER_CPU`` per CPU of the machine. Workers that mostly wait on disk reads or image
    decoding can use a few per core; beyond that they only compete for the cores, and a typo such
    as 100000 would fork until memory or the process table runs out."""
    return WORKERS_PER_CPU * (os.cpu_count() or 1)


def memory_bytes() -> int | None:
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page if pages > 0 and page > 0 else None


def apply_thread_policy(threads: int | None = None) -> int:
    """Give torch and OpenCV ``threads`` CPU threads each (None: :func:`default_threads`); returns
    the count. Call it before building trackers: ONNX Runtime sessions take torch's count then.
    A count :func:`check_threads` refuses is a ValueError, before any setting changes."""
    import cv2
    import torch

    threads = default_threads() if threads is None else check_threads(threads)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads
