"""The daemon's heap, kept to what the open dumps need (glibc; elsewhere these do nothing).

Dumps of a folder mount are opened and closed in turn. Their objects are freed when a dump
is closed, yet glibc keeps freed memory: in an arena per thread that allocated it (FUSE
requests run on up to 10 threads) and in free chunks it does not hand back by itself. The
resident memory of the daemon then grows towards the sum of every dump's own, whatever
``--max-open`` says. Measured on the 12 dumps of ../shared/dumps, each ``summary`` read in
turn with ``--max-open 1``: 136-140 MiB at the end as glibc's defaults leave it, 120-127 MiB
trimmed after each close, 72-73 MiB trimmed and with one arena (19 MiB before the first
dump; the one dump open holds about 36 MiB of its own).
Python holds the GIL while it allocates, so one arena costs no parallelism.
"""

from __future__ import annotations

import ctypes

#: mallopt's parameter for the number of arenas (glibc malloc.h).
M_ARENA_MAX = -8


def _libc():
    try:
        return ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to load
        return None


_LIBC = _libc()


def one_arena() -> None:
    """Every thread allocates from the main arena: call once, before threads are started."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt(M_ARENA_MAX, 1)


def trim() -> None:
    """Hand the memory freed by a closed dump back to the system (``malloc_trim``)."""
    malloc_trim = getattr(_LIBC, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim(0)
