"""Each loaded module's own symbols: its ``struct mod_kallsyms``, decoded as ``/proc/kallsyms``
lists it, and the symbols that ``sym/`` shows.

``/proc/kallsyms`` lists the modules after the core (``kernel/kallsyms.c`` ``update_iter_mod``,
``s_show``; ``kernel/module/kallsyms.c`` ``module_get_kallsym``, the same in Linux 6.1 and 6.12;
``kernel/module.c`` before 5.19):

* modules in list order (the newest first), ``MODULE_STATE_UNFORMED`` ones skipped;
* every entry ``0 .. num_symtab - 1`` of ``mod->kallsyms``: the module's whole ELF symbol table
  while its init runs, the core-only copy (``core_kallsyms``, entry 0 the null symbol) after;
* an entry whose name is empty is not printed (``s_show``), nothing else is left out;
* ``%016x %c %s\\t[%s]``: ``st_value``; the type letter that ``add_kallsyms()`` recorded
  (``typetab[i]`` since Linux 5.2, commit 1c7651f43777 "kallsyms: store type information in
  its own array"; before, it overwrote ``st_info``), upper case when the module exports that
  name at that value (``is_exported()``: a ``bsearch`` of ``mod->syms``, which holds the
  non-GPL exports only), lower case otherwise (the kernel's ``toupper``/``tolower``, Latin-1
  included); the name as ``strscpy(KSYM_NAME_LEN)`` copies it; the module's name as
  ``strscpy(MODULE_NAME_LEN)`` copies it. A module with an empty name would be printed as a
  core symbol (``s_show`` tests ``module_name[0]``): ``%016x %c %s``, the letter as recorded.

``sym/`` takes the entries that define something in memory: a name, a section (not
``SHN_UNDEF``, not ``SHN_ABS`` or another reserved index). Per-CPU ones (``[mod->percpu,
+ percpu_size)``) show CPU 0's copy, as the core's do. Size: the symbol's own ``st_size``, else
up to the module's next symbol, else to the end of the module memory that holds it.

A symbol table from the dump may be hostile: every count is capped (:data:`MAX_MODULE_SYMBOLS`
a module, :data:`MAX_ALL_MODULE_SYMBOLS` in all), every string read bounded, and a table or an
entry that cannot be read is left out with the reason in ``ModSymtab.problems``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import FaultError
from .btf import Btf

#: include/linux/kallsyms.h KSYM_NAME_LEN (512 since Linux 6.1; 128 before, where a name of
#: 128 bytes or more is cut shorter than here).
KSYM_NAME_LEN = 512
#: Symbols per module at most, and in all modules together (a large server has ~200k).
MAX_MODULE_SYMBOLS = 1 << 20
MAX_ALL_MODULE_SYMBOLS = 1 << 21
#: The most of one module's string table read in one piece (names past it are left out).
MAX_STRTAB = 32 << 20
#: A module's exports read all at once (to look them up in a dict) up to this many.
MAX_EXPORTS_READ_AT_ONCE = 1 << 16
#: include/uapi/linux/elf.h: Elf64_Sym, and the section indexes that are not sections.
ELF64_SYM = struct.Struct("<IBBHQQ")
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ModKallsymsLayout:
    """Offsets of ``struct mod_kallsyms``, ``struct kernel_symbol`` and the ``struct module``
    members that module symbols need, from BTF."""

    kallsyms: int  #: struct module: the ``struct mod_kallsyms *kallsyms``
    symtab: int
    num_symtab: int
    strtab: int
    typetab: int | None  #: None before Linux 5.2: the type letter is in ``st_info``
    syms: int | None  #: struct module: ``const struct kernel_symbol *syms``
    num_syms: int | None
    ksym_size: int
    ksym_value: int
    ksym_name: int
    ksym_prel32: bool  #: CONFIG_HAVE_ARCH_PREL32_RELOCATIONS: ``int`` offsets to self
    percpu: int | None  #: struct module: ``void __percpu *percpu`` (CONFIG_SMP)
    percpu_size: int | None

    @classmethod
    def from_btf(cls, btf: Btf) -> ModKallsymsLayout | None:
        """None when the kernel keeps no module symbols (CONFIG_KALLSYMS off)."""
        mod = btf.find("struct module")
        if not btf.has_member(mod, "kallsyms"):
            return None
        off = btf.offsetof

        def member(name: str) -> int | None:
            return off(mod, name) if btf.has_member(mod, name) else None

        ks = "struct mod_kallsyms"
        typetab = off(ks, "typetab") if btf.has_member(ks, "typetab") else None
        syms, num_syms = member("syms"), member("num_syms")
        ksym_size = ksym_value = ksym_name = 0
        prel32 = False
        if syms is not None and num_syms is not None:
            kst = btf.find("struct kernel_symbol")
            ksym_size = btf.sizeof(kst)
            prel32 = btf.has_member(kst, "value_offset")
            ksym_value = off(kst, "value_offset" if prel32 else "value")
            ksym_name = off(kst, "name_offset" if prel32 else "name")
        return cls(
            kallsyms=off(mod, "kallsyms"),
            symtab=off(ks, "symtab"),
            num_symtab=off(ks, "num_symtab"),
            strtab=off(ks, "strtab"),
            typetab=typetab,
            syms=syms if num_syms is not None else None,
            num_syms=num_syms if syms is not None else None,
            ksym_size=ksym_size,
            ksym_value=ksym_value,
            ksym_name=ksym_name,
            ksym_prel32=prel32,
            percpu=member("percpu"),
            percpu_size=member("percpu_size"),
        )


@dataclass(slots=True)
class ModSym:
    """One entry of a module's kallsyms (only those with a name are kept)."""

    index: int  #: its index in the module's table
    value: int  #: st_value
    type: int | None  #: the type byte that add_kallsyms() recorded (None: not in the dump)
    name: bytes  #: as strscpy(KSYM_NAME_LEN) copies it
    shndx: int  #: st_shndx
    size: int  #: st_size
    text: str  #: the name as text that encodes back to the same bytes (as the core's names)


