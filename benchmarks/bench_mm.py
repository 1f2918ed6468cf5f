"""mm/usage: seconds to classify every page frame, per million pages.

    python3 benchmarks/bench_mm.py [--gib N] [--keep PATH] [--real]

Builds a synthetic 4 GiB-class dump (1 Mi page frames, SPARSEMEM_EXTREME + vmemmap, the real
6.1 struct page layout) with a realistic mix: about 2/3 free (buddy blocks of orders 0-10),
cache, anonymous and THP user pages, kernel pages with data and zero-filled kernel pages. The
ELF is sparse on disk (only pages with data are written). Then times ``mm/usage`` from a fresh
``open_dump`` (mem_map walk and zero test), best of three, and prints the figure against the
target of 5 s per million pages. ``--real`` also times the real ELF dumps of ../shared/dumps.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.mmbuilder import (  # noqa: E402
    OFF_CHEAD,
    OFF_MAPCOUNT,
    OFF_MAPPING,
    OFF_ORDER,
    OFF_PRIVATE,
    PAGE_BUDDY_MAPCOUNT_VALUE,
    SIZE_PAGE,
    VMEMMAP,
    GiB,
    PG_head,
    PG_lru,
    SyntheticKernel,
)
from vmcorefs import open_dump  # noqa: E402
from vmcorefs.kernel.mm_usage import page_usage  # noqa: E402

TARGET_S_PER_MPAGES = 5.0


def build(path: str, gib: int, seed: int = 8) -> dict[str, int]:
    """Write the synthetic dump; returns how many pages of each kind it holds."""
    rng = random.Random(seed)
    npages = gib * GiB // 4096
    k = SyntheticKernel([(0, gib * GiB)], model="vmemmap", init_struct_pages=False)
    k.add_uts([b"Linux", b"bench", b"6.1.0-bench", b"#1 SMP", b"x86_64", b"(none)"])
    first = (k._next + (1 << 21)) // 4096  # past the kernel's own data (struct pages too)
    pages = bytearray(struct.pack("<i", -1).rjust(OFF_MAPCOUNT + 4, b"\0").ljust(SIZE_PAGE, b"\0"))
    mem_map = bytearray(bytes(pages) * npages)  # every page: _mapcount -1 (a kernel page)
    kinds = {"free": 0, "cache": 0, "user": 0, "kernel": 0, "kernel_data": 0}
    mapping = k.kva(0x30_0000)

    def put(pfn: int, off: int, fmt: str, value: int) -> None:
        struct.pack_into(fmt, mem_map, pfn * SIZE_PAGE + off, value)

    pfn = first
    region_end = pfn
    while pfn < npages:
        if pfn >= region_end:
            # Each 4 MiB region: a free MAX_ORDER block (60 %) or a mix of single pages.
            if pfn % 1024 == 0 and pfn + 1024 <= npages and rng.random() < 0.6:
                put(pfn, OFF_MAPCOUNT, "<i", PAGE_BUDDY_MAPCOUNT_VALUE)
                put(pfn, OFF_PRIVATE, "<Q", 10)
                kinds["free"] += 1024
                pfn += 1024
                region_end = pfn
                continue
            region_end = min(npages, (pfn // 1024 + 1) * 1024)
        roll = rng.random()
        if roll < 0.15:  # small free blocks, aligned to their order
            order = rng.randrange(4)
            while pfn % (1 << order) or pfn + (1 << order) > region_end:
                order -= 1
            put(pfn, OFF_MAPCOUNT, "<i", PAGE_BUDDY_MAPCOUNT_VALUE)
            put(pfn, OFF_PRIVATE, "<Q", order)
            kinds["free"] += 1 << order
            pfn += 1 << order
        elif roll < 0.23:
            put(pfn, 0, "<Q", 1 << PG_lru)
            put(pfn, OFF_MAPPING, "<Q", mapping)
            kinds["cache"] += 1
            pfn += 1
        elif roll < 0.27:
            put(pfn, OFF_MAPPING, "<Q", mapping | 1)
            kinds["user"] += 1
            pfn += 1
        elif roll < 0.28 and pfn % 512 == 0 and pfn + 512 <= region_end:  # a THP
            put(pfn, 0, "<Q", 1 << PG_head)
            put(pfn, OFF_MAPPING, "<Q", mapping | 1)
            for t in range(1, 512):
                put(pfn + t, OFF_CHEAD, "<Q", VMEMMAP + pfn * SIZE_PAGE | 1)
            struct.pack_into("<B", mem_map, (pfn + 1) * SIZE_PAGE + OFF_ORDER, 9)
            kinds["user"] += 512
            pfn += 512
        else:
            if rng.random() < 0.1:
                k.fill(pfn, 1 + pfn % 255)
                kinds["kernel_data"] += 1
            kinds["kernel"] += 1
            pfn += 1
    # The vmemmap backing is 2 MiB per section, already allocated by SyntheticKernel.
    for nr, backing in k._page_addr.items():
        start = nr * k.pages_per_section
        k.write(
            backing, bytes(mem_map[start * SIZE_PAGE : (start + k.pages_per_section) * SIZE_PAGE])
        )
    k.write_core(path)
    kinds["pages"] = npages
    return kinds


def time_usage(path: str, rounds: int = 3) -> tuple[float, str]:
    best = float("inf")
    text = ""
    for _ in range(rounds):
        with open_dump(path) as dump:
            t0 = time.perf_counter()
            usage = page_usage(dump.vmcoreinfo, dump.kvirt, dump.phys, dump.source.ranges())
            best = min(best, time.perf_counter() - t0)
            text = usage.render()
    return best, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=int, default=4, help="RAM of the synthetic dump (default 4)")
    ap.add_argument("--keep", help="write the synthetic dump here and keep it")
    ap.add_argument("--real", action="store_true", help="also time the real ELF dumps")
    args = ap.parse_args()
    if args.keep:
        path = args.keep
    else:
        fd, path = tempfile.mkstemp(prefix="bench-mm-", suffix=".elf")
        os.close(fd)
    try:
        t0 = time.perf_counter()
        kinds = build(path, args.gib)
        built = time.perf_counter() - t0
        size = os.stat(path).st_blocks * 512
        print(
            f"synthetic dump: {kinds['pages']} pages ({args.gib} GiB), {size / 2**20:.0f} MiB "
            f"on disk, built in {built:.1f} s; mix {kinds}"
        )
        took, text = time_usage(path)
        per_m = took / (kinds["pages"] / 1e6)
        print(text, end="")
        print(
            f"mm/usage: {took:.2f} s for {kinds['pages']} pages = {per_m:.2f} s per million "
            f"pages (target <= {TARGET_S_PER_MPAGES:.0f}: "
            f"{'met' if per_m <= TARGET_S_PER_MPAGES else 'NOT met'})"
        )
    finally:
        if not args.keep:
            os.unlink(path)
    if args.real:
        from common import dumps_dir

        for case in ("kaslr-256m", "la57-nokaslr-384m"):
            elf = dumps_dir() / case / "vmcore.elf"
            if elf.exists():
                took, text = time_usage(str(elf))
                pages = int(text.split("total_pages ")[1].split()[0])
                print(
                    f"{case}/vmcore.elf: {took:.2f} s for {pages} pages = "
                    f"{took / (pages / 1e6):.2f} s per million pages"
                )


if __name__ == "__main__":
    main()
