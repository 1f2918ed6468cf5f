"""kernel/kimage.py: where the kernel image starts and a scan of its present bytes."""

from __future__ import annotations

import random

from symtables import FakeKvirt

from tests import fuzzing as fz
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.kimage import (
    OVERLAP,
    PIECE,
    START_KERNEL,
    ImageScan,
    image_end,
    image_start,
    present_below,
)
from vmcorefs.vmcoreinfo import VmcoreInfo

BASE = 0xFFFFFFFF81000000 + (6 << 20)


def test_image_start_from_stext_else_the_kaslr_offset():
    assert image_start(VmcoreInfo(b"SYMBOL(_stext)=ffffffff9a000000\nKERNELOFFSET=1\n")) == (
        0xFFFFFFFF9A000000
    )
    assert image_start(VmcoreInfo(b"KERNELOFFSET=2c00000\n")) == START_KERNEL + 0x2C00000
    assert image_start(VmcoreInfo(b"OSRELEASE=4.4\n")) == START_KERNEL
    assert image_end(START_KERNEL) == 0xFFFFFFFFC0000000  # the end of the image mapping


def test_pieces_hold_every_present_byte_once_and_skip_holes():
    data = random.Random(1).randbytes(5 * PIECE + 1234)
    hole = (BASE + PIECE - 0x3000, BASE + PIECE + 0x2000)  # across a piece border
    scan = ImageScan(FakeKvirt(BASE, data, hole), BASE, BASE + (64 << 20))
    seen = bytearray(len(data))
    got = 0
    for addr, piece, own in scan.pieces():
        assert 0 < own <= PIECE and len(piece) <= own + OVERLAP
        assert not (hole[0] <= addr < hole[1])
        assert piece == data[addr - BASE : addr - BASE + len(piece)]
        assert seen[addr - BASE : addr - BASE + own] == bytes(own)  # each byte once
        seen[addr - BASE : addr - BASE + own] = b"\1" * own
        got += own
    assert got == scan.scanned == len(data) - (hole[1] - hole[0])


def test_find_sees_a_pattern_across_a_piece_border_once():
    data = bytearray(3 * PIECE)
    pattern = b"0\x001\x002\x003\x00"
    for at in (10, PIECE - 3, 2 * PIECE - 1, 3 * PIECE - len(pattern)):
        data[at : at + len(pattern)] = pattern
    scan = ImageScan(FakeKvirt(BASE, bytes(data)), BASE, BASE + len(data))
    assert list(scan.find(pattern)) == [BASE + 10, BASE + PIECE - 3, BASE + 2 * PIECE - 1,
                                        BASE + 3 * PIECE - len(pattern)]  # fmt: skip


def test_present_below_stops_at_a_hole():
    data = bytes(range(256)) * 64
    kvirt = FakeKvirt(BASE, data, (BASE + 0x1000, BASE + 0x2000))
    top = BASE + len(data)
    assert present_below(kvirt, top, 0x1000) == (top - 0x1000, data[-0x1000:])
    assert present_below(kvirt, top, len(data)) == (BASE + 0x2000, data[0x2000:])
    assert present_below(kvirt, BASE + 0x2000, 0x100) == (BASE + 0x2000, b"")


def test_chunk_mapped_follows_the_page_tables(tmp_path):
    """The synthetic kernel maps 64 MiB of the image mapping with 2 MiB pages."""
    raw, _ = fz.elf_seed()
    path = tmp_path / "vmcore"
    path.write_bytes(raw)
    with open_dump(str(path)) as dump:
        assert dump.kvirt.chunk_mapped(fz.STEXT)
        assert dump.kvirt.chunk_mapped(0xFFFFFFFF83E00000)  # mapped, its memory absent
        assert dump.kvirt.read(0xFFFFFFFF83E00000, 8) == b""
        assert not dump.kvirt.chunk_mapped(0xFFFFFFFF84000000)
        assert not dump.kvirt.chunk_mapped(0x8000000000000000)  # non-canonical


def test_a_scan_from_a_first_address_goes_down_then_up():
    data = random.Random(2).randbytes(4 * PIECE)
    first = BASE + 2 * PIECE + 5  # in the third chunk
    scan = ImageScan(FakeKvirt(BASE, data), BASE, BASE + len(data), first)
    order = [addr for addr, _piece, _own in scan.pieces()]
    assert order == [BASE + 2 * PIECE, BASE + PIECE, BASE, BASE + 3 * PIECE]
    assert scan.scanned == len(data)


def test_the_image_scan_starts_below_the_lowest_data_symbol():
    from vmcorefs.kernel.kimage import kernel_image

    vi = VmcoreInfo(
        b"SYMBOL(_stext)=ffffffff81000000\nSYMBOL(init_uts_ns)=ffffffff82612000\n"
        b"SYMBOL(prb)=ffffffff82400010\nSYMBOL(mem_section)=ffff888007ff1000\n"
    )
    scan = kernel_image(FakeKvirt(BASE, b""), vi)
    assert (scan.start, scan.first) == (0xFFFFFFFF81000000, 0xFFFFFFFF82400010)


def _reads_to_translate_stext(path, warm: bool) -> list[int]:
    """The physical reads (table pages) that translating ``_stext`` costs after opening."""
    with open_dump(str(path)) as dump:
        if warm:
            dump.warm()
        reads: list[int] = []
        real_read = dump.phys.read

        def counting_read(paddr: int, size: int) -> bytes:
            reads.append(paddr)
            return real_read(paddr, size)

        dump.phys.read = counting_read
        dump.kvirt.translate(fz.STEXT)
        return reads


def test_warm_loads_the_tables_to_the_image_start(tmp_path):
    """After ``warm`` (what the CLI calls before mounting) the image start translates without
    reading a table page; a dump whose root table is absent warms without an error."""
    raw, _ = fz.elf_seed()
    path = tmp_path / "vmcore"
    path.write_bytes(raw)
    assert len(_reads_to_translate_stext(path, warm=False)) >= 3  # root, PUD, PMD at least
    assert _reads_to_translate_stext(path, warm=True) == []
    rootless = tmp_path / "rootless"
    root = b"SYMBOL(init_top_pgt)=ffffffff80100000"
    assert root in raw
    rootless.write_bytes(raw.replace(root, b"SYMBOL(init_top_pgt)=ffffffff9f100000"))
    with open_dump(str(rootless)) as dump:
        assert dump.phys.read(dump.kvirt.translator.root, 8) == b""  # not in the dump
        dump.warm()
        assert dump.kvirt.read(fz.STEXT, 8) == b""
