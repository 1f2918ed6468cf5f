"""Work bounded by what the dump file holds, and given up when the daemon is asked to end.

A kdump header may claim any ``max_mapnr`` up to 2**40 frames: bitmaps of 128 GiB each in a
file that stores a few KiB (sparse, or a flattened stream). Every scan of them costs what the
file stores (holes and uniform blocks are one step each), a view that would scan more than its
budget reads ``unavailable: ...``, and a SIGTERM or SIGINT ends the daemon at once even while
a request waits on such work.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import vmcorefs
from tests import fuzzing as fz
from tests import kdumpwriter as kw
from tests.mounting import env, fuse_available, is_mounted, unmount
from vmcorefs.dumpfile import kdump
from vmcorefs.errors import Stopping, set_stop_check
from vmcorefs.tree import build_tree

PAGE = 4096
HUGE_MAPNR = 1 << 40


def _huge_spec() -> kw.KdumpSpec:
    """The synthetic kernel in a kdump whose header claims 2**40 page frames (4 PiB)."""
    k = fz.kernel()
    ram = [(s // PAGE, e // PAGE) for s, e in k.ranges]
    return kw.KdumpSpec(
        max_mapnr=HUGE_MAPNR, pages=k.pages, ram=ram, vmcoreinfo=k.vmcoreinfo, notes=k.notes
    )


def _ram_line(k: fz.Kernel) -> bytes:
    total = sum(e - s for s, e in k.ranges)
    return f"RAM: {total} bytes ({total / (1 << 20):.1f} MiB) in {len(k.ranges)} range(s)".encode()


@pytest.fixture(scope="module")
def huge_kdump(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.kdump"
    kw.write_kdump(path, _huge_spec())
    st = os.stat(path)
    assert st.st_size > 2 * (HUGE_MAPNR // 8)  # both bitmaps: 256 GiB claimed
    if st.st_blocks * 512 > 64 << 20:
        pytest.skip("no sparse files here")
    return str(path)


def _check_huge(path: str) -> None:
    k = fz.kernel()
    with fz.limits(seconds=5, headroom=256 << 20):
        dump = vmcorefs.open_dump(path)
        try:
            tree = build_tree(dump)
            summary = tree.lookup("summary").read(0, 1 << 20)
            assert _ram_line(k) in summary
            assert f"kdump max_mapnr: {HUGE_MAPNR}\n".encode() in summary
            assert tree.lookup("phys").read(0x10_0000, PAGE) == k.pages[0x100]
            counts = dump.source.dumped._counts
            assert len(counts.starts) < 16  # clear, dumped, clear ...: not 2**25 blocks
            out = fz.Outcome()
            fz.walk_tree(tree, out, phys=k.phys_reads, kvirt=k.kvirt_reads)
        finally:
            dump.close()
    assert out.refused is None and out.reads > 100


def test_kdump_claiming_2_40_frames_opens_and_answers_at_once(huge_kdump):
    _check_huge(huge_kdump)


def test_flattened_kdump_claiming_2_40_frames_too(tmp_path):
    path = tmp_path / "huge.flat"
    path.write_bytes(kw.build_flattened(_huge_spec()))
    assert path.stat().st_size < 1 << 20
    _check_huge(str(path))


def _all_ram_kdump(tmp_path, max_mapnr: int) -> str:
    """A kdump of ``max_mapnr`` frames all RAM (a 1st bitmap of 0xff bytes the file stores)."""
    k = fz.kernel()
    pages = {p: k.pages[p] for p in range(768)}
    path = tmp_path / "allram.kdump"
    kw.write_kdump(path, kw.KdumpSpec(max_mapnr=max_mapnr, pages=pages, vmcoreinfo=k.vmcoreinfo))
    return str(path)


def test_ram_bitmap_beyond_the_scan_budget_is_unavailable_once(tmp_path, monkeypatch):
    monkeypatch.setattr(kdump, "MAX_RAM_SCAN", 64 << 10)  # bitmap of 2**21 frames: 256 KiB
    path = _all_ram_kdump(tmp_path, 1 << 21)
    dump = vmcorefs.open_dump(path)
    calls = []
    runs = dump.source.ram.runs
    monkeypatch.setattr(dump.source.ram, "runs", lambda *a: calls.append(a) or runs(*a))
    tree = build_tree(dump)
    summary = tree.lookup("summary").read(0, 1 << 20)
    assert b"RAM: unavailable: the kdump's RAM bitmap is too large to scan: " in summary
    assert b"has 262,144 bytes for 2,097,152 page frames: more than the 65,536 read" in summary
    assert tree.lookup("mm/usage").read(0, 4096).startswith(b"unavailable: ")
    assert tree.lookup("phys").read(0x10_0000, PAGE) == fz.kernel().pages[0x100]
    assert len(calls) == 1  # found once: the reason is kept
    dump.close()


def test_ram_ranges_within_the_budget(tmp_path):
    path = _all_ram_kdump(tmp_path, 1 << 21)
    with vmcorefs.open_dump(path) as dump:
        assert list(dump.source.ranges()) == [(0, (1 << 21) * PAGE)]


def test_a_stop_gives_up_a_scan_and_is_not_kept(tmp_path):
    path = _all_ram_kdump(tmp_path, 1 << 21)
    with vmcorefs.open_dump(path) as dump:
        set_stop_check(lambda: True)
        try:
            with pytest.raises(Stopping):
                dump.source.ranges()
            with pytest.raises(Stopping):
                build_tree(dump).lookup("summary").read(0, 4096)
        finally:
            set_stop_check(None)
        assert list(dump.source.ranges()) == [(0, (1 << 21) * PAGE)]
        assert b"RAM: 8589934592 bytes" in build_tree(dump).lookup("summary").read(0, 4096)


#: Runs vmcorefs with a RAM scan that takes a minute (polling the stop check as the real ones
#: do, every step), so that a request is still waiting on it when the signal comes.
SLOW_DAEMON = """
import sys, time
from vmcorefs.dumpfile import kdump
from vmcorefs.errors import check_stop

def slow(self):
    end = time.monotonic() + 60
    while time.monotonic() < end:
        check_stop()
        time.sleep(0.01)
    return []

kdump.KdumpSource.ranges = slow
from vmcorefs.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.mount
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_daemon_while_a_request_waits(tmp_path, signum):
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    dump = tmp_path / "dump.kdump"
    dump.write_bytes(fz.kdump_seed("zlib")[0])
    script = tmp_path / "slow.py"
    script.write_text(SLOW_DAEMON)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), "-f", str(dump), str(mnt)],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(400):
            if is_mounted(mnt) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert is_mounted(mnt)
        got: list[object] = []

        def reader() -> None:
            try:
                got.append((mnt / "summary").read_bytes())
            except OSError as exc:
                got.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(1.0)  # the reader now waits on the scan
        assert thread.is_alive()
        proc.send_signal(signum)
        assert proc.wait(timeout=2) == 0
        thread.join(timeout=2)
        assert not is_mounted(mnt)
        assert isinstance(got[0], OSError) and got[0].errno == errno.EIO, got
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        unmount(mnt)
