"""The daemon's heap (glibc's malloc; elsewhere each call does nothing and says so).

glibc gives each thread that allocates an arena of its own (libfuse's 10 workers, the
decompression pool) and hands freed memory back to the system only from the top of a heap:
what a ``grep -r`` over ``sym/`` or a closed dump of a folder mount freed between longer-lived
objects stays resident. Two calls keep it to what is in use: :func:`limit_arenas` (once, in
the daemon, before its threads start) and :func:`trim` (when work has freed memory: after a
folder mount closes a dump; ``fuse.IdleTrim`` when the daemon pauses after work). The figures
are in DEVELOPERS.md ("Memory: what stays resident"). Process-wide: never called by the
library, only by the daemon.
"""

from __future__ import annotations

import ctypes

#: glibc malloc.h: mallopt's parameter for the number of arenas.
M_ARENA_MAX = -8


def _libc_function(name: str, argtypes: list) -> ctypes._CFuncPtr | None:
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # no C library to load, or not glibc
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_MALLOPT = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
_MALLOC_TRIM = _libc_function("malloc_trim", [ctypes.c_size_t])


def limit_arenas(count: int) -> bool:
    """Let every thread allocate from at most ``count`` arenas; whether glibc took it."""
    return _MALLOPT is not None and bool(_MALLOPT(M_ARENA_MAX, count))


def can_trim() -> bool:
    return _MALLOC_TRIM is not None


def trim() -> bool:
    """Hand the heap's free pages back to the system (``malloc_trim(0)``); whether any went."""
    return _MALLOC_TRIM is not None and bool(_MALLOC_TRIM(0))
