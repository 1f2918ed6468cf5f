"""x86_64 translation over synthetic dumps with crafted page tables."""

from __future__ import annotations

import struct

import pytest

import vmcorefs
from tests.elfbuilder import PAGE, PageTables, PhysImage, simple_core, vmcoreinfo_text
from vmcorefs.errors import FaultError

GiB = 1 << 30
MiB = 1 << 20
KTEXT = 0xFFFFFFFF81000000
DIRECT = 0xFFFF888000000000
VMALLOC = 0xFFFFC90000000000


def pattern(paddr: int, size: int) -> bytes:
    """Distinct bytes for every 8-byte word: its own physical address."""
    return b"".join(struct.pack("<Q", a) for a in range(paddr, paddr + size, 8))


def make_dump(
    tmp_path,
    pt: PageTables,
    mem: PhysImage,
    ranges,
    *,
    phys_base=0,
    name="core",
    extra=None,
    root_symbol="init_top_pgt",
    qemu_layout=False,
):
    path = tmp_path / name
    vi = vmcoreinfo_text(pt, phys_base=phys_base, extra=extra, root_symbol=root_symbol)
    path.write_bytes(simple_core(mem, ranges, vi, qemu_layout=qemu_layout))
    return vmcorefs.open_dump(str(path))


@pytest.fixture
def four_level(tmp_path):
    """4 MiB of RAM at 0; 4K, 2M and 1G mappings; the tables at 1 MiB."""
    mem = PhysImage()
    pt = PageTables(mem, levels=4, table_base=0x10_0000)
    data_base = 0x20_0000  # 2 MiB: a 2 MiB-aligned data area
    mem.write(data_base, pattern(data_base, 2 * MiB))
    pt.map(KTEXT, data_base, 1 << 21)  # one 2 MiB page
    pt.map(VMALLOC, data_base + 3 * PAGE)  # 4K pages, out of physical order
    pt.map(VMALLOC + PAGE, data_base + 1 * PAGE)
    pt.map(VMALLOC + 2 * PAGE, data_base + 2 * PAGE)
    pt.map(DIRECT, 0, GiB)  # one 1 GiB page over all RAM
    dump = make_dump(tmp_path, pt, mem, [(0, 4 * MiB)])
    return dump, data_base


def test_2m_page(four_level):
    dump, base = four_level
    assert dump.kvirt.read(KTEXT + 0x1234, 64) == pattern(base + 0x1230, 72)[4:68]
    assert dump.kvirt.translate(KTEXT + 0x1FFFFF) == base + 0x1FFFFF


def test_1g_page_reads_whole_range_in_one_run(four_level):
    dump, base = four_level
    assert dump.kvirt.read(DIRECT + base, 2 * MiB) == pattern(base, 2 * MiB)


def test_4k_pages_follow_the_tables_not_the_addresses(four_level):
    dump, base = four_level
    got = dump.kvirt.read(VMALLOC, 3 * PAGE)
    assert got == pattern(base + 3 * PAGE, PAGE) + pattern(base + PAGE, 2 * PAGE)


def test_read_stops_at_unmapped_page_then_faults(four_level):
    dump, base = four_level
    got = dump.kvirt.read(VMALLOC + 2 * PAGE + 96, 2 * PAGE)
    assert got == pattern(base + 2 * PAGE + 96, PAGE - 96)
    assert dump.kvirt.read(VMALLOC + 3 * PAGE, 16) == b""
    with pytest.raises(FaultError):
        dump.kvirt.read_exact(VMALLOC + 2 * PAGE, PAGE + 1)


def test_direct_map_beyond_ram_is_absent(four_level):
    # The 1 GiB page maps [0, 1 GiB) but the dump holds only 4 MiB: the read stops there.
    dump, _ = four_level
    got = dump.kvirt.read(DIRECT + 4 * MiB - 8, 64)
    assert got == pattern(4 * MiB - 8, 8)


@pytest.mark.parametrize(
    "addr", [0x0000800000000000, 0xFFFF7FFFFFFFFFFF, 0x8000000000000000, 0x1234]
)
def test_non_canonical_or_unmapped_addresses_fault(four_level, addr):
    dump, _ = four_level
    assert dump.kvirt.read(addr, 8) == b""
    with pytest.raises(FaultError):
        dump.kvirt.translate(addr)


