"""``lseek`` with ``SEEK_DATA``/``SEEK_HOLE`` on ``phys``, ``kvirt`` and the other files, against
the dump read page by page: one synthetic memory in every container (kdump, split, flattened,
ELF), with 4 KiB pages in and out of order, a 2 MiB page, a direct map with an unmapped chunk,
and frames the dump lacks. Where a page reads, its offset is data; where it does not, a hole."""

from __future__ import annotations

import os
import random
from os import SEEK_DATA, SEEK_HOLE

import pytest

import vmcorefs
from tests.kdumpwriter import (
    PAGE,
    START_KERNEL_MAP,
    KdumpSpec,
    PageTables,
    build_elf_core,
    build_flattened,
    build_kdump,
    build_split,
    pattern_page,
    vmcoreinfo_text,
)
from vmcorefs.tree import KVIRT_BASE, build_tree

MiB = 1 << 20
FRAMES = 8192  # 32 MiB of RAM
DIRECT = 0xFFFF888000000000
IMAGE = START_KERNEL_MAP + 0x1000000  # 4 KiB pages, 1024 of them
LARGE = START_KERNEL_MAP + 0x1600000  # one 2 MiB page
#: Every mapping lies in these ranges of kernel addresses (the rest of kvirt is unmapped).
KVIRT_REGIONS = [
    (DIRECT, DIRECT + FRAMES * PAGE + 2 * MiB),
    (START_KERNEL_MAP + 0xE00000, START_KERNEL_MAP + 0x1A00000),
]


