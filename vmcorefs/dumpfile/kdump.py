"""kdump-compressed dumps (``KDUMP   ``) and the older diskdump (``DISKDUMP``), read in place.

Layout (makedumpfile ``diskdump_mod.h``; every offset in blocks of ``block_size`` bytes)::

    block 0                      disk_dump_header (signature, utsname, status, sizes)
    block 1                      kdump_sub_header (header_version >= 1), then notes, VMCOREINFO
    1 + sub_hdr_size             1st bitmap: page frames that are RAM
    ... + bitmap_blocks / 2      2nd bitmap: page frames that were dumped
    1 + sub_hdr_size + bitmap_blocks
                                 page_desc[] for each dumped frame, in pfn order
    then                         page data (each page compressed on its own, or raw)

A frame outside the 1st bitmap is a hole; in the 1st but not in the 2nd it was excluded (dump
level); in both, its descriptor is the ``rank``-th (the number of dumped frames before it). A
descriptor with offset 0 is a page lost from an incomplete dump. All three read as absent.

Split dumps (``makedumpfile --split``): every part carries both whole bitmaps but descriptors
only for its own frames ``[start_pfn_64, end_pfn_64)``, ranked from ``start_pfn_64``.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import CorruptError, DumpError, FaultError, Unavailable, check_stop
from . import compression
from .bitmap import Bitmap, ScanLimit
from .compression import (
    DUMP_DH_COMPRESSED,
    DUMP_DH_COMPRESSED_INCOMPLETE,
    DUMP_DH_EXCLUDED_VMEMMAP,
)
from .damage import Truncation
from .format import Format, Formats, Probe, SplitPart
from .kdump_layout import KdumpLayout
from .paged import PagedReader, PagedSource, page_runs
from .source import (
    Note,
    ReadableFile,
    SourceInfo,
    parse_notes,
    vmcoreinfo_of,
)

KDUMP_SIGNATURE = b"KDUMP   "
DISK_DUMP_SIGNATURE = b"DISKDUMP"
SIGNATURES = (KDUMP_SIGNATURE, DISK_DUMP_SIGNATURE)
SIG_LEN = 8
NEW_UTS_LEN = 64  # include/uapi/linux/utsname.h: each field is NEW_UTS_LEN + 1 bytes
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")

#: struct disk_dump_header on 64-bit targets: timeval is 8-aligned after the 390-byte utsname.
_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
HEADER_SIZE = _HEADER.size  # 464
#: struct kdump_sub_header on 64-bit targets (header_version 6: every field).
_SUB_HEADER = struct.Struct("<qiiQQqQqQqQQQQ")
SUB_HEADER_SIZE = _SUB_HEADER.size  # 104
#: struct page_desc: offset, size, flags, page_flags.
PAGE_DESC = struct.Struct("<qIIQ")
PageDesc = tuple[int, int, int, int]
PAGE_DESC_SIZE = PAGE_DESC.size  # 24

#: Sanity limits for sizes read from the header (checked before they are trusted).
MIN_BLOCK_SIZE = 1024
MAX_BLOCK_SIZE = 1 << 16
MAX_SUB_HDR_BLOCKS = 1 << 16
MAX_VMCOREINFO = 1 << 20
MAX_NOTES_SIZE = 64 << 20
#: 2**52 bytes of physical address space (x86_64's architectural maximum), in 4 KiB frames.
MAX_MAPNR = 1 << 40
#: Page data read with one pread when descriptors point at nearby data (bytes).
MAX_SPAN = 1 << 20
SPAN_GAP = 16 << 10
#: RAM ranges (runs of the 1st bitmap) beyond which the bitmap is taken as corrupt.
MAX_RAM_RANGES = 1 << 16
#: Bytes of stored 1st bitmap (holes of a sparse file not counted) read at most to find the RAM
#: ranges: 1 GiB describes 32 TiB of RAM at 4 KiB pages, and takes about a second to read.
MAX_RAM_SCAN = 1 << 30
#: Offsets of stored pages found to be all zeros (the shared zero page), remembered up to this.
MAX_ZERO_OFFSETS = 64
#: Descriptors at the end of the table read at open to find where the page data end (the
#: last pages may all be zero pages, whose data lie at the start).
TAIL_DESCS = 1024
#: Bytes of descriptors read to count the pages a truncated file still holds (``st_blocks``).
MAX_HELD_SCAN = 64 << 20


@dataclass(frozen=True)
class DiskDumpHeader:
    """``struct disk_dump_header`` (block 0)."""

    signature: bytes
    header_version: int
    utsname: tuple[str, ...]
    timestamp_sec: int
    timestamp_usec: int
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int  #: 32 bits only; ``KdumpSubHeader.max_mapnr_64`` from version 6
    total_ram_blocks: int
    device_blocks: int
    written_blocks: int
    current_cpu: int
    nr_cpus: int

    @classmethod
    def parse(cls, data: bytes) -> DiskDumpHeader:
        f = _HEADER.unpack_from(data)
        uts = tuple(
            f[2][i * (NEW_UTS_LEN + 1) : (i + 1) * (NEW_UTS_LEN + 1)]
            .split(b"\0", 1)[0]
            .decode("utf-8", "surrogateescape")  # summary keeps the bytes
            for i in range(6)
        )
        return cls(f[0], f[1], uts, *f[3:])


@dataclass(frozen=True)
class KdumpSubHeader:
    """``struct kdump_sub_header`` (block 1); fields past ``header_version`` read as 0."""

    phys_base: int  #: wrong in QEMU 7.2's kdump output: VMCOREINFO's NUMBER(phys_base) wins
    dump_level: int  # version 1
    split: int  # version 2
    start_pfn: int
    end_pfn: int
    offset_vmcoreinfo: int  # version 3
    size_vmcoreinfo: int
    offset_note: int  # version 4
    size_note: int
    offset_eraseinfo: int  # version 5
    size_eraseinfo: int
    start_pfn_64: int  # version 6
    end_pfn_64: int
    max_mapnr_64: int

    #: Bytes of the sub-header that each header version defines (6 and later: all 104).
    SIZES = {1: 12, 2: 32, 3: 48, 4: 64, 5: 80}

    @classmethod
    def parse(cls, data: bytes, version: int) -> KdumpSubHeader:
        used = cls.SIZES.get(version, SUB_HEADER_SIZE) if version < 6 else SUB_HEADER_SIZE
        data = data[:used].ljust(SUB_HEADER_SIZE, b"\0")
        return cls(*_SUB_HEADER.unpack_from(data))


def read_headers(file: ReadableFile) -> tuple[DiskDumpHeader, KdumpSubHeader]:
    """Block 0 and the sub-header, checked: what recognising a kdump file takes (a probe reads
    no more to group the parts of a split dump), before its notes and bitmaps."""
    path = file.path
    if file.size < HEADER_SIZE:
        raise DumpError(path, f"truncated kdump header ({file.size} bytes, {HEADER_SIZE} needed)")
    raw = file.pread_exact(0, HEADER_SIZE, "the kdump header")
    if raw[:SIG_LEN] not in SIGNATURES:
        raise DumpError(path, "not a kdump-compressed file (no KDUMP or DISKDUMP signature)")
    h = DiskDumpHeader.parse(raw)
    _check_header(path, h)
    sub = KdumpSubHeader.parse(b"", 0)
    if h.header_version >= 1:
        need = KdumpSubHeader.SIZES.get(h.header_version, SUB_HEADER_SIZE)
        data = file.pread_exact(h.block_size, need, "the kdump sub-header")
        sub = KdumpSubHeader.parse(data, h.header_version)
    return h, sub


def _check_header(path: str, h: DiskDumpHeader) -> None:
    bs = h.block_size
    if not (MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE and bs & (bs - 1) == 0):
        swapped = int.from_bytes(bs.to_bytes(4, "little", signed=True), "big", signed=True)
        if MIN_BLOCK_SIZE <= swapped <= MAX_BLOCK_SIZE and swapped & (swapped - 1) == 0:
            raise DumpError(
                path, "big-endian kdump: only x86_64 (little-endian) dumps are supported"
            )
        raise DumpError(path, f"corrupt kdump header: block size {bs}")
    machine = h.utsname[4]
    if machine and machine != "x86_64":
        raise DumpError(path, f"dump of another architecture ({machine}): only x86_64 is supported")
    if h.header_version < 0:
        raise DumpError(path, f"corrupt kdump header: header version {h.header_version}")
    if not 0 <= h.sub_hdr_size <= MAX_SUB_HDR_BLOCKS:
        raise DumpError(path, f"corrupt kdump header: sub-header of {h.sub_hdr_size} blocks")
    if h.bitmap_blocks <= 0:
        raise DumpError(path, "corrupt kdump header: no page bitmap")


def max_mapnr(h: DiskDumpHeader, sub: KdumpSubHeader) -> int:
    """Page frames the dump describes: the 64-bit field from header version 6, when set."""
    if h.header_version >= 6 and sub.max_mapnr_64:
        return sub.max_mapnr_64
    return h.max_mapnr


def split_range(h: DiskDumpHeader, sub: KdumpSubHeader) -> tuple[int, int] | None:
    """The page frames ``[start, end)`` of one part of a split dump, as its sub-header names
    them (64-bit fields from header version 6); None for a whole dump. Not checked here."""
    if h.header_version < 2 or not sub.split:
        return None
    if h.header_version >= 6:
        return sub.start_pfn_64, sub.end_pfn_64
    return sub.start_pfn, sub.end_pfn


def read_notes(file: ReadableFile, h: DiskDumpHeader, sub: KdumpSubHeader) -> list[Note]:
    """The ELF notes (header version 4+) and VMCOREINFO (3+: from its own place when the
    notes lack it), each size checked before it is read."""
    notes: list[Note] = []
    if h.header_version >= 4 and sub.size_note:
        data = _sub_header_area(file, "the ELF notes", sub.offset_note, sub.size_note)
        notes = list(parse_notes(data))
    if h.header_version >= 3 and sub.size_vmcoreinfo:
        if not any(n.name == "VMCOREINFO" for n in notes):
            data = _sub_header_area(file, "VMCOREINFO", sub.offset_vmcoreinfo, sub.size_vmcoreinfo)
            notes.append(Note("VMCOREINFO", 0, data))
    return notes


#: The largest area the sub-header may point at, by what it holds.
_AREA_LIMITS = {"the ELF notes": MAX_NOTES_SIZE, "VMCOREINFO": MAX_VMCOREINFO}


def _sub_header_area(file: ReadableFile, what: str, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` that the sub-header names, checked first."""
    if not 0 < size <= _AREA_LIMITS[what] or offset <= 0:
        raise DumpError(
            file.path, f"corrupt kdump sub-header: {what} of {size} bytes at offset {offset:#x}"
        )
    return file.pread_exact(offset, size, what)


