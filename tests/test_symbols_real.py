"""The symbol table of the real dumps against the guest's own /proc/kallsyms (gt/kallsyms.txt)."""

from __future__ import annotations

import bisect
import random

import pytest
from symtables import gt_core_lines

from vmcorefs.errors import Unavailable
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.kallsyms import ABSOLUTE_PERCPU
from vmcorefs.kernel.kallsyms_finder import read_kallsyms

pytestmark = pytest.mark.realdump


@pytest.fixture(scope="module")
def opened(case):
    dump = open_dump(str(case.file("vmcore.elf")))
    yield case, dump
    dump.close()


def test_kallsyms_decodes_to_proc_kallsyms(opened):
    case, dump = opened
    table = read_kallsyms(dump.kvirt, dump.vmcoreinfo)
    gt = gt_core_lines(case)
    assert len(table) == len(gt) == case.truth["kallsyms_count"]
    # Same order (the kernel's), address, type and name, line for line.
    assert list(zip(table.addresses, table.types, table.names, strict=True)) == gt
    assert table.encoding == ABSOLUTE_PERCPU  # x86_64 SMP before 6.15


def test_every_core_symbol_is_in_the_merged_table(opened):
    case, dump = opened
    table = dump.symbols
    have = set(zip(table.addresses, table.types, table.names, strict=True))
    missing = [line for line in gt_core_lines(case) if line not in have]
    assert not missing
    addresses = [s.address for s in table]
    assert addresses == sorted(addresses)


def test_lookup_by_name(opened):
    case, dump = opened
    table = dump.symbols
    by_name: dict[str, set[int]] = {}
    for addr, _type, name in gt_core_lines(case):
        by_name.setdefault(name, set()).add(addr)
    for name, addr in case.truth["symbols"].items():
        if name in by_name:
            assert table.address(name) == addr
            assert table.get(name) == addr
    dup = next(n for n, a in by_name.items() if len(a) > 1)
    assert {s.address for s in table.lookup(dup)} == by_name[dup]
    with pytest.raises(Unavailable, match="ambiguous"):
        table.address(dup)
    assert table.get(dup) is None
    assert table.get("no_such_symbol_anywhere") is None
    with pytest.raises(Unavailable):
        table.address("no_such_symbol_anywhere")


def test_vmcoreinfo_symbols_join_the_table(opened):
    case, dump = opened
    table = dump.symbols
    vi = dump.vmcoreinfo
    # 6.1 has no swapper_pg_dir symbol (it is init_top_pgt): VMCOREINFO adds it, type unknown.
    [sym] = table.lookup("swapper_pg_dir")
    assert sym.address == vi.symbol("swapper_pg_dir") == case.truth["symbols"]["init_top_pgt"]
    assert sym.type == "?"
    assert table.lookup("mem_section") == [] or all(
        s.address != vi.symbol("mem_section") for s in table.lookup("mem_section")
    )


def test_containing_matches_kernel_rules(opened):
    case, dump = opened
    table = dump.symbols
    gt = gt_core_lines(case)
    addrs = sorted({a for a, _t, _n in gt})
    first_at: dict[int, str] = {}
    for a, _t, n in gt:
        first_at.setdefault(a, n)
    text = [(a, n) for a, t, n in gt if t in "Tt"]
    rng = random.Random(4)
    for addr, _name in rng.sample(text, 200):
        nxt = addrs[bisect.bisect_right(addrs, addr)]
        probe = addr + rng.randrange(nxt - addr)
        sym, off, size = table.containing(probe)
        expected = (first_at[addr], addr, probe - addr, nxt - addr)
        assert (sym.name, sym.address, off, size) == expected
    assert table.containing(case.truth["symbols"]["_stext"] - 1) is None
    assert table.containing(0x1000) is None  # a per-CPU offset, not a kernel address
    assert table.containing(case.truth["runtime_bases"]["page_offset_base"]) is None


def test_cpu0_percpu_offset(opened):
    case, dump = opened
    assert dump.symbols.percpu_offset0 == case.truth["runtime_bases"]["__per_cpu_offset"][0]
    assert dump.symbols.percpu_range() == (0, dump.symbols.address("__per_cpu_end"))
