"""The task list on a synthetic kernel: task_structs, lists and runqueues written by the test
at offsets it chose and described in BTF; expected values are the ones it wrote."""

from __future__ import annotations

import pytest

from tests.btfbuilder import BtfBuilder
from tests.kernelfakes import SparseMemory, absent, symbol_table
from vmcorefs.errors import FaultError, Unavailable
from vmcorefs.kernel.btf import Btf
from vmcorefs.kernel.tasks import build_task_list, escape_comm, ps_text, task_state_char

# include/linux/sched.h values, written out here from the header
STATES = [
    ((0x0000, 0), "R"),  # TASK_RUNNING
    ((0x0001, 0), "S"),  # TASK_INTERRUPTIBLE
    ((0x0002, 0), "D"),  # TASK_UNINTERRUPTIBLE
    ((0x0102, 0), "D"),  # TASK_KILLABLE
    ((0x0402, 0), "I"),  # TASK_IDLE = UNINTERRUPTIBLE | NOLOAD
    ((0x0104, 0), "T"),  # TASK_STOPPED
    ((0x0108, 0), "t"),  # TASK_TRACED
    ((0x0080, 0x10), "X"),  # TASK_DEAD, exit_state EXIT_DEAD
    ((0x0080, 0x20), "Z"),  # exit_state EXIT_ZOMBIE
    ((0x0040, 0), "P"),  # TASK_PARKED
    ((0x1000, 0), "D"),  # TASK_RTLOCK_WAIT shows as rt_mutex_lock()'s D
    ((0x2001, 0), "S"),  # TASK_INTERRUPTIBLE | TASK_FREEZABLE (6.1)
    ((0x0800, 0), "R"),  # TASK_NEW alone reports nothing
    ((0x0200, 0), "R"),  # TASK_WAKING
]


@pytest.mark.parametrize("args, letter", STATES)
def test_task_state_char(args, letter):
    assert task_state_char(*args) == letter


def test_escape_comm():
    assert escape_comm(b"kworker/0:1") == "kworker/0:1"
    assert escape_comm(b"a b\n\\\xff") == "a b\\x0a\\\\\\xff"


# -- a synthetic kernel --------------------------------------------------------------------

OFF = dict(cpu=16, state=24, stack=32, on_cpu=40, tasks=48, exit_state=64, pid=68, tgid=72,
           real_parent=80, thread_node=88, signal=104, comm=112, thread=256)  # fmt: skip
TASK_SIZE = 512
SIG_THREAD_HEAD = 16
RQ_CURR, RQ_IDLE = 8, 16
RUNQUEUES = 0x2000  # a per-CPU symbol: an offset into each CPU's area
PCPU = [0xFFFF888000100000, 0xFFFF888000200000]
DATA = 0xFFFFFFFF82000000
INIT_TASK = DATA + 0x1000
PER_CPU_OFFSET = DATA + 0x100
PRESENT_MASK = DATA + 0x200
NR_CPU_IDS = DATA + 0x300
SLAB = 0xFFFF888001000000


def task_btf(with_thread_node: bool = True) -> Btf:
    b = BtfBuilder()
    u64 = b.int_("long unsigned int", 8)
    uint = b.int_("unsigned int", 4)
    sint = b.int_("int", 4, signed=True)
    char = b.int_("char", 1, signed=True, char=True)
    comm = b.array(char, sint, 16)
    lh = b.next_id
    b.struct("list_head", 16, [("next", lh + 1, 0), ("prev", lh + 1, 64)])
    b.ptr(lh)
    ti = b.struct("thread_info", 24, [("flags", u64, 0), ("cpu", uint, 128)])
    ts = b.struct("thread_struct", 64, [("es", u64, 0), ("sp", u64, 64)])
    sig = b.struct("signal_struct", 64, [("sigcnt", sint, 0), ("thread_head", lh, 128)])
    task = b.next_id
    task_ptr, sig_ptr, void_ptr = task + 1, task + 2, task + 3
    members = [
        ("thread_info", ti, 0),
        ("__state", uint, 8 * OFF["state"]),
        ("stack", void_ptr, 8 * OFF["stack"]),
        ("on_cpu", sint, 8 * OFF["on_cpu"]),
        ("tasks", lh, 8 * OFF["tasks"]),
        ("exit_state", sint, 8 * OFF["exit_state"]),
        ("pid", sint, 8 * OFF["pid"]),
        ("tgid", sint, 8 * OFF["tgid"]),
        ("real_parent", task_ptr, 8 * OFF["real_parent"]),
        ("signal", sig_ptr, 8 * OFF["signal"]),
        ("comm", comm, 8 * OFF["comm"]),
        ("thread", ts, 8 * (OFF["thread"] - 8)),  # thread.sp is at OFF["thread"]
    ]
    if with_thread_node:
        members.append(("thread_node", lh, 8 * OFF["thread_node"]))
    b.struct("task_struct", TASK_SIZE, members)
    b.ptr(task)
    b.ptr(sig)
    b.ptr(0)
    b.struct("rq", 64, [("nr_running", uint, 0), ("curr", task_ptr, 64), ("idle", task_ptr, 128)])
    return Btf(b.build())


