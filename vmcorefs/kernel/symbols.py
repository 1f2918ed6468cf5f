"""The merged kernel symbol table: ``dump.symbols``.

Sources, in order of precedence (DESIGN.md "Symbols"): ``--vmlinux`` (ELF ``.symtab``, with
sizes), ``--system-map``, the dump's own kallsyms tables (:mod:`.kallsyms`, Linux 6.0+) and
VMCOREINFO's ``SYMBOL()`` keys (not ``SYMBOL(mem_section)``, whose value is a pointer's value).

Merging rules:

* Every kallsyms entry is kept, in the kernel's own order, duplicates included (6.1 has the same
  ``__key.0`` at the same address several times): it is what ``/proc/kallsyms`` shows.
* Every other source adds the (name, address) pairs that no earlier source has; a pair already
  present only gains the symbol's size from ``--vmlinux``. So a name whose sources disagree on its
  address is kept at both addresses, never silently dropped.
* Type letter: the kallsyms letter where the dump has the pair (``/proc/kallsyms``'s letter,
  e.g. ``A`` for x86_64 per-CPU symbols where ``nm`` says ``D``), else the letter of the
  highest-precedence file that has it, else ``?`` (a VMCOREINFO-only symbol: its type is not
  recorded anywhere in the dump).
* Order: by address; at one address kallsyms entries first, in the kernel's order, then the
  others in precedence and file order.

``sym/`` (DESIGN.md "Symbols"), computed here so that the tree only maps names to windows:

* One file per distinct (name, address) pair, named ``NAME``; a name found at more than one
  address is ``NAME@%016x`` for each of them (and there is no plain ``NAME``).
* Offset 0 is the symbol's address; the size is the symbol's own where known (``--vmlinux``),
  else up to the next higher symbol address (0 past the last symbol), capped at
  :data:`SYM_FILE_CAP` (1 MiB): a read never goes further.
* Per-CPU symbols (``[__per_cpu_start, __per_cpu_end)``: small offsets on x86_64 before 6.15)
  read CPU 0's copy, at ``__per_cpu_offset[0]`` + the value; when ``__per_cpu_offset[0]`` is
  not in the dump they are left out (the reason is in ``notes``).
* A name that cannot be a file name is escaped as in ``info/`` (:func:`escape_file_name`:
  ``/`` is ``%2F``, ``%`` then ``%25``); names longer than NAME_MAX (255 bytes), which no
  path can reach, are left out (noted).
* Modules' symbols (:mod:`.modsyms`) join under the same rule (:class:`SymbolFiles`): a name
  in two modules, or in a module and the core, is ``NAME@%016x`` for every address it has.
"""

from __future__ import annotations

import array
import bisect
import itertools
import logging
import operator
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, islice, pairwise, repeat

from ..errors import FaultError, Unavailable
from .kallsyms import read_kallsyms
from .modsyms import ModuleSymbolFile

log = logging.getLogger("vmcorefs")

#: The type letter of a symbol whose type no source records (VMCOREINFO's SYMBOL() keys).
UNKNOWN_TYPE = "?"
#: The most a ``sym/`` file shows: a symbol's size is capped here (DESIGN.md "Symbols").
SYM_FILE_CAP = 1 << 20
#: include/uapi/linux/limits.h: the longest file name a path can reach.
NAME_MAX = 255
_MASK64 = (1 << 64) - 1
#: A size no source records (an ``st_size`` of 2**64 - 1, which would wrap the address space
#: from any symbol but one at 0, is taken for it too).
NO_SIZE = (1 << 64) - 1
#: ``hash()`` is ``_HASH_BITS`` bits wide, signed: adding ``_HASH_HALF`` orders it unsigned.
_HASH_BITS = sys.hash_info.width
_HASH_HALF = 1 << (_HASH_BITS - 1)


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    address: int
    type: str  #: the kallsyms type letter ('T', 't', 'D', ...); '?' when unknown
    size: int | None = None  #: the symbol's own size where known (vmlinux .symtab), else None


@dataclass(frozen=True)
class SymbolSource:
    """Symbols from one user file (``--vmlinux`` or ``--system-map``), already relocated."""

    kind: str  #: "vmlinux" or "system-map"
    path: str
    #: (name, address, type letter, size or None), in file order
    entries: Sequence[tuple[str, int, str, int | None]]


