"""The paged reader (dumpfile/paged.py): its page cache, parallel loading, read ahead; and
memory/physical.py over it, with zero-fill."""

from __future__ import annotations

import threading

import pytest
from kdumpwriter import KdumpSpec, build_kdump, pattern_page

from vmcorefs.dumpfile import paged
from vmcorefs.dumpfile.kdump import KdumpSource
from vmcorefs.dumpfile.paged import PageCache, PagedReader
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.memory.physical import PhysicalMemory, ZeroFilled

PAGE = 4096


class CountingSource(KdumpSource):
    """Counts the pages it is asked to load (and on which threads)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.loaded = 0
        self.direct = 0  # of which decoded straight into the reader's buffer
        self.threads: set[str] = set()
        self._count_lock = threading.Lock()

    def load_pages(self, refs):
        self._count(refs)
        return super().load_pages(refs)

    def load_pages_into(self, refs, dest):
        self._count(refs)
        self.direct += len(refs)
        return super().load_pages_into(refs, dest)

    def _count(self, refs) -> None:
        with self._count_lock:
            self.loaded += len(refs)
            self.threads.add(threading.current_thread().name)


@pytest.fixture
def dump(tmp_path):
    """Frames 0..599: 0..499 dumped (zlib) except 100 and 101 (excluded), 300 a zero page."""
    pages = {p: pattern_page(p) for p in range(500) if p not in (100, 101)}
    pages[300] = bytes(PAGE)
    path = tmp_path / "paged.kdump"
    path.write_bytes(build_kdump(KdumpSpec(max_mapnr=600, pages=pages, compression="zlib")))
    src = CountingSource(DumpFile(str(path)))
    yield src, pages
    src.close()


def fresh(src: KdumpSource, cache_size_mib: int = 64) -> PhysicalMemory:
    """phys over ``src`` with a new page reader (an empty cache, no read ahead yet)."""
    src.pages = PagedReader(src)
    return PhysicalMemory(src, cache_size_mib=cache_size_mib)


def expected(pages, addr, size, zero_fill=False, end=600 * PAGE):
    out = bytearray()
    pos = addr
    while pos < min(addr + size, end):
        page = pages.get(pos // PAGE)
        if page is None:
            if not zero_fill:
                break
            page = bytes(PAGE)
        take = min(PAGE - pos % PAGE, addr + size - pos)
        out += page[pos % PAGE : pos % PAGE + take]
        pos += take
    return bytes(out)


def test_reads_match_the_source_and_the_model(dump):
    src, pages = dump
    phys = PhysicalMemory(src)
    reads = [(0, PAGE), (5, 10), (PAGE - 3, 7), (0, 100 * PAGE + 9), (99 * PAGE, 3 * PAGE)]
    reads += [(102 * PAGE + 1, 1 << 20), (499 * PAGE, 5 * PAGE), (600 * PAGE, 1)]
    for addr, size in reads:
        assert phys.read(addr, size) == expected(pages, addr, size), (addr, size)
        assert src.read(addr, size) == expected(pages, addr, size), (addr, size)


def test_readinto_fills_the_buffer_and_nothing_past_the_count(dump):
    """The FUSE reply is filled in place: a paged read copies pages (cut at the ends) into the
    caller's buffer, and never writes past what it returns."""
    src, pages = dump
    for zero_fill in (False, True):
        phys = ZeroFilled(PhysicalMemory(src)) if zero_fill else PhysicalMemory(src)
        reads = [
            (0, PAGE),
            (5, 10),
            (PAGE - 3, PAGE + 7),
            (0, 100 * PAGE + 9),
            (99 * PAGE, 3 * PAGE),
        ]
        reads += [(102 * PAGE + 1, 1 << 20), (100 * PAGE, PAGE), (600 * PAGE, 1), (-1, 5)]
        for addr, size in reads:
            buffer = bytearray(b"\xee" * (size + 8))
            got = phys.readinto(addr, memoryview(buffer)[:size])
            assert bytes(buffer[:got]) == phys.read(addr, size), (zero_fill, addr, size)
            assert buffer[got:] == b"\xee" * (size + 8 - got)
            if addr >= 0:
                want = expected(pages, addr, size, zero_fill=zero_fill)
                assert bytes(buffer[:got]) == want, (zero_fill, addr, size)


