"""A folder of dumps: mount time, ``ls``, ``cat index`` and the daemon's memory.

    python3 benchmarks/bench_folder.py [--dumps N] [--max-open N] [--shared]

Builds N (default 100) small synthetic dumps laid out as kdump-tools does
(``YYYYMMDDHHMM/dump.YYYYMMDDHHMM`` and ``dmesg.YYYYMMDDHHMM``; kdump-compressed, ELF and
flattened), mounts the folder with the real command and prints: the time the command took to
return (against the same command for one of those dumps alone, and a do-nothing filesystem's
mount, in the same run), the first ``ls``, ``cat index`` (every dump opened in turn), and the
daemon's resident memory after mounting, after the index, after every ``NAME/summary``
was read and after a quiet while. ``--shared`` does the same for the unpacked folder of
``../shared/dumps``.
The issue's bounds: mount <= 1 s, ``cat index`` <= 10 s for 100 dumps, RSS <= 64 MiB plus
what the open dumps hold.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, dumps_dir, env, nullfs_mount, unmount, wait_mounted

sys.path.insert(0, str(REPO / "tests"))
import folderbuilder as fb  # noqa: E402


def make_folder(root: Path, count: int) -> None:
    for i in range(count):
        stamp = f"2026{(i // 28) % 12 + 1:02d}{i % 28 + 1:02d}{i % 24:02d}{i % 60:02d}"
        folder = root / stamp
        dump = folder / f"dump.{stamp}"
        kind = i % 10
        if kind < 7:
            fb.kdump(dump, i, crashtime=1790000000 + i * 3600)
        elif kind < 9:
            fb.elf(dump, i, crashtime=1790000000 + i * 3600)
        else:
            fb.flattened(dump, i)
        (folder / f"dmesg.{stamp}").write_text("[    0.000000] Linux version 6.1.0-test\n")


#: Seconds of quiet after the reads: the idle timer hands freed memory back (vmcorefs/heap.py).
QUIET = 16.0


def daemon_pid(mnt: str) -> int:
    """The vmcorefs process serving ``mnt`` (the command daemonised: find it by its argv)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if mnt.encode() in argv and any(b"vmcorefs" in a for a in argv):
            return int(pid)
    raise RuntimeError(f"no daemon for {mnt}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def mount(paths: list[str], *options: str):
    mnt = tempfile.mkdtemp(prefix="vmcorefs-folder-")
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vmcorefs", *options, *paths, mnt], check=True, env=env()
        )
        took = time.perf_counter() - t0
        wait_mounted(mnt)
        yield mnt, took
    finally:
        unmount(mnt)
        os.rmdir(mnt)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(folder: str, options: list[str], label: str) -> None:
    with mount([folder], *options) as (mnt, took):
        pid = daemon_pid(mnt)
        names, ls = timed(lambda: sorted(os.listdir(mnt)))
        rss0 = rss_mib(pid)
        index, cat = timed(lambda: Path(mnt, "index").read_text())
        rss1 = rss_mib(pid)
        _, summaries = timed(
            lambda: [Path(mnt, n, "summary").read_bytes() for n in names if n != "index"]
        )
        rss2 = rss_mib(pid)
        time.sleep(QUIET)
        rss3 = rss_mib(pid)
        rows = [line.split("\t") for line in index.splitlines()[1:]]
        failed = sum(row[1] == "unknown" and row[3].startswith("unavailable: ") for row in rows)
    print(f"{label}: {len(names) - 1} dumps, index {len(rows)} lines ({failed} not opened)")
    print(f"  mount (command returns)   {took:6.3f} s")
    print(f"  first ls                  {ls:6.3f} s")
    print(f"  cat index                 {cat:6.3f} s")
    print(f"  every NAME/summary        {summaries:6.3f} s")
    print(
        f"  daemon RSS, MiB: mounted {rss0:.1f}, after index {rss1:.1f}, after summaries "
        f"{rss2:.1f}, {QUIET:.0f} s later {rss3:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dumps", type=int, default=100)
    ap.add_argument("--max-open", type=int, default=8)
    ap.add_argument("--shared", action="store_true", help="also the unpacked ../shared/dumps")
    args = ap.parse_args()
    options = ["--max-open", str(args.max_open)]
    with tempfile.TemporaryDirectory(prefix="vmcorefs-crash-") as tmp:
        crash = Path(tmp) / "crash"
        make_folder(crash, args.dumps)
        one = next(crash.iterdir())
        refs = []
        for _ in range(3):
            with mount([str(one / f"dump.{one.name}")]) as (_, took):
                refs.append(took)
        with nullfs_mount() as _:
            pass
        t0 = time.perf_counter()
        with nullfs_mount():
            null = time.perf_counter() - t0
        print(f"reference: one dump alone mounts in {min(refs):.3f} s; do-nothing fs {null:.3f} s")
        measure(str(crash), options, f"synthetic folder, --max-open {args.max_open}")
    if args.shared:
        measure(str(dumps_dir()), options, "../shared/dumps (unpacked)")


if __name__ == "__main__":
    main()
