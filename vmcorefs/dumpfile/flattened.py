"""makedumpfile's flattened stream (``makedumpfile -F``, QEMU 7.2 ``kdump-*``), read in place.

A stream is a 4096-byte header (``makedumpfile`` signature, type 1, version 1) and records
``{int64 offset, int64 size}`` (big-endian) each followed by ``size`` bytes that belong at
``offset`` of the file that ``makedumpfile -R`` would rebuild; a record with offset −1 ends it.
Records come in any order and a later one overwrites an earlier one.

One sequential pass at open indexes the records; :class:`FlattenedFile` then serves ``pread``
of the rebuilt file from the stream itself. Bytes no record writes read as zeros, as in the
rebuilt file (a hole ``lseek`` left). The payload is kdump-compressed or ELF.
"""

from __future__ import annotations

import bisect
import heapq
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterator

from ..buffers import fill_zeros, read_via
from ..errors import DumpError
from .format import Format, Formats, Probe
from .source import ExactReads, PhysicalSource, ReadableFile

MDF_SIGNATURE = b"makedumpfile"
MDF_SIG_LEN = 16
MDF_HEADER_SIZE = 4096
MDF_TYPE_FLAT_HEADER = 1
MDF_VERSION_FLAT_HEADER = 1
END_FLAG_FLAT_HEADER = -1
_RECORD = struct.Struct(">qq")
_FLAT_HEADER = struct.Struct(">16sqq")
#: Stream bytes read at once while scanning record headers.
SCAN_READ = 64 << 10
#: Offsets in the rebuilt file stay below this (2**62): sums of two cannot overflow int64.
MAX_OFFSET = 1 << 62
#: Progress is shown on stderr once indexing has taken this long (seconds).
PROGRESS_AFTER = 1.0
#: Records a probe indexes to find the payload's headers.
PROBE_RECORDS = 64
#: Records smaller than this keep their bytes in memory, adjacent ones joined into one piece:
#: the index then costs what their data do, not three int64 each (makedumpfile and QEMU write
#: records of a page or more; only the headers' own records are smaller).
SMALL_RECORD = 512
#: Bytes of small records kept at most (beyond, the stream is refused: rebuilt with
#: ``makedumpfile -R`` it reads as any dump).
MAX_SMALL_BYTES = 64 << 20

Progress = Callable[[int, int], None]


