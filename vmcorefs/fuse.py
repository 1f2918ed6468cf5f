"""The thin mfusepy adapter: tree nodes to FUSE calls, errors to errno values. Read-only.

Nothing about dump formats lives here. libfuse 3 is selected before mfusepy is imported
(mfusepy looks for libfuse 2 first when both are installed).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import threading
import time

from .dumpfile.source import Piece
from .errors import DumpError, FaultError, VmcorefsError
from .tree import Directory, File, NotFound, Tree, WindowFile

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
    #: Reads and releases need no path (the open handle names the node): libfuse then skips
    #: building one for every request (``nullpath_ok``).
    flag_nopath = True
    flag_nullpath_ok = True

    def __init__(
        self, tree: Tree, *, mtime_ns: int | None = None, negative_timeout: float = TIMEOUT
    ) -> None:
        self.tree = tree
        self.negative_timeout = negative_timeout
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.time_ns = mtime_ns if mtime_ns is not None else time.time_ns()
        self._handles: dict[int, File] = {}  # fh -> node
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
            config_3.negative_timeout = self.negative_timeout

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

    def _register(self, node) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = node
        return fh

    def _handle(self, path: str | None, fh: int):
        """The node opened as ``fh`` (libfuse gives no path to read, readdir, release...)."""
        node = self._handles.get(fh)
        if node is None:
            if path is None:
                raise _fail(errno.EBADF)
            node = self._node(path)
        return node

    def opendir(self, path: str) -> int:
        node = self._node(path)
        if not isinstance(node, Directory):
            raise _fail(errno.ENOTDIR)
        return self._register(node)

    def readdir(self, path: str | None, fh: int):
        node = self._handle(path, fh)
        if not isinstance(node, Directory):
            raise _fail(errno.ENOTDIR)
        return [".", "..", *node.entries()]

    def releasedir(self, path: str | None, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        return 0

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
        fi.fh = self._register(node)
        return 0

    def read(self, path: str, size: int, offset: int, fi, buf: int | None = None):
        """The bytes at ``offset``; with ``buf`` (the address of libfuse's reply buffer, see
        :class:`_ReplyFUSE`) they are copied there instead and the count is returned."""
        try:
            node = self._handle(path, fi.fh)
            if not isinstance(node, WindowFile):
                # A dump changed under us: EIO, even for what caches hold. Windows need not ask
                # here: their reads are checked in memory/ and verified after each pread.
                self.tree.check()
            with node.pinned():  # a folder mount's dump stays open until the copy is done
                if buf is None:
                    return node.read(offset, size)
                return _fill(buf, node.extents(offset, size))
        except FaultError:
            raise _fail(errno.EIO) from None
        except DumpError as exc:
            log.error("%s", exc)
            raise _fail(errno.EIO) from None
        except FuseOSError:
            raise
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


# -- replies filled in place ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_pread = _libc.pread  # into C memory: no Python object per read (ctypes releases the GIL)
_pread.restype = ctypes.c_ssize_t
_pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]
_memmove = ctypes.memmove
#: Reads up to this size go through a bytes object: copying a few KiB twice costs less than
#: the ctypes calls that filling the buffer in place needs (measured: bench_core random 4 KiB).
SMALL_READ = 16 << 10


def _fill(buf: int, pieces: list[Piece]) -> int:
    """Copy ``pieces`` to address ``buf``; the byte count.

    File extents are read with ``pread`` straight into place; each file read from is verified
    afterwards (an ``fstat``), so bytes read while a dump was being overwritten are never sent.
    Bytes (a kdump's pages, 256 to the MiB) are copied through one memoryview of the buffer:
    a slice assignment costs a third of a ctypes call.
    """
    pos = 0
    files = []
    view = None
    for piece in pieces:
        if isinstance(piece, bytes):
            n = len(piece)
            if view is None:
                total = sum(len(p) if isinstance(p, bytes) else p.length for p in pieces)
                view = memoryview((ctypes.c_char * total).from_address(buf)).cast("B")
            view[pos : pos + n] = piece
            pos += n
            continue
        file, offset, length = piece
        if file not in files:
            files.append(file)
        got = _pread(file.fd, buf + pos, length, offset)
        if got < 0:
            err = ctypes.get_errno()
            raise DumpError(file.path, f"read error at offset {offset:#x}: {os.strerror(err)}")
        pos += got
        if got < length:  # the file is shorter than when it was opened
            break
    if view is not None:
        view.release()
    for file in files:
        file.verify()
    if pos == 0 and pieces:
        raise _fail(errno.EIO)
    return pos


#: ctypes runs each callback from a thread Python did not start (libfuse's workers) between
#: ``PyGILState_Ensure`` and ``PyGILState_Release``: the thread state is created and destroyed
#: around every FUSE request. One extra ``Ensure`` per worker keeps it: the next requests only
#: take the GIL (measured: random 4 KiB reads +6% with reader and daemon on two CPUs). The
#: workers are bounded (libfuse's ``max_threads``, 10) and none exits while
#: ``max_idle_threads`` is at least that (:func:`workers_never_exit`; when a user's ``-o``
#: lets workers exit, no state is kept): the states kept are bounded too.
_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_PyGILState_Ensure.restype = ctypes.c_int
_kept_state = threading.local()  # per thread state: set once this thread's state is kept


class _ReplyFUSE(mfusepy.FUSE):
    """mfusepy's FUSE whose ``read`` fills libfuse's reply buffer in place.

    libfuse hands ``read`` a buffer it allocated for the reply; mfusepy would have the
    operation return a bytes object and copy it there, so every byte would be copied twice
    (into the bytes, then into the buffer). Here the dump's bytes are read into the buffer
    directly: one copy, as for the do-nothing filesystem that the benchmarks compare against.
    """

    def __init__(self, *args, keep_states: bool, **kwargs) -> None:
        #: whether workers keep their thread state: only while none can exit (see mount)
        self.keep_states = keep_states
        super().__init__(*args, **kwargs)  # mounts, and serves until unmounted

    def _wrapper(self, func, *args, **kwargs):
        """Every callback enters here (mfusepy wraps each in it): keep the thread's state."""
        if self.keep_states and not getattr(_kept_state, "kept", False):
            _PyGILState_Ensure()  # never released: ctypes' Release then keeps the state
            _kept_state.kept = True
        return super()._wrapper(func, *args, **kwargs)

    def read(self, path: bytes | None, buf, size: int, offset: int, fip) -> int:
        fi = fip.contents
        name = None if path is None else path.decode(self.encoding, self.errors)
        if size <= SMALL_READ:  # a bytes object and one memmove cost less than ctypes calls
            data = self.operations.read(name, size, offset, fi)
            _memmove(buf, data, len(data))
            return len(data)
        address = ctypes.cast(buf, ctypes.c_void_p).value
        return self.operations.read(name, size, offset, fi, buf=address)


def workers_never_exit(options: dict[str, str | bool]) -> bool:
    """True when libfuse never ends a worker thread: ``max_idle_threads`` is -1 (its "never")
    or at least ``max_threads`` (default 10). A user's ``-o`` may say otherwise; then the
    workers' Python thread states are not kept (an exiting worker would leave its state)."""
    try:
        max_threads = int(options.get("max_threads", 10))
        max_idle = int(options.get("max_idle_threads", -1))
    except (TypeError, ValueError):
        return False
    return max_idle == -1 or max_idle >= max_threads


def mount(
    tree: Tree,
    mountpoint: str,
    *,
    foreground: bool,
    debug: bool,
    options: dict[str, str | bool],
    mtime_ns: int | None = None,
    negative_timeout: float = TIMEOUT,
) -> None:
    """Mount ``tree`` at ``mountpoint``; returns when it is unmounted (or, in the background
    case, in the parent once mounted: libfuse daemonises after the mount succeeded).
    ``negative_timeout``: how long the kernel may remember that a name does not exist (short
    for a folder mount, whose dumps come and go)."""
    ops = VmcoreOperations(tree, mtime_ns=mtime_ns, negative_timeout=negative_timeout)
    kwargs: dict[str, str | bool] = {
        "fsname": "vmcorefs",
        "subtype": "vmcorefs",
        "ro": True,
        "default_permissions": True,
        "max_read": str(MAX_READ),
        # At most max_threads (10) workers; with this many idle ones allowed none ever exits, so
        # the Python thread states kept for them (_ReplyFUSE._wrapper) stay bounded. (Unset,
        # libfuse 3.14 also warns "invalid max threads".)
        "max_idle_threads": "10",
    }
    kwargs.update(options)
    try:
        _ReplyFUSE(
            ops,
            mountpoint,
            keep_states=workers_never_exit(kwargs),
            raw_fi=True,
            foreground=foreground or debug,
            debug=debug,
            **kwargs,
        )
    except RuntimeError:
        # libfuse 3 returns 8 from fuse_main when a signal (SIGTERM, SIGINT) ended the session
        # loop: it has unmounted cleanly, which is a normal end, not a failure.
        if not ops.mounted:
            raise