class SymbolNames(Sequence[str]):
    """The table's names as one bytes blob and an offset per name, decoded on demand.

    A ``str`` per symbol costs ~70 bytes, a list slot 8 more: ~7 MiB for 100k names that
    ``sym/`` and ``%pS`` look at a few at a time. Names are stored as their bytes
    (``surrogateescape``, as every source decodes them): each decodes back to the same ``str``.
    """

    __slots__ = ("_blob", "_offsets")

    def __init__(self, blob: bytes, offsets: array.array) -> None:
        self._blob = blob
        self._offsets = offsets  #: name i is ``blob[offsets[i]:offsets[i + 1]]``

    @classmethod
    def from_names(cls, names: Sequence[str]) -> SymbolNames:
        """Pack ``names``; ValueError when one would not decode back to itself."""
        joined = "".join(names)
        if joined.isascii():  # the usual table: one encode, lengths at C speed
            blob = joined.encode("ascii")
            lengths: Iterable[int] = map(len, names)
        else:
            encoded = [name.encode("utf-8", "surrogateescape") for name in names]
            for i, raw in enumerate(encoded):  # only a non-ASCII name can come back otherwise
                if not raw.isascii() and raw.decode("utf-8", "surrogateescape") != names[i]:
                    raise ValueError(f"symbol name {names[i]!r} does not round-trip as bytes")
            blob = b"".join(encoded)
            lengths = map(len, encoded)
        typecode = "I" if len(blob) < 1 << 32 else "Q"
        return cls(blob, array.array(typecode, accumulate(lengths, initial=0)))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self._offsets) - 1
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("symbol index out of range")
        o = self._offsets
        return self._blob[o[i] : o[i + 1]].decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[str]:
        blob = self._blob
        return (blob[a:b].decode("utf-8", "surrogateescape") for a, b in pairwise(self._offsets))

    def raw(self, i: int) -> bytes:
        """Name ``i`` as bytes (``0 <= i < len``)."""
        return self._blob[self._offsets[i] : self._offsets[i + 1]]

    def select(self, flags: bytes | bytearray) -> Iterator[str]:
        """The names whose flag is set, in table order."""
        blob, o = self._blob, self._offsets
        return (
            blob[o[i] : o[i + 1]].decode("utf-8", "surrogateescape")
            for i in compress(range(len(o) - 1), flags)
        )

    def find_bytes(self, needle: bytes) -> list[int]:
        """Indices of the names that contain ``needle`` (one search of the blob)."""
        blob, o = self._blob, self._offsets
        found: list[int] = []
        pos = blob.find(needle)
        while pos >= 0:  # bounded: each step moves past a name that holds the needle
            i = bisect.bisect_right(o, pos) - 1
            if pos + len(needle) <= o[i + 1]:
                found.append(i)
                pos = blob.find(needle, o[i + 1])
            else:  # across two names: not in either
                pos = blob.find(needle, pos + 1)
        return found

    def longer_than(self, size: int) -> list[int]:
        """Indices of the names of more than ``size`` bytes."""
        o = self._offsets
        lengths = list(map(operator.sub, islice(o, 1, None), o))
        if not lengths or max(lengths) <= size:  # the usual answer, at C speed
            return []
        return [i for i, length in enumerate(lengths) if length > size]


def _name_index(
    names: Sequence[str],
) -> tuple[array.array, array.array, array.array, int]:
    """``(hashes, by_hash, buckets, shift)``: the table's name lookup without a dict.

    ``hashes`` holds ``hash(name)`` of every symbol, sorted (ties in table order: ``sorted()`` is
    stable), ``by_hash`` the table index of each. The top bits of a hash, ``(hash +
    _HASH_HALF) >> shift``, name its bucket ``b``: its entries are ``buckets[b]`` to
    ``buckets[b + 1]``, about one for each (as many buckets as the next power of two).
    """
    n = len(names)
    hashes = list(map(hash, names))
    order = sorted(range(n), key=hashes.__getitem__)
    by_hash = array.array("I" if n < 1 << 32 else "Q", order)
    sorted_hashes = array.array("q", [hashes[i] for i in order])
    del hashes, order
    bits = max(1, n.bit_length())
    shift = _HASH_BITS - bits
    counts = [0] * ((1 << bits) + 1)
    for h in sorted_hashes:
        counts[((h + _HASH_HALF) >> shift) + 1] += 1
    buckets = array.array(by_hash.typecode, accumulate(counts))
    return sorted_hashes, by_hash, buckets, shift