@dataclass
class ModSymtab:
    """A module's kallsyms, decoded: the named entries in table order, and what was lost."""

    symbols: list[ModSym] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_num_symtab(kvirt, layout: ModKallsymsLayout, module_addr: int) -> tuple[int, int]:
    """``(mod->kallsyms, its num_symtab)``; FaultError when either is not in the dump."""
    ks = kvirt.u64(module_addr + layout.kallsyms)
    if not ks:
        return 0, 0
    return ks, kvirt.u32(ks + layout.num_symtab)


def read_symtab(kvirt, layout: ModKallsymsLayout, ks: int, count: int, what: str) -> ModSymtab:
    """The first ``count`` entries of the ``struct mod_kallsyms`` at ``ks`` (the caller has
    capped ``count``); ``what`` names the module in problems."""
    out = ModSymtab()
    if not ks or count <= 0:
        return out
    try:
        symtab = kvirt.u64(ks + layout.symtab)
        strtab = kvirt.u64(ks + layout.strtab)
        typetab = kvirt.u64(ks + layout.typetab) if layout.typetab is not None else None
    except FaultError as exc:
        out.problems.append(f"{what}: its struct mod_kallsyms is not in the dump ({exc})")
        return out
    raw = kvirt.read(symtab, count * ELF64_SYM.size)
    have = len(raw) // ELF64_SYM.size
    if have < count:
        out.problems.append(
            f"{what}: {count - have} of {count} symbols are past memory the dump lacks "
            f"(symtab {symtab:#x})"
        )
    if not have:
        return out
    entries = list(ELF64_SYM.iter_unpack(raw[: have * ELF64_SYM.size]))
    types: bytes | None = None
    if typetab is not None:
        types = kvirt.read(typetab, have)
        if len(types) < have:
            out.problems.append(
                f"{what}: the types of {have - len(types)} symbols are not in the dump "
                f"(typetab {typetab:#x})"
            )
    # One read for the names: up to the last one's end, capped; a name past what could be
    # read (absent memory, past the cap) is left out, never cut short.
    top = max(e[0] for e in entries)
    block = kvirt.read(strtab, min(top + KSYM_NAME_LEN, MAX_STRTAB))
    lost = 0
    longest = KSYM_NAME_LEN - 1
    for i, (st_name, st_info, _other, shndx, value, size) in enumerate(entries):
        type_: int | None = None  # not in the dump (counted above): not in kallsyms either
        if types is None:
            type_ = st_info  # before Linux 5.2 add_kallsyms() wrote the letter here
        elif i < len(types):
            type_ = types[i]
        end = block.find(b"\0", st_name, st_name + longest)
        if end < 0:
            if len(block) < st_name + longest:
                lost += 1
                continue
            end = st_name + longest  # strscpy() cuts it there
        if end == st_name:
            continue  # no name: s_show() skips it
        name = block[st_name:end]
        out.symbols.append(
            ModSym(i, value, type_, name, shndx, size, name.decode("utf-8", "surrogateescape"))
        )
    if lost:
        out.problems.append(
            f"{what}: the names of {lost} symbols are not in the dump (strtab {strtab:#x})"
        )
    return out


