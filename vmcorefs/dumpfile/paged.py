"""Containers that store memory page by page (kdump-compressed, its flattened and split
forms) and the one reader of their pages, with its cache.

Finding a page (bitmap, descriptor) is cheap; loading it (read, decompress) is what costs. So
:class:`PagedReader` keeps decoded pages in a cache (``--cache-size`` MiB), decodes the pages of
a large read in a thread pool when the codec releases the GIL, and loads the next range ahead
of a sequential reader; a large read that starts at a page not cached is decoded straight into
the reader's buffer. Every read of a paged container goes through it.
"""

from __future__ import annotations

import os
import threading
import weakref
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar, cast

from ..errors import VmcorefsError
from .source import PhysicalSource

#: What a paged container needs to load one page (a kdump page descriptor, ...).
Ref = TypeVar("Ref")

#: Cached marker of a page that is not in the dump (a page is never empty).
ABSENT = b""
#: Pages to decompress below which a read does not use the pool (thread hand-off costs more).
PARALLEL_MIN_PAGES = 32
MAX_WORKERS = 4
#: A read at least this large that continues the previous one loads the next as much ahead,
#: for codecs whose pages cost enough to hide the hand-off to another thread (zlib, zstd, lzo
#: through lzallright; not python-lzo's cheaper pages: DEVELOPERS.md).
READAHEAD_MIN = 128 << 10
#: Bytes of decoded pages kept until ``set_cache_size`` says otherwise (``--cache-size``).
DEFAULT_CACHE_BYTES = 64 << 20
#: Pages met once wait in a FIFO of at most this many (2 MiB of 4 KiB pages): room for a
#: 1 MiB read and the next one read ahead (see :class:`PageCache`).
PROBATION_PAGES = 512
#: A read at least this large, page aligned, whose first page is not cached, is decoded
#: straight into the reader's buffer and not cached (:meth:`PagedReader._read_direct`).
DIRECT_MIN = READAHEAD_MIN


