"""The read path against its references, in one table: issue 17's speed targets.

    python3 benchmarks/bench_read.py [--rounds N] [--placements sched,one,two]
                                     [--only elf,walk,eio] [--drgn-python PYTHON] [--quick]

About 10 s a round and placement on 2 idle cores (drgn included): 5 rounds of the three
placements take under 3 minutes. ``--quick`` is a smoke run (seconds): one round, the
scheduler's placement, one kdump a codec, fewer samples; its ratios are not figures.

Each figure is the median, over N interleaved rounds (default 5), of a per-round ratio of
vmcorefs to its reference measured in the same round; the table shows it with the two medians
it compares and the target, one column per placement (bench_core's: the reader and the daemons
as the scheduler places them, all on one CPU, the reader on one and the daemons on the other).

- elf: ``kaslr-256m/vmcore.elf``, the file in the page cache. Sequential 1 MiB reads of
  ``/phys`` (RAM but its last MiB) and of ``/kvirt`` (the same RAM through the direct map)
  against the pass-through filesystem (``passfs.py``: one ``pread`` of the dump file into
  libfuse's buffer a request) reading as many bytes; random 4 KiB ``/kvirt`` reads against the
  do-nothing filesystem (``nullfs.py``); and, for scale, the pass-through against the
  do-nothing, sequential and random 4 KiB (its one ``pread`` a request and nothing else: the
  floor of a random read that copies the dump's bytes).
- walk: the kernel image (``_text`` to ``_end``) through ``/kvirt`` of each kdump (zlib, lzo
  of kaslr-256m; zlib, snappy, zstd of la57-nokaslr-384m) in 1 MiB reads into a page-aligned
  buffer, as a reader must: after a short read the next read starts where it stopped; after an
  ``EIO`` it goes on at the next page ("page by page"), or at the next data that
  ``lseek(SEEK_DATA)`` names ("SEEK_DATA"). Against drgn's ``prog.read`` doing the same walk
  (``drgn_walk.py``: 1 MiB reads, page by page where one faults), run by ``--drgn-python``
  (drgn 0.3.0 in a venv of its own). A fresh mount and a fresh drgn ``Program`` each round;
  MiB/s of the bytes the dump holds. Every walk must read the same bytes at the same places as
  the library (``vmcorefs.open_dump``) does: where one does not, a line says so.
  ``SEEK_DATA`` rows are n/a where it is not implemented: ``ENXIO``, ``EINVAL`` or ``ENOSYS``
  at a hole, or every hole's start answered with itself (what the kernel does for a FUSE
  filesystem without ``lseek``).
- eio: on a fresh mount of each kdump, 4 KiB and 1 MiB reads that start at absent pages of the
  kernel image (every 8th absent page: each the first of its neighbourhood met), the first
  time and again, interleaved with 4 KiB reads of present pages read once before (cached): the
  median time of each kind in a round, as a ratio to the present reads'.
- the transport's floor, each round: the do-nothing filesystem's 4 KiB and 1 MiB reads of a
  file whose every read fails with EIO, against its own 4 KiB read; and, per kdump, the MiB/s
  of a page-by-page walk were its EIO requests (one per absent page, each at that 1 MiB EIO
  time) all it cost, against drgn: no filesystem over this FUSE path can do better.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench_core import KVIRT_MASK, PLACEMENTS
from common import (
    REPO,
    MiB,
    dumps_dir,
    nullfs_mount,
    on_cpus,
    passfs_mount,
    random_reads,
    sequential,
    vmcorefs_mount,
)
from drgn_walk import PAGE, extents_digest

sys.path.insert(0, str(REPO))

KERNEL_HALF = 1 << 63  # /kvirt's offset is the address without its top bit
KDUMPS = (
    ("kaslr-256m", "mdf-d31-zlib.kdump"),
    ("kaslr-256m", "mdf-d31-lzo.kdump"),
    ("la57-nokaslr-384m", "mdf-d31-zlib.kdump"),
    ("la57-nokaslr-384m", "mdf-d31-snappy.kdump"),
    ("la57-nokaslr-384m", "mdf-d31-zstd.kdump"),
)
PLACEMENT_KEYS = {"sched": 0, "one": 1, "two": 2}  # --placements: bench_core.PLACEMENTS
COLUMN = {0: "scheduler's", 1: "one CPU", 2: "two CPUs"}
EIO_STRIDE = 8  # every 8th absent page is sampled
RANDOM_COUNT = 5000
QUICK_KDUMPS = {0, 1, 3, 4}  # one kdump a codec
QUICK_EIO_STRIDE = 64
QUICK_RANDOM_COUNT = 1000
MIN_ROUNDS = 5  # a figure is the median of at least this many rounds
SEEK_UNSUPPORTED = (errno.ENXIO, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


# -- the table ------------------------------------------------------------------------------
@dataclass
class Row:
    """One figure: per placement, per round, vmcorefs's value and its reference's."""

    label: str
    unit: str
    target: float | None
    higher_is_better: bool = True
    ours: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    refs: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    na: str = ""  #: why the figure is not measured (n/a), else ""

    def add(self, placement: int, ours: float, ref: float | None) -> None:
        self.ours[placement].append(ours)
        if ref is not None:
            self.refs[placement].append(ref)

    def cell(self, placement: int) -> str:
        ours, refs = self.ours.get(placement), self.refs.get(placement)
        if self.na or not ours:
            return "n/a"
        if not refs or len(refs) != len(ours):
            return f"n/a ({statistics.median(ours):.0f}/-)"
        ratio = statistics.median(a / b for a, b in zip(ours, refs, strict=True))
        missed = self.target is not None and (
            ratio < self.target if self.higher_is_better else ratio > self.target
        )
        values = f"{statistics.median(ours):.0f}/{statistics.median(refs):.0f}"
        return f"{ratio:.2f}{'!' if missed else ' '}({values})"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<='} {self.target:.2f}"


def print_table(rows: list[Row], placements: list[int], rounds: int) -> None:
    width = max(len(r.label) for r in rows if r.unit) + 2
    head = f"{'figure':{width}}{'unit':7}{'target':9}" + "".join(
        f"{COLUMN[p]:>22}" for p in placements
    )
    print(f"\nmedian of {rounds} per-round ratios (median vmcorefs/median reference); "
          "! misses the target")  # fmt: skip
    print(head)
    print("-" * len(head))
    for row in rows:
        if not row.unit:  # a heading
            print(row.label)
            continue
        cells = "".join(f"{row.cell(p):>22}" for p in placements)
        print(f"{row.label:{width}}{row.unit:7}{row.target_text():9}{cells}")


def heading(text: str) -> Row:
    return Row(text, "", None)


# -- elf: sequential and random against the pass-through and do-nothing filesystems ---------
@dataclass
class ElfRows:
    phys: Row = field(
        default_factory=lambda: Row("  seq 1 MiB /phys vs pass-through", "MiB/s", 0.95)
    )
    kvirt: Row = field(
        default_factory=lambda: Row("  seq 1 MiB /kvirt vs pass-through", "MiB/s", 0.95)
    )
    random: Row = field(
        default_factory=lambda: Row("  random 4 KiB /kvirt vs do-nothing", "op/s", 0.9)
    )
    passfs: Row = field(
        default_factory=lambda: Row("  (pass-through seq vs do-nothing)", "MiB/s", None)
    )
    passfs_random: Row = field(
        default_factory=lambda: Row("  (pass-through random 4 KiB vs do-nothing)", "op/s", None)
    )

    def rows(self) -> list[Row]:
        return [
            heading("ELF kaslr-256m/vmcore.elf"),
            self.phys,
            self.kvirt,
            self.random,
            self.passfs,
            self.passfs_random,
        ]


def measure_elf(
    rows: ElfRows, placement: int, rounds: int, cpus: set[int] | None, random_count: int
) -> None:
    case = dumps_dir() / "kaslr-256m"
    elf = str(case / "vmcore.elf")
    truth = json.loads((case / "truth.json").read_text())
    length = truth["ram_ranges"][0][1] - MiB  # RAM but its last MiB (not in the direct map)
    kbase = truth["runtime_bases"]["page_offset_base"] & KVIRT_MASK
    with (
        vmcorefs_mount([elf], cpus=cpus) as (mnt, _),
        passfs_mount(elf, cpus=cpus) as passfs,
        nullfs_mount(cpus=cpus) as null,
    ):
        phys, kvirt, copy, zeros = f"{mnt}/phys", f"{mnt}/kvirt", f"{passfs}/data", f"{null}/data"
        sequential(phys, 0, length)  # the daemon's first reads, untimed
        for r in range(rounds):
            seq_null = sequential(zeros, 0, length) / MiB
            seq_pass = sequential(copy, 0, length) / MiB
            rows.phys.add(placement, sequential(phys, 0, length) / MiB, seq_pass)
            rows.kvirt.add(placement, sequential(kvirt, kbase, length) / MiB, seq_pass)
            rows.passfs.add(placement, seq_pass, seq_null)
            ref = random_reads(zeros, [(0, length)], random_count, seed=r)
            ours = random_reads(kvirt, [(kbase, kbase + length)], random_count, seed=r)
            rows.random.add(placement, ours, ref)
            # One pread into the reply and nothing else: the floor of a random read that
            # copies the dump's bytes (the do-nothing filesystem copies a buffer in cache).
            copied = random_reads(copy, [(0, length)], random_count, seed=r)
            rows.passfs_random.add(placement, copied, ref)


# -- walk and eio: the kdumps' kernel images ----------------------------------------------
@dataclass
class Image:
    """A kdump's kernel image as the library reads it: the truth each walk is checked against."""

    path: str
    name: str
    start: int
    end: int
    extents: list[tuple[int, int]]  #: (start, end) of what the dump holds, kernel addresses
    digest: str
    held: int
    walk_page: Row
    walk_seek: Row
    eio: dict[str, Row]
    #: page by page, were the EIO requests all it cost (the do-nothing fs's EIO time)
    walk_floor: Row = field(
        default_factory=lambda: Row("  (page by page: its EIOs alone vs drgn)", "MiB/s", None)
    )

    def absent_pages(self) -> int:
        """The EIO requests of a page-by-page walk: one per absent page."""
        return sum((b - a) // PAGE for a, b in self.holes())

    def holes(self) -> list[tuple[int, int]]:
        """The absent runs of ``[start, end)``."""
        out, pos = [], self.start
        for a, b in self.extents:
            if a > pos:
                out.append((pos, a))
            pos = b
        if pos < self.end:
            out.append((pos, self.end))
        return out


def library_image(case: str, name: str) -> Image:
    """Read the image with the library (untimed): the bytes every walk must give."""
    import vmcorefs

    path = dumps_dir() / case / name
    truth = json.loads((path.parent / "truth.json").read_text())
    start, end = truth["symbols"]["_text"], truth["symbols"]["_end"]
    extents: list[tuple[int, int]] = []

    def pieces(dump) -> Iterator[tuple[int, bytes]]:
        pos = start
        while pos < end:  # bounded: every pass advances at least one page
            got = dump.kvirt.read(pos, min(MiB, end - pos))
            if not got:
                pos = (pos // PAGE + 1) * PAGE
                continue
            if extents and extents[-1][1] == pos:
                extents[-1] = (extents[-1][0], pos + len(got))
            else:
                extents.append((pos, pos + len(got)))
            yield pos, got
            pos += len(got)

    with vmcorefs.open_dump(str(path)) as dump:
        digest, held = extents_digest(pieces(dump))
    codec = name.removeprefix("mdf-d31-").removesuffix(".kdump")
    label = f"{codec} {case}"
    eio = {
        kind: Row(f"  {kind} vs present cached 4 KiB", "µs", 1.2, higher_is_better=False)
        for kind in ("4 KiB first", "1 MiB first", "4 KiB again", "1 MiB again")
    }
    return Image(
        str(path),
        label,
        start,
        end,
        extents,
        digest,
        held,
        Row("  page by page after EIO vs drgn", "MiB/s", 1.0),
        Row("  SEEK_DATA after EIO vs drgn", "MiB/s", 1.5),
        eio,
    )


def warm(path: str) -> None:
    """Read a file once: the page cache holds it for every side of the comparison."""
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def seek_data_missing(kvirt: str, image: Image) -> str:
    """Why ``SEEK_DATA`` cannot be measured on ``kvirt`` ("" when it can)."""
    inner = [(a, b) for a, b in image.holes() if b < image.end]  # data follows each
    if not inner:
        return "the image has no hole"
    fd = os.open(kvirt, os.O_RDONLY)
    try:
        same = 0
        for a, _ in inner:
            try:
                found = os.lseek(fd, a & KVIRT_MASK, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno in SEEK_UNSUPPORTED:
                    return f"lseek(SEEK_DATA) at a hole: {errno.errorcode[exc.errno]}"
                raise
            same += found == a & KVIRT_MASK
        if same == len(inner):
            return "lseek(SEEK_DATA) answers every hole's start with itself (not implemented)"
        return ""
    finally:
        os.close(fd)


def walk_kvirt(kvirt: str, image: Image, buf: mmap.mmap, seek: bool) -> tuple[float, str]:
    """The walk (``seek``: with ``SEEK_DATA`` after an EIO): (seconds, digest of what it read).

    The reads land in ``buf`` at their place in the image: no copy beyond the read itself."""
    fd = os.open(kvirt, os.O_RDONLY)
    base, end = image.start & KVIRT_MASK, image.end & KVIRT_MASK
    view = memoryview(buf)
    got_at: list[tuple[int, int]] = []
    try:
        pos = base
        t0 = time.perf_counter()
        while pos < end:  # bounded: every pass advances
            n = min(MiB, end - pos)
            try:
                got = os.preadv(fd, [view[pos - base : pos - base + n]], pos)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                following = (pos // PAGE + 1) * PAGE
                if seek:
                    try:
                        found = os.lseek(fd, pos, os.SEEK_DATA)
                    except OSError as exc2:
                        if exc2.errno != errno.ENXIO:
                            raise
                        break  # no data after pos
                    following = max(following, found)
                pos = following
                continue
            if not got:
                raise RuntimeError(f"{kvirt}: end of file at {pos:#x}")
            got_at.append((pos, got))
            pos += got
        seconds = time.perf_counter() - t0
        digest, _ = extents_digest(
            (p | KERNEL_HALF, view[p - base : p - base + n]) for p, n in got_at
        )
    finally:
        view.release()
        os.close(fd)
    return seconds, digest


def eio_latency(kvirt: str, image: Image, buf: mmap.mmap, stride: int) -> dict[str, float]:
    """Median seconds of each kind of read (the absent ones' kinds, and "present"); ``stride``:
    every how many pages of the image an absent one is sampled."""
    absent = [
        page & KVIRT_MASK
        for a, b in image.holes()
        for page in range(a, b, PAGE)
        if (page - image.start) // PAGE % stride == 0
    ]
    held_pages = [p & KVIRT_MASK for a, b in image.extents for p in range(a, b, PAGE)]
    present = held_pages[:: max(1, len(held_pages) // max(1, len(absent)))]
    kinds = {PAGE: absent[0::2], MiB: absent[1::2]}
    times: dict[str, list[float]] = defaultdict(list)
    fd = os.open(kvirt, os.O_RDONLY)
    view = memoryview(buf)

    def timed(offset: int, size: int, expect_eio: bool) -> float:
        t0 = time.perf_counter()
        try:
            os.preadv(fd, [view[:size]], offset)
            failed = False
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            failed = True
        took = time.perf_counter() - t0
        if failed != expect_eio:
            raise RuntimeError(f"{kvirt} at {offset:#x}: {'no EIO' if expect_eio else 'EIO'}")
        return took

    try:
        for offset in present:
            timed(offset, PAGE, expect_eio=False)  # now cached
        turn = 0
        for phase in ("first", "again"):
            for i in range(max(len(v) for v in kinds.values())):
                for size, offsets in kinds.items():
                    if i < len(offsets):
                        kind = f"{'4 KiB' if size == PAGE else '1 MiB'} {phase}"
                        times[kind].append(timed(offsets[i], size, expect_eio=True))
                        times["present"].append(
                            timed(present[turn % len(present)], PAGE, expect_eio=False)
                        )
                        turn += 1
    finally:
        view.release()
        os.close(fd)
    return {kind: statistics.median(ts) for kind, ts in times.items()}


#: The do-nothing filesystem's failed reads against its own 4 KiB read: the transport's floor.
NULL_EIO = {size: Row(f"  {size} EIO vs its 4 KiB read", "µs", None) for size in ("4 KiB", "1 MiB")}


def null_eio(mnt: str, buf: mmap.mmap, count: int = 300) -> dict[str, float]:
    """Median seconds of 4 KiB and 1 MiB reads of the do-nothing fs's ``absent`` file (each an
    EIO) and of 4 KiB reads of its ``data``, interleaved."""
    view = memoryview(buf)
    fds = {name: os.open(f"{mnt}/{name}", os.O_RDONLY) for name in ("data", "absent")}
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for i in range(count):
            for kind, name, size in (
                ("present", "data", PAGE),
                ("4 KiB", "absent", PAGE),
                ("1 MiB", "absent", MiB),
            ):
                t0 = time.perf_counter()
                try:
                    os.preadv(fds[name], [view[:size]], i * PAGE)
                except OSError as exc:
                    if exc.errno != errno.EIO or name != "absent":
                        raise
                times[kind].append(time.perf_counter() - t0)
    finally:
        view.release()
        for fd in fds.values():
            os.close(fd)
    return {kind: statistics.median(ts) for kind, ts in times.items()}


class Drgn:
    """The drgn worker (``drgn_walk.py`` in ``python``), on ``cpus``; None where no drgn."""

    def __init__(self, python: str, cpus: set[int] | None) -> None:
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).with_name("drgn_walk.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=on_cpus(cpus),
        )
        hello = self.proc.stdout.readline()
        if not hello:
            self.close()
            raise RuntimeError(f"{python} cannot run drgn (pass --drgn-python)")
        self.version = json.loads(hello)["drgn"]

    def walk(self, image: Image) -> dict:
        request = {"dump": image.path, "start": image.start, "end": image.end}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def measure_images(
    images: list[Image],
    placement: int,
    rounds: int,
    cpus: set[int] | None,
    drgn: Drgn | None,
    only: set[str],
    wrong: list[str],
    eio_stride: int,
) -> None:
    buf = mmap.mmap(-1, max(i.end - i.start for i in images) + MiB)
    try:
        for _ in range(rounds):
            with nullfs_mount(cpus=cpus) as null:
                floor = null_eio(null, buf)
            for kind, seconds in floor.items():
                if kind != "present":
                    NULL_EIO[kind].add(placement, seconds * 1e6, floor["present"] * 1e6)
            for image in images:
                if "walk" in only:
                    walk_round(image, placement, cpus, drgn, buf, wrong)
                    ref = image.walk_page.refs[placement]
                    if ref:  # drgn's MiB/s this round
                        eio_only = image.absent_pages() * floor["1 MiB"]
                        image.walk_floor.add(placement, image.held / MiB / eio_only, ref[-1])
                if "eio" in only:
                    with vmcorefs_mount([image.path], cpus=cpus) as (mnt, _):
                        medians = eio_latency(f"{mnt}/kvirt", image, buf, eio_stride)
                    for kind, row in image.eio.items():
                        row.add(placement, medians[kind] * 1e6, medians["present"] * 1e6)
    finally:
        buf.close()


def walk_round(
    image: Image,
    placement: int,
    cpus: set[int] | None,
    drgn: Drgn | None,
    buf: mmap.mmap,
    wrong: list[str],
) -> None:
    mib = image.held / MiB
    ref = None
    if drgn is not None:
        answer = drgn.walk(image)
        ref = mib / answer["seconds"]
        if answer["digest"] != image.digest:
            wrong.append(f"drgn's walk of {image.name}: {answer['held']} bytes, not the library's")
    modes = [(image.walk_page, False)] + ([] if image.walk_seek.na else [(image.walk_seek, True)])
    for row, seek in modes:
        with vmcorefs_mount([image.path], cpus=cpus) as (mnt, _):
            seconds, digest = walk_kvirt(f"{mnt}/kvirt", image, buf, seek)
        row.add(placement, mib / seconds, ref)
        if digest != image.digest:
            wrong.append(f"vmcorefs's walk of {image.name} ({row.label.strip()}): bytes differ")


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--placements", default="sched,one,two", help="of sched,one,two (bench_core's)"
    )
    parser.add_argument("--only", default="elf,walk,eio", help="of elf,walk,eio")
    parser.add_argument(
        "--drgn-python",
        default=sys.executable,
        help="an interpreter with drgn 0.3.0 (default: this one)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 round (unless --rounds), the scheduler's placement, fewer samples",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    placements = [PLACEMENT_KEYS[k] for k in args.placements.split(",")]
    kdumps, eio_stride, random_count = KDUMPS, EIO_STRIDE, RANDOM_COUNT
    if args.quick:
        if "--rounds" not in sys.argv:
            args.rounds = 1
        if "--placements" not in sys.argv:
            placements = [PLACEMENT_KEYS["sched"]]
        kdumps = tuple(k for i, k in enumerate(KDUMPS) if i in QUICK_KDUMPS)
        eio_stride, random_count = QUICK_EIO_STRIDE, QUICK_RANDOM_COUNT
    everywhere = os.sched_getaffinity(0)
    if len(everywhere) < 2:
        placements = [p for p in placements if PLACEMENTS[p][1] is None]

    started = time.monotonic()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    elf = ElfRows()
    images: list[Image] = []
    wrong: list[str] = []
    if only & {"walk", "eio"}:
        images = [library_image(case, name) for case, name in kdumps]
        for image in images:
            warm(image.path)
            with vmcorefs_mount([image.path]) as (mnt, _):
                image.walk_seek.na = seek_data_missing(f"{mnt}/kvirt", image)
    if "elf" in only:
        warm(str(dumps_dir() / "kaslr-256m" / "vmcore.elf"))

    drgn_version = None
    for placement in placements:
        _, reader_cpus, daemon_cpus = PLACEMENTS[placement]
        os.sched_setaffinity(0, reader_cpus or everywhere)
        try:
            if "elf" in only:
                measure_elf(elf, placement, args.rounds, daemon_cpus, random_count)
            if images:
                drgn = None
                if "walk" in only:
                    with contextlib.suppress(RuntimeError, OSError):
                        drgn = Drgn(args.drgn_python, reader_cpus)
                        drgn_version = drgn.version
                try:
                    measure_images(
                        images, placement, args.rounds, daemon_cpus, drgn, only, wrong, eio_stride
                    )
                finally:
                    if drgn is not None:
                        drgn.close()
        finally:
            os.sched_setaffinity(0, everywhere)

    rows: list[Row] = elf.rows() if "elf" in only else []
    for image in images:
        held = f"{image.held / MiB:.1f} of {(image.end - image.start) / MiB:.1f} MiB held"
        if "walk" in only:
            rows += [heading(f"walk _text.._end, {image.name} ({held})")]
            rows += [image.walk_page, image.walk_floor, image.walk_seek]
    for image in images if "eio" in only else []:
        rows += [heading(f"EIO, {image.name}"), *image.eio.values()]
    if images:
        rows += [heading("EIO, the do-nothing filesystem (the transport's floor)")]
        rows += list(NULL_EIO.values())
    if rows:
        print_table(rows, placements, args.rounds)
    reasons = defaultdict(list)
    for image in images if "walk" in only else []:
        if image.walk_seek.na:
            reasons[image.walk_seek.na].append(image.name)
    for reason, names in reasons.items():
        print(f"SEEK_DATA n/a ({', '.join(names)}): {reason}")
    if "walk" in only:
        print(f"drgn: {drgn_version or f'not run ({args.drgn_python} has no drgn: --drgn-python)'}")
    for line in wrong:
        print(f"WRONG: {line}")
    print(f"placements: {'; '.join(f'{COLUMN[p]}: {PLACEMENTS[p][0]}' for p in placements)}")
    if args.rounds < MIN_ROUNDS:
        print(f"{args.rounds} round(s): a smoke run, not figures (those take >= {MIN_ROUNDS})")
    print(f"took {time.monotonic() - started:.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
