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

from bench_sym import manyfs_mount
from common import REPO, vmcorefs_mount

sys.path.insert(0, str(REPO))
from vmcorefs.kernel.dump import open_dump  # noqa: E402
from vmcorefs.tree import build_tree  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "sample" / "vmcore.kdump"
TARGET = 1.0


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


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
    ratios = []
    try:
        for _ in range(args.rounds):
            with vmcorefs_mount([args.dump]) as (mnt, _took):
                times["cat crash"].append(timed(["cat", f"{mnt}/crash"]))
            with vmcorefs_mount([args.dump]) as (mnt, _took):
                times["ls -f sym/"].append(timed(["ls", "-f", f"{mnt}/sym"]))
            with manyfs_mount(listing) as null:
                times["reference ls -f"].append(timed(["ls", "-f", null]))
            ratios.append(times["ls -f sym/"][-1] / times["reference ls -f"][-1])
    finally:
        os.unlink(listing)

    print(f"dump: {args.dump} ({len(files)} sym/ files), {args.rounds} fresh mounts each")
    print(f"load average: {os.getloadavg()[0]:.1f} (wall times suffer when it is high)")
    print(f"{'':18}{'best':>8}{'median':>9}  target")
    for label, values in times.items():
        target = f"{TARGET:.1f} s" if label != "reference ls -f" else ""
        print(f"{label:18}{min(values):>7.2f}s{statistics.median(values):>8.2f}s  {target}")
    print(f"ls -f sym/ vs reference, median of per-round ratios: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