class SymbolTable:
    """Symbols sorted by address; lookups by name and by address (as ``%pS`` does).

    Kept compact, ~30 bytes a symbol instead of ~430 in Python objects (issue 17: the daemon's
    memory): names in :class:`SymbolNames`, addresses an ``array('Q')``, type letters one
    ``str``, sizes an ``array('Q')`` (:data:`NO_SIZE` where unknown; none at all when no source
    has sizes). The name lookup is by ``hash()``: the hashes sorted in an ``array('q')`` with
    the table index of each, so that all symbols of one name are found by one ``bisect``, in
    table order; ``Symbol`` objects are made on demand.
    """

    #: Why the dump's own kallsyms could not be decoded (None when it was): then a name is
    #: missing for that reason, and what needs the name says so (:meth:`why_missing`).
    kallsyms_unavailable: str | None = None

    def why_missing(self, names: str) -> str:
        """``"no symbol NAMES"``, with the reason when the dump's kallsyms is unavailable."""
        why = self.kallsyms_unavailable
        if why:
            return f"no symbol {names}: the dump's kallsyms is unavailable: {why}"
        return f"no symbol {names}"

    def __init__(
        self,
        names: Sequence[str],
        addresses: Sequence[int],
        types: Sequence[str],
        sizes: Sequence[int | None],
        *,
        sources: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> None:
        n = len(names)
        if not len(addresses) == len(types) == len(sizes) == n:
            raise ValueError("names, addresses, types and sizes differ in length")
        letters = types if isinstance(types, str) else "".join(types)
        if len(letters) != n:
            raise ValueError("a symbol's type is one letter")
        addrs = array.array("Q", addresses)
        if not all(map(operator.le, addrs, islice(addrs, 1, None))):
            # Sort by address; sorted() is stable, so ties keep the order given.
            order = sorted(range(n), key=addrs.__getitem__)
            names = [names[i] for i in order]
            addrs = array.array("Q", [addrs[i] for i in order])
            letters = "".join([letters[i] for i in order])
            sizes = [sizes[i] for i in order]
        self.names = SymbolNames.from_names(names)
        self.addresses = addrs
        #: one type letter per symbol, in table order
        self.types: str = letters
        self._sizes: array.array | None = None
        if list(sizes).count(None) != n:
            self._sizes = array.array("Q", [NO_SIZE if s is None else s for s in sizes])
        self._hashes, self._by_hash, self._buckets, self._shift = _name_index(names)
        #: One line per source used, e.g. "kallsyms (absolute-percpu): 94266 symbols".
        self.sources = list(sources)
        #: Why a source is missing or what was left out (logged; for README/summary).
        self.notes = list(notes)
        #: ``__per_cpu_offset[0]``: where CPU 0's copy of the per-CPU area is (None: unknown).
        self.percpu_offset0: int | None = None
        self._ranges = self._image_ranges()
        self._percpu = self._percpu_range()
        self._files: Mapping[str, int] | None = None
        self._files_lock = threading.Lock()

    def size(self, i: int) -> int | None:
        """The own size of symbol ``i`` where a source records it, else None."""
        sizes = self._sizes
        if sizes is None:
            return None
        size = sizes[i]
        return None if size == NO_SIZE else size

    def _matches(self, name: str, first: bool) -> list[int]:
        """Table indices of the symbols named ``name`` (only the first when ``first``)."""
        h = hash(name)
        hashes, by_hash = self._hashes, self._by_hash
        b = (h + _HASH_HALF) >> self._shift
        j, end = self._buckets[b], self._buckets[b + 1]
        found: list[int] = []
        blob, o = self.names._blob, self.names._offsets
        while j < end:  # bounded by the bucket: about one entry
            if hashes[j] == h:
                i = by_hash[j]
                if blob[o[i] : o[i + 1]].decode("utf-8", "surrogateescape") == name:
                    found.append(i)
                    if first:
                        break
            j += 1
        return found

    def first_index(self, name: str) -> int | None:
        """The table index of the first symbol named ``name``, or None."""
        found = self._matches(name, True)
        return found[0] if found else None

    def symbol(self, i: int) -> Symbol:
        """The symbol at table index ``i``."""
        return Symbol(self.names[i], self.addresses[i], self.types[i], self.size(i))

    def has_name(self, name: str) -> bool:
        return bool(self._matches(name, True))

    def indices(self, name: str) -> list[int]:
        """Table indices of every symbol named ``name``, in table order."""
        return self._matches(name, False)

    def duplicates(self) -> Iterator[tuple[str, list[int]]]:
        """Each name that more than one symbol has, with their indices (in table order)."""
        hashes, by_hash, names = self._hashes, self._by_hash, self.names
        # positions whose hash equals the next one's: a few, found at C speed
        same = [j for j, (a, b) in enumerate(pairwise(hashes)) if a == b]
        k = 0
        while k < len(same):  # each pass consumes one run of equal hashes
            start = same[k]
            while k + 1 < len(same) and same[k + 1] == same[k] + 1:
                k += 1
            stop = same[k] + 2
            k += 1
            by_name: dict[str, list[int]] = {}
            for j in range(start, stop):
                i = by_hash[j]
                by_name.setdefault(names[i], []).append(i)
            for name, many in by_name.items():
                if len(many) > 1:
                    yield name, many

    # -- the API others use ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Symbol]:
        sizes = self._sizes
        own = repeat(None) if sizes is None else (None if s == NO_SIZE else s for s in sizes)
        return map(Symbol, self.names, self.addresses, self.types, own)

    def __len__(self) -> int:
        return len(self.addresses)

    def lookup(self, name: str) -> list[Symbol]:
        """Every symbol of that name (several for static symbols of the same name)."""
        return [self.symbol(i) for i in self.indices(name)]

    def address(self, name: str) -> int:
        """The address of ``name``: Unavailable when it is absent or names several addresses."""
        found = {self.addresses[i] for i in self.indices(name)}
        if not found:
            raise Unavailable(self.why_missing(name))
        if len(found) > 1:
            raise Unavailable(f"symbol {name} is ambiguous: {len(found)} addresses")
        return found.pop()

    def get(self, name: str) -> int | None:
        """Like :meth:`address`, but None when absent or ambiguous."""
        found = {self.addresses[i] for i in self.indices(name)}
        return found.pop() if len(found) == 1 else None

    def next_address(self, address: int) -> int | None:
        """The lowest symbol address above ``address``, or None."""
        i = bisect.bisect_right(self.addresses, address)
        return self.addresses[i] if i < len(self.addresses) else None

    def containing(self, address: int) -> tuple[Symbol, int, int] | None:
        """``(symbol, offset, size)`` for ``address`` as the kernel's ``%pS`` computes it.

        kernel/kallsyms.c: only addresses inside the kernel image are looked up
        (``is_ksym_addr``: ``[_stext, _end)`` with CONFIG_KALLSYMS_ALL, else the text and init
        text); the symbol is the first (in table order) of those at the highest address
        ``<= address``; its size is its own where known, else the distance to the next higher
        symbol address (the end of the section past the last one). None outside the image.
        """
        ranges, end_of = self._ranges
        if not any(lo <= address < hi for lo, hi in ranges):
            return None
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0:
            return None
        start = self.addresses[i]
        i = bisect.bisect_left(self.addresses, start)  # the first alias (get_symbol_pos)
        sym = self.symbol(i)
        if sym.size is not None:
            size = sym.size
        else:
            nxt = self.next_address(start)
            size = (nxt if nxt is not None else end_of(address)) - start
        return sym, address - start, size

    def _image_ranges(self) -> tuple[list[tuple[int, int]], Callable[[int], int]]:
        """The ranges ``containing`` answers for, and the section end past the last symbol."""
        get = self.get
        stext, end = get("_stext"), get("_end")
        etext, sinit, einit = get("_etext"), get("_sinittext"), get("_einittext")
        ranges: list[tuple[int, int]] = []
        if stext is not None and end is not None:
            ranges.append((stext, end))  # is_kernel(): CONFIG_KALLSYMS_ALL
        else:
            if stext is not None and etext is not None:
                ranges.append((stext, etext))
            if sinit is not None and einit is not None:
                ranges.append((sinit, einit))

        def end_of(address: int) -> int:
            if sinit is not None and einit is not None and sinit <= address < einit:
                return einit
            return end if end is not None else (etext or address)

        return ranges, end_of

    # -- per-CPU symbols -------------------------------------------------------------------
    def percpu_range(self) -> tuple[int, int] | None:
        """``[__per_cpu_start, __per_cpu_end)``: the per-CPU template's symbols, or None."""
        return self._percpu

    def _percpu_range(self) -> tuple[int, int] | None:
        start, end = self.get("__per_cpu_start"), self.get("__per_cpu_end")
        if start is None or end is None or end <= start:
            return None
        return start, end

    def is_percpu(self, sym: Symbol) -> bool:
        r = self.percpu_range()
        return r is not None and r[0] <= sym.address < r[1]

    # -- sym/ and kallsyms -----------------------------------------------------------------
    def file_entries(self) -> Mapping[str, int]:
        """``sym/`` file name -> table index (module docstring). Built once, without I/O."""
        with self._files_lock:
            if self._files is None:
                self._files = self._make_file_entries()
            return self._files

    def _make_file_entries(self) -> Mapping[str, int]:
        names, addresses = self.names, self.addresses
        plain = bytearray(b"\x01") * len(self)  # 1: the file of symbol i is its plain NAME
        extra: dict[str, int] = {}  # the other files: NAME@ADDRESS, escaped names
        for name, many in self.duplicates():
            for i in many[1:]:
                plain[i] = 0
            at: dict[int, int] = {}
            for i in many:
                at.setdefault(addresses[i], i)
            if len(at) > 1:  # else the same pair repeated: one plain NAME, the first
                plain[many[0]] = 0
                for address, i in at.items():
                    extra[f"{name}@{address:016x}"] = i
        percpu = self.percpu_range()
        if percpu is not None and self.percpu_offset0 is None:
            lo = bisect.bisect_left(addresses, percpu[0])
            hi = bisect.bisect_left(addresses, percpu[1])
            plain[lo:hi] = bytes(hi - lo)
            extra = {f: i for f, i in extra.items() if not lo <= i < hi}
        # Names that no path holds as they are: a "/" (escaped), longer than NAME_MAX.
        odd = [*names.find_bytes(b"/"), *names.longer_than(NAME_MAX)]
        renamed = [(names[i], i) for i in sorted(set(odd)) if plain[i]]
        renamed += [(f, i) for f, i in extra.items() if "/" in f or len(f) > NAME_MAX // 4]
        for f, i in renamed:
            if extra.pop(f, None) is None:
                plain[i] = 0
            escaped = escape_file_name(f)
            if len(os.fsencode(escaped)) > NAME_MAX:
                self.notes.append(f"sym/: {f[:40]}... is longer than NAME_MAX: left out")
                continue
            j = self.first_index(escaped)
            if escaped not in extra and (j is None or not plain[j]):
                extra[escaped] = i
        return _CoreFiles(self, plain, extra)

    def file_extent(self, i: int) -> tuple[int, int]:
        """``(kvirt address, size)`` that ``sym/`` shows for table index ``i``."""
        address = self.addresses[i]
        size = self.size(i)
        if size is None:
            nxt = self.next_address(address)
            size = 0 if nxt is None else nxt - address
        start = address
        percpu = self._percpu
        if percpu is not None and percpu[0] <= address < percpu[1]:
            if self.percpu_offset0 is None:
                raise Unavailable("__per_cpu_offset[0] is unknown")
            start = (self.percpu_offset0 + address) & _MASK64
        return start, min(size, SYM_FILE_CAP)

    def kallsyms_text(self) -> str:
        """The table in /proc/kallsyms format: ``"%016x %c %s\\n"``, sorted by address."""
        return "".join(
            [
                f"{a:016x} {t} {n}\n"
                for a, t, n in zip(self.addresses, self.types, self.names, strict=True)
            ]
        )


class _CoreFiles(Mapping[str, int]):
    """The core table's ``sym/`` names -> table index, without a ``str`` per name: a flag per
    symbol whose file is its plain NAME (looked up by the table's name index, listed by
    decoding the names), and a dict of the few others (NAME@ADDRESS, escaped names)."""

    def __init__(self, table: SymbolTable, plain: bytearray, extra: dict[str, int]) -> None:
        # A NAME@ADDRESS made here wins over a symbol named that very string (if any has "@").
        for i in table.names.find_bytes(b"@"):
            if table.names[i] in extra:
                plain[i] = 0
        self._table, self._plain, self._extra = table, plain, extra
        self._len = plain.count(1) + len(extra)

    def get(self, name: str, default=None):
        i = self._extra.get(name)
        if i is None:
            i = self._table.first_index(name)
            if i is None or not self._plain[i]:
                return default
        return i

    def __getitem__(self, name: str) -> int:
        i = self.get(name)
        if i is None:
            raise KeyError(name)
        return i

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return itertools.chain(self._table.names.select(self._plain), self._extra)

    def __len__(self) -> int:
        return self._len


#: Characters a file name cannot hold, and ``%``, which the escape rule itself uses.
_ESCAPED = {ord("%"): "%25", ord("/"): "%2F", 0: "%00"}
#: Names that are not file names whatever they hold.
_SPECIAL_NAMES = {"": "%", ".": "%2E", "..": "%2E%2E"}


def escape_file_name(name: str) -> str:
    """A name from the dump (a symbol, a VMCOREINFO key) as a file name, by one rule: verbatim
    when it can be one; else ``%``, ``/`` and NUL are written ``%25``, ``%2F`` and ``%00``,
    ``.`` and ``..`` are ``%2E`` and ``%2E%2E``, and the empty name is ``%``. No two names give
    one file name: a verbatim name holds no ``%``, and every ``%`` an escape writes is followed
    by two hex digits (but the empty name's)."""
    special = _SPECIAL_NAMES.get(name)
    if special is not None:
        return special
    if "%" in name or "/" in name or "\0" in name:
        return name.translate(_ESCAPED)
    return name


class _Overlay(Mapping[str, int]):
    """The core's ``sym/`` names with some removed and others added, without copying the
    core's ~100k entries (listing ``sym/`` stays as quick as the core's alone)."""

    def __init__(self, base: Mapping[str, int], added: dict[str, int], removed: set[str]):
        self._base, self._added, self._removed = base, added, removed  # added: none in base

    def get(self, name: str, default=None):
        if name in self._removed:
            return default
        value = self._added.get(name)
        return self._base.get(name, default) if value is None else value

    def __getitem__(self, name: str) -> int:
        if name in self._removed:
            raise KeyError(name)
        value = self._added.get(name)
        return self._base[name] if value is None else value

    def __contains__(self, name: object) -> bool:
        return name in self._added or (name in self._base and name not in self._removed)

    def __iter__(self) -> Iterator[str]:
        if not self._removed:
            return itertools.chain(self._base, self._added)
        removed = self._removed
        kept = itertools.filterfalse(removed.__contains__, self._base)
        return itertools.chain(kept, self._added)

    def __len__(self) -> int:
        return len(self._base) - len(self._removed) + len(self._added)


class SymbolFiles:
    """``sym/``: the core table's files and the modules' symbols under one naming rule.

    ``entries`` maps a file name to a key: a core table index, or ``len(table) + j`` for the
    ``j``-th module symbol. A name that the modules share with each other or with the core at
    another address is ``NAME@%016x`` for every address (the core's plain ``NAME`` renamed);
    a (name, address) pair already in the core keeps the core's file.
    """

    def __init__(
        self,
        table: SymbolTable,
        modules: Sequence[ModuleSymbolFile] = (),
        notes: Sequence[str] = (),
    ) -> None:
        self.table = table
        self.modules = list(modules)
        #: why module symbols may be missing (the summary says so)
        self.notes = list(notes)
        self.entries: Mapping[str, int] = self._merge() if self.modules else table.file_entries()
        #: keys are ``0 .. key_count - 1``
        self.key_count = len(table) + len(self.modules)

    def _merge(self) -> Mapping[str, int]:
        table = self.table
        core = table.file_entries()
        added: dict[str, int] = {}
        removed: set[str] = set()
        n = len(table)

        def add(fname: str, key: int) -> None:
            if len(fname) > NAME_MAX // 4 and len(os.fsencode(fname)) > NAME_MAX:
                self.notes.append(f"sym/: {fname[:40]}... is longer than NAME_MAX: left out")
            elif fname not in core:
                added.setdefault(fname, key)

        # name -> its first (address, key); names met again: name -> {address: key}
        first: dict[str, tuple[int, int]] = {}
        again: dict[str, dict[int, int]] = {}
        for j, sym in enumerate(self.modules):
            seen = first.setdefault(sym.name, (sym.address, n + j))
            if seen[1] != n + j:
                again.setdefault(sym.name, {seen[0]: seen[1]}).setdefault(sym.address, n + j)
        core_names = table.has_name
        quick = NAME_MAX // 4  # a name this short is a valid file name, in any encoding
        for name, (address, key) in first.items():
            if name not in again and not core_names(name):  # the common case: plain NAME
                if len(name) <= quick and "/" not in name:
                    if name not in core:
                        added.setdefault(name, key)
                else:
                    add(escape_file_name(name), key)
                continue
            at = again.get(name) or {address: key}
            core_at: dict[int, int] = {}
            for i in table.indices(name):
                core_at.setdefault(table.addresses[i], i)
            plain = escape_file_name(name)
            if len(core_at.keys() | at.keys()) == 1:
                if not core_at:
                    add(plain, next(iter(at.values())))
                continue  # else: the same pair is the core's file
            i = core.get(plain)
            if i is not None and table.names[i] == name and plain not in removed:
                removed.add(plain)  # the core's only address: NAME@ADDRESS now
                add(f"{plain}@{table.addresses[i]:016x}", i)
            for address, key in at.items():
                if address not in core_at:
                    add(f"{plain}@{address:016x}", key)
        return _Overlay(core, added, removed)

    def extent(self, key: int) -> tuple[int, int]:
        """``(kvirt address, size)`` that the ``sym/`` file of ``key`` shows."""
        n = len(self.table)
        if key < n:
            return self.table.file_extent(key)
        sym = self.modules[key - n]
        return sym.start, min(sym.size, SYM_FILE_CAP)


def _percpu_offset0(kvirt, table: SymbolTable) -> tuple[int | None, str | None]:
    """``__per_cpu_offset[0]`` (include/asm-generic/percpu.h): CPU 0's per-CPU offset."""
    if table.percpu_range() is None:
        return None, None
    at = table.get("__per_cpu_offset")
    if at is None:
        return None, "no unique symbol __per_cpu_offset: per-CPU symbols are left out of sym/"
    try:
        return kvirt.u64(at), None
    except FaultError as exc:
        return None, f"__per_cpu_offset[0] is not in the dump ({exc}): per-CPU symbols left out"


def build_symbol_table(kvirt, vmcoreinfo, user_sources: Sequence[SymbolSource] = ()) -> SymbolTable:
    """Merge the sources (module docstring) into one table."""
    names: list[str] = []
    addrs: list[int] = []
    types: list[str] = []
    sizes: list[int | None] = []
    sources: list[str] = []
    notes: list[str] = []
    kallsyms_unavailable = None

    kallsyms_unavailable = None
    try:
        ks = read_kallsyms(kvirt, vmcoreinfo)
    except Unavailable as exc:
        kallsyms_unavailable = exc.reason
        notes.append(f"kallsyms: unavailable: {exc.reason}")
        kallsyms_unavailable = exc.reason
    else:
        names, addrs, types = ks.names, ks.addresses, list(ks.types)
        sizes = [None] * len(ks)
        where = "" if ks.origin == "VMCOREINFO" else f", found in {ks.origin}"
        sources.append(f"kallsyms ({ks.encoding}{where}): {len(ks)} symbols")

    vi_syms = vmcoreinfo.symbols()
    extra = [(src.kind, src.path, src.entries) for src in user_sources]
    vi_entries = [(n, a, UNKNOWN_TYPE, None) for n, a in vi_syms.items()]
    extra.append(("VMCOREINFO", "SYMBOL()", vi_entries))
    # (name, address) -> index of its first entry, for the names the other sources mention only.
    wanted = {e[0] for _, _, entries in extra for e in entries}
    index: dict[tuple[str, int], int] = {}
    for i, name in enumerate(names):
        if name in wanted:
            index.setdefault((name, addrs[i]), i)

    for kind, path, entries in extra:
        added = 0
        for name, address, type_, size in entries:
            i = index.get((name, address))
            if i is None:
                index[(name, address)] = len(names)
                names.append(name)
                addrs.append(address)
                types.append(type_)
                sizes.append(size)
                added += 1
            elif size is not None and sizes[i] is None:
                sizes[i] = size
        sources.append(f"{kind} {path}: {len(entries)} symbols, {added} new")

    table = SymbolTable(names, addrs, types, sizes, sources=sources, notes=notes)
    table.kallsyms_unavailable = kallsyms_unavailable
    table.percpu_offset0, note = _percpu_offset0(kvirt, table)
    if note:
        table.notes.append(note)
    for line in table.sources + table.notes:
        log.debug("symbols: %s", line)
    return table
