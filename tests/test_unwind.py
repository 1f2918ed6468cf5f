"""The ORC unwinder and frame naming on a synthetic kernel: text symbols, ORC tables and stacks
written by the test, with the layouts (orc_entry, pt_regs, inactive_task_frame) in BTF.

Expected frames are worked out by hand from the kernel's rules (arch/x86/kernel/unwind_orc.c),
not taken from the program's output.
"""

from __future__ import annotations

import struct

import pytest

from tests.btfbuilder import BtfBuilder
from tests.kernelfakes import SparseMemory, symbol_table
from vmcorefs.errors import Unavailable
from vmcorefs.kernel import unwind as U
from vmcorefs.kernel.btf import Btf
from vmcorefs.kernel.unwind import Frame, OrcLayout, OrcTable, Symbolizer, Unwinder

TEXT = 0xFFFFFFFF81000000
ORC_IP = 0xFFFFFFFF82000000
ORC = 0xFFFFFFFF82100000
STACK = 0xFFFFC90000010000  # a task stack
IRQ_STACK = 0xFFFFC90000200000  # above it: leaving the IRQ stack lowers sp

PT_REGS = "r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss".split()
PT = {name: 8 * i for i, name in enumerate(PT_REGS)}
KERNEL_CS, USER_CS = 0x10, 0x33

FUNCS = {
    "_stext": TEXT,
    "__schedule": TEXT + 0x100,
    "schedule": TEXT + 0x200,
    "worker_thread.isra.0": TEXT + 0x300,
    "kthread": TEXT + 0x400,
    "ret_from_fork": TEXT + 0x500,
    "entry_SYSCALL_64": TEXT + 0x600,
    "entry_SYSCALL_64_after_hwframe": TEXT + 0x638,
    "syscall_return_via_sysret": TEXT + 0x6A0,
    "xen_error_entry": TEXT + 0x700,
    "do_syscall_64": TEXT + 0x800,
    "asm_common_interrupt": TEXT + 0x900,
    "__irqentry_text_end": TEXT + 0xA00,
    "common_interrupt_return": TEXT + 0xA00,
    "handle_irq": TEXT + 0xB00,
    "foo.cold": TEXT + 0xC00,
    "asm_exc_page_fault": TEXT + 0xC40,
    "foo": TEXT + 0xD00,
    "noreturn_caller": TEXT + 0xE00,
    "next_func": TEXT + 0xE10,
    "looper": TEXT + 0xF00,
    "_etext": TEXT + 0x1000,
    "_end": TEXT + 0x2000,
}


def fn(name: str, off: int = 0) -> int:
    return FUNCS[name] + off


def orc_bytes(sp_off, bp_off, sp_reg, bp_reg, typ, end=0) -> bytes:
    """struct orc_entry (6.1): s16 sp_offset, s16 bp_offset, sp_reg:4 bp_reg:4 type:2 end:1."""
    return struct.pack("<hhBB", sp_off, bp_off, sp_reg | bp_reg << 4, typ | end << 2)


def layout_btf(v2: bool = False) -> Btf:
    b = BtfBuilder()
    u64 = b.int_("long unsigned int", 8)
    s16 = b.int_("short int", 2, signed=True)
    uint = b.int_("unsigned int", 4)
    tail = (
        [("type", uint, 40, 3), ("signal", uint, 43, 1)]
        if v2
        else [("type", uint, 40, 2), ("end", uint, 42, 1)]
    )
    b.struct(
        "orc_entry",
        6,
        [("sp_offset", s16, 0), ("bp_offset", s16, 16), ("sp_reg", uint, 32, 4),
         ("bp_reg", uint, 36, 4), *tail],
    )  # fmt: skip
    b.struct("pt_regs", 168, [(n, u64, 64 * i) for i, n in enumerate(PT_REGS)])
    frame = "r15 r14 r13 r12 bx bp ret_addr".split()
    b.struct("inactive_task_frame", 56, [(n, u64, 64 * i) for i, n in enumerate(frame)])
    return Btf(b.build())


