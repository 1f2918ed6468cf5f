"""The thin mfusepy adapter: tree nodes to FUSE calls, errors to errno values. Read-only.

Nothing about dump formats lives here. libfuse 3 is selected before mfusepy is imported
(mfusepy looks for libfuse 2 first when both are installed).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

from .errors import DumpError, FaultError, VmcorefsError
from .tree import Directory, NotFound, Tree

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402 - after choosing the library

log = logging.getLogger("vmcorefs")

#: One FUSE read request may carry up to 1 MiB (the kernel's default FUSE max_pages limit).
MAX_READ = 1 << 20
#: The dump never changes: the kernel may keep names and attributes for a day.
TIMEOUT = 86400.0

FuseOSError = mfusepy.FuseOSError


def _fail(code: int) -> FuseOSError:
    return FuseOSError(code)


class VmcoreOperations(mfusepy.Operations):
    """FUSE operations over a :class:`~vmcorefs.tree.Tree`."""

    use_ns = True

    def __init__(self, tree: Tree, *, mtime_ns: int | None = None) -> None:
        self.tree = tree
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.time_ns = mtime_ns if mtime_ns is not None else time.time_ns()
        self._handles: dict[int, Callable[[int, int], bytes]] = {}  # fh -> node.read
        self._next_fh = itertools.count(1)
        self._lock = threading.Lock()
        self.mounted = False  #: set once the kernel has talked to us (FUSE init)

    # -- lookups ---------------------------------------------------------------------------
    def _node(self, path: str):
        try:
            return self.tree.lookup(path)
        except NotFound:
            raise _fail(errno.ENOENT) from None

    def init_with_config(self, conn_info, config_3) -> None:
        self.mounted = True
        if conn_info is not None:
            conn_info.max_read = MAX_READ
            conn_info.max_readahead = MAX_READ
        if config_3 is not None:
            config_3.entry_timeout = TIMEOUT
            config_3.attr_timeout = TIMEOUT
            config_3.negative_timeout = TIMEOUT

    def getattr(self, path: str, fh=None) -> dict:
        node = self._node(path)
        t = self.time_ns
        attrs = {
            "st_mode": node.mode,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_atime": t,
            "st_mtime": t,
            "st_ctime": t,
        }
        if isinstance(node, Directory):
            attrs["st_nlink"] = 2
            attrs["st_size"] = 0
        else:
            attrs["st_nlink"] = 1
            try:
                attrs["st_size"] = node.size()
            except (FaultError, DumpError):
                raise _fail(errno.EIO) from None
            except VmcorefsError:
                raise _fail(errno.EIO) from None
            attrs["st_blocks"] = (attrs["st_size"] + 511) // 512
            attrs["st_blksize"] = 4096
        return attrs

    def readdir(self, path: str, fh):
        node = self._node(path)
        if not isinstance(node, Directory):
            raise _fail(errno.ENOTDIR)
        return [".", "..", *node.entries()]

    def access(self, path: str, amode: int) -> int:
        self._node(path)
        if amode & os.W_OK:
            raise _fail(errno.EROFS)
        return 0

    def statfs(self, path: str) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255, "f_flag": os.ST_RDONLY}

    # -- files -----------------------------------------------------------------------------
    def open(self, path: str, fi) -> int:
        node = self._node(path)
        if fi.flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise _fail(errno.EROFS)
        if isinstance(node, Directory):
            raise _fail(errno.EISDIR)
        try:
            direct = node.open_direct_io()
        except VmcorefsError:
            direct = True
        fi.direct_io = 1 if direct else 0
        fi.keep_cache = 0 if direct else 1
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = node.read
        fi.fh = fh
        return 0

    def read(self, path: str, size: int, offset: int, fi) -> bytes:
        try:
            reader = self._handles[fi.fh]
        except KeyError:
            reader = self._node(path).read
        try:
            self.tree.check()  # a dump changed under us: EIO, even for what caches hold
            return reader(offset, size)
        except FaultError:
            raise _fail(errno.EIO) from None
        except DumpError as exc:
            log.error("%s", exc)
            raise _fail(errno.EIO) from None
        except Exception:  # noqa: BLE001 - a bug must not kill the daemon: report and EIO
            log.exception("read %s at %#x (+%#x) failed", path, offset, size)
            raise _fail(errno.EIO) from None

    def release(self, path: str, fi) -> int:
        with self._lock:
            self._handles.pop(fi.fh, None)
        return 0

    # -- everything that would change the tree: read-only ----------------------------------
    def _readonly(self, *args, **kwargs):
        raise _fail(errno.EROFS)

    create = mkdir = rmdir = unlink = rename = symlink = link = mknod = _readonly
    chmod = chown = truncate = utimens = write = setxattr = removexattr = _readonly


def mount(
    tree: Tree,
    mountpoint: str,
    *,
    foreground: bool,
    debug: bool,
    options: dict[str, str | bool],
    mtime_ns: int | None = None,
) -> None:
    """Mount ``tree`` at ``mountpoint``; returns when it is unmounted (or, in the background
    case, in the parent once mounted: libfuse daemonises after the mount succeeded)."""
    ops = VmcoreOperations(tree, mtime_ns=mtime_ns)
    kwargs: dict[str, str | bool] = {
        "fsname": "vmcorefs",
        "subtype": "vmcorefs",
        "ro": True,
        "default_permissions": True,
        "max_read": str(MAX_READ),
        "max_idle_threads": "10",  # libfuse 3.14 warns "invalid max threads" when unset
    }
    kwargs.update(options)
    try:
        mfusepy.FUSE(
            ops, mountpoint, raw_fi=True, foreground=foreground or debug, debug=debug, **kwargs
        )
    except RuntimeError:
        # libfuse 3 returns 8 from fuse_main when a signal (SIGTERM, SIGINT) ended the session
        # loop: it has unmounted cleanly, which is a normal end, not a failure.
        if not ops.mounted:
            raise
