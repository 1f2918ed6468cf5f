"""What a user runs first on a fresh mount: ``cat crash`` and ``ls sym/`` (targets: 1 s each).

    python3 benchmarks/bench_triage.py [DUMP] [--rounds N]   (default: the bundled sample)

Each round mounts the dump afresh (nothing decoded yet) and times one ``cat crash`` (log,
symbols, BTF, the task list, one stack), unmounts, mounts again and times one ``ls -f sym/``
(the symbol table, the modules' symbols, the listing). The reference, interleaved in the same
rounds, is ``ls -f`` of the same names on a freshly mounted do-nothing filesystem
(``manyfs.py``): what the FUSE transport alone costs for that directory. Prints the best and
the median of each, and the median of the per-round ratios of ``ls -f sym/`` to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_sym import cpu_seconds, daemon_pid, manyfs_mount
from common import REPO, vmcorefs_mount

sys.path.insert(0, str(REPO))
from vmcorefs.kernel.dump import open_dump  # noqa: E402
from vmcorefs.tree import build_tree  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "sample" / "vmcore.kdump"
TARGET = 1.0
#: what is timed on each fresh mount; the last word is a path in the mount
COMMANDS = (("cat crash", ["cat", "crash"]), ("ls -f sym/", ["ls", "-f", "sym"]))


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def timed_cpu(argv: list[str], mnt: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the daemon serving ``mnt``) of running ``argv``."""
    pid = daemon_pid(mnt)
    cpu = cpu_seconds(pid)
    wall = timed(argv)
    return wall, cpu_seconds(pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", nargs="?", default=str(SAMPLE))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with open_dump(args.dump) as d:
        sym = build_tree(d).lookup("sym").entries()
        files = [(name, sym[name].size()) for name in sym]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(files, f)
        listing = f.name

    times: dict[str, list[float]] = {"cat crash": [], "ls -f sym/": [], "reference ls -f": []}
    cpu: dict[str, list[float]] = {"cat crash": [], "ls -f sym/": []}
    ratios = []
    try:
        for _ in range(args.rounds):
            for label, argv in (
                ("cat crash", ["cat", "crash"]),
                ("ls -f sym/", ["ls", "-f", "sym"]),
            ):
                with vmcorefs_mount([args.dump]) as (mnt, _took):
                    wall, used = timed_cpu([argv[0], *argv[1:-1], f"{mnt}/{argv[-1]}"], mnt)
                times[label].append(wall)
                cpu[label].append(used)
            with manyfs_mount(listing) as null:
                times["reference ls -f"].append(timed(["ls", "-f", null]))
            ratios.append(times["ls -f sym/"][-1] / times["reference ls -f"][-1])
    finally:
        os.unlink(listing)

    print(f"dump: {args.dump} ({len(files)} sym/ files), {args.rounds} fresh mounts each")
    print(f"load average: {os.getloadavg()[0]:.1f} (wall times suffer when it is high)")
    print(f"{'':18}{'best':>8}{'median':>9}  {'daemon CPU best/median':>22}  target")
    for label, values in times.items():
        target = f"{TARGET:.1f} s" if label != "reference ls -f" else ""
        used = cpu.get(label)
        cpus = f"{min(used):.2f}s / {statistics.median(used):.2f}s" if used else ""
        best, median = min(values), statistics.median(values)
        print(f"{label:18}{best:>7.2f}s{median:>8.2f}s  {cpus:>22}  {target}")
    print(f"ls -f sym/ vs reference, median of per-round ratios: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
