"""The ELF64 core reader: header quirks, segments, notes, holes, p_filesz < p_memsz, errors."""

from __future__ import annotations

import struct

import pytest

import vmcorefs
from tests.elfbuilder import ElfCore, LoadSegment, PhysImage, note, simple_core
from vmcorefs.dumpfile.detect import open_one
from vmcorefs.errors import DumpError

VI = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80100000\n"


def write(tmp_path, data: bytes, name="core") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def two_segment_core(**kw) -> ElfCore:
    core = ElfCore(**kw)
    core.notes += [note(b"CORE", 1, b"P" * 336), note(b"VMCOREINFO", 0, VI + b"\0\0")]
    core.segments += [
        LoadSegment(0x0, bytes(range(256)) * 16),  # [0, 4096)
        LoadSegment(0x3000, b"B" * 100, memsz=0x1000),  # filesz 100 < memsz 4096
    ]
    return core


@pytest.mark.parametrize("qemu_layout", [False, True])
def test_layouts_notes_and_segments(tmp_path, qemu_layout):
    src = open_one(write(tmp_path, two_segment_core(qemu_layout=qemu_layout).build()))
    assert [(n.name, n.type, len(n.desc)) for n in src.notes()] == [
        ("CORE", 1, 336),
        ("VMCOREINFO", 0, len(VI) + 2),
    ]
    assert src.vmcoreinfo_raw() == VI
    assert src.phys_end == 0x4000
    assert list(src.ranges()) == [(0, 0x1000), (0x3000, 0x4000)]


def test_read_rule_short_at_hole_then_absent(tmp_path):
    src = open_one(write(tmp_path, two_segment_core().build()))
    assert src.read(0xFF0, 0x100) == (bytes(range(256)) * 16)[0xFF0:]
    assert src.read(0x1000, 16) == b""
    assert src.read(0x2FFF, 2) == b""


def test_bytes_past_filesz_read_as_zeros(tmp_path):
    src = open_one(write(tmp_path, two_segment_core().build()))
    assert src.read(0x3000 + 90, 20) == b"B" * 10 + bytes(10)
    assert src.read(0x3FFF, 8) == b"\0"


def test_truncated_file_makes_the_missing_bytes_absent(tmp_path):
    data = two_segment_core().build()
    cut = data[: len(data) - 50]  # the last segment loses 50 of its 100 file bytes
    src = open_one(write(tmp_path, cut))
    assert src.read(0x3000, 100) == b"B" * 50
    assert src.read(0x3000 + 50, 10) == b""


def test_overlapping_segments_are_cut(tmp_path):
    core = ElfCore()
    core.notes.append(note(b"VMCOREINFO", 0, VI))
    core.segments += [LoadSegment(0, b"a" * 0x2000), LoadSegment(0x1000, b"a" * 0x2000)]
    src = open_one(write(tmp_path, core.build()))
    assert list(src.ranges()) == [(0, 0x3000)]
    assert src.read(0, 0x3000) == b"a" * 0x3000


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:40], "truncated ELF header"),
        (lambda d: d[:4] + b"\x01" + d[5:], "32-bit"),
        (lambda d: d[:18] + struct.pack("<H", 183) + d[20:], r"another architecture \(aarch64\)"),
        (lambda d: d[:16] + struct.pack("<H", 2) + d[18:], "not a core dump"),
        (lambda d: d[:56] + struct.pack("<H", 0) + d[58:], "0 program headers"),
        (lambda d: d[:120], "program headers run past the end"),
    ],
)
def test_bad_headers_are_one_line_errors(tmp_path, mutate, message):
    path = write(tmp_path, mutate(two_segment_core().build()))
    with pytest.raises(DumpError, match=message) as info:
        open_one(path)
    assert info.value.path == path
    assert "\n" not in info.value.reason


def test_core_without_vmcoreinfo_is_refused(tmp_path):
    core = ElfCore(notes=[note(b"CORE", 1, bytes(336))], segments=[LoadSegment(0, bytes(4096))])
    with pytest.raises(DumpError, match="no VMCOREINFO"):
        vmcorefs.open_dump(write(tmp_path, core.build()))


def test_corrupt_note_sizes_do_not_overrun(tmp_path):
    bad = struct.pack("<III", 11, 0xFFFFFF00, 0) + b"VMCOREINFO\0\0"
    core = ElfCore(notes=[note(b"CORE", 1, bytes(16)), bad], segments=[LoadSegment(0, b"x")])
    src = open_one(write(tmp_path, core.build()))
    assert [n.name for n in src.notes()] == ["CORE"]


def test_zero_fill_covers_holes_and_stops_at_phys_end(tmp_path):
    mem = PhysImage()
    mem.write(0, b"A" * 4096)
    mem.write(0x2000, b"C" * 4096)
    path = write(tmp_path, simple_core(mem, [(0, 0x1000), (0x2000, 0x3000)], VI))
    with vmcorefs.open_dump(path, zero_fill=True) as dump:
        assert dump.phys.read(0xFFE, 0x1004) == b"AA" + bytes(0x1000) + b"CC"
        assert dump.phys.read(0x2FFF, 100) == b"C"
    with vmcorefs.open_dump(path) as dump:
        assert dump.phys.read(0xFFE, 0x1004) == b"AA"