def scan(phys: PhysicalMemory, first: int, end: int, step: int = 16) -> bytes:
    """Frames ``first .. end-1`` read in reads of ``step`` pages: small enough to be cached."""
    assert step * PAGE < paged.DIRECT_MIN
    starts = range(first, end, step)
    return b"".join(phys.read(p * PAGE, (min(end, p + step) - p) * PAGE) for p in starts)


def test_cached_pages_are_not_loaded_again(dump):
    src, pages = dump
    phys = fresh(src, cache_size_mib=4)
    assert phys.read(0, 30 * PAGE) == expected(pages, 0, 30 * PAGE)
    assert src.loaded == 30
    assert phys.read(10 * PAGE, 20 * PAGE) == expected(pages, 10 * PAGE, 20 * PAGE)
    assert src.loaded == 30
    assert phys.read(100 * PAGE, PAGE) == b""
    assert phys.read(100 * PAGE, PAGE) == b""  # absence is cached too
    assert src.loaded == 30


def test_large_reads_decode_into_the_buffer_and_cache_nothing(dump):
    """A read of DIRECT_MIN or more from a page not cached decodes straight into the reader's
    buffer (up to the first absent page) and keeps nothing; one whose first page is cached
    goes through the cache; the head of a last partial page is cached (the kernel sends the
    rest of a 1 MiB read into an unaligned buffer as a second small request)."""
    src, pages = dump
    phys = fresh(src, cache_size_mib=4)
    big = paged.DIRECT_MIN // PAGE + 80
    assert phys.read(0, big * PAGE) == expected(pages, 0, big * PAGE)  # stops at frame 100
    assert (src.loaded, src.direct, len(src.pages.cache)) == (100, 100, 0)
    assert phys.read(0, big * PAGE) == expected(pages, 0, big * PAGE)
    assert (src.loaded, src.direct) == (200, 200)  # decoded again: nothing was kept
    assert phys.read(PAGE, PAGE) == pages[1]  # a small read caches its page
    assert phys.read(PAGE, big * PAGE) == expected(pages, PAGE, big * PAGE)
    assert (src.loaded, src.direct) == (201 + 98, 200)  # through the cache: it starts there
    assert len(src.pages.cache) == 100  # frames 1..99 and the absent 100
    tail = 200 * PAGE + 48
    assert phys.read(102 * PAGE, tail) == expected(pages, 102 * PAGE, tail)
    loaded = src.loaded
    assert phys.read(102 * PAGE + tail, 48) == expected(pages, 102 * PAGE + tail, 48)
    assert src.loaded == loaded  # the last page, cached by the first request


def test_cache_size_bounds_the_pages_kept(dump):
    src, pages = dump
    phys = fresh(src, cache_size_mib=1)  # 256 pages: 64 for pages met once, 192 in use
    cache = src.pages.cache
    assert (cache.probation_pages, cache.main_pages) == (64, 192)
    scan(phys, 102, 500)  # a scan: only the last 64 pages stay
    assert len(cache) == 64
    loaded = src.loaded
    phys.read(499 * PAGE, PAGE)  # among the most recent: still cached
    assert src.loaded == loaded
    phys.read(102 * PAGE, PAGE)  # the oldest: evicted
    assert src.loaded == loaded + 1
    for _ in range(8):  # a range read again and again within 96 loads: in use
        assert scan(phys, 102, 192) == expected(pages, 102 * PAGE, 90 * PAGE)
        assert len(cache) <= 256
    loaded = src.loaded
    assert scan(phys, 102, 192) == expected(pages, 102 * PAGE, 90 * PAGE)
    assert src.loaded == loaded
    assert len(cache) == 90  # the range, in use: the loads pushed the scan out of probation


def test_zero_pages_share_one_object(dump):
    src, _ = dump
    phys = PhysicalMemory(src)
    assert phys.read(300 * PAGE, PAGE) == bytes(PAGE)
    a = src.load_pages(src.page_refs(300, 1))[0]
    b = src.load_pages(src.page_refs(300, 1))[0]
    assert a is b


def pages_of(pfns, tag=b"p"):
    return [(pfn, tag + b"%d" % pfn) for pfn in pfns]


