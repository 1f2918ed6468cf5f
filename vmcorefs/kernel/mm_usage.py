"""``mm/usage``: every page frame classified as ``makedumpfile -d 31`` classifies it.

The rules are makedumpfile 1.7.2's, to the letter (``__exclude_unnecessary_pages``,
``page_is_buddy_v3``, ``is_cache_page``, ``isAnon``, ``isOffline``, ``exclude_free_page``,
``exclude_range``, ``print_report``): 1.7.2 is Debian 12's makedumpfile, which wrote the
reference dumps and reports, and on a 6.12 kernel (tools/make-sample-vmcore) these rules give
every one of its counts. Later releases changed three things for kernels newer than 1.7.2 knows,
and are not followed, so that the counts stay 1.7.2's:

- the anonymous-page test: 1.7.2 takes bit 0 of ``mapping`` alone. On Linux 6.2+ that word of
  a slab page holds ``slab.slabs``, so slabs with an odd count are user data, and ``-d 31``
  dumps lack them, task_structs included (1.7.3, commit 5f17bdd, excludes slab pages);
- the compound order on 6.3+ (``folio._folio_order``, then the low byte of ``_flags_1``), and
  hugetlb folios by ``PG_hugetlb`` (6.6) or page type (6.9): 1.7.2 finds no order there, so a
  large folio's head counts alone and its tails stay;
- unaccepted memory (6.16) and ``page.compound_info`` (7.1).

Linux 6.10 dropped ``NUMBER(PG_slab)`` (slab became a page type): 1.7.2 then tests flag bit
``1UL << NOT_FOUND_NUMBER`` (bit 63 on x86_64, the top bit of the node id), so for it no page
is slab; here too. Its slab test only guards the buddy and offline marks, which a slab page's
type never equals.

In the order makedumpfile applies them, for each page frame inside the dump's RAM ranges:

1. a compound tail page (``compound_head`` bit 0) is skipped: its head decides for it;
2. a buddy page (``_mapcount`` = ``PAGE_BUDDY_MAPCOUNT_VALUE`` and not ``PG_slab``) is free,
   with its ``2**private`` pages; kernels without that value give the zones' free lists instead;
3. an LRU or swap-cache page not mapped anonymously is cache, private when ``PG_private``;
4. an anonymous page (``mapping`` bit 0) or a hugetlb compound page (``HUGETLB_PAGE_DTOR`` or
   ``free_huge_page`` as its dtor) is user data;
5. ``PG_hwpoison`` makes it hwpoison; ``_mapcount`` = ``PAGE_OFFLINE_MAPCOUNT_VALUE`` offline;
6. the rest is kept (kernel data), and of those, the pages filled with zeros are counted
   apart (this needs the page's content: a page the dump lacks is reported in a ``#`` line).

A compound head of cache, user, hwpoison or offline data classifies ``2**order`` pages at
once; ranges count every frame up to ``max_mapnr`` (holes included), as makedumpfile does.

``max_mapnr`` is the dump's physical end in pages, lowered to the end of the last ``mem_map``
(makedumpfile's ``get_mem_map``); ``memory_hole`` is what the dump's RAM ranges leave out
(``PhysicalSource.ranges()``: PT_LOADs, a kdump's first bitmap). Counts are unsigned 64-bit,
as makedumpfile prints them.

Pages that the dump lacks are never guessed at: a frame whose struct page is absent is not
classified, a kept frame whose content is absent is not zero-tested; both stay in
``remaining_pages`` and one ``#`` line at the end says how many there are.
"""

from __future__ import annotations

import bisect
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import FaultError, Unavailable, check_stop
from ..memory.physical import PhysicalMemory
from ..memory.space import AddressSpace
from ..vmcoreinfo import MAX_STRUCT_SIZE, VmcoreInfo
from .lists import LIST_HEAD_SIZE, ListHead, list_for_each_entry, list_head_offset
from .sparsemem import MemMap, MemMapChunk, node_pgdats, read_mem_map, struct_page_size
from .sparsemem import page_size as sparsemem_page_size

