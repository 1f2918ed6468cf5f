"""A synthetic BTF writer for unit tests: every kind, bitfields, anonymous members.

It encodes ``uapi/linux/btf.h`` directly from the spec (``Documentation/bpf/btf.rst``), with
no code shared with the parser under test, so the tests compare the parser against an
independent encoding. Type ids are handed out in order starting at 1; ``next_id`` lets a test
refer to a type before adding it (a struct holding a pointer to itself).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

KINDS = {
    "INT": 1,
    "PTR": 2,
    "ARRAY": 3,
    "STRUCT": 4,
    "UNION": 5,
    "ENUM": 6,
    "FWD": 7,
    "TYPEDEF": 8,
    "VOLATILE": 9,
    "CONST": 10,
    "RESTRICT": 11,
    "FUNC": 12,
    "FUNC_PROTO": 13,
    "VAR": 14,
    "DATASEC": 15,
    "FLOAT": 16,
    "DECL_TAG": 17,
    "TYPE_TAG": 18,
    "ENUM64": 19,
}


class BtfBuilder:
    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.strings = bytearray(b"\0")
        self._str_offsets: dict[str, int] = {"": 0}

    @property
    def next_id(self) -> int:
        return len(self.records) + 1

    def string(self, text: str) -> int:
        off = self._str_offsets.get(text)
        if off is None:
            off = len(self.strings)
            self.strings += text.encode() + b"\0"
            self._str_offsets[text] = off
        return off

    def _add(
        self, kind: str, name: str, vlen: int, size_type: int, tail: bytes = b"", kflag=False
    ) -> int:
        info = (KINDS[kind] << 24) | (vlen & 0xFFFF) | (int(bool(kflag)) << 31)
        self.records.append(struct.pack("<III", self.string(name), info, size_type) + tail)
        return len(self.records)

    # -- kinds ------------------------------------------------------------------------------
    def int_(self, name: str, size: int, *, bits: int | None = None, offset: int = 0,
             signed=False, char=False, boolean=False) -> int:  # fmt: skip
        enc = (1 if signed else 0) | (2 if char else 0) | (4 if boolean else 0)
        bits = size * 8 if bits is None else bits
        word = (enc << 24) | (offset << 16) | bits
        return self._add("INT", name, 0, size, struct.pack("<I", word))

    def ptr(self, target: int) -> int:
        return self._add("PTR", "", 0, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self._add("ARRAY", "", 0, 0, struct.pack("<III", elem, index, nelems))

    def _composite(self, kind: str, name: str, size: int, members, kflag) -> int:
        """``members``: (name, type, bit_offset) or (name, type, bit_offset, bitfield_size)."""
        if kflag is None:
            kflag = any(len(m) > 3 and m[3] for m in members)
        tail = b""
        for m in members:
            m_name, m_type, bit_off = m[0], m[1], m[2]
            bits = m[3] if len(m) > 3 else 0
            off = (bits << 24) | bit_off if kflag else bit_off
            tail += struct.pack("<III", self.string(m_name), m_type, off)
        return self._add(kind, name, len(members), size, tail, kflag)

    def struct(self, name: str, size: int, members: Sequence, *, kflag=None) -> int:
        return self._composite("STRUCT", name, size, members, kflag)

    def union(self, name: str, size: int, members: Sequence, *, kflag=None) -> int:
        return self._composite("UNION", name, size, members, kflag)

    def enum(self, name: str, values: Sequence[tuple[str, int]], *, size=4, signed=False) -> int:
        tail = b"".join(struct.pack("<Ii", self.string(n), v) for n, v in values)
        return self._add("ENUM", name, len(values), size, tail, signed)

    def enum64(self, name: str, values: Sequence[tuple[str, int]], *, size=8, signed=False) -> int:
        tail = b""
        for n, v in values:
            v &= (1 << 64) - 1
            tail += struct.pack("<III", self.string(n), v & 0xFFFFFFFF, v >> 32)
        return self._add("ENUM64", name, len(values), size, tail, signed)

    def fwd(self, name: str, *, union=False) -> int:
        return self._add("FWD", name, 0, 0, kflag=union)

    def typedef(self, name: str, target: int) -> int:
        return self._add("TYPEDEF", name, 0, target)

    def volatile(self, target: int) -> int:
        return self._add("VOLATILE", "", 0, target)

    def const(self, target: int) -> int:
        return self._add("CONST", "", 0, target)

    def restrict(self, target: int) -> int:
        return self._add("RESTRICT", "", 0, target)

    def type_tag(self, name: str, target: int) -> int:
        return self._add("TYPE_TAG", name, 0, target)

    def func_proto(self, ret: int, params: Sequence[tuple[str, int]]) -> int:
        tail = b"".join(struct.pack("<II", self.string(n), t) for n, t in params)
        return self._add("FUNC_PROTO", "", len(params), ret, tail)

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self._add("FUNC", name, linkage, proto)

    def var(self, name: str, target: int, linkage: int = 1) -> int:
        return self._add("VAR", name, 0, target, struct.pack("<I", linkage))

    def datasec(self, name: str, size: int, entries: Sequence[tuple[int, int, int]]) -> int:
        tail = b"".join(struct.pack("<III", *e) for e in entries)
        return self._add("DATASEC", name, len(entries), size, tail)

    def float_(self, name: str, size: int) -> int:
        return self._add("FLOAT", name, 0, size)

    def decl_tag(self, name: str, target: int, component_idx: int = -1) -> int:
        return self._add("DECL_TAG", name, 0, target, struct.pack("<i", component_idx))

    # -- the blob -------------------------------------------------------------------------
    def build(self, *, magic=0xEB9F, version=1, flags=0, hdr_len=24, gap=0) -> bytes:
        """The blob: header, type section, then (``gap`` bytes later) the string section."""
        types = b"".join(self.records)
        strings = bytes(self.strings)
        header = struct.pack(
            "<HBBIIIII", magic, version, flags, hdr_len, 0, len(types), len(types) + gap,
            len(strings),
        )  # fmt: skip
        header += b"\0" * (hdr_len - 24)
        return header + types + b"\0" * gap + strings
