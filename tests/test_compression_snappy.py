"""The snappy page decoder: the length a raw block claims is checked before it is decoded."""

from __future__ import annotations

import pytest

from vmcorefs.dumpfile import compression
from vmcorefs.dumpfile.compression import _snappy_length, _varint

snappy = pytest.importorskip("snappy")
PAGE = 4096


def decoder():
    return compression.page_decoder(compression.DUMP_DH_COMPRESSED_SNAPPY, PAGE)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 4095, 4096, 16384, 1 << 21, (1 << 32) - 1])
def test_varint_is_what_the_length_parser_reads(value):
    assert _snappy_length(_varint(value)) == value
    assert _varint(value)[-1] < 0x80 and all(b >= 0x80 for b in _varint(value)[:-1])


def test_a_page_decodes_and_other_lengths_do_not():
    page = bytes(range(256)) * 16
    decode = decoder()
    assert decode(snappy.compress(page)) == page
    assert decode(snappy.compress(page[:-1])) is None  # claims 4095 bytes
    assert decode(snappy.compress(page + b"x")) is None  # claims 4097 bytes
    # The same length written with a redundant continuation byte: parsed, not trusted blindly.
    body = snappy.compress(page)[len(_varint(PAGE)) :]
    assert decode(b"\x80\xa0\x00" + body) in (page, None)
