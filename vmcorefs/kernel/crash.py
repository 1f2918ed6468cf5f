"""The ``crash`` file: what crashed, for triage (DESIGN.md "Crash").

``reason``: the first line of the last panic or oops report in the kernel log. A report starts
with ``Kernel panic - not syncing: ``, ``BUG: ``, ``kernel BUG at ``, or an oops header as
``__die_header()`` prints it (``Oops: 0002 [#1] ...``, ``general protection fault, ...: 0000
[#1] ...``, ``invalid opcode: 0000 [#1] ...``; since Linux 6.7 each prefixed ``Oops: ``). Two
of these belong to the report before them rather than starting one (arch/x86/kernel/dumpstack.c,
Linux 6.1 and 6.12):

* the oops header that ``die()`` prints after ``page_fault_oops()``'s ``BUG: ...`` lines or
  ``report_bug()``'s ``kernel BUG at ...`` (within :data:`OOPS_HEADER_LINES` lines, before
  the report's ``---[ end`` line);
* ``Kernel panic - not syncing: Fatal exception`` (``... in interrupt``): ``oops_end()``'s panic
  once the oops was printed (after its ``---[ end trace`` line and register summary).

``cpu``: the kernel's ``panic_cpu`` when it is not -1 (``panic()`` and, since Linux 4.5,
``crash_kexec()`` set it), else the kdump header's ``current_cpu`` (kdump-compressed dumps),
else the CPU whose saved registers show the crash: its pc in the function that the report's
``RIP:`` line names, or in the crash path (``__crash_kexec`` ...), one CPU alone; else the CPU
of the report's ``CPU: N PID: ...`` line. ``pid``, ``comm``, ``task``: the task running on that
CPU; ``stack:`` then that task's stack exactly as ``tasks/NAME/stack`` shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import NOT_AVAILABLE, FaultError, Unavailable, why
from .cpus import PANIC_CPU_INVALID
from .tasks import escape_comm

PANIC = "Kernel panic - not syncing: "
#: oops_end(): the panic that follows a printed oops.
FATAL_EXCEPTION = PANIC + "Fatal exception"
BUG_STARTS = ("BUG: ", "kernel BUG at ")
#: __die_header(): "%s: %04lx [#%d]" (str, err, die_counter), then the flags.
_DIE_HEADER = re.compile(r"^(?:Oops: |\S.*: [0-9a-f]{4,16} \[#\d+\])")
#: The oops header follows its BUG line within a few lines (the #PF lines, the page walk).
OOPS_HEADER_LINES = 30
REPORT_END = "---[ end "
#: makedumpfile's line prefix: "[%5lld.%06ld] ".
_PREFIX = re.compile(r"^\[\s*\d+\.\d+\] ")
#: dump_stack_print_info(): "CPU: %d PID: %d Comm: %.20s" (5.x-6.x; "UID: %u" since 6.10).
_CPU_LINE = re.compile(r"^CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: ")
#: show_ip(): "RIP: %04x:%pS".
_RIP_LINE = re.compile(r"^RIP: [0-9a-f]{4}:([^+\s]+)\+0x")
#: Functions whose pc in a CPU's saved registers says that CPU crashed (crash_setup_regs() is
#: inline in __crash_kexec(); panic() on the way there).
CRASH_PATH = frozenset({"__crash_kexec", "crash_kexec", "panic", "machine_crash_shutdown",
                        "native_machine_crash_shutdown", "crash_setup_regs"})  # fmt: skip
NO_CRASH = "no crash: panic_cpu is -1 and the log has no panic or oops report"


@dataclass
class Report:
    """One panic or oops report of the log."""

    first: str  #: its first line (the message, without the timestamp)
    start: int  #: the message index where it starts
    oops: bool = False  #: an oops header is part of it
    closed: bool = False  #: its "---[ end ..." line was seen
    cpu: int | None = None  #: from its "CPU: N PID: P Comm: ..." line
    rip: str | None = None  #: the function of its first "RIP: " line


def log_messages(log: bytes) -> list[str]:
    """The kernel log (makedumpfile's format) as messages: the timestamp prefix dropped."""
    text = log.decode("utf-8", "surrogateescape")
    return [_PREFIX.sub("", line, count=1) for line in text.split("\n")]


def find_reports(messages: list[str]) -> list[Report]:
    """The panic and oops reports of the log, in order (see the module docstring)."""
    reports: list[Report] = []
    for i, msg in enumerate(messages):
        cur = reports[-1] if reports else None
        if msg.startswith(REPORT_END):
            if cur is not None:
                cur.closed = True
            continue
        if msg.startswith(PANIC):
            if cur is not None and cur.oops and msg.startswith(FATAL_EXCEPTION):
                continue  # oops_end()'s panic: part of the oops
            reports.append(Report(msg, i))
        elif msg.startswith(BUG_STARTS):
            reports.append(Report(msg, i))
        elif _DIE_HEADER.match(msg):
            if (
                cur is not None
                and cur.first.startswith(BUG_STARTS)
                and not cur.oops
                and not cur.closed
                and i - cur.start <= OOPS_HEADER_LINES
            ):
                cur.oops = True  # die() after page_fault_oops() / report_bug()
            else:
                reports.append(Report(msg, i, oops=True))
        elif cur is not None and not cur.closed:
            m = _CPU_LINE.match(msg)
            if m and cur.cpu is None:
                cur.cpu = int(m.group(1))
            m = _RIP_LINE.match(msg)
            if m and cur.rip is None:
                cur.rip = m.group(1)
    return reports


@dataclass
class Crash:
    reason: str
    cpu: int | None
    text: str  #: the whole ``crash`` file


def _last_report(dump) -> tuple[Report | None, str | None]:
    """The log's last report, or None and why the log could not be read."""
    try:
        log = dump.dmesg()
    except NOT_AVAILABLE as exc:
        return None, f"the kernel log: unavailable: {why(exc)}"
    reports = find_reports(log_messages(log))
    return (reports[-1] if reports else None), None


def _register_cpu(dump, report: Report | None) -> int | None:
    """The one CPU whose saved pc is in the report's RIP function or in the crash path."""
    try:
        cpus = dump.cpus
    except Unavailable:
        return None
    wanted = set(CRASH_PATH)
    if report is not None and report.rip:
        wanted.add(report.rip)
    found = []
    for cpu in cpus:
        rip = cpu.regs.get("rip")
        if rip is None:
            continue
        name = None
        try:
            hit = dump.symbols.containing(rip)
            if hit is not None:
                name = hit[0].name
            else:
                mod = dump.modules.symbol(rip)
                name = mod[0] if mod else None
        except (Unavailable, FaultError):
            name = None
        if name in wanted:
            found.append(cpu.index)
    return found[0] if len(found) == 1 else None


def crashing_cpu(dump, report: Report | None) -> int | None:
    """panic_cpu, else kdump's current_cpu, else the registers, else the report's CPU line."""
    panic_cpu = dump.panic_cpu
    if panic_cpu is not None and panic_cpu != PANIC_CPU_INVALID:
        return panic_cpu
    current = dump.source.info.crashed_cpu
    if current is not None:
        return current
    cpu = _register_cpu(dump, report)
    if cpu is None and report is not None:
        cpu = report.cpu
    return cpu


def _stack(dump, task) -> str:
    """``tasks/NAME/stack``'s content for ``task`` (the same text, or the same unavailable)."""
    try:
        return dump.stacks.task_stack(task)
    except NOT_AVAILABLE as exc:
        return f"unavailable: {why(exc)}\n"


def find_reason(dump) -> tuple[str, Report | None]:
    """``crash``'s reason and the report it is the first line of (None: no report); Unavailable
    when the dump is of a running system. Reads the log and ``panic_cpu`` only, no stack."""
    report, log_problem = _last_report(dump)
    if report is not None:
        return report.first, report
    panic_cpu = dump.panic_cpu
    if panic_cpu == PANIC_CPU_INVALID:
        raise Unavailable(NO_CRASH + (f" ({log_problem})" if log_problem else ""))
    if log_problem is not None:
        return f"unknown ({log_problem})", None
    if panic_cpu is None:
        raise Unavailable(
            "no crash: the log has no panic or oops report (panic_cpu is not in the dump)"
        )
    return f"unknown (panic_cpu is {panic_cpu}, but the log has no panic or oops report)", None


def reason_line(dump) -> str:
    """``crash``'s reason as one line, without unwinding a stack: its ``reason:`` value, or the
    ``unavailable: ...`` line that ``crash`` then holds (a dump of a running system), so that a
    list of dumps (a folder's index) says it in the dump's own ``crash`` file's words."""
    try:
        return find_reason(dump)[0]
    except NOT_AVAILABLE as exc:
        return f"unavailable: {why(exc)}"


def find_crash(dump) -> Crash:
    """What crashed; Unavailable when the dump is of a running system."""
    reason, report = find_reason(dump)
    cpu = crashing_cpu(dump, report)
    lines = [f"reason: {reason}", f"cpu: {'unknown' if cpu is None else cpu}"]
    stack = "unavailable: the crashing CPU is unknown\n"
    try:
        task = None if cpu is None else dump.tasks.running.get(cpu)
    except NOT_AVAILABLE as exc:
        task = None
        stack = f"unavailable: the task list: {why(exc)}\n"
    else:
        if cpu is not None and task is None:
            stack = f"unavailable: no task is known to run on CPU {cpu}\n"
    if task is not None:
        lines += [f"pid: {task.pid}", f"comm: {escape_comm(task.comm)}",
                  f"task: 0x{task.address:016x}"]  # fmt: skip
        stack = _stack(dump, task)
    else:
        lines += ["pid: unknown", "comm: unknown", "task: unknown"]
    return Crash(reason, cpu, "\n".join(lines) + "\nstack:\n" + stack)


def crash_text(dump) -> str:
    """The content of ``crash``."""
    return find_crash(dump).text
