"""btf, tasks/, ps, modules and stacks of the real dumps, through the tree, against truth that
vmcorefs never sees: kernel-truth.json (drgn with the kernel's debug vmlinux), gt/ (captured in
the guest) and the Call Trace the kernel itself printed when kaslr-256m panicked."""

from __future__ import annotations

import re

import pytest

import vmcorefs
from vmcorefs.errors import DumpError
from vmcorefs.tree import build_tree

pytestmark = pytest.mark.realdump


def read(tree, path: str) -> bytes:
    node = tree.lookup(path)
    return node.read(0, node.size())


def user_cut(names: list[str]) -> list[str]:
    """Frames up to the first user-space pc (drgn goes on past it; a kernel unwinder stops)."""
    out = []
    for n in names:
        if re.fullmatch(r"0x[0-9a-f]+", n) and int(n, 16) < 1 << 63:
            break
        out.append(n)
    return out


@pytest.fixture(scope="module", params=["vmcore.elf", "mdf-d31-zlib.kdump"])
def opened(request, case):
    path = case.root / request.param
    if not path.exists():
        pytest.skip(f"{case.name} has no {request.param}")
    try:
        dump = vmcorefs.open_dump(str(path))
    except (DumpError, ImportError) as exc:  # a container this checkout cannot read yet
        pytest.skip(f"{request.param} does not open here: {exc}")
    yield case, dump, build_tree(dump)
    dump.close()


@pytest.fixture(scope="module")
def by_address(opened):
    _, _, tree = opened
    out = {}
    for name in tree.lookup("tasks").entries():
        out[int(read(tree, f"tasks/{name}/task"), 16)] = name
    return out


def test_btf_file_is_the_blob(opened):
    case, dump, tree = opened
    bounds = case.json("kernel-truth.json")["btf"]
    start, stop = int(bounds["start"]), int(bounds["stop"])
    node = tree.lookup("btf")
    assert node.size() == stop - start
    assert node.read(0, node.size()) == dump.kvirt.read(start, stop - start)
    assert node.read(0, 2) == b"\x9f\xeb"


def test_every_task_and_its_stack(opened, by_address):
    case, _, tree = opened
    truth = case.json("kernel-truth.json")["tasks"]
    for t in truth:
        name = by_address[int(t["task"], 16)]
        assert name == str(t["pid"])
        for field in ("comm", "state", "ppid", "tgid", "cpu"):
            assert read(tree, f"tasks/{name}/{field}").decode() == f"{t[field]}\n", (name, field)
        lines = read(tree, f"tasks/{name}/stack").decode().splitlines()
        for line in lines:
            assert re.fullmatch(r"\S+\+0x[0-9a-f]+/0x[0-9a-f]+( \[\S+\])?|0x[0-9a-f]+", line)
        names = [line.split("+")[0] for line in lines]
        assert user_cut(names) == user_cut(t["stack_noinline"]), name
    idle = [a for a in by_address if a not in {int(t["task"], 16) for t in truth}]
    assert len(idle) == case.truth["ncpus"]
    for a in idle:
        assert read(tree, f"tasks/{by_address[a]}/tgid") == b"0\n"


def test_ps_and_running_marks(opened):
    case, _, tree = opened
    truth = case.json("kernel-truth.json")["tasks"]
    rows = {}
    for line in read(tree, "ps").decode().splitlines()[1:]:
        m = re.fullmatch(r"(>?)\s*(\d+)\s+(\d+)\s+(\d+)\s+([0-9a-f]{16})\s+(\S)\s+(.*)", line)
        assert m, line
        rows[int(m.group(5), 16)] = m.groups()
    for t in truth:
        mark, pid, ppid, cpu, _, state, comm = rows[int(t["task"], 16)]
        assert (int(pid), int(ppid), int(cpu), state, comm) == (
            t["pid"], t["ppid"], t["cpu"], t["state"], t["comm"]
        )  # fmt: skip
        assert (mark == ">") == bool(t["on_cpu"]), t["comm"]


def test_modules_equal_the_guests_proc_modules(opened):
    case, _, tree = opened
    gt = (case.root / "gt" / "modules.txt").read_text()
    assert read(tree, "modules").decode() == gt
    truth = case.json("kernel-truth.json")["modules"]
    for m in truth:
        assert f"{m['name']} {m['size']} " in gt and f"0x{m['base']:016x}" in gt


def test_cpu_stacks(opened):
    case, _, tree = opened
    truth = case.json("kernel-truth.json")
    for cpu in range(case.truth["ncpus"]):
        assert read(tree, f"cpus/{cpu}/stack").strip()
    for t in truth["tasks"]:
        if t["on_cpu"]:
            names = [x.split("+")[0] for x in read(tree, f"cpus/{t['cpu']}/stack").decode().split()]
            assert user_cut(names) == user_cut(t["stack_noinline"])
    if case.truth.get("crashed_cpu") is not None:
        assert b"\npanic+" in read(tree, f"cpus/{case.truth['crashed_cpu']}/stack")


def test_the_kernels_own_call_trace(opened, by_address):
    """kaslr-256m's panic printed a Call Trace into the log: from sysrq_handle_crash down, the
    return addresses are still on the stack, and ours are the same addresses."""
    case, dump, _ = opened
    if case.truth.get("crashed_cpu") is None:
        pytest.skip("the case did not panic")
    log = (case.root / "dmesg.makedumpfile.txt").read_text()
    trace = log[log.index("Call Trace:") :].split("RIP: 0033")[0]
    reliable = re.findall(r"\]  ([\w.]+)\+0x([0-9a-f]+)/0x[0-9a-f]+\n", trace)
    pcs = [dump.symbols.address(name) + int(off, 16) for name, off in reliable]
    names = [name for name, _ in reliable]
    kernel = pcs[names.index("sysrq_handle_crash") :]
    task = next(t for t in dump.tasks.tasks if t.running_cpu == case.truth["crashed_cpu"])
    ours = [f.pc for f in dump.stacks.task_frames(task)]
    start = ours.index(kernel[0])
    assert ours[start : start + len(kernel)] == kernel
