"""Small stand-ins for the kernel layer's inputs: sparse kernel memory and a symbol table.

``SparseMemory`` is an :class:`~vmcorefs.memory.space.AddressSpace` made of written pages:
bytes never written are absent (a read stops there), so tests can cut a list or a stack where
they like. Symbols use the product's own :class:`~vmcorefs.kernel.symbols.SymbolTable`, fed
with the test's addresses.
"""

from __future__ import annotations

import struct

from vmcorefs.errors import FaultError
from vmcorefs.kernel.symbols import SymbolTable
from vmcorefs.memory.space import AddressSpace

PAGE = 4096


def absent(addr: int) -> str:
    """What a read of ``addr`` that :class:`SparseMemory` lacks says (the error model's words)."""
    return str(FaultError(SparseMemory.name, addr))


class SparseMemory(AddressSpace):
    name = "kvirt"

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def write(self, addr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, off = divmod(addr + pos, PAGE)
            n = min(PAGE - off, len(data) - pos)
            self.pages.setdefault(page, bytearray(PAGE))[off : off + n] = data[pos : pos + n]
            pos += n

    def put64(self, addr: int, *values: int) -> None:
        self.write(addr, struct.pack(f"<{len(values)}Q", *(v & (1 << 64) - 1 for v in values)))

    def put32(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<I", value & 0xFFFFFFFF))

    def drop(self, addr: int) -> None:
        """Make the page holding ``addr`` absent."""
        self.pages.pop(addr // PAGE, None)

    def read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            page, off = divmod(addr + len(out), PAGE)
            data = self.pages.get(page)
            if data is None:
                break
            out += data[off : off + min(PAGE - off, size - len(out))]
        return bytes(out)


def symbol_table(entries: dict[str, int], types: dict[str, str] | None = None) -> SymbolTable:
    """A SymbolTable of ``name -> address`` (type 'T' unless ``types`` says otherwise)."""
    items = sorted(entries.items(), key=lambda kv: kv[1])
    types = types or {}
    return SymbolTable(
        [n for n, _ in items],
        [a for _, a in items],
        [types.get(n, "T") for n, _ in items],
        [None] * len(items),
    )
