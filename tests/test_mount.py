"""The kernel interface: a real FUSE mount of a synthetic dump, read with system calls."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading

import pytest

from tests.elfbuilder import PageTables, PhysImage, simple_core, vmcoreinfo_text
from tests.mounting import is_mounted, mounted, run_vmcorefs, start_foreground, unmount

pytestmark = pytest.mark.mount
KTEXT = 0xFFFFFFFF81000000
MiB = 1 << 20


@pytest.fixture
def core(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    mem.write(0x40_0000, bytes(range(256)) * (2 * MiB // 256))
    pt.map(KTEXT, 0x40_0000, 1 << 21)
    path = tmp_path / "core"
    # RAM [0, 6 MiB) then a hole, then one page at 8 MiB.
    path.write_bytes(
        simple_core(mem, [(0, 6 * MiB), (8 * MiB, 8 * MiB + 4096)], vmcoreinfo_text(pt))
    )
    return str(path)


def test_reads_holes_and_eof(tmp_path, core):
    with mounted([core], tmp_path / "mnt") as mnt:
        fd = os.open(mnt / "phys", os.O_RDONLY)
        try:
            assert os.fstat(fd).st_size == 8 * MiB + 4096
            assert os.pread(fd, 4, 0x40_0000 + 1) == bytes([1, 2, 3, 4])
            assert os.pread(fd, 1 * MiB, 6 * MiB - 10) == bytes(range(246, 256))  # short: hole
            with pytest.raises(OSError) as info:
                os.pread(fd, 16, 6 * MiB)
            assert info.value.errno == errno.EIO
            assert os.pread(fd, 16, 8 * MiB + 4096) == b""  # EOF
        finally:
            os.close(fd)
        with open(mnt / "kvirt", "rb", buffering=0) as f:
            f.seek(KTEXT & 0x7FFFFFFFFFFFFFFF)
            assert f.read(MiB) == (bytes(range(256)) * 4096)[:MiB]  # 1 MiB in one read
        assert (mnt / "info" / "PAGESIZE").read_text() == "4096\n"


@pytest.mark.parametrize("max_read", [4096, 65536, MiB])
def test_max_read_is_honoured(tmp_path, core, max_read):
    """``-o max_read=N``: the kernel sends no larger request, and reads go on as before (libfuse
    ends a session whose init says another size than the option: no mount, exit 0)."""
    with mounted([core], tmp_path / "mnt", "-o", f"max_read={max_read}") as mnt:
        with open("/proc/self/mountinfo") as f:
            line = next(line for line in f if line.split()[4] == str(mnt))
        assert f"max_read={max_read}" in line
        with open(mnt / "kvirt", "rb", buffering=0) as f:
            f.seek(KTEXT & 0x7FFFFFFFFFFFFFFF)
            assert f.read(2 * MiB) == bytes(range(256)) * (2 * MiB // 256)


def test_names_and_values_keep_their_bytes_through_fuse(tmp_path):
    """info/ names escaped by the one rule, and bytes that are not UTF-8 (in a name or a
    value) reach the reader as they are in the dump, never as U+FFFD."""
    mem = PhysImage()
    pt = PageTables(mem)
    odd = {"OSRELEASE": "6.1-\udcff", ".": "1", "..": "2", "": "3", "a/b": "4", "K\udcfe": "5"}
    path = tmp_path / "core"
    path.write_bytes(simple_core(mem, [(0, 0x50_0000)], vmcoreinfo_text(pt, extra=odd)))
    with mounted([str(path)], tmp_path / "mnt") as mnt:
        info = os.fsencode(mnt / "info")
        names = os.listdir(info)
        assert len(names) == len(set(names))
        assert {b"%2E", b"%2E%2E", b"%", b"a%2Fb", b"K\xfe"} <= set(names)
        with open(info + b"/K\xfe", "rb") as f:
            assert f.read() == b"5\n"
        assert (mnt / "info" / "OSRELEASE").read_bytes() == b"6.1-\xff\n"
        assert b"release: 6.1-\xff\n" in (mnt / "summary").read_bytes()


def test_everything_mutating_is_erofs(tmp_path, core):
    with mounted([core], tmp_path / "mnt") as mnt:
        calls = [
            lambda: open(mnt / "new", "w"),
            lambda: os.open(mnt / "phys", os.O_WRONLY),
            lambda: os.open(mnt / "phys", os.O_RDWR),
            lambda: os.mkdir(mnt / "d"),
            lambda: os.unlink(mnt / "phys"),
            lambda: os.rename(mnt / "phys", mnt / "p2"),
            lambda: os.chmod(mnt / "phys", 0o777),
            lambda: os.truncate(mnt / "phys", 0),
            lambda: os.utime(mnt / "phys", (0, 0)),
            lambda: os.symlink("x", mnt / "link"),
        ]
        for call in calls:
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno == errno.EROFS


def test_already_mounted_is_refused_with_the_fix(tmp_path, core):
    with mounted([core], tmp_path / "mnt") as mnt:
        out = run_vmcorefs(core, str(mnt))
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and f"fusermount3 -u {mnt}" in out.stderr
        assert (mnt / "info" / "PAGESIZE").read_text() == "4096\n"  # the first mount works


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(tmp_path, core, sig):
    mnt = tmp_path / "mnt"
    proc = start_foreground([core], mnt, stderr=subprocess.PIPE, text=True)
    try:
        assert is_mounted(mnt)
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
        assert not is_mounted(mnt)
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        unmount(mnt)


def test_stale_mount_of_a_killed_daemon_is_reported(tmp_path, core):
    mnt = tmp_path / "mnt"
    proc = start_foreground([core], mnt, stderr=subprocess.DEVNULL)
    try:
        assert is_mounted(mnt)
        proc.kill()
        proc.wait(timeout=20)
        out = run_vmcorefs(core, str(mnt))
        assert out.returncode == 1
        assert f"fusermount3 -u {mnt}" in out.stderr and out.stderr.count("\n") == 1
    finally:
        unmount(mnt)


def test_concurrent_readers_then_a_clean_exit(tmp_path, core):
    """Each libfuse worker keeps its Python thread state (fuse._ReplyFUSE._wrapper): under
    concurrent readers the workers stay bounded (so do the states), every read is right, and
    the daemon still exits cleanly."""
    mnt = tmp_path / "mnt"
    proc = start_foreground([core], mnt, stderr=subprocess.PIPE, text=True)
    try:
        assert is_mounted(mnt)
        fd = os.open(mnt / "phys", os.O_RDONLY)
        want = os.pread(fd, 65536, 0x40_0000)
        os.close(fd)
        assert want == bytes(range(256)) * 256
        errors: list[str] = []

        def reader(seed: int) -> None:
            fd = os.open(mnt / "phys", os.O_RDONLY)
            try:
                for i in range(300):
                    off = (seed * 977 + i * 4096) % (len(want) - 512)
                    if os.pread(fd, 512, 0x40_0000 + off) != want[off : off + 512]:
                        errors.append(f"phys at {off:#x}")
                    if (mnt / "info" / "PAGESIZE").read_text() != "4096\n":
                        errors.append("info")
            finally:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        workers = len(os.listdir(f"/proc/{proc.pid}/task"))
        assert workers <= 1 + 10 + 2  # main, libfuse's max_threads workers, slack
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        unmount(mnt)


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({"max_idle_threads": "10"}, True),  # what mount() passes
        ({}, True),  # libfuse's defaults: no worker ever exits
        ({"max_idle_threads": "2"}, False),  # a user's -o: workers may exit
        ({"max_idle_threads": "20", "max_threads": "20"}, True),
        ({"max_idle_threads": "x"}, False),
    ],
)
def test_thread_states_are_kept_only_while_no_worker_exits(options, kept):
    from vmcorefs.fuse import workers_never_exit

    assert workers_never_exit(options) is kept
