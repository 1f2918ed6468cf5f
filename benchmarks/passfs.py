"""A pass-through mfusepy filesystem: the least a filesystem that copies a dump file does.

One file, ``data``, whose bytes are those of a given file. A read is one ``pread`` of that file
straight into libfuse's reply buffer (as ``vmcorefs.fuse._fill`` reads an ELF dump's extents):
no Python object for the bytes. Mounted as vmcorefs mounts (``reference_fs.py``: libfuse 3, raw
file info, ``direct_io``, 1 MiB ``max_read``, no path built for reads, thread states kept), so
that with the file in the page cache the difference between it and vmcorefs reading the same
bytes is vmcorefs's own cost beyond the one copy. ``nullfs.py`` (no copy) is the transport's.

    python3 benchmarks/passfs.py MOUNTPOINT FILE     # stays in the foreground
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

import reference_fs
from mfusepy import FuseOSError

_libc = ctypes.CDLL(None, use_errno=True)
_pread = _libc.pread  # ctypes releases the GIL around it
_pread.restype = ctypes.c_ssize_t
_pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]


class PassFS(reference_fs.Operations):
    flag_nopath = True
    flag_nullpath_ok = True

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        if path == "/data":
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "data"]

    def open(self, path, fi):
        fi.direct_io = 1
        fi.fh = 1
        return 0

    def read(self, path, size, offset, fi):
        """Defined so that mfusepy registers reads; :class:`InPlaceFUSE` answers them."""
        return os.pread(self.fd, size, offset)


class InPlaceFUSE(reference_fs.KeptStatesFUSE):
    """A ``read`` that preads into libfuse's buffer (mfusepy's own would copy the bytes an
    operation returns into it: two copies)."""

    def read(self, path, buf, size, offset, fip) -> int:
        got = _pread(self.operations.fd, buf, size, offset)
        return got if got >= 0 else -ctypes.get_errno()


def main() -> None:
    reference_fs.mount(PassFS(sys.argv[2]), sys.argv[1], "passfs", fuse=InPlaceFUSE)


if __name__ == "__main__":
    main()
