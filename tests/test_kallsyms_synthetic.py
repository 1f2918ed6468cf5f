"""kallsyms tables built by the test (tests/symtables.py), in every encoding kernels have used:
the decoder must give back the symbols the test started from."""

from __future__ import annotations

import struct

import pytest
from symtables import (
    ERAS,
    IMAGE_STEXT,
    LONG_NAME,
    NONPERCPU,
    STEXT,
    SYMBOLS,
    TABLES,
    FakeKvirt,
    build,
    era_vmcoreinfo,
    synthetic_image,
)

from tests import fuzzing as fz
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.kallsyms import (
    ABSOLUTE,
    ABSOLUTE_PERCPU,
    PLACE_RELATIVE,
    RELATIVE,
)
from vmcorefs.kernel.kallsyms_finder import read_kallsyms
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


def test_without_keys_nothing_found_says_what_was_scanned():
    # No kallsyms keys (a kernel before 6.0): the image is searched; here it holds nothing.
    with pytest.raises(Unavailable, match=r"no kallsyms tables found in the kernel image \(0 MiB"):
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


# -- found in the kernel image (kernels before 6.0: no kallsyms keys in VMCOREINFO) ----------


@pytest.mark.parametrize("era", list(ERAS))
def test_each_era_is_found_exactly_among_decoys(era):
    image = synthetic_image(era)
    table = read_kallsyms(image.kvirt, image.vmcoreinfo)
    assert table.origin == "the kernel image"
    assert table.encoding == ERAS[era].encoding
    assert table.locations == image.loc
    assert list(zip(table.addresses, table.types, table.names, strict=True)) == image.symbols


@pytest.mark.parametrize("era", list(ERAS))
def test_the_same_table_with_or_without_keys(era):
    image = synthetic_image(era, decoys=())
    found = read_kallsyms(image.kvirt, image.vmcoreinfo)
    keyed = read_kallsyms(image.kvirt, era_vmcoreinfo(image.symbols, image.loc))
    assert keyed.origin == "VMCOREINFO"
    assert (found.names, found.types, found.addresses, found.encoding) == (
        keyed.names,
        keyed.types,
        keyed.addresses,
        keyed.encoding,
    )


@pytest.mark.parametrize(
    ("decoy", "why"),
    [
        ("random", r"\(1\.0 MiB scanned\)$"),  # the whole image: 1 MiB of "text" and the decoy
        ("truncated", r"1 candidate\(s\) refused, the first: token table 0x[0-9a-f]+: no kall"),
        ("other", r"1 candidate\(s\) refused, the first: .* disagree with SYMBOL\(_stext\)"),
    ],
)
def test_a_decoy_alone_is_refused(decoy, why):
    image = synthetic_image("6.1", decoys=(decoy,), real=False)
    with pytest.raises(Unavailable, match=r"^no kallsyms tables found in the kernel image"):
        read_kallsyms(image.kvirt, image.vmcoreinfo)
    with pytest.raises(Unavailable, match=why):
        read_kallsyms(image.kvirt, image.vmcoreinfo)


def test_absent_pages_are_skipped_and_a_table_with_a_hole_is_refused():
    image = synthetic_image("4.20", decoys=())
    data = image.kvirt.data
    # An absent page in the "text" before the tables: skipped, the tables still found.
    text_hole = (IMAGE_STEXT + 0x3000, IMAGE_STEXT + 0x5000)
    table = read_kallsyms(FakeKvirt(IMAGE_STEXT, data, text_hole), image.vmcoreinfo)
    assert table.locations == image.loc
    # A page of the names absent: never half-used.
    names = image.loc["kallsyms_names"] & ~0xFFF
    kvirt = FakeKvirt(IMAGE_STEXT, data, (names + 0x1000, names + 0x2000))
    with pytest.raises(Unavailable, match="no kallsyms tables found"):
        read_kallsyms(kvirt, image.vmcoreinfo)


def test_a_table_across_a_scan_piece_border_is_found():
    # The digit run the search starts from straddles the border of two 2 MiB pieces.
    first = synthetic_image("6.4", decoys=())
    anchor = first.kvirt.data.find(b"0\0" + b"1\0" + b"2\0") + IMAGE_STEXT
    pad = IMAGE_STEXT + (2 << 20) - 3 - anchor
    image = synthetic_image("6.4", decoys=(), pad=pad)
    border = IMAGE_STEXT + (2 << 20)
    assert image.loc["kallsyms_token_table"] < border < image.loc["kallsyms_token_index"]
    table = read_kallsyms(image.kvirt, image.vmcoreinfo)
    assert table.locations == image.loc


def test_a_vmcoreinfo_key_that_contradicts_the_table_refuses_it():
    image = synthetic_image("5.x relative", decoys=())
    wrong = image.loc["kallsyms_names"] + 8
    vi = VmcoreInfo(image.vmcoreinfo.raw + f"SYMBOL(kallsyms_names)={wrong:x}\n".encode())
    with pytest.raises(Unavailable, match=r"VMCOREINFO says"):
        read_kallsyms(image.kvirt, vi)


