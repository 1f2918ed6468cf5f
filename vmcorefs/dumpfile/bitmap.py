"""Page bitmaps of kdump files, read in place, with a running-count index for ranks.

A kdump stores one page descriptor per dumped page frame, in pfn order: the descriptor of frame
``pfn`` is the ``rank``-th, where ``rank`` is the number of set bits before ``pfn`` in the 2nd
bitmap. The bitmap stays in the file; the index keeps the count of set bits before each
4096-byte block of bitmap (32768 frames, 128 MiB of RAM at 4 KiB pages). A run of blocks that
are all clear or all set is one entry of the index however long it is, so the index of a sparse
bitmap is small whatever ``max_mapnr`` the header claims; other blocks cost 8 bytes each.
The blocks last used are kept (with a count every 64 bytes), so a rank costs one index lookup
and one popcount of at most 64 bytes; a block is read with one ``pread`` when it is not kept.

Every scan of a bitmap (the index at open, the runs of set bits) reads only what the file
stores: the holes of a sparse file (``ReadableFile.data_runs``) are clear bits, skipped
without reading; a chunk or block that is all clear or all set is one comparison, not a
popcount. Scans check :func:`vmcorefs.errors.check_stop` between chunks, so that a daemon
asked to end does not wait for them.
"""

from __future__ import annotations

import bisect
import struct
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from itertools import accumulate, repeat
from typing import Literal

from ..errors import Unavailable, check_stop
from .source import ReadableFile

