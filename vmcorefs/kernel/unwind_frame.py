"""x86_64 stacks from frame pointers, for kernels without ORC tables.

A kernel built with ``CONFIG_UNWINDER_FRAME_POINTER`` (Ubuntu's until 22.04, for example) has no
``.orc_unwind`` tables; every C function keeps ``rbp`` as a frame pointer instead
(``push %rbp; mov %rsp,%rbp``), so the stack holds a chain of two-word frame headers: the
caller's ``rbp``, then the return address. The rules are those of the kernel's own unwinder
(``arch/x86/kernel/unwind_frame.c``):

- a frame pointer with its lowest bit set is not a frame but an encoded pointer to a
  ``pt_regs`` (``ENCODE_FRAME_POINTER`` at interrupt and exception entry, and in a new task's
  first frame): the interrupted ``ip`` is the next frame, its ``bp`` the next frame pointer;
- the frame just below the ``pt_regs`` at the top of a task's stack is its last: when those
  registers are from user mode (a syscall's, whose entry does not encode them) the user pc
  ends the stack in place of the entry code's frame, as the ORC unwinder ends it; otherwise
  (kernel threads, the boot CPU's idle task) the stack ends there;
- a frame must lie above the one before it on the same stack; the chain may move to another
  stack (from an IRQ or exception stack to the task's), each stack once.

Where a stack lies is known for a task (its ``stack`` and ``THREAD_SIZE``): a walk that leaves
the task's stack, once on it, stops. Other stacks (IRQ, exception) are the ``THREAD_SIZE``-
aligned blocks the frames lie in, each entered once. Every walk is bounded
(:data:`~.unwind.MAX_FRAMES`) and stops at the first frame that is not in the dump, not
aligned, not above the one before, or whose return address is not kernel text.

A function interrupted before it pushed ``rbp`` (or one that never does: entry code, some
assembly) has no frame of its own: its caller is missing from the stack, as from the
kernel's own reliable frames (it prints them with ``?`` from a scan of the stack, which this
unwinder does not do: nothing is guessed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from .btf import BtfError
from .unwind import MAX_FRAMES, Frame

#: unwind_frame.c FRAME_HEADER_SIZE: the saved frame pointer and the return address.
FRAME_HEADER_SIZE = 16
#: arch/x86/include/asm/ptrace.h: struct pt_regs on x86_64, the same order since 2.6.25
#: (6.9's FRED unions keep every offset).
PT_REGS_NAMES = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx",
                 "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss")  # fmt: skip
PT_REGS_SIZE = 8 * len(PT_REGS_NAMES)
#: THREAD_SIZE on x86_64 without KASAN since 3.15 (THREAD_SIZE_ORDER 2), when the symbol
#: table has no ``__start_init_task``/``__end_init_task`` to say it.
DEFAULT_THREAD_SIZE = 16 << 10
#: unwind_frame.c GCC_REALIGN_WORDS on x86_64: a function called by head/entry code may
#: realign the stack and push a copy of its return address before its frame.
GCC_REALIGN_WORDS = 1
#: Different stacks one walk may use: an exception stack, the IRQ stack (two blocks if it is
#: not aligned), the task's (the kernel's stack_mask visits each type once).
MAX_STACKS = 6
#: x86_64 user_mode(): the privilege level in the low bits of the saved CS.
_USER_RPL_MASK = 3
#: A symbol only the frame-pointer unwinder has (a static function of unwind_frame.c):
#: kallsyms lists it in the kernels that have it (4.18, 5.4 and 5.15 of Ubuntu do).
FRAME_POINTER_UNWINDER_SYMBOL = "update_stack_state"
#: arch/x86/include/asm/pgtable_64_types.h: the module mapping ends at the fixmap (4.x+);
#: it starts at __START_KERNEL_map + KERNEL_IMAGE_SIZE.
MODULES_END = 0xFFFF_FFFF_FF00_0000
START_KERNEL_map = 0xFFFF_FFFF_8000_0000
#: KERNEL_IMAGE_SIZE without KASLR (512 MiB): the lowest module address when VMCOREINFO
#: does not say (NUMBER(KERNEL_IMAGE_SIZE)).
MIN_KERNEL_IMAGE_SIZE = 512 << 20
_KERNEL_HALF = 1 << 63


#: arch/x86/kernel/vmlinux.lds.S: the ORC tables' bounds (CONFIG_UNWINDER_ORC).
ORC_SYMBOL = "__start_orc_unwind_ip"


def unwinder_kind(symbols) -> str:
    """Which unwinder the kernel was built with, from its symbols: ``"orc"`` (its tables),
    ``"frame pointer"`` (unwind_frame.c's functions), else Unavailable (``CONFIG_UNWINDER_GUESS``
    scans the stack for text addresses: nothing to follow)."""
    if symbols.get(ORC_SYMBOL) is not None:
        return "orc"
    if symbols.get(FRAME_POINTER_UNWINDER_SYMBOL) is not None:
        return "frame pointer"
    raise Unavailable(
        f"the kernel has neither ORC tables (no {ORC_SYMBOL}) nor the frame-pointer unwinder "
        f"(no {FRAME_POINTER_UNWINDER_SYMBOL}): built without CONFIG_UNWINDER_ORC or "
        "CONFIG_UNWINDER_FRAME_POINTER, its stacks cannot be followed"
    )


@dataclass(frozen=True)
class InactiveFrame:
    """``struct inactive_task_frame`` (what ``__switch_to_asm`` pushed): its size and where
    the saved ``bp`` and the return address lie."""

    size: int
    bp: int
    ret: int


def frame_layouts(btf) -> tuple[dict[str, int], int, InactiveFrame | None]:
    """``pt_regs`` offsets and size, and the inactive task frame, from the kernel's BTF when
    it has one (``btf`` None: the x86_64 ``pt_regs``, no inactive frame: tasks need BTF)."""
    regs = {name: 8 * i for i, name in enumerate(PT_REGS_NAMES)}
    if btf is None:
        return regs, PT_REGS_SIZE, None
    try:
        regs = {name: btf.offsetof("struct pt_regs", name) for name in PT_REGS_NAMES}
        size = btf.sizeof(btf.find("struct pt_regs"))
        frame = btf.find("struct inactive_task_frame")
        inactive = InactiveFrame(
            btf.sizeof(frame), btf.offsetof(frame, "bp"), btf.offsetof(frame, "ret_addr")
        )
    except BtfError as exc:
        raise Unavailable(f"BTF lacks the x86_64 frame layouts: {exc}") from None
    if size < PT_REGS_SIZE or any(not 0 <= off <= size - 8 for off in regs.values()):
        raise Unavailable(f"BTF's struct pt_regs of {size} bytes is not x86_64's")
    if not (0 <= inactive.bp <= inactive.size - 8 and 0 <= inactive.ret <= inactive.size - 8):
        raise Unavailable("BTF's struct inactive_task_frame is not x86_64's")
    return regs, size, inactive


class _Stacks:
    """Which stacks a walk may use, and whether a frame may come next (see the module doc)."""

    def __init__(self, thread_size: int, task: tuple[int, int] | None, stay: bool) -> None:
        self.thread_size, self.task = thread_size, task
        self.stay = stay  # a task that is not running: its stack only
        self.current: tuple[int, int] | None = None  # the stack of the last frame
        self.seen: list[tuple[int, int]] = []

    def stack_of(self, address: int) -> tuple[int, int]:
        if self.task is not None and self.task[0] <= address < self.task[1]:
            return self.task
        base = address - address % self.thread_size
        return base, base + self.thread_size

    def enter(self, frame: int, size: int, prev_end: int | None) -> bool:
        """Whether ``size`` bytes at ``frame`` may be the next frame, the last one ending at
        ``prev_end``; moves the walk onto the frame's stack."""
        if frame % 8 or frame < _KERNEL_HALF:
            return False
        stack = self.stack_of(frame)
        if frame + size > stack[1]:
            return False
        if stack == self.current:
            return prev_end is None or frame >= prev_end
        on_task = stack == self.task
        if self.current is not None and self.current == self.task:
            return False  # a frame pointer outside the task's stack, once on it
        if self.stay and not on_task:
            return False
        if stack in self.seen or len(self.seen) >= MAX_STACKS:
            return False
        self.seen.append(stack)
        self.current = stack
        return True

    def top(self) -> int:
        """The end of the current stack (a task's stack: the end of its pt_regs)."""
        assert self.current is not None
        return self.current[1]


