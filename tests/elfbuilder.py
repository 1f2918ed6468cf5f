"""Build synthetic x86_64 ELF vmcores with crafted page tables, for tests.

``PhysImage`` is sparse physical memory (a dict of 4 KiB pages); ``PageTables`` writes x86_64
tables into it (4 or 5 levels, 4 KiB / 2 MiB / 1 GiB pages, raw entries for crafted faults);
``build_elf_core`` writes an ELF64 core of chosen physical ranges with notes and VMCOREINFO,
in the standard layout or QEMU 7.2's (section headers first, ``e_phoff`` = 192, ``e_ehsize`` = 8).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PAGE = 4096
START_KERNEL_map = 0xFFFFFFFF80000000
_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_PSE = 1 << 7
_PAGE_NX = 1 << 63


class PhysImage:
    """Sparse physical memory: only written pages exist (zero-filled when first touched)."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def page(self, pfn: int) -> bytearray:
        return self.pages.setdefault(pfn, bytearray(PAGE))

    def write(self, paddr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pfn, off = divmod(paddr + pos, PAGE)
            n = min(PAGE - off, len(data) - pos)
            self.page(pfn)[off : off + n] = data[pos : pos + n]
            pos += n

    def read(self, paddr: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            pfn, off = divmod(paddr + len(out), PAGE)
            n = min(PAGE - off, size - len(out))
            page = self.pages.get(pfn)
            out += page[off : off + n] if page is not None else bytes(n)
        return bytes(out)

    def range_bytes(self, start: int, end: int) -> bytes:
        return self.read(start, end - start)


class PageTables:
    """x86_64 page tables written into a :class:`PhysImage`, allocating table pages upwards."""

    def __init__(
        self, mem: PhysImage, *, levels: int = 4, table_base: int = 0x10_0000, sme_mask: int = 0
    ) -> None:
        self.mem = mem
        self.levels = levels
        self.sme_mask = sme_mask
        self._next = table_base
        self.root = self.alloc()

    def alloc(self) -> int:
        paddr = self._next
        self._next += PAGE
        self.mem.page(paddr // PAGE)
        return paddr

    def entry_addr(self, table: int, index: int) -> int:
        return table + 8 * index

    def get(self, table: int, index: int) -> int:
        return struct.unpack("<Q", self.mem.read(self.entry_addr(table, index), 8))[0]

    def put(self, table: int, index: int, value: int) -> None:
        self.mem.write(self.entry_addr(table, index), struct.pack("<Q", value))

    def _shifts(self) -> list[int]:
        return [48, 39, 30, 21, 12][5 - self.levels :]

    def table_for(self, vaddr: int, depth: int) -> int:
        """The table at ``depth`` (0 = root) on the way to ``vaddr``, allocating as needed."""
        table = self.root
        for shift in self._shifts()[:depth]:
            idx = (vaddr >> shift) & 511
            entry = self.get(table, idx)
            if not entry & _PAGE_PRESENT:
                new = self.alloc()
                self.put(table, idx, new | _PAGE_PRESENT | _PAGE_RW | self.sme_mask)
                table = new
            else:
                table = entry & 0x000F_FFFF_FFFF_F000 & ~self.sme_mask
        return table

    def map(self, vaddr: int, paddr: int, size: int = PAGE, *, extra: int = 0) -> None:
        """Map ``[vaddr, vaddr+size)`` to ``paddr`` with pages of ``size`` (4K, 2M or 1G)."""
        shift = {PAGE: 12, 1 << 21: 21, 1 << 30: 30}[size]
        depth = self._shifts().index(shift)
        table = self.table_for(vaddr, depth)
        flags = _PAGE_PRESENT | _PAGE_RW | extra | self.sme_mask
        if shift != 12:
            flags |= _PAGE_PSE
        self.put(table, (vaddr >> shift) & 511, paddr | flags)

    def map_range(self, vaddr: int, paddr: int, length: int, page: int = PAGE, **kw) -> None:
        for off in range(0, length, page):
            self.map(vaddr + off, paddr + off, page, **kw)


def vmcoreinfo_text(
    pt: PageTables,
    *,
    phys_base: int = 0,
    extra: dict[str, str] | None = None,
    root_symbol: str = "init_top_pgt",
) -> bytes:
    """A VMCOREINFO whose root-table symbol points at ``pt.root`` under ``phys_base``."""
    root_sym = pt.root + START_KERNEL_map - phys_base
    lines = {
        "OSRELEASE": "6.1.0-test",
        "PAGESIZE": "4096",
        f"SYMBOL({root_symbol})": f"{root_sym:x}",
        "NUMBER(phys_base)": str(phys_base),
        "NUMBER(pgtable_l5_enabled)": "1" if pt.levels == 5 else "0",
        "KERNELOFFSET": "0",
    }
    if pt.sme_mask:
        lines["NUMBER(sme_mask)"] = str(pt.sme_mask)
    lines.update(extra or {})
    return "".join(f"{k}={v}\n" for k, v in lines.items()).encode("utf-8", "surrogateescape")


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


@dataclass
class LoadSegment:
    paddr: int
    data: bytes
    memsz: int | None = None  # defaults to len(data); larger: the tail reads as zeros
    vaddr: int | None = None


@dataclass
class ElfCore:
    segments: list[LoadSegment] = field(default_factory=list)
    notes: list[bytes] = field(default_factory=list)
    machine: int = 62  # EM_X86_64
    qemu_layout: bool = False

    def build(self) -> bytes:
        notes = b"".join(self.notes)
        nph = 1 + len(self.segments)
        if self.qemu_layout:
            # QEMU 7.2: ELF header, 2 section headers at 64, program headers at 192.
            shoff, shnum, phoff, ehsize = 64, 2, 192, 8
        else:
            shoff, shnum, phoff, ehsize = 0, 0, 64, 64
        data_off = phoff + 56 * nph
        phdrs = bytearray()
        phdrs += struct.pack("<IIQQQQQQ", 4, 0, data_off, 0, 0, len(notes), len(notes), 0)
        off = data_off + len(notes)
        blobs = [notes]
        for seg in self.segments:
            memsz = len(seg.data) if seg.memsz is None else seg.memsz
            vaddr = seg.paddr if seg.vaddr is None else seg.vaddr
            phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, seg.paddr, len(seg.data), memsz, 0)
            blobs.append(seg.data)
            off += len(seg.data)
        ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
        ehdr = ident + struct.pack(
            "<HHIQQQIHHHHHH",
            4,
            self.machine,
            1,
            0,
            phoff,
            shoff,
            0,
            ehsize,
            56,
            nph,
            64,
            shnum,
            1 if shnum else 0,
        )
        out = bytearray(ehdr)
        if self.qemu_layout:
            out += bytes(64) + struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, 0, 0, 0, 0, 1, 0)
        assert len(out) == phoff
        out += phdrs
        for blob in blobs:
            out += blob
        return bytes(out)


def simple_core(mem: PhysImage, ranges: list[tuple[int, int]], vmcoreinfo: bytes, **kw) -> bytes:
    """An ELF core holding ``mem`` over ``ranges`` with a VMCOREINFO note."""
    core = ElfCore(**kw)
    core.notes.append(note(b"VMCOREINFO", 0, vmcoreinfo))
    for start, end in ranges:
        core.segments.append(LoadSegment(start, mem.range_bytes(start, end)))
    return core.build()


#: The direct map's base without KASLR (page_offset_base).
DIRECT_MAP = 0xFFFF888000000000


def kexec_core(mem: PhysImage, ram: list[tuple[int, int]], text: tuple[int, int],
               notes: list[bytes]) -> ElfCore:  # fmt: skip
    """An ELF core laid out as a crash kernel's ``/proc/vmcore`` (the kernel's
    ``crash_prepare_elf64_headers()``): first a PT_LOAD of the kernel text ``text`` =
    ``[start, end)`` with ``p_vaddr`` in the kernel image (``START_KERNEL_map + start``), then one
    per RAM range with ``p_vaddr`` in the direct map. The text's pages lie in a RAM range too:
    two PT_LOADs hold them. ``ram`` leaves out what the dump lacks (the first MiB, the crash
    kernel's reservation)."""
    core = ElfCore(notes=list(notes))
    start, end = text
    core.segments.append(
        LoadSegment(start, mem.range_bytes(start, end), vaddr=START_KERNEL_map + start)
    )
    for lo, hi in ram:
        core.segments.append(LoadSegment(lo, mem.range_bytes(lo, hi), vaddr=DIRECT_MAP + lo))
    return core
