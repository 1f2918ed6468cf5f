"""/proc/modules lines and module symbols on a synthetic module list (Linux 6.1 layout), with
the expected text worked out from kernel/module/procfs.c's rules."""

from __future__ import annotations

import struct

import pytest

from tests.btfbuilder import BtfBuilder
from tests.kernelfakes import SparseMemory, symbol_table
from tests.test_unwind import orc_bytes
from vmcorefs.errors import Unavailable
from vmcorefs.kernel import unwind as U
from vmcorefs.kernel.btf import Btf
from vmcorefs.kernel.modules import ModuleList

M = dict(state=0, list=8, name=24, init=80, core=96, init_layout=176, arch=256, taints=280,
         kallsyms=288, source_list=296, exit=312, refcnt=320)  # fmt: skip
MOD_SIZE = 1024
DATA = 0xFFFFFFFF82000000
MODULES = DATA + 0x10
TAINT_FLAGS = DATA + 0x100
HEAP = 0xFFFF888002000000
# kernel/panic.c taint_flags[] of Linux 6.1: (c_true, module)
TAINTS = [("P", 1), ("F", 1), ("S", 0), ("R", 0), ("M", 0), ("B", 0), ("U", 0), ("D", 0),
          ("A", 0), ("W", 0), ("C", 1), ("I", 0), ("O", 1), ("E", 1), ("L", 0), ("K", 1),
          ("X", 1), ("T", 1), ("N", 1)]  # fmt: skip


