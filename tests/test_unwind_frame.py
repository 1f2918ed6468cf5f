"""The frame-pointer unwinder (kernels without ORC) on stacks the tests write as the kernel
leaves them: frame headers (saved rbp, return address) pushed call by call, pt_regs at the top
of a task's stack and at interrupt entry (an encoded frame pointer), an IRQ stack; and the
code they return into: each function's prologue, each call instruction before a return
address, written into the same memory.

Expected frames follow from the kernel's rules (arch/x86/kernel/unwind_frame.c) and the code
written, by hand for each stack, not taken from the program's output.
"""

from __future__ import annotations

import pytest

from tests.btfbuilder import BtfBuilder
from tests.kernelfakes import SparseMemory, symbol_table
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.btf import Btf
from vmcorefs.kernel.unwind import MAX_FRAMES, Frame, Symbolizer
from vmcorefs.kernel.unwind_frame import (
    MODULES_END,
    PT_REGS_NAMES,
    PT_REGS_SIZE,
    FramePointerUnwinder,
    KernelCode,
    frame_layouts,
    indirect_call_ends,
    kernel_code,
    unwinder_kind,
)
from vmcorefs.vmcoreinfo import VmcoreInfo

TEXT = 0xFFFFFFFF81000000
THREAD_SIZE = 0x4000
STACK = 0xFFFFC90000010000  # a task's stack: THREAD_SIZE-aligned, as the kernel allocates it
IRQ_STACK = 0xFFFFC90000200000
OTHER_STACK = 0xFFFFC90000020000  # another task's
KERNEL_CS, USER_CS = 0x10, 0x33
NAMES = """_stext secondary_startup_64 start_kernel do_idle default_idle native_safe_halt
asm_sysvec_reboot sysvec_reboot __sysvec_reboot stop_this_cpu entry_SYSCALL_64
do_syscall_64 ksys_write vfs_write panic delay_tsc ret_from_fork kthread worker_thread
schedule __schedule foo __x86_indirect_thunk_rax _etext""".split()
FUNCS = {name: TEXT + 0x100 * i for i, name in enumerate(NAMES)}
INACTIVE = "r15 r14 r13 r12 bx bp ret_addr".split()
#: Code without a frame of its own: entry and head code, native_safe_halt() (sti; hlt; ret).
FRAMELESS = {"secondary_startup_64", "asm_sysvec_reboot", "native_safe_halt",
             "entry_SYSCALL_64", "ret_from_fork", "__x86_indirect_thunk_rax", "_etext"}  # fmt: skip
#: A C function's start: the -mfentry nop, push %rbp, mov %rsp,%rbp (the frame is made at +9).
PROLOGUE = bytes.fromhex("0f1f440000554889e5")
FRAME_MADE = len(PROLOGUE)
#: The calls the stacks below make (caller, offset of the return address): the callee, or
#: None for a call through a register (``call *%rax``).
CALLS = {
    ("entry_SYSCALL_64", 0x44): "do_syscall_64",
    ("do_syscall_64", 0x33): "ksys_write",
    ("ksys_write", 0x5F): "vfs_write",
    ("vfs_write", 0xC4): "schedule",
    ("schedule", 0x46): "__schedule",
    ("schedule", 0x20): "__schedule",
    ("ret_from_fork", 0x1F): None,
    ("kthread", 0x40): None,
    ("worker_thread", 0x30): "schedule",
    ("secondary_startup_64", 0xA4): None,  # replaced below: head code pushes it, no call
    ("start_kernel", 0x54): "do_idle",
    ("do_idle", 0x7B): "default_idle",
    ("default_idle", 0x23): "native_safe_halt",
    ("asm_sysvec_reboot", 0x12): "sysvec_reboot",
    ("sysvec_reboot", 0x77): "__sysvec_reboot",
    ("__sysvec_reboot", 0x63): "stop_this_cpu",
    ("panic", 0x20): "foo",
    ("foo", 0x13): None,
    ("__schedule", 0x82): "__x86_indirect_thunk_rax",  # a retpoline: an indirect call
}


def fn(name: str, off: int = 0) -> int:
    return FUNCS[name] + off


