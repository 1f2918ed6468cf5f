"""makedumpfile's flattened stream, read in place through an index of its records."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kdumpwriter import (
    KdumpSpec,
    build_elf_core,
    build_kdump,
    flatten,
    kdump_chunks,
    pattern_page,
)

import vmcorefs
from vmcorefs.dumpfile.detect import open_one
from vmcorefs.dumpfile.flattened import FlattenedFile, _resolve
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.errors import DumpError

PAGE = 4096


def spec() -> tuple[KdumpSpec, dict[int, bytes]]:
    pages = {p: pattern_page(p) for p in range(0, 200) if p % 7}
    pages[50] = bytes(PAGE)
    return KdumpSpec(max_mapnr=256, pages=pages, compression="zlib"), pages


def write(tmp_path, data: bytes, name="dump.flat") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"record_size": 1000},
        {"record_size": 4096, "shuffle": 3},
        {"record_size": 777, "shuffle": 9, "decoys": True},
        {"record_size": 1},
        {"record_size": 5, "shuffle": 4, "decoys": True},
    ],
)
def test_flattened_kdump_reads_as_the_kdump(tmp_path, options):
    s, pages = spec()
    flat = flatten(*kdump_chunks(s), **options)
    src = open_one(write(tmp_path, flat))
    plain = open_one(write(tmp_path, build_kdump(s), "dump.kdump"))
    assert src.info.format == "flattened (kdump-compressed)"
    assert src.info.compression == "zlib"
    assert src.phys_end == plain.phys_end == 256 * PAGE
    for pfn in range(256):
        assert src.read(pfn * PAGE, PAGE) == pages.get(pfn, b"")
    assert src.read(0, 256 * PAGE) == plain.read(0, 256 * PAGE)
    assert src.vmcoreinfo_raw() == s.vmcoreinfo


def test_rebuilt_file_equals_the_kdump_including_holes(tmp_path):
    s, _ = spec()
    kdump = build_kdump(s)
    flat = FlattenedFile(DumpFile(write(tmp_path, flatten(*kdump_chunks(s), record_size=500))))
    assert flat.size == len(kdump)
    rng = random.Random(2)
    for _ in range(300):
        off = rng.randrange(len(kdump) + 100)
        n = rng.randrange(1, 20000)
        assert flat.pread(off, n) == kdump[off : off + n]


def test_truncated_stream_mid_record(tmp_path):
    s, _ = spec()
    flat = flatten(*kdump_chunks(s), record_size=4096)
    path = write(tmp_path, flat[: len(flat) // 2])
    with pytest.raises(
        DumpError,
        match=r"truncated flattened stream: record \d+ .* holds 4096 bytes but the file ends",
    ):
        open_one(path)


def test_stream_without_end_marker(tmp_path):
    s, _ = spec()
    path = write(tmp_path, flatten(*kdump_chunks(s), end_marker=False))
    with pytest.raises(DumpError, match="without its end marker"):
        open_one(path)


def test_bad_headers(tmp_path):
    good = flatten([(0, b"x" * 10)], 10)
    with pytest.raises(DumpError, match="truncated flattened header"):
        open_one(write(tmp_path, good[:1000], "short.flat"))
    bad_type = good[:16] + struct.pack(">q", 2) + good[24:]
    with pytest.raises(DumpError, match="type 2"):
        open_one(write(tmp_path, bad_type, "type.flat"))
    empty = good[:4096] + struct.pack(">qq", -1, -1)
    with pytest.raises(DumpError, match="no records"):
        open_one(write(tmp_path, empty, "empty.flat"))
    negative = good[:4096] + struct.pack(">qq", -5, 10) + bytes(10) + struct.pack(">qq", -1, -1)
    with pytest.raises(DumpError, match="corrupt flattened stream"):
        open_one(write(tmp_path, negative, "neg.flat"))
    junk = good[:4096] + struct.pack(">qq", 0, 8) + b"JUNKJUNK" + struct.pack(">qq", -1, -1)
    with pytest.raises(DumpError, match="neither a kdump-compressed file nor an ELF core"):
        open_one(write(tmp_path, junk, "junk.flat"))


def test_flattened_elf_core(tmp_path):
    ram = b"".join(pattern_page(p) for p in range(16))
    vmci = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"
    elf = build_elf_core([(0x100000, ram, len(ram) + 2 * PAGE)], vmci)
    src = open_one(write(tmp_path, flatten([(0, elf)], len(elf), record_size=3000, shuffle=1)))
    assert src.info.format == "flattened (ELF64 core)"
    assert src.read(0x100000, len(ram) + PAGE) == ram + bytes(PAGE)
    assert src.read(0, 1) == b""
    assert src.vmcoreinfo_raw() == vmci


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(1, 80), st.integers(0, 255)),
        min_size=1,
        max_size=25,
    )
)
def test_later_records_win(records):
    """The index reproduces what writing the records in order into one file gives."""
    from array import array

    model = bytearray()
    written = bytearray()
    starts, ends, offsets = array("q"), array("q"), array("q")
    stream_pos = 0
    for off, size, fill in records:
        if len(model) < off + size:
            model += bytes(off + size - len(model))
            written += bytes(off + size - len(written))
        model[off : off + size] = bytes([fill]) * size
        written[off : off + size] = b"\1" * size
        starts.append(off)
        ends.append(off + size)
        offsets.append(stream_pos)
        stream_pos += size
    s, e, o = _resolve(starts, ends, offsets)
    stream = b"".join(bytes([fill]) * size for _, size, fill in records)
    for a, b, c in zip(s, e, o, strict=True):
        assert model[a:b] == stream[c : c + b - a]
        assert all(written[a:b])
    assert sum(b - a for a, b in zip(s, e, strict=True)) == sum(written)
    assert list(s) == sorted(s)


def test_open_dump_on_a_flattened_stream(tmp_path):
    s, pages = spec()
    with vmcorefs.open_dump(write(tmp_path, flatten(*kdump_chunks(s), shuffle=5))) as dump:
        assert dump.phys.read(PAGE, 2 * PAGE) == pages[1] + pages[2]
        assert dump.phys.size == 256 * PAGE


def test_progress_is_reported_to_the_end(tmp_path):
    s, _ = spec()
    path = write(tmp_path, flatten(*kdump_chunks(s), record_size=16))
    calls = []
    flat = FlattenedFile(DumpFile(path), progress=lambda done, total: calls.append((done, total)))
    size = (tmp_path / "dump.flat").stat().st_size
    assert flat.records > 1024
    assert calls[-1] == (size, size)
    assert all(a <= b for (a, _), (b, _) in zip(calls, calls[1:], strict=False))


def test_stderr_progress_is_cleared_before_an_error(tmp_path, monkeypatch, capsys):
    from vmcorefs.dumpfile import flattened

    monkeypatch.setattr(flattened, "PROGRESS_AFTER", 0.0)
    s, _ = spec()
    flat = flatten(*kdump_chunks(s), record_size=16)
    path = write(tmp_path, flat[: len(flat) - 100])  # cut inside the last records
    with pytest.raises(DumpError, match="truncated"):
        FlattenedFile(DumpFile(path))
    err = capsys.readouterr().err
    assert "vmcorefs: indexing" in err
    assert err.endswith("\r\033[K")  # the line is wiped: the error line prints alone


def test_tiny_records_cost_their_data_not_an_index_entry_each(tmp_path):
    """A stream of 1-byte records (16 bytes of header each) is indexed in memory of the order of
    its data: adjacent small records are one piece, their bytes kept once."""
    import tracemalloc

    s, _ = spec()
    kdump = build_kdump(s)
    path = write(tmp_path, flatten(*kdump_chunks(s), record_size=1))
    tracemalloc.start()
    try:
        flat = FlattenedFile(DumpFile(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert flat.records > len(kdump) // 2  # one a byte (blocks of zeros are not written)
    # An array entry a record (24 bytes each) would be 24 times the data, a list far more.
    assert peak < 4 * len(kdump)
    rng = random.Random(5)
    for _ in range(200):
        off, n = rng.randrange(len(kdump)), rng.randrange(1, 3 * PAGE)
        assert flat.pread(off, n) == kdump[off : off + n]


def test_too_many_tiny_records_are_refused_naming_the_limit(tmp_path, monkeypatch):
    from vmcorefs.dumpfile import flattened

    monkeypatch.setattr(flattened, "MAX_SMALL_BYTES", 10_000)
    s, _ = spec()
    path = write(tmp_path, flatten(*kdump_chunks(s), record_size=100))
    with pytest.raises(DumpError, match=r"more than 0 MiB in records of under 512 bytes.*-R"):
        open_one(path)
    # Records of a page are not kept in memory: the same dump in 4 KiB records opens.
    assert open_one(write(tmp_path, flatten(*kdump_chunks(s), record_size=4096), "page.flat"))
