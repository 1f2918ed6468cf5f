"""The VMCOREINFO note, parsed: ordered ``KEY=VALUE`` lines with typed accessors.

The kernel writes it in ``kernel/crash_core.c`` (``VMCOREINFO_*`` macros) and per architecture
(``arch/x86/kernel/machine_kexec_64.c``). Value syntax by key shape, as those macros print it:

=====================  ==========================  ==========================
key                    macro                       value
=====================  ==========================  ==========================
``SYMBOL(name)``       VMCOREINFO_SYMBOL            ``%lx``: hex without 0x
``SYMBOL(name)``       VMCOREINFO_SYMBOL_ARRAY      same
``OFFSET(s.m)``        VMCOREINFO_OFFSET            ``%lu``: decimal
``SIZE(s)``            VMCOREINFO_SIZE/STRUCT_SIZE  ``%lu``: decimal
``LENGTH(name)``       VMCOREINFO_LENGTH            ``%lu``: decimal
``NUMBER(name)``       VMCOREINFO_NUMBER            ``%ld``: signed decimal
``KERNELOFFSET``       arch                         ``%lx``: hex without 0x
``PAGESIZE``           VMCOREINFO_PAGESIZE          ``%ld``: decimal
``CRASHTIME``          crash_save_vmcoreinfo        ``%lld``: decimal seconds
=====================  ==========================  ==========================

A key that occurs twice keeps its last value, as the kernel's own readers (makedumpfile,
crash) do. Keys and values are ``str`` that keep the note's bytes: a byte that is not UTF-8 is
a surrogate (``surrogateescape``), encoded back the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from .errors import Unavailable

_KEY_RE = re.compile(r"^(SYMBOL|OFFSET|SIZE|LENGTH|NUMBER)\((.+)\)$")


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

    # Typed accessors: each returns None when the key is absent ---------------------------
    def _get(self, key: str) -> str | None:
        return self._values.get(key)

    @staticmethod
    def _int(key: str, text: str | None, base: int) -> int | None:
        if text is None:
            return None
        try:
            return int(text.strip(), base)
        except ValueError:
            raise Unavailable(f"VMCOREINFO has a malformed {key}: {text!r}") from None

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``: an address, hex without 0x."""
        key = f"SYMBOL({name})"
        return self._int(key, self._get(key), 16)

    def offset(self, name: str) -> int | None:
        """``OFFSET(struct.member)``: decimal."""
        key = f"OFFSET({name})"
        return self._int(key, self._get(key), 10)

    def size(self, name: str) -> int | None:
        """``SIZE(struct)``: decimal."""
        key = f"SIZE({name})"
        return self._int(key, self._get(key), 10)

    def length(self, name: str) -> int | None:
        """``LENGTH(name)``: decimal."""
        key = f"LENGTH({name})"
        return self._int(key, self._get(key), 10)

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``: signed decimal (``phys_base`` is negative under KASLR)."""
        key = f"NUMBER({name})"
        return self._int(key, self._get(key), 10)

    @property
    def kerneloffset(self) -> int | None:
        """``KERNELOFFSET``: the KASLR slide, hex without 0x."""
        return self._int("KERNELOFFSET", self._get("KERNELOFFSET"), 16)

    @property
    def page_size(self) -> int | None:
        return self._int("PAGESIZE", self._get("PAGESIZE"), 10)

    @property
    def osrelease(self) -> str | None:
        return self._get("OSRELEASE")

    @property
    def build_id(self) -> str | None:
        return self._get("BUILD-ID")

    @property
    def crashtime(self) -> int | None:
        return self._int("CRASHTIME", self._get("CRASHTIME"), 10)

    # Required forms: raise Unavailable naming the missing key ------------------------------
    def need(self, kind: str, name: str) -> int:
        """``need("OFFSET", "vmap_area.list")`` → the value, or Unavailable naming the key."""
        getter = {
            "SYMBOL": self.symbol,
            "OFFSET": self.offset,
            "SIZE": self.size,
            "LENGTH": self.length,
            "NUMBER": self.number,
        }[kind]
        value = getter(name)
        if value is None:
            raise Unavailable(f"VMCOREINFO has no {kind}({name})")
        return value

    def symbols(self) -> dict[str, int]:
        """Every ``SYMBOL()`` key but ``mem_section`` (its value is a pointer, not its address)."""
        out: dict[str, int] = {}
        for key, value in self._values.items():
            m = _KEY_RE.match(key)
            if m and m.group(1) == "SYMBOL" and m.group(2) != "mem_section":
                try:
                    out[m.group(2)] = int(value, 16)
                except ValueError:
                    continue
        return out