def test_no_symbol_to_check_against_refuses():
    image = synthetic_image("4.20", decoys=())
    vi = VmcoreInfo(b"OSRELEASE=4.20\nSYMBOL(mem_section)=ffff888000001000\n")
    with pytest.raises(Unavailable, match=r"no VMCOREINFO SYMBOL\(\) names a kallsyms symbol"):
        read_kallsyms(image.kvirt, vi)


def _hostile(era: str, edit) -> Unavailable:
    image = synthetic_image(era, decoys=())
    data = bytearray(image.kvirt.data)
    edit(data, {k: v - IMAGE_STEXT for k, v in image.loc.items()})
    with fz.limits(seconds=10), pytest.raises(Unavailable) as exc:
        read_kallsyms(FakeKvirt(IMAGE_STEXT, bytes(data)), image.vmcoreinfo)
    return exc.value


def test_hostile_token_index_out_of_range():
    def edit(data, loc):
        struct.pack_into("<H", data, loc["kallsyms_token_index"] + 2 * 200, 0xFFFF)

    assert "no kallsyms tables found" in _hostile("6.1", edit).reason


def test_hostile_names_that_run_past_the_buffer():
    def edit(data, loc):  # the first name claims the longest two-byte length
        data[loc["kallsyms_names"]] = 0xFF
        data[loc["kallsyms_names"] + 1] = 0x7F

    assert "refused" in _hostile("6.1", edit).reason


@pytest.mark.parametrize("count", [1 << 31, 0xFFFFFFFF, 0])
def test_hostile_counts(count):
    def edit(data, loc):
        struct.pack_into("<I", data, loc["kallsyms_num_syms"], count)

    reason = _hostile("4.20", edit).reason
    assert "no kallsyms_num_syms and kallsyms_names fit the markers" in reason


def test_hostile_markers_of_a_huge_table():
    def edit(data, loc):  # markers that claim 2**20 names: the search stays bounded
        at = loc["kallsyms_markers"]
        for i in range(1, 4):
            struct.pack_into("<I", data, at + 4 * i, 0x20000 * i)

    assert "refused" in _hostile("4.20", edit).reason


def test_the_fuzz_seed_without_keys_is_found(tmp_path):
    """The seed of test_fuzz_kernel's finder test, a whole ELF dump: found unmutated."""
    from vmcorefs.kernel.dump import open_dump

    raw, _ = fz.elf_seed(found=True)
    path = tmp_path / "vmcore"
    path.write_bytes(raw)
    with open_dump(str(path)) as dump:
        assert dump.symbols.sources[0].startswith("kallsyms (absolute-percpu, found in")
        assert dump.symbols.get("kallsyms_lookup_name") == STEXT + 0x100


def test_with_zero_fill_the_tables_are_read_strictly(tmp_path, monkeypatch):
    """--zero-fill is for readers of phys: tables read through it would take zeros for data
    (offsets of zero: wrong addresses, silently); the symbol table reads the dump as it is."""
    import vmcorefs.kernel.symbols as S
    from vmcorefs.kernel.dump import open_dump
    from vmcorefs.memory.physical import ZeroFilled

    raw, _ = fz.elf_seed(found=True)
    path = tmp_path / "vmcore"
    path.write_bytes(raw)
    seen = []
    real = S.build_symbol_table
    monkeypatch.setattr(S, "build_symbol_table", lambda kv, *a: seen.append(kv) or real(kv, *a))
    with open_dump(str(path), zero_fill=True) as dump:
        assert dump.options.zero_fill
        assert dump.symbols.get("kallsyms_lookup_name") == STEXT + 0x100
        # The one memory stack: only the phys file wraps it (tree.py), never the kernel views.
        assert len(seen) == 1 and seen[0] is dump.kvirt and seen[0].phys is dump.phys
        assert not isinstance(dump.phys, ZeroFilled)


def test_views_name_the_missing_tables(tmp_path):
    """A kernel before 6.0 whose tables cannot be found (here: wiped) and that has no BTF:
    the views say what is missing, kallsyms included, never "a kernel without BTF"."""
    from vmcorefs.kernel.dump import open_dump
    from vmcorefs.tree import build_tree

    raw = bytearray(fz.elf_seed(found=True)[0])
    kern = fz.kernel(found=True)
    start, size = kern.structures["kallsyms tables"]
    page = kern.pages[start // 4096]
    at = bytes(raw).find(page[start % 4096 : start % 4096 + 256])
    raw[at : at + size] = bytes(size)
    path = tmp_path / "vmcore"
    path.write_bytes(bytes(raw))
    with open_dump(str(path)) as dump:
        tree = build_tree(dump)
        for name in ("ps", "modules", "btf"):
            node = tree.lookup(name)
            text = node.read(0, node.size()).decode()
            assert text.startswith("unavailable: BTF: no 0xeB9F header in the kernel's read-only")
            assert "(kallsyms: no kallsyms tables found in the kernel image (" in text, name
        summary = tree.lookup("summary").read(0, 1 << 16).decode()
        assert "kernel without BTF" not in summary
        assert "tasks: unavailable: BTF: no 0xeB9F header" in summary
