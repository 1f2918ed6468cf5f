"""The kallsyms tables found in the kernel image by their own structure (kernels before 6.0).

VMCOREINFO locates the tables only since Linux 6.0. Older kernels (RHEL 8 and 9, Ubuntu 20.04
and 22.04, Debian 11 ...) have them all the same, in ``.rodata``, as ``scripts/kallsyms.c``
writes them: each table starts at an 8-byte boundary (``ALGN``, ``.balign 8``), in this order:

====== =========================================================================================
≤ 4.5  ``kallsyms_addresses`` (u64 each) ``num_syms`` (u64) ``names`` ``markers`` (u64 each)
       ``token_table`` ``token_index``
4.6    ``kallsyms_offsets`` (s32 each) and ``kallsyms_relative_base`` (u64) in place of the
       addresses (CONFIG_KALLSYMS_BASE_RELATIVE, commit 2213e9a66bb8)
4.20   ``num_syms`` and each marker an u32 (commit 80ffbaa5b1bd)
6.1    two-byte (ULEB128) name lengths (commit 73bbb94466fd); ``kallsyms_seqs_of_names`` (3
       bytes a symbol, "kallsyms: Improve the performance of kallsyms_lookup_name()") between
       the markers and the token table
6.4    ``num_syms`` ``names`` ``markers`` ``token_table`` ``token_index`` then the addresses,
       ``relative_base`` and ``seqs_of_names`` ("scripts/kallsyms: change the output order")
====== =========================================================================================

(and 7.0 drops ``relative_base``: offsets relative to their own place, see :mod:`.kallsyms`).

The search, each step checking what the next one relies on:

1. the token table: 256 NUL-terminated tokens, where every character that occurs in a symbol
   name is its own token; so the digits are ``"0\\0" "1\\0" ... "9\\0"`` (and ``a``..``z``
   likewise), one pattern that a fast byte search finds in the image. From there the tokens
   run to the table's end, and ``kallsyms_token_index`` (256 increasing u16 offsets, the
   first 0) follows at the next 8-byte boundary: both must agree token by token.
2. the markers: one offset into ``kallsyms_names`` per 256 symbols, the first 0, strictly
   increasing; they end right before the token table, or (6.1-6.3) ``3 × num_syms`` bytes of
   ``seqs_of_names`` before it; the number of markers must fit the number of symbols.
3. ``kallsyms_num_syms`` right before ``kallsyms_names``: walking that many names from there
   must pass every marker exactly and end where the markers start.
4. the addresses before ``num_syms`` or after the token index, in each encoding the layout
   allows: they must be in order (``scripts/kallsyms`` sorts them) and agree with every
   VMCOREINFO ``SYMBOL()`` that names a kallsyms symbol (``_stext`` at least).

A candidate that fails any step is refused whole, never half-used; the first one that passes
every step is the table. Everything read is bounded by the counts it is checked against.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo
from .kallsyms import (
    ABSOLUTE,
    ABSOLUTE_PERCPU,
    KSYM_NAME_LEN,
    PLACE_RELATIVE,
    RELATIVE,
    TABLE_KEYS,
    KallsymsTable,
    _address_of,
    _addresses,
    decode_names,
    located_tables,
    read_located,
)
from .kimage import ImageScan, kernel_image, present_below

#: The most symbols a found table may have (big distribution kernels have ~250k; the keyed
#: decoder allows more, but a search must bound what it reads on a guess).
MAX_FOUND_SYMS = 1 << 20
#: 256 symbols share one marker; each name takes at least two bytes (a length, a token).
SYMS_PER_MARKER = 256
MIN_ENTRY = 2
#: ULEB128 length (two bytes at most) + the longest name.
MAX_ENTRY = 2 + KSYM_NAME_LEN
#: The most kallsyms_names a found table may take (a 250k-symbol kernel has ~4 MiB): what the
#: markers claim is read, so a hostile marker array must not claim more.
MAX_NAMES_SIZE = 32 << 20
#: The most a table of tokens can take: 256 tokens of up to KSYM_NAME_LEN bytes.
MAX_TOKEN_TABLE = 256 * KSYM_NAME_LEN
#: Anchors: runs of one-character tokens that every kernel's token table has.
ANCHORS = (
    (ord("0"), b"".join(b"%c\0" % c for c in range(ord("0"), ord("9") + 1))),
    (ord("a"), b"".join(b"%c\0" % c for c in range(ord("a"), ord("z") + 1))),
)
#: Bounded time on an image full of look-alikes: at most this many anchors without a token
#: table around them, and this many token tables whose other tables fail.
MAX_LOOKALIKES = 4096
MAX_CANDIDATES = 16
#: A marker array's first two words: 0, then a (little-endian) value of 1..2**24-1.
_MARKER_START = re.compile(rb"\x00\x00\x00\x00(?=(?:[^\x00]..|.[^\x00].|..[^\x00])\x00)", re.S)
#: Kallsyms names are printable ASCII without spaces; the type letter is a letter.
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


class Refused(Exception):
    """A candidate failed a check; the message says which (kept for the final message)."""


def _align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True)
class _Tokens:
    table_at: int
    index_at: int
    tokens: list[bytes]


@dataclass(frozen=True)
class _Markers:
    at: int
    width: int  #: 4 (4.20+) or 8 (u64, before 4.20)
    values: list[int]
    counts: list[int]  #: the symbol counts this placement allows
    seqs_at: int | None  #: where kallsyms_seqs_of_names lies between markers and tokens


# -- 1. the token table and index ----------------------------------------------------------


def _tokens_at(kvirt: AddressSpace, anchor: int, code: int) -> _Tokens:
    """The token table holding token ``code`` at ``anchor``, and the token index after it."""
    window = kvirt.read(anchor, 4096)
    pos = 0
    for _ in range(code, 256):
        nul = window.find(b"\0", pos)
        while nul < 0 and len(window) < MAX_TOKEN_TABLE:
            more = kvirt.read(anchor + len(window), min(len(window), MAX_TOKEN_TABLE - len(window)))
            if not more:
                raise Refused("the token table runs into memory the dump lacks")
            window += more
            nul = window.find(b"\0", pos)
        if nul < 0:
            raise Refused("the token table is longer than 256 tokens can be")
        pos = nul + 1
    table_end = anchor + pos
    # kallsyms_token_index: at the next 8-byte boundary (ALGN), or the next 4-byte one.
    for index_at in range(_align8(table_end), table_end - 1, -4):
        try:
            index = struct.unpack("<256H", kvirt.read_exact(index_at, 512))
        except FaultError:
            continue
        table_at = anchor - index[code]
        if index[0] != 0 or table_at % 4 or index_at - table_at > MAX_TOKEN_TABLE:
            continue
        data = kvirt.read(table_at, table_end - table_at)
        if len(data) != table_end - table_at:
            continue
        parts = data.split(b"\0")
        if len(parts) != 257 or parts[256] != b"":
            continue
        offsets = []
        off = 0
        for part in parts[:256]:
            offsets.append(off)
            off += len(part) + 1
        if tuple(offsets) != index:
            continue
        if any(_NOT_PRINTABLE.search(p.decode("latin-1")) for p in parts[:256]):
            raise Refused("a token holds a character no symbol name has")
        return _Tokens(table_at, index_at, parts[:256])
    raise Refused("no kallsyms_token_index agrees with the token table")


# -- 2. the markers --------------------------------------------------------------------------


def _marker_run(data: bytes, base: int, at: int, width: int) -> list[int]:
    """The strictly increasing values from ``at`` (the first 0), each step a plausible share of
    256 names; at most MAX_FOUND_SYMS / 256 of them."""
    fmt = "<I" if width == 4 else "<Q"
    off = at - base
    if off < 0 or off + width > len(data) or struct.unpack_from(fmt, data, off)[0] != 0:
        return []
    values = [0]
    limit = MAX_FOUND_SYMS // SYMS_PER_MARKER
    off += width
    while off + width <= len(data) and len(values) < limit:
        v = struct.unpack_from(fmt, data, off)[0]
        step = v - values[-1]
        if not SYMS_PER_MARKER * MIN_ENTRY <= step <= SYMS_PER_MARKER * MAX_ENTRY:
            break
        if v > MAX_NAMES_SIZE:
            break
        values.append(v)
        off += width
    return values


def _counts(m: int) -> range:
    """The symbol counts that ``m`` markers stand for."""
    return range(SYMS_PER_MARKER * (m - 1) + 1, SYMS_PER_MARKER * m + 1)


def _markers(kvirt: AddressSpace, tokens: _Tokens) -> list[_Markers]:
    """Every marker array that ends where the token table (or the seqs before it) begins."""
    top = tokens.table_at
    span = 3 * MAX_FOUND_SYMS + 4 * (MAX_FOUND_SYMS // SYMS_PER_MARKER) + 64
    base, data = present_below(kvirt, top, span)
    # A match starts up to 3 bytes before the first marker (zeros may precede it), and 4
    # bytes after it for u64 markers (their first value's upper half).
    starts = {
        a
        for m in _MARKER_START.finditer(data)
        for a in range((m.start() + base - 4) & ~7, m.start() + base + 4, 8)
    }
    # One marker (<= 256 symbols): a lone 0 right below the table or its seqs.
    starts |= set(range(top - 8 - 3 * SYMS_PER_MARKER - 16, top - 7, 8))
    found: list[_Markers] = []
    for at in sorted(starts, reverse=True):
        if at % 8 or at < base:
            continue
        for width in (4, 8):
            run = _marker_run(data, base, at, width)
            for m in range(len(run), max(0, len(run) - 4), -1):
                found += _placements(at, width, run[:m], top)
    return found


def _placements(at: int, width: int, values: list[int], top: int) -> list[_Markers]:
    """How ``values`` at ``at`` can end below the token table at ``top``: right below it, or
    (u32 markers, 6.1+) with ``seqs_of_names`` between, which has one 3-byte entry a symbol."""
    m = len(values)
    end = at + width * m
    out = []
    if _align8(end) == top:
        out.append(_Markers(at, width, values, list(_counts(m)), None))
    if width == 4:
        # _align8(seqs + 3 * n) == top: n in ((top - 8 - seqs) / 3, (top - seqs) / 3]
        seqs = _align8(end)
        mine = _counts(m)
        lo = max(mine.start, (top - 8 - seqs) // 3 + 1)
        hi = min(mine.stop - 1, (top - seqs) // 3)
        if lo <= hi:
            out.append(_Markers(at, width, values, list(range(lo, hi + 1)), seqs))
    return out


# -- 3. num_syms and the names --------------------------------------------------------------


def _walk(data: bytes, pos: int, count: int, marks: list[int] | None = None) -> int | None:
    """Step over ``count`` names from ``pos``; the end, or None when one runs past ``data``
    or is empty. With ``marks``: each 256th name must start at ``pos + marks[k]``."""
    start = pos
    size = len(data)
    try:
        for i in range(count):
            if marks is not None and not i & 0xFF and pos - start != marks[i >> 8]:
                return None
            length = data[pos]
            if length & 0x80:  # 6.1+: a two-byte ULEB128 length
                length = (length & 0x7F) | (data[pos + 1] << 7)
                pos += 2
            else:
                pos += 1
            if not length:
                return None
            pos += length
    except IndexError:
        return None
    return pos if pos <= size else None


def _names(kvirt: AddressSpace, mk: _Markers) -> tuple[int, int, bytes]:
    """``(names_at, count, bytes)``: kallsyms_names and kallsyms_num_syms right before it."""
    last = mk.values[-1]
    m = len(mk.values)
    tail_max = max(mk.counts) - SYMS_PER_MARKER * (m - 1)
    lowest, data = present_below(kvirt, mk.at, 16 + last + tail_max * MAX_ENTRY + 8)
    counts = set(mk.counts)
    # names_at is 8-aligned; num_syms (u32, or the low half of an u64) lies 8 bytes below it.
    names_at = (mk.at - last - MIN_ENTRY) & ~7
    while names_at - 8 >= lowest:
        off = names_at - lowest
        count, high = struct.unpack_from("<II", data, off - 8)
        if high == 0 and count in counts:
            tail = count - SYMS_PER_MARKER * (m - 1)
            end = _walk(data, off + last, tail)
            if end is not None and _align8(lowest + end) == mk.at:
                if _walk(data, off, count, mk.values) == end:
                    return names_at, count, data[off:end]
        names_at -= 8
    raise Refused("no kallsyms_num_syms and kallsyms_names fit the markers")


# -- 4. the addresses ------------------------------------------------------------------------


def _address_layouts(
    names_at: int, count: int, tokens: _Tokens
) -> list[tuple[str, int, int | None, list[str]]]:
    """``(key, array_at, relative_base_at, encodings)`` for each place the addresses can be:
    before ``num_syms`` (up to 6.3) or after the token index (6.4+)."""
    num_syms_at = names_at - 8
    base_at = num_syms_at - 8
    after = _align8(tokens.index_at + 512)
    return [
        ("kallsyms_offsets", (base_at - 4 * count) & ~7, base_at, [ABSOLUTE_PERCPU, RELATIVE]),
        ("kallsyms_addresses", num_syms_at - 8 * count, None, [ABSOLUTE]),
        ("kallsyms_offsets", after, _align8(after + 4 * count), [ABSOLUTE_PERCPU, RELATIVE]),
        ("kallsyms_offsets", after, None, [PLACE_RELATIVE]),
        ("kallsyms_addresses", after, None, [ABSOLUTE]),
    ]


def _addresses_for(
    kvirt: AddressSpace, vmcoreinfo: VmcoreInfo, names: list[str], names_at: int, count: int,
    tokens: _Tokens,
) -> tuple[str, list[int], dict[str, int]]:  # fmt: skip
    """The one address array and encoding under which the table is in order and agrees with
    every VMCOREINFO ``SYMBOL()`` it names; Refused otherwise."""
    wanted = vmcoreinfo.symbols()
    where: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name in wanted:
            where.setdefault(name, []).append(i)
    if not where:
        raise Refused("no VMCOREINFO SYMBOL() names a kallsyms symbol: cannot check addresses")
    good: list[tuple[str, list[int], dict[str, int]]] = []
    why = "no address array in any layout"
    for key, at, base_at, encodings in _address_layouts(names_at, count, tokens):
        width = 8 if key == "kallsyms_addresses" else 4
        try:
            raw_bytes = kvirt.read_exact(at, width * count)
            base = kvirt.u64(base_at) if base_at is not None else None
        except FaultError:
            continue
        raw = list(memoryview(raw_bytes).cast("Q" if width == 8 else "i"))
        for enc in encodings:
            # The cheap checks first: the symbols VMCOREINFO names, then the whole order.
            wrong = next(
                (
                    n
                    for n, idx in where.items()
                    if all(_address_of(enc, raw, i, base, at) != wanted[n] for i in idx)
                ),
                None,
            )
            if wrong is not None:
                why = f"{key} ({enc}) at {at:#x} disagree with SYMBOL({wrong})"
                continue
            addrs = _addresses(enc, raw, base, at)
            if any(a > b for a, b in zip(addrs, addrs[1:], strict=False)):
                why = f"{key} ({enc}) at {at:#x} are not in order"
                continue
            loc = {key: at}
            if base_at is not None:
                loc["kallsyms_relative_base"] = base_at
            if at > names_at:  # 6.4+: kallsyms_seqs_of_names follows the addresses
                end = base_at + 8 if base_at is not None else at + width * count
                loc["kallsyms_seqs_of_names"] = _align8(end)
            good.append((enc, addrs, loc))
    if not good:
        raise Refused(why)
    if len(good) > 1:
        raise Refused(f"addresses are ambiguous: {good[0][0]} and {good[1][0]} both fit")
    return good[0]


# -- the whole search -------------------------------------------------------------------------


def _candidate(kvirt: AddressSpace, vmcoreinfo: VmcoreInfo, tokens: _Tokens) -> KallsymsTable:
    """The table whose token table ``tokens`` is, checked whole; Refused otherwise."""
    why = "no kallsyms_markers end at the token table"
    for mk in _markers(kvirt, tokens):
        try:
            names_at, count, names_data = _names(kvirt, mk)
        except Refused as exc:
            why = str(exc)
            continue
        try:
            names, types = decode_names(names_data, count, tokens.tokens)
        except Unavailable as exc:
            raise Refused(exc.reason) from None
        if _NOT_PRINTABLE.search("".join(names)) or not (types.isascii() and types.isalpha()):
            raise Refused("kallsyms_names holds a name that is not printable")
        encoding, addresses, loc = _addresses_for(kvirt, vmcoreinfo, names, names_at, count, tokens)
        loc.update(
            kallsyms_num_syms=names_at - 8,
            kallsyms_names=names_at,
            kallsyms_markers=mk.at,
            kallsyms_token_table=tokens.table_at,
            kallsyms_token_index=tokens.index_at,
        )
        if mk.seqs_at is not None:
            loc["kallsyms_seqs_of_names"] = mk.seqs_at
        _agree_with_keys(loc, vmcoreinfo)
        return KallsymsTable(
            names, types, addresses, encoding, origin="the kernel image", locations=loc
        )
    raise Refused(why)


def _agree_with_keys(loc: dict[str, int], vmcoreinfo: VmcoreInfo) -> None:
    """A kallsyms key VMCOREINFO does have must name the table found (a partial note)."""
    for key in TABLE_KEYS:
        said = vmcoreinfo.symbol(key)
        if said is not None and key in loc and loc[key] != said:
            raise Refused(f"found {key} at {loc[key]:#x}, VMCOREINFO says {said:#x}")


def read_kallsyms(kvirt: AddressSpace, vmcoreinfo: VmcoreInfo) -> KallsymsTable:
    """The dump's kallsyms tables, decoded; Unavailable (with the reason) when they cannot be.

    Where VMCOREINFO locates them (Linux 6.0+) its keys are used; otherwise (older kernels, or
    a note without those keys) they are found in the kernel image by their own structure.
    """
    loc = located_tables(vmcoreinfo)
    if loc is not None:
        return read_located(kvirt, vmcoreinfo, loc)
    return find_kallsyms(kvirt, vmcoreinfo)


def find_kallsyms(
    kvirt: AddressSpace, vmcoreinfo: VmcoreInfo, image: ImageScan | None = None
) -> KallsymsTable:
    """The kallsyms tables in the kernel image; Unavailable (saying how much was scanned and
    why candidates were refused) when none passes every check."""
    image = image or kernel_image(kvirt, vmcoreinfo)
    refused: list[str] = []  # token tables whose other tables failed
    lookalikes = 0  # anchors without a token table around them
    tried: set[int] = set()
    for base, data, own in image.pieces():
        for code, pattern in ANCHORS:
            end = own + len(pattern) - 1
            at = data.find(pattern, 0, end)
            while at >= 0 and lookalikes < MAX_LOOKALIKES and len(refused) < MAX_CANDIDATES:
                anchor = base + at
                at = data.find(pattern, at + 1, end)
                try:
                    tokens = _tokens_at(kvirt, anchor, code)
                except (Refused, FaultError):
                    lookalikes += 1
                    continue
                if tokens.table_at in tried:
                    continue
                tried.add(tokens.table_at)
                try:
                    return _candidate(kvirt, vmcoreinfo, tokens)
                except (Refused, FaultError) as exc:
                    refused.append(f"token table {tokens.table_at:#x}: {exc}")
        if lookalikes >= MAX_LOOKALIKES or len(refused) >= MAX_CANDIDATES:
            break
    what = f"no kallsyms tables found in the kernel image ({image.scanned_mib} MiB scanned"
    if refused:
        what += f"; {len(refused)} candidate(s) refused, the first: {refused[0]}"
    raise Unavailable(what + ")")
