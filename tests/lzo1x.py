"""An LZO1X compressor for the tests, written from the format's description (the kernel's
``Documentation/staging/lzo.rst``), independent of the decompressor that vmcorefs uses.

Greedy matching on 3-byte prefixes. Every match is an M3 instruction (distance up to 16 KiB,
any length); a run of 1-3 literals rides in the previous instruction's state bits, a longer one
is a literal-run instruction; the stream ends with the M4 end marker ``11 00 00``, as
``lzo1x_1_compress`` (what makedumpfile calls) ends it. ``tests/test_lzo1x.py`` checks the
output with liblzo2 where python-lzo is installed.

Also the pieces to craft hostile streams (:func:`long_match`, :data:`END`).
"""

from __future__ import annotations

#: The end-of-stream marker: an M4 match of length 3 at distance 16384.
END = b"\x11\x00\x00"
M3_MAX_DISTANCE = 1 << 14
#: The longest literal run that the first byte can announce (17 + n <= 255).
FIRST_LITERALS_MAX = 238


def _extended(out: bytearray, extra: int) -> None:
    """A length beyond what the instruction's own bits hold: ``extra`` >= 1 as zero bytes
    (255 each) and a final non-zero byte."""
    zeros, rest = divmod(extra - 1, 255)
    out += bytes(zeros)
    out.append(rest + 1)


def long_match(length: int, distance: int, state: int = 0) -> bytes:
    """One M3 instruction: copy ``length`` (>= 3) bytes from ``distance`` (1..16384) back, then
    ``state`` (0..3) literals that the caller appends."""
    out = bytearray()
    if length <= 33:
        out.append(0x20 | (length - 2))
    else:
        out.append(0x20)
        _extended(out, length - 33)
    raw = (distance - 1) << 2 | state
    out += raw.to_bytes(2, "little")
    return bytes(out)


def _literals(out: bytearray, lit: bytes, state_at: int | None) -> None:
    """A literal run: at the start of the stream, after a match (``state_at``: the index of the
    byte that holds that match's state bits)."""
    n = len(lit)
    if not n:
        return
    if not out:  # the first byte announces 1..238 literals as 17 + n
        if n <= FIRST_LITERALS_MAX:
            out.append(17 + n)
        else:  # or it is a long literal run (an instruction 0..15 in state 0)
            out.append(0)
            _extended(out, n - 18)
    elif n <= 3:
        assert state_at is not None
        out[state_at] |= n
    elif n <= 18:
        out.append(n - 3)
    else:
        out.append(0)
        _extended(out, n - 18)
    out += lit


def compress(data: bytes) -> bytes:
    """``data`` as a bare LZO1X stream (no header: what makedumpfile stores for a page)."""
    out = bytearray()
    last: dict[bytes, int] = {}
    state_at: int | None = None
    n = len(data)
    pos = lit_start = 0
    while pos + 3 <= n:  # bounded: pos grows every pass
        key = data[pos : pos + 3]
        cand = last.get(key)
        last[key] = pos
        if cand is None or pos - cand > M3_MAX_DISTANCE:
            pos += 1
            continue
        length = 3
        while pos + length < n and data[cand + length] == data[pos + length]:
            length += 1
        _literals(out, data[lit_start:pos], state_at)
        out += long_match(length, pos - cand)
        state_at = len(out) - 2  # the low byte of the distance holds the state bits
        pos = lit_start = pos + length
    _literals(out, data[lit_start:], state_at)
    out += END
    return bytes(out)
