"""x86_64 kernel virtual memory, translated through the dump's own page tables.

Everything comes from VMCOREINFO and the dump: the root table is ``SYMBOL(init_top_pgt)``
(older kernels: ``swapper_pg_dir``) − ``__START_KERNEL_map`` + ``NUMBER(phys_base)``; five levels
when ``NUMBER(pgtable_l5_enabled)`` is 1. No region base (direct map, vmalloc, vmemmap,
modules) is assumed: every address goes through the tables.

Translations are cached per 2 MiB chunk of virtual space (``PMD_SIZE``): a chunk is either inside
one large page (2 MiB or 1 GiB: one linear mapping), or mapped by one page-table page of 512
entries, or not mapped at all. So a 1 MiB read of the direct map or the kernel image costs one
cache lookup, and the kernel image's fast path is the same mechanism, verified entry by entry.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress

from ..dumpfile.source import merge_runs
from ..errors import CorruptError, FaultError, Unavailable
from ..vmcoreinfo import VmcoreInfo
from .cache import LockedLRU
from .physical import PhysicalMemory
from .space import AddressSpace

# arch/x86/include/asm/page_64_types.h, pgtable_types.h
#: __START_KERNEL_map (the leading underscores would be name-mangled inside classes)
START_KERNEL_map = 0xFFFFFFFF80000000
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PUD_SHIFT = 30
PTRS_PER_TABLE = 512
VA_BITS_4LEVEL = 48
VA_BITS_5LEVEL = 57
_PAGE_PRESENT = 1 << 0
_PAGE_PSE = 1 << 7  # PS: a large page at PUD (1 GiB) and PMD (2 MiB) level; PAT at PTE level
#: Physical address bits 12–51 of an entry (NX bit 63 and protection keys 59–62 are ignored).
PTE_PFN_MASK = 0x000F_FFFF_FFFF_F000
ADDRESS_SPACE_END = 1 << 64
#: An address's 64 bits (sums of addresses wrap as the CPU's do).
MASK64 = ADDRESS_SPACE_END - 1
#: __PHYSICAL_MASK_SHIFT (page_64_types.h): x86_64 physical addresses have at most 52 bits.
MAX_PHYS_ADDR = 1 << 52

#: Chunks also kept in a plain dict in front of the LRU: a hit there costs one dict lookup (no
#: lock, no LRU bookkeeping, which random 4 KiB reads of kvirt felt: DEVELOPERS.md). Emptied
#: when full; it holds objects the LRU holds or held.
RECENT_CHUNKS = 256

_ENTRY = struct.Struct("<Q")
_TABLE = struct.Struct("<512Q")


def va_bits(vmcoreinfo: VmcoreInfo) -> int:
    """Bits of virtual address the kernel's paging translates: 57 with 5-level paging
    (``NUMBER(pgtable_l5_enabled)`` is 1), else 48."""
    return VA_BITS_5LEVEL if vmcoreinfo.number("pgtable_l5_enabled", 0, 1) == 1 else VA_BITS_4LEVEL


def canonical(vaddr: int, bits: int) -> bool:
    """Whether bits 63..``bits``-1 of ``vaddr`` are all equal (x86_64's canonical form)."""
    top = vaddr >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def is_kvaddr(vaddr: int, bits: int) -> bool:
    """A canonical upper-half (kernel) address for ``bits`` of virtual address: what may be a
    pointer into the kernel (makedumpfile's ``is_kvaddr`` compares with ``PAGE_OFFSET``,
    which KASLR randomises and VMCOREINFO does not give: the upper half needs no guess)."""
    return vaddr >> (bits - 1) == (1 << (65 - bits)) - 1


@dataclass(frozen=True)
class _Linear:
    """A chunk inside one large page: ``paddr = pbase + (vaddr - vbase)`` up to ``vend``."""

    vbase: int
    vend: int
    pbase: int


#: Per table page, as one little-endian integer of 512 64-bit words: each word 1 (its bit 0,
#: _PAGE_PRESENT), and each word PAGE_SIZE. With them a table's 512 entries are masked and
#: compared at once (big-integer operations) rather than in a loop of 512 Python steps: a cold
#: chunk is one of those per 4 KiB-mapped 2 MiB, and the first ``lseek`` or read there pays it.
_EVERY_ENTRY = int.from_bytes(_ENTRY.pack(1) * PTRS_PER_TABLE, "little")
_PAGE_EVERY_ENTRY = int.from_bytes(_ENTRY.pack(PAGE_SIZE) * PTRS_PER_TABLE, "little")
#: bytes.translate tables: a byte to its bit 0; a byte to 1 when it is not 0.
_LOW_BIT = bytes(b & 1 for b in range(256))
_NONZERO = bytes(min(b, 1) for b in range(256))


def table_entry(raw: bytes, index: int) -> int:
    """Entry ``index`` of the table page ``raw``."""
    return int(_ENTRY.unpack_from(raw, index * 8)[0])


def present_indices(raw: bytes) -> tuple[int, ...]:
    """The indices of the present entries of the table page ``raw``, in order (byte 0 of a
    little-endian entry holds _PAGE_PRESENT)."""
    return tuple(compress(range(PTRS_PER_TABLE), raw[::8].translate(_LOW_BIT)))


@dataclass(frozen=True)
class _Table:
    """A chunk mapped by a last-level page table: its 512 entries, already masked (0 = absent,
    else the frame's address with bit 0 set), and ``breaks``: a byte per entry, 1 where the
    run of physically contiguous present pages through that entry ends (the next entry does
    not map the next frame), else 0. :meth:`run_end` then finds where a run ends in one
    ``bytes.index``: a 1 MiB read of 4 KiB-mapped memory translates in one step, not one per
    page."""

    frames: tuple[int, ...]
    breaks: bytes

    @classmethod
    def of(cls, raw: bytes, entry_mask: int) -> _Table:
        """The chunk mapped by the table page ``raw``; ``entry_mask``: :data:`PTE_PFN_MASK`
        less the encryption bit."""
        entries = int.from_bytes(raw, "little")
        present = entries & _EVERY_ENTRY
        # (present << 64) - present: all 64 bits of each present entry's word (the words
        # hold 0 or 1, so no borrow crosses a word); bit 0 kept by the mask as the marker.
        every_mask = (entry_mask | _PAGE_PRESENT) * _EVERY_ENTRY
        frames = entries & every_mask & ((present << 64) - present)
        # Word i of ``differ`` is 0 exactly when entry i + 1 maps the frame after entry i's,
        # both present: a present frame + PAGE_SIZE is odd and below 2**53 (no carry out of
        # its word); an absent one gives PAGE_SIZE, which is even and never equals a masked
        # entry (0, or odd). Entry 511 compares with the 0 shifted in: always a break.
        differ = (frames >> 64) ^ (frames + _PAGE_EVERY_ENTRY)
        # Fold each word's bits into its low byte (each step only reads bits of the same word
        # into the ones kept), then keep the low bytes: 0 = continues, else a break.
        differ |= differ >> 32
        differ |= differ >> 16
        differ |= differ >> 8
        breaks = differ.to_bytes(PAGE_SIZE, "little")[::8].translate(_NONZERO)
        return cls(_TABLE.unpack(frames.to_bytes(PAGE_SIZE, "little")), breaks)

    def run_end(self, index: int) -> int:
        """The index just past the run of contiguous present pages through ``index``."""
        return self.breaks.index(1, index) + 1


@dataclass(frozen=True)
class _Unmapped:
    """A chunk that no entry maps; ``reason`` says at which level the walk stopped. ``corrupt``:
    a page-table page on the way is in the dump but damaged (not merely absent)."""

    reason: str
    corrupt: bool = False

    def fault(self, vaddr: int) -> FaultError:
        return (CorruptError if self.corrupt else FaultError)("kvirt", vaddr, self.reason)


class X86_64Translator:
    """Walks 4- and 5-level page tables; caches table pages and per-chunk translations."""

    def __init__(
        self, phys: PhysicalMemory, vmcoreinfo: VmcoreInfo, *, cache_size_mib: int = 64
    ) -> None:
        self.phys = phys
        root_sym = vmcoreinfo.symbol("init_top_pgt")
        if root_sym is None:
            root_sym = vmcoreinfo.symbol("swapper_pg_dir")
        if root_sym is None:
            raise Unavailable(
                "VMCOREINFO has neither SYMBOL(init_top_pgt) nor SYMBOL(swapper_pg_dir)"
            )
        # phys_base: where the kernel image was loaded minus where it was linked to load; both
        # lie in physical memory (below 2**52), so it does too, either sign.
        self.phys_base = vmcoreinfo.number("phys_base", -MAX_PHYS_ADDR, MAX_PHYS_ADDR) or 0
        self.root = root_sym - START_KERNEL_map + self.phys_base
        if not 0 <= self.root < MAX_PHYS_ADDR:
            # Unavailable, as for a key that is missing: the dump names its file (kernel/dump.py).
            raise Unavailable(
                f"VMCOREINFO puts the root page table at physical address {self.root:#x} "
                "(SYMBOL(init_top_pgt) - __START_KERNEL_map + NUMBER(phys_base))"
            )
        self.va_bits = va_bits(vmcoreinfo)
        self.levels = 5 if self.va_bits == VA_BITS_5LEVEL else 4
        # sme_me_mask is 1 << the C-bit position (arch/x86/mm/mem_encrypt_identity.c), or 0.
        sme_mask = vmcoreinfo.single_bit("sme_mask", zero=True) or 0
        self.entry_mask = PTE_PFN_MASK & ~sme_mask
        # Budget: a quarter of the cache for table pages, the rest for chunk translations
        # (a table page is 4 KiB of bytes; a _Table chunk holds 512 ints: about 20 KiB).
        budget = max(1, cache_size_mib) << 20
        self._tables: LockedLRU[int, bytes | None] = LockedLRU(budget // 4 // 8192)
        self._chunks: LockedLRU[int, _Linear | _Table | _Unmapped] = LockedLRU(
            max(64, (budget * 3 // 4) // 20480 - RECENT_CHUNKS)
        )
        self._recent: dict[int, _Linear | _Table | _Unmapped] = {}
        self._present: LockedLRU[int, tuple[int, ...]] = LockedLRU(budget // 4 // 8192)

    # -- walking ---------------------------------------------------------------------------
    def canonical(self, vaddr: int) -> bool:
        return canonical(vaddr, self.va_bits)

    def _table(self, paddr: int) -> bytes | None:
        """The table page at ``paddr`` (512 raw entries), or None when it is absent."""

        def load() -> bytes | None:
            data = self.phys.read(paddr, PAGE_SIZE)
            return data if len(data) == PAGE_SIZE else None

        return self._tables.get_or_compute(paddr, load)

    def _walk_chunk(self, vaddr: int) -> _Linear | _Table | _Unmapped:
        """Translate the 2 MiB chunk holding ``vaddr`` (walk from the root; fixed depth)."""
        if not self.canonical(vaddr):
            return _Unmapped("non-canonical address")
        table = self.root
        shift = 39 + 9 * (self.levels - 4)  # PGD index shift: 48 (5-level) or 39 (4-level)
        level = self.levels
        names = {5: "PGD", 4: "P4D" if self.levels == 5 else "PGD", 3: "PUD", 2: "PMD"}
        while level >= 2:
            entries = self._table(table)
            name = names[level]
            if entries is None:
                return self._table_fault(f"{name} table page", table)
            entry = table_entry(entries, (vaddr >> shift) & (PTRS_PER_TABLE - 1))
            if not entry & _PAGE_PRESENT:
                return _Unmapped(f"{name} entry not present")
            if entry & _PAGE_PSE:
                if level in (3, 2):  # 1 GiB at PUD, 2 MiB at PMD
                    size = 1 << shift
                    vbase = vaddr & ~(size - 1)
                    pbase = entry & self.entry_mask & ~(size - 1)
                    return _Linear(vbase, vbase + size, pbase)
                return _Unmapped(f"{name} entry has the reserved PS bit")
            table = entry & self.entry_mask
            shift -= 9
            level -= 1
        # ``table`` is now the last-level page table (PTEs) of this 2 MiB chunk.
        entries = self._table(table)
        if entries is None:
            return self._table_fault("page table page", table)
        return _Table.of(entries, self.entry_mask)

    def _table_fault(self, what: str, paddr: int) -> _Unmapped:
        """A table page that did not read: absent from the dump, or corrupt (then say why)."""
        fault = self.phys.fault(paddr)
        if isinstance(fault, CorruptError):
            return _Unmapped(f"{what} at {paddr:#x}: {fault.reason}", corrupt=True)
        return _Unmapped(f"{what} at {paddr:#x} is absent from the dump ({fault.reason})")

    def chunk(self, vaddr: int) -> _Linear | _Table | _Unmapped:
        """The cached translation of the 2 MiB chunk holding ``vaddr``.

        The key is the whole address above bit 21, so a non-canonical address never shares an
        entry with a canonical one.
        """
        key = vaddr >> PMD_SHIFT
        c = self._recent.get(key)  # atomic under the GIL: no lock needed
        if c is not None:
            return c
        c = self._chunks.get(key)
        if c is None:
            c = self._walk_chunk(vaddr)
            self._chunks.put(key, c)
        recent = self._recent
        if len(recent) >= RECENT_CHUNKS:
            recent.clear()
        recent[key] = c
        return c

    # -- translating -----------------------------------------------------------------------
    def translate_run(self, vaddr: int, limit: int) -> tuple[int, int]:
        """``(paddr, n)``: ``vaddr`` maps to ``paddr`` and the next ``n`` bytes (``n ≤ limit``,
        ``n ≥ 1``) are physically contiguous. Raises FaultError where ``vaddr`` is unmapped."""
        c = self.chunk(vaddr)
        if isinstance(c, _Linear):
            return c.pbase + (vaddr - c.vbase), min(limit, c.vend - vaddr)
        if isinstance(c, _Unmapped):
            raise c.fault(vaddr)
        i = (vaddr >> PAGE_SHIFT) & (PTRS_PER_TABLE - 1)
        frame = c.frames[i]
        if not frame:
            raise FaultError("kvirt", vaddr, "PTE not present")
        offset = vaddr & (PAGE_SIZE - 1)
        # The pages from i to the end of its run are physically contiguous.
        n = ((c.run_end(i) - i) << PAGE_SHIFT) - offset
        return (frame & ~1) + offset, min(n, limit)

    def translate(self, vaddr: int) -> int:
        """The physical address of ``vaddr``, or FaultError."""
        return self.translate_run(vaddr, 1)[0]

    # -- what is mapped ----------------------------------------------------------------------
    def mapped_pieces(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """``(vstart, vend, pstart)``: the mapped parts of ``[start, end)``, in address order,
        each physically contiguous, from the page tables alone. An entry that is not present
        is skipped whatever it spans (512 GiB at the top level), and so is the non-canonical
        gap: a search across the whole address space visits only the tables that exist. Lazy."""
        half = 1 << (self.va_bits - 1)
        for lo, hi in ((0, half), (ADDRESS_SPACE_END - half, ADDRESS_SPACE_END)):
            lo, hi = max(lo, start), min(hi, end)
            if lo < hi:
                yield from self._table_pieces(self.root, self.levels, lo, hi)

    def _table_pieces(
        self, table: int, level: int, pos: int, end: int
    ) -> Iterator[tuple[int, int, int]]:
        """The pieces of ``[pos, end)`` under the table at ``table`` of ``level`` (5: PGD of
        5-level paging ... 2: PMD); recursion as deep as the tables (at most 4)."""
        entries = self._table(table)
        if entries is None:  # an absent or unreadable table maps nothing readable
            return
        present = self._present_entries(table, entries)
        shift = PAGE_SHIFT + 9 * (level - 1)
        size = 1 << shift
        span_end = (pos | ((size << 9) - 1)) + 1  # the end of what this table maps
        k = bisect.bisect_left(present, (pos >> shift) & (PTRS_PER_TABLE - 1))
        while pos < end and k < len(present):  # bounded: one pass a present entry
            index = present[k]
            k += 1
            pos = max(pos, span_end - ((PTRS_PER_TABLE - index) << shift))
            if pos >= end:
                return
            entry = table_entry(entries, index)
            stop = min(end, (pos | (size - 1)) + 1)
            if entry & _PAGE_PSE:
                if level in (3, 2):  # 1 GiB at PUD, 2 MiB at PMD (elsewhere PS is reserved)
                    yield pos, stop, (entry & self.entry_mask & ~(size - 1)) + (pos & (size - 1))
            elif level == 2:
                yield from self._chunk_pieces(pos, stop)
            else:
                yield from self._table_pieces(entry & self.entry_mask, level - 1, pos, stop)

    def _present_entries(self, table: int, entries: bytes) -> tuple[int, ...]:
        """The indices of the present entries of the table page at ``table``, in order, kept
        beside the entries: a search skips a run of absent entries in one step."""
        found = self._present.get(table)
        if found is None:
            found = present_indices(entries)
            self._present.put(table, found)
        return found

    def _chunk_pieces(self, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
        """The pieces of ``[pos, end)`` inside one 2 MiB chunk, from its cached translation
        (the same one reads use): a run of contiguous frames is one piece."""
        c = self.chunk(pos)
        if isinstance(c, _Linear):
            yield pos, end, c.pbase + (pos - c.vbase)
            return
        if isinstance(c, _Unmapped):
            return
        frames = c.frames
        base = pos & ~(PMD_SIZE - 1)
        i = (pos >> PAGE_SHIFT) & (PTRS_PER_TABLE - 1)
        while pos < end:  # bounded: i grows every pass
            if frames[i]:
                run_end = c.run_end(i)
                stop = min(end, base + (run_end << PAGE_SHIFT))
                yield pos, stop, (frames[i] & ~1) + (pos & (PAGE_SIZE - 1))
                i = run_end
                pos = stop
            else:
                i += 1
                pos = base + (i << PAGE_SHIFT)

    def chunk_mapped(self, vaddr: int) -> bool:
        """Whether an entry above the last level maps the 2 MiB chunk holding ``vaddr`` (its
        pages may still be absent one by one): a scan skips an unmapped chunk in one step."""
        return not isinstance(self.chunk(vaddr), _Unmapped)


class KernelVirtualMemory(AddressSpace):
    """The kernel's virtual address space (addresses as the kernel sees them)."""

    name = "kvirt"

    def __init__(
        self, phys: PhysicalMemory, vmcoreinfo: VmcoreInfo, *, cache_size_mib: int = 64
    ) -> None:
        self.phys = phys
        self.translator = X86_64Translator(phys, vmcoreinfo, cache_size_mib=cache_size_mib)

    def translate(self, vaddr: int) -> int:
        return self.translator.translate(vaddr)

    def fault(self, addr: int) -> FaultError:
        """Why kernel address ``addr`` cannot be read: not mapped (the walk says where it
        stopped), or mapped onto physical memory the dump lacks or holds damaged."""
        if not 0 <= addr < ADDRESS_SPACE_END:
            return FaultError(self.name, addr & (ADDRESS_SPACE_END - 1), "not an address")
        try:
            paddr = self.translator.translate(addr)
        except FaultError as exc:
            return exc
        return self.phys.fault(paddr).at(self.name, addr)

    def chunk_mapped(self, vaddr: int) -> bool:
        """See :meth:`X86_64Translator.chunk_mapped`."""
        return self.translator.chunk_mapped(vaddr)

    def present_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs of ``[start, end)`` whose bytes the dump holds (mapped, and held in
        ``phys``), in order, touching runs merged: a scan reads only those. Lazy; the page
        tables and the dump's metadata only (see :meth:`X86_64Translator.mapped_pieces`)."""
        lo, hi = max(0, start), min(end, ADDRESS_SPACE_END)
        return merge_runs(self._present_pieces(lo, hi), lo, hi)

    def _present_pieces(self, pos: int, end: int) -> Iterator[tuple[int, int]]:
        for vstart, vend, pstart in self.translator.mapped_pieces(pos, end):
            for a, b in self.phys.present_runs(pstart, pstart + (vend - vstart)):
                yield vstart + (a - pstart), vstart + (b - pstart)

    def next_data(self, addr: int, end: int) -> int | None:
        """The first held byte of ``[addr, end)``: mapped pieces in order, each asked of
        ``phys`` (whose containers answer from their index)."""
        for vstart, vend, pstart in self.translator.mapped_pieces(max(0, addr), end):
            found = self.phys.next_data(pstart, pstart + (vend - vstart))
            if found is not None:
                return vstart + (found - pstart)
        return None

    def next_hole(self, addr: int, end: int) -> int:
        """The first byte of ``[addr, end)`` that is unmapped or not held, else ``end``."""
        pos = addr = max(0, addr)
        for vstart, vend, pstart in self.translator.mapped_pieces(addr, end):
            if vstart > pos:  # unmapped between
                return pos
            hole = vstart + (self.phys.next_hole(pstart, pstart + (vend - vstart)) - pstart)
            if hole < vend:
                return hole
            pos = vend
        return min(pos, end)

    def _runs(self, addr: int, end: int) -> Iterator[tuple[int, int]]:
        """``(paddr, n)``: the mapped prefix of ``[addr, end)`` as physically contiguous runs
        (consecutive translations merged); ends at the first unmapped address."""
        translate_run = self.translator.translate_run
        pos = addr
        while pos < end:
            try:
                paddr, n = translate_run(pos, end - pos)
            except FaultError:
                return
            while pos + n < end:  # merge runs that continue physically (chunk boundaries)
                try:
                    nxt, m = translate_run(pos + n, end - pos - n)
                except FaultError:
                    break
                if nxt != paddr + n:
                    break
                n += m
            yield paddr, n
            pos += n

    def readinto(self, addr: int, buffer: memoryview) -> int:
        size = len(buffer)
        end = min(addr + size, ADDRESS_SPACE_END)
        if addr < 0 or addr >= end:
            return 0
        try:
            paddr, n = self.translator.translate_run(addr, end - addr)
        except FaultError:
            return 0
        if n == end - addr:  # the common case: one physically contiguous run
            return self.phys.readinto(paddr, buffer if n == size else buffer[:n])
        got = self.phys.readinto(paddr, buffer[:n])
        if got < n:  # stopped inside the first run (absent memory): no more translating
            return got
        for paddr, n in self._runs(addr + got, end):
            done = self.phys.readinto(paddr, buffer[got : got + n])
            got += done
            if done < n:
                break
        return got
