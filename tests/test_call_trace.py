"""The crashing task's stack holds the kernel's own Call Trace, as the kernel printed it.

The last ``Call Trace:`` of the sample's log (``dmesg.makedumpfile.txt``: makedumpfile's
reading of the log, independent of vmcorefs) lists the reliable frames of the oops or panic
(``?`` lines are the kernel's guesses from a scan of the stack: left out). From the frame
after ``panic`` (which went on running, its own offset then differs) to the last one before
the entry code (whose frame the user pc replaces), each ``function+0xOFF/0xSIZE [module]``
must be a frame of ``crash``'s stack, in the same order and adjacent. ``VMCOREFS_SAMPLE=DIR``
runs it on a dump ``tools/make-sample-vmcore`` made: the frame-pointer kernels (Ubuntu's
4.18, 5.4, 5.15) as well as the ORC ones.
"""

from __future__ import annotations

import re

import pytest

from tests.sample import SAMPLE_DIR
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.unwind import function_name
from vmcorefs.tree import build_tree

#: One line of a Call Trace: ``[  time]  [? ]name+0xoff/0xsize[ [module]]``.
TRACE_LINE = re.compile(
    r"^\[[^\]]*\]\s+(\?\s+)?([\w.]+)\+0x([0-9a-f]+)/0x([0-9a-f]+)(?: \[(\w+)\])?\s*$"
)
#: Lines inside a Call Trace that are not frames (the stack's kind, since 5.x).
MARKERS = re.compile(r"^\[[^\]]*\]\s+</?(TASK|IRQ|NMI|SOFTIRQ|EOE|#\w+)>\s*$")
#: A frame of ``crash`` or ``tasks/*/stack``.
OUR_FRAME = re.compile(r"^([\w.]+)\+0x([0-9a-f]+)/0x([0-9a-f]+)(?: \[(\w+)\])?$")


def kernel_call_trace(log: str) -> list[tuple[str, int, int, str | None]]:
    """The reliable frames of the log's last Call Trace, names as vmcorefs writes them."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith("Call Trace:")]
    if not starts:
        return []
    frames = []
    for line in lines[starts[-1] + 1 :]:
        m = TRACE_LINE.match(line)
        if m is None:
            if MARKERS.match(line):
                continue
            break  # "RIP: ...", "Kernel Offset", the end of the trace
        if m.group(1):
            continue  # "? name": not a frame the unwinder found
        name, off, size, module = m.group(2), int(m.group(3), 16), int(m.group(4), 16), m.group(5)
        frames.append((function_name(name), off, size, module))
    return frames


def comparable(trace: list[tuple[str, int, int, str | None]]) -> list[tuple]:
    """The frames the stack at dump time still holds: after the last ``panic``, before the
    entry code."""
    names = [f[0] for f in trace]
    if "panic" in names:
        trace = trace[len(names) - names[::-1].index("panic") :]
    while trace and trace[-1][0].startswith(("entry_SYSCALL", "entry_INT80", "ret_from_fork")):
        trace = trace[:-1]
    return trace


def our_crash_stack(tree) -> list[tuple[str, int, int, str | None]]:
    text = tree.lookup("crash").read(0, 1 << 20).decode()
    if "\nstack:\n" not in text:
        return []
    out = []
    for line in text.split("\nstack:\n", 1)[1].splitlines():
        m = OUR_FRAME.match(line)
        if m:
            out.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16), m.group(4)))
        else:
            out.append((line, 0, 0, None))  # a user pc or a line of its own
    return out


def test_the_crash_stack_holds_the_kernels_call_trace(sample):
    trace = comparable(kernel_call_trace(sample.text("dmesg.makedumpfile.txt")))
    if not trace:
        pytest.skip(f"{SAMPLE_DIR.name}'s log has no Call Trace")
    with open_dump(str(sample.dump)) as dump:
        ours = our_crash_stack(build_tree(dump))
    assert trace[0] in ours, f"{trace[0]} is not in crash's stack:\n{ours}"
    start = ours.index(trace[0])
    assert ours[start : start + len(trace)] == trace, f"\nkernel {trace}\nours   {ours}"


def test_the_parsing_of_a_call_trace():
    log = """[   42.9] Call Trace:
[   42.9]  <TASK>
[   42.9]  dump_stack+0x10/0x12
[   42.9]  panic+0x149/0x321
[   42.9]  sysrq_handle_crash+0x1a/0x20
[   42.9]  __handle_sysrq.cold+0xcc/0x1a2
[   42.9]  ? apparmor_file_permission+0x70/0x160
[   42.9]  oops_write+0x15/0x20 [vmcorefs_oops]
[   42.9]  do_syscall_64+0x5c/0xc0
[   42.9]  entry_SYSCALL_64_after_hwframe+0x44/0xae
[   42.9] RIP: 0033:0x47b7a0
[   42.9]  foo+0x1/0x2
"""
    assert comparable(kernel_call_trace(log)) == [
        ("sysrq_handle_crash", 0x1A, 0x20, None),
        ("__handle_sysrq", 0xCC, 0x1A2, None),
        ("oops_write", 0x15, 0x20, "vmcorefs_oops"),
        ("do_syscall_64", 0x5C, 0xC0, None),
    ]
