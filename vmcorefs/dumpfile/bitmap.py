"""Page bitmaps of kdump files, read in place, with a running-count index for ranks.

A kdump stores one page descriptor per dumped page frame, in pfn order: the descriptor of frame
``pfn`` is the ``rank``-th, where ``rank`` is the number of set bits before ``pfn`` in the 2nd
bitmap. The bitmap stays in the file; the index keeps one count per 4096-byte block of bitmap
(32768 frames, 128 MiB of RAM at 4 KiB pages): 8 bytes per block, 64 KiB for 1 TiB of RAM.
The blocks last used are kept (with a count every 64 bytes), so a rank costs one index lookup
and one popcount of at most 64 bytes; a block is read with one ``pread`` when it is not kept.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator

from ..errors import check_stop
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
_ZERO_CHUNK = bytes(SCAN_CHUNK)
_ZERO_BLOCK = bytes(BLOCK)
_RUN_OR_MIXED = re.compile(rb"\xff+|[^\x00\xff]")


class Bitmap:
    """Bits ``[lo, hi)`` of a bitmap stored at ``offset`` in ``file`` (bit ``i`` of byte ``j`` is
    frame ``8*j + i``, as makedumpfile writes it); bits outside ``[lo, hi)`` count as clear.

    ``indexed`` builds the running counts (one sequential read of the bitmap) for :meth:`rank`.
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
        self._counts: array | None = None
        self.total = 0
        self._kept: OrderedDict[int, tuple[bytes, array]] = OrderedDict()
        self._kept_lock = threading.Lock()
        if indexed:
            self._build_index()

    # -- reading -------------------------------------------------------------------------
    def _read(self, start: int, end: int) -> bytes:
        """Bitmap bytes ``[start, end)`` (the file was checked to hold the whole bitmap)."""
        return self.file.pread_exact(self.offset + start, end - start, "the page bitmap")

    def _build_index(self) -> None:
        """counts[b] = set bits in ``[0, b * BLOCK_BITS)``, read block by block."""
        nblocks = (self.nbytes + BLOCK - 1) // BLOCK
        counts = array("Q", bytes(8 * (nblocks + 1)))
        total = 0
        for chunk_start in range(0, self.nbytes, SCAN_CHUNK):
            check_stop()
            chunk = self._read(chunk_start, min(self.nbytes, chunk_start + SCAN_CHUNK))
            block0 = chunk_start // BLOCK
            zero = _ZERO_CHUNK if len(chunk) == SCAN_CHUNK else bytes(len(chunk))
            if chunk == zero:  # all clear (sparse dumps): memcmp, no popcounts
                for b in range(block0 + 1, block0 + 1 + (len(chunk) + BLOCK - 1) // BLOCK):
                    counts[b] = total
                continue
            for i in range(0, len(chunk), BLOCK):
                block = chunk[i : i + BLOCK]
                if block != _ZERO_BLOCK:
                    total += int.from_bytes(block, "little").bit_count()
                counts[block0 + i // BLOCK + 1] = total
        self._counts = counts
        self._base = self._raw_rank(self.lo)
        self.total = self._raw_rank(self.hi) - self._base

    def _block(self, block: int) -> tuple[bytes, array]:
        """Block ``block`` of the bitmap (zero-padded to BLOCK bytes) and its running counts
        every SUB bytes, from the kept blocks or read once."""
        with self._kept_lock:
            kept = self._kept.get(block)
            if kept is not None:
                self._kept.move_to_end(block)
                return kept
        start = block * BLOCK
        data = self._read(start, min(self.nbytes, start + BLOCK)).ljust(BLOCK, b"\0")
        subs = array("H", bytes(2 * (BLOCK // SUB)))  # at most 32768: fits 16 bits
        total = 0
        if data != _ZERO_BLOCK:
            for k in range(BLOCK // SUB):
                subs[k] = total
                total += int.from_bytes(data[k * SUB : (k + 1) * SUB], "little").bit_count()
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
        count = self._counts[block]
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
        return self._counts[block] + subs[sub] + part.bit_count() - self._base

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
        """The first set bit in ``[pfn, limit)``, or ``limit`` when there is none."""
        pos, limit = max(pfn, self.lo), min(limit, self.hi)
        counts = self._counts
        while pos < limit:
            block = pos // BLOCK_BITS
            block_end = min(limit, (block + 1) * BLOCK_BITS)
            if counts is not None and counts[block + 1] == counts[block]:
                pos = block_end  # an empty block: skip it without reading
                continue
            value = self.bits(pos, block_end - pos)
            if value:
                return pos + (value & -value).bit_length() - 1
            pos = block_end
        return max(limit, pfn)

    def runs(self, max_runs: int = 1 << 22) -> Iterator[tuple[int, int]]:
        """Maximal runs ``[start, end)`` of set bits, in order (at most ``max_runs``)."""
        run_start = run_end = -1
        emitted = 0
        first, last = self.lo // 8, (self.hi + 7) // 8
        for chunk_start in range(first, last, SCAN_CHUNK):
            check_stop()
            chunk = self._read(chunk_start, min(last, chunk_start + SCAN_CHUNK))
            base = chunk_start * 8
            for m in _RUN_OR_MIXED.finditer(chunk):
                if m.end() - m.start() > 1 or chunk[m.start()] == 0xFF:
                    pieces = [(base + m.start() * 8, base + m.end() * 8)]
                else:
                    byte, bit0 = chunk[m.start()], base + m.start() * 8
                    pieces = [(bit0 + i, bit0 + i + 1) for i in range(8) if byte >> i & 1]
                for start, end in pieces:
                    start, end = max(start, self.lo), min(end, self.hi)
                    if start >= end:
                        continue
                    if start == run_end:
                        run_end = end
                        continue
                    if run_end > run_start >= 0:
                        yield run_start, run_end
                        emitted += 1
                        if emitted >= max_runs:
                            return
                    run_start, run_end = start, end
        if run_end > run_start >= 0:
            yield run_start, run_end
