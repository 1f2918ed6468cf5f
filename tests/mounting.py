"""Mount helpers for the tests that exercise the FUSE interface itself. Always unmounted."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmcorefs.cli import mounted_fuse_at

REPO = Path(__file__).resolve().parents[1]


def fuse_available() -> str | None:
    """None when mounting works here, else why not."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("fusermount3"):
        return "no fusermount3 (apt-get install fuse3)"
    return None


#: Whether something is mounted at a path (``/proc/self/mountinfo``, as the CLI reads it).
is_mounted = mounted_fuse_at


def vmcorefs_cmd() -> list[str]:
    return [sys.executable, "-m", "vmcorefs"]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def unmount(path: Path) -> None:
    for args in (["-u"], ["-uz"]):
        if not is_mounted(path):
            return
        subprocess.run(["fusermount3", *args, str(path)], capture_output=True, check=False)
        for _ in range(50):
            if not is_mounted(path):
                return
            time.sleep(0.05)


def run_vmcorefs(*args: str) -> subprocess.CompletedProcess:
    """The real command with ``args``, run to its end (it daemonises once mounted)."""
    return subprocess.run(
        [*vmcorefs_cmd(), *args], capture_output=True, text=True, env=env(), timeout=60, check=False
    )


@contextlib.contextmanager
def mounted(dumps: list[str], mnt: Path, *options: str):
    """Mount with the real command (daemonised), yield the mount point, always unmount."""
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    mnt.mkdir(exist_ok=True)
    out = run_vmcorefs(*options, *dumps, str(mnt))
    try:
        assert out.returncode == 0, out.stderr
        assert is_mounted(mnt)
        yield mnt
    finally:
        unmount(mnt)


def start_foreground(dumps: list[str], mnt: Path, **popen) -> subprocess.Popen:
    """``vmcorefs -f`` in the background, returned once the mount is there (or skip)."""
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen([*vmcorefs_cmd(), "-f", *dumps, str(mnt)], env=env(), **popen)
    for _ in range(200):
        if is_mounted(mnt) or proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc
