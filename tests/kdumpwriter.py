"""A writer of synthetic kdump-compressed dumps for the tests (independent of the reader).

It lays files out as makedumpfile does (``makedumpfile.c``: ``write_kdump_header``,
``write_kdump_bitmap``, ``write_kdump_pages``): header block, sub-header with the ELF notes and
VMCOREINFO, the two bitmaps, one ``page_desc`` per dumped frame, then the page data, each page
compressed on its own and stored raw when that is not smaller, the zero pages sharing one stored
zero page. Any header version (0..6 and later), any codec, excluded, zero and lost pages, the
incomplete flag, split parts and flattened streams; sparse output for huge memory sizes.

Also here: x86_64 page tables and a VMCOREINFO text, so that a synthetic dump has a kernel
virtual address space the translator can walk.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PAGE = 4096
KDUMP_SIGNATURE = b"KDUMP   "
FLAGS = {"none": 0, "zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20}
INCOMPLETE = 0x8
START_KERNEL_MAP = 0xFFFFFFFF80000000


def compress(codec: str, data: bytes) -> bytes:
    """``data`` compressed the way makedumpfile stores one page."""
    if codec == "zlib":
        return zlib.compress(data, 1)
    if codec == "lzo":
        import lzo1x

        return lzo1x.compress(data)  # bare LZO1X, no header (as lzo1x_1_compress writes it)
    if codec == "snappy":
        import cramjam

        return bytes(cramjam.snappy.compress_raw(data))  # raw snappy (length preamble, no framing)
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(data)
    raise ValueError(codec)


@dataclass
class KdumpSpec:
    """What a synthetic dump holds. Frames are page frame numbers (pfn)."""

    max_mapnr: int
    #: Contents of the dumped frames (each exactly ``page_size`` bytes).
    pages: Mapping[int, bytes] = field(default_factory=dict)
    #: RAM as pfn ranges ``[start, end)`` (1st bitmap); None: all of ``[0, max_mapnr)``.
    ram: Iterable[tuple[int, int]] | None = None
    page_size: int = PAGE
    compression: str = "zlib"
    header_version: int = 6
    signature: bytes = KDUMP_SIGNATURE
    dump_level: int = 31
    #: Zero pages share one stored zero page (makedumpfile with dump level bit 1).
    share_zero_page: bool = True
    #: Dumped frames whose descriptor was never written (offset 0): an incomplete dump.
    lost: Iterable[int] = ()
    incomplete: bool = False
    vmcoreinfo: bytes | None = (
        b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82000000\n"
        b"NUMBER(phys_base)=0\n"
    )
    #: Further ELF notes (name, type, desc), written before VMCOREINFO.
    notes: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    phys_base: int = 0
    utsname: tuple[str, ...] = ("Linux", "test", "6.1.0-test", "#1 SMP", "x86_64", "(none)")
    timestamp: tuple[int, int] = (1700000000, 123456)
    current_cpu: int = 0
    nr_cpus: int = 1
    eraseinfo: bytes = b""
    #: One bitmap for both RAM and dumped frames (an old diskdump of all memory).
    single_bitmap: bool = False
    #: Raw overrides: pfn -> (flags, stored bytes) written instead of the compressed page.
    stored: Mapping[int, tuple[int, bytes]] = field(default_factory=dict)
    #: Raw overrides of whole descriptors: pfn -> (offset, size, flags).
    descs: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)
    status_extra: int = 0


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name_z), len(desc), ntype) + pad(name_z) + pad(desc)


def _set_bits(bm: bytearray, base: int, ranges: Iterable[tuple[int, int]]) -> None:
    """Set bits ``[start, end)`` of each range in ``bm``, whose byte 0 is bitmap byte ``base``."""
    for start, end in ranges:
        start, end = start - base * 8, end - base * 8
        pos = start
        while pos < end and pos % 8:
            bm[pos // 8] |= 1 << (pos % 8)
            pos += 1
        full_end = end - end % 8
        if pos < full_end:
            bm[pos // 8 : full_end // 8] = b"\xff" * ((full_end - pos) // 8)
            pos = full_end
        while pos < end:
            bm[pos // 8] |= 1 << (pos % 8)
            pos += 1


def _bitmap_writes(
    offset: int, nbytes: int, ranges: Iterable[tuple[int, int]], bs: int
) -> list[tuple[int, bytes]]:
    """The non-zero blocks of a bitmap of ``nbytes`` at ``offset`` with the bits of ``ranges``
    set, built block span by block span: a bitmap of 2**40 frames is never allocated whole."""
    spans: list[list[int]] = []  # merged [first block, end block) that some range touches
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        end_byte = -(-end // 8)
        first, last = start // 8 // bs, -(-end_byte // bs)  # blocks [first, last)
        if spans and first <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    writes: list[tuple[int, bytes]] = []
    ranges = sorted(ranges)
    for first, last in spans:
        base = first * bs
        length = min(last * bs, nbytes) - base
        bm = bytearray(length)
        inside = [(max(s, base * 8), min(e, (base + length) * 8)) for s, e in ranges]
        _set_bits(bm, base, [(s, e) for s, e in inside if s < e])
        writes.extend(_nonzero_blocks(offset + base, bm, bs))
    return writes


def kdump_chunks(
    spec: KdumpSpec, *, split: tuple[int, int] | None = None
) -> tuple[list[tuple[int, bytes]], int]:
    """The writes ``(offset, bytes)`` that make the file, and its size.

    ``split``: write one part of a split dump holding frames ``[start, end)``.
    """
    bs = spec.page_size
    ver = spec.header_version
    writes: list[tuple[int, bytes]] = []
    lo, hi = split if split else (0, spec.max_mapnr)
    pages = {pfn: spec.pages[pfn] for pfn in sorted(spec.pages) if lo <= pfn < hi}
    lost = {p for p in spec.lost if lo <= p < hi}
    dumped = sorted(set(pages) | lost | {p for p in spec.descs if lo <= p < hi})

    # Sub-header area: sub-header, then notes (VMCOREINFO inside), then eraseinfo.
    sub_size = 104
    notes = b"".join(_note(n, t, d) for n, t, d in spec.notes)
    vmci_off = vmci_size = note_off = note_size = erase_off = erase_size = 0
    area = bytearray()
    pos = bs + sub_size
    if ver >= 4:
        note_off = pos
        if spec.vmcoreinfo is not None:
            vmci_off = pos + len(notes) + 12 + 12  # header + "VMCOREINFO\0" padded to 12
            vmci_size = len(spec.vmcoreinfo)
            notes += _note(b"VMCOREINFO", 0, spec.vmcoreinfo)
        note_size = len(notes)
        area += notes
    elif ver == 3 and spec.vmcoreinfo is not None:
        vmci_off, vmci_size = pos, len(spec.vmcoreinfo)
        area += spec.vmcoreinfo
    if ver >= 5 and spec.eraseinfo:
        erase_off, erase_size = bs + sub_size + len(area), len(spec.eraseinfo)
        area += spec.eraseinfo
    sub_hdr_size = -(-(sub_size + len(area)) // bs) if ver >= 1 else 0

    one = -(-spec.max_mapnr // 8)
    one_blocks = -(-one // bs)
    bitmap_blocks = one_blocks if spec.single_bitmap else 2 * one_blocks
    ram = spec.ram if spec.ram is not None else [(0, spec.max_mapnr)]
    frames = [(p, p + 1) for p in sorted(set(pages) | lost | set(spec.descs))]
    bitmap_off = (1 + sub_hdr_size) * bs
    if spec.single_bitmap:
        writes.extend(_bitmap_writes(bitmap_off, one_blocks * bs, frames, bs))
    else:
        writes.extend(_bitmap_writes(bitmap_off, one_blocks * bs, ram, bs))
        writes.extend(_bitmap_writes(bitmap_off + one_blocks * bs, one_blocks * bs, frames, bs))

    # Descriptors and data.
    desc_off = bitmap_off + bitmap_blocks * bs
    data_off = desc_off + len(dumped) * 24
    flag = FLAGS[spec.compression]
    descs = bytearray()
    data = bytearray()
    zero_desc = None
    if spec.share_zero_page:
        zero_desc = (data_off, bs, 0)
        data += bytes(bs)
    for pfn in dumped:
        if pfn in spec.descs:
            descs += struct.pack("<qIIQ", *spec.descs[pfn], 0)
            continue
        if pfn in lost:
            descs += bytes(24)
            continue
        content = pages[pfn]
        assert len(content) == bs, f"page {pfn:#x} is {len(content)} bytes"
        if pfn in spec.stored:
            pflags, stored = spec.stored[pfn]
        elif zero_desc and content == bytes(bs):
            descs += struct.pack("<qIIQ", *zero_desc, 0)
            continue
        else:
            stored, pflags = content, 0
            if flag:
                packed = compress(spec.compression, content)
                if len(packed) < bs:
                    stored, pflags = packed, flag
        descs += struct.pack("<qIIQ", data_off + len(data), len(stored), pflags, 0)
        data += stored
    writes.append((desc_off, bytes(descs)))
    writes.append((data_off, bytes(data)))
    size = data_off + len(data)

    # Headers.
    uts = b"".join(s.encode("utf-8", "surrogateescape")[:64].ljust(65, b"\0") for s in spec.utsname)
    status = flag | (INCOMPLETE if spec.incomplete else 0) | spec.status_extra
    max32 = spec.max_mapnr & 0xFFFFFFFF
    header = struct.pack(
        "<8si390s6xqqIiiIIIIIIi",
        spec.signature, ver, uts, spec.timestamp[0], spec.timestamp[1], status, bs,
        sub_hdr_size, bitmap_blocks, max32, 0, 0, 0, spec.current_cpu, spec.nr_cpus,
    )  # fmt: skip
    writes.insert(0, (0, header))
    if ver >= 1:
        sub = struct.pack(
            "<qiiQQqQqQqQQQQ",
            spec.phys_base, spec.dump_level, 1 if split else 0, lo if split else 0,
            hi if split else 0, vmci_off, vmci_size, note_off, note_size, erase_off, erase_size,
            lo if split else 0, hi if split else 0, spec.max_mapnr,
        )  # fmt: skip
        sub = sub[: {1: 12, 2: 32, 3: 48, 4: 64, 5: 80}.get(ver, 104)]
        writes.insert(1, (bs, sub))
        if area:
            writes.insert(2, (bs + sub_size, bytes(area)))
    return writes, max(size, bitmap_off + bitmap_blocks * bs)


def _nonzero_blocks(offset: int, data: bytes, bs: int) -> list[tuple[int, bytes]]:
    """The blocks of ``data`` that are not all zero (a sparse file skips the rest)."""
    out: list[tuple[int, bytes]] = []
    zero = bytes(bs)
    run_start = None
    for pos in range(0, len(data) + bs, bs):
        block = data[pos : pos + bs]
        if block and block != zero:
            if run_start is None:
                run_start = pos
        elif run_start is not None:
            out.append((offset + run_start, bytes(data[run_start:pos])))
            run_start = None
    return out


def assemble(writes: list[tuple[int, bytes]], size: int) -> bytes:
    buf = io.BytesIO()
    for offset, data in writes:
        buf.seek(offset)
        buf.write(data)
    buf.truncate(size)
    out = buf.getvalue()
    return out + bytes(size - len(out))


def build_kdump(spec: KdumpSpec) -> bytes:
    """The whole kdump file in memory."""
    return assemble(*kdump_chunks(spec))


def write_kdump(path, spec: KdumpSpec, *, split: tuple[int, int] | None = None) -> None:
    """Write the kdump file (sparse: blocks of zeros are skipped with seek)."""
    writes, size = kdump_chunks(spec, split=split)
    with open(path, "wb") as f:
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def build_split(spec: KdumpSpec, bounds: list[int]) -> list[bytes]:
    """The parts of a split dump: part i holds frames ``[bounds[i], bounds[i+1])``."""
    return [
        assemble(*kdump_chunks(spec, split=(a, b)))
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]


def flatten(
    writes: list[tuple[int, bytes]],
    size: int,
    *,
    record_size: int | None = None,
    shuffle: int | None = None,
    decoys: bool = False,
    end_marker: bool = True,
) -> bytes:
    """A makedumpfile flattened stream of the file that ``writes`` make.

    ``record_size`` cuts the data into records of at most that many bytes; ``shuffle`` (a
    seed) puts the records in random order; ``decoys`` first writes garbage over each range,
    which the real records (later in the stream) must overwrite.
    """
    records: list[tuple[int, bytes]] = []
    for offset, data in writes:
        step = record_size or max(1, len(data))
        for i in range(0, len(data), step):
            records.append((offset + i, data[i : i + step]))
    if size and not any(o + len(d) >= size for o, d in records):
        records.append((size - 1, b"\0"))  # the rebuilt file ends where the dump ends
    if shuffle is not None:
        random.Random(shuffle).shuffle(records)
    if decoys:
        rng = random.Random(7)
        garbage = [(o, bytes(rng.randrange(256) for _ in range(min(len(d), 64))))
                   for o, d in records]  # fmt: skip
        records = garbage + records
    out = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1))
    out += bytes(4096 - len(out))
    for offset, data in records:
        out += struct.pack(">qq", offset, len(data)) + data
    if end_marker:
        out += struct.pack(">qq", -1, -1)
    return bytes(out)


def build_flattened(spec: KdumpSpec, **kwargs) -> bytes:
    return flatten(*kdump_chunks(spec), **kwargs)


# -- a kernel address space: page tables and VMCOREINFO ----------------------------------------


class PageTables:
    """x86_64 page tables built in synthetic frames (4 or 5 levels)."""

    def __init__(self, first_table_pfn: int, *, levels: int = 4) -> None:
        self.levels = levels
        self.next_pfn = first_table_pfn
        self.tables: dict[int, list[int]] = {}
        self.root = self._new_table()

    def _new_table(self) -> int:
        pfn = self.next_pfn
        self.next_pfn += 1
        self.tables[pfn] = [0] * 512
        return pfn

    def _walk(self, vaddr: int, stop_level: int) -> list[int]:
        table = self.tables[self.root]
        shift = 39 + 9 * (self.levels - 4)
        for _ in range(self.levels - stop_level):
            i = (vaddr >> shift) & 511
            if not table[i] & 1:
                table[i] = (self._new_table() << 12) | 0x63
            table = self.tables[(table[i] & 0x000F_FFFF_FFFF_F000) >> 12]
            shift -= 9
        return table

    def map_4k(self, vaddr: int, paddr: int) -> None:
        self._walk(vaddr, 1)[(vaddr >> 12) & 511] = paddr | 0x63

    def map_2m(self, vaddr: int, paddr: int) -> None:
        self._walk(vaddr, 2)[(vaddr >> 21) & 511] = paddr | 0xE3  # present, rw, PS

    def pages(self) -> dict[int, bytes]:
        return {pfn: struct.pack("<512Q", *entries) for pfn, entries in self.tables.items()}


def vmcoreinfo_text(
    tables: PageTables, *, phys_base: int = 0, osrelease: str = "6.1.0-test", extra: str = ""
) -> bytes:
    """A VMCOREINFO whose SYMBOL(init_top_pgt) is the root of ``tables``."""
    root_vaddr = START_KERNEL_MAP + (tables.root << 12) - phys_base
    return (
        f"OSRELEASE={osrelease}\nPAGESIZE=4096\nSYMBOL(init_top_pgt)={root_vaddr:x}\n"
        f"NUMBER(phys_base)={phys_base}\nKERNELOFFSET=0\n"
        f"NUMBER(pgtable_l5_enabled)={1 if tables.levels == 5 else 0}\n{extra}"
    ).encode()


def pattern_page(pfn: int, page_size: int = PAGE) -> bytes:
    """A page whose content names its frame (and compresses): wrong pages are caught."""
    head = f"pfn {pfn:#x} ".encode()
    body = (head * (page_size // len(head) + 1))[:page_size]
    rng = random.Random(pfn)
    noise = bytes(rng.randrange(256) for _ in range(64))
    return noise + body[64:]


PN_XNUM = 0xFFFF


def build_elf_core(
    segments: list[tuple[int, bytes, int]], vmcoreinfo: bytes, *, notes=(), xnum: bool = False
) -> bytes:
    """A minimal ELF64 x86_64 core: one PT_NOTE (``notes`` then VMCOREINFO) and a PT_LOAD per
    ``(paddr, file bytes, memsz)`` segment (memsz beyond the bytes reads as zeros).

    From 0xffff program headers (or with ``xnum``) the count is written as makedumpfile and
    the kernel's fill_extnum_info() write it: e_phnum PN_XNUM, e_shnum 1, and one section
    header (SHT_NULL) after the program headers whose sh_info holds the count."""
    note_data = b"".join(_note(n, t, d) for n, t, d in notes) + _note(b"VMCOREINFO", 0, vmcoreinfo)
    phnum = 1 + len(segments)
    xnum = xnum or phnum >= PN_XNUM
    shoff = 64 + 56 * phnum if xnum else 0
    offset = 64 + 56 * phnum + (64 if xnum else 0)
    phdrs = bytearray(
        struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(note_data), len(note_data), 4)
    )
    body = [note_data]
    offset += len(note_data)
    for paddr, data, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, offset, paddr, paddr, len(data), memsz, 0)
        body.append(data)
        offset += len(data)
    ehdr = (
        b"\x7fELF\x02\x01\x01" + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, shoff, 0, 64, 56,
                      PN_XNUM if xnum else phnum, 64 if xnum else 0, 1 if xnum else 0, 0)
    )  # fmt: skip
    shdr = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 1, 0, phnum, 0, 0) if xnum else b""
    return b"".join([ehdr, phdrs, shdr, *body])


def write_flattened(path, writes: Iterable[tuple[int, bytes]], *, record_size: int = 65536) -> int:
    """Stream ``writes`` (any iterable: huge dumps need not fit in memory) to a flattened file
    in records of at most ``record_size`` bytes; returns the number of records."""
    count = 0
    with open(path, "wb") as f:
        head = b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)
        f.write(head + bytes(4096 - len(head)))
        for offset, data in writes:
            for i in range(0, len(data), record_size):
                piece = data[i : i + record_size]
                f.write(struct.pack(">qq", offset + i, len(piece)))
                f.write(piece)
                count += 1
        f.write(struct.pack(">qq", -1, -1))
    return count
