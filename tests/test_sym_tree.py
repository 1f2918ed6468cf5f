"""``kallsyms`` and ``sym/`` in the tree: real dumps against gt/kallsyms.txt, and a synthetic
table for sizes, naming and partly absent memory."""

from __future__ import annotations

import os
import random
from types import SimpleNamespace

import pytest
from symtables import STEXT, FakeKvirt, build, gt_core_lines

from vmcorefs.errors import FaultError
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.kallsyms import ABSOLUTE_PERCPU
from vmcorefs.kernel.symbols import SYM_FILE_CAP, SymbolFiles, SymbolTable, build_symbol_table
from vmcorefs.tree import NotFound, _section_sym, build_tree


@pytest.fixture(scope="module")
def mounted(case):
    dump = open_dump(str(case.file("vmcore.elf")))
    yield case, dump, build_tree(dump)
    dump.close()


def sym_path(name: str, address: int, by_name: dict[str, set[int]]) -> str:
    return f"sym/{name}" if len(by_name[name]) == 1 else f"sym/{name}@{address:016x}"


@pytest.mark.realdump
def test_kallsyms_file_holds_every_core_line(mounted):
    case, _dump, tree = mounted
    node = tree.lookup("kallsyms")
    text = node.read(0, node.size()).decode()
    lines = text.splitlines()
    core = [line for line in lines if "\t" not in line]  # the modules' lines follow the core's
    assert lines[: len(core)] == core
    have = set(core)
    for addr, type_, name in gt_core_lines(case):
        assert f"{addr:016x} {type_} {name}" in have
    addrs = [int(line[:16], 16) for line in core]
    assert addrs == sorted(addrs)
    assert all(line[16] == " " and line[18] == " " for line in lines)


@pytest.mark.realdump
def test_sym_lists_every_name_address_pair(mounted):
    case, _dump, tree = mounted
    gt = gt_core_lines(case)
    by_name: dict[str, set[int]] = {}
    for addr, _t, name in gt:
        by_name.setdefault(name, set()).add(addr)
    listing = set(tree.lookup("sym").entries())
    for name, addrs in by_name.items():
        for addr in addrs:
            assert sym_path(name, addr, by_name)[4:] in listing
    for name, addrs in by_name.items():
        if len(addrs) > 1:
            assert name not in listing  # no plain NAME when it names several addresses


@pytest.mark.realdump
def test_sym_reads_kvirt_at_the_symbol(mounted):
    case, dump, tree = mounted
    gt = gt_core_lines(case)
    by_name: dict[str, set[int]] = {}
    for addr, _t, name in gt:
        by_name.setdefault(name, set()).add(addr)
    # The table's other source: VMCOREINFO's SYMBOL() keys (mem_section is a value).
    vi = case.file("vmcoreinfo.txt").read_text().splitlines()
    extra = {
        int(v, 16)
        for k, _, v in (line.partition("=") for line in vi)
        if k.startswith("SYMBOL(") and k != "SYMBOL(mem_section)"
    }
    addrs = sorted({a for a, _t, _n in gt} | extra)
    picks = [g for g in gt if g[1] in "TtDdRrBb"]
    picks = random.Random(31337).sample(picks, 200)
    picks += [g for g in gt if g[2] in ("linux_banner", "init_uts_ns")]
    for addr, _t, name in picks:
        node = tree.lookup(sym_path(name, addr, by_name))
        nxt = addrs[addrs.index(addr) + 1] if addr != addrs[-1] else addr
        assert node.size() == min(nxt - addr, SYM_FILE_CAP)
        n = min(64, node.size())
        try:
            want = dump.kvirt.read_exact(addr, n)
        except FaultError:
            with pytest.raises(FaultError):
                node.read(0, n)
        else:
            assert node.read(0, n) == want


@pytest.mark.realdump
def test_banner_and_marker(mounted):
    case, _dump, tree = mounted
    node = tree.lookup("sym/linux_banner")
    assert node.read(0, 64).startswith(f"Linux version {case.truth['osrelease']} ".encode())
    marker = case.truth["marker"].encode()
    node = tree.lookup("sym/__log_buf")
    assert marker in node.read(0, node.size())


@pytest.mark.realdump
def test_percpu_symbols_read_cpu0_copy(mounted):
    case, dump, tree = mounted
    base = case.truth["runtime_bases"]["__per_cpu_offset"][0]
    gt = {name: addr for addr, t, name in gt_core_lines(case) if t == "A"}
    for name in ("cpu_tss_rw", "fixed_percpu_data", "current_task"):
        node = tree.lookup(f"sym/{name}")
        assert node.base == base + gt[name]
        n = min(16, node.size())
        assert node.read(0, n) == dump.kvirt.read_exact(base + gt[name], n)


# -- synthetic ---------------------------------------------------------------------------------


def synthetic_sym(kvirt, vi):
    table = build_symbol_table(kvirt, vi)
    return table, _section_sym(SimpleNamespace(symbol_files=SymbolFiles(table), kvirt=kvirt))


