"""Who can read a mount, what it can reach, and that the dump is never written.

By default only the mounting user reads the tree (a second uid is refused; with
``-o allow_other`` it reads, which shows the refusal is the mount's and not the path's); no
path leads outside the tree (no symlinks, ``..`` resolves inside the tree); the dump is opened
read-only (the daemon's descriptor) and its sha256 is the same before mounting and after.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import vmcorefs
from tests import fuzzing as fz
from tests.mounting import mounted
from vmcorefs.tree import NotFound, build_tree

NOBODY = 65534


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def public_dir():
    """A folder that uid 65534 may traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="vmcorefs-sec-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dump(public_dir):
    path = public_dir / "dump.kdump"
    path.write_bytes(fz.kdump_seed("zlib")[0])
    path.chmod(0o444)
    return path


def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a reader as a second uid")
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.mount
def test_only_the_mounting_user_reads(public_dir, dump):
    with mounted([str(dump)], public_dir / "mnt") as mnt:
        assert (mnt / "info" / "PAGESIZE").read_text() == "4096\n"  # the owner reads
        for target in (mnt / "info" / "PAGESIZE", mnt / "phys", mnt):
            out = _as_nobody("dd", f"if={target}", "of=/dev/null", "bs=4096", "count=1")
            assert out.returncode != 0, target
            assert "Permission denied" in out.stderr, out.stderr
        out = _as_nobody("ls", str(mnt))
        assert out.returncode != 0


@pytest.mark.mount
def test_allow_other_lets_the_second_uid_read(public_dir, dump):
    with mounted([str(dump)], public_dir / "mnt", "-o", "allow_other") as mnt:
        out = _as_nobody("cat", str(mnt / "info" / "PAGESIZE"))
        assert out.returncode == 0 and out.stdout == "4096\n", out.stderr
        out = _as_nobody("dd", f"if={mnt / 'phys'}", "of=/dev/null", "bs=4096", "count=1",
                         f"skip={0x10_0000 // 4096}")  # fmt: skip
        assert out.returncode == 0, out.stderr


def test_lookups_stay_inside_the_tree(tmp_path):
    path = tmp_path / "core"
    path.write_bytes(fz.elf_seed()[0])
    tree = build_tree(vmcorefs.open_dump(str(path)))
    for path in ("..", "../etc/passwd", "info/../../etc", "sym/..", "/../phys", "./phys",
                 "info/%2E%2E", "phys/x", "info/PAGESIZE/..", "\0", "sym/\0"):  # fmt: skip
        with pytest.raises(NotFound):
            tree.lookup(path)


@pytest.mark.mount
def test_no_symlinks_and_dotdot_is_the_vfs(tmp_path, dump):
    with mounted([str(dump)], tmp_path / "mnt") as mnt:
        kinds = set()
        for root, dirs, files in os.walk(mnt, followlinks=False):
            for name in dirs + files:
                mode = os.lstat(Path(root) / name).st_mode
                kinds.add(stat.S_IFMT(mode))
                assert not stat.S_ISLNK(mode)
                assert stat.S_IMODE(mode) in (0o444, 0o555)
        assert kinds == {stat.S_IFREG, stat.S_IFDIR}
        assert os.path.samefile(mnt / "info" / "..", mnt)
        with pytest.raises(OSError) as info:
            os.readlink(mnt / "phys")
        assert info.value.errno == errno.EINVAL


def _daemon_fds_on(path: Path) -> list[tuple[int, int]]:
    """(pid, open flags) of every descriptor any process holds on ``path``."""
    out = []
    target = str(path.resolve())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        flags = next(int(line.split()[1], 8) for line in f
                                     if line.startswith("flags:"))  # fmt: skip
                    out.append((int(pid), flags))
        except OSError:
            continue
    return out


@pytest.mark.mount
def test_dump_opened_read_only_and_never_written(tmp_path, dump):
    before = _sha256(dump)
    mtime = dump.stat().st_mtime_ns
    with mounted([str(dump)], tmp_path / "mnt") as mnt:
        fds = _daemon_fds_on(dump)
        assert fds and all(flags & os.O_ACCMODE == os.O_RDONLY for _, flags in fds), fds
        for root, _dirs, files in os.walk(mnt):
            for name in files:
                try:
                    with open(Path(root) / name, "rb", buffering=0) as f:
                        f.read(1 << 16)
                except OSError as exc:
                    assert exc.errno == errno.EIO
        with pytest.raises(OSError):
            os.open(mnt / "phys", os.O_RDWR)
    assert _sha256(dump) == before and dump.stat().st_mtime_ns == mtime
