"""What the reference filesystems (``nullfs.py``, ``passfs.py``) share with vmcorefs's mount.

The same libfuse options (libfuse 3, raw file info, ``direct_io`` set by each ``open``, 1 MiB
``max_read``, kernel caches of names and attributes) and the same per-request Python cost: each
libfuse worker keeps its Python thread state, as ``vmcorefs.fuse._ReplyFUSE`` does. Without
that, ctypes creates and destroys a thread state around every request (measured: a reference
answering random 4 KiB reads 35% slower than vmcorefs reading its dump on one CPU), and the
reference would not be the limit it stands for.
"""

from __future__ import annotations

import ctypes
import os
import threading

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402

MAX_READ = 1 << 20
TIMEOUT = 86400.0

_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_PyGILState_Ensure.restype = ctypes.c_int
_kept = threading.local()


class Operations(mfusepy.Operations):
    """Replies as vmcorefs's do: 1 MiB reads and read-ahead, names and attributes cached."""

    use_ns = True

    def init_with_config(self, conn_info, config_3) -> None:
        if conn_info is not None:
            conn_info.max_read = MAX_READ
            conn_info.max_readahead = MAX_READ
        if config_3 is not None:
            config_3.entry_timeout = config_3.attr_timeout = TIMEOUT


class KeptStatesFUSE(mfusepy.FUSE):
    """mfusepy's FUSE whose workers keep their Python thread state (bounded: with
    ``max_idle_threads`` at ``max_threads``, 10, as :func:`mount` sets, no worker exits)."""

    def _wrapper(self, func, *args, **kwargs):
        if not getattr(_kept, "kept", False):
            _PyGILState_Ensure()  # never released: ctypes' own Release then keeps the state
            _kept.kept = True
        return super()._wrapper(func, *args, **kwargs)


def mount(ops: Operations, mountpoint: str, fsname: str, fuse=KeptStatesFUSE) -> None:
    """Serve ``ops`` at ``mountpoint`` in the foreground, with vmcorefs's options."""
    fuse(
        ops,
        mountpoint,
        raw_fi=True,
        foreground=True,
        ro=True,
        fsname=fsname,
        max_read=str(MAX_READ),
        max_idle_threads="10",
    )
