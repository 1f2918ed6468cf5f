"""The tests' own LZO1X compressor (tests/lzo1x.py) against liblzo2, where python-lzo is
installed: what makedumpfile's lzo pages are decoded with elsewhere (crash, drgn)."""

from __future__ import annotations

import random

import lzo1x
import pytest
from kdumpwriter import pattern_page

PAGE = 4096


def inputs() -> list[bytes]:
    rng = random.Random(11)
    out = [b"", b"a", b"ab", b"abc", bytes(PAGE), rng.randbytes(PAGE), b"abc" * 1365 + b"x"]
    out += [rng.randbytes(n) for n in (238, 239, 240, 300)]  # the first byte's literal limit
    out += [b"x" * 300 + rng.randbytes(n) for n in (1, 2, 3, 4, 18, 19, 600)]  # tails
    out += [rng.randbytes(100) + bytes(PAGE - 100), bytes(range(256)) * 16]
    out += [pattern_page(p) for p in range(0, 300, 7)]
    for _ in range(100):  # runs, noise and repeats mixed
        parts: list[bytes] = []
        while sum(map(len, parts)) < PAGE:
            k, kind = rng.randrange(1, 700), rng.random()
            if kind < 0.3:
                parts.append(bytes([rng.randrange(3)]) * k)
            elif kind < 0.6 or not parts:
                parts.append(rng.randbytes(k))
            else:
                parts.append(parts[rng.randrange(len(parts))][:k])
        out.append(b"".join(parts)[:PAGE])
    return out


def test_liblzo2_decodes_what_the_test_compressor_writes():
    lzo = pytest.importorskip("lzo", reason="python-lzo (liblzo2) is not installed")
    for data in inputs():
        stream = lzo1x.compress(data)
        assert lzo.decompress(stream, False, max(len(data), 1)) == data, data[:16].hex()
        if len(data) == PAGE and len(set(data)) < 200:
            assert len(stream) < PAGE  # it compresses: kdumpwriter stores such pages compressed


def test_long_match_encodes_its_length_and_distance():
    lzo = pytest.importorskip("lzo", reason="python-lzo (liblzo2) is not installed")
    for length in (3, 33, 34, 288, 289, 4000):
        stream = b"\x12A" + lzo1x.long_match(length, 1) + lzo1x.END
        assert lzo.decompress(stream, False, length + 1) == b"A" * (length + 1)