def test_page_cache_keeps_pages_in_use_through_a_scan():
    """2Q: a page loaded again after it left the probation FIFO, while its frame is remembered,
    is in use (main, an LRU); a scan of pages met once passes through probation and leaves the
    pages in use in place; hits while in probation are one use."""
    cache = PageCache(32)
    probation, ghosts = cache.probation_pages, cache.ghost_pages
    assert (probation, cache.main_pages, ghosts) == (8, 24, 4)
    hot = range(100, 100 + ghosts)
    cache.put_many(pages_of(hot))
    cache.put_many(pages_of(hot))  # hit again while in probation: still one use
    cache.put_many(pages_of(range(200, 200 + probation)))  # hot leave probation, remembered
    assert cache.get_many(100, ghosts) == [None] * ghosts
    cache.put_many(pages_of(hot))  # loaded again while remembered: in use
    cache.put_many(pages_of(range(1000, 1100), b"s"))  # a scan of 100 pages
    assert len(cache) == ghosts + probation
    assert cache.get_many(100, ghosts) == [page for _, page in pages_of(hot)]
    last = cache.get_many(1100 - probation - 1, probation + 1)
    assert last == [None] + [page for _, page in pages_of(range(1100 - probation, 1100), b"s")]
    assert cache.get_many(1099, 3, upto_absent=True) == [b"s1099", None, None]


def test_page_cache_main_is_an_lru():
    cache = PageCache(32)  # probation 8, main 24, 4 frame numbers remembered
    filler = iter(range(10_000, 20_000))

    def twice(pfns):  # loaded, pushed out of probation, loaded again: in use
        cache.put_many(pages_of(pfns))
        cache.put_many(pages_of([next(filler) for _ in range(cache.probation_pages)]))
        cache.put_many(pages_of(pfns))

    for group in range(0, cache.main_pages, cache.ghost_pages):
        twice(range(group, group + cache.ghost_pages))
    assert cache.get_many(0, 1) == [b"p0"]  # 0 is now the most recent of main
    twice([500])  # main is full: its least recent (1) goes
    assert cache.get_many(0, 3) == [b"p0", None, b"p2"]
    assert cache.get_many(500, 1) == [b"p500"]
    assert len(cache) <= 32


def test_sequential_reads_load_the_next_range_ahead(dump):
    src, pages = dump
    phys = fresh(src, cache_size_mib=4)
    step = 32 * PAGE
    assert phys.read(102 * PAGE, step) == expected(pages, 102 * PAGE, step)
    assert phys.read(134 * PAGE, step) == expected(pages, 134 * PAGE, step)  # sequential
    src.pages._ahead[2].result()  # the read ahead of [166, 198) has finished
    assert any(name.startswith("vmcorefs-pages") for name in src.threads)
    loaded = src.loaded
    assert phys.read(166 * PAGE, step) == expected(pages, 166 * PAGE, step)
    assert src.loaded == loaded  # served from what was read ahead
    # a read that is not sequential does not read ahead
    phys.read(400 * PAGE, step)
    assert src.pages._ahead[0] == 198


def test_reads_racing_the_read_ahead_agree(dump):
    src, pages = dump
    for _ in range(20):
        phys = fresh(src, cache_size_mib=4)
        phys.read(0, 32 * PAGE)
        phys.read(32 * PAGE, 32 * PAGE)  # starts reading [64, 96) ahead
        assert phys.read(60 * PAGE + 5, 40 * PAGE) == expected(pages, 60 * PAGE + 5, 40 * PAGE)


def test_a_fork_leaves_no_read_ahead_to_wait_for(dump):
    """The CLI may daemonise (fork) after reading: the child must not wait on the parent's
    read-ahead thread, which it does not have."""
    import os
    from concurrent.futures import Future

    src, pages = dump
    phys = fresh(src, cache_size_mib=4)
    src.pages._get_pool()  # the parent's pool
    src.pages._ahead = (64, 96, Future())  # a read ahead of frames 64..95 that never ends
    pid = os.fork()
    if pid == 0:  # child: reads what the parent was reading ahead
        ok = phys.read(64 * PAGE, 32 * PAGE) == expected(pages, 64 * PAGE, 32 * PAGE)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_read_ahead_follows_requests_split_by_the_kernel(dump):
    """A 1 MiB read into an unaligned buffer reaches FUSE as 1 MiB - 48 bytes, then 48 bytes:
    the small request continues the sequence."""
    src, pages = dump
    phys = fresh(src, cache_size_mib=4)
    big = 64 * PAGE - 48
    pos = 102 * PAGE
    for _ in range(3):
        assert phys.read(pos, big) == expected(pages, pos, big)
        assert phys.read(pos + big, 48) == expected(pages, pos + big, 48)
        pos += big + 48
    assert src.pages._ahead is not None and src.pages._ahead[0] == (pos - 48) // PAGE


