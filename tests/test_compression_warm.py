"""Each codec's binding is warmed once, when it loads (at open), with the codec's empty stream."""

from __future__ import annotations

import dataclasses
import zlib

import cramjam
import lzallright
import pytest
import zstandard

from vmcorefs.dumpfile import compression

#: Each codec's empty stream, as the library's own compressor writes it for b"".
ENCODERS = {
    compression.DUMP_DH_COMPRESSED_ZLIB: ("_ZLIB_EMPTY", lambda: zlib.compress(b"")),
    compression.DUMP_DH_COMPRESSED_LZO: (
        "_LZO_EMPTY",
        lambda: lzallright.LZOCompressor().compress(b""),
    ),
    compression.DUMP_DH_COMPRESSED_SNAPPY: (
        "_SNAPPY_EMPTY",
        lambda: bytes(cramjam.snappy.compress_raw(b"")),
    ),
    compression.DUMP_DH_COMPRESSED_ZSTD: (
        "_ZSTD_EMPTY",
        lambda: zstandard.ZstdCompressor().compress(b""),
    ),
}


@pytest.mark.parametrize("bit", sorted(compression.CODECS))
def test_warm_decodes_the_codecs_empty_stream(bit):
    """``warm`` decodes to b"" (an error, which the open would swallow, would have warmed
    nothing), from the stream the codec's compressor writes for b"" (not a guess)."""
    name, encode = ENCODERS[bit]
    assert getattr(compression, name) == encode()
    warm = compression.CODECS[bit].load().warm
    assert warm is not None
    assert bytes(warm()) == b""  # type: ignore[call-overload]


def test_require_warms_a_binding_once(monkeypatch):
    bit = compression.DUMP_DH_COMPRESSED_ZLIB
    codec = compression.CODECS[bit]
    calls: list[int] = []

    def load() -> compression.Binding:
        return dataclasses.replace(codec.load(), warm=lambda: calls.append(1))

    monkeypatch.setitem(compression.CODECS, bit, dataclasses.replace(codec, load=load))
    monkeypatch.setattr(compression, "_bindings", {})
    compression.require(bit)
    compression.require(bit)
    assert calls == [1]