def write_code(mem: SparseMemory) -> None:
    """Each function's prologue and the call instruction before each return address."""
    for name, addr in FUNCS.items():
        if name not in FRAMELESS:
            mem.write(addr, PROLOGUE)
    mem.write(fn("native_safe_halt"), bytes.fromhex("fbf4c3"))  # sti; hlt; ret
    for (caller, off), callee in CALLS.items():
        call(mem, fn(caller, off), callee)
    head = fn("secondary_startup_64", 0xA4)  # pushq $ret; ...; lretq: no call before it
    mem.write(head - 5, bytes.fromhex("5048cb9090"))


def call(mem: SparseMemory, ret: int, callee: str | None) -> None:
    if callee is None:
        mem.write(ret - 2, bytes.fromhex("ffd0"))  # call *%rax
    else:
        mem.write(ret - 5, b"\xe8" + ((FUNCS[callee] - ret) & 0xFFFFFFFF).to_bytes(4, "little"))


class Stack:
    """One stack written from its top down: each :meth:`call` pushes a return address and
    the callee's saved rbp (its frame), as ``call`` and ``push %rbp; mov %rsp,%rbp`` do."""

    def __init__(self, mem: SparseMemory, base: int, bp: int = 0) -> None:
        self.mem, self.top = mem, base + THREAD_SIZE
        self.sp = self.top
        self.bp = bp  # rbp of the code running at sp

    def pt_regs(self, **values: int) -> int:
        self.sp -= PT_REGS_SIZE
        regs = dict.fromkeys(PT_REGS_NAMES, 0) | values
        self.mem.put64(self.sp, *(regs[n] for n in PT_REGS_NAMES))
        return self.sp

    def call(self, ret: int, locals_: int = 0) -> int:
        """The caller, its ``locals_`` bytes below its frame, calls: returns the new rbp."""
        self.sp -= locals_ + 16
        self.mem.put64(self.sp, self.bp, ret)
        self.bp = self.sp
        return self.bp

    def switched_out(self, ret: int) -> int:
        """``__switch_to_asm`` from ``ret``: the inactive_task_frame, at the new thread.sp."""
        self.sp -= 8 * len(INACTIVE)
        values = dict.fromkeys(INACTIVE, 0) | {"bp": self.bp, "ret_addr": ret}
        self.mem.put64(self.sp, *(values[n] for n in INACTIVE))
        return self.sp


def btf() -> Btf:
    b = BtfBuilder()
    u64 = b.int_("long unsigned int", 8)
    b.struct("pt_regs", 168, [(n, u64, 64 * i) for i, n in enumerate(PT_REGS_NAMES)])
    b.struct("inactive_task_frame", 56, [(n, u64, 64 * i) for i, n in enumerate(INACTIVE)])
    return Btf(b.build())


@pytest.fixture
def mem() -> SparseMemory:
    mem = SparseMemory()
    write_code(mem)
    return mem


SYMBOLS = symbol_table(FUNCS)


def code(init_text: tuple[int, int] | None = None) -> KernelCode:
    def function_at(addr: int) -> tuple[int, str] | None:
        found = SYMBOLS.containing(addr)
        return (found[0].address, found[0].name) if found else None

    return KernelCode(lambda a: TEXT <= a < FUNCS["_etext"], function_at, init_text)


def unwinder(mem, init_text=None) -> FramePointerUnwinder:
    regs, size, inactive = frame_layouts(btf())
    return FramePointerUnwinder(mem, regs=regs, pt_regs_size=size, inactive=inactive,
                                code=code(init_text), thread_size=THREAD_SIZE,
                                fork_returns=frozenset({fn("ret_from_fork")}))  # fmt: skip


def names(frames: list[Frame]) -> list[str]:
    return [line.split("/")[0] for line in Symbolizer(SYMBOLS).format(frames).splitlines()]


