"""Page decompression for kdump-compressed dumps: zlib, lzo, snappy, zstd.

Each page is compressed on its own (makedumpfile ``write_kdump_pages``, QEMU ``dump.c``), and
stored raw when compressing would not make it smaller. A page that does not decompress to
exactly one page is corrupt: it reads as absent, never as a guess. The output is bounded
whatever the stream claims, so a corrupt (or hostile) page cannot exhaust memory: capped at one
page for zlib, snappy and zstd; for lzo the stored page is at most one page, which LZO's
format lets expand to about 1 MiB before the length check refuses it (see ``_make_lzo``).

Which bindings release the GIL (measured, 4 KiB pages, 2 threads on an idle machine): zlib
(CPython's module; isal's, used when installed, releases it around inflate too) and zstandard
(one decompressor per thread: a ``ZstdDecompressor`` is not thread-safe) scale; cramjam's
snappy releases it too but a 4 KiB page takes so little time (3-4 µs) that two threads gain
nothing. lzallright releases it (1.43x on 2 threads at best); its pages take 4-5 µs, yet
decoded in the pool, with read ahead, sequential 1 MiB reads through FUSE gained 3-15%
(medians of per-round ratios, 25 interleaved rounds, on a busy 2-CPU machine).

LZO is decoded by lzallright (wheels for every CPython and Linux we support; python-lzo has
none and builds with a compiler and liblzo2's headers). It decodes makedumpfile's lzo1x_1
pages exactly as liblzo2 does (every page of a real dump, and a million mutated ones, compared:
the only difference is that it refuses an end marker other than ``11 00 00``, which no encoder
writes).
"""

from __future__ import annotations

import importlib.metadata
import re
import threading
import zlib
from collections.abc import Callable

from ..errors import DumpError

# makedumpfile diskdump_mod.h: page_desc.flags and disk_dump_header.status
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8  #: header status only: the dump was cut short
DUMP_DH_EXCLUDED_VMEMMAP = 0x10  #: header status only
DUMP_DH_COMPRESSED_ZSTD = 0x20
DUMP_DH_COMPRESSED = (
    DUMP_DH_COMPRESSED_ZLIB
    | DUMP_DH_COMPRESSED_LZO
    | DUMP_DH_COMPRESSED_SNAPPY
    | DUMP_DH_COMPRESSED_ZSTD
)

NAMES = {
    DUMP_DH_COMPRESSED_ZLIB: "zlib",
    DUMP_DH_COMPRESSED_LZO: "lzo",
    DUMP_DH_COMPRESSED_SNAPPY: "snappy",
    DUMP_DH_COMPRESSED_ZSTD: "zstd",
}
#: Codecs whose pages decompress in parallel in threads (see the module docstring).
PARALLEL = frozenset({DUMP_DH_COMPRESSED_ZLIB, DUMP_DH_COMPRESSED_ZSTD, DUMP_DH_COMPRESSED_LZO})
_PACKAGES = {
    DUMP_DH_COMPRESSED_LZO: "lzallright",
    DUMP_DH_COMPRESSED_SNAPPY: "python-snappy",
    DUMP_DH_COMPRESSED_ZSTD: "zstandard",
}

Decoder = Callable[[bytes, int], "bytes | None"]


def compression_name(flags: int) -> str:
    """ "zlib", "lzo", ... for the compression bits of ``flags``; "none"; "mixed" for several."""
    found = [name for bit, name in NAMES.items() if flags & bit]
    if not found:
        return "none"
    return found[0] if len(found) == 1 else "mixed"


try:  # ISA-L inflates the same zlib streams about 1.6 times faster, checksum checked alike
    from isal import isal_zlib as inflate_module
except ImportError:  # pragma: no cover - isal is a dependency; the standard module still works
    inflate_module = zlib

#: What each codec raises on bad input (filled as the codecs are loaded): a decoder catches
#: exactly these, so that a bug is never taken for a corrupt page.
CODEC_ERRORS: dict[int, tuple[type[BaseException], ...]] = {
    DUMP_DH_COMPRESSED_ZLIB: (zlib.error, getattr(inflate_module, "error", zlib.error)),
}


