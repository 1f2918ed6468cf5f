"""The kernel's own kallsyms tables, decoded from the dump: located by VMCOREINFO (Linux 6.0+)
or, on older kernels, found in the kernel image (:mod:`.kallsyms_finder`).

Since 6.0 (``kernel/crash_core.c``, commit 5fd8fea935a1) VMCOREINFO gives the addresses of
``kallsyms_names``, ``kallsyms_num_syms``, ``kallsyms_token_table``, ``kallsyms_token_index`` and
either ``kallsyms_offsets`` (+ ``kallsyms_relative_base``) or ``kallsyms_addresses``. The tables
are written by ``scripts/kallsyms.c``:

* ``kallsyms_token_table``: 256 NUL-terminated tokens; ``kallsyms_token_index``: 256 ``u16``
  offsets into it.
* ``kallsyms_names``: per symbol a length (one byte; since 6.1, commit 73bbb94466fd, two bytes
  ULEB128 when bit 7 is set) and that many token numbers. The expansion's first character is the
  type letter (``T``, ``t``, ``D`` ...), the rest is the name.
* addresses, in one of four encodings (see :data:`ENCODINGS`); which one a kernel uses is a
  build option, so the decoder tries each one the keys allow and keeps the one that reproduces
  ``SYMBOL(_stext)``.

Everything is read in a few large reads (one per table), each bounded by ``kallsyms_num_syms``
and by the addresses of the neighbouring tables.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..memory.x86_64 import MASK64
from ..vmcoreinfo import VmcoreInfo

#: include/linux/kallsyms.h: the longest name (type letter and NUL included) since 6.1 (it was
#: 128 before); a compressed name is never longer, as every token is at least one character.
KSYM_NAME_LEN = 512
#: Sanity bound on kallsyms_num_syms: big kernels have ~250k symbols.
MAX_NUM_SYMS = 1 << 22
#: The tables VMCOREINFO may name (crash_core.c); used as each other's bounds.
TABLE_KEYS = (
    "kallsyms_names",
    "kallsyms_num_syms",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "kallsyms_addresses",
    "kallsyms_markers",
    "kallsyms_seqs_of_names",
)

# Address encodings (kernel/kallsyms.c, kallsyms_sym_address()):
#: !CONFIG_KALLSYMS_BASE_RELATIVE: ``kallsyms_addresses[i]``, absolute 64-bit values.
ABSOLUTE = "absolute"
#: CONFIG_KALLSYMS_BASE_RELATIVE without ABSOLUTE_PERCPU (and every kernel 6.15..6.x, where
#: commit 01157ddc58dc removed ABSOLUTE_PERCPU): ``kallsyms_relative_base + (u32)offsets[i]``.
RELATIVE = "relative"
#: BASE_RELATIVE with CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86_64 SMP before 6.15): an offset
#: ``>= 0`` is the absolute value (per-CPU symbols), a negative one is
#: ``kallsyms_relative_base - 1 - offsets[i]``.
ABSOLUTE_PERCPU = "absolute-percpu"
#: Linux 7.0 and later: each offset is relative to its own place,
#: ``&kallsyms_offsets[i] + (s32)offsets[i]`` (no kallsyms_relative_base).
PLACE_RELATIVE = "place-relative"
ENCODINGS = (ABSOLUTE, RELATIVE, ABSOLUTE_PERCPU, PLACE_RELATIVE)


@dataclass(frozen=True)
class KallsymsTable:
    """The decoded core symbol table, in the kernel's own order (index order)."""

    names: list[str]
    types: str  #: one type letter per symbol
    addresses: list[int]
    encoding: str  #: one of :data:`ENCODINGS`
    #: Where the tables were located: "VMCOREINFO" (6.0+) or "the kernel image" (found by
    #: their structure, :mod:`.kallsyms_finder`).
    origin: str = "VMCOREINFO"
    #: The tables' addresses by kernel symbol name (``kallsyms_names`` ...).
    locations: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


def _bound(locations: dict[str, int], start: int, limit: int) -> int:
    """The end of a table at ``start``: the nearest other kallsyms table above it, or ``limit``."""
    above = [a for a in locations.values() if a > start]
    return min([start + limit, *above])