class Exports:
    """``is_exported()``: whether a module exports a name at a value, by the kernel's own
    ``bsearch`` over ``mod->syms`` (sorted by name at build time; searched the same way even if
    a dump's table is not). Names are read once each; a probe that faults counts as not found,
    and ``problem`` says so. A table that is whole, strictly sorted and small enough is looked
    up in a dict instead: the search then finds exactly what the dict does."""

    def __init__(self, kvirt, layout: ModKallsymsLayout, syms: int, num: int) -> None:
        self.kvirt, self.layout = kvirt, layout
        self.syms, self.num = syms, num
        self._entries: dict[int, tuple[bytes, int] | None] = {}
        self._by_name: dict[bytes, int] | None = None
        self._checked = False
        self.problem: str | None = None

    def _entry(self, i: int) -> tuple[bytes, int] | None:
        if i not in self._entries:
            lay, kv = self.layout, self.kvirt
            at = self.syms + i * lay.ksym_size
            try:
                if lay.ksym_prel32:  # offset_to_ptr(): relative to the member's own address
                    value = (at + lay.ksym_value + kv.s32(at + lay.ksym_value)) & _MASK64
                    name_at = (at + lay.ksym_name + kv.s32(at + lay.ksym_name)) & _MASK64
                else:
                    value, name_at = kv.u64(at + lay.ksym_value), kv.u64(at + lay.ksym_name)
                raw = kv.read(name_at, KSYM_NAME_LEN)
                nul = raw.find(b"\0")
                if nul < 0:
                    raise FaultError(kv.name, name_at + len(raw))
                self._entries[i] = (raw[:nul], value)
            except FaultError as exc:
                self.problem = f"its exported symbols are not all in the dump ({exc})"
                self._entries[i] = None
        return self._entries[i]

    def _sorted_table(self) -> dict[bytes, int] | None:
        if not self._checked:
            self._checked = True
            if self.num <= MAX_EXPORTS_READ_AT_ONCE:
                entries = [self._entry(i) for i in range(self.num)]
                if all(e is not None for e in entries):
                    names = [e[0] for e in entries]  # type: ignore[index]
                    if all(a < b for a, b in zip(names, names[1:], strict=False)):
                        self._by_name = dict(entries)  # type: ignore[arg-type]
        return self._by_name

    def checker(self) -> Callable[[bytes, int], bool]:
        """``exported``, or the same answer from a dict when the table allows it."""
        table = self._sorted_table()
        if table is None:
            return self.exported
        get = table.get
        return lambda name, value: get(name) == value

    def exported(self, name: bytes, value: int) -> bool:
        table = self._sorted_table()
        if table is not None:
            return table.get(name) == value
        base, num = 0, self.num
        while num > 0:  # lib/bsearch.c, with cmp_name() = strcmp()
            pivot = base + (num >> 1)
            entry = self._entry(pivot)
            if entry is None:
                return False
            if name == entry[0]:
                return entry[1] == value
            if name > entry[0]:
                base = pivot + 1
                num -= 1
            num >>= 1
        return False