def module_btf() -> Btf:
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
    b.struct("mod_kallsyms", 32, [("symtab", u64, 0), ("num_symtab", uint, 64),
                                  ("strtab", u64, 128), ("typetab", u64, 192)])  # fmt: skip
    mod = b.next_id
    b.struct("module", MOD_SIZE, [
        ("state", state, 8 * M["state"]), ("list", lh, 8 * M["list"]),
        ("name", name, 8 * M["name"]), ("init", u64, 8 * M["init"]),
        ("core_layout", layout, 8 * M["core"]), ("init_layout", layout, 8 * M["init_layout"]),
        ("arch", arch, 8 * M["arch"]), ("taints", u64, 8 * M["taints"]),
        ("kallsyms", u64, 8 * M["kallsyms"]), ("source_list", lh, 8 * M["source_list"]),
        ("exit", u64, 8 * M["exit"]), ("refcnt", atomic_t, 8 * M["refcnt"]),
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


class Mods:
    def __init__(self) -> None:
        self.mem = SparseMemory()
        self.heap = HEAP
        for i, (c, module) in enumerate(TAINTS):
            self.mem.write(TAINT_FLAGS + 3 * i, bytes([ord(c), ord(" "), module]))
        self.btf = module_btf()
        self.syms = {"modules": MODULES, "taint_flags": TAINT_FLAGS}

    def alloc(self, size: int) -> int:
        addr = self.heap
        self.heap += (size + 0xFFF) & ~0xFFF
        return addr

    def module(self, name, *, base, core, init=0, text=None, state=0, refcnt=1, taints=0,
               init_fn=1, exit_fn=1, kallsyms=0, orc=(0, 0, 0)) -> int:  # fmt: skip
        addr = self.alloc(MOD_SIZE)
        m = self.mem
        m.write(addr, bytes(MOD_SIZE))
        m.put32(addr + M["state"], state)
        m.write(addr + M["name"], name.encode().ljust(56, b"\0"))
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
        self.ring(addr + M["source_list"], [])
        return addr

    def ring(self, head: int, nodes: list[int]) -> None:
        ring = [head, *nodes]
        for i, node in enumerate(ring):
            self.mem.put64(node, ring[(i + 1) % len(ring)], ring[i - 1])

    def uses(self, user: int, used: int) -> None:
        """``user`` depends on ``used``: a module_use on ``used``'s source_list."""
        use = self.alloc(48)
        self.mem.put64(use + 32, user, used)
        self.ring(used + M["source_list"], [use])

    def listing(self, mods: list[int]) -> ModuleList:
        self.ring(MODULES, [a + M["list"] for a in mods])
        return ModuleList(self.mem, symbol_table(self.syms), self.btf)


def test_proc_modules_lines():
    s = Mods()
    a = s.module("virtio_net", base=0xFFFFFFFFC0000000, core=0x5000, init=0x1000)
    b = s.module("net_failover", base=0xFFFFFFFFC0010000, core=0x3000, refcnt=3)
    s.uses(a, b)
    c = s.module("oot", base=0xFFFFFFFFC0020000, core=0x2000, exit_fn=0,
                 taints=1 << 12 | 1 << 13 | 1 << 9)  # fmt: skip
    d = s.module("coming", base=0xFFFFFFFFC0030000, core=0x1000, state=1)
    e = s.module("going", base=0xFFFFFFFFC0040000, core=0x1000, state=2, taints=1, refcnt=0)
    f = s.module("unformed", base=0xFFFFFFFFC0050000, core=0x1000, state=3)
    ml = s.listing([a, b, c, d, e, f])
    assert ml.proc_modules().splitlines() == [
        "virtio_net 24576 0 - Live 0xffffffffc0000000",
        "net_failover 12288 2 virtio_net, Live 0xffffffffc0010000",
        "oot 8192 0 [permanent], Live 0xffffffffc0020000 (OE)",  # W is not a module taint
        "coming 4096 0 - Loading 0xffffffffc0030000 (+)",
        "going 4096 -1 - Unloading 0xffffffffc0040000 (P-)",
    ]
    assert ml.problems == []


def test_module_symbols_as_find_kallsyms_symbol():
    s = Mods()
    base, text = 0xFFFFFFFFC0000000, 0x100
    symtab, strtab = s.alloc(4096), s.alloc(4096)
    names = b"\0fw_a\0$x\0fw_b\0fw_data\0undef\0"

    def off(n: bytes) -> int:
        return names.index(b"\0" + n + b"\0") + 1

    entries = [
        (0, 0, 0),  # index 0: the null symbol
        (off(b"fw_a"), 1, base + 0x10),
        (off(b"$x"), 1, base + 0x18),  # a mapping symbol: skipped
        (0, 1, base + 0x20),  # no name: skipped
        (off(b"undef"), 0, base + 0x30),  # SHN_UNDEF: skipped
        (off(b"fw_b"), 1, base + 0x40),
        (off(b"fw_data"), 2, base + text + 0x10),
    ]
    for i, (name, shndx, value) in enumerate(entries):
        s.mem.write(symtab + 24 * i, struct.pack("<IBBHQQ", name, 0x12, 0, shndx, value, 0))
    s.mem.write(strtab, names)
    ks = s.alloc(32)
    s.mem.put64(ks, symtab)
    s.mem.put32(ks + 8, len(entries))
    s.mem.put64(ks + 16, strtab)
    a = s.module("qemu_fw_cfg", base=base, core=0x1000, text=text, kallsyms=ks)
    ml = s.listing([a])
    assert ml.symbol(base + 0x20) == ("fw_a", 0x10, 0x30, "qemu_fw_cfg")
    assert ml.symbol(base + 0x50) == ("fw_b", 0x10, text - 0x40, "qemu_fw_cfg")
    assert ml.symbol(base + 0x5) is None
    assert ml.symbol(0xFFFFFFFFC0100000) is None
    assert ml.module_at(base + 0xFFF).name == "qemu_fw_cfg"


def test_module_orc_table():
    s = Mods()
    base = 0xFFFFFFFFC0000000
    ip, orc = base + 0x800, base + 0x900  # in the module: the ints are relative (32-bit)
    rows = [(base, orc_bytes(8, 0, U.ORC_REG_SP, 0, U.ORC_TYPE_CALL)),
            (base + 0x10, orc_bytes(32, 0, U.ORC_REG_SP, 0, U.ORC_TYPE_CALL))]  # fmt: skip
    for i, (at, raw) in enumerate(rows):
        s.mem.put32(ip + 4 * i, at - (ip + 4 * i))
        s.mem.write(orc + 6 * i, raw)
    a = s.module("m", base=base, core=0x1000, orc=(ip, orc, 2))
    ml = s.listing([a])
    table = ml.orc_table(base + 0x20)
    assert table.find(base + 0x20).sp_offset == 32
    assert table.find(base + 0x8).sp_offset == 8
    assert ml.orc_table(base + 0x2000) is None


def test_broken_list_and_missing_symbol():
    s = Mods()
    a = s.module("a", base=0xFFFFFFFFC0000000, core=0x1000)
    s.listing([a])
    s.mem.put64(a + M["list"], 0xFFFF888777000000)  # into memory the dump lacks
    ml = ModuleList(s.mem, symbol_table(s.syms), s.btf)
    assert [m.name for m in ml.modules] == ["a"] and ml.problems
    with pytest.raises(Unavailable, match="modules"):
        ModuleList(s.mem, symbol_table({}), s.btf)
