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
from tests.kdumpwriter import PAGE, KdumpSpec, PageTables, build_kdump, pattern_page
from tests.kdumpwriter import vmcoreinfo_text as kdump_vmcoreinfo
from vmcorefs.dumpfile.kdump import read_headers
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.errors import CorruptError, FaultError
from vmcorefs.tree import build_tree

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