#: include/linux/page-flags.h: bit 0 of page->mapping marks an anonymous page.
PAGE_MAPPING_ANON = 1
#: makedumpfile reads struct pages in windows of this many (PGMM_CACHED); a compound head in
#: the last slot of a window has its order ignored, so the rule depends on it.
PGMM_CACHED = 512
#: Struct pages read per block (a multiple of PGMM_CACHED): 1 MiB of 64-byte pages.
BLOCK_PAGES = 16 * 1024
#: Frames classified and zero-tested per window (a multiple of BLOCK_PAGES): 1 GiB of RAM.
WINDOW_PAGES = 16 * BLOCK_PAGES
#: Page contents read at most at once by the zero test.
ZERO_BLOCK_PAGES = 256
#: Excluded pages the zero test reads over rather than start another read.
ZERO_TEST_GAP = 1
#: Bound on free-list entries walked per list (kernels without PAGE_BUDDY_MAPCOUNT_VALUE).
MAX_FREE_LIST_ENTRIES = 1 << 26
#: NUMBER(PG_*): bits of ``page->flags``, an unsigned long (include/linux/page-flags.h).
PG_BIT_RANGE = (0, 63)
#: NUMBER(PAGE_*_MAPCOUNT_VALUE): a 32-bit ``page->_mapcount`` (atomic_t) value, negative up to
#: 6.11 (``~PG_buddy``, -129) and ``PGTY_* << 24`` in ``page_type`` (unsigned) since 6.12.
MAPCOUNT_RANGE = (-(1 << 31), (1 << 32) - 1)
#: LENGTH(zone.free_area) is NR_PAGE_ORDERS (MAX_ORDER before 6.4): 11 by default, and an order
#: is a shift of an unsigned long.
FREE_AREA_ORDERS_RANGE = (1, 64)
#: LENGTH(free_area.free_list) is MIGRATE_TYPES: 3 to 7 (include/linux/mmzone.h).
MIGRATE_TYPES_RANGE = (1, 16)
#: Bound on ``pglist_data.nr_zones`` (MAX_NR_ZONES is at most 6 in any kernel so far).
MAX_NR_ZONES = 16

USAGE_KEYS = (
    "original_pages",
    "excluded_pages",
    "pages_filled_with_zero",
    "non_private_cache_pages",
    "private_cache_pages",
    "user_process_data_pages",
    "free_pages",
    "hwpoison_pages",
    "offline_pages",
    "remaining_pages",
    "memory_hole",
    "total_pages",
)

_ZERO_RUN = re.compile(b"\x00+")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF


def kernel_version(osrelease: str | None) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of an OSRELEASE like ``6.1.0-56-amd64``."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", osrelease or "")
    if not m:
        raise Unavailable(f"VMCOREINFO's OSRELEASE {osrelease!r} has no kernel version")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def flag_mask(nr: int) -> int:
    """makedumpfile's ``test_bit``: an ``int`` mask ``1 << (nr & 0x1f)``, sign-extended."""
    n = nr & 0x1F
    return (0xFFFF_FFFF_8000_0000 if n == 31 else 1 << n) & _M64