def _is_upper(c: int) -> bool:
    """include/linux/ctype.h over lib/ctype.c's table: ASCII and Latin-1 capitals."""
    return 0x41 <= c <= 0x5A or 0xC0 <= c <= 0xDE and c != 0xD7


def _is_lower(c: int) -> bool:
    return 0x61 <= c <= 0x7A or 0xDF <= c <= 0xFF and c != 0xF7


def kernel_toupper(c: int) -> int:
    return c - 0x20 if _is_lower(c) else c


def kernel_tolower(c: int) -> int:
    return c + 0x20 if _is_upper(c) else c


def _text(raw: bytes) -> str:
    """Bytes from the dump as text that encodes back to the same bytes (as the core's)."""
    return raw.decode("utf-8", "surrogateescape")


#: Each type byte as printed: as recorded, upper case (exported), lower case (not).
_AS_IS = [_text(bytes([c])) for c in range(256)]
_UPPER = [_text(bytes([kernel_toupper(c)])) for c in range(256)]
_LOWER = [_text(bytes([kernel_tolower(c)])) for c in range(256)]


def kallsyms_lines(module_name: bytes, table: ModSymtab, exports: Exports | None) -> list[str]:
    """The lines ``/proc/kallsyms`` prints for one module (see the module docstring)."""
    symbols = [s for s in table.symbols if s.type is not None]  # else not in the dump (noted)
    if not module_name:
        return [f"{s.value:016x} {_AS_IS[s.type]} {s.text}\n" for s in symbols]  # type: ignore[index]
    tail = f"\t[{_text(module_name)}]\n"
    exported = exports.checker() if exports is not None else None
    lines = []
    for s in symbols:
        letters = _UPPER if exported is not None and exported(s.name, s.value) else _LOWER
        lines.append(f"{s.value:016x} {letters[s.type]} {s.text}{tail}")  # type: ignore[index]
    return lines


@dataclass(slots=True)
class ModuleSymbolFile:
    """A module's symbol as ``sym/`` shows it."""

    name: str
    address: int  #: the symbol's value (what kallsyms prints, what NAME@ADDRESS names)
    start: int  #: where its bytes are: the address, or CPU 0's copy of a per-CPU symbol
    size: int
    module: str


def symbol_files(
    module: str,
    table: ModSymtab,
    ranges: list[tuple[int, int]],
    percpu: tuple[int, int] | None,
    percpu_offset0: int | None,
) -> tuple[list[ModuleSymbolFile], int]:
    """The ``sym/`` entries of the module named ``module``, and how many per-CPU symbols were
    left out (``__per_cpu_offset[0]`` unknown). ``ranges``: the module's memory; ``percpu``:
    its per-CPU area ``(start, size)``."""
    # in one of the module's sections: not undefined, absolute or common
    defined = [s for s in table.symbols if SHN_UNDEF < s.shndx < SHN_LORESERVE]
    pcpu = (percpu[0], percpu[0] + percpu[1]) if percpu is not None and percpu[1] else None
    regions = sorted({*ranges, *([pcpu] if pcpu else [])})
    values = sorted({s.value for s in defined})
    out: list[ModuleSymbolFile] = []
    dropped = 0
    lo = hi = 0  # the region of the symbol before: most neighbours share it
    for s in defined:
        value = s.value
        if not lo <= value < hi:
            lo = hi = 0
            for r_lo, r_hi in regions:
                if r_lo <= value < r_hi:
                    lo, hi = r_lo, r_hi
                    break
        size = s.size
        if not size and hi:
            i = bisect.bisect_right(values, value)
            size = (values[i] if i < len(values) and values[i] < hi else hi) - value
        start = value
        if pcpu is not None and hi and lo == pcpu[0]:
            if percpu_offset0 is None:
                dropped += 1
                continue
            start = (percpu_offset0 + value) & _MASK64
        out.append(ModuleSymbolFile(s.text, value, start, size, module))
    return out, dropped
