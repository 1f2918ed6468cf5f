"""dumpfile/bitmap.py against a model: ranks, bits, next set bit and runs, over index blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmcorefs.dumpfile.bitmap import BLOCK_BITS, Bitmap


class BytesFile:
    """A ReadableFile over bytes, with the bitmap at an offset."""

    path = "mem"

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def pread(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]

    def pread_exact(self, offset: int, size: int, what: str = "data") -> bytes:
        assert offset + size <= self.size, what
        return self.pread(offset, size)

    def close(self) -> None:
        pass


NBITS = 2 * BLOCK_BITS + 777


def make(bits: set[int], lo: int, hi: int) -> Bitmap:
    raw = bytearray((NBITS + 7) // 8)
    for b in bits:
        raw[b // 8] |= 1 << (b % 8)
    return Bitmap(BytesFile(b"x" * 100 + bytes(raw)), 100, NBITS, lo=lo, hi=hi, indexed=True)


positions = st.integers(0, NBITS - 1)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sets(positions, max_size=200) | st.builds(lambda a: set(range(a, a + 5000)), positions),
    bounds=st.tuples(positions, positions),
    probes=st.lists(positions, min_size=1, max_size=20),
)
def test_bitmap_agrees_with_a_model(bits, bounds, probes):
    lo, hi = min(bounds), max(bounds) + 1
    bits = {b for b in bits if b < NBITS}
    inside = sorted(b for b in bits if lo <= b < hi)
    bm = make(bits, lo, hi)
    assert bm.total == len(inside)
    for p in probes:
        assert bm.rank(p) == sum(1 for b in inside if b < p)
        assert bm.test(p) == (p in inside)
        n = 300
        expect = sum(1 << i for i in range(n) if p + i in inside)
        assert bm.bits(p, n) == expect
        following = [b for b in inside if b >= p]
        assert bm.next_set(p, NBITS) == (following[0] if following else max(hi, p))
    runs = []
    for b in inside:
        if runs and runs[-1][1] == b:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    assert [list(r) for r in bm.runs()] == runs