def memory_spec() -> KdumpSpec:
    rng = random.Random(5)
    tables = PageTables(first_table_pfn=0x200)
    for i in range(1024):
        if i % 37 == 36:
            continue  # not mapped
        frame = 0x1000 + (1123 - i if 100 <= i < 140 else i)  # out of order for a while
        tables.map_4k(IMAGE + i * PAGE, frame * PAGE)
    tables.map_2m(LARGE, 0x800 * PAGE)
    for k in range(FRAMES * PAGE // (2 * MiB)):
        if k != 5:  # a 2 MiB chunk of the direct map not mapped
            tables.map_2m(DIRECT + k * 2 * MiB, k * 2 * MiB)
    dumped: set[int] = set()
    pfn, held = 0, True
    while pfn < FRAMES:  # runs of dumped and missing frames, 1 to 40 long
        n = rng.randint(1, 40)
        if held:
            dumped.update(range(pfn, min(FRAMES, pfn + n)))
        pfn, held = pfn + n, not held
    pages = {p: pattern_page(p) for p in sorted(dumped)}
    pages.update(tables.pages())
    return KdumpSpec(max_mapnr=FRAMES, pages=pages, vmcoreinfo=vmcoreinfo_text(tables))


def elf_bytes(spec: KdumpSpec) -> bytes:
    """The same memory as an ELF core: one PT_LOAD per run of dumped frames."""
    frames = sorted(spec.pages)
    segments, start = [], frames[0]
    for a, b in zip(frames, [*frames[1:], None], strict=True):
        if b != a + 1:
            data = b"".join(spec.pages[p] for p in range(start, a + 1))
            segments.append((start * PAGE, data, len(data)))
            start = b
    return build_elf_core(segments, spec.vmcoreinfo)


@pytest.fixture(scope="module", params=["kdump", "split", "flattened", "elf"])
def dump(request, tmp_path_factory):
    spec = memory_spec()
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "split":
        paths = []
        for i, part in enumerate(build_split(spec, [0, 3000, 5000, FRAMES])):
            paths.append(str(folder / f"part{i}"))
            (folder / f"part{i}").write_bytes(part)
    else:
        make = {"kdump": build_kdump, "flattened": build_flattened, "elf": elf_bytes}
        (folder / "dump").write_bytes(make[request.param](spec))
        paths = [str(folder / "dump")]
    with vmcorefs.open_dump(paths) as opened:
        yield opened


def expected(readable, offset: int, end: int, whence: int) -> int | None:
    """Page by page: the first offset from ``offset`` whose page reads (SEEK_DATA) or does not
    (SEEK_HOLE, ``end`` at the latest); None past the end or where no data follow."""
    if not 0 <= offset < end:
        return None
    pos = offset
    while pos < end:
        if readable(pos) == (whence == SEEK_DATA):
            return pos
        pos = (pos // PAGE + 1) * PAGE
    return None if whence == SEEK_DATA else end


def page_reads(space, base: int = 0):
    cache: dict[int, bool] = {}

    def readable(offset: int) -> bool:
        page = offset // PAGE
        if page not in cache:
            cache[page] = len(space.read(base + page * PAGE, 1)) == 1
        return cache[page]

    return readable


def test_phys_seeks_as_its_pages_read(dump):
    node = build_tree(dump).lookup("/phys")
    size = node.size()
    readable = page_reads(dump.phys)
    rng = random.Random(1)
    offsets = [*range(0, size, PAGE), *(rng.randrange(size) for _ in range(300))]
    offsets += [size - 1, size, size + PAGE, -1]
    for offset in offsets:
        for whence in (SEEK_DATA, SEEK_HOLE):
            assert node.seek(offset, whence) == expected(readable, offset, size, whence), (
                hex(offset),
                whence,
            )


def kvirt_expected(readable, address: int, whence: int) -> int | None:
    """As :func:`expected` over the whole kernel half, knowing that only KVIRT_REGIONS map."""
    for lo, hi in KVIRT_REGIONS:
        if address >= hi:
            continue
        if address < lo:  # unmapped up to the region
            if whence == SEEK_HOLE:
                return address
            address = lo
        found = expected(readable, address, hi, whence)
        if whence == SEEK_HOLE or found is not None:
            return found
    return address if whence == SEEK_HOLE else None


def test_kvirt_seeks_as_its_pages_read(dump):
    node = build_tree(dump).lookup("/kvirt")
    readable = page_reads(dump.kvirt)
    rng = random.Random(2)
    addresses = [a for lo, hi in KVIRT_REGIONS for a in range(lo - PAGE, hi + PAGE, PAGE)]
    addresses += [rng.randrange(lo, hi) for lo, hi in KVIRT_REGIONS for _ in range(100)]
    addresses += [
        KVIRT_BASE,
        0xFFFF800000000000,
        (1 << 64) - 2,
        DIRECT - 1,
    ]  # kvirt's last byte: -2
    for address in addresses:
        for whence in (SEEK_DATA, SEEK_HOLE):
            want = kvirt_expected(readable, address, whence)
            got = node.seek(address - KVIRT_BASE, whence)
            assert got == (None if want is None else want - KVIRT_BASE), (hex(address), whence)


def test_seek_data_past_the_last_data_finds_none(dump):
    kvirt = build_tree(dump).lookup("/kvirt")
    last = KVIRT_REGIONS[-1][1]
    assert kvirt.seek(last - KVIRT_BASE, SEEK_DATA) is None
    assert kvirt.seek(last - KVIRT_BASE, SEEK_HOLE) == last - KVIRT_BASE
    for offset in (kvirt.size(), kvirt.size() + 1, -1):  # past the end: ENXIO
        assert kvirt.seek(offset, SEEK_DATA) is None and kvirt.seek(offset, SEEK_HOLE) is None


def test_zero_fill_phys_has_the_same_holes(tmp_path):
    """With --zero-fill a hole reads as zeros, as a sparse file's: SEEK_HOLE still names it."""
    path = tmp_path / "dump"
    path.write_bytes(build_kdump(memory_spec()))
    with (
        vmcorefs.open_dump(str(path)) as plain,
        vmcorefs.open_dump(str(path), zero_fill=True) as filled,
    ):
        a, b = build_tree(plain).lookup("/phys"), build_tree(filled).lookup("/phys")
        for offset in range(0, a.size(), 7 * PAGE + 5):
            for whence in (SEEK_DATA, SEEK_HOLE):
                assert a.seek(offset, whence) == b.seek(offset, whence)
        assert b.read(0x2000 * PAGE - PAGE, PAGE)  # reads, zeros or not


def test_computed_files_are_all_data(dump):
    tree = build_tree(dump)
    readme = tree.lookup("/README")
    size = readme.size()
    assert readme.seek(0, SEEK_DATA) == 0 and readme.seek(5, SEEK_DATA) == 5
    assert readme.seek(5, SEEK_HOLE) == size
    assert readme.seek(size, SEEK_DATA) is None and readme.seek(size, SEEK_HOLE) is None


def test_the_fuse_adapter_says_enxio_and_einval(dump):
    from vmcorefs.fuse import FuseOSError, VmcoreOperations

    ops = VmcoreOperations(build_tree(dump))

    class Info:
        flags = os.O_RDONLY

    fi = Info()
    ops.open("/kvirt", fi)
    last = KVIRT_REGIONS[-1][1] - KVIRT_BASE
    with pytest.raises(FuseOSError) as caught:
        ops.lseek(None, last, SEEK_DATA, fi)
    assert caught.value.errno == 6  # ENXIO
    with pytest.raises(FuseOSError) as caught:
        ops.lseek(None, 0, os.SEEK_END, fi)
    assert caught.value.errno == 22  # EINVAL
    first = ops.lseek(None, 0, SEEK_DATA, fi)
    assert first == DIRECT - KVIRT_BASE


@pytest.mark.mount
def test_lseek_through_a_mount(tmp_path):
    """The kernel's lseek reaches the daemon (libfuse's lseek, FUSE_LSEEK) and answers as the
    tree does: `cp --sparse`, scripts and the benchmarks' walk skip holes in one call."""
    import errno

    from tests.mounting import mounted

    path = tmp_path / "dump"
    spec = memory_spec()
    path.write_bytes(build_kdump(spec))
    with vmcorefs.open_dump(str(path)) as opened:
        tree = build_tree(opened)
        phys, kvirt = tree.lookup("/phys"), tree.lookup("/kvirt")
        probes = [
            ("phys", phys, [0, 0x1234, 0x200 * PAGE + 7, FRAMES * PAGE - 1]),
            ("kvirt", kvirt, [0, IMAGE - KVIRT_BASE, LARGE - KVIRT_BASE + 5, DIRECT - KVIRT_BASE]),
        ]
        want = {
            (name, o, w): node.seek(o, w)
            for name, node, offsets in probes
            for o in offsets
            for w in (SEEK_DATA, SEEK_HOLE)
        }
    with mounted([str(path)], tmp_path / "mnt") as mnt:
        for (name, offset, whence), answer in want.items():
            fd = os.open(mnt / name, os.O_RDONLY)
            try:
                if answer is None:
                    with pytest.raises(OSError) as caught:
                        os.lseek(fd, offset, whence)
                    assert caught.value.errno == errno.ENXIO
                else:
                    assert os.lseek(fd, offset, whence) == answer, (name, hex(offset), whence)
            finally:
                os.close(fd)
        fd = os.open(mnt / "kvirt", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as caught:  # past the last data
                os.lseek(fd, KVIRT_REGIONS[-1][1] - KVIRT_BASE, SEEK_DATA)
            assert caught.value.errno == errno.ENXIO
        finally:
            os.close(fd)
        fd = os.open(mnt / "README", os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            assert os.lseek(fd, 3, SEEK_DATA) == 3 and os.lseek(fd, 3, SEEK_HOLE) == size
        finally:
            os.close(fd)