def test_five_levels(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem, levels=5)
    base = 0x40_0000
    mem.write(base, pattern(base, 4 * PAGE))
    high = 0xFF11000000000000  # uses PML5 index bits 48-56: valid only with 57-bit addresses
    pt.map(high, base)
    pt.map(high + PAGE, base + 2 * PAGE)
    pt.map(KTEXT, base + 3 * PAGE)
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)])
    assert dump.kvirt.translator.levels == 5
    assert dump.kvirt.read(high, 2 * PAGE) == pattern(base, PAGE) + pattern(base + 2 * PAGE, PAGE)
    assert dump.kvirt.read(KTEXT + 8, 8) == pattern(base + 3 * PAGE + 8, 8)
    # Canonical for 48 bits but not mapped; non-canonical for 57 bits:
    assert dump.kvirt.read(0x0100000000000000, 8) == b""


def test_entry_bits_outside_the_frame_are_ignored(tmp_path):
    """sme_mask, NX, protection keys, and PAT in large entries never reach the address."""
    sme = 1 << 47
    mem = PhysImage()
    pt = PageTables(mem, sme_mask=sme)
    base = 0x40_0000
    mem.write(base, pattern(base, 4 * MiB))
    pkey = 0xF << 59
    pat_large = 1 << 12  # _PAGE_PAT_LARGE in a 2 MiB entry
    pt.map(KTEXT, base, 1 << 21, extra=(1 << 63) | pkey | pat_large)
    pt.map(VMALLOC, base + 5 * PAGE, extra=(1 << 63) | pkey)
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)], extra={"NUMBER(sme_mask)": str(sme)})
    assert dump.kvirt.translate(KTEXT + 0x10) == base + 0x10
    assert dump.kvirt.read(VMALLOC, 16) == pattern(base + 5 * PAGE, 16)


def test_negative_phys_base_and_swapper_pg_dir_fallback(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem, table_base=0x30_0000)
    mem.write(0x50_0000, b"kernel text here")
    pt.map(KTEXT, 0x50_0000)
    dump = make_dump(
        tmp_path, pt, mem, [(0, 8 * MiB)], phys_base=-0xA800000, root_symbol="swapper_pg_dir"
    )
    assert dump.kvirt.translator.root == 0x30_0000
    assert dump.kvirt.read(KTEXT, 16) == b"kernel text here"


def test_non_present_entries_at_every_level_fault(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    mem.write(0x40_0000, b"x" * PAGE)
    pt.map(KTEXT, 0x40_0000)
    # Clear the present bit of the PTE, then of the PMD entry: both fault.
    pmd = pt.table_for(KTEXT, 2)
    pte_table = pt.table_for(KTEXT, 3)
    idx = (KTEXT >> 12) & 511
    pt.put(pte_table, idx, pt.get(pte_table, idx) & ~1)
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)], name="a")
    assert dump.kvirt.read(KTEXT, 8) == b""
    pt.put(pmd, (KTEXT >> 21) & 511, 0x40_0000 | 0x80)  # PS set but not present
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)], name="b")
    assert dump.kvirt.read(KTEXT, 8) == b""


def test_table_page_outside_the_dump_faults(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    pt.map(KTEXT, 0x40_0000)
    pmd = pt.table_for(KTEXT, 2)
    pt.put(pmd, (KTEXT >> 21) & 511, 0x7000_0000 | 0x3)  # a PTE table far beyond RAM
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)])
    with pytest.raises(FaultError, match="absent"):
        dump.kvirt.translate(KTEXT)


def test_table_pointing_to_itself_terminates(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    idx = (KTEXT >> 39) & 511
    pt.put(pt.root, idx, pt.root | 0x3)  # PGD entry -> the PGD itself, at every level
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)])
    # Walked as PGD -> PUD -> PMD -> PT, all the same page: a fixed-depth walk ends; the
    # result is whatever those entries say (here: the PT entry for KTEXT is the same slot).
    for addr in (KTEXT, KTEXT + PAGE, DIRECT):
        try:
            dump.kvirt.translate(addr)
        except FaultError:
            pass
    assert dump.kvirt.read(DIRECT, 8) == b""


