"""Task list and stacks: how long a fresh dump takes to answer ``ps`` and every stack.

    python3 benchmarks/bench_tasks.py [DUMP]   (default: kaslr-256m/mdf-d31-zlib.kdump)

Each round opens the dump afresh (nothing cached in the process) and times, in order: the
symbol table (kallsyms decoding), the BTF parse, the task list, then every task's and CPU's
stack (ORC tables loaded on first use). "task list" is what a first ``cat ps`` costs, the three
together; "all stacks" what reading every ``tasks/*/stack`` and ``cpus/*/stack`` costs after
it. Then the same through a mount: ``ps`` and all stacks read with ordinary file reads on a
fresh mount. Best and median of the rounds are printed; the targets are 1 s and 2 s.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from common import REPO, dumps_dir, vmcorefs_mount

sys.path.insert(0, str(REPO))

import vmcorefs  # noqa: E402
from vmcorefs.errors import DumpError  # noqa: E402

ROUNDS = 5


def library_round(path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    with vmcorefs.open_dump(path) as dump:
        t = time.perf_counter()
        out["open"] = t - t0
        _ = dump.symbols
        out["symbols"] = time.perf_counter() - t
        t = time.perf_counter()
        _ = dump.btf
        out["btf"] = time.perf_counter() - t
        t = time.perf_counter()
        tasks = dump.tasks
        out["tasks"] = time.perf_counter() - t
        out["task list"] = out["symbols"] + out["btf"] + out["tasks"]
        t = time.perf_counter()
        stacks = dump.stacks
        for task in tasks.tasks:
            stacks.task_stack(task)
        for cpu in range(len(dump.cpus)):
            stacks.cpu_stack(cpu)
        out["all stacks"] = time.perf_counter() - t
        out["count"] = len(tasks.tasks)
    return out


def mount_round(path: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with vmcorefs_mount([path]) as (mnt, _):
        t = time.perf_counter()
        Path(mnt, "ps").read_bytes()
        out["cat ps"] = time.perf_counter() - t
        t = time.perf_counter()
        for d in Path(mnt, "tasks").iterdir():
            (d / "stack").read_bytes()
        for d in Path(mnt, "cpus").iterdir():
            (d / "stack").read_bytes()
        out["cat */stack"] = time.perf_counter() - t
    return out


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        path = str(dumps_dir() / "kaslr-256m" / "mdf-d31-zlib.kdump")
    try:
        vmcorefs.open_dump(path).close()
    except DumpError as exc:
        sys.exit(f"bench_tasks: {exc}")
    lib = [library_round(path) for _ in range(ROUNDS)]
    mnt = [mount_round(path) for _ in range(ROUNDS)]
    print(f"dump: {path} ({int(lib[0]['count'])} tasks), {ROUNDS} rounds, fresh each time")
    print(f"{'':22}{'best':>9}{'median':>9}")
    for rows, keys in (
        (lib, ("symbols", "btf", "tasks", "task list", "all stacks")),
        (mnt, ("cat ps", "cat */stack")),
    ):
        for key in keys:
            xs = [r[key] for r in rows]
            print(f"{key:<22}{min(xs):>8.3f}s{statistics.median(xs):>8.3f}s")
    print("targets: task list <= 1 s, all stacks <= 2 s")


if __name__ == "__main__":
    main()
