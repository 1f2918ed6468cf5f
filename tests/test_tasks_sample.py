"""btf, tasks/, ps, modules and stacks of the bundled sample (which crashed on CPU 1), against
what the guest and its kernel said themselves: /proc/kallsyms, /proc/modules, the crashed
pid and comm, and the Call Trace the kernel printed when it panicked or oopsed."""

from __future__ import annotations

import re

import pytest

from vmcorefs.kernel.dump import open_dump
from vmcorefs.tree import build_tree


@pytest.fixture(scope="module")
def opened(sample):
    try:
        dump = open_dump(str(sample.dump))
    except ModuleNotFoundError as exc:
        if exc.name != "vmcorefs.dumpfile.kdump":
            raise
        pytest.skip("the kdump-compressed reader is not on this branch")
    yield dump, build_tree(dump)
    dump.close()


def read(tree, path: str) -> bytes:
    node = tree.lookup(path)
    return node.read(0, node.size())


def test_btf_bounds_are_the_guests(sample, opened):
    _, tree = opened
    size = sample.symbol("__stop_BTF") - sample.symbol("__start_BTF")
    node = tree.lookup("btf")
    assert node.size() == size and node.read(0, 2) == b"\x9f\xeb"


def test_the_crashed_task_runs_on_the_crashed_cpu(sample, opened):
    _, tree = opened
    cpu, pid, comm = (sample.truth[k] for k in ("crashed_cpu", "crashed_pid", "crashed_comm"))
    marked = [line.split() for line in read(tree, "ps").decode().splitlines() if line[0] == ">"]
    assert [pid, cpu] in [[int(row[1]), int(row[3])] for row in marked]
    assert read(tree, f"tasks/{pid}/comm").decode() == comm + "\n"
    assert read(tree, f"tasks/{pid}/cpu").decode() == f"{cpu}\n"
    idle = [n for n in tree.lookup("tasks").entries() if n.startswith("0@")]
    assert sorted(idle) == [f"0@cpu{i}" for i in range(sample.truth["guest"]["cpus"])]
    stack = read(tree, f"tasks/{pid}/stack")
    assert stack == read(tree, f"cpus/{cpu}/stack")
    if sample.truth.get("kexec", {}).get("mode") == "oops":  # the fault in the module
        assert stack.startswith(b"vmcorefs_oops_touch+") and b"[vmcorefs_oops]\n" in stack
    else:
        assert b"\npanic+" in stack and b"\nsysrq_handle_crash+" in stack


def test_modules_are_the_guests(sample, opened):
    _, tree = opened
    assert read(tree, "modules").decode() == sample.modules_at_crash()


def test_return_addresses_match_the_kernels_call_trace(sample, opened):
    dump, _ = opened
    log = sample.text("dmesg.makedumpfile.txt")
    trace = log[log.index("Call Trace:") :].split("RIP: 0033")[0]
    frames = re.findall(r"\]  ([\w.]+)\+0x([0-9a-f]+)/0x[0-9a-f]+\n", trace)  # no "?" frames
    names = [n for n, _ in frames]
    # After a panic the trace starts in panic() (its own dump_stack() call, which returned);
    # after an oops it is the fault's stack (module frames, with " [module]", not matched).
    below = frames[names.index("sysrq_handle_crash") :] if "sysrq_handle_crash" in names else frames
    want = [sample.symbol(n) + int(off, 16) for n, off in below]
    task = dump.tasks.running[sample.truth["crashed_cpu"]]
    got = [f.pc for f in dump.stacks.task_frames(task)]
    start = got.index(want[0])
    assert got[start : start + len(want)] == want
