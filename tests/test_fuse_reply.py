"""The FUSE reply filled in place: libfuse's buffer passed down every layer's ``readinto``."""

from __future__ import annotations

import ctypes
import errno
import os
from types import SimpleNamespace

import pytest
from kdumpwriter import KdumpSpec, build_kdump, pattern_page

import vmcorefs
from tests.elfbuilder import PhysImage, simple_core
from vmcorefs.fuse import VmcoreOperations, _ReplyFUSE
from vmcorefs.tree import build_tree

PAGE = 4096
VI = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80100000\n"


def elf_dump(tmp_path) -> tuple[str, PhysImage]:
    mem = PhysImage()
    for paddr in range(0, 0x6000, PAGE):
        mem.write(paddr, os.urandom(PAGE))
    path = tmp_path / "core"
    path.write_bytes(simple_core(mem, [(0, 0x3000), (0x4000, 0x6000)], VI))
    return str(path), mem


def reply(fuse: _ReplyFUSE, path: str, size: int, offset: int) -> tuple[int, bytes]:
    """What ``_ReplyFUSE.read`` writes into a libfuse-like buffer: the count and the buffer
    (0xee where nothing was written)."""
    buf = ctypes.create_string_buffer(b"\xee" * size, size)
    pointer = ctypes.cast(buf, ctypes.POINTER(ctypes.c_byte))
    fi = SimpleNamespace(flags=os.O_RDONLY)
    assert fuse.operations.open(path, fi) == 0  # sets fi.fh, direct_io, keep_cache
    count = fuse.read(None, pointer, size, offset, SimpleNamespace(contents=fi))
    return count, buf.raw


def reply_fuse(dump) -> _ReplyFUSE:
    fuse = _ReplyFUSE.__new__(_ReplyFUSE)  # the read path alone: no mount
    fuse.operations = VmcoreOperations(build_tree(dump))
    fuse.encoding, fuse.errors = "utf-8", "surrogateescape"
    return fuse


def test_phys_lands_in_the_buffer_and_stops_at_a_hole(tmp_path):
    path, mem = elf_dump(tmp_path)
    with vmcorefs.open_dump(path) as dump:
        fuse = reply_fuse(dump)
        count, raw = reply(fuse, "/phys", 3 * PAGE, 0x1000 + 5)
        assert count == 0x3000 - 0x1005  # short: the hole at 0x3000
        assert raw[:count] == mem.read(0x1005, count)
        assert raw[count:] == b"\xee" * (3 * PAGE - count)  # nothing written past the count
        count, raw = reply(fuse, "/phys", PAGE, 0x3000)
        assert count == -errno.EIO  # libfuse's reply: the negative errno
        assert raw == b"\xee" * PAGE


def test_small_and_large_replies_equal_the_files_read(tmp_path):
    pages = {p: pattern_page(p) for p in range(300) if p % 50}
    path = tmp_path / "dump.kdump"
    path.write_bytes(build_kdump(KdumpSpec(max_mapnr=300, pages=pages)))
    with vmcorefs.open_dump(str(path)) as dump:
        fuse = reply_fuse(dump)
        node = fuse.operations.tree.lookup("/phys")
        for offset, size in [(PAGE + 7, 100), (2 * PAGE - 1, 2), (51 * PAGE + 9, 1 << 20)]:
            count, raw = reply(fuse, "/phys", size, offset)
            held = bytearray()  # the model: pages from offset's up to the first absent one
            for pfn in range(offset // PAGE, 300):
                if pfn not in pages:
                    break
                held += pages[pfn]
            want = bytes(held[offset % PAGE : offset % PAGE + size])
            assert count == len(want) and raw[:count] == want, (offset, size)
            assert node.read(offset, size) == want
        count, raw = reply(fuse, "/README", 64, 0)  # a text file: the same path
        assert raw[:count] == fuse.operations.tree.lookup("/README").read(0, 64)


def test_the_buffer_is_released_after_the_reply(tmp_path, monkeypatch):
    """No layer may keep libfuse's buffer: once replied, it belongs to libfuse again."""
    path, _ = elf_dump(tmp_path)
    kept = []
    with vmcorefs.open_dump(path) as dump:
        fuse = reply_fuse(dump)
        read = fuse.operations.read

        def keep(path, size, offset, fi, buf=None):
            kept.append(buf)
            return read(path, size, offset, fi, buf)

        monkeypatch.setattr(fuse.operations, "read", keep)
        assert reply(fuse, "/phys", PAGE, 0)[0] == PAGE
    with pytest.raises(ValueError, match="released"):
        kept[0][0] = 1


def test_a_dump_changed_under_the_read_fails(tmp_path):
    path, _ = elf_dump(tmp_path)
    with vmcorefs.open_dump(path) as dump:
        fuse = reply_fuse(dump)
        assert reply(fuse, "/phys", PAGE, 0)[0] == PAGE
        with open(path, "r+b") as f:  # same size, new mtime: modified in place
            f.write(b"x")
            os.utime(f.fileno(), ns=(1, 1))
        count, _ = reply(fuse, "/phys", 3 * PAGE, 0x1000)
        assert count == -errno.EIO
