"""Page decompression for kdump-compressed dumps: zlib, lzo, snappy, zstd.

Each page is compressed on its own (makedumpfile ``write_kdump_pages``, QEMU ``dump.c``), and
stored raw when compressing would not make it smaller. A page that does not decompress to
exactly one page is corrupt: it reads as absent, never as a guess. The output is capped at one
page whatever the stream claims, so a corrupt (or hostile) page cannot exhaust memory.

Which pages are decoded in a thread pool, with read ahead (``compression.PARALLEL``): zlib's
(CPython's module, and isal's, used when installed, release the GIL around inflate). zstandard
(one decompressor per thread: a ``ZstdDecompressor`` is not thread-safe) and lzallright release
it too, but their pages are cheap: since a large read decodes straight into the reader's buffer,
the reading thread alone reads faster (DEVELOPERS.md); cramjam's snappy holds the GIL (two
threads decode a page slower than one). Those three are decoded by the reading thread.

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
from dataclasses import dataclass
from types import ModuleType

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

#: A page decoder: the page, or None when the stored bytes are not exactly one page.
PageDecoder = Callable[[bytes], bytes | None]
#: A page decoder that writes the page into ``dest`` (one page long): whether the stored bytes
#: were exactly one page (if not, ``dest`` holds garbage: the caller does not use it).
PageDecoderInto = Callable[[bytes, memoryview], bool]


@dataclass(frozen=True)
class Binding:
    """A codec's Python binding, loaded: how it decodes a page, and how it says why not."""

    #: ``make(page_size)``: the page decoder for pages of that size (made once per page size
    #: and flags, called per page: one Python frame a page). It catches exactly ``errors``
    #: (bad data: None, a corrupt page); anything else propagates (a bug).
    make: Callable[[int], PageDecoder]
    #: What the binding raises on bad data.
    errors: tuple[type[BaseException], ...]
    #: ``measure(data, page_size)``: decodes again for :func:`diagnose`, without the one-page
    #: shortcut: the output (at most a byte more than a page), or why it was refused unread.
    measure: Callable[[bytes, int], bytes | str]
    #: ``make_into(page_size)``: a decoder that writes straight into the reader's buffer, for
    #: bindings that can (None: :func:`page_decoder_into` copies what ``make`` returns).
    make_into: Callable[[int], PageDecoderInto] | None = None
    #: Decodes the codec's empty stream (b""): :func:`require` calls it once, at open, so that
    #: the binding's one-time set-up (ISA-L's tables, zstd's first context: 50-200 µs) is not
    #: paid by the first page read (a first ``lseek`` on ``kvirt`` reads its table pages).
    warm: Callable[[], object] | None = None


@dataclass(frozen=True)
class Codec:
    """One codec of the kdump format, and the one place that knows how it decodes a page."""

    name: str
    #: The Python package that provides it (None: the standard library).
    package: str | None
    #: Whether its pages decompress in parallel in threads (see the module docstring).
    parallel: bool
    #: Imports the binding (ImportError when it is not installed).
    load: Callable[[], Binding]


#: The empty streams of each codec (what its compressor makes of b""), for Binding.warm.
_ZLIB_EMPTY = b"x\x9c\x03\x00\x00\x00\x00\x01"
_LZO_EMPTY = b"\x11\x00\x00"  # the end-of-stream marker alone
_SNAPPY_EMPTY = b"\x00"  # raw snappy: the length 0 as a varint
_ZSTD_EMPTY = b"\x28\xb5\x2f\xfd\x20\x00\x01\x00\x00"  # one frame, one empty last block

inflate_module: ModuleType = zlib
try:  # ISA-L inflates the same zlib streams faster, checksum checked alike (DEVELOPERS.md)
    from isal import isal_zlib

    inflate_module = isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; the standard module still works
    pass


def _load_zlib() -> Binding:
    bad = (zlib.error, getattr(inflate_module, "error", zlib.error))

    def make(page_size: int) -> PageDecoder:
        new = inflate_module.decompressobj  # looked up now: tests swap the module

        def decode(data: bytes) -> bytes | None:
            d = new()
            try:
                out: bytes = d.decompress(data, page_size)
            except bad:
                return None
            # eof: the stream ended with its checksum verified, within the one-page cap.
            return out if len(out) == page_size and d.eof else None

        return decode

    def measure(data: bytes, page_size: int) -> bytes | str:
        d = inflate_module.decompressobj()
        out: bytes = d.decompress(data, page_size + 1)  # a byte more than a page tells "more"
        if len(out) > page_size:
            return f"zlib data inflate to more than {page_size:,} bytes"
        if len(out) == page_size and not d.eof:
            return "zlib data stop before their end of stream (cut short)"
        return out

    return Binding(make, bad, measure, warm=lambda: inflate_module.decompress(_ZLIB_EMPTY))


