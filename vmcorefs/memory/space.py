"""Address spaces: one read rule for physical and kernel virtual memory.

``readinto`` copies the bytes present from an address on into the caller's buffer, stopping at
the first absent byte (0 when the first byte is absent): exactly what the mounted files serve,
and what the FUSE reply is filled with, in place. ``read`` is the same as a new bytes object.
The kernel layer mostly wants whole values instead, so ``read_exact`` and the integer helpers
raise :class:`~vmcorefs.errors.FaultError` when any byte is absent. :meth:`AddressSpace.fault`
says why a byte is not there (absent, or :class:`~vmcorefs.errors.CorruptError`): asked only on
the failure path, so that reading stays as cheap as it was.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod

from ..buffers import read_via
from ..errors import FaultError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S32 = struct.Struct("<i")
_S64 = struct.Struct("<q")


class AddressSpace(ABC):
    """A byte-addressed space; subclasses implement :meth:`readinto`."""

    #: Name used in messages: "phys" or "kvirt".
    name: str = "memory"

    @abstractmethod
    def readinto(self, addr: int, buffer: memoryview) -> int:
        """Copy the bytes present from ``addr`` into ``buffer`` (up to its length), stopping
        at the first absent byte; the count (0: the byte at ``addr`` is absent)."""

    def read(self, addr: int, size: int) -> bytes:
        """Bytes present from ``addr``, at most ``size``, stopping at the first absent byte."""
        return read_via(self.readinto, addr, size)

    def fault(self, addr: int) -> FaultError:
        """Why the byte at ``addr`` cannot be read (returned, for the caller to raise): where
        :meth:`readinto` stopped. Subclasses ask the layer below."""
        return FaultError(self.name, addr)

    def next_data(self, addr: int, end: int) -> int | None:
        """The first address of ``[addr, end)`` that the dump's metadata say is held, else None
        (``SEEK_DATA``; no page data are read). This default: every byte is."""
        return addr if addr < end else None

    def next_hole(self, addr: int, end: int) -> int:
        """The first address of ``[addr, end)`` that the metadata say is not held, else
        ``end`` (``SEEK_HOLE``). This default: none is."""
        return end

    def read_exact(self, addr: int, size: int) -> bytes:
        """Exactly ``size`` bytes or :class:`FaultError` at the first absent address."""
        if size <= 0:
            return b""
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = self.readinto(addr, view)
        # A space may stop short of what is present (a chunk boundary); keep reading until the
        # data stop coming. Bounded: each pass reads at least one byte or raises.
        while got < size:
            more = self.readinto(addr + got, view[got:])
            if not more:
                raise self.fault(addr + got)
            got += more
        return bytes(buffer)

    def u8(self, addr: int) -> int:
        return self.read_exact(addr, 1)[0]

    def u16(self, addr: int) -> int:
        value: int = _U16.unpack(self.read_exact(addr, 2))[0]
        return value

    def u32(self, addr: int) -> int:
        value: int = _U32.unpack(self.read_exact(addr, 4))[0]
        return value

    def u64(self, addr: int) -> int:
        value: int = _U64.unpack(self.read_exact(addr, 8))[0]
        return value

    def s32(self, addr: int) -> int:
        value: int = _S32.unpack(self.read_exact(addr, 4))[0]
        return value

    def s64(self, addr: int) -> int:
        value: int = _S64.unpack(self.read_exact(addr, 8))[0]
        return value

    def cstring(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string of at most ``limit`` bytes (without the NUL).

        Stops at the NUL, at ``limit``, or at absent memory (what was read so far is returned
        when at least one byte was; a string whose first byte is absent faults).
        """
        out = bytearray()
        while len(out) < limit:
            chunk = self.read(addr + len(out), min(256, limit - len(out)))
            if not chunk:
                if not out:
                    raise self.fault(addr)
                break
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                break
            out += chunk
        return bytes(out)
