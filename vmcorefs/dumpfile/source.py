"""The interface every dump container offers: physical memory, notes and VMCOREINFO.

Each container (ELF, kdump-compressed, flattened, split) is a :class:`PhysicalSource`. Layers
above use nothing else, so a new format needs no change outside ``dumpfile/``.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from time import monotonic
from typing import NamedTuple, Protocol

from ..buffers import read_via
from ..errors import CorruptError, DumpError, FaultError
from .damage import Damage, Truncation

#: At most this many notes are parsed from one notes area: a corrupt size cannot make us loop.
MAX_NOTES = 65536
#: Seconds between two checks that an open dump file is unchanged when reads hit the caches.
CHECK_INTERVAL = 0.2


@dataclass(frozen=True)
class Note:
    """One ELF note: ``name`` without its NUL ("CORE", "QEMU", "VMCOREINFO"), type, payload."""

    name: str
    type: int
    desc: bytes


@dataclass
class SourceInfo:
    """What a container says about itself; shown in ``summary`` and ``README``."""

    format: str  #: e.g. "ELF64 core", "kdump-compressed", "flattened (kdump-compressed)"
    compression: str = "none"  #: "none", "zlib", "lzo", "snappy", "zstd" or "mixed"
    dump_level: int | None = None  #: makedumpfile's -d level, where the container records it
    crashed_cpu: int | None = None  #: kdump header's current_cpu, where recorded
    nr_cpus: int | None = None
    page_size: int | None = None  #: the container's page (block) size, where it has one
    #: When the dump was written, in seconds since the epoch, where the container records it
    #: (the kdump header's timestamp); None where it does not (ELF, makedumpfile 1.7.2's 0).
    dump_time: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  #: further "key: value" facts


class PhysicalSource(ABC):
    """Physical memory as one dump container holds it.

    :meth:`readinto` follows the project's one rule: it copies the bytes held from ``paddr``
    on, in order, into the caller's buffer, stopping at the first byte not held (0 when
    ``paddr`` itself is absent). Absence is never an exception here: holes, excluded pages,
    lost pages and pages that fail to decompress are all simply not held; :meth:`fault` says
    why, when asked (only on the failure path: it may cost a descriptor read or a second
    decompression). :meth:`present_runs` says where the dump holds memory from its metadata
    alone (PT_LOADs, bitmaps), without reading any. Reads are thread-safe (``os.pread``,
    locked caches).
    """

    #: Paths of the files this source reads (for messages).
    paths: Sequence[str]
    info: SourceInfo
    #: End of the highest physical range the container describes: the size of ``phys``.
    phys_end: int

    @abstractmethod
    def readinto(self, paddr: int, buffer: memoryview) -> int:
        """Copy the bytes held from ``paddr`` into ``buffer`` (up to its length), stopping at
        the first byte not held; the count (0: the byte at ``paddr`` is not held)."""

    def read(self, paddr: int, size: int) -> bytes:
        """The bytes :meth:`readinto` copies, as a new bytes object."""
        return read_via(self.readinto, paddr, size)

    @abstractmethod
    def present_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs ``[a, b)`` inside ``[start, end)`` that the dump's metadata say it holds,
        in order, merged where they touch; no page data are read, so a page that turns out to
        be corrupt (or lost from an incomplete dump) is in a run and :meth:`readinto` stops
        there. Lazy: a caller takes only the runs it needs."""

    def next_data(self, start: int, end: int) -> int | None:
        """The first address of ``[start, end)`` in a run the metadata say is held, else None
        (``SEEK_DATA``). Containers with an index answer without scanning."""
        for a, _ in self.present_runs(start, end):
            return a
        return None

    def next_hole(self, start: int, end: int) -> int:
        """The first address of ``[start, end)`` that the metadata say is not held, else
        ``end`` (``SEEK_HOLE``)."""
        pos = start
        for a, b in self.present_runs(start, end):  # bounded: stops at the first gap
            if a > pos:
                return pos
            pos = max(pos, b)
        return min(pos, end)

    def fault(self, paddr: int) -> FaultError:
        """Why the byte at ``paddr`` is not held: a :class:`FaultError` (absent) or a
        :class:`~vmcorefs.errors.CorruptError` (held but damaged, then recorded in
        :attr:`damage`), returned, not raised. Asked where :meth:`readinto` stopped."""
        fault = self._fault(paddr)
        if isinstance(fault, CorruptError):
            self.damage.record(fault)
        return fault

    def _fault(self, paddr: int) -> FaultError:
        """:meth:`fault` without recording it: what each container answers."""
        return FaultError("phys", paddr)

    def set_cache_size(self, nbytes: int) -> None:  # noqa: B027 - optional hook
        """Bytes of decoded pages to keep (containers that decode pages keep a cache)."""

    def truncations(self) -> Sequence[Truncation]:
        """The files of this dump that are shorter than their headers say (found at open)."""
        return []

    def held_bytes(self) -> int:
        """Bytes of physical memory the dump holds (its ``st_blocks``), 0 when not known."""
        return 0

    @property
    def damage(self) -> Damage:
        """This dump's record of damage (truncated files, corrupt pages met)."""
        found: Damage | None = self.__dict__.get("_damage")
        if found is None:
            made = Damage()
            made.truncations = list(self.truncations())
            found = self.__dict__.setdefault("_damage", made)
            assert isinstance(found, Damage)
        return found

    @abstractmethod
    def ranges(self) -> Sequence[tuple[int, int]]:
        """The ``[start, end)`` physical ranges the container describes (RAM), sorted."""

    @abstractmethod
    def notes(self) -> Sequence[Note]:
        """The ELF notes the dump carries, in file order (PRSTATUS, QEMU, VMCOREINFO, ...)."""

    def vmcoreinfo_raw(self) -> bytes | None:
        """The VMCOREINFO text as stored (trailing NULs dropped), or None."""
        return vmcoreinfo_of(self.notes())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file descriptors."""

    def check(self) -> None:
        """DumpError when a file of the dump changed since it was opened (rate-limited)."""
        files = self.__dict__.get("_checked_files")
        if files is None:
            files = self.__dict__["_checked_files"] = list(self.files())
        for file in files:
            file.check()

    def files(self) -> Sequence[ReadableFile]:
        """The files this source reads."""
        file = getattr(self, "file", None)
        return [file] if file is not None else []


class ReadableFile(Protocol):
    """What a container reader needs of its file: a path for messages, a size, ``pread``.

    :class:`DumpFile` is one; a flattened stream's index is another (it maps offsets of the
    reconstructed file onto the stream's records), so the ELF and kdump readers read either.
    """

    path: str
    size: int

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at the end of the file."""
        ...

    def preadinto(self, offset: int, buffer: memoryview) -> int:
        """:meth:`pread` into ``buffer`` (up to its length): the count."""
        ...

    def pread_exact(self, offset: int, size: int, what: str = "data") -> bytes:
        """Exactly ``size`` bytes at ``offset`` or :class:`DumpError` naming ``what``."""
        ...

    def data_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs of ``[start, end)`` that may hold bytes other than zeros, in order; the
        rest reads as zeros (holes of a sparse file, gaps no flattened record writes)."""
        ...

    def check(self) -> None:
        """DumpError when the file changed since it was opened."""
        ...

    def close(self) -> None: ...


class ExactReads:
    """``pread_exact`` over ``pread``, ``size`` and ``path``: for every readable file."""

    path: str
    size: int
    #: How messages name the file's contents ("the file", "the rebuilt dump").
    contents_name = "the file"

    def pread(self, offset: int, size: int) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def data_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """``[start, end)`` within the file: a file that cannot tell its holes."""
        start, end = max(0, start), min(end, self.size)
        if start < end:
            yield start, end

    def pread_exact(self, offset: int, size: int, what: str = "data") -> bytes:
        """Exactly ``size`` bytes at ``offset`` or :class:`DumpError` naming ``what``: a size
        read from a dump is checked against the file before anything is read."""
        if offset < 0 or size < 0 or offset + size > self.size:
            raise DumpError(
                self.path,
                f"truncated: {what} at offset {offset:#x} (+{size:#x}) is past the end of "
                f"{self.contents_name} ({self.size:#x} bytes)",
            )
        data = self.pread(offset, size)
        if len(data) != size:
            raise DumpError(self.path, f"truncated: short read of {what} at offset {offset:#x}")
        return data


class DumpFile(ExactReads):
    """A read-only file read with ``os.pread``: thread-safe, no shared file position.

    Every size read from a dump is checked against :attr:`size` before it is trusted; a read
    past the end raises :class:`DumpError` (the file was truncated or replaced under us).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # Looked at before it is opened: opening a FIFO blocks until a writer comes, and
        # opening a device may do something (a tape rewinds).
        try:
            _refuse_unless_regular(path, os.stat(path).st_mode)
            # O_NONBLOCK: should the name now be a FIFO, the open returns at once (and the
            # fstat below refuses it); it changes nothing for a regular file.
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise DumpError(path, _open_error(exc)) from None
        st = os.fstat(self.fd)
        try:
            _refuse_unless_regular(path, st.st_mode)
        except DumpError:
            os.close(self.fd)
            raise
        self.size = st.st_size
        #: ``(st_dev, st_ino)``: the same file given twice has the same.
        self.inode = (st.st_dev, st.st_ino)
        self._identity = _identity(st)
        #: Why the file is no longer the dump that was opened (None while it is).
        self.changed: str | None = None
        self._checked = monotonic()
        self._lock = threading.Lock()

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; short only at the end of the file.

        The file is checked after every read (one ``fstat``): bytes read while it was being
        truncated or overwritten in place are never returned (:meth:`check`).
        """
        if self.changed:
            raise DumpError(self.path, self.changed)
        if size <= 0 or offset >= self.size:
            return b""
        try:
            data = os.pread(self.fd, size, offset)
        except OSError as exc:
            raise DumpError(
                self.path, f"read error at offset {offset:#x}: {exc.strerror}"
            ) from None
        self._verify()
        return data

    def preadinto(self, offset: int, buffer: memoryview) -> int:
        """Read into ``buffer`` (up to its length) at ``offset``: the count, short only at the
        end of the file. Checked as :meth:`pread` is: bytes read while the file was being
        truncated or overwritten in place never count as read."""
        if self.changed:
            raise DumpError(self.path, self.changed)
        if offset >= self.size or not len(buffer):
            return 0
        try:
            got = os.preadv(self.fd, [buffer], offset)
        except OSError as exc:
            raise DumpError(
                self.path, f"read error at offset {offset:#x}: {exc.strerror}"
            ) from None
        self._verify()
        return got

    def data_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs of ``[start, end)`` that the file system stores (``SEEK_DATA`` and
        ``SEEK_HOLE``): a scan of a sparse file then costs what it stores, not what its size
        says. Where the file system cannot tell, the whole range. Bounded: each run found
        moves past a hole."""
        pos, end = max(0, start), min(end, self.size)
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but a hole up to the end of the file
                    return
                yield pos, end  # no SEEK_DATA here: all of it may be data
                return
            if data >= end:
                return
            try:
                hole = os.lseek(self.fd, data, os.SEEK_HOLE)
            except OSError:
                hole = end
            hole = min(end, max(hole, data + 1))
            yield max(data, pos), hole
            pos = hole

    def check(self) -> None:
        """DumpError once the file changed under us (its size, mtime, ctime or inode differ
        from when it was opened: truncated or overwritten in place, even by a writer that set
        the mtime back; see :class:`FileIdentity`); the ``fstat`` runs at most every
        :data:`CHECK_INTERVAL` seconds. A file renamed over ours leaves our descriptor on the
        old inode: that is still the dump we opened, and reads go on."""
        if self.changed:
            raise DumpError(self.path, self.changed)
        if monotonic() - self._checked >= CHECK_INTERVAL:
            self._verify()

    def _verify(self) -> None:
        try:
            st = os.fstat(self.fd)
        except OSError as exc:
            self.changed = f"cannot stat the dump any more: {exc.strerror}"
        else:
            self._checked = monotonic()
            known = self._identity
            # Every write sets the ctime (which no one can set back): the same ctime and size
            # are the same bytes. The fast path of every read; the full comparison otherwise.
            if st.st_ctime_ns == known.ctime_ns and st.st_size == known.size:
                return
            now = _identity(st)
            if now == known:
                return
            if now.bytes_same(self._identity) and now.meta != self._identity.meta:
                # A new ctime with a new link count, mode or owner: renamed over or unlinked,
                # linked, chmod, chown; not the bytes.
                self._identity = now
                return
            if now.size != self._identity.size:
                self.changed = (
                    f"the file changed while in use: {self._identity.size} bytes when opened, "
                    f"{now.size} now"
                )
            elif now.mtime_ns != self._identity.mtime_ns:
                self.changed = "the file changed while in use: it was modified in place"
            else:
                self.changed = (
                    "the file changed while in use: its status changed (ctime), as when it is "
                    "modified in place and its mtime set back"
                )
        raise DumpError(self.path, self.changed)

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def merge_runs(runs: Iterable[tuple[int, int]], start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sorted runs ``[a, b)`` clipped to ``[start, end)``, empty ones dropped, touching ones
    merged: what each ``present_runs`` gives. Lazy: takes runs only as they are needed."""
    run_start = run_end = -1
    for a, b in runs:
        a, b = max(a, start), min(b, end)
        if a >= b:
            continue
        if a == run_end:
            run_end = b
            continue
        if run_end > run_start:
            yield run_start, run_end
        run_start, run_end = a, b
    if run_end > run_start:
        yield run_start, run_end


def vmcoreinfo_of(notes: Iterable[Note]) -> bytes | None:
    """The text of the first VMCOREINFO note (trailing NULs dropped), or None."""
    for note in notes:
        if note.name == "VMCOREINFO":
            return note.desc.rstrip(b"\0")
    return None


class FileIdentity(NamedTuple):
    """What says that an open file is still the dump that was opened: its inode, size, mtime
    and ctime. Writing sets the ctime, and no one can set it back (as ``touch`` can the
    mtime); the metadata (``meta``: link count, mode, owner) tell a ctime set by a rename over
    the file, a new link or a chmod, which change no byte, from one set by a write."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    meta: tuple[int, int, int, int]

    def bytes_same(self, other: FileIdentity) -> bool:
        """Everything but the ctime and the metadata is the same."""
        return self[:4] == other[:4]


def _identity(st: os.stat_result) -> FileIdentity:
    meta = (st.st_nlink, st.st_mode, st.st_uid, st.st_gid)
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, meta)