def _read(kvirt: AddressSpace, key: str, addr: int, size: int) -> bytes:
    try:
        return kvirt.read_exact(addr, size)
    except FaultError as exc:
        raise Unavailable(f"{key} at {addr:#x} (+{size:#x}) is not in the dump: {exc}") from None


def decode_tokens(index_data: bytes, table_data: bytes) -> list[bytes]:
    """The 256 tokens, from ``kallsyms_token_index`` (256 ``u16``) and the token table bytes."""
    if len(index_data) != 512:
        raise Unavailable("kallsyms_token_index is not 256 entries")
    tokens = []
    for off in struct.unpack("<256H", index_data):
        end = table_data.find(b"\0", off)
        if end < 0:
            raise Unavailable(f"kallsyms_token_table: token at offset {off} is not terminated")
        tokens.append(table_data[off:end])
    return tokens


def decode_names(data: bytes, count: int, tokens: list[bytes]) -> tuple[list[str], str]:
    """Expand ``count`` compressed names from ``data``: (names, type letters).

    Bounded by ``count`` and by ``len(data)``; a table that ends early or holds an empty entry
    is corrupt (Unavailable), never guessed at.
    """
    expanded: list[bytes] = []
    append = expanded.append
    tok = tokens.__getitem__
    join = b"".join
    pos = 0
    size = len(data)
    try:
        for _ in range(count):
            length = data[pos]
            if length & 0x80:  # 6.1+: a two-byte ULEB128 length
                length = (length & 0x7F) | (data[pos + 1] << 7)
                pos += 2
            else:
                pos += 1
            end = pos + length
            if length == 0 or end > size:
                raise IndexError
            append(join(map(tok, data[pos:end])))
            pos = end
    except IndexError:
        raise Unavailable(
            f"kallsyms_names is corrupt or cut short at symbol {len(expanded)} of {count} "
            f"(offset {pos:#x})"
        ) from None
    # Tokens cannot hold a NUL (the token table is NUL-separated): one decode, one split.
    text = b"\0".join(expanded).decode("utf-8", "surrogateescape")
    entries = text.split("\0")
    if any(not e for e in entries):
        raise Unavailable("kallsyms_names holds an empty symbol")
    types = "".join([e[0] for e in entries])
    names = [e[1:] for e in entries]
    return names, types


def _addresses(encoding: str, raw: list[int], base: int | None, place: int) -> list[int]:
    """Every symbol's address under ``encoding`` (``raw``: the s32 offsets or u64 addresses)."""
    if encoding == ABSOLUTE:
        return raw
    if encoding == RELATIVE:
        assert base is not None
        return [(base + (o & 0xFFFFFFFF)) & MASK64 for o in raw]
    if encoding == ABSOLUTE_PERCPU:
        assert base is not None
        return [o if o >= 0 else (base - 1 - o) & MASK64 for o in raw]
    if encoding == PLACE_RELATIVE:
        return [(place + 4 * i + o) & MASK64 for i, o in enumerate(raw)]
    raise ValueError(encoding)


def _address_of(encoding: str, raw: list[int], i: int, base: int | None, place: int) -> int:
    return _addresses(encoding, raw[i : i + 1], base, place + 4 * i)[0]


#: The keys that locate every table the decoder needs (one of the address arrays besides).
NEEDED_KEYS = (
    "kallsyms_names",
    "kallsyms_num_syms",
    "kallsyms_token_table",
    "kallsyms_token_index",
)


def located_tables(vmcoreinfo: VmcoreInfo) -> dict[str, int] | None:
    """Where VMCOREINFO's keys (Linux 6.0+) put the tables, or None where they do not say
    enough (an older kernel, or a note without those keys: :mod:`.kallsyms_finder` then
    finds them in the kernel image)."""
    loc = {k: a for k in TABLE_KEYS if (a := vmcoreinfo.symbol(k)) is not None}
    if any(k not in loc for k in NEEDED_KEYS) or (
        "kallsyms_offsets" not in loc and "kallsyms_addresses" not in loc
    ):
        return None
    return loc