def syscall_stack(mem) -> tuple[Stack, int]:
    """A task in write(2), switched out in schedule(): thread.sp."""
    s = Stack(mem, STACK, bp=0x7FFD0010)
    s.pt_regs(ip=0x401000, sp=0x7FFD0000, cs=USER_CS, bp=0x7FFD0010)
    s.call(fn("entry_SYSCALL_64", 0x44))  # do_syscall_64's frame: the last one
    s.call(fn("do_syscall_64", 0x33), 0x10)
    s.call(fn("ksys_write", 0x5F), 0x28)
    s.call(fn("vfs_write", 0xC4))
    s.call(fn("schedule", 0x46))  # __schedule's frame
    return s, s.switched_out(fn("__schedule", 0x82))


def test_a_sleeping_task_ends_at_the_user_pc(mem):
    s, thread_sp = syscall_stack(mem)
    frames = unwinder(mem).from_inactive_frame(thread_sp, (STACK, STACK + THREAD_SIZE))
    assert names(frames) == [
        "__schedule+0x82",
        "schedule+0x46",
        "vfs_write+0xc4",
        "ksys_write+0x5f",
        "do_syscall_64+0x33",
        "0x401000",  # the user pc replaces the entry code's frame, as with ORC
    ]
    assert frames[-1].user and frames[-1].sp == 0x7FFD0000
    assert [f.call for f in frames[:-1]] == [True] * 5
    # each frame's sp: just above its frame header (the caller's sp after the return)
    assert frames[0].sp == thread_sp + 56 and frames[1].sp == s.bp + 16
    # without the task's stack, its block (THREAD_SIZE-aligned) is found from the frames
    assert unwinder(mem).from_inactive_frame(thread_sp) == frames


def test_a_kernel_thread_ends_in_ret_from_fork(mem):
    s = Stack(mem, STACK)
    regs = s.pt_regs()  # a kernel thread's (zeroed) registers at the top
    s.bp = regs | 1  # copy_thread(): the first frame pointer encodes them
    s.call(fn("ret_from_fork", 0x1F))  # kthread's frame, the last one
    s.call(fn("kthread", 0x40), 0x18)
    s.call(fn("worker_thread", 0x30))
    s.call(fn("schedule", 0x20))
    thread_sp = s.switched_out(fn("__schedule", 0x50))
    frames = unwinder(mem).from_inactive_frame(thread_sp, (STACK, STACK + THREAD_SIZE))
    assert names(frames) == [
        "__schedule+0x50",
        "schedule+0x20",
        "worker_thread+0x30",
        "kthread+0x40",
        "ret_from_fork+0x1f",
    ]


def interrupted_idle(mem) -> tuple[dict[str, int], Stack, Stack]:
    """CPU 0 in stop_this_cpu() on the IRQ stack, from the reboot IPI that interrupted the idle
    task (init_task, whose stack ends at secondary_startup_64) in native_safe_halt()."""
    task = Stack(mem, STACK)
    task.pt_regs()
    task.call(fn("secondary_startup_64", 0xA4))  # start_kernel's frame: the last one
    task.call(fn("start_kernel", 0x54), 0x20)
    task.call(fn("do_idle", 0x7B))
    # native_safe_halt() has no frame: default_idle's return address is all it pushed
    halt_sp = task.sp = task.sp - 8
    mem.put64(halt_sp, fn("default_idle", 0x23))
    regs = task.pt_regs(ip=fn("native_safe_halt", 2), sp=halt_sp, cs=KERNEL_CS, bp=task.bp)
    task.bp = regs | 1  # ENCODE_FRAME_POINTER at the interrupt's entry
    task.call(fn("asm_sysvec_reboot", 0x12))  # sysvec_reboot's frame
    irq = Stack(mem, IRQ_STACK, bp=task.bp)
    irq.sp -= 8  # the top word: the task's sp, saved by the switch
    irq.call(fn("sysvec_reboot", 0x77))  # __sysvec_reboot's frame, on the IRQ stack
    irq.call(fn("__sysvec_reboot", 0x63), 0x10)
    cpu = {"ip": fn("stop_this_cpu", 0x4F), "sp": irq.sp - 0x20, "bp": irq.bp, "cs": KERNEL_CS}
    return cpu, task, irq


IDLE = [
    "stop_this_cpu+0x4f",
    "__sysvec_reboot+0x63",
    "sysvec_reboot+0x77",
    "asm_sysvec_reboot+0x12",
    "native_safe_halt+0x2",  # the interrupted ip, from the pt_regs (its ret)
    "default_idle+0x23",  # at its sp: the kernel's own unwinder misses this frame
    "do_idle+0x7b",
    "start_kernel+0x54",
    "secondary_startup_64+0xa4",
]


