"""Shared benchmark plumbing: mounting vmcorefs and the do-nothing filesystem, timing reads."""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
sys.path.insert(0, str(REPO))

from vmcorefs.cli import mounted_fuse_at  # noqa: E402 - this checkout's, not an installed one


def env() -> dict[str, str]:
    """The environment of the processes measured: this checkout first; bytecode cached as an
    installed package has it (a PYTHONDONTWRITEBYTECODE=1 shell would recompile every module
    at every mount and measure the compiler)."""
    out = dict(os.environ, PYTHONPATH=str(REPO))
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


#: Whether something is mounted at a path (``/proc/self/mountinfo``, as the CLI reads it).
is_mounted = mounted_fuse_at


def unmount(path: str) -> None:
    for flag in ("-u", "-uz"):
        if is_mounted(path):
            subprocess.run(["fusermount3", flag, path], capture_output=True, check=False)
            for _ in range(100):
                if not is_mounted(path):
                    break
                time.sleep(0.02)


def wait_mounted(path: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not is_mounted(path):
        if time.monotonic() > end:
            raise RuntimeError(f"{path} did not mount")
        time.sleep(0.01)


def on_cpus(cpus: set[int] | None):
    """A ``preexec_fn`` running the child on ``cpus`` (None: wherever the scheduler likes)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def vmcorefs_mount(
    dumps: list[str], *options: str, cpus: set[int] | None = None
) -> Iterator[tuple[str, float]]:
    """Mount with the real command; yield (mount point, seconds the command took). ``cpus``:
    the daemon's CPUs (its threads inherit them)."""
    mnt = tempfile.mkdtemp(prefix="vmcorefs-bench-")
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vmcorefs", *options, *dumps, mnt],
            check=True,
            env=env(),
            preexec_fn=on_cpus(cpus),
        )
        took = time.perf_counter() - t0
        wait_mounted(mnt)
        yield mnt, took
    finally:
        unmount(mnt)
        os.rmdir(mnt)


@contextlib.contextmanager
def reference_mount(script: str, *args: str, cpus: set[int] | None = None) -> Iterator[str]:
    """Mount one of this folder's reference filesystems (``script``, run in the foreground
    with the mount point and ``args``) on ``cpus``; yield its mount point."""
    mnt = tempfile.mkdtemp(prefix=f"{Path(script).stem}-bench-")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / script), mnt, *args],
        env=env(),
        preexec_fn=on_cpus(cpus),
    )
    try:
        wait_mounted(mnt)
        yield mnt
    finally:
        unmount(mnt)
        proc.wait(timeout=30)
        os.rmdir(mnt)


def nullfs_mount(size: int = 1 << 40, cpus: set[int] | None = None):
    """The do-nothing filesystem (``nullfs.py``): its ``data`` file reads zeros."""
    return reference_mount("nullfs.py", str(size), cpus=cpus)


def passfs_mount(path: str, cpus: set[int] | None = None):
    """The pass-through filesystem (``passfs.py``): its ``data`` file reads ``path``."""
    return reference_mount("passfs.py", path, cpus=cpus)


def sequential(path: str, start: int, length: int, block: int = MiB) -> float:
    """Bytes per second reading ``[start, start+length)`` in ``block`` reads.

    The reads go into a page-aligned buffer, as ``dd`` does: the kernel sends one FUSE request
    per 1 MiB read then (into an unaligned buffer, such as a Python bytes object, a 1 MiB read
    spans 257 pages and becomes two requests).
    """
    buf = mmap.mmap(-1, block)
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        pos, end = start, start + length
        while pos < end:
            n = min(block, end - pos)
            got = os.preadv(fd, [memoryview(buf)[:n]], pos)
            if not got:
                raise RuntimeError(f"{path}: nothing at {pos:#x}")
            pos += got
        return length / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        buf.close()


def random_reads(
    path: str, ranges: list[tuple[int, int]], count: int, seed: int = 1, size: int = 4096
) -> float:
    """4 KiB preads per second at page-aligned random offsets inside ``ranges``."""
    rng = random.Random(seed)
    offsets = []
    for _ in range(count):
        start, end = rng.choice(ranges)
        offsets.append(start + rng.randrange((end - start) // size) * size)
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for off in offsets:
            os.pread(fd, size, off)
        return count / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def dumps_dir() -> Path:
    out = subprocess.run(
        [str(REPO.parent / "shared" / "dumps" / "unpack")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])
