"""The ``crash`` file and summary's ``reason``: the report chosen from kernel logs written as
the kernel's panic and oops paths print them (arch/x86/kernel/dumpstack.c, arch/x86/mm/fault.c,
kernel/panic.c), the crashing CPU from each source in turn, on a stand-in dump; then the real
dumps and the sample against their truth."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.kernelfakes import symbol_table
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.crash import (
    NO_CRASH,
    crash_text,
    find_crash,
    find_reports,
    log_messages,
    reason_line,
)
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.tasks import Task
from vmcorefs.tree import BytesFile, build_tree


def log(*messages: str) -> bytes:
    """A log as makedumpfile prints it: one "[seconds] message" line a record."""
    return "".join(f"[{10 + i * 0.001:12.6f}] {m}\n" for i, m in enumerate(messages)).encode()


def reason(*messages: str) -> str | None:
    reports = find_reports(log_messages(log(*messages)))
    return reports[-1].first if reports else None


SYSRQ_PANIC = [
    "sysrq: Trigger a crash",
    "Kernel panic - not syncing: sysrq triggered crash",
    "CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2",
    "Call Trace:",
    " <TASK>",
    " dump_stack_lvl+0x44/0x5c",
    " panic+0x118/0x2f4",
    " </TASK>",
    "Kernel Offset: 0xa800000 from 0xffffffff81000000",
    "---[ end Kernel panic - not syncing: sysrq triggered crash ]---",
]
PAGE_FAULT_OOPS = [  # page_fault_oops(), then die() ... oops_end()
    "BUG: kernel NULL pointer dereference, address: 0000000000000018",
    "#PF: supervisor read access in kernel mode",
    "#PF: error_code(0x0000) - not-present page",
    "PGD 102ff067 P4D 102ff067 PUD 10300067 PMD 0 ",
    "Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "CPU: 2 PID: 77 Comm: writer Kdump: loaded Tainted: G           OE      6.1.0-56-amd64 #1",
    "RIP: 0010:oops_touch.constprop.0+0x5/0x12 [oops_mod]",
    "Call Trace:",
    " oops_write+0x1a/0xfdb [oops_mod]",
    "RIP: 0033:0x47b7a0",
    "CR2: 0000000000000018",
]
END_TRACE = ["---[ end trace 0000000000000000 ]---", "RIP: 0010:oops_touch.constprop.0+0x5/0x12"]


def test_a_panic_is_its_own_report():
    assert reason("Linux version 6.1.0", *SYSRQ_PANIC) == SYSRQ_PANIC[1]


def test_an_oops_starts_at_its_bug_line_and_keeps_its_fatal_exception_panic():
    # kexec: crash_kexec() in oops_end() runs before the end line and the panic
    assert reason(*PAGE_FAULT_OOPS) == PAGE_FAULT_OOPS[0]
    # no crash kernel, panic_on_oops: the end line, the summary registers, then the panic
    fatal = [*PAGE_FAULT_OOPS, *END_TRACE, "Kernel panic - not syncing: Fatal exception",
             "---[ end Kernel panic - not syncing: Fatal exception ]---"]  # fmt: skip
    assert reason(*fatal) == PAGE_FAULT_OOPS[0]
    reports = find_reports(log_messages(log(*fatal)))
    assert len(reports) == 1 and reports[0].cpu == 2 and reports[0].rip == "oops_touch.constprop.0"


@pytest.mark.parametrize(
    "messages, first",
    [
        # Linux 6.1: a general protection fault is its own oops header
        (["general protection fault, probably for non-canonical address 0xdead000000000122: "
          "0000 [#1] PREEMPT SMP NOPTI", "CPU: 0 PID: 5 Comm: kworker/0:0"], 0),
        # Linux 6.7+: every die header is prefixed "Oops: "
        (["Oops: general protection fault, probably for non-canonical address "
          "0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI"], 0),
        # BUG(): report_bug() then die("invalid opcode") (6.1) / "Oops: invalid opcode" (6.12)
        (["kernel BUG at mm/slub.c:435!", "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"], 0),
        (["kernel BUG at mm/slub.c:435!", "Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
          "Kernel panic - not syncing: Fatal exception in interrupt"], 0),
        # a die header with no BUG line before it
        (["divide error: 0000 [#1] PREEMPT SMP NOPTI", "RIP: 0010:div_by_zero+0x3/0x10"], 0),
    ],
)  # fmt: skip
def test_oops_headers(messages, first):
    assert reason("random: crng init done", *messages) == messages[first]


def test_the_last_report_wins():
    first_oops = [*PAGE_FAULT_OOPS, *END_TRACE]  # not fatal: the task was killed
    later = "BUG: unable to handle page fault for address: ffffffffc0250000"
    init_killed = "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009"
    assert reason(*first_oops, "sh: line 1: 77 Killed", later, "#PF: supervisor write access",
                  "Oops: 0002 [#2] PREEMPT SMP NOPTI") == later  # fmt: skip
    # a panic after an oops that ended is a report of its own (not oops_end()'s)
    assert reason(*first_oops, init_killed, "CPU: 0 PID: 1 Comm: init") == init_killed
    # an oops header long after its BUG line, or after the BUG report ended, starts one
    assert reason(*first_oops, "Oops: 0000 [#2] SMP") == "Oops: 0000 [#2] SMP"


def test_lines_that_only_look_like_reports():
    assert reason(
        "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:12]",
        "traps: init[1] general protection fault ip:401000 sp:7ffc error:0 in init[401000+1000]",
        "ACPI BIOS Error (bug): Could not resolve symbol [\\_SB.PCI0], AE_NOT_FOUND",
        "  BUG: inside a continuation line of another record",
        "---[ end trace 0000000000000000 ]---",
    ) is None  # fmt: skip


# -- the file, on a stand-in dump ------------------------------------------------------------

STEXT = 0xFFFFFFFF81000000
CORE = {"_stext": STEXT, "__crash_kexec": STEXT + 0x1000, "panic": STEXT + 0x2000,
        "native_safe_halt": STEXT + 0x3000, "oops_touch.constprop.0": STEXT + 0x4000,
        "_end": STEXT + 0x10000}  # fmt: skip


def task(pid: int, comm: bytes, cpu: int) -> Task:
    return Task(address=0xFFFF888000100000 + pid * 0x1000, pid=pid, tgid=pid, ppid=1,
                real_parent=0, comm=comm, state="R", cpu=cpu, on_cpu=1, thread_sp=0,
                stack_base=0, running_cpu=cpu, name=str(pid))  # fmt: skip


def fake_dump(messages, *, panic_cpu=-1, current_cpu=None, rips=(), tasks=None):
    running = tasks if tasks is not None else {i: task(100 + i, b"t%d" % i, i) for i in range(4)}
    return SimpleNamespace(
        dmesg=lambda: log(*messages),
        panic_cpu=panic_cpu,
        source=SimpleNamespace(info=SimpleNamespace(crashed_cpu=current_cpu)),
        cpus=[SimpleNamespace(index=i, regs={"rip": rip}) for i, rip in enumerate(rips)],
        symbols=symbol_table(CORE),
        modules=SimpleNamespace(symbol=lambda addr: None),
        tasks=SimpleNamespace(running=running),
        stacks=SimpleNamespace(task_stack=lambda t: f"frame_of_{t.pid}+0x1/0x10\n",
                               cpu_stack=cpu_stack),
    )  # fmt: skip


def cpu_stack(cpu: int) -> str:
    if cpu != 2:
        raise Unavailable(f"the dump has no registers for CPU {cpu}")
    return "frame_of_cpu2+0x1/0x10\n"


def test_panic_cpu_names_the_cpu_and_the_task():
    dump = fake_dump(SYSRQ_PANIC, panic_cpu=3, current_cpu=0)
    assert find_crash(dump).text == (
        f"reason: {SYSRQ_PANIC[1]}\ncpu: 3\npid: 103\ncomm: t3\n"
        f"task: 0x{0xFFFF888000100000 + 103 * 0x1000:016x}\nstack:\nframe_of_103+0x1/0x10\n"
    )


def test_without_panic_cpu_the_kdump_header_then_the_registers_then_the_log():
    idle = CORE["native_safe_halt"] + 4
    # panic_cpu -1 (a dump taken after an oops that did not panic): the kdump header's CPU
    dump = fake_dump(PAGE_FAULT_OOPS, current_cpu=1, rips=[idle, idle, idle])
    assert find_crash(dump).cpu == 1
    # an ELF core: the CPU whose pc is in the report's RIP function
    dump = fake_dump(PAGE_FAULT_OOPS, rips=[idle, CORE["oops_touch.constprop.0"] + 5, idle])
    crash = find_crash(dump)
    assert crash.cpu == 1 and "pid: 101\ncomm: t1\n" in crash.text
    assert crash.reason == PAGE_FAULT_OOPS[0]
    # ... or in the crash path (a kernel too old for panic_cpu)
    dump = fake_dump(SYSRQ_PANIC, panic_cpu=None, rips=[CORE["__crash_kexec"] + 0x11A, idle])
    assert find_crash(dump).cpu == 0
    # no register tells (none, or two): the report's own "CPU: N" line
    dump = fake_dump(PAGE_FAULT_OOPS, rips=[idle, idle, idle])
    assert find_crash(dump).cpu == 2
    both = CORE["oops_touch.constprop.0"] + 5
    assert find_crash(fake_dump(PAGE_FAULT_OOPS, rips=[both, both])).cpu == 2


def test_no_crash_at_all():
    quiet = ["Linux version 6.1.0", "random: crng init done"]
    with pytest.raises(Unavailable) as info:
        find_crash(fake_dump(quiet))
    assert info.value.reason == NO_CRASH
    assert reason_line(fake_dump(quiet)) == f"unavailable: {NO_CRASH}"  # summary's words too
    # panic_cpu says a CPU panicked although the log has nothing: said, not guessed
    crash = find_crash(fake_dump(quiet, panic_cpu=1))
    assert crash.text.startswith("reason: unknown (panic_cpu is 1, but the log has no panic")
    assert crash.cpu == 1


def test_what_cannot_be_known_is_said():
    dump = fake_dump(SYSRQ_PANIC, panic_cpu=1, tasks={})
    assert find_crash(dump).text.endswith(
        "cpu: 1\npid: unknown\ncomm: unknown\ntask: unknown\n"
        "stack:\nunavailable: no task is known to run on CPU 1\n"
    )
    # without its task (a kernel without BTF has no task list) the CPU's registers give the
    # stack of what ran there
    assert find_crash(fake_dump(SYSRQ_PANIC, panic_cpu=2, tasks={})).text.endswith(
        "task: unknown\nstack:\nframe_of_cpu2+0x1/0x10\n"
    )

    dump = fake_dump([], panic_cpu=0)
    dump.dmesg = no_log
    text = find_crash(dump).text
    assert text.startswith("reason: unknown (the kernel log: unavailable: VMCOREINFO has no")
    assert "\npid: 100\n" in text


def crash_file_reason(dump) -> str:
    """What the ``crash`` file says of the reason: its ``reason:`` value, else its one
    ``unavailable: ...`` line."""
    first = BytesFile(lambda: crash_text(dump)).content().decode().split("\n", 1)[0]
    return first.removeprefix("reason: ")


def no_log():
    raise Unavailable("VMCOREINFO has no SYMBOL(prb)")


@pytest.mark.parametrize(
    "messages, panic_cpu, expected",
    [
        (SYSRQ_PANIC, 0, SYSRQ_PANIC[1]),
        (PAGE_FAULT_OOPS, -1, PAGE_FAULT_OOPS[0]),
        (["random: crng init done"], -1, f"unavailable: {NO_CRASH}"),  # a running system
        (["random: crng init done"], None, "unavailable: no crash: "),
        (["random: crng init done"], 2, "unknown (panic_cpu is 2, "),
        (None, -1, f"unavailable: {NO_CRASH} (the kernel log: unavailable: "),
        (None, 1, "unknown (the kernel log: unavailable: "),
        (None, None, "unknown (the kernel log: unavailable: "),
    ],
)
def test_reason_line_is_the_crash_files_without_a_stack(messages, panic_cpu, expected):
    """A folder's index says each dump's reason in its ``crash`` file's words, whatever the
    case, without unwinding the crashing task's stack (a list of dumps must read quickly)."""
    dump = fake_dump(messages or [], panic_cpu=panic_cpu)
    if messages is None:
        dump.dmesg = no_log
    got = reason_line(dump)
    assert got.startswith(expected)
    assert got == crash_file_reason(dump)
    dump.stacks = dump.tasks = dump.cpus = None  # touched only by the crash file
    assert reason_line(dump) == got


