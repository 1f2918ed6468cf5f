"""A do-nothing mfusepy filesystem: the transport's limit, for benchmarks to compare against.

One file, ``data``, of a given size whose reads return zeros without any work, and ``absent``,
as large, whose every read fails with ``EIO`` (the transport's cost of a failed read). It is mounted
as vmcorefs mounts (``reference_fs.py``: libfuse 3, raw file info, ``direct_io``, 1 MiB
``max_read``, thread states kept) so that the difference between the two is vmcorefs's own cost.

    python3 benchmarks/nullfs.py MOUNTPOINT [SIZE]     # stays in the foreground
"""

from __future__ import annotations

import errno
import stat
import sys

import reference_fs
from mfusepy import FuseOSError

ZEROS = bytes(reference_fs.MAX_READ)


class NullFS(reference_fs.Operations):
    def __init__(self, size: int) -> None:
        self.size = size

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        if path in ("/data", "/absent"):
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "data", "absent"]

    def open(self, path, fi):
        fi.direct_io = 1
        fi.fh = 2 if path == "/absent" else 1
        return 0

    def read(self, path, size, offset, fi):
        if fi.fh == 2:
            raise FuseOSError(errno.EIO)
        if offset >= self.size:
            return b""
        size = min(size, self.size - offset)
        return ZEROS if size == len(ZEROS) else ZEROS[:size]


def main() -> None:
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 40
    reference_fs.mount(NullFS(size), sys.argv[1], "nullfs")


if __name__ == "__main__":
    main()