class System:
    def __init__(self) -> None:
        self.mem = SparseMemory()
        self.next_slab = SLAB
        self.syms = {
            "init_task": INIT_TASK,
            "runqueues": RUNQUEUES,
            "__per_cpu_offset": PER_CPU_OFFSET,
            "__cpu_present_mask": PRESENT_MASK,
            "nr_cpu_ids": NR_CPU_IDS,
        }
        self.mem.put64(PER_CPU_OFFSET, *PCPU)
        self.mem.put64(PRESENT_MASK, 0b11)
        self.mem.put32(NR_CPU_IDS, 2)
        self.btf = task_btf()

    def alloc(self, size: int) -> int:
        addr = self.next_slab
        self.next_slab += (size + 0xFFF) & ~0xFFF
        return addr

    def task(self, pid, tgid, comm, *, addr=None, state=1, exit_state=0, cpu=0, on_cpu=0,
             parent=None, signal=None, sp=0) -> int:  # fmt: skip
        addr = addr or self.alloc(TASK_SIZE)
        m, o = self.mem, OFF
        m.write(addr, bytes(TASK_SIZE))
        m.put32(addr + o["cpu"], cpu)
        m.put32(addr + o["state"], state)
        m.put64(addr + o["stack"], addr + 0x100000)
        m.put32(addr + o["on_cpu"], on_cpu)
        m.put32(addr + o["exit_state"], exit_state)
        m.put32(addr + o["pid"], pid)
        m.put32(addr + o["tgid"], tgid)
        m.put64(addr + o["real_parent"], parent if parent is not None else addr)
        m.put64(addr + o["signal"], signal or 0)
        m.write(addr + o["comm"], comm.encode().ljust(16, b"\0")[:16])
        m.put64(addr + o["thread"], sp)
        return addr

    def link(self, head: int, nodes: list[int]) -> None:
        """A circular list: head -> nodes... -> head (next, prev)."""
        ring = [head, *nodes]
        for i, node in enumerate(ring):
            self.mem.put64(node, ring[(i + 1) % len(ring)], ring[i - 1])

    def signal(self) -> int:
        return self.alloc(64)

    def runqueue(self, cpu: int, curr: int, idle: int) -> None:
        rq = PCPU[cpu] + RUNQUEUES
        self.mem.put64(rq + RQ_CURR, curr)
        self.mem.put64(rq + RQ_IDLE, idle)

    def build(self):
        return build_task_list(self.mem, symbol_table(self.syms), self.btf)


def build_system() -> System:
    """Two CPUs, seven tasks, a thread group: the kernel most task tests (and the fuzz) use."""
    s = System()
    s.init = s.task(0, 0, "swapper/0", addr=INIT_TASK, state=0)
    s.idle1 = s.task(0, 0, "swapper/1", state=0, cpu=1, on_cpu=1, parent=None)
    sig1, sig2, sig100 = s.signal(), s.signal(), s.signal()
    s.t1 = s.task(1, 1, "init", parent=s.init, signal=sig1)
    s.t2 = s.task(2, 2, "kthreadd", parent=s.init, signal=sig2, cpu=1)
    s.t100 = s.task(100, 100, "app", parent=s.t1, signal=sig100)
    s.t101 = s.task(101, 100, "app worker", parent=s.t1, signal=sig100, state=0, on_cpu=1)
    s.t102 = s.task(102, 100, "app\nodd", parent=s.t1, signal=sig100, state=0x402, cpu=1)
    o = OFF["tasks"]
    s.link(s.init + o, [s.t1 + o, s.t2 + o, s.t100 + o])
    tn, th = OFF["thread_node"], SIG_THREAD_HEAD
    s.link(sig1 + th, [s.t1 + tn])
    s.link(sig2 + th, [s.t2 + tn])
    s.link(sig100 + th, [s.t100 + tn, s.t101 + tn, s.t102 + tn])
    s.runqueue(0, s.t101, s.init)
    s.runqueue(1, s.idle1, s.idle1)
    return s


