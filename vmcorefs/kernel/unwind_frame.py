"""x86_64 stacks from frame pointers, for kernels without ORC tables.

A kernel built with ``CONFIG_UNWINDER_FRAME_POINTER`` (Ubuntu's until 22.04, for example) has no
``.orc_unwind`` tables; every C function keeps ``rbp`` as a frame pointer instead
(``push %rbp; mov %rsp,%rbp``), so the stack holds a chain of two-word frame headers: the
caller's ``rbp``, then the return address. The chain's rules are those of the kernel's own
unwinder (``arch/x86/kernel/unwind_frame.c``):

- a frame pointer with its lowest bit set is not a frame but an encoded pointer to a
  ``pt_regs`` (``ENCODE_FRAME_POINTER`` at interrupt and exception entry, and in a new task's
  first frame): the interrupted ``ip`` is the next frame, its ``bp`` the next frame pointer;
- the frame just below the ``pt_regs`` at the top of a task's stack is its last: when those
  registers are from user mode (a syscall's, whose entry does not encode them) the user pc
  ends the stack in place of the entry code's frame, as the ORC unwinder ends it; otherwise
  (kernel threads, the idle tasks) the stack ends there;
- a frame must lie above the one before it on the same stack; the chain may move to another
  stack (from an IRQ or exception stack to the task's), each stack once.

The kernel follows the chain blindly; a frame it prints may hide a caller (a function
interrupted before its ``mov %rsp,%rbp``, or one without a frame: ``native_safe_halt()``).
Here every frame is proved on the dump's own code before it is written (a wrong frame is
worse than none):

- a return address lies right after a ``call`` instruction (``call rel32``, or ``call`` through
  a register or memory); a direct call must be to the function of the frame below it (a call
  to a retpoline thunk or static-call trampoline counts as indirect);
- the function of the frame below has set up its own frame there (its prologue, read from the
  dump, has run and its ``ret`` is not next); where it has not, its return address lies at
  ``sp`` (or one word above, after ``push %rbp``) and is taken from there, proved as above;
  a function without a frame (no ``push %rbp`` first) has its caller found only as the lowest
  of the few words above ``sp`` that returns from a direct call to it;
- a return address in the init text cannot be checked once that text is freed after boot:
  such frames (the boot CPU's idle task, ``start_kernel()`` and the code before it) are
  written only when the chain then ends exactly at the task's last frame; likewise the
  address head code pushes in place of a return (``secondary_startup_64``) only as that
  last frame.

The walk stops at the first frame that is not proved, not in the dump, not aligned, not above
the one before, or whose return address is not kernel text; every walk is bounded
(:data:`~.unwind.MAX_FRAMES`). Where a stack lies is known for a task (its ``stack`` and
``THREAD_SIZE``): a walk that leaves the task's stack, once on it, stops. Other stacks (IRQ,
exception) are the ``THREAD_SIZE``-aligned blocks the frames lie in, each entered once.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from ..memory.x86_64 import START_KERNEL_map
from .btf import BtfError
from .unwind import MAX_FRAMES, Frame, function_name, linker_marker

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
#: KERNEL_IMAGE_SIZE without KASLR (512 MiB): the lowest module address when VMCOREINFO
#: does not say (NUMBER(KERNEL_IMAGE_SIZE)).
MIN_KERNEL_IMAGE_SIZE = 512 << 20
_KERNEL_HALF = 1 << 63
#: x86 ``call rel32``: E8, then the target relative to the next instruction.
_CALL_REL32 = 0xE8
_CALL_REL32_LEN = 5
#: The longest ``call`` through a register or memory (REX, FF /2, SIB, disp32).
_MAX_INDIRECT_CALL_LEN = 8
#: Code a direct call reaches on its way to another function: retpoline thunks (4.15+; named
#: ``__x86_retpoline_*`` in 5.9/5.10) and static-call trampolines (5.10+). A call to them is
#: an indirect call: its target is not known from the code.
TRAMPOLINE_PREFIXES = ("__x86_indirect_thunk_", "__x86_retpoline_", "__x86_indirect_call_thunk_",
                       "__SCT__")  # fmt: skip
#: What may come before ``push %rbp`` at a function's start: IBT's ``endbr64`` (5.18+), then
#: the 5-byte ``-mfentry`` slot (a call to ``__fentry__``, or the nop ftrace made of it).
_ENDBR64 = bytes.fromhex("f30f1efa")
_FENTRY_NOPS = (bytes.fromhex("0f1f440000"), bytes.fromhex("6666666690"))
_PUSH_RBP = 0x55
_MOV_RSP_RBP = bytes.fromhex("4889e5")
#: How far into a function its ``mov %rsp,%rbp`` is looked for (GCC may schedule a few
#: instructions before and after the ``push %rbp``).
PROLOGUE_WINDOW = 32
#: ``ret`` (and ``rep ret``): at such an ip the function's frame is already gone.
_RET = 0xC3
#: Words above sp where the caller of a function without a frame may have left its return
#: address (the function's pushes): a few, not a scan of the stack.
FRAMELESS_WORDS = 8


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


@dataclass(frozen=True)
class KernelCode:
    """What the unwinder knows of the kernel's code: whether an address is text, the function
    (start, kallsyms name) holding it, and the init text (freed after boot)."""

    is_text: Callable[[int], bool]
    function_at: Callable[[int], tuple[int, str] | None]
    init_text: tuple[int, int] | None = None

    def in_init_text(self, address: int) -> bool:
        return self.init_text is not None and self.init_text[0] <= address < self.init_text[1]


#: _frame_state(): the function has its own frame in rbp; or it has none (no push %rbp first);
#: or its bytes do not say (absent, or a prologue not recognised). An int: no frame yet (or no
#: more), its return address is that many bytes above sp.
_SET, _FRAMELESS, _UNKNOWN = "set", "frameless", "unknown"


def indirect_call_ends(raw: bytes) -> bool:
    """Whether the bytes ``raw`` end with a ``call`` through a register or memory (``FF /2``,
    an optional REX prefix, ModRM's SIB and displacement)."""
    for length in range(2, min(len(raw), _MAX_INDIRECT_CALL_LEN) + 1):
        insn = raw[len(raw) - length :]
        i = 1 if 0x40 <= insn[0] <= 0x4F else 0
        if len(insn) < i + 2 or insn[i] != 0xFF:
            continue
        modrm = insn[i + 1]
        mod, reg, rm = modrm >> 6, (modrm >> 3) & 7, modrm & 7
        if reg != 2:
            continue
        size = i + 2
        if mod != 3 and rm == 4:  # a SIB byte
            if len(insn) < size + 1:
                continue
            if mod == 0 and insn[size] & 7 == 5:
                size += 4  # SIB without a base: disp32
            size += 1
        if mod == 0 and rm == 5:
            size += 4  # rip-relative
        elif mod == 1:
            size += 1
        elif mod == 2:
            size += 4
        if size == length:
            return True
    return False


class FramePointerUnwinder:
    """Walks stacks along their frame-pointer chains (``CONFIG_UNWINDER_FRAME_POINTER``),
    each frame proved on the kernel's code (``code``; see the module doc)."""

    def __init__(self, kvirt, *, regs: Mapping[str, int], pt_regs_size: int,
                 inactive: InactiveFrame | None, code: KernelCode,
                 thread_size: int | None = None,
                 fork_returns: frozenset[int] = frozenset()) -> None:  # fmt: skip
        self.kvirt = kvirt
        self.regs_off, self.pt_regs_size, self.inactive = regs, pt_regs_size, inactive
        self.code = code
        self.thread_size = thread_size or DEFAULT_THREAD_SIZE
        self.fork_returns = fork_returns

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
            if not self.code.is_text(ret) or self._call_to(ret) is None:
                return frames
            frames.append(Frame(ret, sp + 8, call=True))
            sp += 8
        return self._walk(frames, bp, sp, stacks)

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
        # A task that never ran returns to ret_from_fork (copy_thread() put it there): not a
        # return address after a call, named as it is.
        frames = [Frame(ret, end, call=ret not in self.fork_returns)]
        stacks = _Stacks(self.thread_size, stack, stay=stack is not None)
        if not stacks.enter(thread_sp, layout.size, None):
            return frames
        return self._walk(frames, bp, end, stacks)

    # -- the code --------------------------------------------------------------------------------
    def _call_to(self, ret: int) -> tuple[str, int | None] | None:
        """The call instruction that ``ret`` returns from: ``("direct", target)``,
        ``("indirect", None)``, or None when no call ends there."""
        raw = self.kvirt.read(ret - _MAX_INDIRECT_CALL_LEN, _MAX_INDIRECT_CALL_LEN)
        if len(raw) != _MAX_INDIRECT_CALL_LEN:
            return None
        if raw[-_CALL_REL32_LEN] == _CALL_REL32:
            rel = int.from_bytes(raw[-4:], "little", signed=True)
            target = (ret + rel) & (1 << 64) - 1
            found = self.code.function_at(target)
            if found is not None and found[1].startswith(TRAMPOLINE_PREFIXES):
                return "indirect", None
            return "direct", target
        if indirect_call_ends(raw):
            return "indirect", None
        return None

    def _function_of(self, frame: Frame) -> tuple[int, str] | None:
        return self.code.function_at(frame.pc - 1 if frame.call else frame.pc)

    def _calls(self, ret: int, frame: Frame) -> bool | None:
        """Whether ``ret`` returns from a call that may have entered ``frame``'s function:
        True (a direct call to it, or an indirect call), False, None (no call there)."""
        call = self._call_to(ret)
        if call is None:
            return None
        kind, to = call
        if kind == "indirect":
            return True
        assert to is not None  # a direct call has its target
        callee, target = self._function_of(frame), self.code.function_at(to)
        if callee is None or target is None or target[0] != to:
            return False
        if target[0] == callee[0]:
            return True
        # a part GCC split off (f.cold) runs in its function's frame
        name = callee[1]
        return ".cold" in name and function_name(name) == function_name(target[1])

    def _frame_state(self, frame: Frame) -> str | int:
        """Whether the function running ``frame`` has its own frame in rbp there (see
        :data:`_SET`), read from its code in the dump."""
        look = frame.pc - 1 if frame.call else frame.pc
        found = self.code.function_at(look)
        if found is None:
            return _UNKNOWN
        start, name = found
        if not frame.call and self.kvirt.read(frame.pc, 1) == bytes([_RET]):
            return 0  # its epilogue ran (or it never had a frame): sp holds the return
        if ".cold" in name:
            return _SET  # a part of a function, run in its frame after its prologue
        code = self.kvirt.read(start, len(_ENDBR64) + 5 + 1 + PROLOGUE_WINDOW)
        i = len(_ENDBR64) if code.startswith(_ENDBR64) else 0
        if code[i : i + 5] in _FENTRY_NOPS or code[i : i + 1] == bytes([_CALL_REL32]):
            i += 5
        if len(code) <= i:
            return _UNKNOWN
        # GCC may schedule an instruction or two before the push and between it and the mov
        mov = code.find(_MOV_RSP_RBP, i, i + PROLOGUE_WINDOW)
        if mov < 0:
            return _UNKNOWN if code[i] == _PUSH_RBP else _FRAMELESS
        off, set_at = look - start, mov + len(_MOV_RSP_RBP)
        if off >= set_at:
            return _SET
        if frame.call:
            return _UNKNOWN  # a call before the frame is made: __fentry__'s, not followed
        if off <= i:
            return 0  # nothing pushed yet
        # after the push, when it comes first (where it is otherwise is not certain)
        return 8 if code[i] == _PUSH_RBP else _UNKNOWN

    def _caller(self, frame: Frame, state: str | int, bp: int) -> Frame | None:
        """The caller's frame of ``frame``'s function, which has no frame of its own there:
        the return address at the word its prologue says, or (a function without a frame)
        the lowest of :data:`FRAMELESS_WORDS` above sp that returns from a direct call to it;
        proved as every return address is."""
        sp = frame.sp
        if isinstance(state, int):
            slots = [sp + state]
        else:
            slots = [sp + 8 * k for k in range(FRAMELESS_WORDS)]
        for slot in slots:
            if slot % 8 or not (_KERNEL_HALF <= slot and (bp & 1 or slot < bp)):
                return None
            try:
                ret = self.kvirt.u64(slot)
            except FaultError:
                return None
            if not self.code.is_text(ret):
                continue
            call = self._call_to(ret)
            if call is None or (call[0] == "indirect" and not isinstance(state, int)):
                continue
            if self._calls(ret, frame):
                return Frame(ret, slot + 8, call=True)
        return None

    # -- the walk -------------------------------------------------------------------------------
    def _walk(self, frames: list[Frame], bp: int, prev_end: int, stacks: _Stacks) -> list[Frame]:
        """``frames`` and the frames of the chain from frame pointer ``bp`` that are proved."""
        kvirt, off, code = self.kvirt, self.regs_off, self.code
        unsure: int | None = None  # the first frame in freed init text, proved by the end only
        while len(frames) < MAX_FRAMES:
            below = frames[-1]
            # entry code's frame, or a new task's ret_from_fork: the pt_regs come next
            to_regs = bp & 1 and (below.call or below.pc in self.fork_returns)
            if not to_regs:
                state = self._frame_state(below)
                if code.in_init_text(below.pc - 1 if below.call else below.pc):
                    state = _SET if below.call else _UNKNOWN  # its code is gone: as C code
                if state == _UNKNOWN:
                    break
                if state != _SET:
                    caller = self._caller(below, state, bp)
                    if caller is None:
                        break
                    frames.append(caller)
                    continue
            if bp & 1:  # decode_frame_pointer(): an encoded pointer to pt_regs
                regs = bp & ~1
                if not stacks.enter(regs, self.pt_regs_size, prev_end):
                    break
                try:
                    ip, sp = kvirt.u64(regs + off["ip"]), kvirt.u64(regs + off["sp"])
                    cs, bp = kvirt.u64(regs + off["cs"]), kvirt.u64(regs + off["bp"])
                except FaultError:
                    break
                if cs & _USER_RPL_MASK:
                    frames.append(Frame(ip, sp, call=False, user=True))
                    break
                if not code.is_text(ip):
                    break
                frames.append(Frame(ip, sp, call=False))
                prev_end = regs + self.pt_regs_size
                continue
            if not stacks.enter(bp, FRAME_HEADER_SIZE, prev_end):
                break
            try:
                next_bp, ret = kvirt.u64(bp), kvirt.u64(bp + 8)
            except FaultError:
                break
            if not code.is_text(ret):
                break
            last = self._last_frame(bp, stacks)
            calls = self._calls(ret, below)
            if code.in_init_text(ret):
                if unsure is None:
                    unsure = len(frames)
            elif calls is None and not last:
                break  # not after a call: head code's pushed address is a last frame only
            elif calls is False:
                break
            frames.append(Frame(ret, bp + FRAME_HEADER_SIZE, call=True))
            if last:
                self._end_of_task_stack(frames, stacks.top())
                return frames
            bp, prev_end = next_bp, bp + FRAME_HEADER_SIZE
        return frames if unsure is None else frames[:unsure]

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


def kernel_code(symbols, vmcoreinfo, modules) -> KernelCode:
    """The kernel's code as the unwinder needs it: text is the kernel's (``_stext``..
    ``_etext``, the init text) and a loaded module's memory; without the module list, the
    module mapping (``MODULES_VADDR``..``MODULES_END``). ``modules``: the module list's
    ``module_at`` and ``symbol``, or None."""
    ranges = []
    for lo, hi in (("_stext", "_etext"), ("_sinittext", "_einittext")):
        a, b = symbols.get(lo), symbols.get(hi)
        if a is not None and b is not None and a < b:
            ranges.append((a, b))
    if not ranges or ranges[0][0] != symbols.get("_stext"):
        raise Unavailable("the symbol table has no _stext/_etext: kernel text is not known")
    init = ranges[1] if len(ranges) > 1 else None
    module_at = module_symbol = None
    if modules is not None:
        module_at, module_symbol = modules
    else:
        size = vmcoreinfo.number("KERNEL_IMAGE_SIZE", MIN_KERNEL_IMAGE_SIZE, 1 << 30)
        ranges.append((START_KERNEL_map + (size or MIN_KERNEL_IMAGE_SIZE), MODULES_END))

    def is_text(address: int) -> bool:
        if any(lo <= address < hi for lo, hi in ranges):
            return True
        return module_at is not None and module_at(address) is not None

    addresses, names = getattr(symbols, "addresses", None), getattr(symbols, "names", None)

    def function_at(address: int) -> tuple[int, str] | None:
        """The symbol holding ``address`` (a function's name rather than a section bound
        that shares its address: ``__indirect_thunk_start``)."""
        found = symbols.containing(address)
        if found is not None:
            start, name = found[0].address, found[0].name
            if linker_marker(name) and addresses is not None and names is not None:
                i = bisect.bisect_left(addresses, start)
                for j in range(i, min(i + 64, len(addresses))):
                    if addresses[j] != start:
                        break
                    if not linker_marker(names[j]):
                        return start, names[j]
            return start, name
        if module_symbol is not None:
            mod = module_symbol(address)
            if mod is not None:
                return address - mod[1], mod[0]
        return None

    return KernelCode(is_text, function_at, init)
