"""Every stack of the sample equals drgn's, unwound with the kernel's debug info.

``drgn-stacks.json`` in the sample's folder is written by ``tools/drgn-stacks`` (drgn and the
kernel's debug vmlinux from Debian's ``-dbg`` package, which vmcorefs never gets); it names the
dump file it read. Each task's and each CPU's ``stack`` must name drgn's functions, without the
frames of inlined calls (an ORC unwinder cannot see them), up to the first user-space pc
(where a kernel unwinder stops). ``VMCOREFS_SAMPLE=DIR`` runs this on another dump that
``tools/make-sample-vmcore`` made (e.g. ``--kexec panic`` on 6.12); without the file: skipped.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.sample import SAMPLE_DIR
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.dump import open_dump
from vmcorefs.tree import build_tree

#: A frame as DESIGN writes it: ``function+0xOFF/0xSIZE``, `` [module]`` for module code.
FRAME = re.compile(r"([^\s+]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\S+\])?")
#: The first address of the kernel's half: a bare pc below it is user space.
KERNEL_HALF = 1 << 63


def function_names(lines: list[str]) -> list[str]:
    """Names of frames in order; a frame without a symbol as ``hex(pc)`` (drgn's form)."""
    out = []
    for line in lines:
        found = FRAME.fullmatch(line)
        if found:
            out.append(found.group(1))
        elif re.fullmatch(r"0x[0-9a-f]+", line):
            out.append(hex(int(line, 16)))
        else:
            raise AssertionError(f"not a frame: {line!r}")
    return out


def to_first_user_pc(names: list[str]) -> list[str]:
    for i, name in enumerate(names):
        if name.startswith("0x") and int(name, 16) < KERNEL_HALF:
            return names[: i + 1]
    return names


@pytest.fixture(scope="module")
def truth():
    path = SAMPLE_DIR / "drgn-stacks.json"
    if not path.exists():
        pytest.skip(f"{SAMPLE_DIR.name} has no drgn-stacks.json (tools/drgn-stacks writes it)")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def tree(truth):
    dump_file = SAMPLE_DIR / truth["dump"]
    if not dump_file.exists():
        pytest.skip(f"{dump_file.name}, which drgn read, is absent")
    dump = open_dump(str(dump_file))
    yield build_tree(dump)
    dump.close()


def our_stack(tree, path: str) -> list[str] | str:
    try:
        text = tree.lookup(path).read(0, 1 << 20).decode()
    except Unavailable as exc:
        return f"unavailable: {exc}"
    return to_first_user_pc(function_names(text.splitlines()))


def differences(pairs) -> list[str]:
    out = []
    for what, ours, theirs in pairs:
        if ours != theirs:
            out.append(f"{what}:\n  vmcorefs {ours}\n  drgn     {theirs}")
    return out


def test_every_task_stack_is_drgns(truth, tree):
    by_address = {}
    for name in tree.lookup("tasks").entries():
        by_address[int(tree.lookup(f"tasks/{name}/task").read(0, 64), 16)] = name
    pairs = []
    for task in truth["tasks"]:
        assert "error" not in task, task  # drgn itself could not unwind: fix the truth
        name = by_address.get(int(task["task"], 16))
        assert name is not None, f"task {task['pid']} at {task['task']} is not in tasks/"
        theirs = to_first_user_pc(task["stack_noinline"])
        pairs.append((f"tasks/{name} ({task['comm']})", our_stack(tree, f"tasks/{name}/stack"),
                      theirs))  # fmt: skip
    bad = differences(pairs)
    assert not bad, f"{len(bad)} of {len(pairs)} stacks differ:\n" + "\n".join(bad)


def test_every_cpu_stack_is_drgns(truth, tree):
    """A CPU's stack: unwound from its NT_PRSTATUS note, as drgn does for the task it ran."""
    assert len(tree.lookup("cpus").entries()) == len(truth["cpus"])
    pairs = []
    for cpu in truth["cpus"]:
        assert "error" not in cpu, cpu
        n = cpu["cpu"]
        pairs.append((f"cpus/{n}", our_stack(tree, f"cpus/{n}/stack"),
                      to_first_user_pc(cpu["stack_noinline"])))  # fmt: skip
    bad = differences(pairs)
    assert not bad, "\n".join(bad)


def test_the_crashed_threads_stack(truth, tree):
    """drgn's crashed thread is the task whose CPU panicked: its stack is the CPU's."""
    crashed = truth["crashed_thread_stack"]
    if crashed and crashed[0].startswith("error:"):
        pytest.skip("the dump's kernel did not crash")
    panicked = [n for n in tree.lookup("cpus").entries()
                if b"crashed yes" in tree.lookup(f"cpus/{n}/regs").read(0, 4096)]  # fmt: skip
    assert len(panicked) == 1
    assert our_stack(tree, f"cpus/{panicked[0]}/stack") == to_first_user_pc(crashed)