class PageCache:
    """Decoded pages keyed by page frame number, thread-safe, taken one batch per lock; a
    scan does not flush the pages in use (2Q, Johnson and Shasha, VLDB 1994).

    A page loaded for the first time waits in a small FIFO (*probation*): hits there do not
    move it, so the several reads of one page that come together (neighbouring symbols, a read
    and the one after it) count as one use. When it leaves, its frame number is remembered
    (*ghosts*, keys only); a page loaded again while remembered was wanted twice, far apart:
    it goes to the LRU of pages in use (*main*). A sequential read of the whole image, or a
    ``grep -r`` over ``sym/``, then passes through the probation FIFO alone: the pages in use
    stay, the daemon's memory stays at what it uses, and the memory of the pages that leave is
    what the next ones are decoded into.

    ``OrderedDict`` (C) rather than ``cachetools``: a 1 MiB read looks up 256 pages, and the
    per-page cost of the Python LRU is several times that of this one (DEVELOPERS.md).
    """

    def __init__(self, max_pages: int) -> None:
        self._main: OrderedDict[int, bytes] = OrderedDict()
        self._probation: OrderedDict[int, bytes] = OrderedDict()
        self._ghosts: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()
        self.resize(max_pages)

    def get_many(self, first: int, count: int, *, upto_absent: bool = False) -> list[bytes | None]:
        """The cached page (or :data:`ABSENT`) of each frame ``first .. first+count-1``.

        ``upto_absent``: the list ends just after the first cached :data:`ABSENT`.
        """
        return self._pages(first, count, upto_absent, upto_missing=False)

    def cached_prefix(self, first: int, count: int) -> list[bytes | None]:
        """The cached pages of frames ``first ..``, at most ``count``: up to the first frame not
        cached (excluded), or the first cached :data:`ABSENT` (included). A read looks no
        further before it knows that it must load a page (a read that starts at an absent
        page then costs one lookup, not one per page of its size)."""
        return self._pages(first, count, True, upto_missing=True)

    def _pages(
        self, first: int, count: int, upto_absent: bool, *, upto_missing: bool
    ) -> list[bytes | None]:
        """Each frame's cached page (None: not cached) from ``first`` on, ending after the
        first :data:`ABSENT` (``upto_absent``), before the first not cached (``upto_missing``).
        A hit in main makes the page its most recent; one in probation moves nothing."""
        out: list[bytes | None] = []
        append = out.append
        with self._lock:  # one loop step a page of every read: the lookups inlined
            main_get, touch, probation_get = (
                self._main.get,
                self._main.move_to_end,
                self._probation.get,
            )
            for pfn in range(first, first + count):
                page = main_get(pfn)
                if page is None:
                    page = probation_get(pfn)
                    if page is None and upto_missing:
                        break
                else:
                    touch(pfn)
                append(page)
                if upto_absent and page is not None and not page:
                    break
        return out

    def put_many(self, items: Sequence[tuple[int, bytes]]) -> None:
        with self._lock:
            main, probation, ghosts = self._main, self._probation, self._ghosts
            for pfn, page in items:
                if pfn in main:
                    main[pfn] = page
                    main.move_to_end(pfn)
                elif pfn in ghosts:  # wanted again since it left probation: in use
                    del ghosts[pfn]
                    main[pfn] = page
                else:
                    probation[pfn] = page  # a new key goes to the end; a known one stays
            for _ in range(max(0, len(main) - self.main_pages)):
                main.popitem(last=False)
            for _ in range(max(0, len(probation) - self.probation_pages)):
                ghosts[probation.popitem(last=False)[0]] = None
            for _ in range(max(0, len(ghosts) - self.ghost_pages)):
                ghosts.popitem(last=False)

    def resize(self, max_pages: int) -> None:
        """Keep at most ``max_pages`` from now on (the oldest go first): a quarter of them, at
        most :data:`PROBATION_PAGES`, for pages met once; the frame numbers of an eighth as
        many remembered (~100 bytes each): a page loaded again within that many other first
        loads is in use. 2Q advises half; an eighth keeps a ``grep -r`` over ``sym/``, whose
        names are not all in address order, from promoting ~7 MiB of pages it never reads
        again (measured on the sample: 1,791 pages in main with half, 293 with an eighth)."""
        with self._lock:
            self.max_pages = max(2, max_pages)
            self.probation_pages = max(1, min(PROBATION_PAGES, self.max_pages // 4))
            self.main_pages = self.max_pages - self.probation_pages
            self.ghost_pages = max(1, self.max_pages // 8)
            for segment, bound in (
                (self._main, self.main_pages),
                (self._probation, self.probation_pages),
            ):
                for _ in range(max(0, len(segment) - bound)):
                    segment.popitem(last=False)
            for _ in range(max(0, len(self._ghosts) - self.ghost_pages)):
                self._ghosts.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._main.clear()
            self._probation.clear()
            self._ghosts.clear()

    def __len__(self) -> int:
        return len(self._main) + len(self._probation)


class PagedSource(PhysicalSource, Generic[Ref]):
    """A container that stores memory page by page: it finds pages (:meth:`page_refs`) and
    loads them (:meth:`load_pages`); its :attr:`pages` reader does the rest. A subclass makes
    ``self.pages = PagedReader(self)`` once ``page_size`` and ``phys_end`` are known."""

    #: Bytes per page (the kdump block size).
    page_size: int
    #: Whether loading pages in several threads runs in parallel (the codec releases the GIL).
    parallel_decompression: bool = False
    pages: PagedReader[Ref]

    def readinto(self, paddr: int, buffer: memoryview) -> int:
        return self.pages.readinto(paddr, buffer)

    def set_cache_size(self, nbytes: int) -> None:
        self.pages.resize(nbytes)

    def close(self) -> None:
        """Drop the decoded pages (a subclass closes its files too)."""
        self.pages.cache.clear()

    @abstractmethod
    def page_refs(self, pfn: int, count: int) -> list[Ref | None]:
        """One reference per page frame ``pfn .. pfn+count-1``; None: not in the dump."""

    @abstractmethod
    def load_pages(self, refs: Sequence[Ref]) -> list[bytes | None]:
        """Each referenced page: exactly ``page_size`` bytes, or None when its data is corrupt
        or missing (never guessed); :meth:`PhysicalSource.fault` then says which and why."""

    def load_pages_into(self, refs: Sequence[Ref], dest: memoryview) -> int:
        """:meth:`load_pages` written into ``dest`` (a page each, in order): how many pages
        from the first loaded. ``dest`` from there on holds garbage (a corrupt page decoded
        as far as it went): the caller does not use it. A container overrides this when its
        pages can be decoded straight into ``dest``."""
        ps = self.page_size
        for k, page in enumerate(self.load_pages(refs)):
            if page is None:
                return k
            dest[k * ps : (k + 1) * ps] = page
        return len(refs)


def page_runs(
    start: int, end: int, page_size: int, frame_runs: Iterator[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    """Runs of frames ``[a, b)`` as byte runs clipped to ``[start, end)``."""
    for a, b in frame_runs:
        lo, hi = max(start, a * page_size), min(end, b * page_size)
        if lo < hi:
            yield lo, hi


class PagedReader(Generic[Ref]):
    """Reads a :class:`PagedSource`: ``readinto`` over its pages, decoded pages cached."""

    def __init__(self, source: PagedSource[Ref], cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        # Weak: the source holds its reader, and a cycle would keep a closed dump's cache (up
        # to --cache-size of pages) alive until the cyclic collector happens to run.
        self._source = weakref.ref(source)
        self.page_size = source.page_size
        self.end = source.phys_end
        self.cache = PageCache(cache_bytes // self.page_size)
        self._workers = min(MAX_WORKERS, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        self._ahead_lock = threading.Lock()
        self._last_end = -1
        self._ahead: tuple[int, int, Future[None]] | None = None  # pfns [start, end) loading

    def resize(self, cache_bytes: int) -> None:
        self.cache.resize(cache_bytes // self.page_size)

    def source(self) -> PagedSource[Ref]:
        """The source read (alive while it is read: its own methods call this reader)."""
        found = self._source()
        if found is None:  # pragma: no cover - a read ahead that outlived its dump
            raise ReferenceError("the paged source was closed and dropped")
        return found

    def readinto(self, addr: int, buffer: memoryview) -> int:
        """Copy the held bytes from ``addr`` into ``buffer``, page by page from the cache,
        stopping at the first page that is absent or whose data are corrupt; a large read that
        continues the previous one starts loading the next (read ahead). Past the count
        returned, ``buffer`` may have been written (a corrupt page, decoded as far as it went).
        """
        size = len(buffer)
        if addr < 0 or size <= 0 or addr >= self.end:
            return 0
        size = min(size, self.end - addr)
        ps = self.page_size
        pfn0 = addr // ps
        rel = addr - pfn0 * ps
        got = -1
        if size >= DIRECT_MIN and not rel:
            got = self._read_direct(pfn0, size // ps, buffer)
            if got == size - size % ps and got < size:  # the last page's head: from the cache
                got += self._read_cached(addr + got, buffer[got:size])
        if got < 0:
            got = self._read_cached(addr, buffer[:size])
        if not got:
            return 0  # an absent first byte: EIO, and nothing loaded or read ahead for it
        if size >= READAHEAD_MIN and self.source().parallel_decompression:
            self._readahead(addr, size)
        else:
            # Small reads move the sequential position too: the kernel splits a 1 MiB read
            # into an unaligned buffer in two requests (1 MiB - 48 bytes, then 48 bytes).
            self._last_end = addr + size
        return got

    def _read_cached(self, addr: int, buffer: memoryview) -> int:
        """:meth:`readinto` through the cache: the pages missing are loaded and cached."""
        size = len(buffer)
        ps = self.page_size
        pfn0 = addr // ps
        rel = addr - pfn0 * ps
        pages = self._held_pages(pfn0, (rel + size - 1) // ps + 1)
        got = 0
        for page in pages:  # bounded: one pass a page of the read
            if not page:  # absent (or not fetched: past the first absent page)
                break
            take = min(ps - rel, size - got)
            buffer[got : got + take] = page if take == ps else memoryview(page)[rel : rel + take]
            got += take
            rel = 0
        return got

    def _read_direct(self, pfn0: int, count: int, buffer: memoryview) -> int:
        """The pages of frames ``pfn0 ..`` (at most ``count``) decoded straight into
        ``buffer``, none cached, when the first is not cached and no read ahead is loading
        them: a read this large comes from a reader that goes on to what follows, and
        caching its pages would cost a copy and a lookup each, and push out pages in use.
        The pages held, in bytes; -1: read through the cache instead."""
        if self.cache.cached_prefix(pfn0, 1):
            return -1
        ahead = self._ahead
        if (
            ahead
            and ahead[0] < pfn0 + count
            and pfn0 < ahead[1]
            and not ahead[2].done()
            and self._pool_pid == os.getpid()
        ):
            return -1  # read ahead is loading them: the cache path waits for it
        if self._first_ref(pfn0) is None:
            return 0
        refs = self.source().page_refs(pfn0, count)
        held = refs.index(None) if None in refs else count
        ps = self.page_size
        loaded = self._load_into(cast("list[Ref]", refs[:held]), buffer[: held * ps])
        if loaded < held:  # in the dump, but not loadable: corrupt (or lost) data
            self._unloaded(pfn0 + loaded, [None])
            self.cache.put_many([(pfn0 + loaded, ABSENT)])
        return loaded * ps

    def _held_pages(self, pfn0: int, count: int) -> list[bytes | None]:
        """The pages of frames ``pfn0 ..`` from the cache, the missing ones loaded, up to the
        first absent one (:data:`ABSENT`; the pages after it are not looked for)."""
        cached = self.cache.cached_prefix(pfn0, count)
        k = len(cached)
        if k == count or (cached and not cached[-1]):
            return cached  # all cached, or up to a page known to be absent
        ref = self._first_ref(pfn0 + k)
        if ref is None:
            cached.append(ABSENT)
            return cached
        pages, first, stop = self._lookup(pfn0, count)
        if first < stop:
            ahead = self._ahead
            if (
                ahead
                and ahead[0] < pfn0 + stop
                and pfn0 + first < ahead[1]
                and self._pool_pid == os.getpid()  # a fork leaves the thread behind
            ):
                # Read ahead is loading these pages: wait for it rather than load them twice.
                try:
                    ahead[2].result()
                except VmcorefsError:  # the read below meets the same error and says it
                    pass
                pages, first, stop = self._lookup(pfn0, count)
            if first < stop:
                self._fetch(pfn0, pages, first, stop, known=(pfn0 + k, ref))
        return pages

    def _lookup(self, pfn0: int, count: int) -> tuple[list[bytes | None], int, int]:
        """Cached pages of the frames, the first one missing and where the read must stop."""
        pages = self.cache.get_many(pfn0, count, upto_absent=True)
        stop = len(pages)  # nothing past the first absent page is needed
        if stop < count:
            pages.extend([None] * (count - stop))
            stop -= 1
        first = next((i for i in range(stop) if pages[i] is None), stop)
        return pages, first, stop

    def _readahead(self, addr: int, size: int) -> None:
        """After a read that continues the previous one, load the next ``size`` bytes in the
        background: the next request then finds them decompressed (sequential readers)."""
        end = addr + size
        with self._ahead_lock:
            sequential, self._last_end = addr == self._last_end, end
            if (
                not sequential
                or end >= self.end
                or self.cache.probation_pages * self.page_size < 2 * size
            ):
                return  # the pages read ahead would leave probation before they are read
            if (
                self._ahead is not None
                and not self._ahead[2].done()
                and self._pool_pid == os.getpid()
            ):
                return  # one read ahead at a time
            ps = self.page_size
            first, last = end // ps, (min(end + size, self.end) - 1) // ps
            future = self._get_pool().submit(self._prefetch, first, last - first + 1)
            self._ahead = (first, last + 1, future)

    def _prefetch(self, pfn0: int, count: int) -> None:
        pages, first, stop = self._lookup(pfn0, count)
        if first < stop:
            self._fetch(pfn0, pages, first, stop, parallel=False)

    def _fetch(
        self,
        pfn0: int,
        pages: list[bytes | None],
        first: int,
        stop: int,
        parallel: bool = True,
        known: tuple[int, Ref] | None = None,
    ) -> None:
        """Fill the missing ``pages[first:stop]`` from the source and cache them; ``known``:
        a frame and its reference, already looked up (not asked for again)."""
        last = stop - 1
        while pages[last] is not None:
            last -= 1
        source = self.source()
        if known is not None and known[0] != pfn0 + first:
            known = None  # another thread cached that page meanwhile
        if last > first and known is None and self._first_ref(pfn0 + first) is None:
            pages[first] = ABSENT  # the read ends there: nothing after it is looked up
            return
        if known is not None and last == first:
            refs: list[Ref | None] = [known[1]]
        else:
            refs = source.page_refs(pfn0 + first, last - first + 1)
        held_refs = [r for r in refs if r is not None]
        if len(held_refs) == len(refs) and pages[first : last + 1].count(None) == len(refs):
            # A cold run (the common large read): every page missing, every page in the dump.
            loaded = self._load(held_refs, parallel)
            if None in loaded:
                self._unloaded(pfn0 + first, loaded)
            held = [ABSENT if p is None else p for p in loaded]
            pages[first : last + 1] = held
            pfns = range(pfn0 + first, pfn0 + last + 1)
            self.cache.put_many(list(zip(pfns, held, strict=True)))
            return
        want: list[int] = []
        want_refs: list[Ref] = []
        fetched: list[tuple[int, bytes]] = []
        for k, ref in enumerate(refs):
            i = first + k
            if pages[i] is not None:
                continue
            if ref is None:
                pages[i] = ABSENT
                fetched.append((pfn0 + i, ABSENT))
                break  # the read stops here: later pages are not needed
            want.append(i)
            want_refs.append(ref)
        for i, loaded_page in zip(want, self._load(want_refs, parallel), strict=True):
            page = ABSENT if loaded_page is None else loaded_page
            if loaded_page is None:  # in the dump, but not loadable: corrupt (or lost) data
                self._unloaded(pfn0 + i, [None])
            pages[i] = page
            fetched.append((pfn0 + i, page))
        if fetched:
            self.cache.put_many(fetched)

    def _first_ref(self, pfn: int) -> Ref | None:
        """The reference of frame ``pfn``; None when it is not in the dump (then cached as
        :data:`ABSENT`): asked of the first page a read must load, before the descriptors of
        the rest of its size."""
        ref = self.source().page_refs(pfn, 1)[0]
        if ref is None:
            self.cache.put_many([(pfn, ABSENT)])
        return ref

    def _unloaded(self, pfn0: int, loaded: list[bytes | None]) -> None:
        """Pages the dump references but that did not load (``None`` in ``loaded``, frames from
        ``pfn0``): cached as absent like an excluded page, but a corrupt one is recorded as
        damage (the container's ``fault`` says why, and records it)."""
        ps = self.page_size
        for k, page in enumerate(loaded):
            if page is None:
                self.source().fault((pfn0 + k) * ps)

    def _chunk_step(self, n: int) -> int:
        """Pages per chunk when ``n`` pages are loaded in the pool's threads as well as this
        one; 0 when this thread loads them all (a codec that holds the GIL, too few pages)."""
        chunks = min(self._workers, n // PARALLEL_MIN_PAGES)
        if chunks < 2 or not self.source().parallel_decompression:
            return 0
        return -(-n // chunks)

    def _load(self, refs: list[Ref], parallel: bool = True) -> list[bytes | None]:
        paged = self.source()
        n = len(refs)
        step = self._chunk_step(n) if parallel else 0
        if not step:
            return paged.load_pages(refs)
        pool = self._get_pool()
        futures = [pool.submit(paged.load_pages, refs[s : s + step]) for s in range(step, n, step)]
        out = paged.load_pages(refs[:step])  # this thread takes the first chunk itself
        for f in futures:
            out.extend(f.result())
        return out

    def _load_into(self, refs: list[Ref], dest: memoryview) -> int:
        """:meth:`PagedSource.load_pages_into`, in the pool's threads when the codec allows
        (as :meth:`_load`): how many pages from the first were loaded."""
        paged = self.source()
        n = len(refs)
        step = self._chunk_step(n)
        if not step:
            return paged.load_pages_into(refs, dest)
        ps = self.page_size
        pool = self._get_pool()
        starts = range(step, n, step)
        futures = [
            pool.submit(paged.load_pages_into, refs[s : s + step], dest[s * ps : (s + step) * ps])
            for s in starts
        ]
        loaded = paged.load_pages_into(refs[:step], dest[: step * ps])
        complete = loaded == step
        for s, future in zip(starts, futures, strict=True):
            done = future.result()  # every chunk waited for: each writes into dest
            if complete:
                loaded += done
                complete = done == min(step, n - s)
        return loaded

    def _get_pool(self) -> ThreadPoolExecutor:
        # A pool made before a fork (the CLI daemonising) has no threads in the child.
        pid = os.getpid()
        with self._pool_lock:
            if self._pool is None or self._pool_pid != pid:
                # One thread more than the chunks a read hands out: read ahead runs beside them.
                self._pool = ThreadPoolExecutor(
                    max_workers=self._workers, thread_name_prefix="vmcorefs-pages"
                )
                self._pool_pid = pid
            return self._pool
