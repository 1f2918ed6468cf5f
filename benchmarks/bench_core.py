"""Core throughput: /phys and /kvirt of an ELF dump against the do-nothing FUSE filesystem.

    python3 benchmarks/bench_core.py [DUMP]     (default: kaslr-256m/vmcore.elf)

Prints, from one run: sequential 1 MiB reads of /phys (RAM) and /kvirt (the direct map), the
same through the do-nothing filesystem, random 4 KiB preads/s for all three, and mount time.
Ratios against the do-nothing filesystem are what the targets are stated in. Each comparison
runs three times: as the scheduler places the processes, and pinned two ways (PLACEMENTS).
"""

from __future__ import annotations

import json
import os
import statistics
import sys

from common import MiB, dumps_dir, nullfs_mount, random_reads, sequential, vmcorefs_mount

KVIRT_MASK = 0x7FFFFFFFFFFFFFFF


#: Where the reader (this process) and the two filesystems' daemons run. Unpinned figures jump
#: between the two pinned ones with where the scheduler puts a daemon's worker: on the
#: reader's CPU (requests cost no cross-CPU wake-up, but nothing overlaps) or on another.
PLACEMENTS: list[tuple[str, set[int] | None, set[int] | None]] = [
    ("scheduler's choice", None, None),
    ("reader and daemons on one CPU", {0}, {0}),
    ("reader on one CPU, daemons on another", {0}, {1}),
]


def main() -> None:
    case = dumps_dir() / "kaslr-256m"
    dump = sys.argv[1] if len(sys.argv) > 1 else str(case / "vmcore.elf")
    truth = json.loads((case / "truth.json").read_text())
    ram_end = truth["ram_ranges"][0][1]
    page_offset = truth["runtime_bases"]["page_offset_base"]
    length = ram_end - MiB  # RAM but its last MiB (firmware-reserved: not in the direct map)

    mount_times = []
    for _ in range(5):
        with vmcorefs_mount([dump]) as (_mnt, took):
            mount_times.append(took)

    print(f"dump: {dump}")
    everywhere = os.sched_getaffinity(0)
    for label, reader_cpus, daemon_cpus in PLACEMENTS:
        if reader_cpus is not None and len(everywhere) < 2:
            continue
        os.sched_setaffinity(0, reader_cpus or everywhere)
        try:
            measure(label, dump, length, page_offset & KVIRT_MASK, daemon_cpus)
        finally:
            os.sched_setaffinity(0, everywhere)
    print(
        f"mount (command returns): median {statistics.median(mount_times):.3f} s, "
        f"max {max(mount_times):.3f} s over {len(mount_times)}"
    )


def measure(label: str, dump: str, length: int, kbase: int, cpus: set[int] | None) -> None:
    rounds = 5  # interleaved; best round of each kept, and the median of per-round ratios
    random_count = 5000
    with vmcorefs_mount([dump], cpus=cpus) as (mnt, _), nullfs_mount(cpus=cpus) as null:
        phys, kvirt, data = f"{mnt}/phys", f"{mnt}/kvirt", f"{null}/data"
        sequential(phys, 0, length)  # warm the dump file in the page cache
        seq = {"phys": [], "kvirt": [], "null": []}
        rnd = {"phys": [], "kvirt": [], "null": []}
        for _ in range(rounds):
            seq["null"].append(sequential(data, 0, length))
            seq["phys"].append(sequential(phys, 0, length))
            seq["kvirt"].append(sequential(kvirt, kbase, length))
            rnd["null"].append(random_reads(data, [(0, length)], random_count))
            rnd["phys"].append(random_reads(phys, [(0, length)], random_count))
            rnd["kvirt"].append(random_reads(kvirt, [(kbase, kbase + length)], random_count))

    def median_ratio(xs, refs):
        return statistics.median(a / b for a, b in zip(xs, refs, strict=True))

    print(f"\n{label}:")
    print(f"{'':24}{'vmcorefs':>14}{'do-nothing':>14}{'ratio':>8}  (median of per-round ratios)")
    for name in ("phys", "kvirt"):
        v, n = max(seq[name]), max(seq["null"])
        med = median_ratio(seq[name], seq["null"])
        print(
            f"seq 1 MiB /{name:<13}{v / MiB:>10.0f} MiB/s{n / MiB:>8.0f} MiB/s{v / n:>8.2f}"
            f"  ({med:.2f})"
        )
    for name in ("phys", "kvirt"):
        v, n = max(rnd[name]), max(rnd["null"])
        med = median_ratio(rnd[name], rnd["null"])
        print(f"random 4 KiB /{name:<10}{v:>10.0f} op/s {n:>8.0f} op/s{v / n:>8.2f}  ({med:.2f})")


if __name__ == "__main__":
    main()