class _StderrProgress:
    """``vmcorefs: indexing PATH: 42%`` on stderr, only once indexing takes over a second."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.start = time.monotonic()
        self.shown = False
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total:
            if self.shown:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            return
        if now - self.start < PROGRESS_AFTER or now - self.last < 0.2:
            return
        self.shown, self.last = True, now
        pct = 100 * done // max(1, total)
        sys.stderr.write(f"\rvmcorefs: indexing {self.path}: {pct}%")
        sys.stderr.flush()


def check_header(stream: ReadableFile) -> None:
    """DumpError unless ``stream`` starts with a flattened header (signature, type 1,
    version 1)."""
    path, total = stream.path, stream.size
    if total < MDF_HEADER_SIZE:
        raise DumpError(
            path, f"truncated flattened header ({total} bytes, {MDF_HEADER_SIZE} needed)"
        )
    sig, ftype, version = _FLAT_HEADER.unpack(stream.pread_exact(0, 32, "the header"))
    if not sig.startswith(MDF_SIGNATURE):
        raise DumpError(path, "not a flattened dump (no makedumpfile signature)")
    if ftype != MDF_TYPE_FLAT_HEADER or version != MDF_VERSION_FLAT_HEADER:
        raise DumpError(
            path, f"unknown flattened format: type {ftype}, version {version} (1, 1 known)"
        )


def _quiet(done: int, total: int) -> None:
    """No progress shown (a probe reads a few records)."""


class FlattenedFile(ExactReads):
    """The file ``makedumpfile -R`` would rebuild from a stream, read through the stream.

    Satisfies :class:`~vmcorefs.dumpfile.source.ReadableFile`. The index holds three int64
    per disjoint piece (rebuilt start, rebuilt end, stream offset): memory proportional to the
    record count, not to the data. Small records (:data:`SMALL_RECORD`) are the exception:
    their bytes are kept (:class:`_SmallRecords`, read past the stream's end) and adjacent ones
    are one piece, so a stream of 1-byte records costs its data, not 24 bytes a byte.
    """

    contents_name = "the rebuilt dump"

    def __init__(
        self,
        stream: ReadableFile,
        *,
        progress: Progress | None = None,
        max_records: int | None = None,
    ) -> None:
        """Index the whole stream; with ``max_records``, only its first records (a probe):
        bytes no record indexed so far writes are then not known (a read stops there), not
        zeros, since a later record may write them."""
        self.stream = stream
        #: What a piece's offset points into: the stream, or the small records kept.
        self._held = _SmallRecords(stream)
        self.path = stream.path
        self.records = 0
        progress = progress or (_StderrProgress(stream.path) if max_records is None else _quiet)
        try:
            starts, ends, offsets = self._scan(progress, max_records)
        except DumpError:
            progress(stream.size, stream.size)  # clear the progress line before the error
            raise
        self._starts, self._ends, self._offsets = _resolve(starts, ends, offsets)
        self.size = self._ends[-1] if len(self._ends) else 0
        self._partial = max_records is not None

    def _scan(
        self, progress: Progress, max_records: int | None
    ) -> tuple[array[int], array[int], array[int]]:
        stream = self.stream
        small = self._held
        path, total = stream.path, stream.size
        check_header(stream)
        starts, ends, offsets = array("q"), array("q"), array("q")
        add_start, add_end, add_offset = starts.append, ends.append, offsets.append
        unpack = _RECORD.unpack_from
        pos = MDF_HEADER_SIZE
        buf, buf_pos, buf_len = b"", pos, 0
        last_size = count = records = shown = 0
        # Bounded: every record moves pos forward by at least its 16-byte header.
        while count != max_records:
            rel = pos - buf_pos
            if rel + 16 > buf_len:
                want = SCAN_READ if last_size < SCAN_READ // 4 else 4096
                buf, buf_pos, rel = stream.pread(pos, want), pos, 0
                buf_len = len(buf)
                if buf_len < 16 and max_records is not None:
                    break  # a probe: what the records seen so far write
                if buf_len < 16:
                    raise DumpError(
                        path,
                        f"truncated flattened stream: it ends at offset {total:#x} after "
                        f"{records} records, without its end marker",
                    )
            offset, size = unpack(buf, rel)
            if not (0 <= offset < MAX_OFFSET and 0 <= size < MAX_OFFSET):
                if offset == END_FLAG_FLAT_HEADER:
                    break
                raise DumpError(
                    path,
                    f"corrupt flattened stream: record {records} at offset {pos:#x} has "
                    f"offset {offset} and size {size}",
                )
            data = pos + 16
            pos = data + size
            if pos > total and max_records is not None:
                break
            if pos > total:
                raise DumpError(
                    path,
                    f"truncated flattened stream: record {records} at offset {data - 16:#x} "
                    f"holds {size} bytes but the file ends {total - data} bytes later",
                )
            if 0 < size < SMALL_RECORD:
                piece = buf[rel + 16 : rel + 16 + size]
                if len(piece) < size:  # past what was read ahead
                    piece = stream.pread_exact(data, size, f"record {records}")
                at = small.add(piece)
                if count and ends[-1] == offset and offsets[-1] + offset - starts[-1] == at:
                    ends[-1] = offset + size  # continues the previous small record
                else:
                    add_start(offset)
                    add_end(offset + size)
                    add_offset(at)
                    count += 1
                records += 1
                # The small records that continue this one, in what was read ahead: one tight
                # loop (a stream of 1-byte records is 16 million of them in 268 MB).
                rel, end = pos - buf_pos, ends[-1]
                while rel + 16 <= buf_len:
                    offset, size = unpack(buf, rel)
                    if offset != end or not 0 < size < SMALL_RECORD or rel + 16 + size > buf_len:
                        break
                    small.add(buf[rel + 16 : rel + 16 + size])
                    end += size
                    rel += 16 + size
                    records += 1
                ends[-1] = end
                pos = buf_pos + rel
            elif size:
                add_start(offset)
                add_end(offset + size)
                add_offset(data)
                count += 1
                records += 1
            if records - shown >= 0x400:
                progress(pos, total)
                shown = records
            last_size = size
        progress(total, total)
        self.records = records
        if not starts:
            raise DumpError(path, "empty flattened stream: no records before the end marker")
        return starts, ends, offsets

    # -- ReadableFile ------------------------------------------------------------------------
    def preadinto(self, offset: int, buffer: memoryview) -> int:
        """Bytes of the rebuilt file at ``offset`` into ``buffer``: each piece from the stream,
        zeros where no record writes (a probe's partial index stops there instead)."""
        if offset < 0 or offset >= self.size or not len(buffer):
            return 0
        size = min(len(buffer), self.size - offset)
        starts, ends, offsets = self._starts, self._ends, self._offsets
        i = bisect.bisect_right(starts, offset) - 1
        got = 0
        # Bounded: each pass consumes one piece or one gap before the next piece.
        while got < size:
            pos = offset + got
            if i >= 0 and pos < ends[i]:
                n = min(size - got, ends[i] - pos)
                done = self._held.preadinto(offsets[i] + pos - starts[i], buffer[got : got + n])
                got += done
                if done < n:  # the stream shrank under us
                    break
            elif self._partial:
                break  # a probe's index: what lies in a gap is not known yet
            else:
                nxt = starts[i + 1] if i + 1 < len(starts) else offset + size
                n = min(size, nxt - offset) - got
                fill_zeros(buffer[got : got + n])  # never written: a hole of the rebuilt file
                got += n
            if i + 1 < len(starts) and offset + got >= starts[i + 1]:
                i += 1
        return got

    def pread(self, offset: int, size: int) -> bytes:
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and 0 <= offset and offset + size <= self._ends[i]:  # inside one piece
            return self._held.pread(self._offsets[i] + offset - self._starts[i], size)
        return read_via(self.preadinto, offset, min(size, self.size - offset))

    def data_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The pieces records write within ``[start, end)``: the gaps between them are zeros."""
        starts, ends = self._starts, self._ends
        i = max(0, bisect.bisect_right(starts, start) - 1)
        while i < len(starts) and starts[i] < end:  # bounded by the pieces in the range
            s, e = max(start, starts[i]), min(end, ends[i])
            if s < e:
                yield s, e
            i += 1

    def check(self) -> None:
        self.stream.check()

    def close(self) -> None:
        self.stream.close()


class _SmallRecords:
    """The stream, and past its end the bytes of its small records (kept in memory): a piece's
    offset is a position in one or the other, so reads and the overlap sweep treat both alike."""

    def __init__(self, stream: ReadableFile) -> None:
        self.stream = stream
        self.path = stream.path
        #: Small records' bytes start here: past the stream, never next to its last byte.
        self.base = stream.size + MDF_HEADER_SIZE
        self.size = self.base
        self._data = bytearray()

    def add(self, data: bytes) -> int:
        """Keep ``data``; where it now reads from."""
        at = self.base + len(self._data)
        if len(self._data) + len(data) > MAX_SMALL_BYTES:
            raise DumpError(
                self.path,
                f"flattened stream with more than {MAX_SMALL_BYTES >> 20} MiB in records of "
                f"under {SMALL_RECORD} bytes (makedumpfile writes a page or more a record): "
                "rebuild the dump with makedumpfile -R",
            )
        self._data += data
        return at

    def pread(self, offset: int, size: int) -> bytes:
        if offset < self.base:
            return self.stream.pread(offset, size)
        rel = offset - self.base
        return bytes(self._data[rel : rel + size])

    def preadinto(self, offset: int, buffer: memoryview) -> int:
        if offset < self.base:
            return self.stream.preadinto(offset, buffer)
        rel = offset - self.base
        got = self._data[rel : rel + len(buffer)]
        buffer[: len(got)] = got
        return len(got)


def _resolve(
    starts: array[int], ends: array[int], offsets: array[int]
) -> tuple[array[int], array[int], array[int]]:
    """Disjoint pieces sorted by rebuilt offset, where a later record wins over earlier ones."""
    n = len(starts)
    order = sorted(range(n), key=starts.__getitem__)
    if all(ends[a] <= starts[b] for a, b in zip(order, order[1:], strict=False)):
        return (
            array("q", (starts[i] for i in order)),
            array("q", (ends[i] for i in order)),
            array("q", (offsets[i] for i in order)),
        )
    # Overlaps: sweep the boundaries; between two, the active record with the highest
    # sequence number (the latest in the stream) supplies the bytes.
    points = sorted(set(starts) | set(ends))
    out_s, out_e, out_o = array("q"), array("q"), array("q")
    heap: list[tuple[int, int]] = []  # (-record, end)
    k = 0
    for p, q in zip(points, points[1:], strict=False):
        while k < n and starts[order[k]] <= p:
            r = order[k]
            heapq.heappush(heap, (-r, ends[r]))
            k += 1
        while heap and heap[0][1] <= p:
            heapq.heappop(heap)
        # Records that ended are dropped lazily: only the top must be live.
        if not heap:
            continue
        r = -heap[0][0]
        off = offsets[r] + (p - starts[r])
        if out_e and out_e[-1] == p and out_o[-1] + (p - out_s[-1]) == off:
            out_e[-1] = q  # continues the previous piece in the stream
        else:
            out_s.append(p)
            out_e.append(q)
            out_o.append(off)
    return out_s, out_e, out_o


def open_flattened(
    file: ReadableFile,
    formats: Formats,
    *,
    split_part: bool = False,
    progress: Progress | None = None,
) -> PhysicalSource:
    """Index a flattened stream and open its payload (kdump-compressed or ELF) through it."""
    flat = FlattenedFile(file, progress=progress)
    source = formats.open(flat, split_part=split_part, inside=FORMAT.name)
    source.info.format = f"flattened ({source.info.format})"
    source.info.extra["flattened records"] = str(flat.records)
    return source


def probe_flattened(file: ReadableFile, formats: Formats) -> Probe:
    """The header, then the payload's own probe over the first :data:`PROBE_RECORDS` records
    (makedumpfile writes the payload's headers first): ``payload`` and ``split`` stay None
    when those records do not hold them."""
    check_header(file)
    prefix = FlattenedFile(file, max_records=PROBE_RECORDS)
    try:
        inner = formats.probe(prefix, inside=FORMAT.name)
    except DumpError:  # headers past the first records (or broken: opening says which)
        inner = None
    if inner is None:
        return Probe(file.path, FORMAT.name)
    return Probe(file.path, FORMAT.name, split=inner.split, payload=inner.kind)


FORMAT = Format(
    "flattened",
    "a flattened stream",
    (MDF_SIGNATURE,),
    probe=probe_flattened,
    open=open_flattened,
    flattenable=False,
)