#: What a file that is not a regular file is, for the one-line refusal.
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _open_error(exc: OSError) -> str:
    """What a failed stat or open of a dump says, in the one-line error's words."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def _refuse_unless_regular(path: str, mode: int) -> None:
    """DumpError unless ``mode`` is a regular file's: a dump is read in place, at any offset,
    with a size; a pipe or a device has neither."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise DumpError(path, "is a directory")
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "a file of another kind")
    raise DumpError(
        path, f"is {what}, not a regular file: copy the dump to a file first (it is read in place)"
    )


def parse_notes(data: bytes, *, big_endian: bool = False, align: int = 4) -> Iterator[Note]:
    """Parse an ELF notes area (``Elf64_Nhdr`` records, 4-byte aligned as Linux writes them).

    Bounded: stops at the end of ``data``, at a record that does not fit, or after
    :data:`MAX_NOTES` records. A zero-filled tail (kdump pads the area) ends the list.
    """
    fmt = ">III" if big_endian else "<III"
    pos = 0
    end = len(data)
    for _ in range(MAX_NOTES):
        if pos + 12 > end:
            return
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            return
        pos += 12
        name_end = pos + namesz
        desc_start = pos + ((namesz + align - 1) & ~(align - 1))
        desc_end = desc_start + descsz
        if name_end > end or desc_end > end:
            return
        name = data[pos:name_end].split(b"\0", 1)[0].decode("ascii", "replace")
        yield Note(name, ntype, bytes(data[desc_start:desc_end]))
        pos = desc_start + ((descsz + align - 1) & ~(align - 1))
