"""Filling a FUSE reply buffer from pieces: bytes and file extents, in order, verified."""

from __future__ import annotations

import ctypes
import os

import pytest

from vmcorefs.dumpfile.source import DumpFile, FileExtent
from vmcorefs.errors import DumpError
from vmcorefs.fuse import _fill


def _buffer(size: int) -> tuple[ctypes.Array, int]:
    buf = ctypes.create_string_buffer(b"\xee" * size, size)
    return buf, ctypes.addressof(buf)


@pytest.fixture
def dumpfile(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    f = DumpFile(str(path))
    yield f
    f.close()


def test_pages_and_extents_land_in_order(dumpfile):
    pages = [os.urandom(n) for n in (4096, 100, 4096, 1)]
    pieces = [pages[0], FileExtent(dumpfile, 10, 300), pages[1], pages[2], pages[3]]
    buf, address = _buffer(9000)
    count = _fill(address, pieces)
    expected = pages[0] + (bytes(range(256)) * 2)[10:310] + pages[1] + pages[2] + pages[3]
    assert count == len(expected)
    assert buf.raw[:count] == expected
    assert buf.raw[count:] == b"\xee" * (9000 - count)  # nothing written past the pieces


def test_a_short_extent_ends_the_reply(dumpfile):
    size = dumpfile.size
    buf, address = _buffer(8192)
    count = _fill(address, [b"ab", FileExtent(dumpfile, size - 5, 50), b"never"])
    assert count == 2 + 5
    assert buf.raw[:count] == b"ab" + (bytes(range(256)) * 64)[-5:]


def test_a_file_changed_under_the_read_fails(dumpfile, tmp_path):
    with open(dumpfile.path, "r+b") as f:  # same size, new mtime: modified in place
        f.write(b"x")
        os.utime(f.fileno(), ns=(1, 1))
    buf, address = _buffer(4096)
    with pytest.raises(DumpError):
        _fill(address, [FileExtent(dumpfile, 0, 100)])
