"""Every task of the dump, from the kernel's own types (BTF) and symbols: no vmlinux.

The list is the kernel's: ``init_task.tasks`` links the thread-group leaders, each group's
threads hang off ``signal->thread_head`` (``thread_node``; before Linux 6.7 also the circular
``thread_group``). The idle tasks are on neither list: each CPU's is ``rq->idle`` of its
``runqueues`` (CPU 0's is ``init_task``). A task runs on CPU ``n`` when it is that CPU's
``current`` (the per-CPU ``current_task``; else ``rq->curr``); its stack is then unwound from
that CPU's registers, the others' from the frame that ``__switch_to_asm`` left at
``thread.sp``.

Fields are read as /proc reports them: ``pid``, ``tgid``, ``ppid`` = ``real_parent->tgid``,
``comm``, the state letter of ``task_state_to_char()``, ``cpu`` = ``task_cpu()``. The lists are
walked by :mod:`.lists`: where a walk stops short, the tasks found stand and the reason is one
of the list's ``problems``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import FaultError, Unavailable
from .btf import Btf, BtfError
from .lists import list_for_each_entry
from .unwind import Frame, Symbolizer, Unwinder

# include/linux/sched.h: the task state bits (values unchanged since Linux 4.14; the
# TASK_RTLOCK_WAIT rule is 5.15+). They are #defines, so BTF does not carry them.
TASK_RUNNING = 0x0000
TASK_INTERRUPTIBLE = 0x0001
TASK_UNINTERRUPTIBLE = 0x0002
__TASK_STOPPED = 0x0004
__TASK_TRACED = 0x0008
EXIT_DEAD = 0x0010
EXIT_ZOMBIE = 0x0020
TASK_PARKED = 0x0040
TASK_DEAD = 0x0080
TASK_WAKEKILL = 0x0100
TASK_WAKING = 0x0200
TASK_NOLOAD = 0x0400
TASK_NEW = 0x0800
TASK_RTLOCK_WAIT = 0x1000
TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
TASK_REPORT = (
    TASK_INTERRUPTIBLE
    | TASK_UNINTERRUPTIBLE
    | __TASK_STOPPED
    | __TASK_TRACED
    | EXIT_DEAD
    | EXIT_ZOMBIE
    | TASK_PARKED
)
TASK_REPORT_IDLE = TASK_REPORT + 1
#: task_index_to_char(): one letter per bit of TASK_REPORT, then I for TASK_REPORT_IDLE.
TASK_STATE_CHARS = "RSDTtXZPI"

#: Tasks at most (the kernel's PID_MAX_LIMIT on 64-bit: 4 * 1024 * 1024).
PID_MAX_LIMIT = 4 * 1024 * 1024
#: CPUs at most (the kernel's largest NR_CPUS, CONFIG_MAXSMP: 8192).
MAX_CPUS = 8192


def task_state_char(state: int, exit_state: int) -> str:
    """``task_state_to_char()``: ``__task_state_index()`` then ``task_index_to_char()``."""
    index = (state | exit_state) & TASK_REPORT
    if state & TASK_IDLE == TASK_IDLE:
        index = TASK_REPORT_IDLE
    if state == TASK_RTLOCK_WAIT:  # shown as if in rt_mutex_lock()
        index = TASK_UNINTERRUPTIBLE
    return TASK_STATE_CHARS[index.bit_length()]  # fls()


@dataclass(frozen=True)
class _Field:
    offset: int
    size: int
    signed: bool = False


class TaskLayout:
    """The ``task_struct`` members this module reads, from BTF (names vary by version)."""

    def __init__(self, btf: Btf) -> None:
        try:
            self.task = btf.find("struct task_struct")
            self.size = btf.sizeof(self.task)

            def f(*paths: str) -> _Field:
                for path in paths:
                    if btf.has_member(self.task, path):
                        m = btf.member(self.task, path)
                        t = btf.resolve(m.type_id)
                        return _Field(m.offset, btf.sizeof(t), t.signed)
                raise BtfError(f"struct task_struct has none of {', '.join(paths)}")

            self.pid = f("pid")
            self.tgid = f("tgid")
            self.comm = f("comm")
            self.state = f("__state", "state")  # renamed in Linux 5.14
            self.exit_state = f("exit_state")
            # task_cpu(): thread_info.cpu with THREAD_INFO_IN_TASK since Linux 5.16, else ->cpu
            self.cpu = f("thread_info.cpu", "cpu")
            self.on_cpu = f("on_cpu")
            self.real_parent = f("real_parent")
            self.stack = f("stack")
            self.thread_sp = f("thread.sp")
            self.tasks = f("tasks")
            self.signal = f("signal")
            has = btf.has_member
            self.thread_node = f("thread_node") if has(self.task, "thread_node") else None
            self.thread_group = f("thread_group") if has(self.task, "thread_group") else None
            if self.thread_node is not None:
                self.thread_head = btf.offsetof("struct signal_struct", "thread_head")
            self.rq_curr = btf.offsetof("struct rq", "curr")
            # the per-CPU ``current``: its own variable until Linux 6.1, in pcpu_hot since 6.2
            self.pcpu_hot_current = (
                btf.offsetof("struct pcpu_hot", "current_task")
                if btf.has_member("struct pcpu_hot", "current_task")
                else None
            )
            self.rq_idle = btf.offsetof("struct rq", "idle")
        except BtfError as exc:
            raise Unavailable(f"BTF lacks the task layout: {exc}") from None
        fields = [
            v for v in vars(self).values() if isinstance(v, _Field)
        ]  # the span one read covers
        self.lo = min(x.offset for x in fields)
        self.hi = max(x.offset + x.size for x in fields)

    def value(self, data: bytes, fld: _Field) -> int:
        start = fld.offset - self.lo
        return int.from_bytes(data[start : start + fld.size], "little", signed=fld.signed)


@dataclass
class Task:
    """One task as /proc and crash show it. ``running_cpu``: the CPU it runs on (rq->curr);
    ``idle``: the CPU whose idle task it is."""

    address: int
    pid: int
    tgid: int
    ppid: int | None  # None: the parent's task_struct is not in the dump
    real_parent: int
    comm: bytes
    state: str
    cpu: int
    on_cpu: int
    thread_sp: int
    stack_base: int
    running_cpu: int | None = None
    idle: int | None = None
    name: str = ""


@dataclass
class TaskList:
    tasks: list[Task]
    #: CPU -> the task that runs there
    running: dict[int, Task] = field(default_factory=dict)
    #: why the list may be incomplete (a walk cut by absent memory, a loop)
    problems: list[str] = field(default_factory=list)

    def by_name(self) -> dict[str, Task]:
        return {t.name: t for t in self.tasks}


def cpus_in_mask(kvirt, symbols, mask: str) -> list[int]:
    """CPUs in the kernel's cpumask ``mask`` (``__cpu_present_mask``...) below ``nr_cpu_ids``."""
    mask_addr = symbols.get(mask)
    if mask_addr is None:
        raise Unavailable(f"the symbol table has no {mask}")
    count = MAX_CPUS
    nr = symbols.get("nr_cpu_ids")
    if nr is not None:
        try:
            count = min(kvirt.u32(nr), MAX_CPUS)
        except FaultError:
            pass
    raw = kvirt.read(mask_addr, (count + 7) // 8)
    bits = int.from_bytes(raw, "little")
    return [cpu for cpu in range(min(count, 8 * len(raw))) if bits >> cpu & 1]


def present_cpus(kvirt, symbols) -> list[int]:
    """The CPUs that exist. Not the online mask: a panic takes the other CPUs offline
    (``stop_this_cpu()``) while their idle tasks and runqueues stay."""
    for mask in ("__cpu_present_mask", "__cpu_possible_mask", "__cpu_online_mask"):
        if symbols.get(mask) is not None:
            return cpus_in_mask(kvirt, symbols, mask)
    raise Unavailable("the symbol table has no CPU mask (__cpu_present_mask)")


def per_cpu_base(kvirt, symbols, cpu: int) -> int:
    """``__per_cpu_offset[cpu]``: add a per-CPU symbol's value for that CPU's copy."""
    table = symbols.get("__per_cpu_offset")
    if table is None:
        raise Unavailable("the symbol table has no __per_cpu_offset")
    try:
        return kvirt.u64(table + 8 * cpu)
    except FaultError as exc:
        raise Unavailable(f"__per_cpu_offset[{cpu}] is not in the dump ({exc})") from None


def build_task_list(kvirt, symbols, btf: Btf) -> TaskList:
    """Walk the dump's task list; Unavailable when the layout or the anchors are missing."""
    layout = TaskLayout(btf)
    init_task = symbols.get("init_task")
    runqueues = symbols.get("runqueues")
    current_task = symbols.get("current_task")
    pcpu_hot = symbols.get("pcpu_hot")
    if init_task is None:
        raise Unavailable("the symbol table has no init_task")
    problems: list[str] = []
    span = layout.hi - layout.lo
    tgid_cache: dict[int, int | None] = {}

    def read_task(addr: int) -> Task:
        data = kvirt.read_exact(addr + layout.lo, span)
        v = layout.value
        parent = v(data, layout.real_parent)
        if parent in tgid_cache:
            ppid = tgid_cache[parent]
        else:
            try:
                ppid = kvirt.s32(parent + layout.tgid.offset)
            except FaultError:
                ppid = None  # the parent's task_struct is not in the dump
            tgid_cache[parent] = ppid
        comm = data[layout.comm.offset - layout.lo :][: layout.comm.size].split(b"\0", 1)[0]
        return Task(
            address=addr,
            pid=v(data, layout.pid),
            tgid=v(data, layout.tgid),
            ppid=ppid,
            real_parent=parent,
            comm=comm,
            state=task_state_char(v(data, layout.state), v(data, layout.exit_state)),
            cpu=v(data, layout.cpu),
            on_cpu=v(data, layout.on_cpu),
            thread_sp=v(data, layout.thread_sp),
            stack_base=v(data, layout.stack),
        )

    tasks: dict[int, Task] = {}

    # The idle task of each CPU, and what runs where.
    running: dict[int, Task] = {}
    curr_of: dict[int, int] = {}
    if runqueues is not None:
        for cpu in present_cpus(kvirt, symbols):
            try:
                base = per_cpu_base(kvirt, symbols, cpu)
                rq = base + runqueues
                idle = kvirt.u64(rq + layout.rq_idle)
                # ``current`` (what the CPU executes, switched in __switch_to), else rq->curr
                if current_task is not None:
                    curr_of[cpu] = kvirt.u64(base + current_task)
                elif pcpu_hot is not None and layout.pcpu_hot_current is not None:
                    curr_of[cpu] = kvirt.u64(base + pcpu_hot + layout.pcpu_hot_current)
                else:
                    curr_of[cpu] = kvirt.u64(rq + layout.rq_curr)
                if idle and idle not in tasks:
                    tasks[idle] = read_task(idle)
                    tasks[idle].idle = cpu
            except (FaultError, Unavailable) as exc:
                problems.append(f"CPU {cpu}: runqueue unreadable ({exc})")
    else:
        problems.append("no runqueues symbol: idle tasks and running tasks unknown")
    if not tasks:  # at least CPU 0's idle task
        try:
            tasks[init_task] = read_task(init_task)
        except FaultError as exc:  # no task to start from: no list at all
            raise Unavailable(f"init_task is not in the dump ({exc})") from None
        tasks[init_task].idle = 0

    def walk(head: int, member: int, what: str, problems: list[str]) -> Iterator[int]:
        """The tasks on one list; its problems (an unreadable head among them) noted."""
        try:
            return list_for_each_entry(kvirt, head, member, what, PID_MAX_LIMIT,
                                       problems=problems)  # fmt: skip
        except Unavailable as exc:
            problems.append(exc.reason)
            return iter(())

    def threads(leader: int) -> Iterator[int]:
        yield leader
        what = f"threads of {leader:#x}"
        if layout.thread_node is not None:
            try:
                signal = kvirt.u64(leader + layout.signal.offset)
            except FaultError as exc:
                problems.append(f"task {leader:#x}: signal unreadable ({exc})")
                return
            yield from walk(signal + layout.thread_head, layout.thread_node.offset, what, problems)
        elif layout.thread_group is not None:
            off = layout.thread_group.offset
            yield from walk(leader + off, off, what, problems)

    # The main list's own problems come first: they are what cuts the list short.
    list_problems: list[str] = []
    off_tasks = layout.tasks.offset
    full = False
    for leader in walk(init_task + off_tasks, off_tasks, "init_task.tasks", list_problems):
        for addr in threads(leader):
            if addr in tasks:
                continue
            if len(tasks) >= PID_MAX_LIMIT:
                full = True
                break
            try:
                tasks[addr] = read_task(addr)
            except FaultError as exc:
                problems.append(f"task {addr:#x} is not in the dump ({exc})")
        if full:
            problems.append(f"more than {PID_MAX_LIMIT} tasks (the walk stops there)")
            break

    for cpu, curr in curr_of.items():
        task = tasks.get(curr)
        if task is not None:
            task.running_cpu = cpu
            running[cpu] = task

    ordered = sorted(tasks.values(), key=lambda t: (t.pid, t.idle or 0, t.address))
    counts: dict[int, int] = {}
    for t in ordered:
        counts[t.pid] = counts.get(t.pid, 0) + 1
    for t in ordered:
        if counts[t.pid] == 1:
            t.name = str(t.pid)
        elif t.idle is not None:
            t.name = f"{t.pid}@cpu{t.idle}"
        else:
            t.name = f"{t.pid}@{t.address:016x}"
    return TaskList(ordered, running, list_problems + problems)


def escape_comm(comm: bytes) -> str:
    """A comm for one line of ``ps``: printable ASCII kept, others as ``\\xNN``."""
    out = []
    for b in comm:
        if b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def ppid_text(task: Task) -> str:
    if task.ppid is None:
        raise Unavailable(f"the parent task_struct at {task.real_parent:#x} is not in the dump")
    return f"{task.ppid}\n"


def ps_text(tasks: TaskList) -> str:
    """crash's ``ps`` columns: ``>`` marks the tasks running on a CPU."""
    lines = ["   PID    PPID  CPU       TASK        ST  COMM"]
    for t in tasks.tasks:
        mark = ">" if t.running_cpu is not None else " "
        ppid = "-" if t.ppid is None else t.ppid
        lines.append(
            f"{mark}{t.pid:>6} {ppid:>7} {t.cpu:>4}  {t.address:016x}  {t.state}  "
            f"{escape_comm(t.comm)}"
        )
    return "\n".join(lines) + "\n"


#: pt_regs names of the CPU registers (cpus/N/regs names them as ELF's user_regs_struct).
_PT_REGS_NAMES = {"rbp": "bp", "rbx": "bx", "rax": "ax", "rcx": "cx", "rdx": "dx", "rsi": "si",
                  "rdi": "di", "orig_rax": "orig_ax", "rip": "ip", "eflags": "flags",
                  "rsp": "sp"}  # fmt: skip


def pt_regs_view(registers: Mapping[str, int]) -> dict[str, int]:
    """A CPU's registers by their ``struct pt_regs`` names (``ip``, ``sp``, ``bp``, ...)."""
    return {_PT_REGS_NAMES.get(k, k): v for k, v in registers.items()}


def thread_size(symbols) -> int | None:
    """THREAD_SIZE: the span the linker script gives init_task's stack
    (``INIT_TASK_DATA(THREAD_SIZE)``: ``__start_init_task`` .. ``__end_init_task``)."""
    start, end = symbols.get("__start_init_task"), symbols.get("__end_init_task")
    if start is None or end is None or not 0 < end - start <= 1 << 20:
        return None
    return end - start


class Stacks:
    """Stacks of tasks and CPUs as text, one frame a line (see unwind.Symbolizer)."""

    def __init__(self, tasks: TaskList, unwinder: Unwinder, symbolizer: Symbolizer,
                 cpu_registers: Callable[[int], Mapping[str, int] | None],
                 thread_size: int | None = None) -> None:  # fmt: skip
        self.tasks, self.unwinder, self.symbolizer = tasks, unwinder, symbolizer
        self.cpu_registers = cpu_registers
        self.thread_size = thread_size

    def task_frames(self, task: Task) -> list[Frame]:
        if task.running_cpu is not None:
            regs = self.cpu_registers(task.running_cpu)
            if regs is None:
                raise Unavailable(
                    f"the task runs on CPU {task.running_cpu}, whose registers the dump lacks"
                )
            return self.unwinder.from_registers(pt_regs_view(regs))
        if not task.stack_base:
            raise Unavailable("the task has no stack (it exited and its stack was freed)")
        size = self.thread_size
        if size and not task.stack_base <= task.thread_sp < task.stack_base + size:
            raise Unavailable(
                f"thread.sp {task.thread_sp:#x} is outside the task's stack "
                f"{task.stack_base:#x}..{task.stack_base + size:#x}"
            )
        return self.unwinder.from_inactive_frame(task.thread_sp)

    def task_stack(self, task: Task) -> str:
        return self.symbolizer.format(self.task_frames(task))

    def cpu_stack(self, cpu: int) -> str:
        regs = self.cpu_registers(cpu)
        if regs is None:
            raise Unavailable(f"the dump has no registers for CPU {cpu}")
        return self.symbolizer.format(self.unwinder.from_registers(pt_regs_view(regs)))
