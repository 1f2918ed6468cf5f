"""The compact symbol table (kernel/symbols.py): the same answers as plain lists and dicts.

The table keeps names in one blob, addresses and sizes in arrays and finds names by their
``hash()`` in sorted arrays. These tests hold it to what the simple representation answered:
lookups by name and address, duplicates in table order, ties kept in the order given, sizes,
and ``sym/``'s file names, against a dict-based model of DESIGN's naming rules.
"""

from __future__ import annotations

import bisect
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vmcorefs.errors import Unavailable
from vmcorefs.kernel.symbols import (
    NAME_MAX,
    NO_SIZE,
    SymbolFiles,
    SymbolNames,
    SymbolTable,
    escape_file_name,
)


def table(rows, **kw) -> SymbolTable:
    """A table from ``(name, address, type, size)`` rows."""
    names, addrs, types, sizes = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 4
    return SymbolTable(names, addrs, types, sizes, **kw)


class Colliding(str):
    """A name whose hash is always the same: every lookup walks one crowded bucket."""

    def __hash__(self) -> int:
        return 42


def test_duplicates_are_found_in_table_order_and_ties_keep_the_given_order():
    rows = [
        ("b", 0x3000, "t", None),
        ("dup", 0x2000, "t", None),
        ("a", 0x1000, "T", None),
        ("dup", 0x1000, "d", None),  # same address as a: after it, as given
        ("dup", 0x2000, "b", None),  # the same pair again
    ]
    t = table(rows)
    assert list(t.addresses) == [0x1000, 0x1000, 0x2000, 0x2000, 0x3000]
    assert list(t.names) == ["a", "dup", "dup", "dup", "b"]
    assert t.types == "Tdtbt"
    assert t.indices("dup") == [1, 2, 3]
    assert [(s.address, s.type) for s in t.lookup("dup")] == [
        (0x1000, "d"),
        (0x2000, "t"),
        (0x2000, "b"),
    ]
    assert t.get("dup") is None
    with pytest.raises(Unavailable, match="ambiguous: 2 addresses"):
        t.address("dup")
    assert t.address("b") == 0x3000
    assert t.first_index("dup") == 1
    assert t.indices("nothing") == [] and not t.has_name("nothing") and t.get("nothing") is None
    with pytest.raises(Unavailable, match="no symbol nothing"):
        t.address("nothing")


def test_lookups_by_address_as_pS():
    t = table(
        [
            ("_stext", 0x1000, "T", None),
            ("f", 0x1000, "T", None),
            ("g", 0x1040, "t", 0x10),
            ("_end", 0x2000, "B", None),
        ]
    )
    sym, off, size = t.containing(0x1020)
    assert (sym.name, off, size) == ("_stext", 0x20, 0x40)  # the first alias, up to g
    sym, off, size = t.containing(0x1050)
    assert (sym.name, off, size) == ("g", 0x10, 0x10)  # its own size
    assert t.containing(0x2000) is None
    assert t.next_address(0x1000) == 0x1040 and t.next_address(0x2000) is None


def test_sizes_none_zero_and_known_come_back_as_given():
    t = table([("a", 1, "t", None), ("b", 2, "t", 0), ("c", 3, "t", 5), ("d", 4, "t", None)])
    assert [s.size for s in t] == [None, 0, 5, None]
    assert [t.symbol(i).size for i in range(4)] == [None, 0, 5, None]
    assert t.file_extent(0) == (1, 1)  # unknown: up to the next
    assert t.file_extent(1) == (2, 0)  # a known size of 0 stays 0
    without = table([("a", 1, "t", None), ("b", 2, "t", None)])
    assert [s.size for s in without] == [None, None]
    assert NO_SIZE == (1 << 64) - 1


def test_non_ascii_names_round_trip_and_only_the_same_str_finds_them():
    raw = "caf\udcc3\udca9"  # the bytes c3 a9 escaped one by one: encodes like "café"
    t = table([("café", 1, "t", None), ("x\udcff", 2, "t", None)])
    assert list(t.names) == ["café", "x\udcff"]
    assert t.names.raw(1) == b"x\xff"
    assert t.indices("café") == [0] and t.indices("x\udcff") == [1]
    assert t.indices(raw) == []
    with pytest.raises(ValueError, match="round-trip"):
        table([(raw, 1, "t", None)])


def test_names_sequence():
    names = SymbolNames.from_names(["", "ab", "c"])
    assert len(names) == 3 and list(names) == ["", "ab", "c"]
    assert names[-1] == "c" and names[0:2] == ["", "ab"]
    for bad in (3, -4):
        with pytest.raises(IndexError):
            names[bad]
    assert names.find_bytes(b"b") == [1] and names.find_bytes(b"bc") == []  # not across names
    assert names.longer_than(1) == [1]