@dataclass(frozen=True)
class PageRules:
    """The VMCOREINFO numbers and offsets the classification needs, checked once."""

    page_size: int
    spage: int
    off_flags: int
    off_mapping: int
    off_mapcount: int | None
    off_private: int | None
    off_chead: int | None
    #: compound order/dtor: offsets inside the first tail page (0: not known)
    order_offset: int
    dtor_offset: int
    order_width: int  #: 1 (4.16+) or 2 bytes
    dtor_width: int  #: 1 (4.16+), 2 (4.4+) or 8 bytes
    m_lru: int
    m_private: int
    m_swapcache: int
    m_swapbacked: int | None
    m_hwpoison: int | None
    bit_slab: int
    head_mask: int
    buddy_mode: str  #: "mapcount", "pg_buddy" or "freelist"
    bit_buddy: int
    buddy_mapcount: int | None
    offline_mapcount: int | None
    hugetlb_dtors: frozenset[int]
    free_area_length: int | None

    @classmethod
    def from_vmcoreinfo(cls, vi: VmcoreInfo) -> PageRules:
        page_size = sparsemem_page_size(vi)
        spage = struct_page_size(vi)
        version = kernel_version(vi.osrelease)
        new = version >= (4, 16, 0)
        old = version < (4, 4, 0)
        order_width = 1 if new else 2
        dtor_width = 1 if new else (2 if not old else 8)

        def flag(name: str) -> int | None:
            return vi.number(name, *PG_BIT_RANGE)

        def need_flag(name: str) -> int:
            return vi.need("NUMBER", name, *PG_BIT_RANGE)

        def mapcount(name: str) -> int | None:
            value = vi.number(name, *MAPCOUNT_RANGE)
            return None if value is None else value & _M32

        def field(name: str, width: int) -> int | None:
            return vi.offset(f"page.{name}", within=spage, width=width)

        off_flags = vi.need("OFFSET", "page.flags", within=spage, width=8)
        off_mapping = vi.need("OFFSET", "page.mapping", within=spage, width=8)
        off_chead = field("compound_head", 8)
        # Compound order and dtor live in the first tail page. (6.3+ keeps them in folio fields
        # that 1.7.2 does not read: no order, as for 1.7.2.)
        lru = field("lru", LIST_HEAD_SIZE)
        order_key, dtor_key = field("compound_order", order_width), field("compound_dtor", 1)
        if order_key is not None:
            order_offset = order_key
        elif old and lru is not None:
            order_offset = lru + (list_head_offset(vi, "prev") or 8)
        else:
            order_offset = 0
        if dtor_key is not None:
            dtor_offset = field("compound_dtor", dtor_width) or 0
        elif old and lru is not None:
            dtor_offset = lru + (list_head_offset(vi, "next") or 0)
        else:
            dtor_offset = 0
        off_mapcount = field("_mapcount", 4)
        off_private = field("private", 8)
        pg_buddy = flag("PG_buddy")
        buddy_value = mapcount("PAGE_BUDDY_MAPCOUNT_VALUE")
        # setup_page_is_buddy: PG_buddy (2.6.17 to 2.6.37) first, else the mapcount value
        if off_private is not None and pg_buddy is not None:
            buddy_mode = "pg_buddy"
        elif off_private is not None and buddy_value is not None and off_mapcount is not None:
            buddy_mode = "mapcount"
        else:
            buddy_mode = "freelist"
        pg_slab = flag("PG_slab")
        swapbacked = flag("PG_swapbacked")
        hwpoison = flag("PG_hwpoison")
        hugetlb_dtors = set()
        dtor = vi.number("HUGETLB_PAGE_DTOR", 0, (1 << 8 * dtor_width) - 1)
        if dtor is not None:
            hugetlb_dtors.add(dtor)
        if vi.symbol("free_huge_page") is not None:
            hugetlb_dtors.add(vi.symbol("free_huge_page"))
        # The offsets made of two keys (before 4.4) must lie inside the tail's struct page too.
        for what, off, width in (
            ("the compound order offset", order_offset or None, order_width),
            ("the compound dtor offset", dtor_offset or None, dtor_width),
        ):
            if off is not None and not 0 <= off <= spage - width:
                raise Unavailable(f"{what} {off} lies outside SIZE(page) {spage}")
        return cls(
            page_size=page_size,
            spage=spage,
            off_flags=off_flags,
            off_mapping=off_mapping,
            off_mapcount=off_mapcount,
            off_private=off_private,
            off_chead=off_chead,
            order_offset=order_offset,
            dtor_offset=dtor_offset,
            order_width=order_width,
            dtor_width=dtor_width,
            m_lru=flag_mask(need_flag("PG_lru")),
            m_private=flag_mask(need_flag("PG_private")),
            m_swapcache=flag_mask(need_flag("PG_swapcache")),
            m_swapbacked=None if swapbacked is None else flag_mask(swapbacked),
            m_hwpoison=None if hwpoison is None else flag_mask(hwpoison),
            bit_slab=0 if pg_slab is None else 1 << pg_slab,  # none from 6.10 on (see above)
            head_mask=_need(vi.single_bit("PG_head_mask"), "NUMBER(PG_head_mask)"),
            buddy_mode=buddy_mode,
            bit_buddy=1 << pg_buddy if pg_buddy is not None else 0,
            buddy_mapcount=buddy_value,
            offline_mapcount=mapcount("PAGE_OFFLINE_MAPCOUNT_VALUE"),
            hugetlb_dtors=frozenset(hugetlb_dtors),
            free_area_length=vi.length("zone.free_area", *FREE_AREA_ORDERS_RANGE),
        )


def _need(value: int | None, key: str) -> int:
    if value is None:
        raise Unavailable(f"VMCOREINFO has no {key}")
    return value


@dataclass
class PageUsage:
    """makedumpfile's counters (``pfn_*``) and what could not be decided."""

    max_mapnr: int = 0
    memory_hole: int = 0
    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    hwpoison: int = 0
    offline: int = 0
    #: kept pages whose content the dump lacks (no zero test possible)
    no_content: int = 0
    #: pages in RAM whose struct page the dump lacks (not classified)
    no_struct_page: int = 0

    @property
    def original(self) -> int:
        return self.max_mapnr - self.memory_hole

    @property
    def excluded(self) -> int:
        return (
            self.zero
            + self.cache
            + self.cache_private
            + self.user
            + self.free
            + self.hwpoison
            + self.offline
        )

    def counts(self) -> dict[str, int]:
        """The report's numbers, in its order; unsigned 64-bit like makedumpfile's ``mdf_pfn_t``
        (ranges over holes can make more pages excluded than there are, which wraps)."""
        return {k: v & _M64 for k, v in self._counts().items()}

    def _counts(self) -> dict[str, int]:
        return {
            "original_pages": self.original,
            "excluded_pages": self.excluded,
            "pages_filled_with_zero": self.zero,
            "non_private_cache_pages": self.cache,
            "private_cache_pages": self.cache_private,
            "user_process_data_pages": self.user,
            "free_pages": self.free,
            "hwpoison_pages": self.hwpoison,
            "offline_pages": self.offline,
            "remaining_pages": self.original - self.excluded,
            "memory_hole": self.memory_hole,
            "total_pages": self.max_mapnr,
        }

    def render(self) -> str:
        """The ``mm/usage`` text: ``name value`` lines, then at most one ``#`` line."""
        lines = [f"{k} {v}\n" for k, v in self.counts().items()]
        notes = []
        if self.no_struct_page:
            notes.append(
                f"{self.no_struct_page} pages have no struct page in the dump: not classified, "
                "counted in remaining_pages"
            )
        if self.no_content:
            notes.append(
                f"{self.no_content} kept pages are not in the dump: no zero test, counted in "
                "remaining_pages"
            )
        if notes:
            lines.append("# " + "; ".join(notes) + "\n")
        return "".join(lines)


