"""sym/: table load, listing and ``grep -rl MARKER`` against a do-nothing filesystem.

    python3 benchmarks/bench_sym.py [DUMP]     (default: kaslr-256m/mdf-d31-zlib.kdump)

Prints, from one run: the time to decode and merge the symbol table (in-process), the time to
list ``sym/`` once it is loaded, and a first and a second ``grep -rl MARKER`` over ``sym/``
(the second served by the kernel's caches); the same listing and greps over a do-nothing
filesystem with the same file names and sizes (``manyfs.py``), and the ratios.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

from common import REPO, dumps_dir, env, unmount, vmcorefs_mount, wait_mounted

sys.path.insert(0, str(REPO))
from vmcorefs.kernel.dump import open_dump  # noqa: E402
from vmcorefs.tree import build_tree  # noqa: E402


@contextlib.contextmanager
def manyfs_mount(listing: str):
    mnt = tempfile.mkdtemp(prefix="manyfs-bench-")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "manyfs.py"), mnt, listing], env=env()
    )
    try:
        wait_mounted(mnt)
        yield mnt + "/d"
    finally:
        unmount(mnt)
        proc.wait(timeout=30)
        os.rmdir(mnt)


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> None:
    case = dumps_dir() / "kaslr-256m"
    dump = sys.argv[1] if len(sys.argv) > 1 else str(case / "mdf-d31-zlib.kdump")
    marker = json.loads((case / "truth.json").read_text())["marker"]

    loads = []
    for _ in range(3):
        with open_dump(dump) as d:
            t0 = time.perf_counter()
            d.symbols.file_entries()
            loads.append(time.perf_counter() - t0)
    with open_dump(dump) as d:
        sym = build_tree(d).lookup("sym").entries()
        files = [(name, sym[name].size()) for name in sym]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(files, f)
        listing = f.name

    try:
        with vmcorefs_mount([dump]) as (mnt, took), manyfs_mount(listing) as null:
            os.stat(f"{mnt}/sym/linux_banner")  # loads the table
            ls = {"vmcorefs": [], "null": []}
            for _ in range(3):
                ls["null"].append(timed(["ls", "-f", null]))
                ls["vmcorefs"].append(timed(["ls", "-f", f"{mnt}/sym"]))
            grep = {}
            for n in (1, 2):
                grep[("null", n)] = timed(["grep", "-rl", marker, null])
                grep[("vmcorefs", n)] = timed(["grep", "-rl", marker, f"{mnt}/sym"])
    finally:
        os.unlink(listing)

    print(f"dump: {dump}  ({len(files)} sym/ files; mount command {took:.2f} s)")
    print(f"table load (decode + merge + names), best of 3: {min(loads):.2f} s")
    print(f"{'':22}{'vmcorefs':>10}{'do-nothing':>12}{'ratio':>8}")
    v, n = min(ls["vmcorefs"]), min(ls["null"])
    print(f"{'ls -f sym/':22}{v:>9.2f}s{n:>11.2f}s{v / n:>8.2f}")
    for k in (1, 2):
        v, n = grep[("vmcorefs", k)], grep[("null", k)]
        print(f"{f'grep -rl, pass {k}':22}{v:>9.2f}s{n:>11.2f}s{v / n:>8.2f}")


if __name__ == "__main__":
    main()
