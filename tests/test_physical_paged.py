"""memory/physical.py over a paged source: the page cache, parallel loading, zero-fill."""

from __future__ import annotations

import threading

import pytest
from kdumpwriter import KdumpSpec, build_kdump, pattern_page

from vmcorefs.dumpfile.kdump import KdumpSource
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.memory import physical
from vmcorefs.memory.physical import PageCache, PhysicalMemory

PAGE = 4096


class CountingSource(KdumpSource):
    """Counts the pages it is asked to load (and on which threads)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.loaded = 0
        self.threads: set[str] = set()
        self._count_lock = threading.Lock()

    def load_pages(self, refs):
        with self._count_lock:
            self.loaded += len(refs)
            self.threads.add(threading.current_thread().name)
        return super().load_pages(refs)


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


def test_extents_are_the_pages_read_returns(dump):
    """The FUSE reply takes a paged read as pieces (pages cut at the ends, never joined):
    together they are exactly the read, and each piece is bytes."""
    src, pages = dump
    for zero_fill in (False, True):
        phys = PhysicalMemory(src, zero_fill=zero_fill)
        reads = [
            (0, PAGE),
            (5, 10),
            (PAGE - 3, PAGE + 7),
            (0, 100 * PAGE + 9),
            (99 * PAGE, 3 * PAGE),
        ]
        reads += [(102 * PAGE + 1, 1 << 20), (100 * PAGE, PAGE), (600 * PAGE, 1), (-1, 5)]
        for addr, size in reads:
            pieces = phys.extents(addr, size)
            assert all(isinstance(p, bytes) and p for p in pieces), (addr, size)
            assert b"".join(pieces) == phys.read(addr, size), (zero_fill, addr, size)
            if addr >= 0:
                want = expected(pages, addr, size, zero_fill=zero_fill)
                assert b"".join(pieces) == want, (zero_fill, addr, size)


def test_cached_pages_are_not_loaded_again(dump):
    src, pages = dump
    phys = PhysicalMemory(src, cache_size_mib=4)
    assert phys.read(0, 50 * PAGE) == expected(pages, 0, 50 * PAGE)
    assert src.loaded == 50
    assert phys.read(10 * PAGE, 20 * PAGE) == expected(pages, 10 * PAGE, 20 * PAGE)
    assert src.loaded == 50
    assert phys.read(100 * PAGE, PAGE) == b""
    assert phys.read(100 * PAGE, PAGE) == b""  # absence is cached too
    assert src.loaded == 50


def test_cache_size_bounds_the_pages_kept(dump):
    src, pages = dump
    phys = PhysicalMemory(src, cache_size_mib=1)  # 256 pages
    phys.read(102 * PAGE, 398 * PAGE)
    assert len(phys.cache) == 256
    loaded = src.loaded
    phys.read(499 * PAGE, PAGE)  # among the most recent: still cached
    assert src.loaded == loaded
    phys.read(102 * PAGE, PAGE)  # the oldest: evicted
    assert src.loaded == loaded + 1


def test_large_reads_load_in_parallel(dump, monkeypatch):
    src, pages = dump
    monkeypatch.setattr(physical, "PARALLEL_MIN_PAGES", 4)
    phys = PhysicalMemory(src)
    monkeypatch.setattr(phys, "_workers", 3)
    got = phys.read(102 * PAGE, 300 * PAGE)
    assert got == expected(pages, 102 * PAGE, 300 * PAGE)
    assert any(name.startswith("vmcorefs-pages") for name in src.threads)


def test_concurrent_readers_agree(dump):
    src, pages = dump
    phys = PhysicalMemory(src, cache_size_mib=1)
    errors = []

    def reader(seed):
        import random

        rng = random.Random(seed)
        for _ in range(200):
            addr, size = rng.randrange(600 * PAGE), rng.randrange(1, 40 * PAGE)
            if phys.read(addr, size) != expected(pages, addr, size):
                errors.append((addr, size))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_zero_fill_over_excluded_pages(dump):
    src, pages = dump
    phys = PhysicalMemory(src, zero_fill=True)
    for addr, size in [(99 * PAGE, 4 * PAGE), (100 * PAGE + 7, 9), (498 * PAGE, 1 << 20)]:
        assert phys.read(addr, size) == expected(pages, addr, size, zero_fill=True)
    assert len(phys.read(0, 1 << 30)) == 600 * PAGE


def test_zero_pages_share_one_object(dump):
    src, _ = dump
    phys = PhysicalMemory(src)
    assert phys.read(300 * PAGE, PAGE) == bytes(PAGE)
    a = src.load_pages(src.page_refs(300, 1))[0]
    b = src.load_pages(src.page_refs(300, 1))[0]
    assert a is b


def test_page_cache_lru_order():
    cache = PageCache(3)
    cache.put_many([(1, b"a"), (2, b"b"), (3, b"c")])
    assert cache.get_many(1, 1) == [b"a"]  # 1 is now the most recent
    cache.put_many([(4, b"d")])
    assert cache.get_many(1, 4) == [b"a", None, b"c", b"d"]


def test_sequential_reads_load_the_next_range_ahead(dump):
    src, pages = dump
    phys = PhysicalMemory(src, cache_size_mib=4)
    step = 32 * PAGE
    assert phys.read(102 * PAGE, step) == expected(pages, 102 * PAGE, step)
    assert phys.read(134 * PAGE, step) == expected(pages, 134 * PAGE, step)  # sequential
    phys._ahead[2].result()  # the read ahead of [166, 198) has finished
    assert any(name.startswith("vmcorefs-pages") for name in src.threads)
    loaded = src.loaded
    assert phys.read(166 * PAGE, step) == expected(pages, 166 * PAGE, step)
    assert src.loaded == loaded  # served from what was read ahead
    # a read that is not sequential does not read ahead
    phys.read(400 * PAGE, step)
    assert phys._ahead[0] == 198


def test_reads_racing_the_read_ahead_agree(dump):
    src, pages = dump
    for _ in range(20):
        phys = PhysicalMemory(src, cache_size_mib=4)
        phys.read(0, 32 * PAGE)
        phys.read(32 * PAGE, 32 * PAGE)  # starts reading [64, 96) ahead
        assert phys.read(60 * PAGE + 5, 40 * PAGE) == expected(pages, 60 * PAGE + 5, 40 * PAGE)


def test_a_fork_leaves_no_read_ahead_to_wait_for(dump):
    """The CLI may daemonise (fork) after reading: the child must not wait on the parent's
    read-ahead thread, which it does not have."""
    import os
    from concurrent.futures import Future

    src, pages = dump
    phys = PhysicalMemory(src, cache_size_mib=4)
    phys._get_pool()  # the parent's pool
    phys._ahead = (64, 96, Future())  # a read ahead of frames 64..95 that never ends
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
    phys = PhysicalMemory(src, cache_size_mib=4)
    big = 64 * PAGE - 48
    pos = 102 * PAGE
    for _ in range(3):
        assert phys.read(pos, big) == expected(pages, pos, big)
        assert phys.read(pos + big, 48) == expected(pages, pos + big, 48)
        pos += big + 48
    assert phys._ahead is not None and phys._ahead[0] == (pos - 48) // PAGE


def test_no_read_ahead_for_cheap_codecs(tmp_path):
    pages = {p: pattern_page(p) for p in range(200)}
    path = tmp_path / "snappy.kdump"
    path.write_bytes(build_kdump(KdumpSpec(max_mapnr=200, pages=pages, compression="snappy")))
    src = KdumpSource(DumpFile(str(path)))
    phys = PhysicalMemory(src)
    for i in range(4):
        assert phys.read(i * 40 * PAGE, 40 * PAGE) == expected(pages, i * 40 * PAGE, 40 * PAGE)
    assert phys._ahead is None
    src.close()


def test_lzo_pages_load_in_parallel_and_ahead(tmp_path, monkeypatch):
    """lzallright releases the GIL: lzo dumps use the pool and read ahead as zlib's do."""
    pages = {p: pattern_page(p) for p in range(400)}
    path = tmp_path / "lzo.kdump"
    path.write_bytes(build_kdump(KdumpSpec(max_mapnr=400, pages=pages, compression="lzo")))
    src = CountingSource(DumpFile(str(path)))
    monkeypatch.setattr(physical, "PARALLEL_MIN_PAGES", 4)
    phys = PhysicalMemory(src)
    monkeypatch.setattr(phys, "_workers", 3)
    assert phys.read(0, 200 * PAGE) == expected(pages, 0, 200 * PAGE)
    assert any(name.startswith("vmcorefs-pages") for name in src.threads)
    for i in range(3):
        pos = (200 + i * 40) * PAGE
        assert phys.read(pos, 40 * PAGE) == expected(pages, pos, 40 * PAGE)
    assert phys._ahead is not None
    src.close()
