"""The daemon's memory after ``grep -r`` over ``sym/`` (issue 17: VmRSS at most 64 MiB).

    python3 benchmarks/bench_rss.py [DUMP] [--rounds N]   (default: the bundled sample)

Each round mounts the dump afresh, twice: with the default ``--cache-size`` (64 MiB of
decompressed pages at most) and with ``--cache-size 1`` (the caches of pages and translations
all but off: what the rest of the daemon holds). It reads the daemon's ``/proc/PID/status``
after the mount, after ``ls -f sym/``, right after ``grep -r`` over ``sym/`` (a pattern that
never matches: every file is read to its end, or to its first absent byte) and once the daemon
has been idle for ``SETTLE`` seconds after it ("idle": what stays resident). The reference, in
the same rounds: a do-nothing filesystem (``manyfs.py``) serving the same names and sizes,
after the same ``ls`` and ``grep`` (Python, mfusepy and libfuse's node per looked-up name,
plus its own list of names). Prints the median of each figure over the rounds (MiB) and the
daemon's CPU seconds for the grep.
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
TARGET_MIB = 64
CONFIGS = (("default cache", []), ("--cache-size 1", ["--cache-size", "1"]))
NEVER = "vmcorefs-bench-rss: a pattern no symbol holds"
FIELDS = ("VmRSS", "VmHWM", "RssAnon")
#: Seconds the daemon is left idle after the grep before "idle" is read: the releases of the
#: last files land, and the daemon hands its heap's free pages back (fuse.IdleTrim, 1 s).
SETTLE = 3.0


def status(pid: int) -> dict[str, float]:
    """The ``FIELDS`` of ``/proc/PID/status``, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = int(value.split()[0]) / 1024
    return out


def run(argv: list[str]) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def measure(mnt: str, pid: int) -> dict[str, float]:
    """The daemon's memory after mounting, listing and grepping ``mnt`` (its ``sym/`` dir)."""
    out = {f"mounted {k}": v for k, v in status(pid).items()}
    run(["ls", "-f", mnt])
    out.update({f"ls {k}": v for k, v in status(pid).items()})
    cpu = cpu_seconds(pid)
    run(["grep", "-r", "-F", NEVER, mnt])
    out["grep CPU s"] = cpu_seconds(pid) - cpu
    out.update({f"grep {k}": v for k, v in status(pid).items()})
    time.sleep(SETTLE)
    out.update({f"idle {k}": v for k, v in status(pid).items() if k != "VmHWM"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", nargs="?", default=str(SAMPLE))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with open_dump(args.dump) as d:
        sym = build_tree(d).lookup("sym").entries()
        files = [(name, sym[name].size()) for name in sym]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(files, f)
        listing = f.name

    configs = {"default cache": [], "--cache-size 1": [], "do-nothing fs": []}
    try:
        for _ in range(args.rounds):
            for label, options in CONFIGS:
                with vmcorefs_mount([args.dump], *options) as (mnt, _took):
                    configs[label].append(measure(f"{mnt}/sym", daemon_pid(mnt)))
            with manyfs_mount(listing) as null:
                configs["do-nothing fs"].append(measure(null, daemon_pid(null[: -len("/d")])))
    finally:
        os.unlink(listing)

    print(f"dump: {args.dump} ({len(files)} sym/ files), median of {args.rounds} fresh mounts")
    print(f"load average: {os.getloadavg()[0]:.1f}; MiB from /proc/PID/status of the daemon")
    keys = list(configs["default cache"][0])
    print(f"{'':22}" + "".join(f"{label:>16}" for label in configs))
    for key in keys:
        row = [statistics.median(r[key] for r in rounds) for rounds in configs.values()]
        print(f"{key:22}" + "".join(f"{v:>16.1f}" for v in row))
    for label in ("default cache", "--cache-size 1"):
        rss = statistics.median(r["idle VmRSS"] for r in configs[label])
        verdict = "within" if rss <= TARGET_MIB else "over"
        print(f"VmRSS once idle after grep -r, {label}: {rss:.1f} MiB ({verdict} {TARGET_MIB} MiB)")


if __name__ == "__main__":
    main()