@pytest.fixture
def system():
    return build_system()


def test_every_task_with_its_fields(system):
    tl = system.build()
    got = {t.name: (t.pid, t.tgid, t.ppid, t.comm, t.state, t.cpu, t.address) for t in tl.tasks}
    s = system
    assert got == {
        "0@cpu0": (0, 0, 0, b"swapper/0", "R", 0, s.init),
        "0@cpu1": (0, 0, 0, b"swapper/1", "R", 1, s.idle1),
        "1": (1, 1, 0, b"init", "S", 0, s.t1),
        "2": (2, 2, 0, b"kthreadd", "S", 1, s.t2),
        "100": (100, 100, 1, b"app", "S", 0, s.t100),
        "101": (101, 100, 1, b"app worker", "R", 0, s.t101),
        "102": (102, 100, 1, b"app\nodd", "I", 1, s.t102),
    }
    assert [t.name for t in tl.tasks] == ["0@cpu0", "0@cpu1", "1", "2", "100", "101", "102"]
    assert {cpu: t.pid for cpu, t in tl.running.items()} == {0: 101, 1: 0}
    assert tl.by_name()["101"].running_cpu == 0 and tl.by_name()["100"].running_cpu is None
    assert tl.by_name()["0@cpu1"].idle == 1
    assert tl.by_name()["1"].thread_sp == 0
    assert tl.problems == []


def test_ps_lines(system):
    lines = ps_text(system.build()).splitlines()
    s = system
    assert lines[0].split() == ["PID", "PPID", "CPU", "TASK", "ST", "COMM"]
    assert lines[1:] == [
        f"      0       0    0  {s.init:016x}  R  swapper/0",
        f">     0       0    1  {s.idle1:016x}  R  swapper/1",
        f"      1       0    0  {s.t1:016x}  S  init",
        f"      2       0    1  {s.t2:016x}  S  kthreadd",
        f"    100       1    0  {s.t100:016x}  S  app",
        f">   101       1    0  {s.t101:016x}  R  app worker",
        f"    102       1    1  {s.t102:016x}  I  app\\x0aodd",
    ]


def test_threads_through_thread_group_before_6_7(system):
    """Without thread_node (an older layout), threads are found on the circular
    thread_group list; here there is no such member and no signal list: leaders only."""
    system.btf = task_btf(with_thread_node=False)
    tl = system.build()
    assert [t.pid for t in tl.tasks] == [0, 0, 1, 2, 100]


def test_a_list_cut_by_absent_memory(system):
    system.mem.drop(system.t2)  # kthreadd's page is gone: the walk stops there
    tl = system.build()
    assert [t.pid for t in tl.tasks] == [0, 0, 1]
    assert any("not in the dump" in p or "breaks" in p for p in tl.problems)
    # the main list's break comes first: summary shows the first problem
    assert tl.problems[0].startswith("init_task.tasks: the list breaks")


def test_a_list_that_loops_is_bounded(system):
    o = OFF["tasks"]
    system.mem.put64(system.t100 + o, system.t2 + o)  # 100 -> 2 -> 100 -> ... never the head
    tl = system.build()
    assert sorted(t.pid for t in tl.tasks) == [0, 0, 1, 2, 100, 101, 102]
    assert any("loops" in p for p in tl.problems)


def test_a_main_list_with_a_broken_prev_stops_there_and_says_so(system):
    o = OFF["tasks"]
    system.mem.put64(system.t2 + o + 8, system.init + o)  # kthreadd's prev skips init
    tl = system.build()
    assert sorted(t.pid for t in tl.tasks) == [0, 0, 1]
    assert tl.problems[0] == (
        f"init_task.tasks: the list breaks at {system.t2 + o:#x} "
        f"(its prev is {system.init + o:#x}, not {system.t1 + o:#x})"
    )