def test_an_interrupt_on_the_irq_stack_back_to_the_idle_task(mem):
    cpu, _, _ = interrupted_idle(mem)
    frames = unwinder(mem).from_registers(cpu, (STACK, STACK + THREAD_SIZE))
    assert names(frames) == IDLE
    assert [f.call for f in frames] == [False, True, True, True, False, True, True, True, True]
    assert unwinder(mem).from_registers(cpu) == frames  # the task's stack not known


def test_interrupted_registers_that_are_not_kernel_text_end_the_walk(mem):
    cpu, task, _ = interrupted_idle(mem)
    regs = next(a for a in range(task.sp, task.top, 8) if mem.read(a + 128, 8) ==
                fn("native_safe_halt", 2).to_bytes(8, "little"))  # fmt: skip
    mem.put64(regs + 128, 0)  # pt_regs.ip: not kernel text (a new thread's zeroed registers)
    assert names(unwinder(mem).from_registers(cpu)) == IDLE[:4]


def test_a_frame_pointer_that_leaves_the_task_stack_ends_the_walk(mem):
    cpu, task, irq = interrupted_idle(mem)
    # do_idle's saved rbp points into another task's stack: not followed
    other = Stack(mem, OTHER_STACK)
    other.call(fn("foo", 4))
    frame = next(a for a in range(task.sp, task.top, 8) if mem.read(a + 8, 8) ==
                 fn("do_idle", 0x7B).to_bytes(8, "little"))  # fmt: skip
    mem.put64(frame, other.bp)
    stack = (STACK, STACK + THREAD_SIZE)
    assert names(unwinder(mem).from_registers(cpu, stack)) == IDLE[:7]
    # a sleeping task's walk never leaves its stack, even first
    thread_sp = task.switched_out(fn("__schedule", 1))
    mem.put64(thread_sp + 40, other.bp)  # its saved rbp: another stack
    assert names(unwinder(mem).from_inactive_frame(thread_sp, stack)) == ["__schedule+0x1"]
    # a saved frame outside the task's stack: its own frame only, nothing followed from it
    other.sp -= 8 * 7
    mem.put64(other.sp + 40, task.bp)  # back to the task's stack
    mem.put64(other.sp + 48, fn("__schedule", 2))
    got = unwinder(mem).from_inactive_frame(other.sp, stack)
    assert names(got) == ["__schedule+0x2"]


def test_each_stack_is_entered_once(mem):
    """Without the task's stack known, the walk may move from stack to stack (IRQ to task),
    but never back to one it left."""
    cpu, task, irq = interrupted_idle(mem)
    # the frame that returns to do_idle points back into the IRQ stack the walk left
    back = Stack(mem, IRQ_STACK)
    back.sp -= 0x100
    back.call(fn("foo", 0x13))
    frame = next(a for a in range(task.sp, task.top, 8) if mem.read(a + 8, 8) ==
                 fn("do_idle", 0x7B).to_bytes(8, "little"))  # fmt: skip
    mem.put64(frame, back.bp)
    assert names(unwinder(mem).from_registers(cpu)) == IDLE[:7]


@pytest.mark.parametrize(
    "damage",
    ["down", "self", "unaligned", "absent", "not text", "user half", "past the top"],
)
def test_a_bad_frame_pointer_ends_the_walk_after_the_good_frames(mem, damage):
    s, thread_sp = syscall_stack(mem)
    frames_before = ["__schedule+0x82", "schedule+0x46"]
    target = int.from_bytes(mem.read(s.bp, 8), "little")  # the frame that returns to vfs_write
    if damage == "down":
        mem.put64(s.bp, s.bp - 0x40)  # below the frame before: the stack grows up only
    elif damage == "self":
        mem.put64(s.bp, s.bp)  # a loop
    elif damage == "unaligned":  # a frame header there would name vfs_write: not read
        mem.put64(s.bp, target + 4)
        mem.put64(target + 4, 0, fn("vfs_write", 1))
    elif damage == "absent":
        mem.put64(s.bp, STACK + 0x10)  # a page of the stack the dump lacks (below: dropped)
        mem.drop(STACK + 0x10)
    elif damage == "not text":
        mem.put64(target + 8, 0xFFFFFFFF90000000)  # vfs_write's return address
    elif damage == "past the top":  # a frame header across the end of the stack
        mem.put64(s.bp, s.top - 8)
        mem.put64(s.top - 8, 0, fn("vfs_write", 2))
    else:
        mem.put64(s.bp, 0x7FFD0000)
    stack = (STACK, STACK + THREAD_SIZE)
    assert names(unwinder(mem).from_inactive_frame(thread_sp, stack)) == frames_before


