"""Load: 8 concurrent readers of random reads through a real mount of the bundled sample.

Each reader mixes phys, kvirt, sym/, dmesg and info/ reads at random offsets and sizes. Every
read's result (its sha256, or its errno) is compared afterwards with the same read done by the
library in one thread: 0 mismatches, and no error where the library has data. The daemon's
RSS is sampled against ``--cache-size``. ``VMCOREFS_LOAD_SECONDS`` sets the duration (CI: 10 s;
``benchmarks/load.py`` runs the full 60 s).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

import vmcorefs
from tests.mounting import env, fuse_available, is_mounted, unmount, vmcorefs_cmd
from vmcorefs.errors import FaultError
from vmcorefs.tree import build_tree

pytestmark = [pytest.mark.mount, pytest.mark.load]
SAMPLE = Path(__file__).parent / "data" / "sample" / "vmcore.kdump"
THREADS = 8
CACHE_MIB = 16
KVIRT_BASE = 1 << 63
MiB = 1 << 20
#: RSS the daemon may use beyond its caches (Python, the tree, the symbol table, BTF, tasks).
RSS_SLACK_MIB = 200


def _seconds() -> float:
    return float(os.environ.get("VMCOREFS_LOAD_SECONDS", "10"))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.randint(1, 4096)
    if r < 0.95:
        return rng.randint(4097, 64 << 10)
    return rng.randint(64 << 10, MiB)


def _plan(tree, rng: random.Random):
    """The targets of random reads: (path, offset generator) by kind."""
    dump = tree.dump
    ranges = list(dump.source.ranges())
    syms = [n for n in tree.lookup("sym").entries()]
    text = dump.symbols.kallsyms_text()
    addrs = [int(line.split(" ", 1)[0], 16) for line in text.splitlines()[::50]]
    addrs = [a for a in addrs if a >= KVIRT_BASE + 8192]  # not the per-CPU offsets
    info = list(tree.lookup("info").entries())
    dmesg_size = tree.lookup("dmesg").size()

    def phys():
        start, end = ranges[rng.randrange(len(ranges))]
        return "phys", rng.randrange(start, end)

    def kvirt():
        return "kvirt", addrs[rng.randrange(len(addrs))] + rng.randrange(-4096, 8192) - KVIRT_BASE

    def sym():
        return f"sym/{syms[rng.randrange(len(syms))]}", rng.choice([0, 0, rng.randrange(64)])

    def dmesg():
        return "dmesg", rng.randrange(dmesg_size + 100)

    def info_key():
        return f"info/{info[rng.randrange(len(info))]}", rng.choice([0, 0, 1, 5])

    return [phys, phys, kvirt, kvirt, sym, dmesg, info_key]


def _lib_read(tree, path: str, offset: int, size: int) -> bytes | int:
    """What one pread through the mount must give: the bytes, or an errno."""
    node = tree.lookup(path)
    out = b""
    # The kernel may split a read of a page-cache file into several requests: keep reading
    # until the size, EOF, or a fault after some data (a short read).
    while len(out) < size:
        try:
            chunk = node.read(offset + len(out), size - len(out))
        except FaultError:
            if not out:
                return errno.EIO
            break
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.skipif(not SAMPLE.exists(), reason="no bundled sample")
def test_eight_readers_against_the_library(tmp_path):
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    dump = vmcorefs.open_dump(str(SAMPLE))
    tree = build_tree(dump)
    tree.dump = dump
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen(
        [*vmcorefs_cmd(), "-f", "--cache-size", str(CACHE_MIB), str(SAMPLE), str(mnt)],
        env=env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    records: list[list[tuple[str, int, int, object]]] = [[] for _ in range(THREADS)]
    rss: list[int] = []
    try:
        for _ in range(400):
            if is_mounted(mnt):
                break
            time.sleep(0.05)
        assert is_mounted(mnt)
        rss.append(_rss_kib(proc.pid))
        stop = time.monotonic() + _seconds()

        def reader(i: int) -> None:
            rng = random.Random(1000 + i)
            kinds = _plan(tree, rng)
            fds: dict[str, int] = {}
            try:
                while time.monotonic() < stop:
                    path, offset = kinds[rng.randrange(len(kinds))]()
                    size = _size(rng)
                    fd = fds.get(path)
                    if fd is None:
                        fd = fds[path] = os.open(mnt / path, os.O_RDONLY)
                    try:
                        got: object = hashlib.sha256(os.pread(fd, size, offset)).digest()
                    except OSError as exc:
                        got = exc.errno
                    records[i].append((path, offset, size, got))
                    if len(fds) > 64:
                        for f in fds.values():
                            os.close(f)
                        fds.clear()
            finally:
                for f in fds.values():
                    os.close(f)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rss.append(_rss_kib(proc.pid))
            time.sleep(0.25)
        for t in threads:
            t.join()
        rss.append(_rss_kib(proc.pid))
        assert proc.poll() is None  # the daemon lives
    finally:
        unmount(mnt)
        if proc.poll() is None:
            proc.wait(timeout=30)

    counts: collections.Counter = collections.Counter()
    mismatches = []
    for rec in records:
        for path, offset, size, got in rec:
            kind = path.split("/")[0]
            counts[f"{kind} reads"] += 1
            want = _lib_read(tree, path, offset, size)
            if isinstance(want, bytes):
                want = hashlib.sha256(want).digest()
            if isinstance(got, int):
                counts["errors"] += 1
            if got != want:
                mismatches.append((path, offset, size, got, want))
    reads = sum(len(r) for r in records)
    print(
        f"\nload: {THREADS} readers x {_seconds():g} s: {reads} reads ({dict(counts)}), "
        f"{len(mismatches)} mismatches; daemon RSS {rss[0] // 1024} MiB after mount, "
        f"max {max(rss) // 1024} MiB (--cache-size {CACHE_MIB})"
    )
    assert reads > THREADS * 10
    assert not mismatches, mismatches[:5]
    assert max(rss) // 1024 <= rss[0] // 1024 + CACHE_MIB + RSS_SLACK_MIB, rss
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
