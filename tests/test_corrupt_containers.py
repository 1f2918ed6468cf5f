"""Exact or EIO: container metadata that contradict themselves are corrupt, never served.

A kdump page descriptor whose data lie inside the file's own metadata (header, bitmaps,
descriptor table) or whose flags name no codec; an ELF core whose PT_LOADs disagree about the
same memory (overlapping segments with different bytes, ``p_filesz > p_memsz``). Each reads as
EIO (a CorruptError saying why) and appears on ``summary``'s ``damage:`` line once met; what
the file states consistently still reads exactly (a kexec core's doubled kernel text).
"""

from __future__ import annotations

import pytest

import vmcorefs
from tests.elfbuilder import (
    ElfCore,
    LoadSegment,
    PhysImage,
    kexec_core,
    note,
)
from tests.elfbuilder import PageTables as ElfPageTables
from tests.elfbuilder import vmcoreinfo_text as elf_vmcoreinfo
from tests.kdumpwriter import PAGE, KdumpSpec, PageTables, build_kdump, pattern_page
from tests.kdumpwriter import vmcoreinfo_text as kdump_vmcoreinfo
from vmcorefs.dumpfile.detect import open_one
from vmcorefs.dumpfile.kdump import read_headers
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.errors import CorruptError, FaultError
from vmcorefs.tree import build_tree

MiB = 1 << 20
#: The frame whose descriptor the kdump tests corrupt.
TARGET = 5


def fault_of(call) -> FaultError:
    with pytest.raises(FaultError) as info:
        call()
    return info.value


def damage_line(dump) -> str:
    text = build_tree(dump).lookup("summary").read(0, 1 << 16).decode()
    lines = [x for x in text.splitlines() if x.startswith("damage: ")]
    assert len(lines) == 1, text
    return lines[0]


# -- kdump ---------------------------------------------------------------------------------


def kdump_spec() -> KdumpSpec:
    """32 frames, stored raw (a 4096-byte descriptor would be served as it stands), page
    tables in 24-27."""
    tables = PageTables(24)
    pages = {p: pattern_page(p) for p in range(16)}
    pages.update(tables.pages())
    return KdumpSpec(
        max_mapnr=32, pages=pages, compression="none", vmcoreinfo=kdump_vmcoreinfo(tables)
    )


def metadata_offsets(path) -> dict[str, int]:
    """Where the header, the 2nd bitmap and the descriptor table lie in the file written."""
    h, _ = read_headers(DumpFile(str(path)))
    bitmaps = (1 + h.sub_hdr_size) * h.block_size
    return {
        "the header": 0x100,
        "the page bitmaps": bitmaps + h.bitmap_blocks * h.block_size // 2,
        "the page descriptor table": bitmaps + h.bitmap_blocks * h.block_size,
    }


@pytest.mark.parametrize("area", ["the header", "the page bitmaps", "the page descriptor table"])
def test_a_descriptor_into_the_metadata_is_corrupt(tmp_path, area):
    s = kdump_spec()
    path = tmp_path / "meta.kdump"
    path.write_bytes(build_kdump(s))
    offset = metadata_offsets(path)[area]
    s.descs = {TARGET: (offset, PAGE, 0)}  # a raw page's size: it would be served as memory
    path.write_bytes(build_kdump(s))
    assert metadata_offsets(path)[area] == offset  # the same layout, one descriptor changed
    with vmcorefs.open_dump(str(path)) as dump:
        phys = build_tree(dump).lookup("phys")
        bad = fault_of(lambda: phys.read(TARGET * PAGE, 64))
        assert type(bad) is CorruptError
        assert bad.reason.startswith(
            f"the descriptor of pfn {TARGET:#x} puts its data at {offset:#x}, inside {area} ("
        )
        assert phys.read((TARGET - 1) * PAGE, PAGE) == pattern_page(TARGET - 1)
        assert phys.read((TARGET + 1) * PAGE, PAGE) == pattern_page(TARGET + 1)
        line = damage_line(dump)
        assert f"phys {TARGET * PAGE:#x}: the descriptor of pfn {TARGET:#x}" in line
        assert f"inside {area}" in line


def test_a_descriptor_with_flags_of_no_codec_is_corrupt_not_raw(tmp_path):
    """Flag 0x40 (no codec of makedumpfile's) and the size of a page: the stored bytes were
    served as if raw."""
    s = kdump_spec()
    s.stored = {TARGET: (0x40, pattern_page(TARGET))}
    path = tmp_path / "flag.kdump"
    path.write_bytes(build_kdump(s))
    with vmcorefs.open_dump(str(path)) as dump:
        bad = fault_of(lambda: dump.phys.read_exact(TARGET * PAGE, 8))
        assert type(bad) is CorruptError
        assert bad.reason.startswith(f"pfn {TARGET:#x}: page flags 0x40 name no codec")
        assert dump.phys.read(0, PAGE) == pattern_page(0)
        assert "page flags 0x40" in damage_line(dump)


# -- ELF -----------------------------------------------------------------------------------

#: RAM of the ELF tests: page tables at 1 MiB (elfbuilder's), patterned pages from 2 MiB.
RAM = (1 * MiB, 3 * MiB)
DATA = 2 * MiB


