"""A synthetic module list for unit tests: ``struct module`` (Linux 6.1 layout, from BTF that
:class:`~tests.btfbuilder.BtfBuilder` writes), its ``struct mod_kallsyms`` symbol table
(``Elf64_Sym`` entries, string table, type table), its exports (``struct kernel_symbol``) and
per-CPU area, in a :class:`~tests.kernelfakes.SparseMemory`.

The bytes are laid out from the kernel's definitions (``include/linux/module.h``,
``include/uapi/linux/elf.h``, ``include/linux/export.h``), not from the reader under test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tests.btfbuilder import BtfBuilder
from tests.kernelfakes import SparseMemory, symbol_table
from vmcorefs.kernel.btf import Btf
from vmcorefs.kernel.modules import ModuleList

#: struct module member offsets (bytes) in the synthetic layout.
M = dict(state=0, list=8, name=24, init=80, core=96, init_layout=176, arch=256, taints=280,
         kallsyms=288, source_list=296, exit=312, refcnt=320, syms=336, num_syms=344,
         percpu=352, percpu_size=360)  # fmt: skip
MOD_SIZE = 1024
DATA = 0xFFFFFFFF82000000
MODULES = DATA + 0x10
TAINT_FLAGS = DATA + 0x100
HEAP = 0xFFFF888002000000
#: Module memory for the export tables: PREL32 offsets reach +-2 GiB, as in a real module.
MODULE_HEAP = 0xFFFFFFFFC8000000
# kernel/panic.c taint_flags[] of Linux 6.1: (c_true, module)
TAINTS = [("P", 1), ("F", 1), ("S", 0), ("R", 0), ("M", 0), ("B", 0), ("U", 0), ("D", 0),
          ("A", 0), ("W", 0), ("C", 1), ("I", 0), ("O", 1), ("E", 1), ("L", 0), ("K", 1),
          ("X", 1), ("T", 1), ("N", 1)]  # fmt: skip
#: include/uapi/linux/elf.h
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
STB_LOCAL, STB_GLOBAL = 0, 1
STT_FUNC = 2


def module_btf(*, typetab: bool = True, prel32: bool = True) -> Btf:
    """The types ModuleList reads. ``typetab=False``: ``struct mod_kallsyms`` before Linux 5.2;
    ``prel32=False``: ``struct kernel_symbol`` with absolute pointers (no PREL32 relocations)."""
    b = BtfBuilder()
    u64 = b.int_("long unsigned int", 8)
    uint = b.int_("unsigned int", 4)
    sint = b.int_("int", 4, signed=True)
    char = b.int_("char", 1, signed=True, char=True)
    boolean = b.int_("_Bool", 1, boolean=True)
    name = b.array(char, sint, 56)
    lh = b.next_id
    b.struct("list_head", 16, [("next", lh + 1, 0), ("prev", lh + 1, 64)])
    b.ptr(lh)
    states = ["MODULE_STATE_LIVE", "MODULE_STATE_COMING", "MODULE_STATE_GOING",
              "MODULE_STATE_UNFORMED"]  # fmt: skip
    state = b.enum("module_state", [(n, i) for i, n in enumerate(states)])
    layout = b.struct("module_layout", 80, [("base", u64, 0), ("size", uint, 64),
                                            ("text_size", uint, 96)])  # fmt: skip
    arch = b.struct("mod_arch_specific", 24, [("num_orcs", uint, 0), ("orc_unwind_ip", u64, 64),
                                              ("orc_unwind", u64, 128)])  # fmt: skip
    atomic = b.struct("", 4, [("counter", sint, 0)])
    atomic_t = b.typedef("atomic_t", atomic)
    ks_members = [("symtab", u64, 0), ("num_symtab", uint, 64), ("strtab", u64, 128)]
    if typetab:
        ks_members.append(("typetab", u64, 192))
    b.struct("mod_kallsyms", 32 if typetab else 24, ks_members)
    if prel32:
        ksym = b.struct("kernel_symbol", 12, [("value_offset", sint, 0), ("name_offset", sint, 32),
                                              ("namespace_offset", sint, 64)])  # fmt: skip
    else:
        ksym = b.struct("kernel_symbol", 24, [("value", u64, 0), ("name", u64, 64),
                                              ("namespace", u64, 128)])  # fmt: skip
    ksym_ptr = b.ptr(ksym)
    mod = b.next_id
    b.struct("module", MOD_SIZE, [
        ("state", state, 8 * M["state"]), ("list", lh, 8 * M["list"]),
        ("name", name, 8 * M["name"]), ("init", u64, 8 * M["init"]),
        ("core_layout", layout, 8 * M["core"]), ("init_layout", layout, 8 * M["init_layout"]),
        ("arch", arch, 8 * M["arch"]), ("taints", u64, 8 * M["taints"]),
        ("kallsyms", u64, 8 * M["kallsyms"]), ("source_list", lh, 8 * M["source_list"]),
        ("exit", u64, 8 * M["exit"]), ("refcnt", atomic_t, 8 * M["refcnt"]),
        ("syms", ksym_ptr, 8 * M["syms"]), ("num_syms", uint, 8 * M["num_syms"]),
        ("percpu", u64, 8 * M["percpu"]), ("percpu_size", uint, 8 * M["percpu_size"]),
    ])  # fmt: skip
    assert b.ptr(mod) == mod + 1
    b.struct("module_use", 48, [("source_list", lh, 0), ("target_list", lh, 128),
                                ("source", mod + 1, 256), ("target", mod + 1, 320)])  # fmt: skip
    b.struct("taint_flag", 3, [("c_true", char, 0), ("c_false", char, 8), ("module", boolean, 16)])
    # the ORC entry layout, for the modules' ORC tables
    s16 = b.int_("short int", 2, signed=True)
    b.struct("orc_entry", 6, [("sp_offset", s16, 0), ("bp_offset", s16, 16),
                              ("sp_reg", uint, 32, 4), ("bp_reg", uint, 36, 4),
                              ("type", uint, 40, 2), ("end", uint, 42, 1)])  # fmt: skip
    return Btf(b.build())


@dataclass(frozen=True)
class Sym:
    """One ``Elf64_Sym`` of a module's table, with the letter ``add_kallsyms()`` records."""

    name: bytes
    type: str
    value: int
    shndx: int = 1
    size: int = 0
    info: int = STB_GLOBAL << 4 | STT_FUNC


