"""Address spaces: one read rule for physical and kernel virtual memory.

``read`` returns the bytes present from an address on, stopping at the first absent byte
(``b""`` when the first byte is absent): exactly what the mounted files serve. The kernel layer
mostly wants whole values instead, so ``read_exact`` and the integer helpers raise
:class:`~vmcorefs.errors.FaultError` when any byte is absent. :meth:`AddressSpace.fault` says
why a byte is not there (absent, or :class:`~vmcorefs.errors.CorruptError`): asked only on the
failure path, so that reading stays as cheap as it was.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod

from ..dumpfile.source import Piece
from ..errors import FaultError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_S32 = struct.Struct("<i")
_S64 = struct.Struct("<q")


class AddressSpace(ABC):
    """A byte-addressed space; subclasses implement :meth:`read`."""

    #: Name used in messages: "phys" or "kvirt".
    name: str = "memory"

    @abstractmethod
    def read(self, addr: int, size: int) -> bytes:
        """Bytes present from ``addr``, at most ``size``, stopping at the first absent byte."""

    def fault(self, addr: int) -> FaultError:
        """Why the byte at ``addr`` cannot be read (returned, for the caller to raise): where
        :meth:`read` stopped. Subclasses ask the layer below."""
        return FaultError(self.name, addr)

    def extents(self, addr: int, size: int) -> list[Piece]:
        """What :meth:`read` returns, as pieces: bytes, or :class:`FileExtent` where the bytes
        lie verbatim in a dump file (a FUSE reply can then be filled with one copy)."""
        data = self.read(addr, size)
        return [data] if data else []

    def read_exact(self, addr: int, size: int) -> bytes:
        """Exactly ``size`` bytes or :class:`FaultError` at the first absent address."""
        data = self.read(addr, size)
        if len(data) == size:
            return data
        parts = [data]
        got = len(data)
        # A space may return a prefix shorter than what is present (a chunk boundary); keep
        # reading until the data stops coming.
        while got < size:
            more = self.read(addr + got, size - got)
            if not more:
                raise self.fault(addr + got)
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def u8(self, addr: int) -> int:
        return self.read_exact(addr, 1)[0]

    def u16(self, addr: int) -> int:
        return _U16.unpack(self.read_exact(addr, 2))[0]

    def u32(self, addr: int) -> int:
        return _U32.unpack(self.read_exact(addr, 4))[0]

    def u64(self, addr: int) -> int:
        return _U64.unpack(self.read_exact(addr, 8))[0]

    def s32(self, addr: int) -> int:
        return _S32.unpack(self.read_exact(addr, 4))[0]

    def s64(self, addr: int) -> int:
        return _S64.unpack(self.read_exact(addr, 8))[0]

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
