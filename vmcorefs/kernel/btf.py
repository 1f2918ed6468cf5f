"""The kernel's own types: a BTF parser (``Documentation/bpf/btf.rst``, ``uapi/linux/btf.h``).

Kernels built with ``CONFIG_DEBUG_INFO_BTF`` (every Debian, Fedora and Ubuntu kernel since 5.x)
carry a description of their C types between ``__start_BTF`` and ``__stop_BTF``. With it the
layers above find ``task_struct.tasks``, ``thread.sp`` or ``orc_entry``'s bitfields in the dump
itself, with no vmlinux.

The blob is parsed once: one pass records where each type record starts (the records have
variable length) and checks that every record lies inside the type section. Types are decoded
on demand and kept; member offsets are cached per (type, path). Every reference the parser
follows (type ids, string offsets, member counts) is checked against the blob before use and
every chain it walks (typedefs, qualifiers, nested anonymous members) is bounded, so a corrupt
blob raises :class:`BtfError`, never loops.
"""

from __future__ import annotations

import array
import re
import struct
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import Unavailable, VmcorefsError

# uapi/linux/btf.h --------------------------------------------------------------------------
BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
#: sizeof(struct btf_header): the smallest header this parser accepts.
BTF_HEADER_SIZE = 24

BTF_KIND_UNKN = 0
BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_FWD = 7
BTF_KIND_TYPEDEF = 8
BTF_KIND_VOLATILE = 9
BTF_KIND_CONST = 10
BTF_KIND_RESTRICT = 11
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_FLOAT = 16
BTF_KIND_DECL_TAG = 17
BTF_KIND_TYPE_TAG = 18
BTF_KIND_ENUM64 = 19
NR_BTF_KINDS = 20

KIND_NAMES = {
    BTF_KIND_UNKN: "UNKN",
    BTF_KIND_INT: "INT",
    BTF_KIND_PTR: "PTR",
    BTF_KIND_ARRAY: "ARRAY",
    BTF_KIND_STRUCT: "STRUCT",
    BTF_KIND_UNION: "UNION",
    BTF_KIND_ENUM: "ENUM",
    BTF_KIND_FWD: "FWD",
    BTF_KIND_TYPEDEF: "TYPEDEF",
    BTF_KIND_VOLATILE: "VOLATILE",
    BTF_KIND_CONST: "CONST",
    BTF_KIND_RESTRICT: "RESTRICT",
    BTF_KIND_FUNC: "FUNC",
    BTF_KIND_FUNC_PROTO: "FUNC_PROTO",
    BTF_KIND_VAR: "VAR",
    BTF_KIND_DATASEC: "DATASEC",
    BTF_KIND_FLOAT: "FLOAT",
    BTF_KIND_DECL_TAG: "DECL_TAG",
    BTF_KIND_TYPE_TAG: "TYPE_TAG",
    BTF_KIND_ENUM64: "ENUM64",
}

# BTF_INT_ENCODING() bits
BTF_INT_SIGNED = 1 << 0
BTF_INT_CHAR = 1 << 1
BTF_INT_BOOL = 1 << 2

#: Bytes after ``struct btf_type`` for kinds with a fixed tail (the rest have none, or
#: ``vlen`` entries of the size in _VLEN_ENTRY).
_FIXED_TAIL = {BTF_KIND_INT: 4, BTF_KIND_ARRAY: 12, BTF_KIND_VAR: 4, BTF_KIND_DECL_TAG: 4}
_VLEN_ENTRY = {
    BTF_KIND_STRUCT: 12,  # struct btf_member
    BTF_KIND_UNION: 12,
    BTF_KIND_ENUM: 8,  # struct btf_enum
    BTF_KIND_FUNC_PROTO: 8,  # struct btf_param
    BTF_KIND_DATASEC: 12,  # struct btf_var_secinfo
    BTF_KIND_ENUM64: 12,  # struct btf_enum64
}
#: Kinds whose ``size_type`` is a type id (the others: a size, or unused).
_REFERS = frozenset(
    {
        BTF_KIND_PTR,
        BTF_KIND_TYPEDEF,
        BTF_KIND_VOLATILE,
        BTF_KIND_CONST,
        BTF_KIND_RESTRICT,
        BTF_KIND_FUNC,
        BTF_KIND_FUNC_PROTO,
        BTF_KIND_VAR,
        BTF_KIND_DECL_TAG,
        BTF_KIND_TYPE_TAG,
    }
)
#: Kinds that only qualify or rename another type: resolved through to find a layout.
_MODIFIERS = frozenset(
    {BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG}
)
#: The kernel's own bound on such chains (kernel/bpf/btf.c MAX_RESOLVE_DEPTH).
MAX_RESOLVE_DEPTH = 32
#: How deep anonymous struct/union members are searched for a member name.
MAX_ANON_DEPTH = 32
#: At most this many types (the kernel's BTF_MAX_TYPE is 2**20 - 1).
BTF_MAX_TYPE = 0xFFFFF
#: A vmlinux BTF is a few MiB (Debian 6.1: 4.3 MiB); a larger span is not a BTF blob.
BTF_MAX_SIZE = 64 << 20
#: x86_64: pointers (BTF_KIND_PTR has no size of its own).
POINTER_SIZE = 8

