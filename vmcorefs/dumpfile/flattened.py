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

from ..errors import DumpError
from .source import DumpFile, ExactReads, PhysicalSource, ReadableFile

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


class FlattenedFile(ExactReads):
    """The file ``makedumpfile -R`` would rebuild from a stream, read through the stream.

    Satisfies :class:`~vmcorefs.dumpfile.source.ReadableFile`. The index holds three int64
    per disjoint piece (rebuilt start, rebuilt end, stream offset): memory proportional to the
    record count, not to the data.
    """

    contents_name = "the rebuilt dump"

    def __init__(self, stream: DumpFile, *, progress: Progress | None = None) -> None:
        self.stream = stream
        self.path = stream.path
        self.records = 0
        progress = progress or _StderrProgress(stream.path)
        try:
            starts, ends, offsets = self._scan(progress)
        except DumpError:
            progress(stream.size, stream.size)  # clear the progress line before the error
            raise
        self._starts, self._ends, self._offsets = _resolve(starts, ends, offsets)
        self.size = self._ends[-1] if len(self._ends) else 0

    def _scan(self, progress: Progress) -> tuple[array, array, array]:
        stream = self.stream
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
        starts, ends, offsets = array("q"), array("q"), array("q")
        add_start, add_end, add_offset = starts.append, ends.append, offsets.append
        unpack = _RECORD.unpack_from
        pos = MDF_HEADER_SIZE
        buf, buf_pos, buf_len = b"", pos, 0
        last_size = count = 0
        # Bounded: every record moves pos forward by at least its 16-byte header.
        while True:
            rel = pos - buf_pos
            if rel + 16 > buf_len:
                want = SCAN_READ if last_size < SCAN_READ // 4 else 4096
                buf, buf_pos, rel = stream.pread(pos, want), pos, 0
                buf_len = len(buf)
                if buf_len < 16:
                    raise DumpError(
                        path,
                        f"truncated flattened stream: it ends at offset {total:#x} after "
                        f"{count} records, without its end marker",
                    )
            offset, size = unpack(buf, rel)
            if not (0 <= offset < MAX_OFFSET and 0 <= size < MAX_OFFSET):
                if offset == END_FLAG_FLAT_HEADER:
                    break
                raise DumpError(
                    path,
                    f"corrupt flattened stream: record {count} at offset {pos:#x} has "
                    f"offset {offset} and size {size}",
                )
            data = pos + 16
            pos = data + size
            if pos > total:
                raise DumpError(
                    path,
                    f"truncated flattened stream: record {count} at offset {data - 16:#x} "
                    f"holds {size} bytes but the file ends {total - data} bytes later",
                )
            if size:
                add_start(offset)
                add_end(offset + size)
                add_offset(data)
                count += 1
                if not count & 0x3FF:
                    progress(pos, total)
            last_size = size
        progress(total, total)
        self.records = len(starts)
        if not starts:
            raise DumpError(path, "empty flattened stream: no records before the end marker")
        return starts, ends, offsets

    # -- ReadableFile ------------------------------------------------------------------------
    def pread(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset < 0 or offset >= self.size:
            return b""
        end = min(offset + size, self.size)
        starts, ends, offsets = self._starts, self._ends, self._offsets
        i = bisect.bisect_right(starts, offset) - 1
        parts: list[bytes] = []
        pos = offset
        # Bounded: each pass consumes one piece or one gap before the next piece.
        while pos < end:
            if i >= 0 and pos < ends[i]:
                n = min(end, ends[i]) - pos
                data = self.stream.pread(offsets[i] + pos - starts[i], n)
                parts.append(data)
                pos += len(data)
                if len(data) < n:  # the stream shrank under us
                    break
            else:
                nxt = starts[i + 1] if i + 1 < len(starts) else end
                gap_end = min(end, nxt)
                parts.append(bytes(gap_end - pos))  # never written: a hole of the rebuilt file
                pos = gap_end
            if i + 1 < len(starts) and pos >= starts[i + 1]:
                i += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

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


def _resolve(starts: array, ends: array, offsets: array) -> tuple[array, array, array]:
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
    file: DumpFile, *, cache_size_mib: int = 64, progress: Progress | None = None
) -> PhysicalSource:
    """Index a flattened stream and open its payload (kdump-compressed or ELF) through it."""
    flat = FlattenedFile(file, progress=progress)
    source = open_payload(flat, cache_size_mib=cache_size_mib)
    source.info.format = f"flattened ({source.info.format})"
    source.info.extra["flattened records"] = str(flat.records)
    return source


def open_payload(
    flat: ReadableFile, *, cache_size_mib: int = 64, split_part: bool = False
) -> PhysicalSource:
    """The container inside a rebuilt file, recognised by its content."""
    head = flat.pread(0, 8)
    if head.startswith(b"\x7fELF"):
        if split_part:
            raise DumpError(flat.path, "an ELF core cannot be part of a split dump")
        from .elf import ElfSource

        return ElfSource(flat)  # type: ignore[arg-type]
    if head in (b"KDUMP   ", b"DISKDUMP"):
        from .kdump import KdumpSource

        return KdumpSource(flat, cache_size_mib=cache_size_mib, split_part=split_part)
    raise DumpError(
        flat.path, "flattened stream that holds neither a kdump-compressed file nor an ELF core"
    )
