"""A do-nothing mfusepy filesystem: the transport's limit, for benchmarks to compare against.

One file, ``data``, of a given size whose reads return zeros without any work. It is mounted
with the same options as vmcorefs (libfuse 3, raw file info, ``direct_io``, 1 MiB ``max_read``)
so that the difference between the two is vmcorefs's own cost.

    python3 benchmarks/nullfs.py MOUNTPOINT [SIZE]     # stays in the foreground
"""

from __future__ import annotations

import errno
import os
import stat
import sys

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402

MAX_READ = 1 << 20
ZEROS = bytes(MAX_READ)


class NullFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, size: int) -> None:
        self.size = size

    def init_with_config(self, conn_info, config_3) -> None:
        if conn_info is not None:
            conn_info.max_read = MAX_READ
            conn_info.max_readahead = MAX_READ
        if config_3 is not None:
            config_3.entry_timeout = config_3.attr_timeout = 86400.0

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        if path == "/data":
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "data"]

    def open(self, path, fi):
        fi.direct_io = 1
        fi.fh = 1
        return 0

    def read(self, path, size, offset, fi):
        if offset >= self.size:
            return b""
        size = min(size, self.size - offset)
        return ZEROS if size == MAX_READ else ZEROS[:size]


def main() -> None:
    mnt = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 40
    mfusepy.FUSE(
        NullFS(size),
        mnt,
        raw_fi=True,
        foreground=True,
        ro=True,
        fsname="nullfs",
        max_read=str(MAX_READ),
    )


if __name__ == "__main__":
    main()