def test_a_thread_list_that_loops_keeps_the_threads_found(system):
    tn = OFF["thread_node"]
    system.mem.put64(system.t101 + tn, system.t100 + tn)  # 100 -> 101 -> 100 -> ...
    tl = system.build()
    assert sorted(t.pid for t in tl.tasks) == [0, 0, 1, 2, 100, 101]
    assert tl.problems == [
        f"threads of {system.t100:#x}: the list loops at {system.t100 + tn:#x} "
        "without returning to its head"
    ]


def test_a_thread_list_whose_head_is_absent(system):
    ghost = 0xFFFF888777000000
    system.mem.put64(system.t2 + OFF["signal"], ghost)
    tl = system.build()
    assert sorted(t.pid for t in tl.tasks) == [0, 0, 1, 2, 100, 101, 102]  # the leader stays
    head = ghost + SIG_THREAD_HEAD
    assert tl.problems == [
        f"threads of {system.t2:#x}: the list head is unreadable ({absent(head)})"
    ]


def test_an_absent_init_task_list_head_leaves_the_idle_tasks(system):
    system.mem.drop(INIT_TASK + OFF["tasks"])  # init_task's page, CPU 0's idle task with it
    tl = system.build()
    assert [t.address for t in tl.tasks] == [system.idle1]
    head = INIT_TASK + OFF["tasks"]
    assert tl.problems[0] == (f"init_task.tasks: the list head is unreadable ({absent(head)})")
    assert tl.problems[1].startswith("CPU 0: runqueue unreadable")


def test_repeated_pids_are_named_by_address(system):
    system.mem.put32(system.t2 + OFF["pid"], 100)
    tl = system.build()
    names = [t.name for t in tl.tasks]
    assert f"100@{system.t2:016x}" in names and f"100@{system.t100:016x}" in names
    assert "100" not in names


def test_one_cpu_idle_task_is_plain_zero(system):
    system.mem.put64(PRESENT_MASK, 0b01)
    tl = system.build()
    assert [t.name for t in tl.tasks][:2] == ["0", "1"]


def test_missing_layout_or_anchor_is_unavailable(system):
    del system.syms["init_task"]
    with pytest.raises(Unavailable, match="init_task"):
        system.build()
    b = BtfBuilder()
    b.struct("task_struct", 8, [("pid", b.int_("int", 4, signed=True), 0)])
    with pytest.raises(Unavailable, match="task layout"):
        build_task_list(system.mem, symbol_table({"init_task": INIT_TASK}), Btf(b.build()))


def test_an_absent_init_task_with_no_runqueues_is_unavailable(system):
    # Without runqueues the walk starts at init_task: when the dump lacks it there is no list
    # at all (tasks/ reads unavailable), not a FaultError out of the directory listing.
    del system.syms["runqueues"]
    system.mem.drop(system.init)
    with pytest.raises(Unavailable, match="init_task is not in the dump"):
        system.build()


def test_current_task_decides_what_runs(system):
    """The per-CPU ``current`` wins over rq->curr (they differ inside a context switch)."""
    system.syms["current_task"] = 0x3000
    system.mem.put64(PCPU[0] + 0x3000, system.t100)
    system.mem.put64(PCPU[1] + 0x3000, system.t102)
    tl = system.build()
    assert {cpu: t.pid for cpu, t in tl.running.items()} == {0: 100, 1: 102}


class _Unwinder:
    def from_registers(self, regs):
        return [("regs", regs["ip"], regs["sp"], regs["bp"])]

    def from_inactive_frame(self, sp):
        return [("frame", sp)]


