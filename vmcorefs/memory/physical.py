"""The physical address space of a dump: one view over a container, with ``--zero-fill``.

Containers that store memory page by page (kdump, its flattened and split forms) are read here
through their page interface (:class:`~vmcorefs.dumpfile.source.PagedSource`): decompressed
pages stay in an LRU (``--cache-size`` MiB) and the pages of a large read are decompressed by a
thread pool when the codec releases the GIL. ELF cores have no pages: plain ``pread``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ..dumpfile.source import PagedSource, PhysicalSource, Piece
from ..errors import CorruptError, FaultError, VmcorefsError
from .space import AddressSpace

#: Cached marker of a page that is not in the dump (a page is never empty).
ABSENT = b""
#: Pages to decompress below which a read does not use the pool (thread hand-off costs more).
PARALLEL_MIN_PAGES = 32
MAX_WORKERS = 4
#: A read at least this large that continues the previous one loads the next as much ahead,
#: for codecs whose pages cost enough to hide the hand-off to another thread (zlib, zstd, lzo
#: through lzallright: measured; python-lzo's 4 µs pages had gained nothing).
READAHEAD_MIN = 128 << 10


class PageCache:
    """An LRU of pages keyed by page frame number, thread-safe, taken one batch per lock.

    ``OrderedDict`` (C) rather than ``cachetools``: a 1 MiB read looks up 256 pages, and the
    per-page cost of the Python LRU was 6× that of this one (measured: 1.9 µs against 0.3).
    """

    def __init__(self, max_pages: int) -> None:
        self.max_pages = max(1, max_pages)
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, first: int, count: int, *, upto_absent: bool = False) -> list[bytes | None]:
        """The cached page (or :data:`ABSENT`) of each frame ``first .. first+count-1``.

        ``upto_absent``: the list ends just after the first cached :data:`ABSENT`.
        """
        out: list[bytes | None] = []
        append = out.append
        with self._lock:
            get, touch = self._pages.get, self._pages.move_to_end
            for pfn in range(first, first + count):
                page = get(pfn)
                append(page)
                if page is not None:
                    touch(pfn)
                    if upto_absent and not page:
                        break
        return out

    def put_many(self, items: Sequence[tuple[int, bytes]]) -> None:
        with self._lock:
            pages = self._pages
            touch = pages.move_to_end
            for pfn, page in items:
                if pfn in pages:
                    touch(pfn)  # a new key goes to the end by itself
                pages[pfn] = page
            excess = len(pages) - self.max_pages
            for _ in range(max(0, excess)):
                pages.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()

    def __len__(self) -> int:
        return len(self._pages)


class PhysicalMemory(AddressSpace):
    """Physical memory as the dump holds it; ``size`` is the container's ``phys_end``.

    With ``zero_fill`` the absent bytes inside ``[0, size)`` read as zeros (holes, excluded and
    lost pages); without it a read stops at the first absent byte.
    """

    name = "phys"

    def __init__(
        self, source: PhysicalSource, *, zero_fill: bool = False, cache_size_mib: int = 64
    ) -> None:
        self.source = source
        self.zero_fill = zero_fill
        self.size = source.phys_end
        self._check = source.check
        self._paged: PagedSource | None = source if isinstance(source, PagedSource) else None
        if self._paged is not None:
            self.page_size = self._paged.page_size
            self._zero_page = bytes(self.page_size)
            self.cache = PageCache((max(1, cache_size_mib) << 20) // self.page_size)
            self._workers = min(MAX_WORKERS, os.cpu_count() or 1)
            self._pool: ThreadPoolExecutor | None = None
            self._pool_pid = 0
            self._pool_lock = threading.Lock()
            self._ahead_lock = threading.Lock()
            self._last_end = -1
            self._ahead: tuple[int, int, Future] | None = None  # pfns [start, end) loading

    def read(self, addr: int, size: int) -> bytes:
        if addr < 0 or size <= 0 or addr >= self.size:
            return b""
        # A dump changed under us fails every read, cached pages included (DumpError).
        self._check()
        size = min(size, self.size - addr)
        if self._paged is not None:
            parts = self._paged_pieces(addr, size)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        data = self.source.read(addr, size)
        if not self.zero_fill or len(data) == size:
            return data
        parts = [data]
        pos = addr + len(data)
        end = addr + size
        # Bounded: every pass advances pos by at least one byte (present data or a zero run).
        while pos < end:
            gap_end = min(end, max(pos + 1, self.source.absent_until(pos, end)))
            parts.append(bytes(gap_end - pos))
            pos = gap_end
            if pos < end:
                more = self.source.read(pos, end - pos)
                parts.append(more)
                pos += len(more)
        return b"".join(parts)

    def extents(self, addr: int, size: int) -> list[Piece]:
        if self._paged is not None:
            if addr < 0 or size <= 0 or addr >= self.size:
                return []
            self._check()
            # The pages as they are cached (no joined copy: the FUSE reply takes them one by one).
            return self._paged_pieces(addr, min(size, self.size - addr))  # type: ignore[return-value]
        if self.zero_fill or addr < 0 or addr >= self.size:
            return super().extents(addr, size)
        # No change check here: whoever copies a FileExtent verifies the file after reading.
        return self.source.extents(addr, min(size, self.size - addr))

    def present(self, addr: int, size: int) -> bool:
        """True when every byte of ``[addr, addr+size)`` is held (zero-fill counts as held)."""
        try:
            self.read_exact(addr, size)
        except FaultError:
            return False
        return True

    def fault(self, addr: int) -> FaultError:
        """Why the byte at ``addr`` is not held (the container says); a corrupt page is
        recorded as the dump's damage (``summary``)."""
        if not 0 <= addr < self.size:
            return FaultError(self.name, addr, f"past the end of phys ({self.size:#x})")
        fault = self.source.fault(addr)
        if isinstance(fault, CorruptError):
            self.source.damage.record(fault)
        return fault

    def held_bytes(self) -> int:
        """Bytes of physical memory the dump holds (not what ``--zero-fill`` adds)."""
        return self.source.held_bytes()

    # -- paged sources ---------------------------------------------------------------------
    def _paged_pieces(self, addr: int, size: int) -> list[bytes]:
        """The held bytes of ``[addr, addr+size)`` (a range inside ``phys``) as consecutive
        pieces (pages, cut at the ends); a large read that continues the previous one starts
        loading the next (read ahead)."""
        parts = self._read_paged(addr, size)
        if size >= READAHEAD_MIN and self._paged.parallel_decompression:  # type: ignore[union-attr]
            self._readahead(addr, size)
        else:
            # Small reads move the sequential position too: the kernel splits a 1 MiB read
            # into an unaligned buffer in two requests (1 MiB - 48 bytes, then 48 bytes).
            self._last_end = addr + size
        return parts

    def _read_paged(self, addr: int, size: int) -> list[bytes]:
        ps = self.page_size
        end = addr + size
        pfn0 = addr // ps
        count = (end - 1) // ps - pfn0 + 1
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
                self._fetch(pfn0, pages, first, stop)
        if count == 1:
            page = pages[0] or (self._zero_page if self.zero_fill else ABSENT)
            rel = addr - pfn0 * ps
            if not page:
                return []
            return [page if size == ps else page[rel : rel + size]]
        if not addr % ps and not end % ps and all(pages):
            return pages  # type: ignore[return-value]  # whole pages, all held
        parts: list[bytes] = []
        pos = addr
        for i in range(count):
            page = pages[i]
            if not page:  # absent (or not fetched: past the first absent page)
                if not self.zero_fill:
                    break
                page = self._zero_page
            rel = pos - (pfn0 + i) * ps
            take = min(ps - rel, end - pos)
            parts.append(page if take == ps else page[rel : rel + take])
            pos += take
        return parts

    def _lookup(self, pfn0: int, count: int) -> tuple[list[bytes | None], int, int]:
        """Cached pages of the frames, the first one missing and where the read must stop."""
        pages = self.cache.get_many(pfn0, count, upto_absent=not self.zero_fill)
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
                or end >= self.size
                or self.cache.max_pages * self.page_size < 4 * size
            ):
                return
            if (
                self._ahead is not None
                and not self._ahead[2].done()
                and self._pool_pid == os.getpid()
            ):
                return  # one read ahead at a time
            ps = self.page_size
            first, last = end // ps, (min(end + size, self.size) - 1) // ps
            future = self._get_pool().submit(self._prefetch, first, last - first + 1)
            self._ahead = (first, last + 1, future)

    def _prefetch(self, pfn0: int, count: int) -> None:
        pages, first, stop = self._lookup(pfn0, count)
        if first < stop:
            self._fetch(pfn0, pages, first, stop, parallel=False)

    def _fetch(
        self, pfn0: int, pages: list[bytes | None], first: int, stop: int, parallel: bool = True
    ) -> None:
        """Fill the missing ``pages[first:stop]`` from the source and cache them."""
        last = stop - 1
        while pages[last] is not None:
            last -= 1
        refs = self._paged.page_refs(pfn0 + first, last - first + 1)  # type: ignore[union-attr]
        if None not in refs and pages[first : last + 1].count(None) == len(refs):
            # A cold run (the common large read): every page missing, every page in the dump.
            loaded = self._load(refs, parallel)
            if None in loaded:
                self._unloaded(pfn0 + first, loaded)
                loaded = [ABSENT if p is None else p for p in loaded]
            pages[first : last + 1] = loaded
            pfns = range(pfn0 + first, pfn0 + last + 1)
            self.cache.put_many(list(zip(pfns, loaded, strict=True)))
            return
        want: list[int] = []
        want_refs: list[object] = []
        fetched: list[tuple[int, bytes]] = []
        for k, ref in enumerate(refs):
            i = first + k
            if pages[i] is not None:
                continue
            if ref is None:
                pages[i] = ABSENT
                fetched.append((pfn0 + i, ABSENT))
                if not self.zero_fill:
                    break  # the read stops here: later pages are not needed
                continue
            want.append(i)
            want_refs.append(ref)
        for i, page in zip(want, self._load(want_refs, parallel), strict=True):
            if page is None:  # in the dump, but not loadable: corrupt (or lost) data
                self._unloaded(pfn0 + i, [None])
                page = ABSENT
            pages[i] = page
            fetched.append((pfn0 + i, page))
        if fetched:
            self.cache.put_many(fetched)

    def _unloaded(self, pfn0: int, loaded: list[bytes | None]) -> None:
        """Pages the dump references but that did not load (``None`` in ``loaded``, frames from
        ``pfn0``): cached as absent like an excluded page, but a corrupt one is recorded as
        damage (:meth:`fault` asks the container why)."""
        ps = self.page_size
        for k, page in enumerate(loaded):
            if page is None:
                self.fault((pfn0 + k) * ps)

    def _load(self, refs: list[object], parallel: bool = True) -> list[bytes | None]:
        paged = self._paged
        assert paged is not None
        n = len(refs)
        chunks = min(self._workers, n // PARALLEL_MIN_PAGES)
        if chunks < 2 or not parallel or not paged.parallel_decompression:
            return paged.load_pages(refs)
        step = -(-n // chunks)
        pool = self._get_pool()
        futures = [pool.submit(paged.load_pages, refs[s : s + step]) for s in range(step, n, step)]
        out = paged.load_pages(refs[:step])  # this thread takes the first chunk itself
        for f in futures:
            out.extend(f.result())
        return out

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