def test_the_cache_size_is_set_by_phys_and_can_shrink(dump):
    src, pages = dump
    phys = fresh(src, cache_size_mib=4)  # 1024 pages: 256 in probation, 768 in main
    for _ in range(2):  # the second pass finds every page remembered: in use
        scan(phys, 102, 500)
    assert len(src.pages.cache) > 256
    PhysicalMemory(src, cache_size_mib=1)  # --cache-size 1: the oldest pages go now
    assert len(src.pages.cache) <= 256
    loaded = src.loaded
    assert phys.read(499 * PAGE, PAGE) == pages[499]  # among the most recent: kept
    assert src.loaded == loaded


def test_present_runs_and_zero_fill_agree_with_the_model(dump):
    src, pages = dump
    runs = list(PhysicalMemory(src).present_runs(0, 1 << 40))
    assert runs == [(0, 100 * PAGE), (102 * PAGE, 500 * PAGE)]
    assert list(PhysicalMemory(src).present_runs(99 * PAGE + 1, 103 * PAGE)) == [
        (99 * PAGE + 1, 100 * PAGE),
        (102 * PAGE, 103 * PAGE),
    ]


def test_a_dropped_dump_frees_its_pages_at_once(tmp_path):
    """No reference cycle between a source and its page reader: a dump that is dropped (a
    folder mount closes dumps) frees its cached pages now, not when the collector runs."""
    import gc
    import weakref

    pages = {p: pattern_page(p) for p in range(64)}
    path = tmp_path / "drop.kdump"
    path.write_bytes(build_kdump(KdumpSpec(max_mapnr=64, pages=pages)))
    src = KdumpSource(DumpFile(str(path)))
    phys = PhysicalMemory(src)
    assert phys.read(0, 64 * PAGE) == b"".join(pages[p] for p in range(64))
    cache = weakref.ref(src.pages.cache)
    gc.disable()
    try:
        src.close()
        assert len(cache()) == 0  # close drops the pages
        del src, phys
        assert cache() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "codec, pooled", [("zlib", True), ("lzo", False), ("snappy", False), ("zstd", False)]
)
def test_only_zlib_pages_load_in_the_pool_and_ahead(tmp_path, monkeypatch, codec, pooled):
    """zlib's pages cost enough to decode in the pool and ahead of a sequential reader; lzo's,
    zstd's and snappy's are cheap: the reading thread decodes them, and nothing reads ahead."""
    pages = {p: pattern_page(p) for p in range(400)}
    path = tmp_path / f"{codec}.kdump"
    path.write_bytes(build_kdump(KdumpSpec(max_mapnr=400, pages=pages, compression=codec)))
    src = CountingSource(DumpFile(str(path)))
    monkeypatch.setattr(paged, "PARALLEL_MIN_PAGES", 4)
    phys = PhysicalMemory(src)
    monkeypatch.setattr(src.pages, "_workers", 3)
    assert phys.read(0, 200 * PAGE) == expected(pages, 0, 200 * PAGE)
    for i in range(3):
        pos = (200 + i * 40) * PAGE
        assert phys.read(pos, 40 * PAGE) == expected(pages, pos, 40 * PAGE)
    assert any(name.startswith("vmcorefs-pages") for name in src.threads) == pooled
    assert (src.pages._ahead is not None) == pooled
    src.close()


def test_a_read_that_starts_at_an_absent_page_loads_nothing(dump, monkeypatch):
    """A 1 MiB read at an excluded frame (100) followed by dumped ones: the read returns 0
    having asked for one descriptor and loaded no page, and starts no read ahead, the first
    time and again; the same read one page later loads what it returns."""
    src, pages = dump
    phys = fresh(src)
    asked: list[int] = []
    real = src.page_refs

    def counting(pfn: int, count: int):
        asked.append(count)
        return real(pfn, count)

    monkeypatch.setattr(src, "page_refs", counting)
    before = 128 << 10  # the frames just before: the 1 MiB read below continues this one
    assert phys.read(100 * PAGE - before, before) == expected(pages, 100 * PAGE - before, before)
    assert src.pages._ahead is None
    asked.clear()
    loaded = src.loaded
    for _ in range(2):
        buffer = bytearray(1 << 20)
        assert phys.readinto(100 * PAGE, memoryview(buffer)) == 0
        assert src.loaded == loaded and src.pages._ahead is None
    assert asked == [1]  # the first time: one descriptor; then the cached absence
    assert phys.read(102 * PAGE, 8 * PAGE) == expected(pages, 102 * PAGE, 8 * PAGE)
    assert src.loaded > loaded


