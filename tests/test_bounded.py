"""Work bounded by what the dump file holds, and given up when the daemon is asked to end.

A kdump header may claim any ``max_mapnr`` up to 2**40 frames: bitmaps of 128 GiB each in a
file that stores a few KiB (sparse, or a flattened stream). Every scan of them costs what the
file stores (holes and uniform blocks are one step each), a view that would scan more than its
budget reads ``unavailable: ...``, and a SIGTERM or SIGINT ends the daemon at once even while
a request waits on such work.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests import fuzzing as fz
from tests.mounting import env, fuse_available, is_mounted, unmount


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