def test_colliding_hashes_are_told_apart_by_name():
    names = [Colliding(n) for n in ("a", "b", "a", "c", "b")]
    t = SymbolTable(names, [1, 2, 3, 4, 5], "ttttt", [None] * 5)
    assert t.indices(Colliding("b")) == [1, 4]
    assert t.indices(Colliding("a")) == [0, 2]
    assert t.indices(Colliding("z")) == []
    files = t.file_entries()
    assert set(files) == {
        "a@0000000000000001",
        "a@0000000000000003",
        "b@0000000000000002",
        "b@0000000000000005",
        "c",
    }
    assert files[Colliding("c")] == 3


def test_rejects_rows_of_different_lengths_and_long_type_letters():
    with pytest.raises(ValueError):
        SymbolTable(["a"], [1, 2], ["t"], [None])
    with pytest.raises(ValueError):
        SymbolTable(["a", "b"], [1, 2], ["t", "tt"], [None, None])


# -- sym/ names against a model -----------------------------------------------------------


def model_files(rows, percpu_dropped: tuple[int, int] | None) -> dict[str, int]:
    """DESIGN.md's naming, with dicts: NAME for one (name, address) pair, NAME@ADDRESS for
    each address of a name that has several, per-CPU indexes ``[lo, hi)`` left out (taking no
    name from another file), "/" escaped, longer than NAME_MAX left out. Rows are in table
    order (sorted by address)."""
    lo, hi = percpu_dropped or (0, 0)
    by_name: dict[str, list[int]] = {}
    for i, (name, *_rest) in enumerate(rows):
        by_name.setdefault(name, []).append(i)
    at_of = {}
    for name, idx in by_name.items():
        at: dict[int, int] = {}
        for i in idx:
            at.setdefault(rows[i][1], i)
        at_of[name] = at
    files: dict[str, int] = {}
    for name, at in at_of.items():
        if len(at) == 1 and not lo <= by_name[name][0] < hi:
            files[name] = by_name[name][0]
    for name, at in at_of.items():
        if len(at) > 1:
            for address, i in at.items():
                if not lo <= i < hi:
                    files[f"{name}@{address:016x}"] = i  # wins over a symbol of that name
    out: dict[str, int] = {}
    for f, i in files.items():
        if "/" not in f and len(os.fsencode(f)) <= NAME_MAX:
            out[f] = i
    for f, i in files.items():
        if "/" in f and len(os.fsencode(escape_file_name(f))) <= NAME_MAX:
            out.setdefault(escape_file_name(f), i)
    return out


NAMES = st.sampled_from(
    ["a", "b", "dup", "x/y", "x%2Fy", "p%q/r", "é", "b@0000000000001000", "L" * 300, "M/" * 127]
)
ROWS = st.lists(
    st.tuples(NAMES, st.sampled_from([0x1000, 0x1008, 0x2000, 0x5000]), st.sampled_from("tTd")),
    max_size=24,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(rows=ROWS, percpu=st.booleans())
@example(  # a per-CPU NAME@ADDRESS left out takes no name from the symbol named so
    rows=[("b", 0x1000, "t"), ("b", 0x1008, "t"), ("b@0000000000001000", 0x2000, "t")],
    percpu=True,
)
def test_file_names_match_the_model(rows, percpu):
    keyed = [(n, a, t, None) for n, a, t in rows]
    if percpu:  # [__per_cpu_start, __per_cpu_end) = [0x1000, 0x2000), CPU 0's offset unknown
        keyed += [("__per_cpu_start", 0x1000, "A", None), ("__per_cpu_end", 0x2000, "A", None)]
    t = table(keyed)
    rows_sorted = sorted(keyed, key=lambda r: r[1])  # stable, as the table
    assert list(zip(t.names, t.addresses, strict=True)) == [(r[0], r[1]) for r in rows_sorted]
    dropped = None
    if percpu:
        dropped = (bisect.bisect_left(t.addresses, 0x1000), bisect.bisect_left(t.addresses, 0x2000))
    want = model_files(rows_sorted, dropped)
    files = t.file_entries()
    assert dict(files.items()) == want
    assert len(files) == len(want) and sorted(files) == sorted(want)
    for f, i in want.items():
        assert f in files and files.get(f) == i
    for absent in ("nothing", "x/y", "L" * 300, "dup@0000000000009999", 7):
        if absent not in want:
            assert absent not in files and files.get(absent, "no") == "no"
            with pytest.raises(KeyError):
                files[absent]


def test_module_symbols_overlay_the_compact_core():
    from vmcorefs.kernel.modsyms import ModuleSymbolFile

    core = table([("a", 0x1000, "t", None), ("shared", 0x2000, "t", None)])
    mods = [
        ModuleSymbolFile("m_only", 0x9000, 0x9000, 8, "m"),
        ModuleSymbolFile("shared", 0x9010, 0x9010, 8, "m"),
    ]
    files = SymbolFiles(core, mods)
    n = len(core)
    assert dict(files.entries.items()) == {
        "a": 0,
        "m_only": n,
        "shared@0000000000002000": 1,
        "shared@0000000000009010": n + 1,
    }
    assert files.key_count == n + 2
    assert files.entries.get("shared", "no") == "no" and "shared" not in files.entries