def test_reads_cross_chunk_boundaries_physically_contiguous_or_not(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    base = 0x40_0000
    mem.write(base, pattern(base, 8 * PAGE))
    v = 0xFFFFC90000200000 - 2 * PAGE  # straddles a 2 MiB chunk edge
    for i in range(4):
        pt.map(v + i * PAGE, base + i * PAGE)
    pt.map(v + 4 * PAGE, base + 7 * PAGE)
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)])
    expected = pattern(base + 8, 4 * PAGE - 8) + pattern(base + 7 * PAGE, PAGE)
    assert dump.kvirt.read(v + 8, 5 * PAGE) == expected


def test_top_of_address_space_stops(four_level):
    dump, _ = four_level
    assert dump.kvirt.read(0xFFFFFFFFFFFFFFF8, 64) == b""


def test_translations_stay_exact_when_the_recent_chunks_wrap(tmp_path):
    """More chunks than the lock-free memo holds: it is emptied when full, never grows past its
    bound, and every address still translates through its own table."""
    from vmcorefs.memory.x86_64 import RECENT_CHUNKS

    mem = PhysImage()
    pt = PageTables(mem, levels=4, table_base=0x40_0000)
    count = RECENT_CHUNKS + 50
    frames = {}
    for k in range(count):  # one 4K page per 2 MiB chunk, frames in reverse order
        frame = 0x10_0000 + (count - 1 - k) * PAGE
        mem.write(frame, pattern(frame, PAGE))
        pt.map(VMALLOC + k * 2 * MiB, frame)
        frames[k] = frame
    dump = make_dump(tmp_path, pt, mem, [(0, 8 * MiB)])
    translator = dump.kvirt.translator
    for _ in range(2):  # the second pass meets a memo that was emptied on the way
        for k in range(count):
            addr = VMALLOC + k * 2 * MiB + 8 * (k % 512)
            assert dump.kvirt.translate(addr) == frames[k] + 8 * (k % 512)
            assert dump.kvirt.read(addr, 8) == pattern(frames[k] + 8 * (k % 512), 8)
            assert len(translator._recent) <= RECENT_CHUNKS


def test_kernel_addresses_are_canonical_for_the_paging_depth():
    """is_kvaddr: the canonical upper half of 48-bit (4-level) or 57-bit (5-level) space."""
    from vmcorefs.memory.x86_64 import is_kvaddr

    for addr, four, five in [
        (0xFFFF_8000_0000_0000, True, True),  # the lowest 4-level kernel address
        (0xFFFF_FFFF_FFFF_FFFF, True, True),
        (0xFFFF_7FFF_FFFF_FFFF, False, True),  # canonical only with 57 bits
        (0xFF11_0000_0000_0000, False, True),  # a 5-level direct map
        (0xFF00_0000_0000_0000, False, True),  # the lowest 5-level kernel address
        (0xFEFF_FFFF_FFFF_FFFF, False, False),
        (0x7FFF_FFFF_FFFF_FFFF, False, False),  # the lower half: user space
        (0, False, False),
        (1 << 64, False, False),  # not a 64-bit value at all
    ]:
        assert is_kvaddr(addr, 48) is four, hex(addr)
        assert is_kvaddr(addr, 57) is five, hex(addr)


def test_present_runs_are_what_reads_find_page_by_page(four_level):
    """``present_runs`` (what a scan reads instead of trying each page): mapped and held,
    merged across 4K pages out of physical order; an unmapped page, an unmapped 2 MiB chunk
    and a mapping beyond the dump's RAM are gaps. Checked against a read of every page."""
    dump, _ = four_level
    kv = dump.kvirt
    cases = [
        (VMALLOC - 2 * MiB, VMALLOC + 2 * MiB),
        (KTEXT - 2 * MiB, KTEXT + 4 * MiB),
        (DIRECT + 4 * MiB - 3 * PAGE, DIRECT + 8 * MiB),
    ]
    for start, end in cases:
        runs = list(kv.present_runs(start, end))
        held = [a for a in range(start, end, PAGE) if kv.read(a, 1)]
        from_runs = [a for lo, hi in runs for a in range(lo, hi, PAGE)]
        assert from_runs == held and held
    assert list(kv.present_runs(VMALLOC + 100, VMALLOC + 5 * PAGE)) == [
        (VMALLOC + 100, VMALLOC + 3 * PAGE)
    ]
    assert list(kv.present_runs(KTEXT - 2 * MiB, KTEXT + 4 * MiB)) == [(KTEXT, KTEXT + 2 * MiB)]


