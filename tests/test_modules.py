"""/proc/modules lines and module symbols on a synthetic module list (Linux 6.1 layout), with
the expected text worked out from kernel/module/procfs.c's rules."""

from __future__ import annotations

import struct

import pytest

from tests.kernelfakes import absent, symbol_table
from tests.modbuilder import MOD_SIZE, MODULES, M, Mods
from tests.test_unwind import orc_bytes
from vmcorefs.errors import Unavailable
from vmcorefs.kernel import unwind as U
from vmcorefs.kernel.modules import ModuleList
from vmcorefs.kernel.summary import _listing


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


# -- lists cut short: the modules found stand, the reasons are ml.problems ---------------------


def _three():
    s = Mods()
    mods = [s.module(n, base=0xFFFFFFFFC0000000 + 0x10000 * i, core=0x1000)
            for i, n in enumerate(["a", "b", "c"])]  # fmt: skip
    return s, mods


def _users(s: Mods, used: int, users: list[int]) -> list[int]:
    """``users`` on ``used``'s source_list, in that order; returns the module_use nodes."""
    uses = []
    for user in users:
        use = s.alloc(48)
        s.mem.put64(use + 32, user, used)
        uses.append(use)
    s.ring(used + M["source_list"], uses)
    return uses


def test_users_list_that_loops_keeps_the_users_and_says_so():
    """It used to stop silently: /proc/modules showed a short users list as if whole."""
    s, (a, b, c) = _three()
    uses = _users(s, c, [a, b])
    s.mem.put64(uses[1], uses[0])  # b's module_use leads back to a's: a, b, a, b, ...
    ml = s.listing([a, b, c])
    assert ml.proc_modules().splitlines()[2] == "c 4096 0 a,b, Live 0xffffffffc0020000"
    assert ml.problems == [f"c.source_list: the list loops at {uses[0]:#x} without returning "
                           "to its head"]  # fmt: skip
    # /proc/modules has no room for a note: summary's modules line says it
    assert _listing(lambda: ml, lambda m: m.modules) == (
        f"3 listed, maybe not all: c.source_list: the list loops at {uses[0]:#x} without "
        "returning to its head"
    )


def test_users_list_with_a_broken_prev():
    s, (a, b, c) = _three()
    uses = _users(s, c, [a, b])
    s.mem.put64(uses[1] + 8, c + M["source_list"])  # b's use claims to follow the head
    ml = s.listing([a, b, c])
    assert [m.users for m in ml.modules] == [[], [], ["a"]]
    assert ml.problems == [
        f"c.source_list: the list breaks at {uses[1]:#x} "
        f"(its prev is {c + M['source_list']:#x}, not {uses[0]:#x})"
    ]


def test_a_user_whose_module_is_absent_is_left_out_with_a_reason():
    s, (a, b, c) = _three()
    ghost = 0xFFFF888777000000
    uses = _users(s, c, [a, ghost, b])
    ml = s.listing([a, b, c])
    assert ml.modules[2].users == ["a", "b"]
    assert ml.problems == [
        f"c.source_list: the user at {uses[1]:#x} is not in the dump ({absent(ghost + M['name'])})"
    ]


def test_modules_list_that_loops():
    s, (a, b, c) = _three()
    s.listing([a, b, c])
    s.mem.put64(c + M["list"], b + M["list"])  # c -> b -> c ...
    ml = ModuleList(s.mem, symbol_table(s.syms), s.btf)
    assert [m.name for m in ml.modules] == ["a", "b", "c"]
    assert ml.problems == [
        f"modules: the list loops at {b + M['list']:#x} without returning to its head"
    ]


def test_an_absent_module_is_skipped_and_the_walk_goes_on():
    """b's list_head is in the dump, the rest of its struct module is not: a and c stand."""
    s, (a, b, c) = _three()
    moved = 0xFFFF888003000000 - M["name"]  # its list_head ends a page, its name starts the next
    s.mem.write(moved, s.mem.read(b, MOD_SIZE))
    s.listing([a, moved, c])
    s.mem.drop(moved + M["name"])
    ml = ModuleList(s.mem, symbol_table(s.syms), s.btf)
    assert [m.name for m in ml.modules] == ["a", "c"]
    assert ml.problems == [f"module {moved:#x} is not in the dump ({absent(moved + M['name'])})"]


def test_modules_list_head_absent_is_unavailable():
    s, mods = _three()
    s.listing(mods)
    s.mem.drop(MODULES)
    with pytest.raises(Unavailable, match=r"^modules: the list head is unreadable \(kvirt"):
        ModuleList(s.mem, symbol_table(s.syms), s.btf)