# -- real dumps ------------------------------------------------------------------------------

REAL = ("kaslr-256m", "la57-nokaslr-384m", "kexec-oops-3cpu-448m")


@pytest.mark.realdump
@pytest.mark.parametrize("name", REAL)
def test_real_crash_equals_the_truth(dumps_dir, name):
    root = dumps_dir / name
    if not (root / "truth.json").exists():
        pytest.skip(f"case {name} is absent")
    import json

    truth = json.loads((root / "truth.json").read_text())
    kernel = json.loads((root / "kernel-truth.json").read_text())
    with open_dump(str(root / "mdf-d31-zlib.kdump")) as dump:
        tree = build_tree(dump)
        text = tree.lookup("crash").read(0, 1 << 20).decode()
        summary = dump.summary()
        if truth["crash_reason"] is None:
            assert text == f"unavailable: {NO_CRASH}\n"
            assert f"\nreason: unavailable: {NO_CRASH}\n" in summary
            return
        head, _, stack = text.partition("stack:\n")
        fields = dict(line.split(": ", 1) for line in head.splitlines())
        assert fields["reason"] == truth["crash_reason"]
        assert f"\nreason: {truth['crash_reason']}\n" in summary
        assert fields["cpu"] == str(truth["crashed_cpu"])
        crashed = [t for t in kernel["tasks"] if t.get("stack") == kernel["crashed_thread_stack"]]
        crashed.sort(key=lambda t: -t.get("on_cpu", 0))
        assert fields["pid"] == str(crashed[0]["pid"]) and fields["comm"] == crashed[0]["comm"]
        node = tree.lookup(f"tasks/{fields['pid']}/stack")
        assert stack == node.read(0, node.size()).decode()


def test_sample_crash_is_the_guests(sample):
    with open_dump(str(sample.dump)) as dump:
        tree = build_tree(dump)
        text = tree.lookup("crash").read(0, 1 << 20).decode()
        head, _, stack = text.partition("stack:\n")
        fields = dict(line.split(": ", 1) for line in head.splitlines())
        assert fields["cpu"] == str(sample.truth["crashed_cpu"])
        assert fields["pid"] == str(sample.truth["crashed_pid"])
        assert fields["comm"] == sample.truth["crashed_comm"]
        if "crash_reason" in sample.truth:
            assert fields["reason"] == sample.truth["crash_reason"]
        else:  # a panic or oops line of the log that makedumpfile printed
            lines = sample.text("dmesg.makedumpfile.txt").splitlines()
            assert any(line.endswith("] " + fields["reason"]) for line in lines)
            assert fields["reason"].startswith(("Kernel panic - not syncing: ", "BUG: "))
        node = tree.lookup(f"tasks/{fields['pid']}/stack")
        assert stack == node.read(0, node.size()).decode()
