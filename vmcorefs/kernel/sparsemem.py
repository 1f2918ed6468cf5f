"""Where the kernel's ``struct page`` array lies: the memory model, as makedumpfile finds it.

The kernel keeps one ``struct page`` per page frame. Where that array lies depends on the memory
model the kernel was built with, and VMCOREINFO says which (makedumpfile's ``get_mem_type``):

- ``SPARSEMEM``: ``mem_section[]`` holds one ``struct mem_section`` per ``2**SECTION_SIZE_BITS``
  bytes of physical address space; its ``section_mem_map`` is the section's ``mem_map`` minus the
  section's first pfn times ``SIZE(page)``, with flag bits in the low bits. With
  ``SPARSEMEM_EXTREME`` (``LENGTH(mem_section)`` = ``NR_SECTION_ROOTS``) ``mem_section`` is an
  array of pointers to pages of sections; since Linux 4.15 it is itself a pointer, and
  VMCOREINFO's ``SYMBOL(mem_section)`` carries its value. ``SPARSEMEM_VMEMMAP`` is the same walk
  (every section's map then lies in the one virtual ``vmemmap`` array).
- ``DISCONTIGMEM`` (and FLATMEM kernels with nodes): each node's ``pglist_data.node_mem_map``
  covers ``node_start_pfn`` .. ``+ node_spanned_pages``.
- ``FLATMEM``: one ``mem_map`` array (the variable ``mem_map`` holds its address) from pfn 0.

The result is a list of :class:`MemMapChunk` in pfn order, as makedumpfile's ``mem_map_data``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo

# include/linux/mmzone.h: flag bits in the low bits of mem_section.section_mem_map
SECTION_MARKED_PRESENT = 1 << 0
#: makedumpfile masks the five low bits on every kernel (SECTION_MAP_LAST_BIT was 1 << 2 before
#: Linux 4.13 and grew to 1 << 5 by 5.12; the higher bits were never set on older kernels).
SECTION_MAP_LAST_BIT = 1 << 5
SECTION_MAP_MASK = ~(SECTION_MAP_LAST_BIT - 1) & 0xFFFF_FFFF_FFFF_FFFF
# arch/x86/include/asm/sparsemem.h (x86_64), used where VMCOREINFO does not export them
X86_64_SECTION_SIZE_BITS = 27
X86_64_MAX_PHYSMEM_BITS = 46
X86_64_MAX_PHYSMEM_BITS_LA57 = 52
#: The values NUMBER(SECTION_SIZE_BITS) may have. x86_64 has had 27 since SPARSEMEM came to it
#: (arch/x86/include/asm/sparsemem.h); other architectures use 24 (powerpc) to 30 (ia64, sparc),
#: and include/linux/mmzone.h requires MAX_PAGE_ORDER + PAGE_SHIFT <= SECTION_SIZE_BITS (22 with
#: x86's orders). 20-35 holds every one with room, and keeps a section above a page.
SECTION_SIZE_BITS_RANGE = (20, 35)
#: The values NUMBER(MAX_PHYSMEM_BITS) may have: x86_64 had 40 (2.6.x), then 44, 46 since 2.6.31
#: and 52 with 5-level paging (pgtable_l5_enabled); 36 is i386 PAE's. Never above the 52 bits of
#: an x86_64 physical address (__PHYSICAL_MASK_SHIFT).
MAX_PHYSMEM_BITS_RANGE = (36, 52)
#: Sanity bounds: nodemask_t bytes (64k nodes), sections one dump can describe (52-bit, 128 MiB)
MAX_NODEMASK_BYTES = 8192
MAX_SECTIONS = 1 << 25
#: MAX_NUMNODES = 1 << NODES_SHIFT; NODES_SHIFT is at most 10 on x86_64 (arch/x86/Kconfig) and
#: 16 bits cover every architecture's (the bits of MAX_NODEMASK_BYTES).
MAX_NUMNODES = 1 << 16
#: SIZE(page): at least its flags word; 64 bytes on x86_64 (include/linux/mm_types.h keeps it
#: so), 72-80 with debug options (kmemcheck's shadow, KMSAN's metadata); 256 leaves room and
#: bounds what one read of struct pages allocates (BLOCK_PAGES of them).
MIN_STRUCT_PAGE = 8
MAX_STRUCT_PAGE = 256
#: SIZE(mem_section): section_mem_map, usage, page_ext with CONFIG_PAGE_EXTENSION: 16 or 32
#: bytes, and include/linux/mmzone.h wants a power of two (SECTION_ROOT_MASK); 64 leaves room
#: and bounds the root array read (NR_SECTION_ROOTS pointers, sections per page of them).
MIN_MEM_SECTION = 8
MAX_MEM_SECTION = 64
#: mem_section entries read at once (128 KiB of 32-byte entries).
SECTIONS_PER_READ = 4096

_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class MemMapChunk:
    """``struct page`` of pfns ``[pfn_start, pfn_end)`` at ``mem_map`` (kernel virtual)."""

    pfn_start: int
    pfn_end: int
    mem_map: int

    def page_address(self, pfn: int, page_size: int) -> int:
        return self.mem_map + (pfn - self.pfn_start) * page_size


@dataclass(frozen=True)
class MemMap:
    """The chunks of the ``struct page`` array, sorted by pfn, and the model that gave them."""

    model: str  #: "SPARSEMEM_EX", "SPARSEMEM", "DISCONTIGMEM" or "FLATMEM"
    chunks: tuple[MemMapChunk, ...]
    struct_page_size: int

    @property
    def max_pfn(self) -> int:
        return max((c.pfn_end for c in self.chunks), default=0)

    def page_to_pfn(self, page: int) -> int | None:
        """The pfn whose ``struct page`` is at ``page`` (makedumpfile's ``page_to_pfn``: the
        first chunk, in pfn order, whose map holds that address)."""
        by_map = self._by_map
        i = bisect.bisect_right(by_map, (page, 1 << 64)) - 1
        if i >= 0:  # the chunk whose map starts nearest below: the answer unless maps overlap
            c = self.chunks[by_map[i][1]]
            index = (page - c.mem_map) // self.struct_page_size
            if index < c.pfn_end - c.pfn_start and not self._overlap:
                return c.pfn_start + index
        for c in self.chunks:
            if page >= c.mem_map:
                index = (page - c.mem_map) // self.struct_page_size
                if index < c.pfn_end - c.pfn_start:
                    return c.pfn_start + index
        return None

    @cached_property
    def _by_map(self) -> list[tuple[int, int]]:
        return sorted((c.mem_map, i) for i, c in enumerate(self.chunks))

    @cached_property
    def _overlap(self) -> bool:
        spans = sorted(
            (c.mem_map, c.mem_map + (c.pfn_end - c.pfn_start) * self.struct_page_size)
            for c in self.chunks
        )
        return any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False))


def is_kvaddr(addr: int) -> bool:
    """A canonical upper-half (kernel) address: makedumpfile's ``is_kvaddr`` for x86_64.

    makedumpfile compares with ``PAGE_OFFSET``, which KASLR randomises and VMCOREINFO does not
    give; the upper half is the bound that needs no guess.
    """
    return 0xFF00_0000_0000_0000 <= addr <= 0xFFFF_FFFF_FFFF_FFFF


def _divideup(a: int, b: int) -> int:
    return -(-a // b)


def struct_page_size(vi: VmcoreInfo) -> int:
    """``SIZE(page)`` (:data:`MAX_STRUCT_PAGE`)."""
    return vi.need("SIZE", "page", MIN_STRUCT_PAGE, MAX_STRUCT_PAGE)


def page_size(vi: VmcoreInfo) -> int:
    """``PAGESIZE`` (x86_64's 4096 when the note does not say)."""
    return vi.page_size or 4096


def memory_model(vi: VmcoreInfo) -> str:
    """makedumpfile's ``get_mem_type``: which walk finds ``mem_map`` in this kernel."""
    spage = struct_page_size(vi)
    for name in ("page.flags", "page.mapping"):
        vi.need("OFFSET", name, within=spage, width=8)
    if vi.offset("page._refcount") is None and vi.offset("page._count") is None:
        raise Unavailable("VMCOREINFO has no OFFSET(page._refcount)")
    has_nodes = vi.symbol("node_data") is not None and vi.length("node_data") is not None
    if (
        has_nodes
        and vi.size("pglist_data") is not None
        and vi.offset("pglist_data.node_mem_map") is not None
        and vi.offset("pglist_data.node_start_pfn") is not None
        and vi.offset("pglist_data.node_spanned_pages") is not None
    ):
        return "DISCONTIGMEM"
    if (
        vi.symbol("mem_section") is not None
        and "SIZE(mem_section)" in vi
        and "OFFSET(mem_section.section_mem_map)" in vi
    ):
        mem_section_layout(vi)  # present: each must be in its range
        return "SPARSEMEM_EX" if _is_sparsemem_extreme(vi) else "SPARSEMEM"
    if vi.symbol("mem_map") is not None:
        return "FLATMEM"
    raise Unavailable(
        "VMCOREINFO describes no memory model (no SYMBOL(mem_section), SYMBOL(mem_map) or "
        "OFFSET(pglist_data.node_mem_map))"
    )


def section_size_bits(vi: VmcoreInfo) -> int:
    bits = vi.number("SECTION_SIZE_BITS", *SECTION_SIZE_BITS_RANGE)
    return bits if bits is not None else X86_64_SECTION_SIZE_BITS


def max_physmem_bits(vi: VmcoreInfo) -> int:
    bits = vi.number("MAX_PHYSMEM_BITS", *MAX_PHYSMEM_BITS_RANGE)
    if bits is not None:
        return bits
    if vi.number("pgtable_l5_enabled", 0, 1) == 1:
        return X86_64_MAX_PHYSMEM_BITS_LA57
    return X86_64_MAX_PHYSMEM_BITS


def mem_section_layout(vi: VmcoreInfo) -> tuple[int, int]:
    """``(SIZE(mem_section), OFFSET(mem_section.section_mem_map))`` (:data:`MAX_MEM_SECTION`);
    the map pointer lies inside."""
    size = vi.need("SIZE", "mem_section", MIN_MEM_SECTION, MAX_MEM_SECTION)
    return size, vi.need("OFFSET", "mem_section.section_mem_map", within=size, width=8)


def _is_sparsemem_extreme(vi: VmcoreInfo) -> bool:
    length = vi.length("mem_section")
    if length is None:
        return True
    nr_mem_sections = 1 << (max_physmem_bits(vi) - section_size_bits(vi))
    per_root = page_size(vi) // mem_section_layout(vi)[0]
    return length == _divideup(nr_mem_sections, per_root)


def read_mem_map(vi: VmcoreInfo, kvirt: AddressSpace, max_mapnr: int) -> MemMap:
    """The ``struct page`` chunks below ``max_mapnr`` (the dump's highest pfn, rounded up)."""
    model = memory_model(vi)
    spage = struct_page_size(vi)
    if model in ("SPARSEMEM", "SPARSEMEM_EX"):
        chunks = _sparsemem(vi, kvirt, max_mapnr, model == "SPARSEMEM_EX", page_size(vi), spage)
    elif model == "DISCONTIGMEM":
        chunks = _discontigmem(vi, kvirt, max_mapnr)
    else:
        chunks = _flatmem(vi, kvirt, max_mapnr)
    return MemMap(model, tuple(chunks), spage)


def _u64(kvirt: AddressSpace, addr: int, what: str) -> int:
    try:
        return kvirt.u64(addr)
    except FaultError as exc:
        raise Unavailable(f"{what} is not in the dump ({exc})") from None


def _sparsemem(
    vi: VmcoreInfo,
    kvirt: AddressSpace,
    max_mapnr: int,
    extreme: bool,
    page_size: int,
    spage: int,
) -> list[MemMapChunk]:
    bits = section_size_bits(vi)
    page_shift = page_size.bit_length() - 1
    pages_per_section = 1 << (bits - page_shift)
    num_section = _divideup(max_mapnr, pages_per_section)
    if num_section > MAX_SECTIONS:
        raise Unavailable(f"{num_section} memory sections: more than any machine has")
    size_ms, off_map = mem_section_layout(vi)
    per_root = page_size // size_ms if extreme else 1
    nr_roots = _divideup(num_section, per_root)
    symbol = vi.need("SYMBOL", "mem_section")

    def sections_at(root_table: int) -> dict[int, int] | None:
        """section number → mem_map of the sections with a map, or None when this reading of
        ``mem_section`` is not valid (no section, or a map outside the kernel's addresses)."""
        words: list[tuple[int, int]] = []
        if extreme:
            try:
                raw = kvirt.read_exact(root_table, 8 * nr_roots)
            except FaultError:
                return None
            for r, root in enumerate(struct.unpack(f"<{nr_roots}Q", raw)):
                if root:
                    count = min(per_root, num_section - r * per_root)
                    first = r * per_root
                    words += [
                        (first + i, w)
                        for i, w in _section_mem_maps(
                            kvirt, root, count, size_ms, off_map, page_size
                        )
                    ]
        else:
            words = list(
                _section_mem_maps(kvirt, root_table, num_section, size_ms, off_map, page_size)
            )
        maps: dict[int, int] = {}
        for nr, word in words:
            if not word & SECTION_MARKED_PRESENT:
                continue  # no mem_map, or hot-removed
            mem_map = ((word & SECTION_MAP_MASK) + nr * pages_per_section * spage) & (
                0xFFFF_FFFF_FFFF_FFFF
            )
            if not is_kvaddr(mem_map):
                return None
            maps[nr] = mem_map
        return maps or None

    # VMCOREINFO gives the root array's address (since 4.15 the value of the pointer
    # mem_section); a vmlinux would give the pointer's own address: makedumpfile tries both.
    maps = sections_at(symbol)
    if maps is None and extreme:
        pointer = _u64(kvirt, symbol, "the mem_section pointer")
        maps = sections_at(pointer) if is_kvaddr(pointer) else None
    if maps is None:
        raise Unavailable("mem_section holds no valid section (or is not in the dump)")
    chunks = []
    for nr, mem_map in sorted(maps.items()):
        start = nr * pages_per_section
        chunks.append(MemMapChunk(start, min(start + pages_per_section, max_mapnr), mem_map))
    return chunks


def _section_mem_maps(
    kvirt: AddressSpace, base: int, count: int, size_ms: int, off_map: int, page_size: int
) -> Iterator[tuple[int, int]]:
    """``(index, section_mem_map)`` of the readable ones of the ``count`` sections at ``base``.

    Read in blocks; a page of them that the dump lacks is skipped whole (makedumpfile reads
    each section alone and treats an unreadable one as having no map).
    """
    if not is_kvaddr(base):
        return
    i = 0
    while i < count:
        n = min(SECTIONS_PER_READ, count - i)
        addr = base + i * size_ms
        data = kvirt.read(addr, n * size_ms)
        whole = len(data) // size_ms
        for k in range(whole):
            yield i + k, _U64.unpack_from(data, k * size_ms + off_map)[0]
        if whole == n:
            i += n
            continue
        # Entries from i+whole on touch an absent page: go on at the first one past it.
        boundary = ((addr + len(data)) | (page_size - 1)) + 1
        i = max(i + whole + 1, i + -(-(boundary - addr) // size_ms))


def online_nodes(vi: VmcoreInfo, kvirt: AddressSpace) -> list[int]:
    """The node ids set in ``node_online_map`` (``SIZE(nodemask_t)`` bytes)."""
    addr = vi.need("SYMBOL", "node_online_map")
    size = vi.need("SIZE", "nodemask_t", 1, MAX_NODEMASK_BYTES)
    try:
        raw = kvirt.read_exact(addr, size)
    except FaultError as exc:
        raise Unavailable(f"node_online_map is not in the dump ({exc})") from None
    mask = int.from_bytes(raw, "little")
    return [n for n in range(size * 8) if mask >> n & 1]


def node_pgdats(vi: VmcoreInfo, kvirt: AddressSpace) -> list[tuple[int, int]]:
    """``(node id, pglist_data address)`` of each online node (makedumpfile's
    ``next_online_pgdat``: ``node_data[]``, else ``contig_page_data`` for a kernel without
    NUMA)."""
    node_data = vi.symbol("node_data")
    if node_data is None:
        contig = vi.symbol("contig_page_data")
        if contig is None:
            raise Unavailable(
                "VMCOREINFO has neither SYMBOL(node_data) nor SYMBOL(contig_page_data)"
            )
        return [(0, contig)]
    length = vi.length("node_data", 1, MAX_NUMNODES)
    out = []
    for nid in online_nodes(vi, kvirt):
        if length is not None and nid >= length:
            raise Unavailable(f"node {nid} is online but LENGTH(node_data) is {length}")
        pgdat = _u64(kvirt, node_data + 8 * nid, f"node_data[{nid}]")
        if not is_kvaddr(pgdat):
            raise Unavailable(f"node_data[{nid}] is {pgdat:#x}, not a kernel address")
        out.append((nid, pgdat))
    return out


def _discontigmem(vi: VmcoreInfo, kvirt: AddressSpace, max_mapnr: int) -> list[MemMapChunk]:
    size = vi.need("SIZE", "pglist_data")
    off_start = vi.need("OFFSET", "pglist_data.node_start_pfn", within=size, width=8)
    off_span = vi.need("OFFSET", "pglist_data.node_spanned_pages", within=size, width=8)
    off_map = vi.need("OFFSET", "pglist_data.node_mem_map", within=size, width=8)
    chunks = []
    for nid, pgdat in node_pgdats(vi, kvirt):
        start = _u64(kvirt, pgdat + off_start, f"node {nid} node_start_pfn")
        spanned = _u64(kvirt, pgdat + off_span, f"node {nid} node_spanned_pages")
        mem_map = _u64(kvirt, pgdat + off_map, f"node {nid} node_mem_map")
        end = min(start + spanned, max_mapnr)
        if start < end and is_kvaddr(mem_map):
            chunks.append(MemMapChunk(start, end, mem_map))
    chunks.sort(key=lambda c: c.pfn_start)
    for a, b in zip(chunks, chunks[1:], strict=False):
        if a.pfn_end > b.pfn_start:
            raise Unavailable(f"the mem_map of pfn {a.pfn_start:#x} overlaps the next one")
    return chunks


def _flatmem(vi: VmcoreInfo, kvirt: AddressSpace, max_mapnr: int) -> list[MemMapChunk]:
    mem_map = _u64(kvirt, vi.need("SYMBOL", "mem_map"), "the mem_map pointer")
    if not mem_map or not is_kvaddr(mem_map):
        raise Unavailable(f"mem_map is {mem_map:#x}, not a kernel address")
    return [MemMapChunk(0, max_mapnr, mem_map)]