def read_located(kvirt: AddressSpace, vmcoreinfo: VmcoreInfo, loc: dict[str, int]) -> KallsymsTable:
    """Decode the kallsyms tables at ``loc`` (:func:`located_tables`); Unavailable (with the
    reason) when they cannot be."""
    count = struct.unpack("<I", _read(kvirt, "kallsyms_num_syms", loc["kallsyms_num_syms"], 4))[0]
    if not 0 < count <= MAX_NUM_SYMS:
        raise Unavailable(f"kallsyms_num_syms is {count}: not a plausible symbol count")

    # Tokens: the index (512 bytes), then the table up to its last token's end.
    index_data = _read(kvirt, "kallsyms_token_index", loc["kallsyms_token_index"], 512)
    last = max(struct.unpack("<256H", index_data))
    tt = loc["kallsyms_token_table"]
    tt_end = _bound(loc, tt, last + KSYM_NAME_LEN)
    tokens = decode_tokens(index_data, kvirt.read(tt, tt_end - tt))

    # Names: one read, bounded by the next table above and by count × the longest entry.
    names_at = loc["kallsyms_names"]
    names_end = _bound(loc, names_at, count * (2 + KSYM_NAME_LEN))
    names, types = decode_names(kvirt.read(names_at, names_end - names_at), count, tokens)

    # Addresses: the raw array, then the encoding that reproduces SYMBOL(_stext).
    fmt: Literal["i", "Q"]
    if "kallsyms_offsets" in loc:
        place = loc["kallsyms_offsets"]
        width, fmt = 4, "i"
        key = "kallsyms_offsets"
        base_at = loc.get("kallsyms_relative_base")
        base = None
        if base_at is not None:
            base = struct.unpack("<Q", _read(kvirt, "kallsyms_relative_base", base_at, 8))[0]
        candidates = [PLACE_RELATIVE] + ([ABSOLUTE_PERCPU, RELATIVE] if base is not None else [])
    else:
        place = loc["kallsyms_addresses"]
        width, fmt = 8, "Q"
        key = "kallsyms_addresses"
        base = None
        candidates = [ABSOLUTE]
    if _bound(loc, place, count * width) - place < count * width:
        raise Unavailable(f"{count} entries of {key} overlap the next kallsyms table")
    raw = list(memoryview(_read(kvirt, key, place, count * width)).cast(fmt))
    encoding = _choose_encoding(candidates, names, raw, base, place, vmcoreinfo)
    return KallsymsTable(names, types, _addresses(encoding, raw, base, place), encoding)


def _choose_encoding(
    candidates: list[str],
    names: list[str],
    raw: list[int],
    base: int | None,
    place: int,
    vmcoreinfo: VmcoreInfo,
) -> str:
    """The one encoding under which ``_stext`` (else every other ``SYMBOL()``) is reproduced."""
    wanted = vmcoreinfo.symbols()
    where: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name in wanted:
            where.setdefault(name, []).append(i)
    if not where:
        raise Unavailable("no VMCOREINFO SYMBOL() names a kallsyms symbol: cannot check addresses")
    stext = vmcoreinfo.symbol("_stext")
    checks = ["_stext"] if stext is not None and "_stext" in where else list(where)

    def fits(enc: str, name: str) -> bool:
        return any(_address_of(enc, raw, i, base, place) == wanted[name] for i in where[name])

    def score(enc: str) -> tuple[bool, int]:
        return all(fits(enc, n) for n in checks), sum(fits(enc, n) for n in where)

    scored = [(score(enc), enc) for enc in candidates]
    good = [(hits, enc) for (ok, hits), enc in scored if ok]
    if not good:
        what = "SYMBOL(_stext)" if "_stext" in checks else "any VMCOREINFO SYMBOL()"
        raise Unavailable(
            f"no kallsyms address encoding ({', '.join(candidates)}) reproduces {what}"
        )
    good.sort(reverse=True)
    if len(good) > 1 and good[0][0] == good[1][0]:
        raise Unavailable(
            f"kallsyms addresses are ambiguous: {good[0][1]} and {good[1][1]} both fit VMCOREINFO"
        )
    return good[0][1]