def test_stacks_choose_registers_or_the_saved_frame(system):
    from vmcorefs.kernel.tasks import Stacks, pt_regs_view

    tl = system.build()
    regs = {"rip": 0xFFFFFFFF81000010, "rsp": 0xFFFFC90000004000, "rbp": 7, "cs": 0x10}
    stacks = Stacks(tl, _Unwinder(), None, lambda cpu: regs if cpu == 0 else None, 0x4000)
    by = tl.by_name()
    assert stacks.task_frames(by["101"]) == [("regs", regs["rip"], regs["rsp"], 7)]
    with pytest.raises(Unavailable, match="CPU 1, whose registers"):
        stacks.task_frames(by["0@cpu1"])
    base = by["1"].stack_base
    by["1"].thread_sp = base + 0x3F00
    assert stacks.task_frames(by["1"]) == [("frame", base + 0x3F00)]
    by["1"].thread_sp = base + 0x4000  # one past the stack: not a saved frame of this task
    with pytest.raises(Unavailable, match="outside the task's stack"):
        stacks.task_frames(by["1"])
    by["1"].stack_base = 0
    with pytest.raises(Unavailable, match="no stack"):
        stacks.task_frames(by["1"])
    assert pt_regs_view(regs) == {"ip": regs["rip"], "sp": regs["rsp"], "bp": 7, "cs": 0x10}


class _NoBtfDump:
    """A dump whose kernel has no BTF: every view that needs it is Unavailable."""

    kvirt = SparseMemory()

    def __getattr__(self, name):
        if name in ("btf_bounds", "btf", "tasks", "modules", "stacks"):
            raise Unavailable("the symbol table has no __start_BTF/__stop_BTF")
        raise AttributeError(name)


def test_without_btf_the_files_say_why():
    from vmcorefs.tree import Directory, Tree, _section_btf_tasks

    tree = Tree(Directory(_section_btf_tasks(_NoBtfDump())))
    want = b"unavailable: the symbol table has no __start_BTF/__stop_BTF\n"
    for path in ("btf", "ps", "modules", "tasks/unavailable"):
        node = tree.lookup(path)
        assert node.read(0, node.size()) == want, path


def test_the_btf_file_is_a_window_onto_kvirt():
    from vmcorefs.tree import LazyWindowFile

    mem = SparseMemory()
    start = 0xFFFFFFFF82000000
    mem.write(start, b"\x9f\xeb\x01\x00" + bytes(4092))
    f = LazyWindowFile(mem, lambda: (start, start + 0x2000))  # the second page is absent
    assert f.size() == 0x2000 and f.open_direct_io()  # partly absent: direct_io
    assert f.read(0, 4) == b"\x9f\xeb\x01\x00"
    assert len(f.read(0xFF0, 0x100)) == 0x10  # short at the gap...
    with pytest.raises(FaultError):
        f.read(0x1000, 16)  # ...and EIO at it
    assert f.read(0x2000, 16) == b""
    mem.write(start + 0x1000, bytes(0x1000))
    whole = LazyWindowFile(mem, lambda: (start, start + 0x2000))
    assert not whole.open_direct_io()  # every byte present: the page cache may keep it


def test_an_absent_parent_is_not_a_ppid(system):
    from vmcorefs.kernel.tasks import ppid_text

    ghost = 0xFFFF888777000000
    system.mem.put64(system.t2 + OFF["real_parent"], ghost)
    tl = system.build()
    t2 = tl.by_name()["2"]
    assert t2.ppid is None
    with pytest.raises(Unavailable, match="parent task_struct at 0xffff888777000000"):
        ppid_text(t2)
    assert ppid_text(tl.by_name()["100"]) == "1\n"
    line = next(x for x in ps_text(tl).splitlines() if "kthreadd" in x)
    assert line.split()[:2] == ["2", "-"]


def test_summary_says_when_a_list_was_cut_short():
    """ps and modules have no room for a note: summary says how many entries a list gave and
    why it may not be all of them."""
    from types import SimpleNamespace

    from vmcorefs.errors import FaultError, Unavailable
    from vmcorefs.kernel.summary import _listing

    whole = SimpleNamespace(tasks=[1, 2, 3], problems=[])
    cut = SimpleNamespace(tasks=[1, 2], problems=["init_task.tasks: the list breaks at 0x10", "b"])
    assert _listing(lambda: whole, lambda t: t.tasks) == "3 listed"
    assert _listing(lambda: cut, lambda t: t.tasks) == (
        "2 listed, maybe not all: init_task.tasks: the list breaks at 0x10 (and 1 more problem(s))"
    )

    def unavailable():
        raise Unavailable("no BTF")

    assert _listing(unavailable, lambda t: t.tasks) == "unavailable: no BTF"

    def absent():
        raise FaultError("kvirt", 0xFFFF888000001000)

    assert _listing(absent, lambda t: t.tasks) == (
        "unavailable: kvirt 0xffff888000001000: absent: not in the dump"
    )