def _zlib(data: bytes, page_size: int) -> bytes | None:
    d = inflate_module.decompressobj()
    out = d.decompress(data, page_size)
    # eof: the stream ended with its checksum verified, within the one-page cap.
    return out if len(out) == page_size and d.eof else None


def lzallright_overreads(version: str) -> bool:
    """Whether lzallright ``version`` reads past the end of its input: before 0.3 (the last
    releases for Python 3.10) it decodes with C++ lzokay, whose loop over a run of zero length
    bytes stops only at a non-zero byte, wherever that lies (a crafted page crashed it)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return not found or (int(found[1]), int(found[2])) < (0, 3)


def _lzallright() -> Callable[[bytes, int], bytes]:
    """lzallright's decompression of one stored page, its over-read guarded against; raises
    LZOError on bad data. Unbounded output: callers bound the input to one page first."""
    from lzallright import LZOCompressor, LZOError

    lzo_decompress = LZOCompressor.decompress
    try:
        guard = lzallright_overreads(importlib.metadata.version("lzallright"))
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed unusually
        guard = True
    CODEC_ERRORS[DUMP_DH_COMPRESSED_LZO] = (LZOError,)

    def decompress(data: bytes, size_hint: int) -> bytes:
        if guard:  # a non-zero byte just past the input stops lzallright < 0.3's over-read
            data = memoryview(bytes(data) + b"\x01")[:-1]  # type: ignore[assignment]
        return lzo_decompress(data, size_hint)

    return decompress


def _make_lzo() -> Decoder:
    lzo_decompress = _lzallright()

    def decode(data: bytes, page_size: int) -> bytes | None:
        # makedumpfile stores bare lzo1x_1 output, and only when it is smaller than the page.
        # lzallright has no output cap: from the size hint it doubles its buffer until the
        # stream ends. LZO's lengths grow by 255 a zero byte, so a stream of at most one page
        # decodes to at most ~1 MiB (a 2 MiB buffer, ~6 ms): a longer input is refused.
        if len(data) > page_size:
            return None
        out = lzo_decompress(data, page_size)
        return out if len(out) == page_size else None

    return decode


def _make_snappy() -> Decoder:
    import snappy

    CODEC_ERRORS[DUMP_DH_COMPRESSED_SNAPPY] = (snappy.UncompressError,)

    def decode(data: bytes, page_size: int) -> bytes | None:
        # Raw snappy starts with the uncompressed length (a varint): check it before the library
        # allocates that much.
        if _snappy_length(data) != page_size:
            return None
        out = snappy.uncompress(data)
        return out if len(out) == page_size else None

    return decode


def _make_zstd() -> Decoder:
    import zstandard

    CODEC_ERRORS[DUMP_DH_COMPRESSED_ZSTD] = (zstandard.ZstdError,)

    local = threading.local()

    def decode(data: bytes, page_size: int) -> bytes | None:
        dctx = getattr(local, "dctx", None)
        if dctx is None:  # one per thread: a ZstdDecompressor is not thread-safe
            dctx = local.dctx = zstandard.ZstdDecompressor()
        # A frame that records its content size is decompressed to that size whatever
        # max_output_size says: check it first (-1: not recorded, then the cap holds).
        size = zstandard.frame_content_size(data)
        if size not in (-1, page_size):
            return None
        out = dctx.decompress(data, max_output_size=page_size)
        return out if len(out) == page_size else None

    return decode


_FACTORIES: dict[int, Callable[[], Decoder]] = {
    DUMP_DH_COMPRESSED_LZO: _make_lzo,
    DUMP_DH_COMPRESSED_SNAPPY: _make_snappy,
    DUMP_DH_COMPRESSED_ZSTD: _make_zstd,
}
_decoders: dict[int, Decoder] = {DUMP_DH_COMPRESSED_ZLIB: _zlib}
_lock = threading.Lock()


def decoder(bit: int, path: str = "dump") -> Decoder:
    """The decoder for one compression bit; DumpError naming the package when it is missing."""
    found = _decoders.get(bit)
    if found is not None:
        return found
    with _lock:
        if bit not in _decoders:
            try:
                _decoders[bit] = _FACTORIES[bit]()
            except ImportError:
                raise DumpError(
                    path,
                    f"{NAMES[bit]}-compressed pages need the Python package {_PACKAGES[bit]}",
                ) from None
        return _decoders[bit]


def page_decoder(flags: int, page_size: int) -> Callable[[bytes], bytes | None]:
    """A one-argument decoder for pages stored with ``flags`` (resolved once, called per page):
    the page, or None when the stored bytes are not exactly one page (:func:`diagnose` then
    says why). Only the codec's own errors mean bad data; anything else propagates (a bug).
    The hot codecs get a closure of their own: one Python frame per page, not two."""
    bits = flags & DUMP_DH_COMPRESSED
    if not bits:
        return lambda data: bytes(data) if len(data) == page_size else None
    if bits & (bits - 1):  # more than one compression bit: corrupt descriptor
        return lambda data: None
    try:
        decode = decoder(bits)
    except DumpError:
        return lambda data: None
    bad = CODEC_ERRORS[bits]
    if bits == DUMP_DH_COMPRESSED_ZLIB:

        def decode_zlib(data: bytes, _new=inflate_module.decompressobj, _ps=page_size):
            d = _new()
            try:
                out = d.decompress(data, _ps)
            except bad:
                return None
            return out if len(out) == _ps and d.eof else None

        return decode_zlib

    def decode_other(data: bytes) -> bytes | None:
        try:
            return decode(data, page_size)
        except bad:
            return None

    return decode_other


def decompress(flags: int, data: bytes, page_size: int) -> bytes | None:
    """One page from its stored bytes, or None when they are not a valid page."""
    return page_decoder(flags, page_size)(data)


def diagnose(flags: int, data: bytes, page_size: int) -> str | None:
    """Why ``data`` stored with ``flags`` is not one page, in words (``"zlib data inflate to
    2,011 bytes"``); None when it is one. Called only for pages that failed to load: it
    decompresses again, without the one-page cap's shortcut, to measure what went wrong."""
    bits = flags & DUMP_DH_COMPRESSED
    if not bits:
        if len(data) != page_size:
            return f"a raw page of {len(data):,} bytes, not {page_size:,}"
        return None
    if bits & (bits - 1):
        return f"page flags {flags:#x} name several codecs"
    name = NAMES[bits]
    try:
        decoder(bits)
    except DumpError as exc:
        return exc.reason
    bad = CODEC_ERRORS[bits]
    try:
        if bits == DUMP_DH_COMPRESSED_ZLIB:
            d = inflate_module.decompressobj()
            out = d.decompress(data, page_size + 1)  # one byte more than a page tells "more"
            if len(out) > page_size:
                return f"zlib data inflate to more than {page_size:,} bytes"
            if len(out) == page_size and not d.eof:
                return "zlib data stop before their end of stream (cut short)"
        elif bits == DUMP_DH_COMPRESSED_SNAPPY:
            import snappy

            claimed = _snappy_length(data)
            if claimed is None:
                return "snappy data without a valid length"
            if claimed != page_size:
                return f"snappy data claim {claimed:,} bytes"
            out = snappy.uncompress(data)
        elif bits == DUMP_DH_COMPRESSED_ZSTD:
            import zstandard

            size = zstandard.frame_content_size(data)
            if size not in (-1, page_size):
                return f"zstd data claim {size:,} bytes"
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=page_size)
        else:
            if len(data) > page_size:
                return f"lzo data of {len(data):,} bytes: more than a page"
            out = _lzallright()(data, page_size)
    except bad as exc:
        return f"{name} data do not decompress ({type(exc).__name__}: {exc})"
    if len(out) != page_size:
        verb = "inflate" if bits == DUMP_DH_COMPRESSED_ZLIB else "decompress"
        return f"{name} data {verb} to {len(out):,} bytes"
    return None


def _snappy_length(data: bytes) -> int | None:
    """The uncompressed length a raw snappy block starts with (a varint), None if malformed."""
    length, shift = 0, 0
    for i in range(min(len(data), 10)):
        byte = data[i]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return length
    return None
