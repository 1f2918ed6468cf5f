"""The thin mfusepy adapter: tree nodes to FUSE calls, errors to errno values. Read-only.

Nothing about dump formats lives here. libfuse 3 is selected before mfusepy is imported
(mfusepy looks for libfuse 2 first when both are installed).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from . import heap
from .errors import (
    DumpError,
    FaultError,
    MountPointError,
    OptionError,
    Stopping,
    VmcorefsError,
    kind_of,
    set_stop_check,
)
from .tree import Directory, File, NotFound, Tree, WindowFile

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402 - after choosing the library

log = logging.getLogger("vmcorefs")

#: One FUSE read request may carry up to 1 MiB (the kernel's default FUSE max_pages limit).
MAX_READ = 1 << 20
#: The dump never changes: the kernel may keep names and attributes for a day.
TIMEOUT = 86400.0

FuseOSError = mfusepy.FuseOSError


def _fail(code: int) -> OSError:
    return FuseOSError(code)


def errno_of(exc: BaseException, what: str) -> int:
    """The one mapping of errors to errno values (see ``errors.py``), with its log line.

    ``what`` says which request failed ("read /kvirt at offset 0x..."). Absent and corrupt
    memory are EIO and one debug line (``--debug``: path, offset, address, kind, reason); a
    dump that changed under us is EIO and an error line; a bug is EIO and one error record with
    its traceback. Never EINVAL: no exception reaches mfusepy but ``FuseOSError``.
    """
    if isinstance(exc, FuseOSError):
        return exc.errno
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, (FaultError, Stopping)):  # Stopping: the user asked the daemon to end
        log.debug("%s: %s", what, exc)
    elif isinstance(exc, DumpError):
        log.error("%s", exc)
    elif isinstance(exc, VmcorefsError):
        log.error("%s: %s: %s", what, exc.kind, exc)
    else:
        log.error("%s: %s: %r", what, kind_of(exc), exc, exc_info=exc)
    return errno.EIO


def _answers(op):
    """Run a FUSE operation so that whatever it raises becomes an errno (:func:`errno_of`)."""

    @functools.wraps(op)
    def run(self, *args):
        try:
            return op(self, *args)
        except FuseOSError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, logged: mfusepy would say EINVAL
            raise _fail(errno_of(exc, f"{op.__name__} {args[0] if args else ''}")) from None

    return run


#: The daemon's heaps (glibc arenas; by default one per thread that allocates, up to 8 per
#: CPU): libfuse's workers and the decompression pool share two (vmcorefs/heap.py).
ARENA_MAX = 2


class IdleTrim:
    """Hand the heap's free pages back to the system once the daemon is idle after work.

    glibc returns freed memory only from the top of a heap: what a big listing or a
    ``grep -r`` over ``sym/`` allocated and freed between longer-lived objects (cached pages,
    libfuse's nodes) stays resident. Measured on the sample after ``grep -r`` over ``sym/``:
    ~30 MiB of free heap pages, about a third of the daemon's RSS. ``malloc_trim(0)`` releases
    them (the pages, not the allocations). Called from its own thread, once per pause that
    follows at least :data:`WORK` CPU seconds of work (the process's, every thread), never on a
    request's path.
    """

    #: how often the thread looks (seconds)
    INTERVAL = 1.0
    #: CPU seconds in an interval below which the daemon counts as idle
    IDLE = 0.02
    #: CPU seconds of work since the last trim that make the next pause worth a trim
    WORK = 0.2

    def __init__(self, trim: Callable[[int], int], clock: Callable[[], float]) -> None:
        self._trim, self._clock = trim, clock
        self._last = self._trimmed_at = clock()

    def step(self) -> bool:
        """One look (every :data:`INTERVAL`): trim if idle after work; whether it did."""
        now = self._clock()
        idle = now - self._last < self.IDLE
        self._last = now
        if not idle or now - self._trimmed_at < self.WORK:
            return False
        self._trim(0)
        self._last = self._trimmed_at = self._clock()
        return True

    _running: dict[int, threading.Thread | None] = {}  # pid -> its thread: one a process
    _lock = threading.Lock()

    @classmethod
    def start(cls) -> threading.Thread | None:
        """Run in a daemon thread of this process, once (None without glibc)."""
        with cls._lock:
            thread = cls._running.get(os.getpid())
            if thread is None:
                thread = cls._running[os.getpid()] = cls._thread()
        return thread

    @classmethod
    def _thread(cls) -> threading.Thread | None:
        if not heap.can_trim():
            return None
        idle = cls(lambda _pad: heap.trim(), time.process_time)

        def run() -> None:
            while True:  # ends with the process (a daemon thread)
                time.sleep(cls.INTERVAL)
                idle.step()

        thread = threading.Thread(target=run, name="vmcorefs-idle-trim", daemon=True)
        thread.start()
        return thread


class VmcoreOperations(mfusepy.Operations):
    """FUSE operations over a :class:`~vmcorefs.tree.Tree`."""

    use_ns = True
    #: Reads and releases need no path (the open handle names the node): libfuse then skips
    #: building one for every request (``nullpath_ok``).
    flag_nopath = True
    flag_nullpath_ok = True

    def __init__(
        self,
        tree: Tree,
        *,
        mtime_ns: int | None = None,
        on_mounted: Callable[[], object] | None = None,
        negative_timeout: float = TIMEOUT,
        max_read: int = MAX_READ,
    ) -> None:
        self.tree = tree
        #: The largest read request: what ``-o max_read`` asked libfuse for (init must say the
        #: same, or libfuse ends the session at once).
        self.max_read = max_read
        self._on_mounted = on_mounted
        self.negative_timeout = negative_timeout
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.time_ns = mtime_ns if mtime_ns is not None else time.time_ns()
        self._handles: dict[int, File] = {}  # fh -> node
        self._paths: dict[int, str] = {}  # fh -> path, for messages (reads come without one)
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
        # Here, in the daemon (libfuse has forked by now): a thread started before would not be.
        IdleTrim.start()
        # Long work polls this (errors.check_stop): a SIGTERM or SIGINT, which libfuse's
        # handler turns into an exited session, then ends the request that waits on it at
        # once, and libfuse's loop (which waits for every busy worker) can unmount.
        set_stop_check(_session_exited())
        if self._on_mounted is not None:
            self._on_mounted()
        if conn_info is not None:
            conn_info.max_read = self.max_read
            conn_info.max_readahead = MAX_READ
        if config_3 is not None:
            config_3.entry_timeout = TIMEOUT
            config_3.attr_timeout = TIMEOUT
            config_3.negative_timeout = self.negative_timeout

    @_answers
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
            attrs["st_size"] = node.size()
            attrs["st_blocks"] = node.blocks()
            attrs["st_blksize"] = 4096
        return attrs

    def _register(self, node, path: str) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = node
            self._paths[fh] = path
        return fh

    def _forget(self, fh: int) -> None:
        with self._lock:
            node = self._handles.pop(fh, None)
            self._paths.pop(fh, None)
        if isinstance(node, File):
            node.release()

    def _handle(self, path: str | None, fh: int):
        """The node opened as ``fh`` (libfuse gives no path to read, readdir, release...)."""
        node = self._handles.get(fh)
        if node is None:
            if path is None:
                raise _fail(errno.EBADF)
            node = self._node(path)
        return node

    @_answers
    def opendir(self, path: str) -> int:
        node = self._node(path)
        if not isinstance(node, Directory):
            raise _fail(errno.ENOTDIR)
        return self._register(node, path)

    @_answers
    def readdir(self, path: str | None, fh: int):
        node = self._handle(path, fh)
        if not isinstance(node, Directory):
            raise _fail(errno.ENOTDIR)
        return [".", "..", *node.entries()]

    @_answers
    def releasedir(self, path: str | None, fh: int) -> int:
        self._forget(fh)
        return 0

    @_answers
    def access(self, path: str, amode: int) -> int:
        self._node(path)
        if amode & os.W_OK:
            raise _fail(errno.EROFS)
        return 0

    @_answers
    def statfs(self, path: str) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255, "f_flag": os.ST_RDONLY}

    # -- files -----------------------------------------------------------------------------
    @_answers
    def open(self, path: str, fi) -> int:
        node = self._node(path)
        # A dump that changed under us opens nothing: the kernel drops what it cached of a file
        # only when an open asks it to, and a file served through its cache would go on reading
        # the old dump's bytes beside the new ones.
        self.tree.check()
        if fi.flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise _fail(errno.EROFS)
        if isinstance(node, Directory):
            raise _fail(errno.EISDIR)
        try:
            direct = node.open_direct_io()
        except VmcorefsError:  # the reads that follow meet the error and say it
            direct = True
        fi.direct_io = 1 if direct else 0
        fi.keep_cache = 0 if direct else 1
        fi.fh = self._register(node, path)
        return 0

    def read(self, path: str, size: int, offset: int, fi, buf: memoryview | None = None):
        """The bytes at ``offset``; with ``buf`` (libfuse's reply buffer, see
        :class:`_ReplyFUSE`) they are copied there instead and the count is returned, and
        absent memory is ``-EIO`` returned, not raised (the reply as libfuse takes it: an
        exception raised and caught twice costs ~1 µs of a ~35 µs EIO, issue 17)."""
        try:
            node = self._handle(path, fi.fh)
            if type(node) is not WindowFile:
                # A dump changed under us: EIO, even for what caches hold (computed files, the
                # bytes a sym/ file's open read). Plain windows (phys, kvirt) need not ask here:
                # memory/ checks the dump on every read, and each pread is verified.
                self.tree.check()
            with node.pinned():  # a folder mount's dump stays open until the copy is done
                if buf is None:
                    return node.read(offset, size)
                if type(node) is not WindowFile:
                    return node.readinto(offset, buf)
                got = node.read_present(offset, buf)
            if got or offset >= node.length or not size:
                return got
            # Absent memory (phys, kvirt): EIO, and why only when --debug logs it (the
            # diagnosis re-translates the address: it would cost more than the read).
            if log.isEnabledFor(logging.DEBUG):
                with node.pinned():
                    log.debug("%s: %s", self._what(path, fi.fh, offset, size), node.fault(offset))
            if buf is not None:
                return -errno.EIO
            raise _fail(errno.EIO)
        except FuseOSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the daemon: report and EIO
            raise _fail(errno_of(exc, self._what(path, fi.fh, offset, size))) from None

    def _what(self, path: str | None, fh: int, offset: int, size: int) -> str:
        """A read request as its log line names it."""
        return f"read {path or self._paths.get(fh, '?')} at offset {offset:#x} (+{size:#x})"

    @_answers
    def lseek(self, path: str | None, offset: int, whence: int, fi) -> int:
        """``SEEK_DATA``/``SEEK_HOLE`` (the kernel answers the other kinds itself): where the
        next data or hole is, from the dump's map of what it holds; ENXIO past the last."""
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise _fail(errno.EINVAL)
        node = self._handle(path, fi.fh)
        if not isinstance(node, File):
            raise _fail(errno.EINVAL)
        if type(node) is not WindowFile:
            self.tree.check()
        with node.pinned():
            found = node.seek(offset, whence)
        if found is None:
            raise _fail(errno.ENXIO)
        return found

    @_answers
    def release(self, path: str, fi) -> int:
        self._forget(fi.fh)
        return 0

    # -- everything that would change the tree: read-only ----------------------------------
    def _readonly(self, *args, **kwargs):
        raise _fail(errno.EROFS)

    create = mkdir = rmdir = unlink = rename = symlink = link = mknod = _readonly
    chmod = chown = truncate = utimens = write = setxattr = removexattr = _readonly


# -- replies filled in place ---------------------------------------------------------------

#: A memoryview of C memory (libfuse's reply buffer) without a ctypes array type per size.
_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.restype = ctypes.py_object
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
PyBUF_WRITE = 0x200


#: ctypes runs each callback from a thread Python did not start (libfuse's workers) between
#: ``PyGILState_Ensure`` and ``PyGILState_Release``: the thread state is created and destroyed
#: around every FUSE request. One extra ``Ensure`` per worker keeps it: the next requests only
#: take the GIL (faster random reads: DEVELOPERS.md, "Performance"). The
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
    (into the bytes, then into the buffer). Here the buffer, as a memoryview, is passed down
    every layer's ``readinto`` to the dump file (``preadv``) or the cached page it is filled
    from: one copy, as for the do-nothing filesystem that the benchmarks compare against.
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
        view = _memory_view(buf, size, PyBUF_WRITE)
        try:
            return self.operations.read(name, size, offset, fi, buf=view)
        except FuseOSError as exc:  # the errno, without mfusepy's handling of an exception
            return -exc.errno
        finally:
            view.release()  # nothing may write to libfuse's buffer once it is replied

    def lseek(self, path: bytes | None, offset: int, whence: int, fip) -> int:
        """libfuse's ``lseek`` (mfusepy declares it but wires only what its FUSE defines)."""
        name = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.lseek(name, offset, whence, fip.contents)


def read_size(options: dict[str, str | bool]) -> int:
    """The ``-o max_read=N`` asked for (bytes, 1 to :data:`MAX_READ`), else :data:`MAX_READ`;
    OptionError for another value (the kernel's requests never exceed MAX_READ)."""
    value = options.get("max_read")
    if value is None:
        return MAX_READ
    text = value if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit() and 0 < int(text) <= MAX_READ):
        raise OptionError(
            f"max_read={text}" if text else "max_read",
            f"a number of bytes from 1 to {MAX_READ} is needed",
        )
    return int(text)


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
    # libfuse and fusermount3 write their complaints to fd 2 themselves: captured until the
    # kernel talks to us, so that a refusal is one vmcorefs line naming what was refused.
    max_read = read_size(options)
    capture = None if debug else _LibfuseMessages(restore=foreground)
    heap.limit_arenas(ARENA_MAX)
    ops = VmcoreOperations(
        tree,
        mtime_ns=mtime_ns,
        on_mounted=capture.release if capture is not None else None,
        negative_timeout=negative_timeout,
        max_read=max_read,
    )
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
    kwargs["max_read"] = str(max_read)
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
    except RuntimeError as exc:
        # libfuse 3 returns 8 from fuse_main when a signal (SIGTERM, SIGINT) ended the session
        # loop: it has unmounted cleanly, which is a normal end, not a failure.
        if not ops.mounted:
            said = capture.release() if capture is not None else ""
            raise mount_failure(mountpoint, said, exc) from None
    finally:
        set_stop_check(None)
        if capture is not None:
            capture.release()


def _session_exited() -> Callable[[], bool] | None:
    """Whether the session of the FUSE call being served has exited (libfuse's handler of
    SIGTERM, SIGINT and SIGHUP makes it so; ``fusermount3 -u`` too): asked in ``init``, whose
    context names the session. None where this libfuse cannot tell."""
    lib = mfusepy._libfuse
    try:
        get_session, exited = lib.fuse_get_session, lib.fuse_session_exited
    except AttributeError:  # libfuse 2 (mfusepy's fallback): no such calls
        return None
    get_session.restype, get_session.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    exited.restype, exited.argtypes = ctypes.c_int, [ctypes.c_void_p]
    context = lib.fuse_get_context()
    if not context or not context.contents.fuse:
        return None
    session = get_session(context.contents.fuse)
    if not session:
        return None
    return lambda: exited(session) != 0


_UNKNOWN_OPTION = re.compile(r"unknown option\(s\): `(?:-o ?)?([^']*)'")
_BAD_VALUE = re.compile(r"invalid (?:parameter|argument) in option `([^']*)'")


def mount_failure(mountpoint: str, said: str, exc: BaseException) -> VmcorefsError:
    """The one error for a mount that libfuse refused, from what it (or fusermount3) said:
    the option it did not take, else its first line, naming the mount point."""
    found = _UNKNOWN_OPTION.search(said)
    if found:
        return OptionError(found.group(1), "unknown mount option (libfuse does not take it)")
    found = _BAD_VALUE.search(said)
    if found:
        return OptionError(found.group(1), "invalid value (libfuse does not take it)")
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    why = lines[0].removeprefix("fuse: ") if lines else f"libfuse error {exc}"
    return MountPointError(mountpoint, f"mount failed: {why}")


class _LibfuseMessages:
    """fd 2 sent to a temporary file until :meth:`release` (which returns what was written).

    ``restore``: give fd 2 back on release (the foreground daemon logs there). A daemon in the
    background must not have it back: libfuse pointed its fd 2 at /dev/null after forking.
    """

    def __init__(self, *, restore: bool) -> None:
        self._restore = restore
        self._lock = threading.Lock()
        self._text = ""
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved: int | None = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self._pid = os.getpid()

    def release(self) -> str:
        with self._lock:
            if self._saved is not None:
                # The forked daemon (another pid) keeps libfuse's /dev/null.
                if self._restore or os.getpid() == self._pid:
                    os.dup2(self._saved, 2)
                os.close(self._saved)
                self._saved = None
                self._file.seek(0)
                self._text = self._file.read(1 << 16).decode("utf-8", "replace")
                self._file.close()
        return self._text
