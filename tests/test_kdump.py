"""kdump-compressed dumps built by tests/kdumpwriter.py: every header version and codec,
excluded, zero, lost and corrupt pages, truncated and foreign files."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kdumpwriter import (
    START_KERNEL_MAP,
    KdumpSpec,
    PageTables,
    build_kdump,
    pattern_page,
    vmcoreinfo_text,
    write_kdump,
)

import vmcorefs
from vmcorefs.dumpfile.kdump import KdumpSource
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.errors import DumpError

PAGE = 4096
CODECS = ["none", "zlib", "lzo", "snappy", "zstd"]


def open_bytes(tmp_path, data: bytes, name: str = "dump.kdump") -> KdumpSource:
    path = tmp_path / name
    path.write_bytes(data)
    return KdumpSource(DumpFile(str(path)))


def sample_spec(**kw) -> tuple[KdumpSpec, dict[int, bytes]]:
    """Frames 0..999: RAM except 500..599 (a hole); every 3rd frame below 300 dumped, frame
    100 a zero page, the rest excluded."""
    pages = {p: pattern_page(p) for p in range(0, 300, 3)}
    pages[99] = bytes(PAGE)
    kw.setdefault("ram", [(0, 500), (600, 1000)])
    return KdumpSpec(max_mapnr=1000, pages=pages, **kw), pages


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5, 6, 7])
def test_every_codec_and_header_version(tmp_path, codec, version):
    spec, pages = sample_spec(compression=codec, header_version=version, eraseinfo=b"erase")
    src = open_bytes(tmp_path, build_kdump(spec))
    for pfn in range(0, 1000):
        data = src.read(pfn * PAGE, PAGE)
        assert data == pages.get(pfn, b""), f"pfn {pfn:#x}"
    assert src.phys_end == 1000 * PAGE
    assert src.ranges() == [(0, 500 * PAGE), (600 * PAGE, 1000 * PAGE)]
    assert src.info.compression == codec
    assert src.info.page_size == PAGE
    assert src.info.dump_level == (31 if version >= 1 else None)
    expect_vmci = spec.vmcoreinfo if version >= 3 else None
    assert src.vmcoreinfo_raw() == expect_vmci


def test_info_carries_the_header(tmp_path):
    spec, _ = sample_spec(
        compression="zstd", current_cpu=3, nr_cpus=8, dump_level=17, phys_base=-0xA800000
    )
    info = open_bytes(tmp_path, build_kdump(spec)).info
    assert info.format == "kdump-compressed"
    assert (info.compression, info.dump_level, info.crashed_cpu, info.nr_cpus) == (
        "zstd",
        17,
        3,
        8,
    )
    assert info.extra["kdump utsname release"] == "6.1.0-test"
    assert info.extra["kdump utsname machine"] == "x86_64"
    assert info.extra["kdump dump time"] == "2023-11-14 22:13:20.123456 UTC"
    assert info.extra["kdump header phys_base"] == "-0xa800000"
    assert info.extra["kdump header version"] == "6"
    assert info.extra["kdump dumped pages"] == "100"
    assert info.extra["kdump status"] == "0x20 (zstd)"
    assert "incomplete" not in info.extra


def test_notes_and_vmcoreinfo_from_the_sub_header(tmp_path):
    prstatus = bytes(range(256)) + bytes(80)
    spec, _ = sample_spec(notes=[(b"CORE", 1, prstatus), (b"CORE", 1, prstatus[::-1])])
    src = open_bytes(tmp_path, build_kdump(spec))
    notes = src.notes()
    assert [(n.name, n.type) for n in notes] == [("CORE", 1), ("CORE", 1), ("VMCOREINFO", 0)]
    assert notes[0].desc == prstatus and notes[1].desc == prstatus[::-1]
    assert src.vmcoreinfo_raw() == spec.vmcoreinfo


def test_reads_stop_at_the_first_absent_byte(tmp_path):
    pages = {p: pattern_page(p) for p in (10, 11, 12, 14)}
    src = open_bytes(tmp_path, build_kdump(KdumpSpec(max_mapnr=64, pages=pages)))
    got = src.read(10 * PAGE + 100, 10 * PAGE)
    assert got == (pages[10] + pages[11] + pages[12])[100:]
    assert src.read(13 * PAGE, PAGE) == b""  # excluded
    assert src.read(14 * PAGE + 5, 3) == pages[14][5:8]
    assert src.read(64 * PAGE, PAGE) == b""  # past max_mapnr
    assert src.absent_until(13 * PAGE, 64 * PAGE) == 14 * PAGE
    assert src.absent_until(15 * PAGE, 64 * PAGE) == 64 * PAGE


def test_zero_pages_share_one_stored_page(tmp_path):
    pages = {p: bytes(PAGE) for p in range(20)}
    pages[7] = pattern_page(7)
    data = build_kdump(KdumpSpec(max_mapnr=32, pages=pages))
    src = open_bytes(tmp_path, data)
    refs = src.page_refs(0, 20)
    assert len({r[0] for i, r in enumerate(refs) if i != 7}) == 1  # one stored zero page
    assert src.read(0, 20 * PAGE) == b"".join(pages[p] for p in range(20))


def test_lost_pages_of_an_incomplete_dump_are_absent(tmp_path):
    pages = {p: pattern_page(p) for p in range(16)}
    spec = KdumpSpec(max_mapnr=16, pages=pages, lost={5, 6}, incomplete=True)
    src = open_bytes(tmp_path, build_kdump(spec))
    assert "incomplete" in src.info.extra
    assert src.read(0, 16 * PAGE) == b"".join(pages[p] for p in range(5))
    assert src.read(5 * PAGE, PAGE) == b""
    assert src.read(6 * PAGE + 1, 1) == b""
    assert src.read(7 * PAGE, 9 * PAGE) == b"".join(pages[p] for p in range(7, 16))


def test_corrupt_pages_read_as_absent_never_as_guesses(tmp_path):
    import zlib

    pages = {p: pattern_page(p) for p in range(13)}
    good = zlib.compress(pages[0])
    stored = {
        1: (0x1, b"not zlib at all"),
        2: (0x1, zlib.compress(pages[2][:100])),  # decompresses to less than a page
        3: (0x1, zlib.compress(pages[3] + b"x")[:200]),  # stream cut short
        4: (0x3, good),  # two codecs at once
        5: (0x0, pages[5][:4000]),  # raw but not a page
        6: (0x2, b"\x00" * 50),  # lzo garbage
        7: (0x4, b"\xff\xff\xff\xff\x0f" + b"a" * 20),  # snappy claiming 4 GiB
        8: (0x20, b"\x28\xb5\x2f\xfd" + b"\0" * 30),  # zstd garbage
        9: (0x20, __import__("zstandard").ZstdCompressor().compress(pages[9] * 2)),  # 2 pages
        12: (0x1, zlib.compress(bytes(1 << 24), 9)),  # 16 MiB of zeros in 16 KiB: a bomb
    }
    descs = {10: (1 << 40, PAGE, 0), 11: (0x1000, PAGE * 3, 0x1)}  # past EOF; too big
    spec = KdumpSpec(max_mapnr=16, pages=pages, stored=stored, descs=descs)
    src = open_bytes(tmp_path, build_kdump(spec))
    assert src.read(0, PAGE) == pages[0]
    for pfn in range(1, 13):
        assert src.read(pfn * PAGE, PAGE) == b"", f"pfn {pfn}"
    assert src.read(0, 16 * PAGE) == pages[0]


def test_rank_index_spans_blocks(tmp_path):
    """A bitmap of several 4096-byte index blocks (32768 frames each), sparse and dense parts."""
    rng = random.Random(5)
    max_mapnr = 3 * 32768 + 1234
    chosen = set(rng.sample(range(max_mapnr), 700)) | set(range(32760, 32780))
    chosen |= set(range(65536 - 3, 65536 + 3)) | {0, max_mapnr - 1}
    pages = {p: p.to_bytes(8, "little") * (PAGE // 8) for p in chosen}
    src = open_bytes(tmp_path, build_kdump(KdumpSpec(max_mapnr, pages, compression="none")))
    assert src.dumped.total == len(chosen)
    for pfn in sorted(chosen):
        assert src.read(pfn * PAGE, 8) == pfn.to_bytes(8, "little")
    for pfn in rng.sample(range(max_mapnr), 300):
        assert bool(src.read(pfn * PAGE, 1)) == (pfn in chosen)
    run = src.read(32760 * PAGE, 30 * PAGE)
    assert len(run) == 20 * PAGE  # frames 32760..32779, then absent


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    dumped=st.sets(st.integers(0, 70000 - 1), max_size=60),
    ram=st.lists(st.tuples(st.integers(0, 70000), st.integers(1, 5000)), max_size=4),
    probe=st.lists(st.tuples(st.integers(0, 70000 * PAGE), st.integers(1, 5 * PAGE)), max_size=8),
)
def test_reads_agree_with_a_model(tmp_path, dumped, ram, probe):
    """Any bitmap: a read returns the dumped bytes from the address on, up to the first frame
    that is not dumped."""
    max_mapnr = 70000
    pages = {p: struct.pack("<Q", p) * (PAGE // 8) for p in dumped}
    ranges = [(s, min(max_mapnr, s + n)) for s, n in ram if s < max_mapnr]
    spec = KdumpSpec(max_mapnr, pages, ram=ranges, compression="none")
    src = open_bytes(tmp_path, build_kdump(spec), name="model.kdump")
    for addr, size in probe:
        expect = bytearray()
        pos = addr
        while pos < min(addr + size, max_mapnr * PAGE) and pos // PAGE in pages:
            page = pages[pos // PAGE]
            take = min(PAGE - pos % PAGE, addr + size - pos)
            expect += page[pos % PAGE : pos % PAGE + take]
            pos += take
        assert src.read(addr, size) == bytes(expect)
    src.close()


def test_truncated_and_corrupt_headers_are_dump_errors(tmp_path):
    spec, _ = sample_spec()
    data = build_kdump(spec)
    cases = {
        "short.kdump": data[:300],
        "8k.kdump": data[:8192],
        "bitmaps.kdump": data[: 3 * PAGE + 10],
        "blocksize.kdump": data[:428] + struct.pack("<i", 1000) + data[432:],
        "bitmapblocks.kdump": data[:436] + struct.pack("<I", 0) + data[440:],
    }
    reasons = {}
    for name, blob in cases.items():
        with pytest.raises(DumpError) as exc:
            open_bytes(tmp_path, blob, name)
        assert "\n" not in str(exc.value)
        reasons[name] = exc.value.reason
    assert "truncated" in reasons["short.kdump"]
    assert "truncated" in reasons["8k.kdump"]
    assert "truncated" in reasons["bitmaps.kdump"]
    assert "block size" in reasons["blocksize.kdump"]
    assert "bitmap" in reasons["bitmapblocks.kdump"]


def test_another_architecture_is_refused(tmp_path):
    spec, _ = sample_spec(utsname=("Linux", "h", "6.1", "#1", "aarch64", ""))
    with pytest.raises(DumpError, match=r"another architecture \(aarch64\)"):
        open_bytes(tmp_path, build_kdump(spec))
    spec, _ = sample_spec()
    data = bytearray(build_kdump(spec))
    data[428:432] = struct.pack(">i", PAGE)  # big-endian block size
    with pytest.raises(DumpError, match="big-endian"):
        open_bytes(tmp_path, bytes(data), "be.kdump")


def test_truncated_data_reads_as_absent(tmp_path):
    pages = {p: pattern_page(p) for p in range(8)}
    data = build_kdump(KdumpSpec(max_mapnr=8, pages=pages, compression="none"))
    src = open_bytes(tmp_path, data[: len(data) - 2 * PAGE - 10])  # last 3 pages cut
    assert src.read(0, 8 * PAGE) == b"".join(pages[p] for p in range(5))
    assert src.read(6 * PAGE, 10) == b""


def test_truncated_descriptor_table_is_a_warning(tmp_path):
    pages = {p: pattern_page(p) for p in range(40)}
    spec = KdumpSpec(max_mapnr=40, pages=pages, share_zero_page=False)
    data = build_kdump(spec)
    desc_off = 4 * PAGE  # header, sub-header, two one-block bitmaps
    src = open_bytes(tmp_path, data[: desc_off + 24 * 30 + 5])
    (cut,) = src.truncations()
    assert cut.size == desc_off + 24 * 30 + 5 and cut.expected >= desc_off + 24 * 40
    assert cut.at_least and "of at least" in str(cut)
    assert src.read(0, PAGE) == b""  # its data is gone with the cut
    assert src.page_refs(29, 2)[0] is not None and src.page_refs(29, 2)[1] is None


def test_old_diskdump_with_one_bitmap(tmp_path):
    pages = {p: pattern_page(p) for p in range(20)}
    spec = KdumpSpec(
        max_mapnr=20, pages=pages, signature=b"DISKDUMP", single_bitmap=True, compression="none"
    )
    src = open_bytes(tmp_path, build_kdump(spec))
    assert src.info.format == "diskdump"
    assert src.read(0, 20 * PAGE) == b"".join(pages[p] for p in range(20))
    assert src.ranges() == [(0, 20 * PAGE)]


def test_a_split_part_alone_is_an_error(tmp_path):
    from kdumpwriter import assemble, kdump_chunks

    spec, _ = sample_spec()
    part = assemble(*kdump_chunks(spec, split=(0, 400)))
    with pytest.raises(DumpError, match="one part of a split dump.*give every part"):
        open_bytes(tmp_path, part)


def kernel_dump(tmp_path, *, levels=4, phys_base=0x1000000, header_phys_base=None, **kw):
    """A dump whose kernel image (4 MiB at __START_KERNEL_map) is mapped by page tables: the
    first 2 MiB with 4 KiB pages, the next with one 2 MiB page; page 5 of the image excluded."""
    tables = PageTables(first_table_pfn=0x100, levels=levels)
    image = {}
    for i in range(1024):
        vaddr = START_KERNEL_MAP + i * PAGE
        paddr = phys_base + i * PAGE
        if i < 512:
            tables.map_4k(vaddr, paddr)
        if i != 5:
            image[paddr // PAGE] = pattern_page(paddr // PAGE)
    tables.map_2m(START_KERNEL_MAP + (2 << 20), phys_base + (2 << 20))
    pages = {**image, **tables.pages()}
    vmci = vmcoreinfo_text(tables, phys_base=phys_base)
    spec = KdumpSpec(
        max_mapnr=0x2000,
        pages=pages,
        vmcoreinfo=vmci,
        phys_base=phys_base if header_phys_base is None else header_phys_base,
        **kw,
    )
    path = tmp_path / "kernel.kdump"
    write_kdump(path, spec)
    return path, image


@pytest.mark.parametrize("levels", [4, 5])
def test_kernel_virtual_memory_through_the_dump_page_tables(tmp_path, levels):
    path, image = kernel_dump(tmp_path, levels=levels, header_phys_base=-0x176160768)
    with vmcorefs.open_dump(str(path)) as dump:
        base = 0x1000000 // PAGE
        got = dump.kvirt.read(START_KERNEL_MAP, 8 * PAGE)
        assert got == b"".join(image[base + i] for i in range(5))  # page 5 is excluded
        assert dump.kvirt.read(START_KERNEL_MAP + 5 * PAGE, 1) == b""
        big = dump.kvirt.read(START_KERNEL_MAP + (2 << 20), 2 << 20)  # the 2 MiB page
        assert big == b"".join(image[base + 512 + i] for i in range(512))


def test_zero_fill_turns_absent_pages_into_zeros(tmp_path):
    path, image = kernel_dump(tmp_path)
    base = 0x1000000
    with vmcorefs.open_dump(str(path), zero_fill=True) as dump:
        got = dump.phys.read(base, 8 * PAGE)
        assert got[5 * PAGE : 6 * PAGE] == bytes(PAGE)
        assert got[6 * PAGE : 7 * PAGE] == image[base // PAGE + 6]
        assert dump.phys.read(0, 4) == bytes(4)  # a frame never dumped
        assert dump.kvirt.read(START_KERNEL_MAP + 5 * PAGE, 4) == bytes(4)
    with vmcorefs.open_dump(str(path)) as dump:
        assert len(dump.phys.read(base, 8 * PAGE)) == 5 * PAGE


def test_huge_sparse_dump_keeps_a_small_index(tmp_path):
    """1 TiB of RAM, a few dumped pages: the rank index is a few pieces, not a count per block."""
    max_mapnr = 1 << 28
    rng = random.Random(1)
    chosen = sorted(rng.sample(range(max_mapnr), 200)) + [max_mapnr - 1]
    pages = {p: pattern_page(p) for p in chosen}
    path = tmp_path / "tib.kdump"
    write_kdump(path, KdumpSpec(max_mapnr=max_mapnr, pages=pages))
    src = KdumpSource(DumpFile(str(path)))
    assert src.phys_end == 1 << 40
    counts = src.dumped._counts
    assert len(counts.starts) <= 2 * len(chosen) + 1  # clear runs between dumped pages
    for pfn in chosen[::10]:
        assert src.read(pfn * PAGE, PAGE) == pages[pfn]
    assert src.read((chosen[0] + 1) * PAGE, 1) == b"" or chosen[0] + 1 in pages
    src.close()


@pytest.mark.parametrize("inflater", ["isal", "zlib"])
def test_zlib_pages_with_either_inflater(tmp_path, monkeypatch, inflater):
    """isal inflates when installed; the standard module is the fallback: same bytes, same
    refusal of corrupt streams."""
    import zlib

    from vmcorefs.dumpfile import compression

    if inflater == "zlib":
        monkeypatch.setattr(compression, "inflate_module", zlib)
    else:
        pytest.importorskip("isal")
    pages = {p: pattern_page(p) for p in range(6)}
    good = zlib.compress(pages[5])
    stored = {3: (0x1, good[:-1] + bytes([good[-1] ^ 1])), 4: (0x1, good[: len(good) // 2])}
    src = open_bytes(tmp_path, build_kdump(KdumpSpec(max_mapnr=6, pages=pages, stored=stored)))
    assert src.read(0, 6 * PAGE) == pages[0] + pages[1] + pages[2]
    assert src.read(3 * PAGE, 1) == b"" and src.read(4 * PAGE, 1) == b""  # checksum; cut
    assert src.read(5 * PAGE, PAGE) == pages[5]


def test_utsname_that_is_not_utf8_keeps_its_bytes(tmp_path):
    from tests import fuzzing as fz
    from vmcorefs.tree import build_tree

    uts = ("Linux", "host\udcfe", "6.1.0-\udcff", "#1 SMP", "x86_64", "(none)")
    path = tmp_path / "uts.kdump"
    path.write_bytes(build_kdump(fz.kdump_spec(utsname=uts)))
    with vmcorefs.open_dump(str(path)) as dump:
        summary = build_tree(dump).lookup("summary").read(0, 1 << 16)
    assert b"kdump utsname nodename: host\xfe\n" in summary
    assert b"kdump utsname release: 6.1.0-\xff\n" in summary
