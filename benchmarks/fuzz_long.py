#!/usr/bin/env python3
"""The fuzz suite in its long mode: N cases per fuzz test (CI runs 2,000 per format).

    python3 benchmarks/fuzz_long.py [--cases N] [PYTEST-ARGS...]

Runs ``tests/test_fuzz_*.py`` with ``VMCOREFS_FUZZ_CASES=N`` (default 20,000) and prints the
cases tried and their outcomes per format (refused at open, opened; reads, EIO, unavailable).
Cases stay derandomized: a longer run explores further along the same fixed sequence. The
numbers fuzz (``tests/test_fuzz_numbers.py``) has a fixed set of cases: in the long mode it
adds more values per key and field and each key's removal (about 5,800 cases).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20000, help="cases per fuzz test")
    args, rest = p.parse_known_args()
    env = dict(os.environ, VMCOREFS_FUZZ_CASES=str(args.cases), PYTHONPATH=str(REPO))
    tests = sorted(str(t) for t in (REPO / "tests").glob("test_fuzz_*.py"))
    t0 = time.monotonic()
    rc = subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:warnings", *tests, *rest],
        cwd=REPO, env=env,
    )  # fmt: skip
    print(f"fuzz_long: {args.cases} cases per test, {time.monotonic() - t0:.0f} s, exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
