"""kdump-compressed, flattened and huge dumps: throughput against drgn and the transport.

    python3 benchmarks/bench_kdump.py [--rounds N] [--only seq,random,tib,flat,codecs]

Prints, from one run:

- seq: sequential 1 MiB reads (into a page-aligned buffer, as dd reads) through ``/kvirt``
  of the kernel image (``_text`` to ``_end``) of ``kaslr-256m/mdf-d31-{zlib,lzo}.kdump``,
  against drgn's ``prog.read`` of the same byte ranges (the image's pages that the dump
  holds), each round cold (a fresh mount, a fresh drgn Program), best round of each kept; the
  bytes read are checked to be equal.
- random: random page-aligned 4 KiB reads/s of ``/phys`` (pages the dump holds), against the
  do-nothing FUSE filesystem, cold (first reads after mounting) and warm (cache filled).
- tib: a synthetic kdump of 1 TiB of RAM with a few thousand dumped pages: mount time (to the
  mount appearing, foreground) and the daemon's peak RSS, and ``open_dump`` in-process.
- flat: indexing a 1 GiB flattened stream (64 KiB records as makedumpfile writes them, and
  4 KiB records), with the stream in the page cache and evicted from it.
- codecs: decompression of the real dumps' pages, 1 thread against 2 (which codecs release
  the GIL usefully).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    REPO,
    MiB,
    dumps_dir,
    env,
    nullfs_mount,
    random_reads,
    unmount,
    vmcorefs_mount,
    wait_mounted,
)

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

KVIRT_MASK = 0x7FFFFFFFFFFFFFFF
PAGE = 4096


# -- seq: /kvirt of the kernel image against drgn -------------------------------------------
def image_segments(dump_path: str, start: int, end: int) -> list[tuple[int, int]]:
    """The runs of ``[start, end)`` that the dump holds (found with the library, untimed)."""
    import vmcorefs

    segs = []
    with vmcorefs.open_dump(dump_path) as dump:
        pos = start
        while pos < end:  # bounded: every pass advances at least one page
            got = dump.kvirt.read(pos, min(MiB, end - pos))
            if not got:
                pos = (pos // PAGE + 1) * PAGE
                continue
            if segs and segs[-1][0] + segs[-1][1] == pos:
                segs[-1] = (segs[-1][0], segs[-1][1] + len(got))
            else:
                segs.append((pos, len(got)))
            pos += len(got)
    return segs


def read_fuse(kvirt: str, segs: list[tuple[int, int]]) -> tuple[float, bytes]:
    """Read the segments in 1 MiB preads into a page-aligned buffer, as dd does (Python's own
    bytes buffers are not aligned, and the kernel splits such a read in two FUSE requests)."""
    fd = os.open(kvirt, os.O_RDONLY)
    buf = mmap.mmap(-1, MiB)
    view = memoryview(buf)
    parts = []
    try:
        t0 = time.perf_counter()
        for addr, length in segs:
            pos, end = addr & KVIRT_MASK, (addr & KVIRT_MASK) + length
            while pos < end:
                want = min(MiB, end - pos)
                got = os.preadv(fd, [view[:want]], pos)
                if not got:
                    raise RuntimeError(f"nothing at {pos:#x}")
                parts.append(bytes(view[:got]))
                pos += got
        took = time.perf_counter() - t0
    finally:
        view.release()
        buf.close()
        os.close(fd)
    return took, hashlib.sha256(b"".join(parts)).digest()


def read_drgn(dump_path: str, segs: list[tuple[int, int]]) -> tuple[float, bytes]:
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(dump_path)
    parts = []
    t0 = time.perf_counter()
    for addr, length in segs:
        pos, end = addr, addr + length
        while pos < end:
            n = min(MiB, end - pos)
            parts.append(prog.read(pos, n))
            pos += n
    took = time.perf_counter() - t0
    return took, hashlib.sha256(b"".join(parts)).digest()


def bench_seq(case: Path, rounds: int) -> None:
    try:
        import drgn  # noqa: F401
    except ImportError:
        print("seq: drgn is not installed (pip install drgn): skipped")
        return
    truth = json.loads((case / "truth.json").read_text())
    start, end = truth["symbols"]["_text"], truth["symbols"]["_end"]
    print(f"seq: /kvirt _text.._end ({(end - start) / MiB:.1f} MiB), 1 MiB reads, cold rounds")
    print(f"  {'dump':24}{'held':>9}{'vmcorefs':>14}{'drgn':>14}{'ratio':>8}")
    for name in ("mdf-d31-zlib.kdump", "mdf-d31-lzo.kdump"):
        path = str(case / name)
        segs = image_segments(path, start, end)
        total = sum(n for _, n in segs)
        ours, theirs, digests = [], [], set()
        for _ in range(rounds):
            took, digest = read_drgn(path, segs)
            theirs.append(total / took)
            digests.add(("drgn", digest))
            with vmcorefs_mount([path]) as (mnt, _):
                took, digest = read_fuse(f"{mnt}/kvirt", segs)
            ours.append(total / took)
            digests.add(("vmcorefs", digest))
        same = len({d for _, d in digests}) == 1
        v, d = max(ours), max(theirs)
        ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
        print(
            f"  {name:24}{total / MiB:>6.1f} MiB{v / MiB:>8.0f} MiB/s{d / MiB:>8.0f} MiB/s"
            f"{v / d:>8.2f}  (median of per-round ratios {statistics.median(ratios):.2f})"
            f"{'' if same else '  BYTES DIFFER'}"
        )


# -- random 4 KiB against the do-nothing filesystem -----------------------------------------
def held_ranges(dump_path: str) -> list[tuple[int, int]]:
    from vmcorefs.dumpfile.detect import open_source

    src = open_source([dump_path])
    try:
        return [(s * PAGE, e * PAGE) for s, e in src.dumped.runs()]
    finally:
        src.close()


def bench_random(case: Path, rounds: int, count: int = 5000) -> None:
    name = "mdf-d31-zlib.kdump"
    path = str(case / name)
    ranges = held_ranges(path)
    cold, warm, null = [], [], []
    with nullfs_mount() as nfs:
        data = f"{nfs}/data"
        for r in range(rounds):
            with vmcorefs_mount([path]) as (mnt, _):
                null.append(random_reads(data, ranges, count, seed=r))
                cold.append(random_reads(f"{mnt}/phys", ranges, count, seed=100 + r))
                random_reads(f"{mnt}/phys", ranges, 4 * count, seed=r)  # fill the cache
                warm.append(random_reads(f"{mnt}/phys", ranges, count, seed=r))
    n = max(null)

    def median_ratio(xs):
        return statistics.median(a / b for a, b in zip(xs, null, strict=True))

    print(f"random: 4 KiB preads/s of /phys over the pages {name} holds ({count} a round)")
    print(f"  do-nothing filesystem {n:>8.0f} op/s (best round)")
    for label, xs in (("cold", cold), ("warm", warm)):
        print(
            f"  vmcorefs {label}         {max(xs):>8.0f} op/s  best/best {max(xs) / n:.2f}, "
            f"median of per-round ratios {median_ratio(xs):.2f}"
        )


# -- the 1 TiB synthetic dump --------------------------------------------------------------
def make_tib(path: Path, dumped: int = 4000) -> None:
    import random

    from kdumpwriter import START_KERNEL_MAP, KdumpSpec, PageTables, write_kdump

    max_mapnr = 1 << 28  # 1 TiB of 4 KiB frames
    rng = random.Random(1)
    tables = PageTables(first_table_pfn=0x200)
    for i in range(512):  # a kernel image: 2 MiB at 16 MiB, 4 KiB pages
        tables.map_4k(START_KERNEL_MAP + 0x1000000 + i * PAGE, 0x1000000 + i * PAGE)
    pages = {p: rng.randbytes(64) * 64 for p in rng.sample(range(max_mapnr), dumped)}
    pages.update({0x1000 + i: rng.randbytes(PAGE) for i in range(512)})
    pages.update(tables.pages())
    root = START_KERNEL_MAP + tables.root * PAGE
    vmci = (
        f"OSRELEASE=6.1.0-tib\nPAGESIZE=4096\nSYMBOL(init_top_pgt)={root:x}\n"
        "NUMBER(phys_base)=0\nKERNELOFFSET=0\nNUMBER(pgtable_l5_enabled)=0\n"
    ).encode()
    write_kdump(path, KdumpSpec(max_mapnr=max_mapnr, pages=pages, vmcoreinfo=vmci))


def bench_tib(rounds: int) -> None:
    import vmcorefs

    with tempfile.TemporaryDirectory(prefix="vmcorefs-tib-") as tmp:
        path = Path(tmp) / "tib.kdump"
        make_tib(path)
        st = os.stat(path)
        opens = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            with vmcorefs.open_dump(str(path)) as dump:
                opens.append(time.perf_counter() - t0)
                assert dump.phys.size == 1 << 40
        mounts, rss = [], []
        for _ in range(rounds):
            mnt = tempfile.mkdtemp(prefix="mnt-", dir=tmp)
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "vmcorefs", "-f", str(path), mnt], env=env()
            )
            try:
                wait_mounted(mnt)
                mounts.append(time.perf_counter() - t0)
                with open(f"{mnt}/phys", "rb") as f:
                    f.seek(0x1000000)
                    assert len(f.read(PAGE)) == PAGE
                rss.append(_vm_hwm(proc.pid))
            finally:
                unmount(mnt)
                proc.wait(timeout=30)
        returns, seeks = [], {}
        for _ in range(rounds):
            with vmcorefs_mount([str(path)]) as (mnt, took):
                returns.append(took)
                for name, took_each in seek_times(mnt).items():
                    seeks.setdefault(name, []).extend(took_each)
        print(
            f"tib: 1 TiB of RAM (max_mapnr 2**28), file {st.st_size / MiB:.0f} MiB apparent, "
            f"{st.st_blocks * 512 / MiB:.0f} MiB on disk"
        )
        print(f"  open_dump in-process    best {min(opens):.3f} s")
        print(f"  mount (-f, to mounted)  best {min(mounts):.3f} s, worst {max(mounts):.3f} s")
        print(f"  mount (command returns) best {min(returns):.3f} s, worst {max(returns):.3f} s")
        print(f"  daemon peak RSS         {max(rss) / MiB:.0f} MiB (VmHWM)")
        for name, times in seeks.items():
            print(
                f"  lseek {name:<17} median {statistics.median(times) * 1e6:.0f} µs, "
                f"max {max(times) * 1e6:.0f} µs ({len(times)} calls, target <= 1 ms each)"
            )


def seek_times(mnt: str, count: int = 200) -> dict[str, list[float]]:
    """Seconds of each ``lseek(SEEK_DATA)``/``lseek(SEEK_HOLE)`` at random offsets of ``phys``
    (1 TiB, a few thousand pages) and ``kvirt`` (from anywhere: the kernel image is all that
    is mapped), on a fresh mount: the first calls load the index blocks and page tables."""
    import errno
    import random

    rng = random.Random(3)
    out: dict[str, list[float]] = {}
    for name, size in (("phys", 1 << 40), ("kvirt", (1 << 63) - 1)):
        fd = os.open(f"{mnt}/{name}", os.O_RDONLY)
        try:
            for whence, label in ((os.SEEK_DATA, "SEEK_DATA"), (os.SEEK_HOLE, "SEEK_HOLE")):
                times = out.setdefault(f"{name} {label}", [])
                for _ in range(count):
                    offset = rng.randrange(size)
                    t0 = time.perf_counter()
                    try:
                        os.lseek(fd, offset, whence)
                    except OSError as exc:
                        if exc.errno != errno.ENXIO:
                            raise
                    times.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
    return out


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- flattened indexing ---------------------------------------------------------------------
def make_flat(path: Path, record_size: int, gib: float = 1.0) -> int:
    from kdumpwriter import KdumpSpec, kdump_chunks, write_flattened

    n = int(gib * (1 << 30)) // PAGE
    spec = KdumpSpec(max_mapnr=n, pages={}, descs={0: (1, PAGE, 0)}, compression="none")
    desc_off = next(o for o, d in kdump_chunks(spec)[0] if len(d) == 24)
    data_off = desc_off + n * 24
    spec.descs = {pfn: (data_off + pfn * PAGE, PAGE, 0) for pfn in range(n)}
    meta, _ = kdump_chunks(spec)
    block = os.urandom(1 << 20)

    def writes():
        yield from ((o, d) for o, d in meta if d)
        for off in range(0, n * PAGE, len(block)):
            yield data_off + off, block[: min(len(block), n * PAGE - off)]

    return write_flattened(path, writes(), record_size=record_size)


def bench_flat(rounds: int) -> None:
    from vmcorefs.dumpfile.flattened import FlattenedFile
    from vmcorefs.dumpfile.source import DumpFile

    print("flat: indexing a 1 GiB flattened stream")
    with tempfile.TemporaryDirectory(prefix="vmcorefs-flat-") as tmp:
        for record_size in (65536, 4096):
            path = Path(tmp) / f"flat-{record_size}"
            records = make_flat(path, record_size)
            size = os.stat(path).st_size
            warm, cold = [], []
            for _ in range(rounds):
                for bucket, evict in ((cold, True), (warm, False)):
                    if evict:
                        fd = os.open(path, os.O_RDONLY)
                        os.fsync(fd)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.close(fd)
                    t0 = time.perf_counter()
                    flat = FlattenedFile(DumpFile(str(path)), progress=lambda d, t: None)
                    bucket.append(time.perf_counter() - t0)
                    flat.close()
            print(
                f"  {size / (1 << 30):.2f} GiB, {records} records of {record_size // 1024} KiB: "
                f"{min(warm):.3f} s in the page cache, {min(cold):.3f} s evicted from it"
            )
            os.unlink(path)


# -- codecs: does decompressing in two threads help? ----------------------------------------
def bench_codecs(root: Path) -> None:
    from vmcorefs.dumpfile import compression
    from vmcorefs.dumpfile.detect import open_source

    files = {
        "zlib": root / "kaslr-256m" / "mdf-d31-zlib.kdump",
        "lzo": root / "kaslr-256m" / "mdf-d31-lzo.kdump",
        "snappy": root / "la57-nokaslr-384m" / "mdf-d31-snappy.kdump",
        "zstd": root / "la57-nokaslr-384m" / "mdf-d31-zstd.kdump",
    }
    print("codecs: real pages decompressed, 1 thread against 2 (GIL released usefully?)")
    for name, path in files.items():
        if not path.exists():
            continue
        src = open_source([str(path)])
        refs = [r for r in src.page_refs(0, min(src.max_mapnr, 1 << 17)) if r and r[2]]
        stored = [(r[2], src.file.pread(r[0], r[1])) for r in refs[:4000]]
        src.close()

        def work(items):
            for flags, data in items:
                compression.decompress(flags, data, PAGE)

        work(stored)
        t0 = time.perf_counter()
        work(stored * 3)
        one = time.perf_counter() - t0
        half = len(stored) * 3 // 2
        batch = stored * 3
        threads = [
            threading.Thread(target=work, args=(batch[:half],)),
            threading.Thread(target=work, args=(batch[half:],)),
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        two = time.perf_counter() - t0
        per = one / len(batch) * 1e6
        print(f"  {name:7} {per:6.1f} µs/page, 2 threads: {one / two:.2f}× ({len(stored)} pages)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="seq,random,tib,flat,codecs")
    args = parser.parse_args()
    only = set(args.only.split(","))
    root = dumps_dir()
    case = root / "kaslr-256m"
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    if "codecs" in only:
        bench_codecs(root)
    if "seq" in only:
        bench_seq(case, args.rounds)
    if "random" in only:
        bench_random(case, args.rounds)
    if "tib" in only:
        bench_tib(args.rounds)
    if "flat" in only:
        bench_flat(args.rounds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"(benchmark process peak RSS {peak / 1024:.0f} MiB; load average now "
          f"{os.getloadavg()[0]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
