"""The physical address space of a dump: one view over a container; ``--zero-fill`` over it.

Reads go to the container's ``readinto`` (ELF: ``pread`` into the caller's buffer; paged
containers: their page reader and its cache, ``dumpfile/paged.py``). This layer adds the
bounds of ``phys``, the check that the dump did not change under us, and the size of the
caches (``--cache-size``).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..buffers import fill_zeros
from ..dumpfile.source import PhysicalSource
from ..errors import FaultError
from .space import AddressSpace

#: Where a byte the metadata say is held cannot be read (a corrupt page), ``--zero-fill``
#: zeros up to the next multiple of this before reading again.
UNREADABLE_STEP = 4096


class PhysicalMemory(AddressSpace):
    """Physical memory exactly as the dump holds it; ``size`` is the container's ``phys_end``.
    A read stops at the first absent byte (:class:`ZeroFilled` is what ``--zero-fill`` reads).
    """

    name = "phys"

    def __init__(self, source: PhysicalSource, *, cache_size_mib: int = 64) -> None:
        self.source = source
        self.size = source.phys_end
        self._check = source.check
        source.set_cache_size(max(1, cache_size_mib) << 20)

    def readinto(self, addr: int, buffer: memoryview) -> int:
        if addr < 0 or addr >= self.size or not len(buffer):
            return 0
        # A dump changed under us fails every read, cached pages included (DumpError).
        self._check()
        if len(buffer) > self.size - addr:
            buffer = buffer[: self.size - addr]
        return self.source.readinto(addr, buffer)

    def present_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs of ``[start, end)`` the dump holds, by its metadata (see
        :meth:`PhysicalSource.present_runs`)."""
        start, end = max(0, start), min(end, self.size)
        if start >= end:
            return iter(())
        return self.source.present_runs(start, end)

    def next_present(self, addr: int, end: int) -> int:
        """The first address of ``[addr, end)`` that the metadata say is held, else ``end``
        (``addr`` itself when it is in a run yet did not read: a corrupt page)."""
        found = self.next_data(addr, end)
        return end if found is None else found

    def next_data(self, addr: int, end: int) -> int | None:
        start, end = max(0, addr), min(end, self.size)
        return self.source.next_data(start, end) if start < end else None

    def next_hole(self, addr: int, end: int) -> int:
        start, stop = max(0, addr), min(end, self.size)
        if start >= stop:
            return addr if addr < end else end  # past phys: nothing is held
        return self.source.next_hole(start, stop)

    def fault(self, addr: int) -> FaultError:
        """Why the byte at ``addr`` is not held (the container says, and records a corrupt
        page as the dump's damage)."""
        if not 0 <= addr < self.size:
            return FaultError(self.name, addr, f"past the end of phys ({self.size:#x})")
        return self.source.fault(addr)

    def held_bytes(self) -> int:
        """Bytes of physical memory the dump holds."""
        return self.source.held_bytes()


class ZeroFilled(AddressSpace):
    """``--zero-fill``: physical memory whose absent bytes inside ``[0, size)`` read as zeros
    (holes, excluded, lost and corrupt pages). Only the ``phys`` file reads through it: every
    kernel view reads :class:`PhysicalMemory` itself, and never takes these zeros for data."""

    name = "phys"

    def __init__(self, phys: PhysicalMemory) -> None:
        self.phys = phys
        self.size = phys.size

    def readinto(self, addr: int, buffer: memoryview) -> int:
        size = min(len(buffer), self.size - addr)
        if addr < 0 or size <= 0:
            return 0
        pos = 0
        # Bounded: every pass advances pos by at least one byte (held data or a zero run).
        while pos < size:
            pos += self.phys.readinto(addr + pos, buffer[pos:size])
            if pos >= size:
                break
            at = addr + pos
            gap_end = self.phys.next_present(at, addr + size)
            if gap_end == at:  # held by the metadata, yet not readable: a corrupt page
                gap_end = min(addr + size, at - at % UNREADABLE_STEP + UNREADABLE_STEP)
            fill_zeros(buffer[pos : gap_end - addr])
            pos = gap_end - addr
        return size

    def fault(self, addr: int) -> FaultError:
        return self.phys.fault(addr)

    def next_data(self, addr: int, end: int) -> int | None:
        """Where the dump holds data: a hole reads as zeros here, as a sparse file's does, so
        ``cp --sparse`` of ``phys`` with ``--zero-fill`` keeps its holes."""
        return self.phys.next_data(addr, end)

    def next_hole(self, addr: int, end: int) -> int:
        return self.phys.next_hole(addr, end)

    def held_bytes(self) -> int:
        return self.phys.held_bytes()