class FramePointerUnwinder:
    """Walks stacks along their frame-pointer chains (``CONFIG_UNWINDER_FRAME_POINTER``).

    ``is_text(address)``: whether a return address lies in kernel or module text.
    """

    def __init__(self, kvirt, *, regs: Mapping[str, int], pt_regs_size: int,
                 inactive: InactiveFrame | None, is_text: Callable[[int], bool],
                 thread_size: int | None = None) -> None:  # fmt: skip
        self.kvirt = kvirt
        self.regs_off, self.pt_regs_size, self.inactive = regs, pt_regs_size, inactive
        self.is_text = is_text
        self.thread_size = thread_size or DEFAULT_THREAD_SIZE

    # -- entry points (as the ORC unwinder's) ---------------------------------------------------
    def from_registers(self, values: Mapping[str, int],
                       stack: tuple[int, int] | None = None) -> list[Frame]:  # fmt: skip
        """The stack of a CPU from its registers (``pt_regs`` names); ``stack``: the stack of
        the task it runs, when known."""
        ip, sp, bp = values["ip"], values["sp"], values.get("bp", 0)
        if values.get("cs", 0) & _USER_RPL_MASK:
            return [Frame(ip, sp, call=False, user=True)]
        frames = [Frame(ip, sp, call=False)]
        stacks = _Stacks(self.thread_size, stack, stay=False)
        if ip == 0:
            # A call through a NULL pointer: sp points at its return address, the caller's
            # frame is not made yet (unwind_frame.c __unwind_start does the same).
            if not stacks.enter(sp, 8, None):
                return frames
            try:
                ret = self.kvirt.u64(sp)
            except FaultError:
                return frames
            if not self.is_text(ret):
                return frames
            frames.append(Frame(ret, sp + 8, call=True))
            sp += 8
        self._walk(frames, bp, sp, stacks)
        return frames

    def from_inactive_frame(self, thread_sp: int,
                            stack: tuple[int, int] | None = None) -> list[Frame]:  # fmt: skip
        """The stack of a task that is not running, from the ``inactive_task_frame`` at
        ``thread.sp``; ``stack``: the task's stack (the walk stays on it)."""
        if self.inactive is None:
            raise Unavailable("the kernel has no BTF: struct inactive_task_frame is not known")
        layout = self.inactive
        try:
            bp = self.kvirt.u64(thread_sp + layout.bp)
            ret = self.kvirt.u64(thread_sp + layout.ret)
        except FaultError as exc:
            raise Unavailable(f"the task's saved frame is not in the dump ({exc})") from None
        end = thread_sp + layout.size
        frames = [Frame(ret, end, call=True)]
        stacks = _Stacks(self.thread_size, stack, stay=stack is not None)
        if stacks.enter(thread_sp, layout.size, None):
            self._walk(frames, bp, end, stacks)
        return frames

    # -- the walk -------------------------------------------------------------------------------
    def _walk(self, frames: list[Frame], bp: int, prev_end: int, stacks: _Stacks) -> None:
        """Append the frames of the chain from frame pointer ``bp`` to ``frames``."""
        kvirt, off = self.kvirt, self.regs_off
        while len(frames) < MAX_FRAMES:
            if bp & 1:  # decode_frame_pointer(): an encoded pointer to pt_regs
                regs = bp & ~1
                if not stacks.enter(regs, self.pt_regs_size, prev_end):
                    return
                try:
                    ip, sp = kvirt.u64(regs + off["ip"]), kvirt.u64(regs + off["sp"])
                    cs, bp = kvirt.u64(regs + off["cs"]), kvirt.u64(regs + off["bp"])
                except FaultError:
                    return
                if cs & _USER_RPL_MASK:
                    frames.append(Frame(ip, sp, call=False, user=True))
                    return
                if not self.is_text(ip):
                    return  # a new kernel thread's zeroed registers: the end
                frames.append(Frame(ip, sp, call=False))
                prev_end = regs + self.pt_regs_size
                continue
            if not stacks.enter(bp, FRAME_HEADER_SIZE, prev_end):
                return
            try:
                next_bp, ret = kvirt.u64(bp), kvirt.u64(bp + 8)
            except FaultError:
                return
            if not self.is_text(ret):
                return
            frames.append(Frame(ret, bp + FRAME_HEADER_SIZE, call=True))
            if self._last_frame(bp, stacks):
                self._end_of_task_stack(frames, stacks.top())
                return
            bp, prev_end = next_bp, bp + FRAME_HEADER_SIZE

    def _last_frame(self, bp: int, stacks: _Stacks) -> bool:
        """unwind_frame.c ``is_last_frame()`` and ``is_last_aligned_frame()``: the frame just
        below the ``pt_regs`` at the top of the stack (or one word lower, with a copy of the
        same return address)."""
        last = stacks.top() - self.pt_regs_size - FRAME_HEADER_SIZE
        if bp == last:
            return True
        if bp != last - 8 * GCC_REALIGN_WORDS:
            return False
        try:
            return self.kvirt.u64(bp + 8) == self.kvirt.u64(last + 8)
        except FaultError:
            return False

    def _end_of_task_stack(self, frames: list[Frame], top: int) -> None:
        """The ``pt_regs`` at the top of the task's stack: from user mode (a syscall), the
        user pc replaces the entry code's frame; else the stack ends as it is."""
        regs = top - self.pt_regs_size
        try:
            cs = self.kvirt.u64(regs + self.regs_off["cs"])
            ip = self.kvirt.u64(regs + self.regs_off["ip"])
            sp = self.kvirt.u64(regs + self.regs_off["sp"])
        except FaultError:
            return
        if cs & _USER_RPL_MASK:
            frames[-1] = Frame(ip, sp, call=False, user=True)


def text_test(symbols, vmcoreinfo, module_at: Callable[[int], object] | None):
    """``is_text(address)`` for return addresses: the kernel's text (``_stext``.. ``_etext``,
    the init text), a loaded module's memory; without the module list, the module mapping
    (``MODULES_VADDR``..``MODULES_END``)."""
    ranges = []
    for lo, hi in (("_stext", "_etext"), ("_sinittext", "_einittext")):
        a, b = symbols.get(lo), symbols.get(hi)
        if a is not None and b is not None and a < b:
            ranges.append((a, b))
    if not ranges:
        raise Unavailable("the symbol table has no _stext/_etext: kernel text is not known")
    if module_at is None:
        size = vmcoreinfo.number("KERNEL_IMAGE_SIZE", MIN_KERNEL_IMAGE_SIZE, 1 << 30)
        ranges.append((START_KERNEL_map + (size or MIN_KERNEL_IMAGE_SIZE), MODULES_END))

    def is_text(address: int) -> bool:
        if any(lo <= address < hi for lo, hi in ranges):
            return True
        return module_at is not None and module_at(address) is not None

    return is_text