def test_runs_of_a_page_table_match_page_by_page_translation(tmp_path):
    """A 2 MiB chunk of 4K pages in runs: contiguous, out of order, absent, a run that ends at
    the table's end. Every read from every page equals the page-by-page answer: the bytes of
    each page in order, stopping at the first unmapped one."""
    import random

    rng = random.Random(17)
    mem = PhysImage()
    pt = PageTables(mem, levels=4, table_base=0x40_0000)
    base = 0x80_0000
    mem.write(base, pattern(base, 512 * PAGE))
    chunk = VMALLOC + 4 * MiB
    frames: dict[int, int] = {}
    frame = 0
    for i in range(512):
        roll = rng.random()
        if roll < 0.1:
            continue  # absent
        frame = rng.randrange(512) if roll < 0.3 else (frame + 1) % 512
        frames[i] = base + frame * PAGE
        pt.map(chunk + i * PAGE, frames[i])
    dump = make_dump(tmp_path, pt, mem, [(0, 16 * MiB)])
    check_reads_from_every_page(dump.kvirt, chunk, frames, rng)


def check_reads_from_every_page(kv, chunk: int, frames: dict[int, int], rng) -> None:
    """Reads of 1, 3, 40 or 512 pages from each page of the 2 MiB ``chunk`` (entry ``i``
    maps ``frames[i]``, absent where missing) equal the pages read one by one, stopping at
    the first absent one."""

    def expected(first: int, count: int) -> bytes:
        out = b""
        for i in range(first, min(512, first + count)):
            if i not in frames:
                break
            out += pattern(frames[i], PAGE)
        return out

    for first in range(512):
        count = rng.choice([1, 3, 40, 512])
        assert kv.read(chunk + first * PAGE, count * PAGE) == expected(first, count)


def test_runs_ignore_flag_bits_and_what_absent_entries_hold(tmp_path):
    """Entries whose bits outside the frame differ along a run (accessed, dirty, NX, keys, the
    encryption bit) still form one run; a not-present entry is absent whatever it holds (a
    swap entry, or bits that would continue the run before it). Reads, ``present_runs`` and
    ``next_data``/``next_hole`` from every page agree with the entries read one by one."""
    import random

    rng = random.Random(29)
    sme = 1 << 47
    mem = PhysImage()
    pt = PageTables(mem, levels=4, table_base=0x40_0000, sme_mask=sme)
    base = 0x80_0000
    mem.write(base, pattern(base, 512 * PAGE))
    chunk = VMALLOC + 8 * MiB
    pt.map(chunk, base)  # allocates the page table; every entry is rewritten below
    table = pt.table_for(chunk, 3)
    frames: dict[int, int] = {}
    frame = 0
    for i in range(512):
        roll = rng.random()
        if roll < 0.2:  # not present: garbage, often the very entry that would continue
            follows = base + ((frame + 1) % 512) * PAGE
            pt.put(table, i, (follows | 0x62) if roll < 0.1 else rng.getrandbits(64) & ~1)
            continue
        frame = rng.randrange(512) if roll < 0.3 else (frame + 1) % 512
        frames[i] = base + frame * PAGE
        noise = rng.getrandbits(12) | (rng.getrandbits(5) << 59) | rng.choice([0, sme])
        pt.put(table, i, frames[i] | noise | 1)
    dump = make_dump(tmp_path, pt, mem, [(0, 16 * MiB)], extra={"NUMBER(sme_mask)": str(sme)})
    kv = dump.kvirt
    check_reads_from_every_page(kv, chunk, frames, rng)
    held = sorted(frames)
    runs = []
    for i in held:
        if runs and runs[-1][1] == chunk + i * PAGE:
            runs[-1][1] += PAGE
        else:
            runs.append([chunk + i * PAGE, chunk + (i + 1) * PAGE])
    assert [list(r) for r in kv.present_runs(chunk, chunk + 2 * MiB)] == runs
    for i in range(512):
        at = chunk + i * PAGE + 8
        later = [j for j in held if j >= i]
        want = None if not later else max(at, chunk + later[0] * PAGE)
        assert kv.next_data(at, chunk + 2 * MiB) == want
        hole = next((j for j in range(i, 512) if j not in frames), 512)
        assert kv.next_hole(at, chunk + 2 * MiB) == max(at, chunk + hole * PAGE)
