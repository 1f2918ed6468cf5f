"""kallsyms tables built by the test (tests/symtables.py), in every encoding kernels have used:
the decoder must give back the symbols the test started from."""

from __future__ import annotations

import struct

import pytest
from symtables import LONG_NAME, NONPERCPU, STEXT, SYMBOLS, TABLES, FakeKvirt, build

from vmcorefs.errors import Unavailable
from vmcorefs.kernel.kallsyms import (
    ABSOLUTE,
    ABSOLUTE_PERCPU,
    PLACE_RELATIVE,
    RELATIVE,
    read_kallsyms,
)
from vmcorefs.kernel.symbols import build_symbol_table
from vmcorefs.vmcoreinfo import VmcoreInfo


@pytest.mark.parametrize("offsets_last", [False, True])
@pytest.mark.parametrize("encoding", [ABSOLUTE, RELATIVE, ABSOLUTE_PERCPU, PLACE_RELATIVE])
def test_each_encoding_round_trips(encoding, offsets_last):
    kvirt, vi, _ = build(encoding, offsets_last=offsets_last)
    expected = SYMBOLS if encoding in (ABSOLUTE, ABSOLUTE_PERCPU) else NONPERCPU
    table = read_kallsyms(kvirt, vi)
    assert table.encoding == encoding
    assert list(zip(table.addresses, table.types, table.names, strict=True)) == expected


def test_two_byte_lengths():
    kvirt, vi, loc = build(RELATIVE)
    names = kvirt.read(loc["kallsyms_names"], 1 << 16)
    assert any(b & 0x80 for b in names[:64])  # the test really wrote a two-byte length
    table = read_kallsyms(kvirt, vi)
    assert LONG_NAME in table.names


def test_place_relative_told_apart_by_stext_even_with_a_relative_base_key():
    kvirt, vi, _ = build(PLACE_RELATIVE, relative_base_key=True)
    assert read_kallsyms(kvirt, vi).encoding == PLACE_RELATIVE


def test_without_stext_other_vmcoreinfo_symbols_decide():
    kvirt, vi, _ = build(ABSOLUTE_PERCPU, stext=None)
    assert read_kallsyms(kvirt, vi).encoding == ABSOLUTE_PERCPU


def test_no_encoding_fits_a_wrong_stext():
    kvirt, vi, _ = build(RELATIVE, stext=STEXT + 0x10)
    with pytest.raises(Unavailable, match=r"reproduces SYMBOL\(_stext\)"):
        read_kallsyms(kvirt, vi)


def test_truncated_names_are_unavailable_not_guessed():
    kvirt, vi, loc = build(RELATIVE)
    hole = (loc["kallsyms_names"] + 20, loc["kallsyms_names"] + 28)
    with pytest.raises(Unavailable, match="cut short"):
        read_kallsyms(FakeKvirt(TABLES, kvirt.data, hole), vi)


def test_implausible_count_is_refused():
    kvirt, vi, loc = build(RELATIVE)
    data = bytearray(kvirt.data)
    struct.pack_into("<I", data, loc["kallsyms_num_syms"] - TABLES, 0xFFFFFFFF)
    with pytest.raises(Unavailable, match="plausible"):
        read_kallsyms(FakeKvirt(TABLES, bytes(data)), vi)


def test_count_that_overruns_the_next_table_is_refused():
    kvirt, vi, loc = build(RELATIVE)
    data = bytearray(kvirt.data)
    struct.pack_into("<I", data, loc["kallsyms_num_syms"] - TABLES, 1000)
    with pytest.raises(Unavailable):
        read_kallsyms(FakeKvirt(TABLES, bytes(data)), vi)


def test_missing_keys_say_which():
    with pytest.raises(Unavailable, match=r"SYMBOL\(kallsyms_names\)"):
        read_kallsyms(FakeKvirt(TABLES, b""), VmcoreInfo(b"OSRELEASE=5.15\n"))


def test_merged_table_percpu_and_duplicates():
    kvirt, vi, _ = build(ABSOLUTE_PERCPU)
    table = build_symbol_table(kvirt, vi)
    # Both identical __key.0 entries are kept, as /proc/kallsyms shows them.
    assert [s.address for s in table.lookup("__key.0")] == [0xFFFFFFFF81800100] * 2
    assert table.get("__key.0") == 0xFFFFFFFF81800100
    assert table.percpu_range() == (0, 0x2000)
    # __per_cpu_offset's memory is not in this fake dump.
    assert table.percpu_offset0 is None
    assert any("__per_cpu_offset" in n for n in table.notes)
    # containing: the first alias, size up to the next higher address; _end past the last.
    sym, off, size = table.containing(STEXT + 0x41)
    assert (sym.name, off, size) == ("helper", 1, 0xC0)
    sym, off, size = table.containing(STEXT + 0x200)
    assert (sym.name, off, size) == ("helper", 0, 0xE00)
    assert table.containing(0x40) is None
    assert table.containing(0xFFFFFFFF81900100) is None  # _end itself is outside [_stext, _end)