FILLER = 8 << 30  # physical address of the small segments, above the kernel's RAM


def _xnum_core(count: int) -> bytes:
    """The fuzz suite's synthetic kernel in a core of ``count`` PT_LOADs: small segments first,
    the kernel's three RAM ranges last, beyond the 65,535 headers an e_phnum could count."""
    from tests import fuzzing as fz
    from tests import kdumpwriter as kw

    k = fz.kernel()
    fillers = [(FILLER + i * 4096, i.to_bytes(4, "little") * 4, 16) for i in range(count - 3)]
    ram = [
        (start, b"".join(k.pages[p] for p in range(start // 4096, end // 4096)), end - start)
        for start, end in k.ranges
    ]
    return kw.build_elf_core(fillers + ram, k.vmcoreinfo, notes=k.notes, xnum=True)


def test_pn_xnum_core_reads_every_program_header(tmp_path):
    """makedumpfile -E writes a PT_LOAD per run of dumped pages; past 0xfffe program headers
    e_phnum is PN_XNUM and section header 0's sh_info holds the count (70,001 here)."""
    from tests import fuzzing as fz
    from vmcorefs.tree import build_tree

    raw = _xnum_core(70_000)
    assert struct.unpack_from("<H", raw, 56)[0] == 0xFFFF  # e_phnum: PN_XNUM
    k = fz.kernel()
    with fz.limits(headroom=256 << 20):
        dump = vmcorefs.open_dump(write(tmp_path, raw))
        plain = vmcorefs.open_dump(write(tmp_path, fz.elf_seed()[0], "plain"))
        tree, reference = build_tree(dump), build_tree(plain)
        last = FILLER + 69_996 * 4096
        assert dump.phys.size == last + 16
        assert dump.phys.read(last, 16) == (69_996).to_bytes(4, "little") * 4
        assert dump.phys.read(0x10_0000, 4096) == k.pages[0x100]
        assert len(dump.source.ranges()) == 70_000
        assert list(tree.lookup("sym").entries()) == list(reference.lookup("sym").entries())
        assert len(tree.lookup("sym").entries()) > 20
        summary = tree.lookup("summary").read(0, 1 << 20)
        assert b"ELF program headers: 70001 (e_phnum is PN_XNUM" in summary
        dump.close()
        plain.close()


def test_pn_xnum_without_section_header_0_is_refused(tmp_path):
    raw = bytearray(_xnum_core(5))
    assert vmcorefs.open_dump(write(tmp_path, bytes(raw), "good")).phys.read(FILLER, 4) == bytes(4)
    struct.pack_into("<Q", raw, 40, len(raw) - 10)  # e_shoff: section header 0 past the end
    with pytest.raises(DumpError, match="e_phnum is PN_XNUM .* section header 0"):
        vmcorefs.open_dump(write(tmp_path, bytes(raw)))


def test_section_count_and_string_index_escapes(tmp_path):
    """e_shnum 0 with a section table: the count is section header 0's sh_size; e_shstrndx
    SHN_XINDEX: the index is its sh_link; e_shnum 0 without a table is no escape."""
    from vmcorefs.dumpfile.elf import header_counts
    from vmcorefs.dumpfile.source import DumpFile

    raw = bytearray(_xnum_core(5))
    shoff = struct.unpack_from("<Q", raw, 40)[0]
    struct.pack_into("<QI", raw, shoff + 32, 0x12345, 0xFF42)  # sh_size, sh_link
    file = DumpFile(write(tmp_path, bytes(raw)))
    ehdr = {"e_phnum": 0xFFFF, "e_shnum": 0, "e_shstrndx": 0xFFFF}
    ehdr |= {"e_shoff": shoff, "e_shentsize": 64}
    counts = header_counts(file, ehdr)
    assert (counts.phnum, counts.shnum, counts.shstrndx) == (6, 0x12345, 0xFF42)  # 5 + PT_NOTE
    assert counts.phnum_extended
    plain = header_counts(file, ehdr | {"e_phnum": 7, "e_shnum": 3, "e_shstrndx": 2})
    assert (plain.phnum, plain.shnum, plain.shstrndx, plain.phnum_extended) == (7, 3, 2, False)
    none = header_counts(file, ehdr | {"e_phnum": 7, "e_shoff": 0, "e_shstrndx": 0})
    assert (none.shnum, none.shstrndx) == (0, 0)
    lost = header_counts(file, ehdr | {"e_phnum": 7, "e_shoff": len(raw)})  # not in the file
    assert (lost.phnum, lost.shnum, lost.shstrndx) == (7, None, None)
    file.close()
