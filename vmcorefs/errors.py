"""Why something cannot be read: the one error model, shared by every layer.

They live below every layer so that each can raise them, and the CLI and the FUSE adapter can
map them (to ``vmcorefs: PATH: reason`` lines, ``unavailable: reason`` files and errno values)
without knowing formats. Every error says where (a path, an address, a key) and why.

=============== ==================== ============================================== ========
kind            class                meaning                                        errno
=============== ==================== ============================================== ========
absent          :class:`FaultError`  the dump does not hold the byte: a hole, a     EIO
                                     page makedumpfile excluded, a page lost from
                                     an incomplete dump, an unmapped address
corrupt         :class:`CorruptError` the dump holds it but it is damaged: data     EIO
                (a FaultError)       that do not decompress to one page, a header
                                     that contradicts the file, data past the end
                                     of a truncated file
unavailable     :class:`Unavailable` a derived view lacks what it needs (a          (text)
                                     VMCOREINFO key, a symbol, a structure, memory):
                                     its file reads ``unavailable: <reason>``
dump            :class:`DumpError`   the dump file cannot be used (at open, or      EIO
                                     changed under us)
mount point     :class:`MountPointError` the mount point cannot be used             (exit 1)
option          :class:`OptionError` a ``-o`` option refused (``rw``, unknown)      (exit 2)
stopping        :class:`Stopping`    the daemon was asked to end (SIGTERM, SIGINT)  EIO
                                     during long work: never cached
bug             anything else        a defect of vmcorefs: EIO and one log record   EIO
                                     with its traceback, never cached
=============== ==================== ============================================== ========

``except FaultError`` catches absent and corrupt alike (both mean "these bytes cannot be
read"); ``isinstance(exc, CorruptError)`` or ``exc.kind`` tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable


class VmcorefsError(Exception):
    """Base of every error vmcorefs raises on purpose (anything else is a bug)."""

    #: One word for logs and messages: "absent", "corrupt", "unavailable", "dump", ...
    kind = "error"


class PathError(VmcorefsError):
    """A file or folder given on the command line cannot be used: ``vmcorefs: PATH: reason``.

    ``path`` names it and ``reason`` says why, in words a user can act on.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class DumpError(PathError):
    """The dump file cannot be used: missing, unreadable, truncated headers, corrupt, foreign,
    or changed while mounted (then every read of it fails with EIO)."""

    kind = "dump"


class MountPointError(PathError):
    """The mount point cannot be used: missing, not a directory, already mounted, or the
    mount itself failed (an option libfuse refused)."""

    kind = "mount point"


class OptionError(VmcorefsError):
    """A ``-o`` mount option that cannot be used: ``vmcorefs: -o OPTION: reason`` (exit 2)."""

    kind = "option"

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"-o {option}: {reason}")
        self.option = option
        self.reason = reason


class FaultError(VmcorefsError):
    """A byte the dump does not hold was needed (*absent*): a hole, a page excluded by the dump
    level, a page lost from an incomplete dump, an address the page tables do not map.

    ``space`` is the address space ("phys", "kvirt"), ``address`` the first byte that could not
    be read and ``reason`` why; ``str()`` is ``"kvirt 0xffffffff81000000: absent: reason"``.
    """

    kind = "absent"

    def __init__(self, space: str, address: int, reason: str = "not in the dump") -> None:
        super().__init__(f"{space} {address:#x}: {self.kind}: {reason}")
        self.space = space
        self.address = address
        self.reason = reason

    def at(self, space: str, address: int) -> FaultError:
        """The same fault (kind and reason) seen from another address space: a kvirt address
        whose physical page is absent or corrupt."""
        return type(self)(space, address, self.reason)


class CorruptError(FaultError):
    """The dump holds the byte but it is damaged (*corrupt*): page data that do not decompress
    to exactly one page, a page descriptor that contradicts the file, page data past the end
    of a file shorter than its headers say. Read as EIO like absent memory, but recorded as
    damage (``summary`` says so)."""

    kind = "corrupt"


class Unavailable(VmcorefsError):
    """A derived view cannot be computed from this dump (*unavailable*).

    ``reason`` names what is lacking (a VMCOREINFO key, a symbol, a structure, memory: with
    the fault that made it unreadable); files built on the view read ``unavailable: reason``.
    Views cache it (its reason only, see ``kernel/lazy.py``): the dump does not change.
    """

    kind = "unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def not_in_dump(cls, what: str, fault: FaultError) -> Unavailable:
        """``"WHAT is not in the dump (kvirt 0x...: corrupt: ...)"``: the fault says why."""
        return cls(f"{what} is not in the dump ({fault})")


#: What a view built on dump data may fail with; a file built on it reads ``unavailable: ``
#: and :func:`why` (a fault says its kind: absent or corrupt).
NOT_AVAILABLE = (Unavailable, FaultError)


def why(exc: Unavailable | FaultError) -> str:
    """The text after ``unavailable: `` for ``exc``: an Unavailable's reason, a fault as it
    prints (``"kvirt 0x...: corrupt: ..."``: the address space, the address, kind and why)."""
    return exc.reason if isinstance(exc, Unavailable) else str(exc)


class Stopping(VmcorefsError):
    """Long work (a scan of a bitmap, a walk over every page frame) given up because the daemon
    is ending: the request that waited on it fails (EIO) at once instead of holding up the
    unmount. Never cached: it says nothing about the dump."""

    kind = "stopping"


#: Whether the daemon was asked to end; the FUSE adapter sets it (see :func:`set_stop_check`).
_stop_requested: Callable[[], bool] | None = None


def set_stop_check(requested: Callable[[], bool] | None) -> None:
    """Install what :func:`check_stop` asks (the FUSE adapter: libfuse's session has exited,
    which its SIGTERM/SIGINT/SIGHUP handler does); None removes it."""
    global _stop_requested
    _stop_requested = requested


def check_stop() -> None:
    """Raise :class:`Stopping` once the daemon was asked to end. Long loops over dump data call
    it between steps (each a bounded amount of work): a cheap call, a few per MiB scanned."""
    requested = _stop_requested
    if requested is not None and requested():
        raise Stopping("the daemon is stopping (signal): the work was given up")


def kind_of(exc: BaseException) -> str:
    """The kind of an error, for logs: the class's ``kind``, "bug" for anything unexpected."""
    return exc.kind if isinstance(exc, VmcorefsError) else "bug"