def test_a_long_chain_is_cut_at_max_frames(mem):
    s = Stack(mem, STACK)
    s.pt_regs()
    for _ in range(300):  # 300 frames of 16 bytes fit in a 16 KiB stack: foo recurses
        s.call(fn("foo", 0x13))
    frames = unwinder(mem).from_registers(
        {"ip": fn("foo", 0x20), "sp": s.sp - 8, "bp": s.bp, "cs": KERNEL_CS}, (STACK, s.top)
    )
    assert len(frames) == MAX_FRAMES


def test_a_call_through_a_null_pointer(mem):
    """ip 0: sp points at the return address; the caller's frame is the one in rbp."""
    s = Stack(mem, STACK)
    s.pt_regs()
    s.call(fn("secondary_startup_64", 1))
    s.call(fn("panic", 0x20))  # foo's frame
    s.sp -= 8
    mem.put64(s.sp, fn("foo", 0x13))  # the call through NULL pushed its return address
    frames = unwinder(mem).from_registers({"ip": 0, "sp": s.sp, "bp": s.bp, "cs": KERNEL_CS})
    assert names(frames) == ["0x0", "foo+0x13", "panic+0x20", "secondary_startup_64+0x1"]


def test_registers_in_user_mode_are_one_user_frame(mem):
    frames = unwinder(mem).from_registers({"ip": 0x401234, "sp": 0x7FFF0000, "cs": USER_CS})
    assert names(frames) == ["0x401234"] and frames[0].user


def test_the_realigned_last_frame_of_head_code(mem):
    """GCC realigns the stack in a function called by head code and pushes a copy of the
    return address before its frame: unwind_frame.c's is_last_aligned_frame()."""
    s = Stack(mem, STACK)
    s.pt_regs(ip=0x401000, sp=0x7FFD0000, cs=USER_CS)
    s.sp -= 8
    mem.put64(s.sp, fn("entry_SYSCALL_64", 0x44))  # the call's return address
    s.call(fn("entry_SYSCALL_64", 0x44))  # realigned: a copy of it, the frame a word lower
    s.call(fn("do_syscall_64", 0x33))
    frames = unwinder(mem).from_registers(
        {"ip": fn("ksys_write", 0x10), "sp": s.sp - 8, "bp": s.bp, "cs": KERNEL_CS}
    )
    assert names(frames) == ["ksys_write+0x10", "do_syscall_64+0x33", "0x401000"]


def test_no_btf_the_cpu_stacks_but_no_saved_frames(mem):
    regs, size, inactive = frame_layouts(None)
    assert regs["ip"] == 128 and regs["sp"] == 152 and size == 168 and inactive is None
    cpu, _, _ = interrupted_idle(mem)
    u = FramePointerUnwinder(mem, regs=regs, pt_regs_size=size, inactive=None, code=code())
    assert names(u.from_registers(cpu)) == IDLE
    with pytest.raises(Unavailable, match="no BTF"):
        u.from_inactive_frame(STACK + 0x100)


def test_which_unwinder_the_kernel_has():
    assert unwinder_kind(symbol_table({"__start_orc_unwind_ip": TEXT})) == "orc"
    assert unwinder_kind(symbol_table({"update_stack_state": TEXT})) == "frame pointer"
    both = symbol_table({"__start_orc_unwind_ip": TEXT, "update_stack_state": TEXT})
    assert unwinder_kind(both) == "orc"
    with pytest.raises(Unavailable, match="neither ORC tables .* nor the frame-pointer"):
        unwinder_kind(symbol_table({"_stext": TEXT}))


