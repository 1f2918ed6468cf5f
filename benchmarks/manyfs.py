"""A do-nothing mfusepy filesystem with one big directory: the transport's limit for ``sym/``.

``/d`` holds the files named in a JSON list of ``[name, size]`` pairs; reads return zeros. Files
are opened with ``keep_cache`` and timeouts are long, as vmcorefs serves ``sym/``, so that the
difference from vmcorefs on the same names and sizes is vmcorefs's own cost.

    python3 benchmarks/manyfs.py MOUNTPOINT FILES.json     # stays in the foreground
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402

MAX_READ = 1 << 20
ZEROS = bytes(MAX_READ)
TIMEOUT = 86400.0


class ManyFS(mfusepy.Operations):
    use_ns = True

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.names = [name for name, _ in files]
        self.sizes = dict(files)

    def init_with_config(self, conn_info, config_3) -> None:
        if conn_info is not None:
            conn_info.max_read = MAX_READ
            conn_info.max_readahead = MAX_READ
        if config_3 is not None:
            config_3.entry_timeout = config_3.attr_timeout = TIMEOUT
            config_3.negative_timeout = TIMEOUT

    def getattr(self, path, fh=None):
        if path in ("/", "/d"):
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        size = self.sizes.get(path[3:]) if path.startswith("/d/") else None
        if size is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size}

    def readdir(self, path, fh):
        return [".", "..", "d"] if path == "/" else [".", "..", *self.names]

    def open(self, path, fi):
        fi.keep_cache = 1
        fi.fh = 1
        return 0

    def read(self, path, size, offset, fi):
        end = min(offset + size, self.sizes[path[3:]])
        return ZEROS[: max(0, end - offset)]


def main() -> None:
    mnt, listing = sys.argv[1], sys.argv[2]
    with open(listing, encoding="utf-8") as f:
        files = [(name, size) for name, size in json.load(f)]
    mfusepy.FUSE(
        ManyFS(files),
        mnt,
        raw_fi=True,
        foreground=True,
        ro=True,
        fsname="manyfs",
        max_read=str(MAX_READ),
        max_idle_threads="10",
    )


if __name__ == "__main__":
    main()
