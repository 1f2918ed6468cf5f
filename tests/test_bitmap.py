"""dumpfile/bitmap.py against a model: ranks, bits, next set bit and runs, over index blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmcorefs.dumpfile.bitmap import BLOCK, BLOCK_BITS, Bitmap


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

    def data_runs(self, start: int, end: int):
        """As a sparse file: the 4 KiB blocks of zeros are holes."""
        run = None
        for b in range(start // 4096 * 4096, min(end, self.size), 4096):
            if self.data[b : b + 4096].count(0) != len(self.data[b : b + 4096]):
                s, e = max(b, start), min(end, b + 4096)
                if run and run[1] == s:
                    run[1] = e
                else:
                    if run:
                        yield tuple(run)
                    run = [s, e]
        if run:
            yield tuple(run)

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
        assert bm.rank_if_set(p) == (bm.rank(p) if p in inside else None)
        n = 300
        expect = sum(1 << i for i in range(n) if p + i in inside)
        assert bm.bits(p, n) == expect
        following = [b for b in inside if b >= p]
        assert bm.next_set(p, NBITS) == (following[0] if following else max(hi, p))
        clear = [b for b in range(p, NBITS) if b not in inside]
        assert bm.next_clear(p, NBITS) == (clear[0] if clear else NBITS)
    runs = []
    for b in inside:
        if runs and runs[-1][1] == b:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    assert [list(r) for r in bm.runs()] == runs


BLOCKS = 60
KINDS = st.sampled_from(["zero", "ones", "mixed", "sparse", "edge"])


def _block_bytes(kind: str, seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    if kind == "zero":
        return bytes(BLOCK)
    if kind == "ones":
        return b"\xff" * BLOCK
    if kind == "mixed":
        return bytes(rng.randrange(256) for _ in range(BLOCK))
    if kind == "sparse":  # a few set bits in clear bytes
        raw = bytearray(BLOCK)
        for _ in range(rng.randrange(1, 5)):
            raw[rng.randrange(BLOCK)] |= 1 << rng.randrange(8)
        return bytes(raw)
    cut = rng.randrange(1, BLOCK * 8)  # set up to a bit, clear after
    return ((1 << cut) - 1).to_bytes(BLOCK, "little")


@settings(max_examples=40, deadline=None)
@given(
    kinds=st.lists(st.tuples(KINDS, st.integers(1, 20)), min_size=1, max_size=6).map(
        lambda runs: [kind for kind, n in runs for _ in range(n)][:BLOCKS] or ["mixed"]
    ),
    tail=st.integers(0, BLOCK_BITS - 1),
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    probes=st.lists(st.floats(0, 1), min_size=1, max_size=12),
)
def test_uniform_and_mixed_blocks_agree_with_a_model(kinds, tail, bounds, probes):
    """Runs of all-clear and all-set blocks (one piece of the index each, holes of the file
    for the clear ones) between mixed blocks: ranks, next set bit and runs as a model says."""
    import re

    raw = b"".join(_block_bytes(kind, i) for i, kind in enumerate(kinds))
    nbits = len(raw) * 8 - tail  # the last block short of bits (clear past nbits)
    value = int.from_bytes(raw, "little") & ((1 << nbits) - 1)
    lo, hi = sorted(int(b * nbits) for b in bounds)
    hi = max(hi, lo + 1) if lo < nbits else nbits
    inside = value & ((1 << hi) - 1) & ~((1 << lo) - 1)
    bm = Bitmap(BytesFile(b"y" * 4096 + raw), 4096, nbits, lo=lo, hi=hi, indexed=True)
    assert bm.total == inside.bit_count()
    for f in probes:
        p = min(nbits - 1, int(f * nbits))
        assert bm.rank(p) == (inside & ((1 << p) - 1)).bit_count()
        assert bm.rank_if_set(p) == (bm.rank(p) if inside >> p & 1 else None)
        above = inside >> p
        expect = p + (above & -above).bit_length() - 1 if above else max(hi, p)
        assert bm.next_set(p, nbits) == expect
        gaps = ~inside >> p & ((1 << (nbits - p)) - 1) if p < nbits else 0
        assert bm.next_clear(p, nbits) == (p + (gaps & -gaps).bit_length() - 1 if gaps else nbits)
    bits = format(inside, "b")[::-1] if inside else ""
    runs = [(m.start(), m.end()) for m in re.finditer("1+", bits)]
    assert list(bm.runs()) == runs
    assert list(bm.runs(max_runs=2)) == runs[:2]