def test_text_is_the_kernels_and_the_modules():
    syms = symbol_table({"_stext": TEXT, "_etext": TEXT + 0x1000})
    vi = VmcoreInfo(b"NUMBER(KERNEL_IMAGE_SIZE)=1073741824\n")
    is_text = kernel_code(syms, vi, None).is_text  # no module list: the module mapping
    assert is_text(TEXT) and not is_text(TEXT + 0x1000) and not is_text(STACK)
    assert is_text(0xFFFFFFFFC0000000) and not is_text(0xFFFFFFFFBFFFFFFF)
    assert not is_text(MODULES_END)
    listed = kernel_code(
        syms, vi, (lambda a: "m" if a == 0xFFFFFFFFC0001000 else None, lambda a: None)
    ).is_text
    assert listed(0xFFFFFFFFC0001000) and not listed(0xFFFFFFFFC0000000)
    with pytest.raises(Unavailable, match="_stext"):
        kernel_code(symbol_table({"foo": TEXT}), vi, None)


def test_a_frameless_function_whose_caller_is_not_proved_ends_the_walk(mem):
    """The word at native_safe_halt's sp must return from a call to it; where it returns from
    another call, the walk stops there (the kernel would go on to do_idle, hiding the caller)."""
    cpu, task, _ = interrupted_idle(mem)
    halt_sp = next(a for a in range(task.sp, task.top, 8) if mem.read(a, 8) ==
                   fn("default_idle", 0x23).to_bytes(8, "little"))  # fmt: skip
    mem.put64(halt_sp, fn("do_idle", 0x7B))  # returns from a call to default_idle
    assert names(unwinder(mem).from_registers(cpu)) == IDLE[:5]


@pytest.mark.parametrize(("offset", "pushed"), [(0, 0), (5, 0), (6, 8), (8, 8)])
def test_an_ip_in_the_prologue_finds_its_return_address(mem, offset, pushed):
    """Before ``push %rbp`` the return address is at sp, after it one word up; rbp is still
    the caller's frame, which then comes next."""
    s, _ = syscall_stack(mem)
    # vfs_write has just called schedule(), which is at +offset: its return address (and,
    # once pushed, rbp: vfs_write's frame) where schedule's frame header is in syscall_stack
    schedule_frame = int.from_bytes(mem.read(s.bp, 8), "little")
    bp = int.from_bytes(mem.read(schedule_frame, 8), "little")
    sp = schedule_frame + 8 - pushed
    cpu = {"ip": fn("schedule", offset), "sp": sp, "bp": bp, "cs": KERNEL_CS}
    assert names(unwinder(mem).from_registers(cpu, (STACK, STACK + THREAD_SIZE))) == [
        f"schedule+{offset:#x}",
        "vfs_write+0xc4",
        "ksys_write+0x5f",
        "do_syscall_64+0x33",
        "0x401000",
    ]


def test_an_ip_at_a_ret_finds_its_return_address(mem):
    s, _ = syscall_stack(mem)
    schedule_frame = int.from_bytes(mem.read(s.bp, 8), "little")
    bp = int.from_bytes(mem.read(schedule_frame, 8), "little")  # vfs_write's frame
    ret_at = fn("schedule", 0x50)
    mem.write(ret_at, b"\xc3")  # pop %rbp ran: the frame is gone, sp at the return address
    sp = schedule_frame + 8
    cpu = {"ip": ret_at, "sp": sp, "bp": bp, "cs": KERNEL_CS}
    assert names(unwinder(mem).from_registers(cpu))[:3] == [
        "schedule+0x50",
        "vfs_write+0xc4",
        "ksys_write+0x5f",
    ]


