"""The error model through a real mount: errno values, the ``--debug`` line, a bug injected in
the daemon, a truncated copy of the sample, the ``-o`` refusals, ``st_blocks``."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kdumpwriter import PAGE, build_kdump, pattern_page
from tests.mounting import (
    REPO,
    env,
    fuse_available,
    is_mounted,
    mounted,
    run_vmcorefs,
    unmount,
    vmcorefs_cmd,
)
from tests.test_errors import CORRUPT, EXCLUDED, KTEXT, LOST, spec

pytestmark = pytest.mark.mount
KVIRT_BASE = 1 << 63


@pytest.fixture
def dump_path(tmp_path) -> str:
    path = tmp_path / "dump.kdump"
    path.write_bytes(build_kdump(spec()))
    return str(path)


def pread_errno(path: Path, size: int, offset: int) -> int | bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)


def start(args: list[str], mnt: Path, stderr_path: Path, *, argv0: list[str] | None = None):
    """The daemon in the foreground (its stderr to a file), returned once mounted."""
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    mnt.mkdir(exist_ok=True)
    err = open(stderr_path, "w")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(
        [*(argv0 or vmcorefs_cmd()), *args, str(mnt)], env=env(), stderr=err, cwd=REPO
    )
    proc.stderr_file = err  # type: ignore[attr-defined]
    for _ in range(200):
        if is_mounted(mnt) or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert is_mounted(mnt), stderr_path.read_text()
    return proc


def stop(proc, mnt: Path) -> None:
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        unmount(mnt)
        proc.stderr_file.close()


def test_absent_corrupt_and_unavailable_through_a_mount(tmp_path, dump_path):
    with mounted([dump_path], tmp_path / "mnt") as mnt:
        assert pread_errno(mnt / "phys", 64, EXCLUDED * PAGE - 16) == pattern_page(15)[-16:]
        assert pread_errno(mnt / "phys", 64, EXCLUDED * PAGE) == errno.EIO
        assert pread_errno(mnt / "phys", 8, LOST * PAGE) == errno.EIO
        assert pread_errno(mnt / "kvirt", 8, KTEXT - KVIRT_BASE + 64 * PAGE) == errno.EIO
        assert b"damage:" not in (mnt / "summary").read_bytes()
        assert pread_errno(mnt / "phys", 8, CORRUPT * PAGE) == errno.EIO
        assert pread_errno(mnt / "kvirt", 8, KTEXT - KVIRT_BASE + CORRUPT * PAGE) == errno.EIO
        summary = (mnt / "summary").read_text()  # read before: still says it now
        assert "\ndamage: 1 corrupt page met so far (read as EIO): phys 0x14000: pfn 0x14: " in (
            summary
        )
        assert (mnt / "uts" / "release").read_text() == (
            "unavailable: VMCOREINFO has no SYMBOL(init_uts_ns)\n"
        )
        assert (mnt / "info" / "PAGE_SIZE").read_text() == "4096\n"


def test_st_blocks_are_what_the_dump_holds(tmp_path, dump_path):
    with mounted([dump_path], tmp_path / "mnt") as mnt:
        held = len(spec().pages) - 1  # every dumped frame but the lost one
        assert os.stat(mnt / "phys").st_blocks * 512 == held * PAGE
        assert os.stat(mnt / "phys").st_size == 64 * PAGE
        assert os.stat(mnt / "kvirt").st_blocks == 0
        out = subprocess.run(
            ["du", "-sk", str(mnt / "phys"), str(mnt / "kvirt")],
            capture_output=True,
            text=True,
            check=True,
        )
        sizes = [int(line.split()[0]) for line in out.stdout.splitlines()]
        assert sizes == [held * PAGE // 1024, 0]
        info = os.stat(mnt / "info" / "PAGESIZE")
        assert info.st_blocks == 1 and info.st_size == 5


def test_debug_logs_one_line_per_failed_read_and_no_mfusepy_noise(tmp_path, dump_path):
    mnt, log = tmp_path / "mnt", tmp_path / "stderr"
    proc = start(["--debug", dump_path], mnt, log)
    try:
        assert pread_errno(mnt / "kvirt", 8, KTEXT - KVIRT_BASE + EXCLUDED * PAGE) == errno.EIO
        assert pread_errno(mnt / "phys", 16, CORRUPT * PAGE + 32) == errno.EIO
    finally:
        stop(proc, mnt)
    text = log.read_text()
    assert "Set libFUSE" not in text and "Traceback" not in text
    lines = [line for line in text.splitlines() if line.startswith("vmcorefs: read ")]
    offset = KTEXT - KVIRT_BASE + EXCLUDED * PAGE
    assert lines[0] == (
        f"vmcorefs: read /kvirt at offset {offset:#x} (+0x8): kvirt {KTEXT + EXCLUDED * PAGE:#x}: "
        "absent: pfn 0x10 excluded by makedumpfile (dump level 31)"
    )
    assert re.fullmatch(
        rf"vmcorefs: read /phys at offset {CORRUPT * PAGE + 32:#x} \(\+0x10\): "
        rf"phys {CORRUPT * PAGE + 32:#x}: corrupt: pfn 0x14: zlib data inflate to 2,011 bytes "
        r"\(at offset 0x[0-9a-f]+\)",
        lines[1],
    )
    assert len(lines) == 2


def test_a_bug_is_eio_and_one_log_record_never_einval(tmp_path, dump_path):
    """A defect injected in the daemon (the README's text raises KeyError): ``stat`` fails with
    EIO, the daemon logs the bug once a failure with its traceback, and keeps serving."""
    script = tmp_path / "buggy.py"
    script.write_text(
        "import sys\n"
        "import vmcorefs.tree as tree\n"
        "def broken(dump):\n"
        "    raise KeyError('injected')\n"
        "tree.readme_text = broken\n"
        "from vmcorefs.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    mnt, log = tmp_path / "mnt", tmp_path / "stderr"
    proc = start(["-f", dump_path], mnt, log, argv0=[sys.executable, str(script)])
    try:
        for _ in range(2):  # not cached: computed (and failing) again
            with pytest.raises(OSError) as info:
                os.stat(mnt / "README")
            assert info.value.errno == errno.EIO
        assert (mnt / "info" / "PAGESIZE").read_text() == "4096\n"
    finally:
        stop(proc, mnt)
    text = log.read_text()
    records = [line for line in text.splitlines() if line.startswith("vmcorefs: ")]
    assert records == ["vmcorefs: getattr /README: bug: KeyError('injected')"] * 2
    assert text.count("Traceback") == 2 and "EINVAL" not in text


def test_a_truncated_sample_mounts_with_a_warning_and_says_why(tmp_path, sample):
    cut = tmp_path / "t.kdump"
    with open(sample.dump, "rb") as f:
        cut.write_bytes(f.read(4_000_000))
    whole = os.path.getsize(sample.dump)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = run_vmcorefs(str(cut), str(mnt))
    try:
        assert out.returncode == 0, out.stderr
        assert out.stderr == (
            f"vmcorefs: {cut}: warning: the file is truncated at 4,000,000 of {whole:,} bytes: "
            "its headers describe more than it holds; what lies past its end reads as an I/O "
            "error (EIO) and the files that need it say so\n"
        )
        summary = (mnt / "summary").read_text()
        trunc = f"truncated at 4,000,000 of {whole:,} bytes"
        assert f"\ntruncated: {cut}: {trunc}; what lies past its end reads as EIO\n" in summary
        assert "\ndamage: " in summary
        tasks = summary.split("\ntasks: ", 1)[1].split("\n", 1)[0]
        assert tasks.startswith("unavailable: ") and trunc in tasks
        assert "kernel without BTF" not in summary  # the kernel has BTF; the file is cut
        for name in ("ps", "btf", "dmesg", "uts/release", "mm/usage"):
            text = (mnt / name).read_text()
            assert text.startswith("unavailable: ") and trunc in text, (name, text)
    finally:
        unmount(mnt)


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("rw", "vmcorefs: -o rw: the mount is always read-only\n"),
        ("allow_other,rw", "vmcorefs: -o rw: the mount is always read-only\n"),
        ("bogus", "vmcorefs: -o bogus: unknown mount option (libfuse does not take it)\n"),
        (
            "max_threads=x",
            "vmcorefs: -o max_threads=x: invalid value (libfuse does not take it)\n",
        ),
        (
            "max_read=x",
            "vmcorefs: -o max_read=x: a number of bytes from 1 to 1048576 is needed\n",
        ),
    ],
)
def test_refused_options_are_one_line_naming_the_option(tmp_path, dump_path, option, line):
    if fuse_available():
        pytest.skip(fuse_available())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = run_vmcorefs("-o", option, dump_path, str(mnt))
    try:
        assert (out.returncode, out.stderr) == (2, line)
        assert not is_mounted(mnt)
    finally:
        unmount(mnt)