_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")
_MEMBER = struct.Struct("<III")
_ENUM = struct.Struct("<Ii")
_ENUM64 = struct.Struct("<III")
_PARAM = struct.Struct("<II")
_ARRAY = struct.Struct("<III")

_KIND_PREFIX = {"struct": BTF_KIND_STRUCT, "union": BTF_KIND_UNION, "enum": BTF_KIND_ENUM}
_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


class BtfError(VmcorefsError):
    """The blob is not valid BTF, or a name/path asked for does not exist in it."""


@dataclass(frozen=True)
class BtfHeader:
    """``struct btf_header``; offsets are relative to the end of the header (``hdr_len``)."""

    magic: int
    version: int
    flags: int
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int


@dataclass(frozen=True)
class Member:
    """A struct/union member (or a resolved path): where it lies, in bits from the outer start.

    ``bitfield_size`` is 0 for an ordinary member; ``bit_offset`` then is a multiple of 8 for
    every member the C compiler lays out.
    """

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0

    @property
    def offset(self) -> int:
        """The byte offset; :class:`BtfError` for a bitfield not starting on a byte."""
        if self.bit_offset % 8:
            raise BtfError(f"member {self.name!r} starts at bit {self.bit_offset}, not on a byte")
        return self.bit_offset // 8


@dataclass(frozen=True)
class EnumValue:
    name: str
    value: int


@dataclass(frozen=True)
class Param:
    name: str
    type_id: int


@dataclass(frozen=True)
class BtfType:
    """One decoded ``struct btf_type`` and its kind-specific tail.

    ``size`` is set for INT, STRUCT, UNION, ENUM, ENUM64, FLOAT and DATASEC; ``ref`` (a type
    id) for PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG, FUNC, FUNC_PROTO (the return
    type), VAR and DECL_TAG (the tagged type).
    """

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size: int | None = None
    ref: int | None = None
    # INT
    int_encoding: int = 0
    int_offset: int = 0
    int_bits: int = 0
    # ARRAY
    elem_type: int = 0
    index_type: int = 0
    nelems: int = 0
    # STRUCT, UNION
    members: tuple[Member, ...] = ()
    # ENUM, ENUM64
    values: tuple[EnumValue, ...] = ()
    # FUNC_PROTO
    params: tuple[Param, ...] = ()
    # VAR: linkage; FUNC: linkage (in vlen); DECL_TAG: component_idx
    linkage: int = 0
    component_idx: int = -1
    # DATASEC: (var type id, offset, size)
    secinfo: tuple[tuple[int, int, int], ...] = ()

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, str(self.kind))

    @property
    def signed(self) -> bool:
        """INT: BTF_INT_SIGNED; ENUM/ENUM64: ``kind_flag`` (Linux 6.0+: signed values)."""
        if self.kind == BTF_KIND_INT:
            return bool(self.int_encoding & BTF_INT_SIGNED)
        return self.kind_flag


