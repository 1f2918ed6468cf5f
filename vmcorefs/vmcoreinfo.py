"""The VMCOREINFO note, parsed: ordered ``KEY=VALUE`` lines with typed accessors.

The kernel writes it in ``kernel/crash_core.c`` (``VMCOREINFO_*`` macros) and per architecture
(``arch/x86/kernel/machine_kexec_64.c``). Value syntax by key shape, as those macros print it:

=========================  ===========================  =============================
key                        macro                        value
=========================  ===========================  =============================
``SYMBOL(name)``           VMCOREINFO_SYMBOL            ``%lx``: hex without 0x
``SYMBOL(name)``           VMCOREINFO_SYMBOL_ARRAY      same
``OFFSET(s.m)``            VMCOREINFO_OFFSET            ``%lu``: decimal
``SIZE(s)``                VMCOREINFO_SIZE/STRUCT_SIZE  ``%lu``: decimal
``LENGTH(name)``           VMCOREINFO_LENGTH            ``%lu``: decimal
``NUMBER(name)``           VMCOREINFO_NUMBER            ``%ld``: signed decimal
``NUMBER(VMALLOC_START)``  vmcoreinfo_append_str        ``0x%lx``: hex with 0x (6.9+)
``KERNELOFFSET``           arch                         ``%lx``: hex without 0x
``PAGESIZE``               VMCOREINFO_PAGESIZE          ``%ld``: decimal
``CRASHTIME``              crash_save_vmcoreinfo        ``%lld``: decimal seconds
=========================  ===========================  =============================

A key that occurs twice keeps its last value, as the kernel's own readers (makedumpfile,
crash) do. Keys and values are ``str`` that keep the note's bytes: a byte that is not UTF-8 is
a surrogate (``surrogateescape``), encoded back the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from .errors import Unavailable

_KEY_RE = re.compile(r"^(SYMBOL|OFFSET|SIZE|LENGTH|NUMBER)\((.+)\)$")
#: The value syntax the kernel prints: ``%ld``/``%lu``/``%lld`` and ``%lx``. (Python's int()
#: would also take ``+``, ``_`` and ``0x``, which no kernel writes.)
_DECIMAL = re.compile(r"-?[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
#: ``0x%lx``: lowercase hex digits after ``0x``.
_PREFIXED_HEX = re.compile(r"0x[0-9a-f]+")
#: The ``NUMBER()`` keys an x86_64 kernel writes as ``0x%lx`` (an unsigned long) instead of
#: VMCOREINFO_NUMBER's ``%ld``: ``VMALLOC_START``, written by kernel/vmcore_info.c
#: (crash_core.c before 6.9) since 6.9, when vmap_area_list went away. Only these keys take
#: that form, and only that form (other architectures write more: arm64's MODULES_VADDR ...).
HEX_NUMBERS = frozenset({"VMALLOC_START"})

# Ranges every value of a kind has (the C types the kernel prints); callers narrow them.
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
ULONG_MAX = (1 << 64) - 1
#: Longer values are out of any range without being converted (int() is quadratic in digits).
MAX_DIGITS = 40
#: Default bound of SIZE() and of an OFFSET() without its structure's size: the largest
#: structure VMCOREINFO describes is ``pglist_data``, 174,208 bytes on Debian's 6.1 (its
#: ``node_zones[]`` and per-node lists); 1 MiB leaves room for any configuration.
MAX_STRUCT_SIZE = 1 << 20
#: Default bound of LENGTH(): the longest array is ``mem_section`` without SPARSEMEM_EXTREME,
#: ``NR_MEM_SECTIONS`` = 2**(MAX_PHYSMEM_BITS - SECTION_SIZE_BITS), 2**32 at the widest.
MAX_LENGTH = 1 << 32
#: arch/x86/include/asm/page_types.h: PAGE_SHIFT is 12 on x86_64, whatever the configuration.
X86_64_PAGE_SIZE = 4096
#: KERNELOFFSET is ``_text - __START_KERNEL``; KASLR moves the kernel inside
#: ``KERNEL_IMAGE_SIZE`` (arch/x86/include/asm/page_64_types.h: 1 GiB with RANDOMIZE_BASE).
MAX_KERNELOFFSET = 1 << 30


def _shown(text: str) -> str:
    """A value as a message quotes it: cut when it is longer than any real one."""
    return text if len(text) <= MAX_DIGITS else text[:MAX_DIGITS] + "..."


class VmcoreInfo(Mapping[str, str]):
    """Ordered key → value view of the note; ``raw`` keeps the text byte for byte."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw.rstrip(b"\0")
        self._values: dict[str, str] = {}
        # surrogateescape: bytes that are not UTF-8 stay in the text as surrogates and are
        # written back as those bytes (info/, summary, README hold the note's own bytes).
        for line in self.raw.decode("utf-8", "surrogateescape").split("\n"):
            key, sep, value = line.partition("=")
            if sep:  # an empty key too: info/ names it by the escape rule
                self._values.pop(key, None)  # a repeated key moves to its last position
                self._values[key] = value

    # Mapping protocol -------------------------------------------------------------------
    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    # Typed accessors --------------------------------------------------------------------
    # Each returns None when the key is absent, and raises Unavailable naming the key, its value
    # and the range when the value is malformed or outside the range the caller can use: every
    # number from the note is checked here, once, before it becomes a size, shift, divisor,
    # offset or count.
    def _get(self, key: str) -> str | None:
        return self._values.get(key)

    def _checked(
        self, key: str, lo: int, hi: int, *, base: int = 10, what: str = "", prefixed: bool = False
    ) -> int | None:
        """The value of ``key`` parsed in ``base`` (after ``0x`` when ``prefixed``), None when
        absent, else within ``[lo, hi]``."""
        text = self._values.get(key)
        if text is None:
            return None
        text = text.strip()
        form = _PREFIXED_HEX if prefixed else _HEX if base == 16 else _DECIMAL
        if not form.fullmatch(text):
            raise Unavailable(f"VMCOREINFO has a malformed {key}: {_shown(text)!r}")
        value = int(text, base) if len(text) <= MAX_DIGITS else None
        if value is None or not lo <= value <= hi:
            fmt = "#x" if base == 16 else "d"
            limits = f"{lo:{fmt}}–{hi:{fmt}}{what}"
            raise Unavailable(f"VMCOREINFO {key}={_shown(text)} is out of range ({limits})")
        return value

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``: an address (``%lx``, an unsigned long)."""
        return self._checked(f"SYMBOL({name})", 0, ULONG_MAX, base=16)

    def number(self, name: str, lo: int | None = None, hi: int | None = None) -> int | None:
        """``NUMBER(name)`` within ``[lo, hi]``: ``%ld`` (signed: ``phys_base`` is negative
        under KASLR; default the range of a long), or ``0x%lx`` for :data:`HEX_NUMBERS`
        (default the range of an unsigned long)."""
        if name in HEX_NUMBERS:
            lo, hi = 0 if lo is None else lo, ULONG_MAX if hi is None else hi
            return self._checked(f"NUMBER({name})", lo, hi, base=16, prefixed=True)
        lo, hi = LONG_MIN if lo is None else lo, LONG_MAX if hi is None else hi
        return self._checked(f"NUMBER({name})", lo, hi)

    def single_bit(self, name: str, *, zero: bool = False) -> int | None:
        """``NUMBER(name)`` that the kernel defines as ``1UL << n`` (``PG_head_mask``,
        ``sme_mask``): one bit of an unsigned long (or 0 when ``zero``)."""
        value = self.number(name, 0 if zero else 1, 1 << 63)
        if value is not None and value & (value - 1):
            raise Unavailable(f"VMCOREINFO NUMBER({name})={value} is not a single bit")
        return value

    def offset(self, name: str, within: int | None = None, width: int = 1) -> int | None:
        """``OFFSET(struct.member)``: a field of ``width`` bytes inside a structure of ``within``
        bytes (its ``SIZE()``, already checked), else inside :data:`MAX_STRUCT_SIZE`."""
        size = MAX_STRUCT_SIZE if within is None else within
        what = f": {width} bytes in a {size}-byte structure" if within is not None else ""
        if width > size:
            text = self._values.get(f"OFFSET({name})")
            if text is not None:
                raise Unavailable(
                    f"VMCOREINFO OFFSET({name})={_shown(text.strip())} is out of range "
                    f"({width} bytes cannot lie in a {size}-byte structure)"
                )
        return self._checked(f"OFFSET({name})", 0, size - width, what=what)

    def size(self, name: str, lo: int = 1, hi: int = MAX_STRUCT_SIZE) -> int | None:
        """``SIZE(struct)`` within ``[lo, hi]`` (default: not empty, at most
        :data:`MAX_STRUCT_SIZE`)."""
        return self._checked(f"SIZE({name})", lo, hi)

    def length(self, name: str, lo: int = 1, hi: int = MAX_LENGTH) -> int | None:
        """``LENGTH(array)``: an element count within ``[lo, hi]``."""
        return self._checked(f"LENGTH({name})", lo, hi)

    @property
    def kerneloffset(self) -> int | None:
        """``KERNELOFFSET``: the KASLR slide, hex without 0x."""
        return self._checked("KERNELOFFSET", 0, MAX_KERNELOFFSET, base=16)

    @property
    def page_size(self) -> int | None:
        """``PAGESIZE``: x86_64 has one (``PAGE_SHIFT`` 12)."""
        return self._checked("PAGESIZE", X86_64_PAGE_SIZE, X86_64_PAGE_SIZE)

    @property
    def osrelease(self) -> str | None:
        return self._get("OSRELEASE")

    @property
    def build_id(self) -> str | None:
        return self._get("BUILD-ID")

    @property
    def crashtime(self) -> int | None:
        """``CRASHTIME``: seconds since the epoch (``%lld``)."""
        return self._checked("CRASHTIME", LONG_MIN, LONG_MAX)

    # Required forms: raise Unavailable naming the missing key ------------------------------
    def need(self, kind: str, name: str, *args: int, **bounds: int) -> int:
        """``need("OFFSET", "vmap_area.list")`` → the value, or Unavailable naming the key;
        ``args``/``bounds`` are the range of the accessor (``need("NUMBER", n, 0, 63)``)."""
        getter = {
            "SYMBOL": self.symbol,
            "OFFSET": self.offset,
            "SIZE": self.size,
            "LENGTH": self.length,
            "NUMBER": self.number,
        }[kind]
        value = getter(name, *args, **bounds)
        if value is None:
            raise Unavailable(f"VMCOREINFO has no {kind}({name})")
        return value

    def symbols(self) -> dict[str, int]:
        """Every ``SYMBOL()`` key but ``mem_section`` (its value is a pointer, not its address)."""
        out: dict[str, int] = {}
        for key in self._values:
            m = _KEY_RE.match(key)
            if m and m.group(1) == "SYMBOL" and m.group(2) != "mem_section":
                try:
                    address = self.symbol(m.group(2))
                except Unavailable:
                    continue  # a malformed address names nothing
                if address is not None:
                    out[m.group(2)] = address
        return out