def elf_memory() -> tuple[PhysImage, bytes]:
    mem = PhysImage()
    tables = ElfPageTables(mem)
    for pfn in range(DATA // PAGE, RAM[1] // PAGE):
        mem.write(pfn * PAGE, pattern_page(pfn))
    return mem, elf_vmcoreinfo(tables)


def write_core(tmp_path, segments: list[LoadSegment], vmcoreinfo: bytes, name="core"):
    core = ElfCore(segments=segments, notes=[note(b"VMCOREINFO", 0, vmcoreinfo)])
    path = tmp_path / name
    path.write_bytes(core.build())
    return str(path)


def test_a_kexec_cores_doubled_text_is_compared_and_served(tmp_path):
    mem, vi = elf_memory()
    text = (DATA, DATA + 64 * PAGE)
    core = kexec_core(mem, [RAM], text, [note(b"VMCOREINFO", 0, vi)])
    path = tmp_path / "kexec"
    path.write_bytes(core.build())
    with vmcorefs.open_dump(str(path)) as dump:
        assert dump.source.contradictions == []
        assert dump.phys.read(text[0], text[1] - text[0]) == mem.range_bytes(*text)
        assert dump.source.ranges() == [RAM]


def test_overlapping_segments_that_differ_are_corrupt_where_they_differ(tmp_path):
    mem, vi = elf_memory()
    text = (DATA, DATA + 64 * PAGE)
    core = kexec_core(mem, [RAM], text, [note(b"VMCOREINFO", 0, vi)])
    changed = bytearray(core.segments[0].data)
    changed[3 * PAGE + 100] ^= 0xFF  # one byte of the text's 4th page differs
    core.segments[0].data = bytes(changed)
    path = tmp_path / "differ"
    path.write_bytes(core.build())
    bad_page = DATA + 3 * PAGE
    with vmcorefs.open_dump(str(path)) as dump:
        phys = build_tree(dump).lookup("phys")
        bad = fault_of(lambda: phys.read(bad_page + 8, 8))
        assert type(bad) is CorruptError
        assert "overlapping PT_LOADs" in bad.reason and "hold different bytes" in bad.reason
        # Where the two agree they are served; the page that differs is not, in either form.
        assert phys.read(DATA, 3 * PAGE) == mem.range_bytes(DATA, bad_page)
        after = bad_page + PAGE
        assert phys.read(after, RAM[1] - after) == mem.range_bytes(after, RAM[1])
        assert dump.source.ranges() == [RAM]  # still memory the dump describes
        assert f"phys {bad_page + 8:#x}: the ELF headers contradict themselves" in (
            damage_line(dump)
        )


def test_a_zero_filled_segment_listed_first_does_not_hide_the_data(tmp_path):
    """A PT_LOAD [0, 4 GiB) with p_filesz 0, listed first, made all RAM read as zeros."""
    mem, vi = elf_memory()
    segments = [
        LoadSegment(0, b"", memsz=4 << 30),
        LoadSegment(RAM[0], mem.range_bytes(*RAM)),
    ]
    with vmcorefs.open_dump(write_core(tmp_path, segments, vi)) as dump:
        bad = fault_of(lambda: dump.phys.read_exact(DATA, 8))
        assert type(bad) is CorruptError and "hold different bytes" in bad.reason
        # Pages that are zeros in the data segment too agree with the zero-filled one.
        zero_page = next(p for p in range(RAM[0], DATA, PAGE) if mem.read(p, PAGE) == bytes(PAGE))
        assert dump.phys.read(zero_page, PAGE) == bytes(PAGE)
        assert dump.phys.read(DATA, 8) == b""


def test_filesz_beyond_memsz_makes_the_segment_corrupt(tmp_path):
    mem, vi = elf_memory()
    first = (DATA, DATA + 4 * PAGE)
    segments = [
        LoadSegment(RAM[0], mem.range_bytes(RAM[0], DATA)),
        # p_filesz is 8 pages, p_memsz 4: which of the two is right cannot be known.
        LoadSegment(first[0], mem.range_bytes(first[0], first[0] + 8 * PAGE), memsz=4 * PAGE),
        LoadSegment(first[1], mem.range_bytes(first[1], RAM[1])),
    ]
    with vmcorefs.open_dump(write_core(tmp_path, segments, vi)) as dump:
        for addr in (first[0], first[1] - 1):
            bad = fault_of(lambda a=addr: dump.phys.read_exact(a, 1))
            assert type(bad) is CorruptError
            assert "p_filesz 0x8000 > p_memsz 0x4000" in bad.reason
        assert dump.phys.read(first[1], RAM[1] - first[1]) == mem.range_bytes(first[1], RAM[1])
        assert dump.phys.read(RAM[0], DATA - RAM[0]) == mem.range_bytes(RAM[0], DATA)


def test_overlaps_beyond_the_comparison_budget_are_corrupt_not_trusted(tmp_path, monkeypatch):
    from vmcorefs.dumpfile import elf_overlaps

    monkeypatch.setattr(elf_overlaps, "MAX_COMPARED", elf_overlaps.CHUNK)
    mem, vi = elf_memory()
    ram = mem.range_bytes(*RAM)
    path = write_core(tmp_path, [LoadSegment(RAM[0], ram), LoadSegment(RAM[0], ram)], vi)
    src = open_one(path)
    (rest,) = src.contradictions
    assert (rest.start, rest.end) == (RAM[0] + elf_overlaps.CHUNK, RAM[1])
    assert "more than the 1 MiB compared at open" in rest.reason
    assert src.read(RAM[0], RAM[1] - RAM[0]) == ram[: elf_overlaps.CHUNK]  # then EIO