#: Bytes of bitmap per index entry.
BLOCK = 4096
BLOCK_BITS = BLOCK * 8
#: Bytes of bitmap read at once while building the index or scanning for runs.
SCAN_CHUNK = 1 << 20
#: Bitmap blocks kept in memory (LRU), each with its sub-counts: about 5 KiB a block.
KEPT_BLOCKS = 64
#: Bytes of bitmap between two sub-counts of a kept block.
SUB = 64
#: A run of uniform blocks shorter than this that follows mixed blocks joins their table (8
#: bytes a block) instead of starting a piece of its own: the pieces stay few whatever the
#: pattern, and their overhead bounded per block.
MIN_PIECE = 16
_ZERO_CHUNK = bytes(SCAN_CHUNK)
_ONES_CHUNK = b"\xff" * SCAN_CHUNK
_ZERO_BLOCK = bytes(BLOCK)
_ONES_BLOCK = b"\xff" * BLOCK
_ZERO_SUB = bytes(SUB)
_ONES_SUB = b"\xff" * SUB
_SUB_MASK = (1 << (SUB * 8)) - 1
#: A block as its subs (a bytes object each): their counts are then taken in C-level loops.
_SUBS = struct.Struct(f"{SUB}s" * (BLOCK // SUB))
_LITTLE: Literal["little"] = "little"


class ScanLimit(Unavailable):
    """A scan of a bitmap would read more than its budget: the view that needed it is
    unavailable (the bitmap is implausibly large for the memory it describes)."""


class _Counts:
    """Set bits before each block of a bitmap, stored in pieces that cover blocks
    ``[0, nblocks)``: a uniform piece (all clear or all set: ``slope`` 0 or
    :data:`BLOCK_BITS` per block) holds one number; a mixed piece holds one count per block."""

    def __init__(self, nblocks: int) -> None:
        self.nblocks = nblocks
        self.starts = array("q")  # first block of each piece
        self.bases = array("q")  # set bits before it
        self.slopes = array("q")  # per block: 0, BLOCK_BITS, or -1 for a table
        self.tables: list[array[int] | None] = []
        self.total = 0
        self._next = 0  # the first block not yet added

    # -- building, block after block ------------------------------------------------------
    def uniform(self, nblocks: int, ones: bool) -> None:
        """``nblocks`` blocks, all set (``ones``) or all clear."""
        if nblocks <= 0:
            return
        slope = BLOCK_BITS if ones else 0
        if self.slopes and self.slopes[-1] == slope:
            pass  # continues the last piece
        elif self.slopes and self.slopes[-1] == -1 and nblocks < MIN_PIECE:
            table = self.tables[-1]
            assert table is not None
            table.extend([self.total + slope * k for k in range(nblocks)])
        else:
            self._piece(slope, None)
        self.total += slope * nblocks
        self._next += nblocks

    def mixed(self, count: int) -> None:
        """One block with ``count`` set bits (neither all clear nor all set)."""
        if not self.slopes or self.slopes[-1] != -1:
            self._piece(-1, array("q"))
        table = self.tables[-1]
        assert table is not None
        table.append(self.total)
        self.total += count
        self._next += 1

    def _piece(self, slope: int, table: array[int] | None) -> None:
        self.starts.append(self._next)
        self.bases.append(self.total)
        self.slopes.append(slope)
        self.tables.append(table)

    def finish(self) -> None:
        self.uniform(self.nblocks - self._next, False)

    # -- queries ----------------------------------------------------------------------------
    def piece(self, block: int) -> int:
        return bisect.bisect_right(self.starts, block) - 1

    def piece_end(self, i: int) -> int:
        return self.starts[i + 1] if i + 1 < len(self.starts) else self.nblocks

    def before(self, block: int) -> int:
        """Set bits in blocks ``[0, block)``."""
        if block >= self.nblocks:
            return self.total
        i = self.piece(block)
        rel = block - self.starts[i]
        table = self.tables[i]
        if table is not None:
            return table[rel]
        return self.bases[i] + self.slopes[i] * rel


class Bitmap:
    """Bits ``[lo, hi)`` of a bitmap stored at ``offset`` in ``file`` (bit ``i`` of byte ``j`` is
    frame ``8*j + i``, as makedumpfile writes it); bits outside ``[lo, hi)`` count as clear.

    ``indexed`` builds the running counts (one sequential read of what the file stores of the
    bitmap) for :meth:`rank`.
    """

    def __init__(
        self,
        file: ReadableFile,
        offset: int,
        nbits: int,
        *,
        lo: int = 0,
        hi: int | None = None,
        indexed: bool = False,
    ) -> None:
        self.file = file
        self.offset = offset
        self.nbits = nbits
        self.lo = max(0, lo)
        self.hi = nbits if hi is None else min(hi, nbits)
        self.nbytes = (nbits + 7) // 8
        self.nblocks = (self.nbytes + BLOCK - 1) // BLOCK
        self._counts: _Counts | None = None
        self.total = 0
        self._kept: OrderedDict[int, tuple[bytes, array[int]]] = OrderedDict()
        self._kept_lock = threading.Lock()
        if indexed:
            self._build_index()

    # -- reading -------------------------------------------------------------------------
    def _read(self, start: int, end: int) -> bytes:
        """Bitmap bytes ``[start, end)`` (the file was checked to hold the whole bitmap)."""
        return self.file.pread_exact(self.offset + start, end - start, "the page bitmap")

    def stored_blocks(self, first: int = 0, last: int | None = None) -> Iterator[tuple[int, int]]:
        """Runs ``[b0, b1)`` of blocks in ``[first, last)`` that the file may hold set bits in,
        in order; the blocks between lie wholly in holes of the file (clear)."""
        last = self.nblocks if last is None else min(last, self.nblocks)
        if first >= last:
            return
        start = self.offset + first * BLOCK
        end = self.offset + min(self.nbytes, last * BLOCK)
        run: list[int] | None = None
        for s, e in self.file.data_runs(start, end):  # bounded: what the file stores
            b0 = (s - self.offset) // BLOCK
            b1 = min(last, -(-(e - self.offset) // BLOCK))
            if run is not None and b0 <= run[1]:
                run[1] = max(run[1], b1)
                continue
            if run is not None:
                yield run[0], run[1]
            run = [max(first, b0), b1]
        if run is not None:
            yield run[0], run[1]

    def _chunks(self, first: int, last: int) -> Iterator[tuple[int, bytes]]:
        """``(block, bytes)``: the stored blocks of ``[first, last)`` in chunks of at most
        :data:`SCAN_CHUNK` bytes, the last one of the bitmap short."""
        step = SCAN_CHUNK // BLOCK
        for b0, b1 in self.stored_blocks(first, last):
            for block in range(b0, b1, step):
                check_stop()
                end = min(self.nbytes, min(b1, block + step) * BLOCK)
                yield block, self._read(block * BLOCK, end)

    def _build_index(self) -> None:
        """The set bits before every block, from one pass over what the file stores."""
        counts = _Counts(self.nblocks)
        for block, chunk in self._chunks(0, self.nblocks):
            counts.uniform(block - counts._next, False)  # a hole: clear
            n = len(chunk)
            if chunk == (_ZERO_CHUNK if n == SCAN_CHUNK else bytes(n)):
                counts.uniform(-(-n // BLOCK), False)
                continue
            if n == SCAN_CHUNK and chunk == _ONES_CHUNK:
                counts.uniform(n // BLOCK, True)
                continue
            for i in range(0, n, BLOCK):
                data = chunk[i : i + BLOCK]
                if data == _ZERO_BLOCK:
                    counts.uniform(1, False)
                elif data == _ONES_BLOCK:
                    counts.uniform(1, True)
                else:
                    counts.mixed(int.from_bytes(data, "little").bit_count())
        counts.finish()
        self._counts = counts
        self._base = self._raw_rank(self.lo)
        self.total = self._raw_rank(self.hi) - self._base

    def _block(self, block: int) -> tuple[bytes, array[int]]:
        """Block ``block`` of the bitmap (zero-padded to BLOCK bytes) and its running counts
        every SUB bytes, from the kept blocks or read once."""
        with self._kept_lock:
            kept = self._kept.get(block)
            if kept is not None:
                self._kept.move_to_end(block)
                return kept
        start = block * BLOCK
        data = self._read(start, min(self.nbytes, start + BLOCK)).ljust(BLOCK, b"\0")
        # Set bits before each sub: at most 32768, 16 bits.
        if data == _ZERO_BLOCK:
            subs = array("H", bytes(2 * (BLOCK // SUB)))
        else:
            words = map(int.from_bytes, _SUBS.unpack(data), repeat(_LITTLE))
            counts = map(int.bit_count, words)
            subs = array("H", accumulate(counts, initial=0))
            del subs[-1]
        kept = (data, subs)
        with self._kept_lock:
            self._kept[block] = kept
            if len(self._kept) > KEPT_BLOCKS:
                self._kept.popitem(last=False)
        return kept

    def _raw_rank(self, pfn: int) -> int:
        """Set bits in ``[0, pfn)`` of the whole bitmap (``lo``/``hi`` ignored)."""
        assert self._counts is not None
        pfn = min(max(pfn, 0), self.nbits)
        block, bit = divmod(pfn, BLOCK_BITS)
        count = self._counts.before(block)
        if bit:
            data, subs = self._block(block)
            sub = bit // (SUB * 8)
            part = data[sub * SUB : (bit + 7) // 8]
            mask = (1 << (bit - sub * SUB * 8)) - 1
            count += subs[sub] + (int.from_bytes(part, "little") & mask).bit_count()
        return count

    def rank(self, pfn: int) -> int:
        """Set bits in ``[lo, pfn)``: the index of ``pfn``'s descriptor when its bit is set."""
        return self._raw_rank(min(max(pfn, self.lo), self.hi)) - self._base

    def rank_if_set(self, pfn: int) -> int | None:
        """:meth:`rank` of ``pfn`` when its bit is set, else None (one block lookup)."""
        if not self.lo <= pfn < self.hi:
            return None
        assert self._counts is not None
        block, bit = divmod(pfn, BLOCK_BITS)
        data, subs = self._block(block)
        if not data[bit >> 3] >> (bit & 7) & 1:
            return None
        sub = bit // (SUB * 8)
        part = int.from_bytes(data[sub * SUB : (bit >> 3) + 1], "little")
        part &= (1 << (bit - sub * SUB * 8)) - 1
        return self._counts.before(block) + subs[sub] + part.bit_count() - self._base

    def bits(self, pfn: int, count: int) -> int:
        """Bits ``pfn .. pfn+count-1`` as an int (bit ``i`` = frame ``pfn + i``)."""
        lo, hi = max(pfn, self.lo), min(pfn + count, self.hi)
        if lo >= hi:
            return 0
        first, last = lo // 8, (hi + 7) // 8
        if first // BLOCK == (last - 1) // BLOCK:  # within one block: from the kept blocks
            data = self._block(first // BLOCK)[0]
            base = first // BLOCK * BLOCK
            raw = data[first - base : last - base]
        else:
            raw = self._read(first, last)
        value = int.from_bytes(raw, "little") >> (lo - first * 8)
        value &= (1 << (hi - lo)) - 1
        return value << (lo - pfn)

    def test(self, pfn: int) -> bool:
        return bool(self.bits(pfn, 1))

    # -- scanning ------------------------------------------------------------------------
    def next_set(self, pfn: int, limit: int) -> int:
        """The first set bit in ``[pfn, limit)``, or ``limit`` when there is none.

        With the index, a clear piece is skipped in one step and a set one answers at once."""
        pos, limit = max(pfn, self.lo), min(limit, self.hi)
        counts = self._counts
        while pos < limit:  # bounded: each pass moves past a piece or a block
            block = pos // BLOCK_BITS
            block_end = min(limit, (block + 1) * BLOCK_BITS)
            if counts is not None:
                i = counts.piece(block)
                slope = counts.slopes[i]
                if slope == 0:  # a clear piece: skip all of it
                    pos = min(limit, counts.piece_end(i) * BLOCK_BITS)
                    continue
                if slope == BLOCK_BITS:
                    return pos
                if counts.before(block + 1) == counts.before(block):
                    pos = block_end  # an empty block: skip it without reading
                    continue
            value = self.bits(pos, block_end - pos)
            if value:
                return pos + (value & -value).bit_length() - 1
            pos = block_end
        return max(limit, pfn)

    def next_clear(self, pfn: int, limit: int) -> int:
        """The first clear bit in ``[pfn, limit)`` (bits outside ``[lo, hi)`` are clear), or
        ``limit`` when there is none: where a run of dumped frames ends (``SEEK_HOLE``).

        With the index, a set piece or block is skipped in one step, without reading it."""
        pos, hi = max(pfn, 0), min(limit, self.hi)
        if pos < self.lo:
            return min(pos, limit)
        counts = self._counts
        while pos < hi:  # bounded: each pass moves past a piece or a block, or returns
            block = pos // BLOCK_BITS
            block_end = min(hi, (block + 1) * BLOCK_BITS)
            if counts is not None:
                i = counts.piece(block)
                slope = counts.slopes[i]
                if slope == BLOCK_BITS:  # a set piece: skip all of it
                    pos = min(hi, counts.piece_end(i) * BLOCK_BITS)
                    continue
                if slope == 0:
                    return pos
                if counts.before(block + 1) - counts.before(block) == BLOCK_BITS:
                    pos = block_end  # a full block: skip it without reading
                    continue
            clear = ~self.bits(pos, block_end - pos) & ((1 << (block_end - pos)) - 1)
            if clear:
                return pos + (clear & -clear).bit_length() - 1
            pos = block_end
        return min(pos, limit)

    def runs(
        self,
        max_runs: int = 1 << 22,
        max_scan: int | None = None,
        *,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[tuple[int, int]]:
        """Maximal runs ``[a, b)`` of set bits inside ``[start, end)``, in order (at most
        ``max_runs``); lazy: the bitmap is read a chunk at a time as runs are taken.

        Reads what the file stores of those bits once (see :meth:`_flips`).
        ``max_scan``: raise :class:`ScanLimit` before reading more than that many bytes of
        stored bitmap."""
        lo = max(self.lo, start)
        hi = self.hi if end is None else min(self.hi, end)
        if lo >= hi:
            return
        flips = self._flips(lo // BLOCK_BITS, -(-hi // BLOCK_BITS), max_scan)
        emitted = 0
        for a in flips:
            b = next(flips)  # flips come in pairs: a run's start, then its end
            a, b = max(a, lo), min(b, hi)
            if a >= b:
                continue
            yield a, b
            emitted += 1
            if emitted >= max_runs:
                return

    def _flips(self, first: int, last: int, max_scan: int | None) -> Iterator[int]:
        """The frames of blocks ``[first, last)`` whose bit differs from the bit before them
        (the bit before ``first`` counts as clear), then the end of a run still open.

        Holes of the file, and chunks, blocks and 64-byte pieces that are all clear or all set,
        cost one comparison each; a piece with both has at least one flip, so mixed pieces
        cost no more than the flips they yield."""
        value = 0  # the last bit seen
        seen_end = first * BLOCK_BITS  # the frame after the last one seen
        scanned = 0
        for block, chunk in self._chunks(first, last):
            scanned += len(chunk)
            if max_scan is not None and scanned > max_scan:
                raise ScanLimit(
                    f"the page bitmap at offset {self.offset:#x} has {self.nbytes:,} bytes for "
                    f"{self.nbits:,} page frames: more than the {max_scan:,} read at most"
                )
            bit0 = block * BLOCK_BITS
            if value and bit0 > seen_end:  # a hole of the file since: clear bits
                yield seen_end
                value = 0
            n = len(chunk)
            seen_end = bit0 + n * 8
            if chunk == (_ZERO_CHUNK if n == SCAN_CHUNK else bytes(n)):
                if value:
                    yield bit0
                    value = 0
                continue
            if n == SCAN_CHUNK and chunk == _ONES_CHUNK:
                if not value:
                    yield bit0
                    value = 1
                continue
            for i in range(0, n, BLOCK):
                data = chunk[i : i + BLOCK]
                if data == _ZERO_BLOCK or data == _ONES_BLOCK:
                    if value != (data[0] & 1):
                        yield bit0 + i * 8
                        value ^= 1
                    continue
                for k in range(0, len(data), SUB):
                    sub = data[k : k + SUB]
                    if sub == (_ONES_SUB if value else _ZERO_SUB):
                        continue
                    width = len(sub) * 8
                    x = int.from_bytes(sub, "little")
                    flips = (x ^ ((x << 1) | value)) & ((1 << width) - 1)
                    base = bit0 + (i + k) * 8
                    while flips:  # bounded: one pass per flip
                        low = flips & -flips
                        yield base + low.bit_length() - 1
                        flips ^= low
                    value = x >> (width - 1) & 1
        if value:
            yield seen_end
