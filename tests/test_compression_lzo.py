"""LZO pages (``DUMP_DH_COMPRESSED_LZO``) through lzallright: real makedumpfile pages, exactly
one page out, and hostile streams (an expansion to 1 MiB, an over-read past the input)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import lzo1x
from kdumpwriter import pattern_page

from vmcorefs.dumpfile import compression
from vmcorefs.dumpfile.compression import DUMP_DH_COMPRESSED_LZO as LZO

PAGE = 4096
REAL = Path(__file__).parent / "data" / "lzo1x_1.json"
REPO = Path(__file__).parent.parent


def real_pages() -> list[tuple[bytes, str]]:
    doc = json.loads(REAL.read_text())
    assert doc["page_size"] == PAGE
    return [(base64.b64decode(p["stream"]), p["sha256"]) for p in doc["pages"]]


def expanding_stream(size: int) -> bytes:
    """``size`` bytes of LZO that decode to about 255 times as much: one literal, then one
    match of the longest length that fits, copying it from one byte back."""
    head, tail = b"\x12A", lzo1x.END  # 1 literal; the end marker
    zeros = size - len(head) - len(tail) - 1 - 1 - 2  # opcode, last length byte, distance
    length = 33 + 255 * zeros + 255
    stream = head + lzo1x.long_match(length, 1) + tail
    assert len(stream) == size
    return stream


def sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def test_makedumpfile_pages_decode_to_the_zlib_dumps_bytes():
    """liblzo2's lzo1x_1 output, as makedumpfile stored it, against the same frames read
    from a zlib dump of the same memory."""
    decode = compression.page_decoder(LZO, PAGE)
    pages = real_pages()
    assert len(pages) == 16
    for stream, digest in pages:
        assert sha(decode(stream)) == digest
        assert sha(compression.decompress(LZO, stream, PAGE)) == digest


def test_the_tests_own_lzo_decodes():
    decode = compression.page_decoder(LZO, PAGE)
    for pfn in range(40):
        page = pattern_page(pfn)
        assert decode(lzo1x.compress(page)) == page


def test_the_output_must_be_exactly_one_page():
    decode = compression.page_decoder(LZO, PAGE)
    page = pattern_page(7)
    assert decode(lzo1x.compress(page[:-1])) is None  # one byte short
    assert decode(lzo1x.compress(page + b"x")) is None  # one byte more
    assert decode(lzo1x.compress(page * 2)) is None
    for bad in (
        lzo1x.compress(page) + b"\x00",  # input left over after the end marker
        lzo1x.compress(page)[:-1],  # cut short
        lzo1x.compress(page)[:-3],  # no end marker
        b"\x00" * 50,
        b"",
    ):
        assert decode(bad) is None  # the codec's own error means bad data, as for zlib's
        assert compression.decompress(LZO, bad, PAGE) is None
        assert compression.diagnose(LZO, bad, PAGE)  # and the reason is said


def test_an_expanding_page_is_refused_within_a_bounded_buffer():
    """A stored page (at most one page) that decodes to ~1 MiB: lzallright grows its buffer
    to fit, never past what the format allows for the input (255 per byte), and the page is
    refused; a longer input is refused before it is decoded."""
    decode = compression.page_decoder(LZO, PAGE)
    bomb = expanding_stream(PAGE)
    tracemalloc.start()
    try:
        assert decode(bomb) is None
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        for size in (PAGE + 1, 64 << 10):  # would decode to 1 MiB, 16 MiB
            assert decode(expanding_stream(size)) is None
            assert compression.decompress(LZO, expanding_stream(size), PAGE) is None
        refused_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= (2 << 20) + (64 << 10)  # the doubling buffer: 2 MiB at most
    assert refused_peak <= 4 * (64 << 10)  # the streams themselves, no output buffer
    # The same stream one page long but capped below a page decodes: the refusal is the length.
    small = b"\x12A" + lzo1x.long_match(PAGE - 1, 1) + lzo1x.END
    assert decode(small) == b"A" * PAGE


def test_which_lzallright_versions_need_the_over_read_guard():
    assert compression.lzallright_overreads("0.2.6")
    assert compression.lzallright_overreads("0.1.0")
    assert not compression.lzallright_overreads("0.3.0")
    assert not compression.lzallright_overreads("1.2.3")
    assert compression.lzallright_overreads("unknown")


def test_the_guarded_decoder_decodes_the_same(monkeypatch):
    """The path for lzallright < 0.3 (Python 3.10) copies the input before decoding it."""
    monkeypatch.setattr(compression, "lzallright_overreads", lambda version: True)
    decode = compression._make_lzo()
    for stream, digest in real_pages():
        assert sha(decode(stream, PAGE)) == digest
        assert sha(decode(memoryview(stream), PAGE)) == digest
    assert decode(expanding_stream(PAGE), PAGE) is None


OVER_READ = textwrap.dedent(
    """
    import ctypes, mmap, sys
    from vmcorefs.dumpfile import compression

    PAGE = 4096
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    area = mmap.mmap(-1, 2 * PAGE)
    start = ctypes.addressof(ctypes.c_char.from_buffer(area))
    assert libc.mprotect(start + PAGE, PAGE, 0) == 0  # the page after the input: no access
    # All zeros: an instruction 0 asks for a long literal run whose length bytes run to the
    # end of the input and on. A decoder that reads past the input faults here.
    stream = memoryview(area)[PAGE - 64 : PAGE]
    decode = compression.page_decoder(compression.DUMP_DH_COMPRESSED_LZO, PAGE)
    if decode(stream) is None:
        print("refused: not one page")
    """
)


def test_no_read_past_the_end_of_the_input():
    """lzallright 0.2.6 (C++ lzokay) reads on past the input in a run of zero bytes; the input
    here ends where an inaccessible page starts, so an over-read is a crash."""
    run = subprocess.run(
        [sys.executable, "-c", OVER_READ], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert run.stdout.startswith("refused:")