def pfn_ranges(
    ranges: Sequence[tuple[int, int]], page_size: int, limit: int
) -> list[tuple[int, int]]:
    """The dump's RAM ranges as pfn ranges below ``limit`` (makedumpfile's 1st bitmap: a page
    counts from its first byte's range, ``create_bitmap_from_memhole`` rounds both ends down)."""
    shift = page_size.bit_length() - 1
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        a, b = start >> shift, min(end >> shift, limit)
        if out and a <= out[-1][1]:
            a = out[-1][1]
        if a < b:
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
    return out


class _Columns:
    """The struct page fields of one block, as lists (one C-level pass per field)."""

    def __init__(self, data: bytes, n: int, rules: PageRules) -> None:
        self.flags = _column(data, n, rules.spage, rules.off_flags, 8)
        self.mapping = _column(data, n, rules.spage, rules.off_mapping, 8)
        zeros = [0] * n
        self.chead = (
            _column(data, n, rules.spage, rules.off_chead, 8)
            if rules.off_chead is not None
            else zeros
        )
        self.mapcount = (
            _column(data, n, rules.spage, rules.off_mapcount, 4)
            if rules.off_mapcount is not None
            else zeros
        )
        self.private = (
            _column(data, n, rules.spage, rules.off_private, 8)
            if rules.off_private is not None
            else zeros
        )