def parse_header(data: bytes) -> BtfHeader:
    """Check and decode the header; every section must lie inside ``data``."""
    if len(data) < BTF_HEADER_SIZE:
        raise BtfError(f"blob of {len(data)} bytes is shorter than a BTF header")
    hdr = BtfHeader(*_HEADER.unpack_from(data, 0))
    if hdr.magic != BTF_MAGIC:
        if hdr.magic == 0x9FEB:
            raise BtfError("big-endian BTF (magic 0xeB9F byte-swapped)")
        raise BtfError(f"bad magic {hdr.magic:#06x} (expected {BTF_MAGIC:#06x})")
    if hdr.version != BTF_VERSION:
        raise BtfError(f"unsupported BTF version {hdr.version}")
    if hdr.hdr_len < BTF_HEADER_SIZE or hdr.hdr_len > len(data):
        raise BtfError(f"header length {hdr.hdr_len} outside 24..{len(data)}")
    body = len(data) - hdr.hdr_len
    for what, off, length in (
        ("type", hdr.type_off, hdr.type_len),
        ("string", hdr.str_off, hdr.str_len),
    ):
        if off + length > body:
            raise BtfError(
                f"{what} section {off:#x}+{length:#x} runs past the end of the blob ({body:#x})"
            )
    if hdr.type_off % 4 or hdr.type_len % 4:
        raise BtfError("type section is not 4-byte aligned")
    if hdr.type_off < hdr.str_off < hdr.type_off + hdr.type_len or (
        hdr.str_off < hdr.type_off < hdr.str_off + hdr.str_len
    ):
        raise BtfError("type and string sections overlap")
    if hdr.str_len == 0:
        raise BtfError("empty string section")
    return hdr


