"""Synthetic kernel memory for the ``uts/`` and ``mm/`` tests, on top of :mod:`tests.elfbuilder`.

``SyntheticKernel`` lays out what those views read, the way a kernel does: struct pages in one
of four memory models (SPARSEMEM_EXTREME with vmemmap, SPARSEMEM with a static
``mem_section[]`` and per-section maps, FLATMEM ``mem_map``, per-node ``node_mem_map``),
``init_uts_ns``, ``node_online_map``, ``node_data[]`` → ``pglist_data`` with zones and free
areas, ``vmap_area_list`` and ``zone_names[]``, and writes the VMCOREINFO that describes them.
The struct-page offsets and flag numbers default to those of the real 6.1 dumps.

Every expected value in the tests comes from what the test put here, never from vmcorefs.
``write_sparse_core`` writes the ELF with holes in the file where memory is zero, so a
4 GiB-class dump costs only the pages that hold data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from tests.elfbuilder import (
    DIRECT_MAP,
    PAGE,
    PageTables,
    PhysImage,
    START_KERNEL_map,
    note,
    vmcoreinfo_text,
)

MiB = 1 << 20
GiB = 1 << 30
VMEMMAP = 0xFFFFEA0000000000
VMALLOC = 0xFFFFC90000000000

# Linux 6.1 x86_64 (the real dumps' VMCOREINFO)
SIZE_PAGE = 64
OFF_FLAGS, OFF_LRU, OFF_CHEAD, OFF_DTOR, OFF_ORDER = 0, 8, 8, 16, 17
OFF_MAPPING, OFF_PRIVATE, OFF_MAPCOUNT, OFF_REFCOUNT = 24, 40, 48, 52
PG_lru, PG_private, PG_swapcache, PG_swapbacked, PG_slab, PG_hwpoison = 4, 13, 10, 19, 9, 23
PG_head = 16
PAGE_BUDDY_MAPCOUNT_VALUE = -129
PAGE_OFFLINE_MAPCOUNT_VALUE = -257
HUGETLB_PAGE_DTOR = 2
SIZE_MEM_SECTION = 32
SIZE_ZONE, OFF_ZONE_FREE_AREA, OFF_ZONE_SPANNED = 1536, 256, 144
SIZE_FREE_AREA, MIGRATE_TYPES, ORDERS = 88, 5, 11
SIZE_PGLIST, OFF_NR_ZONES, OFF_NODE_START, OFF_NODE_SPANNED = 174208, 171552, 171560, 171576
OFF_NODE_MEM_MAP = 171592  # only FLATMEM/DISCONTIGMEM kernels export it
SIZE_NODEMASK = 128
OFF_VA_LIST = 40
UTS_LEN = 65


def u64(v: int) -> bytes:
    return struct.pack("<Q", v & 0xFFFF_FFFF_FFFF_FFFF)


class SyntheticKernel:
    """Kernel data in a :class:`PhysImage` with the page tables that map it.

    ``ram`` is a list of physical ``[start, end)`` ranges (the ELF's PT_LOADs). The kernel's
    own data is allocated from 2 MiB up and reached through the kernel-image mapping
    (``START_KERNEL_map + paddr``, 2 MiB pages over the first GiB).
    """

    def __init__(
        self,
        ram: list[tuple[int, int]],
        *,
        model: str = "vmemmap",
        section_bits: int = 27,
        physmem_bits: int = 46,
        init_struct_pages: bool = True,
        nodes: Iterable[int] = (0,),
        node_spans: dict[int, tuple[int, int]] | None = None,
        memmap_ram: list[tuple[int, int]] | None = None,
    ) -> None:
        self.mem = PhysImage()
        self.pt = PageTables(self.mem, levels=4, table_base=0x10_0000)
        self.ram = sorted(ram)
        #: the RAM the kernel manages (has struct pages for): e.g. not a BIOS ROM range
        self.memmap_ram = sorted(memmap_ram or ram)
        self.model = model
        self.section_bits = section_bits
        self.physmem_bits = physmem_bits
        self.nodes = list(nodes)
        self._next = 2 * MiB
        self.vmcoreinfo: dict[str, str] = {
            "OSRELEASE": "6.1.0-synthetic",
            "BUILD-ID": "0" * 40,
            "PAGESIZE": "4096",
        }
        ram_end = max(e for _, e in self.memmap_ram)
        self.max_pfn = ram_end // PAGE
        self.pt.map_range(START_KERNEL_map, 0, min(GiB, max(ram_end, 64 * MiB)), 1 << 21)
        self._page_addr: dict[int, int] = {}  # section / chunk -> struct page paddr of its pfn 0
        self.node_spans = node_spans or {self.nodes[0]: (0, self.max_pfn)}
        self._struct_pages()
        self._page_offsets()
        if init_struct_pages:
            for start, end in self.memmap_ram:
                for pfn in range(start // PAGE, end // PAGE):
                    self.set_page(pfn, mapcount=-1)

    # -- memory -----------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 8) -> int:
        self._next = -(-self._next // align) * align
        paddr = self._next
        self._next += size
        assert self._next <= min(GiB, self.ram[0][1]), "kernel data beyond the first RAM range"
        return paddr

    def kva(self, paddr: int) -> int:
        return START_KERNEL_map + paddr

    def write(self, paddr: int, data: bytes) -> None:
        self.mem.write(paddr, data)

    def data(self, size: int, content: bytes = b"", align: int = 8) -> int:
        """A kernel object: its kernel virtual address."""
        paddr = self.alloc(size, align)
        if content:
            self.write(paddr, content)
        return self.kva(paddr)

    def symbol(self, name: str, vaddr: int) -> None:
        self.vmcoreinfo[f"SYMBOL({name})"] = f"{vaddr:x}"

    # -- struct pages ----------------------------------------------------------------------------
    @property
    def pages_per_section(self) -> int:
        return 1 << (self.section_bits - 12)

    def _sections(self) -> list[int]:
        pps = self.pages_per_section
        out: set[int] = set()
        for start, end in self.memmap_ram:
            out.update(range(start // PAGE // pps, -(-(end // PAGE) // pps)))
        return sorted(out)

    def _struct_pages(self) -> None:
        model = self.model
        pps = self.pages_per_section
        if model in ("vmemmap", "sparse"):
            nr_sections = 1 << (self.physmem_bits - self.section_bits)
            per_root = PAGE // SIZE_MEM_SECTION
            if model == "vmemmap":
                # SPARSEMEM_EXTREME: a root array of pointers to pages of sections.
                nr_roots = -(-nr_sections // per_root)
                root_array = self.alloc(8 * nr_roots, PAGE)
                length = nr_roots
            else:
                # SPARSEMEM without EXTREME: one static array of every section.
                root_array = self.alloc(SIZE_MEM_SECTION * nr_sections, PAGE)
                length = nr_sections
            roots: dict[int, int] = {}
            for nr in self._sections():
                size = pps * SIZE_PAGE
                if model == "vmemmap":
                    align = 1 << 21 if size % (1 << 21) == 0 else PAGE
                    backing = self.alloc(size, align)
                    vaddr = VMEMMAP + nr * pps * SIZE_PAGE
                    self.pt.map_range(vaddr, backing, size, align)
                    coded = VMEMMAP
                    root = roots.get(nr // per_root)
                    if root is None:
                        root = roots[nr // per_root] = self.alloc(PAGE, PAGE)
                        self.write(root_array + 8 * (nr // per_root), u64(self.kva(root)))
                    ms = root + (nr % per_root) * SIZE_MEM_SECTION
                else:
                    backing = self.alloc(size, 64)
                    coded = self.kva(backing) - nr * pps * SIZE_PAGE
                    ms = root_array + nr * SIZE_MEM_SECTION
                # SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP | SECTION_IS_ONLINE
                self.write(ms, u64(coded | 0b111))
                self._page_addr[nr] = backing
            self.symbol("mem_section", self.kva(root_array))
            self.vmcoreinfo["LENGTH(mem_section)"] = str(length)
            self.vmcoreinfo["SIZE(mem_section)"] = str(SIZE_MEM_SECTION)
            self.vmcoreinfo["OFFSET(mem_section.section_mem_map)"] = "0"
            self.vmcoreinfo["NUMBER(SECTION_SIZE_BITS)"] = str(self.section_bits)
            self.vmcoreinfo["NUMBER(MAX_PHYSMEM_BITS)"] = str(self.physmem_bits)
        elif model == "flat":
            backing = self.alloc(self.max_pfn * SIZE_PAGE, 64)
            self._page_addr[0] = backing
            self.symbol("mem_map", self.data(8, u64(self.kva(backing))))
        elif model == "nodes":
            # One node_mem_map per node (add_nodes writes the pointers into the pgdats).
            for nid, (start, end) in self.node_spans.items():
                self._page_addr[nid] = self.alloc((end - start) * SIZE_PAGE, 64)
        else:
            raise ValueError(model)

    def struct_page(self, pfn: int) -> int:
        """Physical address of ``pfn``'s struct page."""
        if self.model in ("vmemmap", "sparse"):
            nr, index = divmod(pfn, self.pages_per_section)
            return self._page_addr[nr] + index * SIZE_PAGE
        if self.model == "flat":
            return self._page_addr[0] + pfn * SIZE_PAGE
        for nid, (start, end) in self.node_spans.items():
            if start <= pfn < end:
                return self._page_addr[nid] + (pfn - start) * SIZE_PAGE
        raise KeyError(pfn)

    def struct_page_kva(self, pfn: int) -> int:
        if self.model == "vmemmap":
            return VMEMMAP + pfn * SIZE_PAGE
        return self.kva(self.struct_page(pfn))

    def set_page(
        self,
        pfn: int,
        *,
        flags: int | None = None,
        mapping: int | None = None,
        private: int | None = None,
        mapcount: int | None = None,
        chead: int | None = None,
        raw: tuple[int, bytes] | None = None,
    ) -> None:
        base = self.struct_page(pfn)
        for off, value in (
            (OFF_FLAGS, flags),
            (OFF_MAPPING, mapping),
            (OFF_PRIVATE, private),
            (OFF_CHEAD, chead),
        ):
            if value is not None:
                self.write(base + off, u64(value))
        if mapcount is not None:
            self.write(base + OFF_MAPCOUNT, struct.pack("<i", mapcount))
        if raw is not None:
            self.write(base + raw[0], raw[1])

    def free_block(self, pfn: int, order: int) -> None:
        self.set_page(pfn, mapcount=PAGE_BUDDY_MAPCOUNT_VALUE, private=order)

    def compound(self, pfn: int, order: int, *, flags: int = 0, mapping: int = 0, dtor=0) -> None:
        """A compound page: head flags with PG_head, tails pointing at the head."""
        self.set_page(pfn, flags=flags | 1 << PG_head, mapping=mapping)
        head = self.struct_page_kva(pfn)
        for t in range(1, 1 << order):
            self.set_page(pfn + t, chead=head | 1)
        first_tail = self.struct_page(pfn + 1)
        self.write(first_tail + OFF_DTOR, bytes([dtor]))
        self.write(first_tail + OFF_ORDER, bytes([order]))

    def fill(self, pfn: int, byte: int = 0xA5) -> None:
        """Give page ``pfn`` non-zero content."""
        self.write(pfn * PAGE, bytes([byte]) * PAGE)

    def nonzero_pfns(self) -> set[int]:
        return {pfn for pfn, page in self.mem.pages.items() if any(page)}

    def _page_offsets(self) -> None:
        v = self.vmcoreinfo
        v["SIZE(page)"] = str(SIZE_PAGE)
        for name, off in (
            ("flags", OFF_FLAGS),
            ("_refcount", OFF_REFCOUNT),
            ("mapping", OFF_MAPPING),
            ("lru", OFF_LRU),
            ("_mapcount", OFF_MAPCOUNT),
            ("private", OFF_PRIVATE),
            ("compound_dtor", OFF_DTOR),
            ("compound_order", OFF_ORDER),
            ("compound_head", OFF_CHEAD),
        ):
            v[f"OFFSET(page.{name})"] = str(off)
        for name, value in (
            ("PG_lru", PG_lru),
            ("PG_private", PG_private),
            ("PG_swapcache", PG_swapcache),
            ("PG_swapbacked", PG_swapbacked),
            ("PG_slab", PG_slab),
            ("PG_hwpoison", PG_hwpoison),
            ("PG_head_mask", 1 << PG_head),
            ("PAGE_BUDDY_MAPCOUNT_VALUE", PAGE_BUDDY_MAPCOUNT_VALUE),
            ("HUGETLB_PAGE_DTOR", HUGETLB_PAGE_DTOR),
            ("PAGE_OFFLINE_MAPCOUNT_VALUE", PAGE_OFFLINE_MAPCOUNT_VALUE),
        ):
            v[f"NUMBER({name})"] = str(value)
        v["LENGTH(zone.free_area)"] = str(ORDERS)

    # -- other kernel objects -------------------------------------------------------------------
    def add_uts(self, fields: list[bytes]) -> int:
        raw = b"".join(f[:64].ljust(UTS_LEN, b"\0") for f in fields)
        # struct uts_namespace: name first in 6.1 (OFFSET(uts_namespace.name)=0); use 8 here.
        addr = self.data(8 + len(raw), bytes(8) + raw)
        self.symbol("init_uts_ns", addr)
        self.vmcoreinfo["OFFSET(uts_namespace.name)"] = "8"
        return addr

    def add_nodes(
        self,
        zones: dict[int, list[tuple[int, list[int]]]],
        *,
        nr_zones: dict[int, int] | None = None,
        names: list[bytes] = (b"DMA", b"DMA32", b"Normal", b"Movable", b"Device"),
        node_data: bool = True,
        free_lists: dict[tuple[int, int, int, int], list[int]] | None = None,
    ) -> None:
        """Online nodes with pgdats: ``zones[nid]`` = [(spanned_pages, nr_free per order)]
        for zone 0, 1, ...; ``zone_names[]`` and ``node_online_map`` to match.
        ``free_lists[(nid, zone, order, migratetype)]`` = the pfns of the blocks on that list."""
        mask = 0
        for nid in zones:
            mask |= 1 << nid
        self.symbol(
            "node_online_map", self.data(SIZE_NODEMASK, mask.to_bytes(SIZE_NODEMASK, "little"))
        )
        v = self.vmcoreinfo
        v["SIZE(nodemask_t)"] = str(SIZE_NODEMASK)
        pgdats = {}
        for nid, zl in zones.items():
            pgdat = self.alloc(SIZE_PGLIST, PAGE)
            pgdats[nid] = pgdat
            count = len(zl) if nr_zones is None else nr_zones[nid]
            self.write(pgdat + OFF_NR_ZONES, struct.pack("<i", count))
            start, end = self.node_spans.get(nid, (0, 0))
            self.write(pgdat + OFF_NODE_START, u64(start))
            self.write(pgdat + OFF_NODE_SPANNED, u64(end - start))
            if self.model == "nodes" and nid in self.node_spans:
                self.write(pgdat + OFF_NODE_MEM_MAP, u64(self.kva(self._page_addr[nid])))
            for z, (spanned, free) in enumerate(zl):
                zone = pgdat + z * SIZE_ZONE
                self.write(zone + OFF_ZONE_SPANNED, u64(spanned))
                for order, n in enumerate(free):
                    fa = zone + OFF_ZONE_FREE_AREA + order * SIZE_FREE_AREA
                    for mt in range(MIGRATE_TYPES):
                        pfns = (free_lists or {}).get((nid, z, order, mt), [])
                        self._link(fa + 16 * mt, [self.struct_page(p) + OFF_LRU for p in pfns])
                    self.write(fa + 16 * MIGRATE_TYPES, u64(n))
        if node_data:
            length = 1024
            table = self.alloc(8 * length, 8)
            for nid, pgdat in pgdats.items():
                self.write(table + 8 * nid, u64(self.kva(pgdat)))
            self.symbol("node_data", self.kva(table))
            v["LENGTH(node_data)"] = str(length)
        else:
            self.symbol("contig_page_data", self.kva(pgdats[0]))
        ptrs = b"".join(u64(self.data(len(n) + 1, n + b"\0")) for n in names)
        self.symbol("zone_names", self.data(len(ptrs), ptrs))
        v["SIZE(pglist_data)"] = str(SIZE_PGLIST)
        v["SIZE(zone)"] = str(SIZE_ZONE)
        v["SIZE(free_area)"] = str(SIZE_FREE_AREA)
        v["SIZE(list_head)"] = "16"
        v["OFFSET(pglist_data.node_zones)"] = "0"
        v["OFFSET(pglist_data.nr_zones)"] = str(OFF_NR_ZONES)
        v["OFFSET(pglist_data.node_start_pfn)"] = str(OFF_NODE_START)
        v["OFFSET(pglist_data.node_spanned_pages)"] = str(OFF_NODE_SPANNED)
        if self.model == "nodes":
            v["OFFSET(pglist_data.node_mem_map)"] = str(OFF_NODE_MEM_MAP)
        v["OFFSET(zone.free_area)"] = str(OFF_ZONE_FREE_AREA)
        v["OFFSET(zone.spanned_pages)"] = str(OFF_ZONE_SPANNED)
        v["OFFSET(free_area.free_list)"] = "0"
        v["OFFSET(list_head.next)"] = "0"
        v["OFFSET(list_head.prev)"] = "8"
        v["LENGTH(free_area.free_list)"] = str(MIGRATE_TYPES)

    def _link(self, head: int, entries: list[int]) -> None:
        """A circular ``list_head`` list at physical ``head`` through physical ``entries``."""
        links = [head, *entries]
        for i, link in enumerate(links):
            nxt, prv = links[(i + 1) % len(links)], links[i - 1]
            self.write(link, u64(self._kv(nxt)) + u64(self._kv(prv)))

    def _kv(self, paddr: int) -> int:
        """Kernel address of a physical address of kernel data or of a struct page."""
        if self.model == "vmemmap":
            for nr, backing in self._page_addr.items():
                size = self.pages_per_section * SIZE_PAGE
                if backing <= paddr < backing + size:
                    return VMEMMAP + nr * size + (paddr - backing)
        return self.kva(paddr)

    def unmap_struct_pages(self, pfn: int) -> range:
        """Clear the vmemmap PTE that maps ``pfn``'s struct page; the pfns it held."""
        assert self.model == "vmemmap" and self.pages_per_section * SIZE_PAGE % (1 << 21)
        vaddr = VMEMMAP + pfn * SIZE_PAGE
        table = self.pt.table_for(vaddr, 3)
        self.pt.put(table, (vaddr >> 12) & 511, 0)
        first = (vaddr & ~(PAGE - 1)) - VMEMMAP
        return range(first // SIZE_PAGE, (first + PAGE) // SIZE_PAGE)

    def add_vmap_areas(self, areas: list[tuple[int, int]]) -> None:
        """``vmap_area_list`` with ``areas`` (start, end) in the given list order."""
        head = self.alloc(16)
        nodes = [self.alloc(64) for _ in areas]
        self._link(head, [n + OFF_VA_LIST for n in nodes])
        for node, (start, end) in zip(nodes, areas, strict=True):
            self.write(node, u64(start) + u64(end))
        self.symbol("vmap_area_list", self.kva(head))
        self.vmcoreinfo["OFFSET(vmap_area.va_start)"] = "0"
        self.vmcoreinfo["OFFSET(vmap_area.list)"] = str(OFF_VA_LIST)

    # -- the dump ---------------------------------------------------------------------------------
    def vmcoreinfo_bytes(self, drop: Iterable[str] = ()) -> bytes:
        extra = {k: v for k, v in self.vmcoreinfo.items() if k not in set(drop)}
        return vmcoreinfo_text(self.pt, extra=extra)

    def write_core(self, path, *, drop: Iterable[str] = (), ranges=None, kexec_text=None) -> str:
        """The ELF core; ``kexec_text`` = (start, end) adds a crash kernel's kernel-text PT_LOAD
        of those physical pages (see :func:`write_sparse_core`)."""
        assert self.pt._next <= 2 * MiB, "page tables ran into the kernel data"
        write_sparse_core(path, self.mem, ranges or self.ram, self.vmcoreinfo_bytes(drop),
                          kexec_text=kexec_text)  # fmt: skip
        return str(path)


def write_sparse_core(
    path,
    mem: PhysImage,
    ranges: list[tuple[int, int]],
    vmcoreinfo: bytes,
    *,
    kexec_text: tuple[int, int] | None = None,
) -> None:
    """An ELF64 core of ``ranges``, each PT_LOAD's data at a page-aligned offset; only the pages
    that ``mem`` holds are written, the rest of the file is a hole (reads as zeros).

    ``kexec_text`` lays it out as a crash kernel's ``/proc/vmcore`` (the kernel's
    ``crash_prepare_elf64_headers()``): first a PT_LOAD of the kernel text ``[start, end)``
    with ``p_vaddr`` in the kernel image (``START_KERNEL_map + start``), then the RAM ranges
    with ``p_vaddr`` in the direct map: the text's pages are in two segments."""
    notes = note(b"VMCOREINFO", 0, vmcoreinfo)
    loads = [(DIRECT_MAP + start if kexec_text else start, start, end) for start, end in ranges]
    if kexec_text is not None:
        loads.insert(0, (START_KERNEL_map + kexec_text[0], *kexec_text))
    nph = 1 + len(loads)
    notes_off = 64 + 56 * nph
    data_off = -(-(notes_off + len(notes)) // PAGE) * PAGE
    phdrs = bytearray(struct.pack("<IIQQQQQQ", 4, 0, notes_off, 0, 0, len(notes), len(notes), 0))
    offsets = []
    off = data_off
    for vaddr, start, end in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, start, end - start, end - start, 0)
        offsets.append(off)
        off += -(-(end - start) // PAGE) * PAGE
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, nph, 64, 0, 0)
    with open(path, "wb") as f:
        f.write(ehdr + phdrs + notes)
        for (_, start, end), base in zip(loads, offsets, strict=True):
            for pfn in sorted(p for p in mem.pages if start <= p * PAGE < end):
                page = mem.pages[pfn]
                if any(page):
                    f.seek(base + pfn * PAGE - start)
                    f.write(page[: min(PAGE, end - pfn * PAGE)])
        f.truncate(off)


#: DESIGN.md's mm/usage lines, in order (makedumpfile's report names, lower case): the tests'
#: own statement of the contract, kept apart from the module under test.
MM_USAGE_LINES = (
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
#: The classes decided from struct page alone: equal to makedumpfile's on filtered dumps too.
STRUCT_PAGE_CLASSES = MM_USAGE_LINES[3:9]