@pytest.mark.parametrize("damage", ["other callee", "no call", "call into the middle"])
def test_a_return_address_not_proved_by_its_call_ends_the_walk(mem, damage):
    """ksys_write+0x5f must return from a call to vfs_write, the function of the frame
    below it: a direct call elsewhere (a frame is missing), no call at all, a call to an
    address that is not a function's start."""
    s, thread_sp = syscall_stack(mem)
    ret = fn("ksys_write", 0x5F)
    if damage == "other callee":
        call(mem, ret, "foo")
    elif damage == "no call":
        mem.write(ret - 5, bytes(5))
    else:
        rel = (fn("vfs_write", 4) - ret) & 0xFFFFFFFF
        mem.write(ret - 5, b"\xe8" + rel.to_bytes(4, "little"))
    got = names(unwinder(mem).from_inactive_frame(thread_sp, (STACK, STACK + THREAD_SIZE)))
    assert got == ["__schedule+0x82", "schedule+0x46", "vfs_write+0xc4"]


def test_frames_in_freed_init_text_need_the_chain_to_end(mem):
    """start_kernel's code is freed after boot (its bytes no longer say which call was made):
    its frame is written when the chain goes on to the task's last frame, and not otherwise."""
    cpu, task, _ = interrupted_idle(mem)
    init = (fn("start_kernel"), fn("do_idle"))
    mem.write(fn("start_kernel", 0x54) - 5, b"\xcc" * 5)  # POISON_FREE_INITMEM
    assert names(unwinder(mem, init).from_registers(cpu)) == IDLE
    assert names(unwinder(mem).from_registers(cpu)) == IDLE[:7]  # not init text: no call
    # the last frame's return address made not text: the init frame is not proved
    last = task.top - PT_REGS_SIZE - 16
    mem.put64(last + 8, 0xFFFFFFFF90000000)
    assert names(unwinder(mem, init).from_registers(cpu)) == IDLE[:7]


def test_head_codes_pushed_address_is_a_last_frame_only(mem):
    cpu, task, _ = interrupted_idle(mem)
    assert names(unwinder(mem).from_registers(cpu))[-1] == "secondary_startup_64+0xa4"
    # the same address one frame lower (not the last frame): not a return address
    last = task.top - PT_REGS_SIZE - 16
    start_kernel_frame = next(a for a in range(task.sp, last, 8) if mem.read(a, 8) ==
                              last.to_bytes(8, "little"))  # fmt: skip
    mem.put64(start_kernel_frame + 8, fn("secondary_startup_64", 0xA4))
    mem.put64(start_kernel_frame, last - 0x100)
    assert names(unwinder(mem).from_registers(cpu)) == IDLE[:7]


def test_a_task_that_never_ran_is_at_ret_from_fork(mem):
    s = Stack(mem, STACK)
    regs = s.pt_regs()  # a new kernel thread's registers: zeroed
    s.bp = regs | 1
    thread_sp = s.switched_out(fn("ret_from_fork"))
    frames = unwinder(mem).from_inactive_frame(thread_sp, (STACK, STACK + THREAD_SIZE))
    assert names(frames) == ["ret_from_fork+0x0"] and not frames[0].call
    # a forked user process: its user registers follow
    mem.put64(regs + 8 * PT_REGS_NAMES.index("ip"), 0x401000)
    mem.put64(regs + 8 * PT_REGS_NAMES.index("cs"), USER_CS)
    got = unwinder(mem).from_inactive_frame(thread_sp, (STACK, STACK + THREAD_SIZE))
    assert names(got) == ["ret_from_fork+0x0", "0x401000"]


@pytest.mark.parametrize(
    ("code", "is_call"),
    [
        ("ffd0", True),  # call *%rax
        ("41ffd3", True),  # call *%r11
        ("ff5008", True),  # call *0x8(%rax)
        ("ff542408", True),  # call *0x8(%rsp)
        ("ff1578563412", True),  # call *0x12345678(%rip)
        ("ff9078563412", True),  # call *0x12345678(%rax)
        ("ff14c500000000", True),  # call *0x0(,%rax,8)
        ("ffe0", False),  # jmp *%rax
        ("ff5108", True),  # call *0x8(%rcx)
        ("4889e5", False),  # mov %rsp,%rbp
        ("ff50", False),  # cut short
    ],
)
def test_indirect_calls_are_decoded(code, is_call):
    raw = bytes(8 - len(bytes.fromhex(code))) + bytes.fromhex(code)
    assert indirect_call_ends(raw) is is_call