def test_partly_absent_symbol_uses_direct_io_and_stops_at_the_gap():
    kvirt, vi, _ = build(ABSOLUTE_PERCPU)
    # Kernel memory: the image from STEXT on, with a hole at STEXT+0x80..+0xC0 (inside
    # "helper" at +0x40..+0x100).
    image = bytes(range(256)) * 64
    mem = FakeKvirt(STEXT, image, hole=(STEXT + 0x80, STEXT + 0xC0))
    both = SimpleNamespace(
        read=lambda a, n: kvirt.read(a, n) or mem.read(a, n),
        read_exact=lambda a, n: (kvirt.read_exact if a >= kvirt.base else mem.read_exact)(a, n),
        fault=lambda a: FaultError("kvirt", a, "a hole"),
        name="kvirt",
    )
    table = build_symbol_table(kvirt, vi)
    sym = _section_sym(SimpleNamespace(symbol_files=SymbolFiles(table), kvirt=both))
    entries = sym.entries()
    whole = entries["startup_64"]  # STEXT..+0x40, all present
    assert not whole.open_direct_io()
    assert whole.read(0, 0x40) == image[:0x40]
    part = entries["helper@ffffffff81000040"]
    assert part.size() == 0xC0
    assert part.open_direct_io()
    assert part.read(0, 0xC0) == image[0x40:0x80]  # short: stops at the gap
    with pytest.raises(FaultError):
        part.read(0x40, 0x10)
    assert part.read(0x80, 0x100) == image[0xC0:0x100]  # after the gap, up to the size
    assert part.read(0xC0, 10) == b""  # end of file


class CountingSpace(FakeKvirt):
    """FakeKvirt that counts its reads."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.reads = 0

    def read(self, addr: int, size: int) -> bytes:
        self.reads += 1
        return super().read(addr, size)


def counting_sym():
    table = SymbolTable(["a", "b", "c"], [STEXT, STEXT + 0x10, STEXT + 0x30], "ttt", [None] * 3)
    space = CountingSpace(STEXT, bytes(range(0x40)))
    return space, _section_sym(SimpleNamespace(symbol_files=SymbolFiles(table), kvirt=space))


def test_sym_nodes_are_not_kept_but_what_they_learn_is():
    space, sym = counting_sym()
    entries = sym.entries()
    first, again = entries["b"], entries.get("b")
    assert first is not again  # a node per lookup: none stays after a grep -r
    assert entries.get("zz") is None and "zz" not in entries and len(entries) == 3
    assert not first.open_direct_io()
    reads = space.reads
    assert reads > 0
    assert not again.open_direct_io()  # whole: learned by the first node, not read again
    assert space.reads == reads
    assert again.read(4, 8) == bytes(range(0x14, 0x1C))  # the bytes the open read
    assert space.reads == reads
    first.release()  # the open is closed: its bytes go
    assert again.read(4, 8) == bytes(range(0x14, 0x1C))  # now from the space
    assert space.reads > reads


def test_fuse_release_lets_the_open_s_bytes_go():
    from vmcorefs.fuse import VmcoreOperations
    from vmcorefs.tree import Directory, Tree

    space, sym = counting_sym()
    ops = VmcoreOperations(Tree(Directory({"sym": sym})))
    fi = SimpleNamespace(flags=os.O_RDONLY, fh=0, direct_io=0, keep_cache=0)
    assert ops.open("/sym/b", fi) == 0
    assert (fi.direct_io, fi.keep_cache) == (0, 1)
    shared = sym.entries()["b"].shared
    assert len(shared.recent) == 1
    assert ops.read(None, 0x100, 0, fi) == bytes(range(0x10, 0x30))
    ops.release(None, fi)
    assert len(shared.recent) == 0


def test_naming_sizes_and_caps():
    table = SymbolTable(
        ["a", "dup", "dup", "same", "same", "big", "tail", "x/y"],
        [0x1000, 0x1010, 0x1020, 0x1030, 0x1030, 0x2000, 0x300000, 0x300010],
        ["T", "t", "t", "d", "d", "B", "b", "r"],
        [None, None, None, None, None, None, 4, None],
    )
    files = table.file_entries()
    assert set(files) == {
        "a",
        "dup@0000000000001010",
        "dup@0000000000001020",
        "same",  # one pair listed twice: one file
        "big",
        "tail",
        "x%2Fy",
    }
    assert table.file_extent(files["a"]) == (0x1000, 0x10)
    assert table.file_extent(files["big"]) == (0x2000, SYM_FILE_CAP)  # next is 3 MiB away
    assert table.file_extent(files["tail"]) == (0x300000, 4)  # own size wins
    assert table.file_extent(files["x%2Fy"]) == (0x300010, 0)  # nothing after the last


def test_percpu_left_out_without_cpu0_offset():
    kvirt, vi, _ = build(ABSOLUTE_PERCPU)
    table, sym = synthetic_sym(kvirt, vi)
    entries = sym.entries()
    assert "percpu_counter" not in entries and "init_task" in entries
    with pytest.raises(KeyError):
        entries["percpu_counter"]
    assert any("per-CPU" in n for n in table.notes)


def test_unknown_path_is_not_found(mounted):
    _case, _dump, tree = mounted
    with pytest.raises(NotFound):
        tree.lookup("sym/no_such_symbol_anywhere")
