"""The physical address space of a dump: one view over a container, with ``--zero-fill``."""

from __future__ import annotations

from ..dumpfile.source import PhysicalSource
from .space import AddressSpace


class PhysicalMemory(AddressSpace):
    """Physical memory as the dump holds it; ``size`` is the container's ``phys_end``.

    With ``zero_fill`` the absent bytes inside ``[0, size)`` read as zeros (holes, excluded and
    lost pages); without it a read stops at the first absent byte.
    """

    name = "phys"

    def __init__(self, source: PhysicalSource, *, zero_fill: bool = False) -> None:
        self.source = source
        self.zero_fill = zero_fill
        self.size = source.phys_end

    def read(self, addr: int, size: int) -> bytes:
        if addr < 0 or size <= 0 or addr >= self.size:
            return b""
        size = min(size, self.size - addr)
        data = self.source.read(addr, size)
        if not self.zero_fill or len(data) == size:
            return data
        parts = [data]
        pos = addr + len(data)
        end = addr + size
        # Bounded: every pass advances pos by at least one byte (present data or a zero run).
        while pos < end:
            gap_end = min(end, max(pos + 1, self.source.absent_until(pos, end)))
            parts.append(bytes(gap_end - pos))
            pos = gap_end
            if pos < end:
                more = self.source.read(pos, end - pos)
                parts.append(more)
                pos += len(more)
        return b"".join(parts)

    def present(self, addr: int, size: int) -> bool:
        """True when every byte of ``[addr, addr+size)`` is held (zero-fill counts as held)."""
        try:
            self.read_exact(addr, size)
        except Exception:  # noqa: BLE001
            return False
        return True