class Btf:
    """A parsed BTF blob: types by id and by name, member offsets by path."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.header = hdr = parse_header(self.data)
        base = hdr.hdr_len
        self._types_start = base + hdr.type_off
        self._types_end = self._types_start + hdr.type_len
        self._str_start = base + hdr.str_off
        self._str_end = self._str_start + hdr.str_len
        strings = self.data[self._str_start : self._str_end]
        if strings[:1] != b"\0" or strings[-1:] != b"\0":
            raise BtfError("string section must start and end with a NUL")
        self._strings = strings
        #: type id -> offset of its record in ``data``; id 0 is void and has none. An array:
        #: a list of ~100k ints held ~4 MiB for as long as the dump is mounted.
        self._offsets = array.array("I" if len(self.data) < 1 << 32 else "Q", [0])
        self._name_offs = array.array("I", [0])
        self._index()
        self._types: dict[int, BtfType] = {}
        self._named: dict[str, list[int]] = {}
        self._members: dict[tuple[int, str], Member] = {}
        self._enumerators: dict[str, int] | None = None
        self._lock = threading.Lock()

    # -- indexing ---------------------------------------------------------------------------
    def _index(self) -> None:
        """Record each type's offset; check kinds and that each record fits (bounded)."""
        base = self._types_start
        words: memoryview | array.array = memoryview(self.data)[base : self._types_end].cast("I")
        if sys.byteorder != "little":  # the blob is little-endian (x86_64)
            words = array.array("I", self.data[base : self._types_end])
            words.byteswap()
        nwords = len(words)
        # words after struct btf_type: 3 + fixed part, and per vlen entry; None: unknown kind
        steps: list[tuple[int, int] | None] = [None] * 32
        for k in range(1, NR_BTF_KINDS):
            steps[k] = (3 + _FIXED_TAIL.get(k, 0) // 4, _VLEN_ENTRY.get(k, 0) // 4)
        starts: list[int] = []  # word index of each record
        add = starts.append
        i = 0
        try:
            while i < nwords:  # the hot loop: ~100k records; checks that need not be here follow
                info = words[i + 1]
                fixed, per = steps[info >> 24 & 0x1F]  # type: ignore[misc]
                add(i)
                i += fixed + per * (info & 0xFFFF)
        except IndexError:
            raise BtfError(
                f"type [{len(starts) + 1}] runs past the end of the type section"
            ) from None
        except TypeError:
            kind = words[i + 1] >> 24 & 0x1F
            raise BtfError(f"type [{len(starts) + 1}] has unknown kind {kind}") from None
        if i != nwords:
            raise BtfError(f"type [{len(starts)}] runs past the end of the type section")
        if len(starts) > BTF_MAX_TYPE:
            raise BtfError(f"more than {BTF_MAX_TYPE} types")
        names = array.array("I", [0])
        names.extend(words[j] for j in starts)
        if max(names) >= len(self._strings):
            tid = next(t for t, off in enumerate(names) if off >= len(self._strings))
            raise BtfError(f"type [{tid}] name offset {names[tid]:#x} is past strings")
        self._offsets.extend(base + 4 * j for j in starts)
        self._name_offs = names

    @property
    def count(self) -> int:
        """Number of types, void (id 0) included."""
        return len(self._offsets)

    def string(self, off: int) -> str:
        """The NUL-terminated string at ``off`` in the string section."""
        if not 0 <= off < len(self._strings):
            raise BtfError(f"string offset {off:#x} is past the string section")
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode("utf-8", "replace")

    def _check_id(self, type_id: int, what: str) -> int:
        if not 0 <= type_id < len(self._offsets):
            raise BtfError(f"{what} refers to type [{type_id}], past the last type")
        return type_id

    # -- decoding -----------------------------------------------------------------------
    def type(self, type_id: int) -> BtfType:
        """The decoded type ``type_id`` (0 is void: kind UNKN)."""
        t = self._types.get(type_id)
        if t is None:
            self._check_id(type_id, "lookup")
            t = self._decode(type_id)
            with self._lock:
                self._types[type_id] = t
        return t

    def _decode(self, tid: int) -> BtfType:
        if tid == 0:
            return BtfType(0, BTF_KIND_UNKN, "void", 0, False)
        data, pos = self.data, self._offsets[tid]
        name_off, info, size_type = _TYPE.unpack_from(data, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        name = self.string(name_off)
        tail = pos + 12
        common = {"id": tid, "kind": kind, "name": name, "vlen": vlen, "kind_flag": kflag}
        what = f"type [{tid}] {KIND_NAMES[kind]} {name!r}"
        if kind in _REFERS:
            common["ref"] = self._check_id(size_type, what)
        else:
            common["size"] = size_type
        if kind == BTF_KIND_INT:
            (val,) = _U32.unpack_from(data, tail)
            enc, off, bits = (val >> 24) & 0x0F, (val >> 16) & 0xFF, val & 0xFF
            if bits > 128 or off + bits > size_type * 8:
                raise BtfError(f"{what}: {bits} bits at offset {off} do not fit {size_type} bytes")
            return BtfType(**common, int_encoding=enc, int_offset=off, int_bits=bits)
        if kind == BTF_KIND_ARRAY:
            elem, index, nelems = _ARRAY.unpack_from(data, tail)
            self._check_id(elem, what)
            self._check_id(index, what)
            return BtfType(**common, elem_type=elem, index_type=index, nelems=nelems)
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            members = []
            for i in range(vlen):
                m_name, m_type, m_off = _MEMBER.unpack_from(data, tail + 12 * i)
                self._check_id(m_type, what)
                bits = 0
                if kflag:  # BTF_MEMBER_BITFIELD_SIZE / BTF_MEMBER_BIT_OFFSET
                    bits, m_off = m_off >> 24, m_off & 0xFFFFFF
                if m_off + bits > size_type * 8:
                    raise BtfError(f"{what}: a member at bit {m_off} lies outside it")
                members.append(Member(self.string(m_name), m_type, m_off, bits))
            return BtfType(**common, members=tuple(members))
        if kind == BTF_KIND_ENUM:
            values = []
            for i in range(vlen):
                e_name, e_val = _ENUM.unpack_from(data, tail + 8 * i)
                if not kflag:  # unsigned enum: the s32 reads as u32
                    e_val &= 0xFFFFFFFF
                values.append(EnumValue(self.string(e_name), e_val))
            return BtfType(**common, values=tuple(values))
        if kind == BTF_KIND_ENUM64:
            values = []
            for i in range(vlen):
                e_name, lo, hi = _ENUM64.unpack_from(data, tail + 12 * i)
                val = (hi << 32) | lo
                if kflag and val >> 63:
                    val -= 1 << 64
                values.append(EnumValue(self.string(e_name), val))
            return BtfType(**common, values=tuple(values))
        if kind == BTF_KIND_FUNC_PROTO:
            params = []
            for i in range(vlen):
                p_name, p_type = _PARAM.unpack_from(data, tail + 8 * i)
                self._check_id(p_type, what)
                params.append(Param(self.string(p_name), p_type))
            return BtfType(**common, params=tuple(params))
        if kind == BTF_KIND_FUNC:
            return BtfType(**common, linkage=vlen)
        if kind == BTF_KIND_VAR:
            (linkage,) = _U32.unpack_from(data, tail)
            return BtfType(**common, linkage=linkage)
        if kind == BTF_KIND_DECL_TAG:
            (idx,) = _S32.unpack_from(data, tail)
            return BtfType(**common, component_idx=idx)
        if kind == BTF_KIND_DATASEC:
            infos = []
            for i in range(vlen):
                v_type, v_off, v_size = _ARRAY.unpack_from(data, tail + 12 * i)
                self._check_id(v_type, what)
                infos.append((v_type, v_off, v_size))
            return BtfType(**common, secinfo=tuple(infos))
        # PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FLOAT, TYPE_TAG: no tail
        return BtfType(**common)

    def types(self) -> Iterator[BtfType]:
        """Every type, in id order (void excluded)."""
        for tid in range(1, len(self._offsets)):
            yield self.type(tid)

    # -- names --------------------------------------------------------------------------
    def _ids_named(self, name: str) -> list[int]:
        """Ids of the types whose name is ``name``: the name's offsets in the string section
        (usually one: pahole deduplicates strings), then the types that use them."""
        cached = self._named.get(name)
        if cached is not None:
            return cached
        needle = b"\0" + name.encode() + b"\0"
        strings, name_offs = self._strings, self._name_offs
        ids: list[int] = []
        pos = strings.find(needle)
        while pos >= 0:  # bounded: each step moves forward in the string section
            tid = 0
            while True:  # every type named by the string at pos + 1 (a C-speed scan)
                try:
                    tid = name_offs.index(pos + 1, tid + 1)
                except ValueError:
                    break
                ids.append(tid)
            pos = strings.find(needle, pos + 1)
        ids.sort()
        with self._lock:
            self._named[name] = ids
        return ids

    def find_all(self, name: str, kind: int | None = None) -> list[int]:
        """Ids of the types called ``name``; ``"struct x"``, ``"union x"``, ``"enum x"``
        select the kind (``enum`` also matches ENUM64), else ``kind`` does."""
        prefix, _, rest = name.partition(" ")
        if rest and prefix in _KIND_PREFIX:
            name, kind = rest.strip(), _KIND_PREFIX[prefix]
        elif prefix == "typedef" and rest:
            name, kind = rest.strip(), BTF_KIND_TYPEDEF
        ids = self._ids_named(name)
        if kind is None:
            return list(ids)
        kinds = {kind, BTF_KIND_ENUM64} if kind == BTF_KIND_ENUM else {kind}
        return [i for i in ids if self.type(i).kind in kinds]

    def find(self, name: str, kind: int | None = None) -> BtfType:
        """The type called ``name`` (see :meth:`find_all`).

        A struct or union that is only forward-declared somewhere is skipped for its
        definition; among several definitions the first (lowest id) is taken, as
        ``btf__find_by_name_kind`` does.
        """
        ids = self.find_all(name, kind)
        if not ids:
            raise BtfError(f"no type {name!r} in BTF")
        for tid in ids:
            t = self.type(tid)
            if t.kind != BTF_KIND_FWD:
                return t
        raise BtfError(f"{name!r} is only forward-declared in BTF")

    # -- resolution and layout -------------------------------------------------------------
    def resolve(self, type_id: int) -> BtfType:
        """The type behind typedefs and const/volatile/restrict/type_tag qualifiers."""
        t = self.type(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind not in _MODIFIERS:
                return t
            t = self.type(t.ref or 0)
        raise BtfError(f"type [{type_id}]: more than {MAX_RESOLVE_DEPTH} typedefs/qualifiers")

    def sizeof(self, type_id: int | BtfType) -> int:
        """Size in bytes, as C ``sizeof`` gives it (arrays: elements × element size)."""
        t = type_id if isinstance(type_id, BtfType) else self.type(type_id)
        total_elems = 1
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind in _MODIFIERS:
                t = self.type(t.ref or 0)
                continue
            if t.kind == BTF_KIND_ARRAY:
                total_elems *= t.nelems
                t = self.type(t.elem_type)
                continue
            if t.kind == BTF_KIND_PTR:
                return total_elems * POINTER_SIZE
            if t.kind in (
                BTF_KIND_INT,
                BTF_KIND_STRUCT,
                BTF_KIND_UNION,
                BTF_KIND_ENUM,
                BTF_KIND_ENUM64,
                BTF_KIND_FLOAT,
                BTF_KIND_DATASEC,
            ):
                return total_elems * (t.size or 0)
            if t.kind == BTF_KIND_VAR:
                t = self.type(t.ref or 0)
                continue
            raise BtfError(f"type [{t.id}] {t.kind_name} {t.name!r} has no size")
        raise BtfError(f"type [{type_id}]: nesting deeper than {MAX_RESOLVE_DEPTH}")

    def _struct(self, where: str | int | BtfType) -> BtfType:
        if isinstance(where, str):
            t = self.find(where)
        elif isinstance(where, int):
            t = self.type(where)
        else:
            t = where
        t = self.resolve(t.id)
        if t.kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            raise BtfError(f"type [{t.id}] {t.kind_name} {t.name!r} is not a struct or union")
        return t

    def _bitfield(self, m: Member) -> Member:
        """A member of a struct without ``kind_flag``: its bitfield is in the int type."""
        if m.bitfield_size:
            return m
        t = self.resolve(m.type_id)
        if t.kind == BTF_KIND_INT and (t.int_offset or t.int_bits != (t.size or 0) * 8):
            return Member(m.name, m.type_id, m.bit_offset + t.int_offset, t.int_bits)
        return m

    def _find_member(self, st: BtfType, name: str, depth: int = 0) -> Member | None:
        """``name`` among ``st``'s members, searched through anonymous struct/union members
        (C11), offset relative to ``st``."""
        if depth > MAX_ANON_DEPTH:
            raise BtfError(f"anonymous members nested deeper than {MAX_ANON_DEPTH}")
        for m in st.members:
            if m.name == name:
                return self._bitfield(m)
        for m in st.members:
            if m.name:
                continue
            inner = self.resolve(m.type_id)
            if inner.kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                continue
            found = self._find_member(inner, name, depth + 1)
            if found is not None:
                return Member(
                    found.name,
                    found.type_id,
                    m.bit_offset + found.bit_offset,
                    found.bitfield_size,
                )
        return None

    def member(self, where: str | int | BtfType, path: str) -> Member:
        """The member at ``path`` (``"tasks"``, ``"thread.sp"``, ``"arch.orc_unwind_ip"``,
        ``"mem[1].base"``) of a struct or union, with its offset from the outer start.

        Results are cached; :class:`BtfError` names the part of the path that is missing.
        """
        st = self._struct(where)
        key = (st.id, path)
        cached = self._members.get(key)
        if cached is not None:
            return cached
        bit_offset = 0
        cur = st
        found: Member | None = None
        parts = path.split(".")
        if len(parts) > MAX_RESOLVE_DEPTH:
            raise BtfError(f"member path {path!r} is too long")
        for i, part in enumerate(parts):
            match = _PATH_PART.fullmatch(part)
            if not match:
                raise BtfError(f"bad member path {path!r}")
            if i:
                if found is None or found.bitfield_size:
                    raise BtfError(f"{'.'.join(parts[:i])} is a bitfield")
                cur = self.resolve(found.type_id)
                if cur.kind not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                    raise BtfError(
                        f"{st.name}.{'.'.join(parts[:i])} is {cur.kind_name}, not a struct"
                    )
            m = self._find_member(cur, match.group(1))
            if m is None:
                owner = f"{'union' if cur.kind == BTF_KIND_UNION else 'struct'} {cur.name}"
                raise BtfError(f"{owner or 'anonymous'} has no member {match.group(1)!r}")
            width = m.bitfield_size or 8 * self.sizeof(m.type_id)
            if m.bit_offset + width > 8 * (cur.size or 0):
                raise BtfError(
                    f"{cur.name or 'anonymous'}.{m.name} ends past the {cur.size} bytes of its type"
                )
            bit_offset += m.bit_offset
            type_id = m.type_id
            for index in re.findall(r"\[(\d+)\]", match.group(2)):
                arr = self.resolve(type_id)
                if arr.kind != BTF_KIND_ARRAY:
                    raise BtfError(f"{match.group(1)} is not an array")
                if int(index) >= arr.nelems:
                    raise BtfError(f"{part}: index past {arr.nelems} elements")
                bit_offset += int(index) * self.sizeof(arr.elem_type) * 8
                type_id = arr.elem_type
            bits = m.bitfield_size if type_id == m.type_id else 0
            found = Member(part, type_id, bit_offset, bits)
        assert found is not None
        with self._lock:
            self._members[key] = found
        return found

    def offsetof(self, where: str | int | BtfType, path: str) -> int:
        """``offsetof(where, path)`` in bytes: ``btf.offsetof("struct task_struct", "tasks")``."""
        return self.member(where, path).offset

    def has_member(self, where: str | int | BtfType, path: str) -> bool:
        try:
            self.member(where, path)
        except BtfError:
            return False
        return True

    def member_size(self, where: str | int | BtfType, path: str) -> int:
        return self.sizeof(self.member(where, path).type_id)

    def enum_value(self, enum: str, name: str) -> int:
        """The value of enumerator ``name``, searched in the enum called ``enum``."""
        for v in self.find(enum, BTF_KIND_ENUM).values:
            if v.name == name:
                return v.value
        raise BtfError(f"{enum} has no enumerator {name!r}")

    def enumerator(self, name: str) -> int:
        """The value of enumerator ``name`` in whichever enum declares it (lowest id first):
        for the kernel's anonymous ``enum { TASK_COMM_LEN = 16, ... }`` constants."""
        index = self._enumerators
        if index is None:
            index = {}
            for tid in range(1, len(self._offsets)):
                info = _U32.unpack_from(self.data, self._offsets[tid] + 4)[0]
                if (info >> 24) & 0x1F in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
                    for v in self.type(tid).values:
                        index.setdefault(v.name, v.value)
            with self._lock:
                self._enumerators = index
        if name not in index:
            raise BtfError(f"no enumerator {name!r} in BTF")
        return index[name]

    def type_name(self, type_id: int) -> str:
        """A C-like name for messages: ``struct task_struct *``, ``const char [16]``."""
        stars, dims = "", ""
        t = self.type(type_id)
        quals: list[str] = []
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind == BTF_KIND_PTR:
                stars += "*"
            elif t.kind == BTF_KIND_ARRAY:
                dims += f"[{t.nelems}]"
                t = self.type(t.elem_type)
                continue
            elif t.kind in (BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT):
                quals.append(KIND_NAMES[t.kind].lower())
            elif t.kind != BTF_KIND_TYPE_TAG:
                break
            t = self.type(t.ref or 0)
        if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_ENUM64):
            word = {BTF_KIND_STRUCT: "struct", BTF_KIND_UNION: "union"}.get(t.kind, "enum")
            base = f"{word} {t.name or '(anon)'}"
        elif t.kind == BTF_KIND_FWD:
            base = f"{'union' if t.kind_flag else 'struct'} {t.name}"
        elif t.kind == BTF_KIND_FUNC_PROTO:
            base = "(function)"
        else:
            base = t.name or "(anon)"
        text = " ".join([*quals, base])
        if stars:
            text += " " + stars
        if dims:
            text += " " + dims
        return text


def read_bits(data: bytes, bit_offset: int, bits: int, signed: bool = False) -> int:
    """The ``bits``-wide little-endian bitfield at ``bit_offset`` of ``data`` (x86_64 layout:
    bit 0 is the least significant bit of byte 0)."""
    first = bit_offset // 8
    last = (bit_offset + bits + 7) // 8
    if bits <= 0 or last > len(data):
        raise BtfError(f"bitfield {bit_offset}+{bits} is outside {len(data)} bytes")
    value = int.from_bytes(data[first:last], "little") >> (bit_offset % 8)
    value &= (1 << bits) - 1
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value


# -- the kernel's blob -------------------------------------------------------------------


def btf_bounds(symbols) -> tuple[int, int]:
    """``(__start_BTF, __stop_BTF)`` from the symbol table, checked; else Unavailable."""
    start = symbols.get("__start_BTF")
    stop = symbols.get("__stop_BTF")
    if start is None or stop is None:
        why = getattr(symbols, "kallsyms_unavailable", None)
        if why:  # the names are unknown, which says nothing of BTF
            raise Unavailable(symbols.why_missing("__start_BTF/__stop_BTF"))
        raise Unavailable("the symbol table has no __start_BTF/__stop_BTF")
    if not start < stop <= start + BTF_MAX_SIZE:
        raise Unavailable(f"__start_BTF {start:#x} .. __stop_BTF {stop:#x} is not a BTF span")
    return start, stop


#: ``struct btf_header``'s first word as a vmlinux BTF has it: magic, version 1, flags 0.
_HEADER_START = struct.pack("<HBB", BTF_MAGIC, BTF_VERSION, 0)
#: A header longer than this is not one the kernel writes (it is 24 bytes since 4.18).
BTF_MAX_HEADER = 256
#: At most this many headers are parsed before the search gives up (bounded time).
MAX_BTF_CANDIDATES = 64


def find_btf(kvirt, vmcoreinfo, symbols, image=None) -> tuple[int, int]:
    """The kernel's BTF found by its header: where the symbol table has no ``__start_BTF``
    (a kernel without CONFIG_KALLSYMS_ALL, or symbols found without it), the blob is looked
    for in ``[__start_rodata, __end_rodata)`` (else the whole image). A header counts when
    its sections lie in the dump, the blob parses whole and it describes ``struct
    task_struct`` (the kernel's own types; a BPF program's BTF embedded in the image does
    not). Unavailable, saying what was scanned, when none does. ``image``: the scan to use
    instead (an :class:`~.kimage.ImageScan`)."""
    from .kimage import ImageScan, kernel_image, read_present

    lo, hi = symbols.get("__start_rodata"), symbols.get("__end_rodata")
    if image is not None:
        pass  # the caller's (a benchmark's) scan
    elif lo is not None and hi is not None and lo < hi <= lo + (1 << 30):
        image = ImageScan(kvirt, lo, hi, hi - 1)  # BTF lies at the end of the read-only data
    else:
        image = kernel_image(kvirt, vmcoreinfo)
    refused: list[str] = []
    for at in image.find(_HEADER_START):
        head = read_present(kvirt, at, BTF_HEADER_SIZE)
        if len(head) < BTF_HEADER_SIZE:
            continue
        hdr = BtfHeader(*_HEADER.unpack_from(head, 0))
        if not BTF_HEADER_SIZE <= hdr.hdr_len <= BTF_MAX_HEADER:
            continue
        size = hdr.hdr_len + max(hdr.type_off + hdr.type_len, hdr.str_off + hdr.str_len)
        if size > BTF_MAX_SIZE:
            continue
        data = read_present(kvirt, at, size)
        try:
            if len(data) != size:
                raise BtfError(f"only {len(data)} of its {size} bytes are in the dump")
            Btf(data).find("task_struct", BTF_KIND_STRUCT)
        except BtfError as exc:
            refused.append(f"{at:#x}: {exc}")
            if len(refused) >= MAX_BTF_CANDIDATES:
                break
            continue
        return at, at + size
    what = f"BTF: no 0xeB9F header in the kernel's read-only data ({image.scanned_mib} MiB scanned"
    if refused:
        what += f"; {len(refused)} header(s) refused, the first at {refused[0]}"
    raise Unavailable(what + "; the symbol table has no __start_BTF)")


def kernel_btf_bounds(kvirt, vmcoreinfo, symbols) -> tuple[int, int]:
    """Where the kernel's BTF lies: ``__start_BTF``/``__stop_BTF``, else found by its header."""
    try:
        return btf_bounds(symbols)
    except Unavailable:
        if symbols.get("__start_BTF") is not None or symbols.get("__stop_BTF") is not None:
            raise  # the symbols are there but wrong: not a case for a search
        return find_btf(kvirt, vmcoreinfo, symbols)


def load_btf(kvirt, symbols, bounds: tuple[int, int] | None = None) -> Btf:
    """Read and parse the kernel's BTF from memory (at ``bounds``, else at the symbols'
    ``__start_BTF``/``__stop_BTF``); Unavailable with the reason otherwise."""
    start, stop = bounds if bounds is not None else btf_bounds(symbols)
    data = kvirt.read(start, stop - start)
    if len(data) != stop - start:
        raise Unavailable(
            f"BTF at {start + len(data):#x} is not in the dump "
            f"({len(data)} of {stop - start} bytes present)"
        )
    try:
        return Btf(data)
    except BtfError as exc:
        raise Unavailable(f"BTF at {start:#x} fails validation: {exc}") from None