def test_a_cold_read_asks_for_each_descriptor_once(dump, monkeypatch):
    """The first page's descriptor, looked up to know the read does not start at an absent
    page, is not asked for again: a one-page read asks once, a larger one once more for the
    rest (through the cache and straight into the buffer alike)."""
    src, pages = dump
    phys = fresh(src)
    asked: list[tuple[int, int]] = []
    real = src.page_refs

    def counting(pfn: int, count: int):
        asked.append((pfn, count))
        return real(pfn, count)

    monkeypatch.setattr(src, "page_refs", counting)
    assert phys.read(7 * PAGE + 5, 100) == pages[7][5:105]
    assert asked == [(7, 1)]
    asked.clear()
    assert phys.read(10 * PAGE, 8 * PAGE) == expected(pages, 10 * PAGE, 8 * PAGE)
    assert asked == [(10, 1), (10, 8)]
    asked.clear()
    big = paged.DIRECT_MIN
    assert phys.read(20 * PAGE, big) == expected(pages, 20 * PAGE, big)
    assert asked == [(20, 1), (20, big // PAGE)]


@pytest.mark.parametrize("codec", ["zlib", "lzo", "snappy", "zstd"])
def test_pages_loaded_into_a_buffer_are_the_pages_loaded(tmp_path, codec):
    """``load_pages_into`` writes what ``load_pages`` returns, up to the first page that does
    not load (corrupt data, a stored page of the wrong size, a descriptor past the file), and
    says how many: for every codec, with raw, zero and incompressible pages among them."""
    if codec == "lzo":
        pytest.importorskip("lzo1x")
    pages = {p: pattern_page(p) for p in range(64)}
    pages[5] = bytes(PAGE)  # the shared zero page
    pages[6] = bytes(range(256)) * 16
    bad = {20: (0x4 if codec == "snappy" else 0x1, b"\x80\x20" + bytes(40)), 30: (0, b"x" * 100)}
    spec = KdumpSpec(max_mapnr=64, pages=pages, compression=codec, stored=bad)
    path = tmp_path / f"{codec}.kdump"
    path.write_bytes(build_kdump(spec))
    src = KdumpSource(DumpFile(str(path)))
    refs = src.page_refs(0, 64)
    listed = src.load_pages(refs)
    assert [i for i, p in enumerate(listed) if p is None] == [20, 30]
    for first, count in [(0, 64), (0, 20), (21, 43), (31, 33), (5, 2), (20, 1)]:
        dest = bytearray(count * PAGE)
        done = src.load_pages_into(refs[first : first + count], memoryview(dest))
        want = listed[first : first + count]
        assert done == (want.index(None) if None in want else count), (first, count)
        assert bytes(dest[: done * PAGE]) == b"".join(want[:done]), (first, count)
    src.close()


def test_a_large_read_stops_at_a_corrupt_page_and_records_it(tmp_path):
    pages = {p: pattern_page(p) for p in range(200)}
    spec = KdumpSpec(max_mapnr=200, pages=pages, stored={90: (0x1, b"not zlib")})
    path = tmp_path / "corrupt.kdump"
    path.write_bytes(build_kdump(spec))
    src = CountingSource(DumpFile(str(path)))
    phys = PhysicalMemory(src)
    buffer = bytearray(150 * PAGE)
    assert phys.readinto(10 * PAGE, memoryview(buffer)) == 80 * PAGE
    assert src.direct >= 80  # decoded straight into the buffer
    assert bytes(buffer[: 80 * PAGE]) == expected(pages, 10 * PAGE, 80 * PAGE)
    assert [f.address for f in src.damage.first()] == [90 * PAGE]
    loaded = src.loaded
    assert phys.read(90 * PAGE, 1 << 20) == b""  # known corrupt: nothing loaded for it
    assert src.loaded == loaded
    assert phys.read(91 * PAGE, 100 * PAGE) == expected(pages, 91 * PAGE, 100 * PAGE)
    src.close()