def _column(data: bytes, n: int, spage: int, offset: int, width: int) -> list[int]:
    """Field ``offset`` (unsigned, ``width`` bytes) of each of ``n`` records of ``spage``."""
    code = "Q" if width == 8 else "I"
    if offset % width == 0 and spage % width == 0 and offset + width <= spage:
        step = spage // width
        view = memoryview(data)[: n * spage].cast(code)
        return view[offset // width :: step].tolist()
    fmt = struct.Struct("<" + code)
    return [fmt.unpack_from(data, i * spage + offset)[0] for i in range(n)]


# Counter slots of _Classifier.counts, in PageUsage's order.
_FREE, _CACHE, _CACHE_PRIVATE, _USER, _HWPOISON, _OFFLINE = range(6)
_ONES = b"\x01" * WINDOW_PAGES


class _Classifier:
    """``__exclude_unnecessary_pages`` over every mem_map chunk, then the zero test.

    The frames are handled a window at a time, in pfn order: a window's state (makedumpfile's
    2nd bitmap: 0 kept, 1 excluded, 2 struct page absent) is a bytearray of at most
    ``WINDOW_PAGES``, so memory does not grow with the machine. A range that runs past its
    window is carried to the windows it reaches.
    """

    def __init__(
        self,
        rules: PageRules,
        kvirt: AddressSpace,
        phys: PhysicalMemory,
        max_mapnr: int,
        segs: list[tuple[int, int]],
    ) -> None:
        self.r = rules
        self.kvirt = kvirt
        self.phys = phys
        self.max_mapnr = max_mapnr
        self.segs = segs
        self._seg_starts = [s for s, _ in segs]
        self.usage = PageUsage()
        self.counts = [0] * 6
        #: excluded ranges reaching past the window being classified (already counted)
        self.carry: list[tuple[int, int]] = []
        #: the end of the last multi-page range in this mem_map: not looked at again
        self.skip_until = 0
        self.state = bytearray()
        self.base = 0  #: the pfn of state[0]

    # -- windows -------------------------------------------------------------------------------
    def run(self, chunks: Sequence[MemMapChunk], excluded: Sequence[tuple[int, int]] = ()) -> None:
        """Classify, then zero-test, window by window. ``excluded``: sorted pfn ranges that
        are excluded already (the free lists' blocks, counted by their walk)."""
        self.carry = list(excluded)
        last_chunk = None
        for start, end, chunk in self._windows(chunks):
            check_stop()  # a window is bounded work; every frame of a large dump is not
            if chunk is not last_chunk:
                # Each mem_map is walked from its start: makedumpfile calls
                # __exclude_unnecessary_pages once per mem_map.
                self.skip_until = 0
                last_chunk = chunk
            self.base = start
            self.state = bytearray(end - start)
            self._apply_carry(start, end)
            if chunk is not None:
                self._classify_window(chunk, start, end)
            _zero_test(self.phys, self, self.r.page_size, start, end)
        u, counts = self.usage, self.counts
        u.free += counts[_FREE]
        u.cache += counts[_CACHE]
        u.cache_private += counts[_CACHE_PRIVATE]
        u.user += counts[_USER]
        u.hwpoison += counts[_HWPOISON]
        u.offline += counts[_OFFLINE]
        self.counts = [0] * 6

    def _windows(self, chunks: Sequence[MemMapChunk]):
        """``(start, end, chunk or None)`` in pfn order: the mem_maps cut at multiples of
        ``WINDOW_PAGES``, and the RAM that no mem_map covers (kept pages: zero test only)."""
        covered: list[tuple[int, int, MemMapChunk | None]] = []
        for c in chunks:
            end = min(c.pfn_end, self.max_mapnr)
            if c.pfn_start < end:
                covered.append((c.pfn_start, end, c))
        covered.sort(key=lambda w: w[0])
        pieces: list[tuple[int, int, MemMapChunk | None]] = []
        pos = 0
        for start, end, c in [*covered, (self.max_mapnr, self.max_mapnr, None)]:
            for a, b in self._segs_in(pos, start):  # RAM without a mem_map
                pieces.append((a, b, None))
            if start < end:
                pieces.append((start, end, c))
            pos = max(pos, end)
        for start, end, c in pieces:
            w = start
            while w < end:
                w_end = min(end, (w // WINDOW_PAGES + 1) * WINDOW_PAGES)
                yield w, w_end, c
                w = w_end

    def _apply_carry(self, start: int, end: int) -> None:
        """Mark the carried ranges in this window; keep those that reach past it. The list is
        sorted by start and windows come in order, so only its head can overlap."""
        state, carry = self.state, self.carry
        i = 0
        done = []
        while i < len(carry) and carry[i][0] < end:
            a, b = carry[i]
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                state[lo - start : hi - start] = _ONES[: hi - lo]
            if b <= end:
                done.append(i)
            i += 1
        for j in reversed(done):
            del carry[j]

    def _exclude_range(self, pfn: int, end: int) -> None:
        """Mark ``[pfn, end)`` excluded: in this window, and carried past it."""
        w_end = self.base + len(self.state)
        hi = min(end, w_end)
        if pfn < hi:
            self.state[pfn - self.base : hi - self.base] = _ONES[: hi - pfn]
        if end > w_end:
            bisect.insort(self.carry, (max(pfn, w_end), end))

    def _segs_in(self, a: int, b: int) -> list[tuple[int, int]]:
        """The RAM stretches inside ``[a, b)``."""
        i = max(0, bisect.bisect_right(self._seg_starts, a) - 1)
        out = []
        for s, e in self.segs[i:]:
            if s >= b:
                break
            if e > a:
                out.append((max(a, s), min(b, e)))
        return out

    # -- reading ----------------------------------------------------------------------------------
    def _classify_window(self, chunk: MemMapChunk, start: int, end: int) -> None:
        chunk_end = min(chunk.pfn_end, self.max_mapnr)
        pfn = start
        while pfn < end:
            block_end = min(end, (pfn // BLOCK_PAGES + 1) * BLOCK_PAGES)
            inside = self._segs_in(max(pfn, self.skip_until), block_end)
            if inside:
                pfn = self._read_block(chunk, inside, block_end, chunk_end)
            else:
                pfn = block_end

    def _read_block(
        self, chunk: MemMapChunk, inside: list[tuple[int, int]], block_end: int, chunk_end: int
    ) -> int:
        """Classify the struct pages of ``inside`` (up to ``block_end``); returns where to go
        on (past struct pages that the dump lacks)."""
        spage = self.r.spage
        first = inside[0][0]
        addr = chunk.page_address(first, spage)
        want = block_end - first
        data = self.kvirt.read(addr, want * spage)
        got = len(data) // spage
        if got:
            self._classify(first, data, got, inside, chunk_end)
        if got == want:
            return block_end
        # The struct pages from first+got on are absent: go on at the next page of them.
        boundary = ((addr + len(data)) | (self.r.page_size - 1)) + 1
        resume = first + -(-(boundary - addr) // spage)
        resume = min(max(resume, first + got + 1), block_end)
        state, base = self.state, self.base
        for a, b in inside:
            for p in range(max(a, first + got, self.skip_until), min(b, resume)):
                if state[p - base] == 0:
                    state[p - base] = 2
                    self.usage.no_struct_page += 1
        return resume

    # -- the rules -----------------------------------------------------------------------------
    def _classify(
        self, pfn0: int, data: bytes, n: int, inside: list[tuple[int, int]], chunk_end: int
    ) -> None:
        """Classify the pfns of ``inside`` from ``pfn0`` on (``n`` struct pages in ``data``)."""
        r = self.r
        counts = self.counts
        state, base = self.state, self.base
        max_mapnr = self.max_mapnr
        cols = _Columns(data, n, r)
        flags_l, mapping_l, chead_l = cols.flags, cols.mapping, cols.chead
        mapcount_l, private_l = cols.mapcount, cols.private
        head_mask, bit_slab = r.head_mask, r.bit_slab
        m_lru, m_private, m_swapcache = r.m_lru, r.m_private, r.m_swapcache
        m_swapbacked, m_hwpoison = r.m_swapbacked, r.m_hwpoison
        buddy_mode, buddy_mapcount, bit_buddy = r.buddy_mode, r.buddy_mapcount, r.bit_buddy
        offline_mapcount = r.offline_mapcount
        free_area_length = r.free_area_length
        hugetlb_dtors = r.hugetlb_dtors
        data_end = pfn0 + n
        for a, b in inside:
            pfn = max(a, pfn0, self.skip_until)
            b = min(b, data_end)
            while pfn < b:
                i = pfn - pfn0
                if chead_l[i] & 1:  # a tail page: its head classified it
                    pfn += 1
                    continue
                flags = flags_l[i]
                mapcount = mapcount_l[i]
                slab = flags & bit_slab
                nr = 1
                dtor = 0
                if flags & head_mask and pfn % PGMM_CACHED != PGMM_CACHED - 1:
                    nr, dtor = self._compound(pfn, i, data, n, chunk_end)
                # 1. free: a buddy page heads 2**private free pages
                if buddy_mode == "mapcount":
                    buddy = not slab and mapcount == buddy_mapcount
                elif buddy_mode == "pg_buddy":
                    buddy = bool(flags & bit_buddy)
                else:
                    buddy = False
                if buddy:
                    order = private_l[i]
                    if (free_area_length is not None and order >= free_area_length) or order >= 64:
                        pfn += 1  # "Invalid free page order": left as it is
                        continue
                    nr = 1 << order
                    slot = _FREE
                else:
                    # 2. cache, 3. user data, 4. hwpoison, 5. offline
                    # makedumpfile 1.7.2's isAnon: bit 0 of mapping, slab or not (see above)
                    anon = mapping_l[i] & PAGE_MAPPING_ANON
                    if (
                        flags & m_lru
                        or (m_swapbacked is None or flags & m_swapbacked)
                        and flags & m_swapcache
                    ) and not anon:
                        slot = _CACHE_PRIVATE if flags & m_private else _CACHE
                    elif anon or dtor in hugetlb_dtors:
                        slot = _USER
                    elif m_hwpoison is not None and flags & m_hwpoison:
                        slot = _HWPOISON
                    elif offline_mapcount is not None and not slab and mapcount == offline_mapcount:
                        slot = _OFFLINE
                    else:
                        pfn += 1  # kept: the zero test decides later
                        continue
                if nr == 1:
                    state[pfn - base] = 1
                    counts[slot] += 1
                    pfn += 1
                    continue
                # exclude_range: every frame of the range up to max_mapnr, holes included
                end = min(pfn + nr, max_mapnr)
                self._exclude_range(pfn, end)
                counts[slot] += end - pfn
                pfn += nr
                self.skip_until = pfn

    def _compound(self, pfn: int, i: int, data: bytes, n: int, chunk_end: int) -> tuple[int, int]:
        """``(2**order, dtor)`` of the compound head ``pfn``, read from its first tail page."""
        r = self.r
        if i + 1 >= n or pfn + 1 >= chunk_end:
            return 1, 0  # makedumpfile would read past its window: no order known
        tail = (i + 1) * r.spage
        order = 0
        dtor = 0
        if r.order_offset:
            fmt = _U8 if r.order_width == 1 else _U16
            order = fmt.unpack_from(data, tail + r.order_offset)[0]
        if r.dtor_offset:
            fmt = {1: _U8, 2: _U16, 8: _U64}[r.dtor_width]
            dtor = fmt.unpack_from(data, tail + r.dtor_offset)[0]
        if order >= 64 or pfn & ((1 << order) - 1):
            order = 0  # invalid order
        return 1 << order, dtor


@dataclass(frozen=True)
class ZoneLayout:
    """Where a node's zones and their free areas lie (``pglist_data``, ``zone``,
    ``free_area``), each offset checked inside its structure, each array inside its parent."""

    size_pgdat: int
    off_zones: int
    off_nr_zones: int
    size_zone: int
    off_span: int
    off_free: int
    orders: int
    size_free_area: int
    off_free_list: int
    types: int

    @classmethod
    def from_vmcoreinfo(cls, vi: VmcoreInfo, *, free_lists: bool = False) -> ZoneLayout:
        """``free_lists``: the list heads are followed (makedumpfile: LENGTH(free_area.free_list)
        may be absent, one list then)."""
        size_pgdat = vi.size("pglist_data") or MAX_STRUCT_SIZE
        size_zone = vi.need("SIZE", "zone")
        orders = vi.need("LENGTH", "zone.free_area", *FREE_AREA_ORDERS_RANGE)
        size_fa = vi.need("SIZE", "free_area")
        if free_lists:
            types = vi.length("free_area.free_list", *MIGRATE_TYPES_RANGE) or 1
        else:
            types = vi.need("LENGTH", "free_area.free_list", *MIGRATE_TYPES_RANGE)
        if vi.size("list_head", LIST_HEAD_SIZE, LIST_HEAD_SIZE) is None and not free_lists:
            raise Unavailable("VMCOREINFO has no SIZE(list_head)")
        return cls(
            size_pgdat=size_pgdat,
            off_zones=vi.need(
                "OFFSET", "pglist_data.node_zones", within=size_pgdat, width=size_zone
            ),
            off_nr_zones=vi.need("OFFSET", "pglist_data.nr_zones", within=size_pgdat, width=4),
            size_zone=size_zone,
            off_span=vi.need("OFFSET", "zone.spanned_pages", within=size_zone, width=8),
            off_free=vi.need("OFFSET", "zone.free_area", within=size_zone, width=orders * size_fa),
            orders=orders,
            size_free_area=size_fa,
            off_free_list=vi.need(
                "OFFSET", "free_area.free_list", within=size_fa, width=types * LIST_HEAD_SIZE
            ),
            types=types,
        )

    def nr_zones(self, kvirt: AddressSpace, nid: int, pgdat: int) -> int:
        """``pglist_data.nr_zones`` of node ``nid``: its zones must lie inside its pgdat."""
        nr = kvirt.s32(pgdat + self.off_nr_zones)
        if not 0 <= nr <= MAX_NR_ZONES or self.off_zones + nr * self.size_zone > self.size_pgdat:
            raise Unavailable(f"node {nid} has an implausible nr_zones {nr}")
        return nr


def _free_lists(
    vi: VmcoreInfo, kvirt: AddressSpace, memmap: MemMap, max_mapnr: int, usage: PageUsage
) -> list[tuple[int, int]]:
    """makedumpfile's ``exclude_free_page`` for kernels without a buddy mark in struct page:
    every block on every free list of every populated zone is free. Returns the blocks as
    sorted, merged pfn ranges; their frames are counted in ``usage.free``."""
    z = ZoneLayout.from_vmcoreinfo(vi, free_lists=True)
    off_lru = vi.need("OFFSET", "page.lru", within=struct_page_size(vi), width=LIST_HEAD_SIZE)
    links = ListHead.from_vmcoreinfo(vi, need=True)
    size_zone, off_free, off_span, off_zones = z.size_zone, z.off_free, z.off_span, z.off_zones
    size_fa, off_list, size_lh = z.size_free_area, z.off_free_list, LIST_HEAD_SIZE
    orders, types = z.orders, z.types
    blocks: list[tuple[int, int]] = []
    for nid, pgdat in node_pgdats(vi, kvirt):
        try:
            nr_zones = z.nr_zones(kvirt, nid, pgdat)
        except FaultError as exc:
            raise Unavailable(f"node {nid} nr_zones is not in the dump ({exc})") from None
        for zi in range(nr_zones):
            zone = pgdat + off_zones + zi * size_zone
            try:
                if not kvirt.u64(zone + off_span):
                    continue
                for order in range(orders - 1, -1, -1):
                    for mt in range(types):
                        head = zone + off_free + size_fa * order + off_list + size_lh * mt
                        what = f"node {nid} zone {zi} free_area[{order}].free_list[{mt}]"
                        _walk_free_list(kvirt, memmap, head, what, order, links, off_lru,
                                        max_mapnr, blocks)  # fmt: skip
            except FaultError as exc:
                raise Unavailable(f"node {nid} zone {zi} free lists: {exc}") from None
    # clear_bit_on_2nd_bitmap counts every frame it clears, even twice: so does this.
    usage.free += sum(b - a for a, b in blocks)
    merged: list[tuple[int, int]] = []
    for a, b in sorted(blocks):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _walk_free_list(
    kvirt: AddressSpace,
    memmap: MemMap,
    head: int,
    what: str,
    order: int,
    links: ListHead,
    off_lru: int,
    max_mapnr: int,
    blocks: list[tuple[int, int]],
) -> None:
    """Add the pfn range of each block on the free list at ``head`` (checked as makedumpfile
    checks it: each entry's ``prev`` is the entry before it, each entry is a struct page)."""
    for page in list_for_each_entry(kvirt, head, off_lru, what, MAX_FREE_LIST_ENTRIES,
                                    links=links):  # fmt: skip
        start = memmap.page_to_pfn(page & _M64)
        if start is None:
            raise Unavailable(f"{what}: the entry {page + off_lru:#x} is not a struct page")
        end = min(start + (1 << order), max_mapnr)
        if start < end:
            blocks.append((start, end))


def _zero_test(phys: PhysicalMemory, c: _Classifier, page_size: int, start: int, end: int) -> None:
    """Count the kept pages of ``[start, end)`` filled with zeros (makedumpfile's
    ``is_zero_page`` on each page it would write); a kept page that the dump lacks cannot be
    tested.

    Runs of kept pages separated by a few excluded ones are read together (one read instead of
    one per run; the few pages between cost less than the calls they save).
    """
    zero_page = bytes(page_size)
    zero_block = bytes(page_size * ZERO_BLOCK_PAGES)
    u = c.usage
    for lo, hi, runs in _zero_test_spans(c.state, c.base, c._segs_in(start, end)):
        data = phys.read(lo * page_size, (hi - lo) * page_size)
        held = lo + len(data) // page_size
        whole = zero_block.startswith(data)  # every byte read is zero
        for run_start, run_end in runs:
            top = min(run_end, held)
            if run_start < top:
                if whole:
                    u.zero += top - run_start
                else:
                    for p in range(run_start, top):
                        if data.startswith(zero_page, (p - lo) * page_size):
                            u.zero += 1
            if run_end > held:
                _zero_test_run(phys, u, max(run_start, held), run_end, page_size, zero_page)


def _zero_test_spans(state: bytearray, base: int, segs: list[tuple[int, int]]):
    """``(lo, hi, runs)``: runs of kept pfns (``state`` 0; ``state[0]`` is pfn ``base``),
    grouped while the gaps are at most ``ZERO_TEST_GAP`` pages and the group at most
    ``ZERO_BLOCK_PAGES`` long."""
    for a, b in segs:
        lo = hi = -1
        runs: list[tuple[int, int]] = []
        for m in _ZERO_RUN.finditer(state, a - base, b - base):
            start, end = m.start() + base, m.end() + base
            while start < end:
                if runs and (start - hi > ZERO_TEST_GAP or start - lo >= ZERO_BLOCK_PAGES):
                    yield lo, hi, runs
                    runs = []
                if not runs:
                    lo = start
                cut = min(end, lo + ZERO_BLOCK_PAGES)
                runs.append((start, cut))
                hi = cut
                start = cut
        if runs:
            yield lo, hi, runs


def _zero_test_run(
    phys: PhysicalMemory, u: PageUsage, pfn: int, end: int, page_size: int, zero_page: bytes
) -> None:
    """The zero test of kept pages ``[pfn, end)`` past a gap in the dump, a read at a time."""
    while pfn < end:
        n = end - pfn
        data = phys.read(pfn * page_size, n * page_size)
        got = len(data) // page_size
        for k in range(got):
            if data.startswith(zero_page, k * page_size):
                u.zero += 1
        pfn += got
        if got == n:
            return
        if len(data) > got * page_size:
            skip = 1  # a page only partly in the dump
        else:
            absent_end = phys.source.absent_until(pfn * page_size, end * page_size)
            skip = min(max(1, absent_end // page_size - pfn), end - pfn)
        u.no_content += skip
        pfn += skip


def page_usage(
    vi: VmcoreInfo, kvirt: AddressSpace, phys: PhysicalMemory, ranges: Sequence[tuple[int, int]]
) -> PageUsage:
    """Classify every page frame of the dump (``phys`` and ``kvirt`` must not zero-fill)."""
    rules = PageRules.from_vmcoreinfo(vi)
    page_size = rules.page_size
    initial = -(-phys.size // page_size)
    memmap = read_mem_map(vi, kvirt, initial)
    chunks = memmap.chunks
    max_mapnr = min(initial, memmap.max_pfn) if chunks else initial
    segs = pfn_ranges(ranges, page_size, max_mapnr)
    c = _Classifier(rules, kvirt, phys, max_mapnr, segs)
    c.usage.max_mapnr = max_mapnr
    c.usage.memory_hole = max_mapnr - sum(b - a for a, b in segs)
    free_blocks: list[tuple[int, int]] = []
    if rules.buddy_mode == "freelist":
        free_blocks = _free_lists(vi, kvirt, memmap, max_mapnr, c.usage)
    c.run(chunks, free_blocks)
    return c.usage
