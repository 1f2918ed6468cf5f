"""sym/: table load, listing and ``grep -rl MARKER`` against a do-nothing filesystem.

    python3 benchmarks/bench_sym.py [DUMP [VMCOREFS-OPTION...]]
                                    (default: kaslr-256m/mdf-d31-zlib.kdump; e.g. -o nothreads)

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


def daemon_pid(mnt: str) -> int:
    """The process serving ``mnt`` (found by its command line)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if mnt.encode() in args and any(b"python" in a for a in args[:1]):
                return int(pid)
    raise RuntimeError(f"no process serves {mnt}")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], pid: int) -> tuple[float, float]:
    """(wall seconds, the daemon's CPU seconds) of running ``argv``."""
    c0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0, cpu_seconds(pid) - c0


def main() -> None:
    case = dumps_dir() / "kaslr-256m"
    dump = sys.argv[1] if len(sys.argv) > 1 else str(case / "mdf-d31-zlib.kdump")
    options = sys.argv[2:]
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
        with vmcorefs_mount([dump], *options) as (mnt, took), manyfs_mount(listing) as null:
            os.stat(f"{mnt}/sym/linux_banner")  # loads the table
            pids = {"vmcorefs": daemon_pid(mnt), "null": daemon_pid(null[: -len("/d")])}
            ls = {"vmcorefs": [], "null": []}
            for _ in range(3):
                ls["null"].append(timed(["ls", "-f", null], pids["null"]))
                ls["vmcorefs"].append(timed(["ls", "-f", f"{mnt}/sym"], pids["vmcorefs"]))
            grep = {}
            for n in (1, 2):
                grep[("null", n)] = timed(["grep", "-rl", marker, null], pids["null"])
                grep[("vmcorefs", n)] = timed(
                    ["grep", "-rl", marker, f"{mnt}/sym"], pids["vmcorefs"]
                )
    finally:
        os.unlink(listing)

    print(f"dump: {dump} {' '.join(options)} ({len(files)} sym/ files; mount {took:.2f} s)")
    print(f"table load (decode + merge + names), best of 3: {min(loads):.2f} s")
    print(f"load average: {os.getloadavg()[0]:.1f} (wall times suffer when it is high)")
    print(f"{'':20}{'vmcorefs':>10}{'do-nothing':>12}{'ratio':>7}  daemon CPU s (ratio)")
    rows = [("ls -f sym/", min(ls["vmcorefs"]), min(ls["null"]))]
    rows += [(f"grep -rl, pass {k}", grep[("vmcorefs", k)], grep[("null", k)]) for k in (1, 2)]
    for label, (v, vc), (n, nc) in rows:
        print(
            f"{label:20}{v:>9.2f}s{n:>11.2f}s{v / n:>7.2f}"
            f"  {vc:6.2f} vs {nc:5.2f} ({vc / max(nc, 0.01):.2f})"
        )


if __name__ == "__main__":
    main()
