"""Faults while a dump is in use: the file truncated, overwritten in place or renamed over.

A truncated or overwritten dump fails every later read with EIO (DumpError in the library),
cached pages included: bytes of another dump are never served. A file renamed over ours leaves
our descriptor on the dump we opened, which goes on reading correctly.
"""

from __future__ import annotations

import errno
import os
import shutil
import time

import pytest

import vmcorefs
from tests import fuzzing as fz
from tests.mounting import mounted
from vmcorefs.dumpfile.source import CHECK_INTERVAL
from vmcorefs.errors import DumpError
from vmcorefs.tree import build_tree

KVIRT_BASE = 1 << 63


@pytest.fixture(params=["elf", "kdump"])
def dump_copy(request, tmp_path):
    raw = fz.elf_seed()[0] if request.param == "elf" else fz.kdump_seed("zlib")[0]
    path = tmp_path / f"dump.{request.param}"
    path.write_bytes(raw)
    return path, raw


def _expected(paddr: int, size: int) -> bytes:
    k = fz.kernel()
    return b"".join(k.pages[p] for p in range(paddr // 4096, (paddr + size) // 4096))


def _wait_past_check_interval() -> None:
    time.sleep(CHECK_INTERVAL + 0.05)


def test_truncated_while_open_fails_every_read(dump_copy):
    path, raw = dump_copy
    dump = vmcorefs.open_dump(str(path))
    tree = build_tree(dump)
    assert dump.phys.read(0x10_0000, 8192) == _expected(0x10_0000, 8192)  # now cached
    os.truncate(path, len(raw) // 2)
    with pytest.raises(DumpError, match="changed while in use"):
        dump.phys.read(0x20_0000, 4096)  # uncached: the read itself sees the change
    _wait_past_check_interval()
    with pytest.raises(DumpError):
        dump.phys.read(0x10_0000, 8192)  # cached before: fails too
    with pytest.raises(DumpError):
        tree.check()
    with pytest.raises(DumpError):
        tree.lookup("kvirt").read(fz.STEXT - KVIRT_BASE, 16)
    dump.close()


def test_overwritten_in_place_never_serves_the_new_bytes(dump_copy):
    path, raw = dump_copy
    dump = vmcorefs.open_dump(str(path))
    assert dump.phys.read(0x10_0000, 4096) == _expected(0x10_0000, 4096)
    time.sleep(0.02)  # a coarse mtime clock must tick
    with open(path, "r+b") as f:  # same inode, same size, other bytes
        f.write(bytes(b ^ 0x5A for b in raw))
    with pytest.raises(DumpError, match="changed while in use"):
        dump.phys.read(0x20_0000, 4096)
    with pytest.raises(DumpError):
        dump.phys.read(0x10_0000, 4096)  # even a page that the cache holds
    dump.close()


def _overwrite_keeping_the_mtime(path, raw: bytes) -> None:
    """Other bytes in place (same inode, same size), then the mtime set back as it was: only
    the ctime, which the kernel sets and no one can set back, still tells."""
    st = os.stat(path)
    time.sleep(0.02)  # a coarse ctime clock must tick
    with open(path, "r+b") as f:
        f.write(bytes(b ^ 0x5A for b in raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert after.st_ctime_ns != st.st_ctime_ns


def test_overwritten_in_place_with_the_mtime_set_back_is_seen(dump_copy):
    path, raw = dump_copy
    dump = vmcorefs.open_dump(str(path))
    assert dump.phys.read(0x10_0000, 4096) == _expected(0x10_0000, 4096)
    _overwrite_keeping_the_mtime(path, raw)
    with pytest.raises(DumpError, match="changed while in use: its status changed"):
        dump.phys.read(0x20_0000, 4096)
    with pytest.raises(DumpError):
        dump.phys.read(0x10_0000, 4096)  # even a page that the cache holds
    dump.close()


def test_a_chmod_or_a_new_link_changes_no_byte(dump_copy, tmp_path):
    path, _raw = dump_copy
    dump = vmcorefs.open_dump(str(path))
    time.sleep(0.02)
    os.chmod(path, 0o600)
    os.link(path, tmp_path / "another name")
    _wait_past_check_interval()
    assert dump.phys.read(0x20_0000, 4096) == _expected(0x20_0000, 4096)
    dump.close()


def test_renamed_over_keeps_reading_the_dump_we_opened(dump_copy, tmp_path):
    path, raw = dump_copy
    dump = vmcorefs.open_dump(str(path))
    other = tmp_path / "other"
    other.write_bytes(bytes(len(raw)))
    os.replace(other, path)  # a new inode at the same name: ours is unchanged
    _wait_past_check_interval()
    assert dump.phys.read(0x10_0000, 8192) == _expected(0x10_0000, 8192)
    assert dump.phys.read(0x20_0000, 4096) == _expected(0x20_0000, 4096)
    dump.close()


def test_split_part_truncated(tmp_path):
    parts, _ = fz.split_seed()
    paths = []
    for i, raw in enumerate(parts):
        p = tmp_path / f"part{i}"
        p.write_bytes(raw)
        paths.append(str(p))
    dump = vmcorefs.open_dump(paths)
    assert dump.phys.read(0, 4096) == _expected(0, 4096)
    os.truncate(paths[2], 4096)
    _wait_past_check_interval()
    with pytest.raises(DumpError):
        dump.phys.read(0, 4096)
    dump.close()


# -- through a real mount ------------------------------------------------------------------------


@pytest.mark.mount
@pytest.mark.parametrize("fault", ["truncate", "overwrite"])
def test_mounted_dump_changed_gives_eio_and_the_daemon_lives(tmp_path, dump_copy, fault):
    path, raw = dump_copy
    with mounted([str(path)], tmp_path / "mnt") as mnt:
        fd = os.open(mnt / "phys", os.O_RDONLY)
        try:
            assert os.pread(fd, 8192, 0x10_0000) == _expected(0x10_0000, 8192)
            time.sleep(0.02)
            if fault == "truncate":
                os.truncate(path, 4096)
            else:
                with open(path, "r+b") as f:
                    f.write(bytes(b ^ 0xFF for b in raw))
            _wait_past_check_interval()
            for addr in (0x10_0000, 0x20_0000, fz.TABLES_PADDR):
                with pytest.raises(OSError) as info:
                    os.pread(fd, 4096, addr)
                assert info.value.errno == errno.EIO
        finally:
            os.close(fd)
        with pytest.raises(OSError) as info:
            (mnt / "vmcoreinfo").read_bytes()  # computed text is refused too
        assert info.value.errno == errno.EIO
        assert os.stat(mnt / "phys").st_size > 0  # the daemon still answers
        assert "phys" in os.listdir(mnt)


@pytest.mark.mount
def test_mounted_dump_renamed_over_reads_on(tmp_path, dump_copy):
    path, raw = dump_copy
    with mounted([str(path)], tmp_path / "mnt") as mnt:
        other = tmp_path / "other"
        shutil.copyfile(path, other)
        with open(other, "r+b") as f:
            f.write(bytes(len(raw)))
        os.replace(other, path)
        _wait_past_check_interval()
        with open(mnt / "phys", "rb", buffering=0) as f:
            f.seek(0x20_0000)
            assert f.read(8192) == _expected(0x20_0000, 8192)


@pytest.mark.mount
def test_mounted_dump_overwritten_drops_every_cached_view(tmp_path, dump_copy):
    """Files read before the change (computed text, a sym/ file served through the page
    cache, kvirt) all fail with EIO once the dump was overwritten in place, its mtime set
    back: none serves the old dump's bytes beside the new one's."""
    path, raw = dump_copy
    with mounted([str(path)], tmp_path / "mnt") as mnt:
        sym = next(p for p in sorted((mnt / "sym").iterdir()) if len(_read_or_none(p) or b"") > 8)
        before = {p: p.read_bytes() for p in (sym, mnt / "summary", mnt / "vmcoreinfo")}
        assert all(before.values())
        fd = os.open(mnt / "kvirt", os.O_RDONLY)  # open before the change, read after
        try:
            assert len(os.pread(fd, 16, fz.STEXT - KVIRT_BASE)) == 16
            _overwrite_keeping_the_mtime(path, raw)
            _wait_past_check_interval()
            for p in (*before, mnt / "dmesg", mnt / "kvirt"):
                with pytest.raises(OSError) as info:  # the open is refused
                    p.read_bytes()
                assert info.value.errno == errno.EIO, p
            with pytest.raises(OSError) as info:
                os.pread(fd, 16, fz.STEXT - KVIRT_BASE)
            assert info.value.errno == errno.EIO
        finally:
            os.close(fd)


def _read_or_none(path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