def split_identity(
    h: DiskDumpHeader, sub: KdumpSubHeader, vmcoreinfo: bytes | None
) -> dict[str, object]:
    """What every part of one split dump shares, by the name a message gives it: a probe
    groups parts by it, :class:`~.split.SplitSource` refuses a part whose value differs. The
    VMCOREINFO tells two crashes of one kernel apart where makedumpfile wrote no time in the
    header (1.7.2 writes 0): its CRASHTIME differs."""
    return {
        "VMCOREINFO": vmcoreinfo,
        "kernel name (utsname)": h.utsname,
        "dump time": (h.timestamp_sec, h.timestamp_usec),
        "max_mapnr": max_mapnr(h, sub),
        "block size": h.block_size,
        "header version": h.header_version,
    }


class KdumpSource(PagedSource[PageDesc]):
    """Physical memory of a kdump-compressed file (or of one part of a split dump).

    ``file`` is any :class:`ReadableFile`: the dump itself, or a flattened stream's index.
    ``split_part``: opened as one part of a split set (:mod:`.split` checks the set); opened
    alone, a part that does not cover all of memory is an error naming the missing parts.
    """

    def __init__(self, file: ReadableFile, *, split_part: bool = False) -> None:
        self.file = file
        self.paths = [file.path]
        path = file.path
        h, sub = read_headers(file)
        self.header = h
        self.sub = sub
        bs = h.block_size
        self.page_size = bs
        self.max_mapnr = max_mapnr(h, sub)
        if not 0 < self.max_mapnr <= MAX_MAPNR:
            raise DumpError(path, f"corrupt kdump header: max_mapnr {self.max_mapnr}")
        self._notes = read_notes(file, h, sub)

        # Bitmaps: two halves (makedumpfile), or one for both (an old full diskdump).
        bitmap_off = (1 + h.sub_hdr_size) * bs
        bitmap_len = h.bitmap_blocks * bs
        one_bitmap = -(-self.max_mapnr // 8)
        one_bitmap_blocks = -(-one_bitmap // bs)
        if h.bitmap_blocks >= 2 * one_bitmap_blocks:
            half = bitmap_len // 2
            first_off, second_off, nbits = bitmap_off, bitmap_off + half, half * 8
        elif h.bitmap_blocks >= one_bitmap_blocks:
            first_off = second_off = bitmap_off
            nbits = bitmap_len * 8
        else:
            raise DumpError(
                path,
                f"corrupt kdump header: {h.bitmap_blocks} bitmap blocks cannot cover "
                f"max_mapnr {self.max_mapnr}",
            )
        nbits = min(nbits, self.max_mapnr)
        self.desc_offset = bitmap_off + bitmap_len
        if self.desc_offset > file.size:
            raise DumpError(
                path,
                f"truncated: the page bitmaps end at offset {self.desc_offset:#x}, past the end "
                f"of the file ({file.size:#x} bytes)",
            )

        # The frames this file holds: all of them, or one part's range of a split dump.
        self.start_pfn, self.end_pfn = 0, self.max_mapnr
        split = split_range(h, sub)
        if split is not None:
            self.start_pfn, self.end_pfn = split
            if not 0 <= self.start_pfn < self.end_pfn <= self.max_mapnr:
                raise DumpError(
                    path,
                    f"corrupt split dump header: pfn range {self.start_pfn:#x}-{self.end_pfn:#x} "
                    f"outside 0-{self.max_mapnr:#x}",
                )
        self.is_split = split is not None
        if (
            self.is_split
            and not split_part
            and (self.start_pfn, self.end_pfn) != (0, self.max_mapnr)
        ):
            raise DumpError(
                path,
                f"one part of a split dump (page frames {self.start_pfn:#x}-{self.end_pfn:#x} of "
                f"0-{self.max_mapnr:#x}): give every part, in any order",
            )
        self.ram = Bitmap(file, first_off, nbits)
        self.dumped = Bitmap(
            file, second_off, nbits, lo=self.start_pfn, hi=self.end_pfn, indexed=True
        )
        self.phys_end = self.max_mapnr * bs
        descs_end = self.desc_offset + self.dumped.total * PAGE_DESC_SIZE
        self.layout = KdumpLayout(bs, bitmap_off, self.desc_offset, descs_end)
        self._check_codec(h.status)
        self.parallel_decompression = bool(h.status & DUMP_DH_COMPRESSED) and all(
            bit in compression.PARALLEL for bit in compression.CODECS if h.status & bit
        )
        self._zero_page = ZERO_PAGES.get(bs) or bytes(bs)
        self._zero_offsets: set[int] = set()
        self._decoders: dict[int, compression.PageDecoder] = {}
        self._decoders_into: dict[int, compression.PageDecoderInto] = {}
        self._zero_lock = threading.Lock()
        self._ranges: list[tuple[int, int]] | str | None = None  # or why they are unavailable
        self._ranges_lock = threading.Lock()
        self._held: int | None = None
        self._truncation = self._find_truncation(descs_end)
        self.info = self._make_info(descs_end)
        self.pages = PagedReader(self)

    # -- opening -----------------------------------------------------------------------------
    def _check_codec(self, status: int) -> None:
        """Fail at open, not at the first read, when a codec of the dump is not installed."""
        for bit in compression.NAMES:
            if status & bit:
                compression.require(bit, self.file.path)

    def _make_info(self, descs_end: int) -> SourceInfo:
        h, sub = self.header, self.sub
        fmt = "kdump-compressed" if h.signature == KDUMP_SIGNATURE else "diskdump"
        info = SourceInfo(
            format=fmt,
            compression=compression.compression_name(h.status),
            dump_level=sub.dump_level if h.header_version >= 1 else None,
            crashed_cpu=h.current_cpu,
            nr_cpus=h.nr_cpus,
            page_size=h.block_size,
            dump_time=h.timestamp_sec if h.timestamp_sec or h.timestamp_usec else None,
        )
        extra = info.extra
        extra["kdump header version"] = str(h.header_version)
        for name, value in zip(UTS_FIELDS, h.utsname, strict=True):
            if value:  # QEMU leaves all but the machine empty
                extra[f"kdump utsname {name}"] = value
        if h.timestamp_sec or h.timestamp_usec:  # makedumpfile 1.7.2 writes 0
            extra["kdump dump time"] = _utc(h.timestamp_sec, h.timestamp_usec)
        flags = [name for bit, name in _STATUS_NAMES.items() if h.status & bit]
        extra["kdump status"] = f"{h.status:#x}" + (f" ({', '.join(flags)})" if flags else "")
        extra["kdump max_mapnr"] = str(self.max_mapnr)
        extra["kdump dumped pages"] = str(self.dumped.total)
        if h.header_version >= 1:
            # Informative only: QEMU 7.2 writes a wrong one; VMCOREINFO's NUMBER(phys_base) wins.
            sign = "-" if sub.phys_base < 0 else ""
            extra["kdump header phys_base"] = f"{sign}{abs(sub.phys_base):#x}"
        if self.is_split:
            extra["kdump split part"] = f"page frames {self.start_pfn:#x}-{self.end_pfn:#x}"
        if h.header_version >= 5 and sub.size_eraseinfo:
            extra["kdump eraseinfo"] = f"{sub.size_eraseinfo} bytes"
        if h.status & DUMP_DH_COMPRESSED_INCOMPLETE:
            extra["incomplete"] = (
                "yes: the dump was cut short while it was written; lost pages read as absent"
            )
        return info

    def _find_truncation(self, descs_end: int) -> Truncation | None:
        """Where the headers say the file ends, when that is past its end: the descriptor
        table, the data of the last pages (written in pfn order), the erase info."""
        h, sub, file = self.header, self.sub, self.file
        ends = [descs_end]
        if h.header_version >= 5 and sub.size_eraseinfo > 0 and sub.offset_eraseinfo > 0:
            ends.append(sub.offset_eraseinfo + sub.size_eraseinfo)
        total = self.dumped.total
        if total and descs_end <= file.size:
            n = min(total, TAIL_DESCS)
            raw = file.pread(descs_end - n * PAGE_DESC_SIZE, n * PAGE_DESC_SIZE)
            for offset, size, _flags, _ in PAGE_DESC.iter_unpack(raw):
                if offset > 0 and 0 < size <= self.page_size:
                    ends.append(offset + size)
        expected = max(ends)
        if expected <= file.size:
            return None
        return Truncation(file.path, file.size, expected, at_least=descs_end > file.size)

    def _past_end(self, what: str, offset: int) -> str:
        """``"WHAT at offset X lies past the end of the file (truncated at ...)"``."""
        t = self._truncation
        cut = str(t) if t is not None else f"the file ends at {self.file.size:,} bytes"
        return f"{what} at offset {offset:#x} lies past the end of the file ({cut})"

    # -- PhysicalSource ----------------------------------------------------------------------
    def notes(self) -> Sequence[Note]:
        return self._notes

    def ranges(self) -> Sequence[tuple[int, int]]:
        """The runs of the 1st bitmap, found once (their reason once, when they cannot be)."""
        found = self._ranges
        if found is None:
            with self._ranges_lock:
                found = self._ranges
                if found is None:
                    found = self._ranges = self._find_ranges()
        if isinstance(found, str):
            raise Unavailable(found)
        return found

    def _find_ranges(self) -> list[tuple[int, int]] | str:
        """The RAM ranges, or why they are unavailable (a :class:`~vmcorefs.errors.Stopping`
        or DumpError is raised, not kept: it says nothing about the dump)."""
        try:
            runs = list(self.ram.runs(MAX_RAM_RANGES + 1, MAX_RAM_SCAN))
        except ScanLimit as exc:
            return f"the kdump's RAM bitmap is too large to scan: {exc.reason}"
        if len(runs) > MAX_RAM_RANGES:
            # A RAM map is tens of ranges: a bitmap of alternating bits is corrupt, and its
            # millions of runs would cost seconds and hundreds of MiB per use.
            return f"the kdump's RAM bitmap has more than {MAX_RAM_RANGES} ranges: corrupt"
        ps = self.page_size
        return [(s * ps, e * ps) for s, e in runs]

    def present_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The dumped frames (2nd bitmap) in ``[start, end)``."""
        ps = self.page_size
        frames = self.dumped.runs(start=start // ps, end=-(-end // ps))
        return page_runs(start, end, ps, frames)

    def next_data(self, start: int, end: int) -> int | None:
        """From the 2nd bitmap's index: clear pieces and blocks skipped without reading."""
        ps = self.page_size
        found = self.dumped.next_set(start // ps, -(-end // ps)) * ps
        return max(start, found) if found < end else None

    def next_hole(self, start: int, end: int) -> int:
        """From the 2nd bitmap's index: set pieces and blocks skipped without reading."""
        ps = self.page_size
        found = self.dumped.next_clear(start // ps, -(-end // ps)) * ps
        return min(end, max(start, found))

    def truncations(self) -> Sequence[Truncation]:
        return [self._truncation] if self._truncation is not None else []

    def held_bytes(self) -> int:
        """The dumped pages (whose descriptor and data lie inside the file) × page size."""
        if self._held is None:
            count = self.dumped.total
            if self._truncation is not None or self.header.status & DUMP_DH_COMPRESSED_INCOMPLETE:
                count = self._count_held()  # some descriptors name no data
            self._held = count * self.page_size
        return self._held

    def _count_held(self) -> int:
        """Dumped pages whose data are inside the file (not lost from an incomplete dump, not
        cut off a truncated copy): one bounded pass over the descriptors the file holds, at
        most :data:`MAX_HELD_SCAN` bytes (a lower bound beyond)."""
        fsize, ps = self.file.size, self.page_size
        pos = self.desc_offset
        end = min(fsize, self.desc_offset + self.dumped.total * PAGE_DESC_SIZE)
        end = min(end, pos + MAX_HELD_SCAN)
        held = 0
        while pos + PAGE_DESC_SIZE <= end:  # bounded: advances by each chunk read
            check_stop()
            want = min(end - pos, 1 << 20)
            raw = self.file.pread(pos, want - want % PAGE_DESC_SIZE)
            if len(raw) < PAGE_DESC_SIZE:
                break
            whole = len(raw) - len(raw) % PAGE_DESC_SIZE
            for offset, size, _f, _pf in PAGE_DESC.iter_unpack(raw[:whole]):
                if offset > 0 and 0 < size <= ps and offset + size <= fsize:
                    held += 1
            pos += whole
        return held

    def _fault(self, paddr: int) -> FaultError:
        """Why ``paddr`` is not held: the bitmaps, the descriptor, then the data (decompressed
        again to say what is wrong with them)."""
        ps = self.page_size
        pfn = paddr // ps
        page = f"pfn {pfn:#x}"
        if not 0 <= pfn < self.max_mapnr:
            return FaultError("phys", paddr, f"{page} is past the dump's last page frame")
        if not self.ram.test(pfn):
            return FaultError("phys", paddr, f"{page} is not RAM (a hole in the memory map)")
        rank = self.dumped.rank_if_set(pfn)
        if rank is None:
            level = self.info.dump_level
            by = f"by makedumpfile (dump level {level})" if level is not None else "from the dump"
            return FaultError("phys", paddr, f"{page} excluded {by}")
        at = self.desc_offset + rank * PAGE_DESC_SIZE
        raw = self.file.pread(at, PAGE_DESC_SIZE)
        if len(raw) != PAGE_DESC_SIZE:
            return CorruptError("phys", paddr, self._past_end(f"the descriptor of {page}", at))
        offset, size, flags, _ = PAGE_DESC.unpack(raw)
        if offset == 0:
            return FaultError("phys", paddr, f"{page} was lost: the dump is incomplete")
        inside = self.layout.metadata_overlap(offset) if offset > 0 else None
        if inside is not None:
            return CorruptError(
                "phys", paddr, f"the descriptor of {page} puts its data at {offset:#x}, {inside}"
            )
        if offset < 0 or not 0 < size <= ps:
            return CorruptError(
                "phys", paddr, f"the descriptor of {page} says {size:,} bytes at offset {offset:#x}"
            )
        if offset + size > self.file.size:
            return CorruptError("phys", paddr, self._past_end(f"the data of {page}", offset))
        data = self.file.pread(offset, size)
        why = compression.diagnose(flags, data, ps)
        if why is None:  # loads now: never seen unless the file changed (DumpError then)
            return FaultError("phys", paddr, f"{page} could not be read")
        return CorruptError("phys", paddr, f"{page}: {why} (at offset {offset:#x})")

    def close(self) -> None:
        super().close()
        self.file.close()

    # -- PagedSource -------------------------------------------------------------------------
    def page_refs(self, pfn: int, count: int) -> list[PageDesc | None]:
        """The page descriptors ``(offset, size, flags, page_flags)`` of ``count`` frames."""
        if count == 1:  # random access: one block lookup, one descriptor read
            rank = self.dumped.rank_if_set(pfn)
            if rank is None:
                return [None]
            raw = self.file.pread(self.desc_offset + rank * PAGE_DESC_SIZE, PAGE_DESC_SIZE)
            return [PAGE_DESC.unpack(raw) if len(raw) == PAGE_DESC_SIZE else None]
        refs: list[PageDesc | None] = [None] * count
        lo, hi = max(pfn, self.start_pfn), min(pfn + count, self.end_pfn)
        if lo >= hi:
            return refs
        bits = self.dumped.bits(pfn, count)
        if not bits:
            return refs
        ndesc = bits.bit_count()
        rank = self.dumped.rank(pfn)
        raw = self.file.pread(self.desc_offset + rank * PAGE_DESC_SIZE, ndesc * PAGE_DESC_SIZE)
        descs: list[PageDesc | None] = list(
            PAGE_DESC.iter_unpack(raw[: len(raw) - len(raw) % PAGE_DESC_SIZE])
        )
        # A descriptor table cut short (a truncated copy) leaves the last frames absent.
        if bits == (1 << count) - 1 and len(descs) == count:
            return descs  # every frame dumped: the common case of a large read
        where = [i for i, bit in enumerate(reversed(f"{bits:b}")) if bit == "1"]
        for i, desc in zip(where, descs, strict=False):
            refs[i] = desc
        return refs

    def load_pages(self, refs: Sequence[PageDesc]) -> list[bytes | None]:
        """Read (one pread per run of nearby data) and decompress each referenced page."""
        out: list[bytes | None] = [None] * len(refs)
        spans, zeros = self._plan(refs)
        for i in zeros:
            out[i] = self._zero_page
        for span in spans:
            self._load_span(span, out)
        return out

    def load_pages_into(self, refs: Sequence[PageDesc], dest: memoryview) -> int:
        ps = self.page_size
        loaded = [False] * len(refs)
        spans, zeros = self._plan(refs)
        zero = self._zero_page
        for i in zeros:
            dest[i * ps : (i + 1) * ps] = zero
            loaded[i] = True
        for span in spans:
            self._load_span_into(span, dest, loaded)
        return loaded.index(False) if False in loaded else len(loaded)

    def _plan(self, refs: Sequence[PageDesc]) -> tuple[list[_Span], list[int]]:
        """The reads that load ``refs``: runs of nearby page data (one pread each), and the
        indices of the pages known to be all zeros (stored once, read once). A page whose
        descriptor points outside the page data is in neither: it is corrupt (or lost)."""
        ps = self.page_size
        fsize = self.file.size
        data_start = self.layout.data_start
        zero_offsets = self._zero_offsets
        spans: list[_Span] = []
        zeros: list[int] = []
        pages: list[tuple[int, int, int, int]] = []
        start = end = 0
        for i, ref in enumerate(refs):
            offset, size, flags, _ = ref
            # offset 0: a page lost from an incomplete dump (its descriptor was never written);
            # data inside the metadata (header, bitmaps, descriptors) are corrupt.
            if offset < data_start or not 0 < size <= ps or offset + size > fsize:
                continue
            if offset in zero_offsets and not flags:
                if size == ps:
                    zeros.append(i)
                continue
            if pages and start <= offset <= end + SPAN_GAP and offset + size - start <= MAX_SPAN:
                pages.append((i, offset, size, flags))
                end = max(end, offset + size)
                continue
            if pages:
                spans.append(_Span(pages, start, end))
            pages = [(i, offset, size, flags)]
            start, end = offset, offset + size
        if pages:
            spans.append(_Span(pages, start, end))
        return spans, zeros

    def _decoder(self, flags: int) -> compression.PageDecoder:
        decode = self._decoders.get(flags)
        if decode is None:
            decode = self._decoders[flags] = compression.page_decoder(flags, self.page_size)
        return decode

    def _decoder_into(self, flags: int) -> compression.PageDecoderInto:
        decode = self._decoders_into.get(flags)
        if decode is None:
            decode = compression.page_decoder_into(flags, self.page_size)
            self._decoders_into[flags] = decode
        return decode

    def _raw_page(self, stored: bytes, offset: int) -> bool:
        """Whether the stored page ``stored`` (at ``offset``) is all zeros: remembered (a dump
        stores the zero page once and points every zero page at it)."""
        if stored != self._zero_page:
            return False
        if len(self._zero_offsets) < MAX_ZERO_OFFSETS:
            with self._zero_lock:
                self._zero_offsets.add(offset)
        return True

    def _stored(self, span: _Span) -> Iterator[tuple[int, int, int, int, bytes]]:
        """``(index, offset, size, flags, stored bytes)`` of each page of ``span``, read with
        one pread; a page whose data the file ends before is left out (it does not load)."""
        data = self.file.pread(span.start, span.end - span.start)
        for i, offset, size, flags in span.pages:
            rel = offset - span.start
            stored = data[rel : rel + size]
            if len(stored) == size:
                yield i, offset, size, flags, stored

    def _load_span(self, span: _Span, out: list[bytes | None]) -> None:
        ps = self.page_size
        zero = self._zero_page
        decoders = self._decoders
        for i, offset, size, flags, stored in self._stored(span):
            if flags:  # a codec, or bits no codec has (corrupt: the decoder says None)
                page = (decoders.get(flags) or self._decoder(flags))(stored)
                if page is None:
                    continue  # corrupt: fault() says why, and memory/ records it as damage
                out[i] = zero if page == zero else page
            elif size == ps:
                out[i] = zero if self._raw_page(stored, offset) else stored
            # else: a raw page of the wrong size

    def _load_span_into(self, span: _Span, dest: memoryview, loaded: list[bool]) -> None:
        """:meth:`_load_span`, each page written into its place in ``dest``."""
        ps = self.page_size
        decoders = self._decoders_into
        for i, offset, size, flags, stored in self._stored(span):
            if flags:
                decode = decoders.get(flags) or self._decoder_into(flags)
                loaded[i] = decode(stored, dest[i * ps : (i + 1) * ps])
            elif size == ps:
                dest[i * ps : (i + 1) * ps] = stored
                loaded[i] = True
                self._raw_page(stored, offset)


@dataclass(frozen=True)
class _Span:
    """Pages whose data lie close together in the file, read with one pread: ``(index in the
    references, offset, size, flags)`` each, within ``[start, end)``."""

    pages: list[tuple[int, int, int, int]]
    start: int
    end: int


def open_kdump(file: ReadableFile, formats: Formats, *, split_part: bool) -> KdumpSource:
    return KdumpSource(file, split_part=split_part)


def probe_kdump(file: ReadableFile, formats: Formats) -> Probe:
    """The headers, and for one part of a split dump its frames and what groups it."""
    h, sub = read_headers(file)
    pfns = split_range(h, sub)
    if pfns is None:
        return Probe(file.path, FORMAT.name)
    identity = split_identity(h, sub, vmcoreinfo_of(read_notes(file, h, sub)))
    return Probe(file.path, FORMAT.name, SplitPart(tuple(identity.values()), *pfns))


FORMAT = Format("kdump", "a kdump-compressed file", SIGNATURES, probe=probe_kdump, open=open_kdump)


_STATUS_NAMES = {
    **compression.NAMES,
    DUMP_DH_COMPRESSED_INCOMPLETE: "incomplete",
    DUMP_DH_EXCLUDED_VMEMMAP: "excluded vmemmap",
}


def _utc(sec: int, usec: int) -> str:
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    except (OverflowError, OSError, ValueError):
        return f"{sec}.{usec:06d} (seconds since the epoch)"
    return f"{stamp}.{usec:06d} UTC"


#: Shared all-zero page objects (one per page size): cached zero pages then cost nothing.
ZERO_PAGES: dict[int, bytes] = {4096: bytes(4096)}