S, BP, PREV_SP, UNDEF = U.ORC_REG_SP, U.ORC_REG_BP, U.ORC_REG_PREV_SP, U.ORC_REG_UNDEFINED
CALL, REGS, PARTIAL = U.ORC_TYPE_CALL, U.ORC_TYPE_REGS, U.ORC_TYPE_REGS_PARTIAL

#: (ip, entry) sorted by ip: each function starts with "CALL, sp + 8" and then has its body's
#: rule at +4.
ROWS = [
    (fn("_stext"), orc_bytes(0, 0, UNDEF, UNDEF, CALL)),  # a section terminator (end=0)
    (fn("__schedule"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("__schedule", 4), orc_bytes(32, -16, S, PREV_SP, CALL)),
    (fn("schedule"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("schedule", 4), orc_bytes(16, -16, BP, PREV_SP, CALL)),  # frame pointer based
    (fn("worker_thread.isra.0"), orc_bytes(24, 0, S, UNDEF, CALL)),
    (fn("kthread"), orc_bytes(16, 0, S, UNDEF, CALL)),
    (fn("ret_from_fork"), orc_bytes(0, 0, UNDEF, UNDEF, CALL, end=1)),  # UNWIND_HINT_EMPTY
    (fn("ret_from_fork", 0x10), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("ret_from_fork", 0x18), orc_bytes(0, 0, UNDEF, UNDEF, CALL, end=1)),  # end of stack
    (fn("entry_SYSCALL_64"), orc_bytes(0, 0, UNDEF, UNDEF, CALL, end=1)),
    (fn("entry_SYSCALL_64_after_hwframe"), orc_bytes(0, 0, S, UNDEF, REGS)),
    (fn("xen_error_entry"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("do_syscall_64"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("do_syscall_64", 4), orc_bytes(16, -16, S, PREV_SP, CALL)),
    (fn("asm_common_interrupt"), orc_bytes(0, 0, S, UNDEF, PARTIAL)),
    (fn("asm_common_interrupt", 0x20), orc_bytes(0, 0, U.ORC_REG_SP_INDIRECT, UNDEF, REGS)),
    (fn("common_interrupt_return"), orc_bytes(0, 0, S, UNDEF, REGS)),
    (fn("handle_irq"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("handle_irq", 4), orc_bytes(16, -16, S, PREV_SP, CALL)),
    (fn("foo.cold"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("asm_exc_page_fault"), orc_bytes(0, 0, S, UNDEF, PARTIAL)),
    (fn("foo"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("noreturn_caller"), orc_bytes(8, 0, S, UNDEF, CALL)),
    (fn("next_func"), orc_bytes(-8, 0, S, UNDEF, CALL)),  # bad data: sp would go down
    (fn("looper"), orc_bytes(16, 0, S, UNDEF, CALL)),
    (fn("_etext"), orc_bytes(0, 0, UNDEF, UNDEF, CALL)),
]


class Kernel:
    def __init__(self, rows=ROWS, v2: bool = False, funcs=None) -> None:
        self.mem = SparseMemory()
        for i, (ip, raw) in enumerate(rows):
            self.mem.put32(ORC_IP + 4 * i, ip - (ORC_IP + 4 * i))
            self.mem.write(ORC + 6 * i, raw)
        syms = dict(funcs or FUNCS)
        syms.update(
            __start_orc_unwind_ip=ORC_IP,
            __stop_orc_unwind_ip=ORC_IP + 4 * len(rows),
            __start_orc_unwind=ORC,
            __stop_orc_unwind=ORC + 6 * len(rows),
        )
        self.symbols = symbol_table(syms)
        self.btf = layout_btf(v2)

    def unwinder(self, **kw) -> Unwinder:
        return Unwinder(self.mem, self.symbols, self.btf, **kw)

    def names(self, frames: list[Frame], **kw) -> list[str]:
        return Symbolizer(self.symbols, **kw).format(frames).splitlines()


@pytest.fixture
def k() -> Kernel:
    return Kernel()


def test_sleeping_kthread_ends_in_ret_from_fork(k):
    thread_sp = STACK + 0x100
    bp1 = 0x1111
    # inactive_task_frame: r15 r14 r13 r12 bx bp ret_addr
    k.mem.put64(thread_sp, 0, 0, 0, 0, 0, bp1, fn("__schedule", 0x50))
    sp0 = thread_sp + 56
    cfa1 = sp0 + 32  # __schedule: sp + 32, bp saved at cfa - 16
    cfa2 = cfa1 + 48  # schedule: bp + 16, so the bp saved by __schedule is cfa2 - 16
    k.mem.put64(cfa1 - 16, cfa2 - 16, fn("schedule", 0x20))
    bp3 = 0x3333
    k.mem.put64(cfa2 - 16, bp3, fn("worker_thread.isra.0", 0x30))
    cfa3 = cfa2 + 24
    k.mem.put64(cfa3 - 8, fn("kthread", 0x40))
    cfa4 = cfa3 + 16
    k.mem.put64(cfa4 - 8, fn("ret_from_fork", 0x1F))
    frames = k.unwinder().from_inactive_frame(thread_sp)
    assert [f.sp for f in frames] == [sp0, cfa1, cfa2, cfa3, cfa4]
    assert k.names(frames) == [
        "__schedule+0x50/0x100",
        "schedule+0x20/0x100",
        "worker_thread+0x30/0x100",  # worker_thread.isra.0: GCC's clone of worker_thread
        "kthread+0x40/0x100",
        "ret_from_fork+0x1f/0x100",
    ]


def test_a_task_that_never_ran_starts_at_ret_from_fork(k):
    thread_sp = STACK + 0x100
    k.mem.put64(thread_sp, 0, 0, 0, 0, 0, 0, fn("ret_from_fork"))
    k.mem.put64(thread_sp + 56, 0, fn("kthread", 0x40))  # what a call rule would read
    frames = k.unwinder().from_inactive_frame(thread_sp)
    # the entry at ret_from_fork itself (not at ip - 1, in the function before) ends the stack
    assert k.names(frames) == ["ret_from_fork+0x0/0x100"]
    assert frames[0].call is False


def test_syscall_stops_at_the_user_pc(k):
    r0 = STACK + 0x800
    pt = r0 + 16  # do_syscall_64's caller frame: the pt_regs that entry_SYSCALL_64 pushed
    k.mem.put64(r0, 0x5555, fn("entry_SYSCALL_64", 0x58))
    regs = dict.fromkeys(PT_REGS, 0)
    regs.update(ip=0x401000, sp=0x7FFD0000, cs=USER_CS, bp=0x7FFD0010)
    k.mem.put64(pt, *(regs[n] for n in PT_REGS))
    frames = k.unwinder().from_registers({"ip": fn("do_syscall_64", 0x10), "sp": r0, "bp": 0,
                                          "cs": KERNEL_CS})  # fmt: skip
    assert k.names(frames) == [
        "do_syscall_64+0x10/0x100",  # interrupted: the ip itself, not ip - 1
        "entry_SYSCALL_64+0x58/0x100",  # not entry_SYSCALL_64_after_hwframe: a label inside
        "0x401000",
    ]
    assert frames[-1].user and frames[-1].sp == 0x7FFD0000


def test_registers_in_user_mode_are_one_user_frame(k):
    frames = k.unwinder().from_registers({"ip": 0x401234, "sp": 0x7FFF0000, "cs": USER_CS})
    assert k.names(frames) == ["0x401234"]


def test_interrupt_on_the_irq_stack_back_to_the_task_stack(k):
    irq0 = IRQ_STACK + 0x100
    task_sp = STACK + 0x400  # lower than the IRQ stack: sp goes down where the stack switches
    pt = STACK + 0x300  # pt_regs of the interrupted kernel code, on the task stack
    k.mem.put64(irq0, 0x7777, fn("asm_common_interrupt", 0x30))
    k.mem.put64(irq0 + 16, pt)  # SP_INDIRECT: the previous sp saved on top of the IRQ stack
    bp_task = task_sp - 16 + 0x40
    regs = dict.fromkeys(PT_REGS, 0)
    regs.update(ip=fn("schedule", 0x60), sp=task_sp, cs=KERNEL_CS, bp=bp_task)
    k.mem.put64(pt, *(regs[n] for n in PT_REGS))
    cfa3 = bp_task + 16  # schedule: sp = bp + 16 (bp from the saved registers)
    k.mem.put64(cfa3 - 16, 0x9999, fn("kthread", 0x40))
    k.mem.put64(cfa3 + 16 - 8, fn("ret_from_fork", 0x1F))
    frames = k.unwinder().from_registers({"ip": fn("handle_irq", 8), "sp": irq0, "bp": 0,
                                          "cs": KERNEL_CS})  # fmt: skip
    assert k.names(frames) == [
        "handle_irq+0x8/0x100",
        "asm_common_interrupt+0x30/0x100",
        "schedule+0x60/0x100",  # interrupted, so named at the ip itself
        "kthread+0x40/0x100",
        "ret_from_fork+0x1f/0x100",
    ]
    assert frames[2].sp == task_sp < frames[1].sp


def test_iret_frame_and_a_call_to_a_noreturn_function(k):
    sp = STACK + 0x600
    # REGS_PARTIAL at sp: the IRET frame ip, cs, flags, sp, ss
    k.mem.put64(sp, fn("foo.cold", 0x10), KERNEL_CS, 0x246, sp + 0x100, 0x18)
    # foo.cold: CALL sp + 8; its return address is noreturn_caller's end = next_func's start
    k.mem.put64(sp + 0x100, fn("next_func"))
    k.mem.put64(sp + 0x108, fn("kthread", 0x40))
    k.mem.put64(sp + 0x118, fn("ret_from_fork", 0x1F))
    frames = k.unwinder().from_registers({"ip": fn("asm_exc_page_fault", 4), "sp": sp,
                                          "cs": KERNEL_CS})  # fmt: skip
    assert k.names(frames) == [
        "asm_exc_page_fault+0x4/0xc0",
        "foo+0x10/0x40",  # foo.cold: code of foo; offset and size within the cold part
        "noreturn_caller+0x10/0x10",  # looked up at ip - 1: the call, not next_func
        "kthread+0x40/0x100",
        "ret_from_fork+0x1f/0x100",
    ]


def test_a_null_function_pointer_call(k):
    sp = STACK + 0x700
    k.mem.put64(sp, fn("kthread", 0x40))
    k.mem.put64(sp + 8 + 8, fn("ret_from_fork", 0x1F))
    frames = k.unwinder().from_registers({"ip": 0, "sp": sp, "cs": KERNEL_CS})
    assert k.names(frames) == ["0x0", "kthread+0x40/0x100", "ret_from_fork+0x1f/0x100"]


def test_linker_markers_give_way_to_the_function(k):
    names = k.names([Frame(fn("common_interrupt_return", 0x10), 0, call=False)])
    assert names == ["common_interrupt_return+0x10/0x100"]  # not __irqentry_text_end


def test_stack_going_the_wrong_way_stops(k):
    sp = STACK + 0x900
    k.mem.put64(sp, fn("next_func", 4))  # noreturn_caller -> next_func, whose rule is bad
    frames = k.unwinder().from_registers({"ip": fn("noreturn_caller", 4), "sp": sp,
                                          "cs": KERNEL_CS})  # fmt: skip
    assert len(frames) == 2  # next_func's frame is shown, the one it would give is not


def test_depth_is_bounded(k):
    sp = STACK + 0x1000
    for i in range(2 * U.MAX_FRAMES):  # each looper frame returns into looper again
        k.mem.put64(sp + 16 * i + 8, fn("looper", 8))
    frames = k.unwinder().from_registers({"ip": fn("looper", 8), "sp": sp, "cs": KERNEL_CS})
    assert len(frames) == U.MAX_FRAMES


def test_absent_stack_and_unknown_code_stop_the_walk(k):
    sp = STACK + 0x3000
    frames = k.unwinder().from_registers({"ip": fn("kthread", 8), "sp": sp, "cs": KERNEL_CS})
    assert len(frames) == 1  # the return address is not in the dump
    k.mem.put64(sp + 8, 0xFFFFFFFFA0000000)  # into code no ORC table covers
    k.mem.put64(sp + 16, fn("ret_from_fork", 0x1F))
    frames = k.unwinder().from_registers({"ip": fn("kthread", 8), "sp": sp, "cs": KERNEL_CS})
    assert k.names(frames) == ["kthread+0x8/0x100", "0xffffffffa0000000"]
    with pytest.raises(Unavailable, match="saved frame"):
        k.unwinder().from_inactive_frame(STACK + 0x5000)


def test_module_tables_and_symbols(k):
    mod_text = 0xFFFFFFFFC0000000
    mod_ip, mod_orc = 0xFFFFFFFFC0010000, 0xFFFFFFFFC0011000
    rows = [(mod_text, orc_bytes(8, 0, S, UNDEF, CALL)),
            (mod_text + 4, orc_bytes(24, 0, S, UNDEF, CALL))]  # fmt: skip
    for i, (ip, raw) in enumerate(rows):
        k.mem.put32(mod_ip + 4 * i, ip - (mod_ip + 4 * i))
        k.mem.write(mod_orc + 6 * i, raw)
    table = OrcTable(k.mem, OrcLayout(k.btf), mod_ip, mod_orc, 2, "mod")

    def module_orc(addr: int):
        return table if mod_text <= addr < mod_text + 0x1000 else None

    def module_symbol(addr: int):
        if mod_text <= addr < mod_text + 0x1000:
            return "fw_cfg_read.constprop.0", addr - mod_text, 0x80, "qemu_fw_cfg"
        return None

    sp = STACK + 0xA00
    k.mem.put64(sp + 16, fn("kthread", 0x40))
    k.mem.put64(sp + 24 + 8, fn("ret_from_fork", 0x1F))
    frames = k.unwinder(module_orc=module_orc).from_registers(
        {"ip": mod_text + 0x10, "sp": sp, "cs": KERNEL_CS}
    )
    assert k.names(frames, module_symbol=module_symbol) == [
        "fw_cfg_read+0x10/0x80 [qemu_fw_cfg]",
        "kthread+0x40/0x100",
        "ret_from_fork+0x1f/0x100",
    ]


def test_orc_layout_of_linux_6_4():
    """6.4 split the end bit into types: UNDEFINED 0, END_OF_STACK 1, CALL 2, REGS 3, ..."""
    layout = OrcLayout(layout_btf(v2=True))
    raw = struct.pack("<hhBB", 16, -16, S | PREV_SP << 4, 2)
    assert layout.decode(raw) == U.OrcEntry(16, -16, S, PREV_SP, CALL, False)
    assert layout.decode(struct.pack("<hhBB", 0, 0, S, 3)).type == REGS
    assert layout.decode(struct.pack("<hhBB", 0, 0, S, 4)).type == PARTIAL
    end = layout.decode(struct.pack("<hhBB", 0, 0, S, 1))
    assert end.end and end.sp_reg == UNDEF
    assert layout.decode(struct.pack("<hhBB", 0, 0, S, 0)).type == -1
    old = OrcLayout(layout_btf())
    assert old.decode(orc_bytes(-8, 24, BP, S, PARTIAL, end=1)) == U.OrcEntry(
        -8,
        24,
        BP,
        S,
        PARTIAL,
        True,
        True,  # until 6.2 the REGS types are signal frames
    )
    assert not old.decode(orc_bytes(8, 0, S, UNDEF, CALL)).signal
    # 6.3+: a bit of its own, also for CALL entries (type 2 + signal bit 3)
    assert layout.decode(struct.pack("<hhBB", 8, 0, S, 2 | 1 << 3)).signal
    assert not layout.decode(struct.pack("<hhBB", 0, 0, S, 3)).signal


def test_orc_tables_must_agree():
    k = Kernel()
    k.symbols = symbol_table({**FUNCS, "__start_orc_unwind_ip": ORC_IP,
                              "__stop_orc_unwind_ip": ORC_IP + 4 * len(ROWS),
                              "__start_orc_unwind": ORC,
                              "__stop_orc_unwind": ORC + 6 * len(ROWS) + 6})  # fmt: skip
    with pytest.raises(Unavailable, match="disagree"):
        k.unwinder()
    k.symbols = symbol_table(FUNCS)
    with pytest.raises(Unavailable, match="CONFIG_UNWINDER_ORC"):
        k.unwinder()
    # A frame-pointer kernel has no struct orc_entry in its BTF either: the tables are named.
    b = BtfBuilder()
    b.int_("int", 4, signed=True)
    k.btf = Btf(b.build())
    with pytest.raises(Unavailable, match="CONFIG_UNWINDER_ORC"):
        k.unwinder()


def test_function_names():
    assert U.function_name("__handle_sysrq.cold") == "__handle_sysrq"
    assert U.function_name("orc_find.part.0") == "orc_find"
    assert U.function_name("foo.constprop.0.isra.0") == "foo"
    assert U.function_name("bar.isra.0.cold") == "bar"
    assert U.function_name("baz") == "baz"
    assert U.function_name("x.y") == "x.y"
    assert U.linker_marker("__irqentry_text_end") and U.linker_marker("__start_orc_unwind")
    assert not U.linker_marker("common_interrupt_return") and not U.linker_marker("_end")


def test_a_signal_bit_on_a_call_entry_linux_6_3():
    """6.3+: a CALL entry may say its caller was interrupted: the caller's ip is then looked
    up as is (here: schedule+4, where the stack ends), not at ip - 1 (schedule's body)."""

    def v2(sp_off, sp_reg, typ, signal=0):  # types: 0 undefined, 1 end of stack, 2 call
        return struct.pack("<hhBB", sp_off, 0, sp_reg, typ | signal << 3)

    rows = [
        (fn("_stext"), v2(0, UNDEF, 0)),
        (fn("schedule"), v2(8, S, 2)),
        (fn("schedule", 4), v2(0, UNDEF, 1)),
        (fn("kthread"), v2(16, S, 2, signal=1)),
        (fn("_etext"), v2(0, UNDEF, 0)),
    ]
    k = Kernel(rows, v2=True)
    sp = STACK + 0xB00
    k.mem.put64(sp + 8, fn("schedule", 4))
    k.mem.put64(sp + 16, fn("kthread", 0x40))  # what schedule's body rule would read
    frames = k.unwinder().from_registers({"ip": fn("kthread", 8), "sp": sp, "cs": KERNEL_CS})
    assert k.names(frames) == ["kthread+0x8/0x100", "schedule+0x4/0x100"]
    assert not frames[1].call


# -- the register sets of a crash kernel's notes ---------------------------------------------
#
# On the panic path the panicking CPU's NT_PRSTATUS holds what crash_setup_regs() took inside
# __crash_kexec(): ip there (_THIS_IP_), sp and bp as they were. objtool skips __crash_kexec
# (STACK_FRAME_NON_STANDARD), so the ORC table has an undefined entry for it, as for the code
# between functions. The oopsing CPU's note holds the fault's pt_regs; a CPU stopped by NMI
# saves the registers of what the NMI interrupted. Both are interrupted pcs (looked up as is).

PANIC_FUNCS = {
    **FUNCS,
    "_etext": TEXT + 0x2000,
    "_end": TEXT + 0x3000,
    "panic": TEXT + 0x1100,
    "__pfx___crash_kexec": TEXT + 0x11F0,  # CONFIG_CALL_PADDING: 16 bytes before the function
    "__crash_kexec": TEXT + 0x1200,
    "sysrq_handle_crash": TEXT + 0x1300,
}
PANIC_ROWS = [
    *ROWS[:-1],
    (TEXT + 0x1000, orc_bytes(0, 0, UNDEF, UNDEF, CALL)),  # between functions
    (PANIC_FUNCS["panic"], orc_bytes(8, 0, S, UNDEF, CALL)),
    (PANIC_FUNCS["panic"] + 4, orc_bytes(16, -16, BP, PREV_SP, CALL)),  # a frame pointer
    (PANIC_FUNCS["__pfx___crash_kexec"], orc_bytes(0, 0, UNDEF, UNDEF, CALL)),  # no ORC data
    (PANIC_FUNCS["sysrq_handle_crash"], orc_bytes(16, 0, S, UNDEF, CALL)),
    (TEXT + 0x2000, orc_bytes(0, 0, UNDEF, UNDEF, CALL)),
]
CRASH_IP = PANIC_FUNCS["__crash_kexec"] + 0x20  # crash_setup_regs()'s _THIS_IP_


def call_to(k: Kernel, ret: int, target: int) -> None:
    """``call rel32`` to ``target`` in the 5 bytes before ``ret``."""
    k.mem.write(ret - 5, b"\xe8" + struct.pack("<i", target - ret))


def panic_stack(k: Kernel, frame: int = 0xB8) -> dict[str, int]:
    """A panicking CPU's stack under crash_setup_regs()'s registers: __crash_kexec's frame of
    ``frame`` bytes, then panic (frame pointer based), sysrq_handle_crash, ret_from_fork."""
    sp0 = STACK + 0x2000
    ret1 = PANIC_FUNCS["panic"] + 0x40
    call_to(k, ret1, PANIC_FUNCS["__crash_kexec"])
    # inside __crash_kexec's frame: what a scan must not take for the return address
    stale = PANIC_FUNCS["sysrq_handle_crash"] + 0x30
    call_to(k, stale, PANIC_FUNCS["panic"])  # returns from a call, but to another function
    k.mem.put64(sp0 + 0x08, stale)
    k.mem.put64(sp0 + 0x10, fn("kthread", 0x40))  # text, but no call before it in the dump
    k.mem.put64(sp0 + 0x18, CRASH_IP)  # fixed_regs.ip: __crash_kexec itself
    k.mem.put64(sp0 + frame, ret1)
    sp1 = sp0 + frame + 8
    bp = sp1 + 0x50  # panic's frame pointer: its CFA is bp + 16
    ret2 = PANIC_FUNCS["sysrq_handle_crash"] + 0x10
    k.mem.put64(bp, 0x4242, ret2)  # saved bp, return address
    k.mem.put64(bp + 16 + 8, fn("ret_from_fork", 0x1F))  # sysrq_handle_crash: CFA + 16
    return {"ip": CRASH_IP, "sp": sp0, "bp": bp, "cs": KERNEL_CS}


PANIC_NAMES = [
    "__crash_kexec+0x20/0x100",
    "panic+0x40/0xf0",
    "sysrq_handle_crash+0x10/0xd00",
    "ret_from_fork+0x1f/0x100",
]


def test_panic_path_from_crash_setup_regs():
    k = Kernel(PANIC_ROWS, funcs=PANIC_FUNCS)
    regs = panic_stack(k)
    frames = k.unwinder().from_registers(regs)
    assert k.names(frames) == PANIC_NAMES
    assert frames[1].sp == regs["sp"] + 0xC0  # above the return address found at sp + 0xb8
    assert frames[1].call and not frames[0].call


def test_a_call_through_the_padding_before_the_function():
    # call depth tracking and FineIBT patch calls to land in the 16 bytes before a function
    k = Kernel(PANIC_ROWS, funcs=PANIC_FUNCS)
    regs = panic_stack(k)
    call_to(k, PANIC_FUNCS["panic"] + 0x40, PANIC_FUNCS["__pfx___crash_kexec"])
    assert k.names(k.unwinder().from_registers(regs)) == PANIC_NAMES
    call_to(k, PANIC_FUNCS["panic"] + 0x40, PANIC_FUNCS["__pfx___crash_kexec"] - 8)
    assert k.names(k.unwinder().from_registers(regs)) == PANIC_NAMES[:1]


def test_no_call_into_the_function_no_caller():
    k = Kernel(PANIC_ROWS, funcs=PANIC_FUNCS)
    regs = panic_stack(k)
    k.mem.write(PANIC_FUNCS["panic"] + 0x40 - 5, b"\xff\xd0\x90\x90\x90")  # call *%rax; nops
    assert k.names(k.unwinder().from_registers(regs)) == PANIC_NAMES[:1]


def test_the_scan_for_the_return_address_is_bounded():
    k = Kernel(PANIC_ROWS, funcs=PANIC_FUNCS)
    regs = panic_stack(k, frame=U.MAX_FRAME_SCAN)
    assert k.names(k.unwinder().from_registers(regs)) == PANIC_NAMES[:1]
    k = Kernel(PANIC_ROWS, funcs=PANIC_FUNCS)
    regs = panic_stack(k, frame=U.MAX_FRAME_SCAN - 8)
    assert k.names(k.unwinder().from_registers(regs)) == PANIC_NAMES


def test_a_frame_pointer_after_a_function_without_orc_data_must_be_near():
    # __crash_kexec may have used bp as it liked: panic's bp rule is followed only when it
    # lands just above the caller's sp, as a frame pointer of that frame would
    k = Kernel(PANIC_ROWS, funcs=PANIC_FUNCS)
    regs = panic_stack(k)
    for far in (regs["sp"] - 0x100, regs["sp"] + 0xC0 + U.MAX_FRAME_SCAN):
        k.mem.put64(far, 0x4242, PANIC_FUNCS["sysrq_handle_crash"] + 0x10)
        k.mem.put64(far + 24, fn("ret_from_fork", 0x1F))
        frames = k.unwinder().from_registers({**regs, "bp": far})
        assert k.names(frames) == PANIC_NAMES[:2]


def test_nmi_saved_registers_at_a_functions_first_instruction(k):
    # A CPU stopped by NMI saves the interrupted registers: its ip is where it was, looked up
    # as is (ip - 1 lies in the function before, whose rule differs).
    sp = STACK + 0x2400
    k.mem.put64(sp, fn("kthread", 0x40))
    k.mem.put64(sp + 8 + 8, fn("ret_from_fork", 0x1F))
    frames = k.unwinder().from_registers({"ip": fn("foo"), "sp": sp, "cs": KERNEL_CS})
    assert k.names(frames) == ["foo+0x0/0x100", "kthread+0x40/0x100", "ret_from_fork+0x1f/0x100"]


def test_oops_registers_are_the_faults_through_the_syscall(k):
    # panic_on_oops: crash_kexec(regs) copies the fault's pt_regs: the faulting code's frame
    # (looked up at its ip), its callers, the syscall's pt_regs and the user pc.
    sp = STACK + 0x2800
    k.mem.put64(sp, fn("do_syscall_64", 0x30))  # foo: CALL, sp + 8
    k.mem.put64(sp + 8, 0x5555, fn("entry_SYSCALL_64", 0x58))  # do_syscall_64: sp + 16
    user = dict.fromkeys(PT_REGS, 0)
    user.update(ip=0x47B7A0, sp=0x7FFD0000, cs=USER_CS)
    k.mem.put64(sp + 24, *(user[n] for n in PT_REGS))  # what entry_SYSCALL_64 pushed
    frames = k.unwinder().from_registers({"ip": fn("foo", 0x10), "sp": sp, "bp": 0,
                                          "cs": KERNEL_CS})  # fmt: skip
    assert k.names(frames) == [
        "foo+0x10/0x100",
        "do_syscall_64+0x30/0x100",
        "entry_SYSCALL_64+0x58/0x100",
        "0x47b7a0",
    ]


def test_startup_labels_give_way_to_secondary_startup_64():
    # head_64.S: every CPU's idle stack returns into secondary_startup_64 after one of its
    # inner labels (secondary_startup_64_no_verify in 6.1, common_startup_64 in 6.12)
    base = TEXT + 0x100
    table = symbol_table({"_stext": TEXT, "secondary_startup_64": base,
                          "secondary_startup_64_no_verify": base + 0x60,
                          "common_startup_64": base + 0x80, "next_function": base + 0x100,
                          "_etext": TEXT + 0x1000, "_end": TEXT + 0x2000})  # fmt: skip
    names = Symbolizer(table).format([Frame(base + 0x66, 0, call=True), Frame(base + 0x90, 0,
                                      call=True)]).splitlines()  # fmt: skip
    assert names == ["secondary_startup_64+0x66/0x100", "secondary_startup_64+0x90/0x100"]