def lzallright_overreads(version: str) -> bool:
    """Whether lzallright ``version`` reads past the end of its input: before 0.3 (the last
    releases for Python 3.10) it decodes with C++ lzokay, whose loop over a run of zero length
    bytes stops only at a non-zero byte, wherever that lies (a crafted page crashed it)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return not found or (int(found[1]), int(found[2])) < (0, 3)


def _load_lzo() -> Binding:
    from lzallright import LZOCompressor, LZOError

    lzo_decompress = LZOCompressor.decompress
    try:
        guard = lzallright_overreads(importlib.metadata.version("lzallright"))
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed unusually
        guard = True

    def measure(data: bytes, page_size: int) -> bytes | str:
        # makedumpfile stores bare lzo1x_1 output, and only when it is smaller than the page.
        # lzallright has no output cap: from the size hint it doubles its buffer until the
        # stream ends. LZO's lengths grow by 255 a zero byte, so a stream of at most one page
        # decodes to at most ~1 MiB (a 2 MiB buffer): a longer input is refused unread.
        if len(data) > page_size:
            return f"lzo data of {len(data):,} bytes: more than a page"
        if guard:  # a non-zero byte just past the input stops lzallright < 0.3's over-read
            data = memoryview(bytes(data) + b"\x01")[:-1]  # type: ignore[assignment]
        out: bytes = lzo_decompress(data, page_size)
        return out

    def make(page_size: int) -> PageDecoder:
        def decode(data: bytes) -> bytes | None:
            try:
                out = measure(data, page_size)
            except LZOError:
                return None
            return out if isinstance(out, bytes) and len(out) == page_size else None

        return decode

    return Binding(make, (LZOError,), measure, warm=lambda: lzo_decompress(_LZO_EMPTY, 1))


def _load_snappy() -> Binding:
    import cramjam

    # Attributes of the extension module (cramjam.snappy is no importable submodule).
    snappy_error = cramjam.DecompressionError
    decompress_raw = cramjam.snappy.decompress_raw
    decompress_raw_into = cramjam.snappy.decompress_raw_into

    def make_into(page_size: int) -> PageDecoderInto:
        # The page size as a varint: data that start with it claim exactly one page.
        prefix = _varint(page_size)

        def decode_into(data: bytes, dest: memoryview) -> bool:
            # Raw snappy starts with the uncompressed length (a varint): data that claim more
            # than ``dest`` raise before a byte is written, data that claim less come out short.
            if not data.startswith(prefix) and _snappy_length(data) != page_size:
                return False
            try:
                return bool(decompress_raw_into(data, dest) == page_size)
            except snappy_error:
                return False

        return decode_into

    def make(page_size: int) -> PageDecoder:
        decode_into = make_into(page_size)
        local = threading.local()

        def decode(data: bytes) -> bytes | None:
            # Decoded into a page of this thread's, then copied: the binding's own output (a
            # buffer object around a fresh allocation a page) costs more than the copy.
            page = getattr(local, "page", None)
            if page is None:
                page = local.page = memoryview(bytearray(page_size))
            return bytes(page) if decode_into(data, page) else None

        return decode

    def measure(data: bytes, page_size: int) -> bytes | str:
        claimed = _snappy_length(data)
        if claimed is None:
            return "snappy data without a valid length"
        if claimed != page_size:
            return f"snappy data claim {claimed:,} bytes"
        return bytes(decompress_raw(data))

    return Binding(
        make, (snappy_error,), measure, make_into, warm=lambda: decompress_raw(_SNAPPY_EMPTY)
    )


def _load_zstd() -> Binding:
    import zstandard

    local = threading.local()

    def make(page_size: int) -> PageDecoder:
        def decode(data: bytes) -> bytes | None:
            dctx = getattr(local, "dctx", None)
            if dctx is None:  # one per thread: a ZstdDecompressor is not thread-safe
                dctx = local.dctx = zstandard.ZstdDecompressor()
            try:
                # A frame that records its content size is decompressed to that size whatever
                # max_output_size says: check it first (-1: not recorded, then the cap holds).
                if zstandard.frame_content_size(data) not in (-1, page_size):
                    return None
                out: bytes = dctx.decompress(data, max_output_size=page_size)
            except zstandard.ZstdError:
                return None
            return out if len(out) == page_size else None

        return decode

    def measure(data: bytes, page_size: int) -> bytes | str:
        size = zstandard.frame_content_size(data)
        if size not in (-1, page_size):
            return f"zstd data claim {size:,} bytes"
        out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=page_size)
        return out

    return Binding(
        make,
        (zstandard.ZstdError,),
        measure,
        warm=lambda: zstandard.ZstdDecompressor().decompress(_ZSTD_EMPTY),
    )


#: The codecs, by their bit in ``page_desc.flags`` and ``disk_dump_header.status``.
CODECS: dict[int, Codec] = {
    DUMP_DH_COMPRESSED_ZLIB: Codec("zlib", None, True, _load_zlib),
    DUMP_DH_COMPRESSED_LZO: Codec("lzo", "lzallright", False, _load_lzo),
    DUMP_DH_COMPRESSED_SNAPPY: Codec("snappy", "cramjam", False, _load_snappy),
    DUMP_DH_COMPRESSED_ZSTD: Codec("zstd", "zstandard", False, _load_zstd),
}
NAMES = {bit: codec.name for bit, codec in CODECS.items()}
#: Codecs whose pages decompress in parallel in threads (see the module docstring).
PARALLEL = frozenset(bit for bit, codec in CODECS.items() if codec.parallel)


def compression_name(flags: int) -> str:
    """ "zlib", "lzo", ... for the compression bits of ``flags``; "none"; "mixed" for several."""
    found = [name for bit, name in NAMES.items() if flags & bit]
    if not found:
        return "none"
    return found[0] if len(found) == 1 else "mixed"


_bindings: dict[int, Binding] = {}
_lock = threading.Lock()


def require(bit: int, path: str = "dump") -> Binding:
    """The codec's binding, loaded once; DumpError naming the package to install when it is
    missing (a kdump file asks at open, not at the first read)."""
    found = _bindings.get(bit)
    if found is not None:
        return found
    with _lock:
        if bit not in _bindings:
            codec = CODECS[bit]
            try:
                binding = codec.load()
            except ImportError:
                raise DumpError(
                    path,
                    f"{codec.name}-compressed pages need the Python package {codec.package}",
                ) from None
            if binding.warm is not None:
                try:
                    binding.warm()
                except binding.errors:  # pragma: no cover - a binding that refuses b"": no harm
                    pass
            _bindings[bit] = binding
        return _bindings[bit]


def page_decoder(flags: int, page_size: int) -> PageDecoder:
    """The decoder of pages stored with ``flags`` (made once, called per page): the page, or
    None when the stored bytes are not exactly one page (:func:`diagnose` then says why)."""
    if not flags:
        return lambda data: bytes(data) if len(data) == page_size else None
    bit = _codec_bit(flags)
    try:
        return (lambda data: None) if bit is None else require(bit).make(page_size)
    except DumpError:
        return lambda data: None


def _codec_bit(flags: int) -> int | None:
    """The one codec bit of ``flags``; None when they name no codec, several (a corrupt
    descriptor) or a bit no codec has (never served as a raw page)."""
    bits = flags & DUMP_DH_COMPRESSED
    if flags & ~DUMP_DH_COMPRESSED or not bits or bits & (bits - 1):
        return None
    return bits


def page_decoder_into(flags: int, page_size: int) -> PageDecoderInto:
    """:func:`page_decoder`, writing the page into a buffer one page long: straight from the
    codec where its binding can, else a copy of the page it returns."""
    bit = _codec_bit(flags)
    if bit is not None:
        try:
            make_into = require(bit).make_into
        except DumpError:
            make_into = None
        if make_into is not None:
            return make_into(page_size)
    decode = page_decoder(flags, page_size)

    def decode_into(data: bytes, dest: memoryview) -> bool:
        page = decode(data)
        if page is None:
            return False
        dest[:] = page
        return True

    return decode_into


def decompress(flags: int, data: bytes, page_size: int) -> bytes | None:
    """One page from its stored bytes, or None when they are not a valid page."""
    return page_decoder(flags, page_size)(data)


def diagnose(flags: int, data: bytes, page_size: int) -> str | None:
    """Why ``data`` stored with ``flags`` is not one page, in words (``"zlib data inflate to
    2,011 bytes"``); None when it is one. Called only for pages that failed to load: it
    decompresses again, without the one-page cap's shortcut, to measure what went wrong."""
    if flags & ~DUMP_DH_COMPRESSED:
        return f"page flags {flags:#x} name no codec makedumpfile writes"
    bits = flags & DUMP_DH_COMPRESSED
    if not bits:
        if len(data) != page_size:
            return f"a raw page of {len(data):,} bytes, not {page_size:,}"
        return None
    if bits & (bits - 1):
        return f"page flags {flags:#x} name several codecs"
    name = NAMES[bits]
    try:
        binding = require(bits)
    except DumpError as exc:
        return exc.reason
    try:
        out = binding.measure(data, page_size)
    except binding.errors as exc:
        return f"{name} data do not decompress ({type(exc).__name__}: {exc})"
    if isinstance(out, str):
        return out
    if len(out) != page_size:
        verb = "inflate" if bits == DUMP_DH_COMPRESSED_ZLIB else "decompress"
        return f"{name} data {verb} to {len(out):,} bytes"
    return None


def _varint(value: int) -> bytes:
    """``value`` as the shortest varint (7 bits a byte, low first, high bit: more follow)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


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
