#!/usr/bin/env python3
"""The load test at full length: 8 readers x 60 s through a mount of the bundled sample.

    python3 benchmarks/load.py [--seconds S]

Runs ``tests/test_load.py`` with ``VMCOREFS_LOAD_SECONDS`` (CI runs it for 10 s) and prints
its figures: reads per kind, mismatches against single-threaded library reads, errors, and the
daemon's RSS against ``--cache-size``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    env = dict(os.environ, VMCOREFS_LOAD_SECONDS=str(args.seconds), PYTHONPATH=str(REPO))
    return subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:warnings", "tests/test_load.py"],
        cwd=REPO, env=env,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
