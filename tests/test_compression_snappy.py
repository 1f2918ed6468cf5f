"""The snappy page decoders: the length a raw block claims is checked before it is decoded,
and a page decoded into a buffer is exactly the page or refused."""

from __future__ import annotations

import threading

import pytest

from vmcorefs.dumpfile import compression
from vmcorefs.dumpfile.compression import _snappy_length, _varint

cramjam = pytest.importorskip("cramjam")
PAGE = 4096
SNAPPY = compression.DUMP_DH_COMPRESSED_SNAPPY


def compress(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def decode(data: bytes) -> bytes | None:
    return compression.page_decoder(SNAPPY, PAGE)(data)


def decode_into(data: bytes) -> bytes | None:
    """Through the decoder that writes into the reader's buffer (a slice of a larger one)."""
    buffer = bytearray(b"\xee" * (3 * PAGE))
    ok = compression.page_decoder_into(SNAPPY, PAGE)(data, memoryview(buffer)[PAGE : 2 * PAGE])
    assert buffer[:PAGE] == buffer[2 * PAGE :] == b"\xee" * PAGE  # nothing outside its page
    return bytes(buffer[PAGE : 2 * PAGE]) if ok else None


@pytest.mark.parametrize("value", [0, 1, 127, 128, 4095, 4096, 16384, 1 << 21, (1 << 32) - 1])
def test_varint_is_what_the_length_parser_reads(value):
    assert _snappy_length(_varint(value)) == value
    assert _varint(value)[-1] < 0x80 and all(b >= 0x80 for b in _varint(value)[:-1])


@pytest.mark.parametrize("decoder", [decode, decode_into])
def test_a_page_decodes_and_other_lengths_do_not(decoder):
    page = bytes(range(256)) * 16
    assert decoder(compress(page)) == page
    assert decoder(compress(page[:-1])) is None  # claims 4095 bytes
    assert decoder(compress(page + b"x")) is None  # claims 4097 bytes
    assert decoder(compress(page)[:-3]) is None  # cut short
    assert decoder(b"") is None
    # The same length written with a redundant continuation byte: parsed, not trusted blindly.
    body = compress(page)[len(_varint(PAGE)) :]
    assert decoder(b"\x80\xa0\x00" + body) in (page, None)


def test_pages_decoded_one_after_another_stay_what_they_were():
    """The decoder reuses one buffer a thread: each page it returns is a copy of its own."""
    pages = [bytes([i]) * 100 + bytes(range(256)) * 15 + bytes(PAGE - 100 - 3840) for i in range(8)]
    decoded = [decode(compress(p)) for p in pages]
    assert decoded == pages
    assert decode(b"\x80\x20garbage") is None and decoded == pages


def test_threads_decode_their_own_pages():
    pages = [(bytes([i]) * 64 + bytes(range(64))) * 32 for i in range(16)]
    stored = [compress(p) for p in pages]
    decoder = compression.page_decoder(SNAPPY, PAGE)
    bad: list[int] = []

    def work(k: int) -> None:
        for _ in range(300):
            for i in range(k, 16, 4):
                if decoder(stored[i]) != pages[i]:
                    bad.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