NULL_SYM = Sym(b"", "U", 0, SHN_UNDEF)


@dataclass(frozen=True)
class SymtabAt:
    """Where :meth:`Mods.symtab` put a table: the ``struct mod_kallsyms`` and its arrays."""

    kallsyms: int
    symtab: int
    strtab: int
    typetab: int
    name_offsets: tuple[int, ...]


class Mods:
    def __init__(self, *, typetab: bool = True, prel32: bool = True) -> None:
        self.mem = SparseMemory()
        self.heap = HEAP
        self.module_heap = MODULE_HEAP
        self.typetab, self.prel32 = typetab, prel32
        for i, (c, module) in enumerate(TAINTS):
            self.mem.write(TAINT_FLAGS + 3 * i, bytes([ord(c), ord(" "), module]))
        self.btf = module_btf(typetab=typetab, prel32=prel32)
        self.syms = {"modules": MODULES, "taint_flags": TAINT_FLAGS}

    def alloc(self, size: int) -> int:
        addr = self.heap
        self.heap += (max(size, 1) + 0xFFF) & ~0xFFF
        return addr

    def module(self, name, *, base, core, init=0, text=None, state=0, refcnt=1, taints=0,
               init_fn=1, exit_fn=1, kallsyms=0, orc=(0, 0, 0), exports=(0, 0),
               percpu=(0, 0)) -> int:  # fmt: skip
        addr = self.alloc(MOD_SIZE)
        m = self.mem
        m.write(addr, bytes(MOD_SIZE))
        m.put32(addr + M["state"], state)
        raw = name if isinstance(name, bytes) else name.encode()
        m.write(addr + M["name"], raw[:56].ljust(56, b"\0"))
        m.put64(addr + M["init"], init_fn)
        m.put64(addr + M["core"], base)
        m.put32(addr + M["core"] + 8, core)
        m.put32(addr + M["core"] + 12, core if text is None else text)
        if init:
            m.put64(addr + M["init_layout"], base + 0x100000)
            m.put32(addr + M["init_layout"] + 8, init)
        m.put32(addr + M["arch"], orc[2])
        m.put64(addr + M["arch"] + 8, orc[0], orc[1])
        m.put64(addr + M["taints"], taints)
        m.put64(addr + M["kallsyms"], kallsyms)
        m.put64(addr + M["exit"], exit_fn)
        m.put32(addr + M["refcnt"], refcnt)
        m.put64(addr + M["syms"], exports[0])
        m.put32(addr + M["num_syms"], exports[1])
        m.put64(addr + M["percpu"], percpu[0])
        m.put32(addr + M["percpu_size"], percpu[1])
        self.ring(addr + M["source_list"], [])
        return addr

    def symtab(self, syms: list[Sym], *, num: int | None = None) -> SymtabAt:
        """A ``struct mod_kallsyms`` over ``syms`` (in order; index 0 should be
        :data:`NULL_SYM`); ``num``: the ``num_symtab`` written (default ``len(syms)``)."""
        strings = bytearray(b"\0")
        offsets = []
        for s in syms:
            if s.name:
                offsets.append(len(strings))
                strings += s.name + b"\0"
            else:
                offsets.append(0)
        symtab = self.alloc(24 * len(syms))
        strtab = self.alloc(len(strings))
        typetab = self.alloc(len(syms))
        for i, (s, off) in enumerate(zip(syms, offsets, strict=True)):
            # before Linux 5.2 add_kallsyms() overwrote st_info with the letter
            info = s.info if self.typetab else ord(s.type)
            self.mem.write(
                symtab + 24 * i, struct.pack("<IBBHQQ", off, info, 0, s.shndx, s.value, s.size)
            )
        self.mem.write(strtab, bytes(strings))
        self.mem.write(typetab, "".join(s.type for s in syms).encode("latin-1"))
        ks = self.alloc(32)
        self.mem.put64(ks, symtab)
        self.mem.put32(ks + 8, len(syms) if num is None else num)
        self.mem.put64(ks + 16, strtab)
        if self.typetab:
            self.mem.put64(ks + 24, typetab)
        return SymtabAt(ks, symtab, strtab, typetab, tuple(offsets))

    def exports(self, entries: list[tuple[bytes, int]]) -> tuple[int, int]:
        """``mod->syms``: a ``struct kernel_symbol`` array in the given order (the kernel's is
        sorted by name); returns ``(syms, num_syms)``."""
        size = 12 if self.prel32 else 24
        syms = self.module_heap
        names = syms + size * len(entries)
        self.module_heap += (names - syms + sum(len(n) + 1 for n, _ in entries) + 0xFFF) & ~0xFFF
        at = names
        for i, (name, value) in enumerate(entries):
            self.mem.write(at, name + b"\0")
            entry = syms + size * i
            if self.prel32:  # each int is relative to its own address
                self.mem.write(entry, struct.pack("<iii", value - entry, at - (entry + 4), 0))
            else:
                self.mem.put64(entry, value, at, 0)
            at += len(name) + 1
        return syms, len(entries)

    def ring(self, head: int, nodes: list[int]) -> None:
        ring = [head, *nodes]
        for i, node in enumerate(ring):
            self.mem.put64(node, ring[(i + 1) % len(ring)], ring[i - 1])

    def uses(self, user: int, used: int) -> None:
        """``user`` depends on ``used``: a module_use on ``used``'s source_list."""
        use = self.alloc(48)
        self.mem.put64(use + 32, user, used)
        self.ring(used + M["source_list"], [use])

    def listing(
        self, mods: list[int], symbols: dict[str, int] | None = None, percpu_offset0=None
    ) -> ModuleList:
        """The list of ``mods`` (in that order); ``symbols``: more core symbols;
        ``percpu_offset0``: ``__per_cpu_offset[0]`` as the core table found it."""
        self.ring(MODULES, [a + M["list"] for a in mods])
        table = symbol_table({**self.syms, **(symbols or {})})
        table.percpu_offset0 = percpu_offset0
        return ModuleList(self.mem, table, self.btf)
