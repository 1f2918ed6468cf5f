"""x86_64 stacks from the kernel's own ORC tables (``arch/x86/kernel/unwind_orc.c``).

The kernel keeps, for every instruction of its text, how to find the caller's frame: an
``orc_entry`` (``.orc_unwind``) per address range starting at the addresses of
``.orc_unwind_ip`` (each an ``int`` relative to its own location). The tables lie in the dump
between ``__start_orc_unwind_ip``/``__stop_orc_unwind_ip`` and ``__start_orc_unwind``; a
module's own tables hang off ``struct module``'s ``arch.orc_unwind_ip``/``orc_unwind``/
``num_orcs``. The entry layout (the offsets, and the ``sp_reg``/``bp_reg``/``type``/``end``
bitfields) is read from BTF's ``struct orc_entry``, so no kernel header is compiled in.

The rules follow the kernel's ``unwind_next_frame()``: the entry of a return address is looked
up at ``ip - 1`` (the call instruction), of an interrupted ip at ``ip``; ``sp_reg`` finds the
caller's stack pointer (SP, BP, their ``*_INDIRECT`` forms, or R10/R13/DI/DX of saved
registers); ``type`` CALL reads the return address below it, REGS a whole ``pt_regs``,
REGS_PARTIAL an IRET frame; an entry with an undefined ``sp_reg`` and ``end`` set ends the
stack (kernel threads end in ``ret_from_fork``); ``pt_regs`` from user mode end it after the
user pc. Every walk is bounded (:data:`MAX_FRAMES`) and the stack pointer must grow from frame
to frame except where the stack is switched (an indirect ``sp_reg`` or saved registers).

One kind of function has no ORC data: what objtool was told to skip
(``STACK_FRAME_NON_STANDARD``). The one that matters is ``__crash_kexec()``: on the panic path
the panicking CPU's registers are ``crash_setup_regs()``'s, taken inside it (ip there, sp its
own). Its caller's frame is found where the return address of the call into it lies: the
lowest stack slot above sp whose value returns from a direct ``call`` to that very function,
checked against the call instruction's bytes in the dump (see :meth:`Unwinder._caller_of`).
Whether it kept the frame pointer is unknown: until a frame restores bp from the stack, a rule
that finds the caller's frame from bp is followed only when that frame lies just above sp.
"""

from __future__ import annotations

import array
import bisect
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from .btf import Btf, BtfError, read_bits

# arch/x86/include/asm/orc_types.h
ORC_REG_UNDEFINED = 0
ORC_REG_PREV_SP = 1
ORC_REG_DX = 2
ORC_REG_DI = 3
ORC_REG_BP = 4
ORC_REG_SP = 5
ORC_REG_R10 = 6
ORC_REG_R13 = 7
ORC_REG_BP_INDIRECT = 8
ORC_REG_SP_INDIRECT = 9
# The types until Linux 6.3 (struct orc_entry with an ``end`` bit) ...
ORC_TYPE_CALL = 0
ORC_TYPE_REGS = 1
ORC_TYPE_REGS_PARTIAL = 2
# ... and from Linux 6.4 ("x86,objtool: Split UNWIND_HINT_EMPTY in two"),
# where ``end`` became a type of its own; :class:`OrcLayout` maps these to the ones above.
_ORC_TYPE_UNDEFINED_V2 = 0
_ORC_TYPE_END_OF_STACK_V2 = 1

#: Frames per stack at most (the kernel prints deeper stacks, but never this deep).
MAX_FRAMES = 128
#: How far above sp the return address of a function without ORC data is looked for: a
#: kernel stack frame is at most CONFIG_FRAME_WARN (2048 on x86_64 distributions) and more.
MAX_FRAME_SCAN = 4096
#: x86 ``call rel32``: opcode E8, then the target relative to the next instruction.
_CALL_REL32 = 0xE8
_CALL_REL32_LEN = 5
#: A call may enter a function through the padding before it (CONFIG_CALL_PADDING, 6.2+:
#: call depth tracking and FineIBT's __cfi_ preamble are 16 bytes that run into the function).
_FUNCTION_PADDING = 16
#: x86_64 user_mode(): the privilege level in the low bits of the saved CS.
_USER_RPL_MASK = 3


@dataclass(frozen=True)
class OrcEntry:
    sp_offset: int
    bp_offset: int
    sp_reg: int
    bp_reg: int
    type: int  # ORC_TYPE_CALL, ORC_TYPE_REGS, ORC_TYPE_REGS_PARTIAL, or -1 (undefined)
    end: bool  # the end of the stack (UNWIND_HINT_EMPTY / END_OF_STACK)
    #: the caller's frame was interrupted, not a call: its ip is looked up as is. Until 6.2
    #: the REGS types; since 6.3 a bit of its own ("x86/unwind/orc: Add 'signal' field to
    #: ORC metadata").
    signal: bool = False


#: unwind_orc.c ``null_orc_entry``: ip 0 means a call through a NULL function pointer.
NULL_ORC_ENTRY = OrcEntry(8, 0, ORC_REG_SP, ORC_REG_UNDEFINED, ORC_TYPE_CALL, False, False)


class OrcLayout:
    """``struct orc_entry`` as this kernel's BTF describes it."""

    def __init__(self, btf: Btf) -> None:
        try:
            st = btf.find("struct orc_entry")
            self.size = btf.sizeof(st)
            self._fields = {}
            for name in ("sp_offset", "bp_offset", "sp_reg", "bp_reg", "type"):
                m = btf.member(st, name)
                bits = m.bitfield_size or btf.sizeof(m.type_id) * 8
                signed = btf.resolve(m.type_id).signed
                self._fields[name] = (m.bit_offset, bits, signed)
            self.has_end = btf.has_member(st, "end")
            for flag in ("end", "signal"):
                if btf.has_member(st, flag):
                    m = btf.member(st, flag)
                    self._fields[flag] = (m.bit_offset, m.bitfield_size or 1, False)
        except BtfError as exc:
            raise Unavailable(f"BTF has no usable struct orc_entry: {exc}") from None
        if not 0 < self.size <= 16:
            raise Unavailable(f"struct orc_entry of {self.size} bytes")

    def decode(self, raw: bytes) -> OrcEntry:
        v = {name: read_bits(raw, off, bits, signed) for name, (off, bits, signed) in
             self._fields.items()}  # fmt: skip
        typ = v["type"]
        end = bool(v.get("end", 0))
        if not self.has_end:  # Linux 6.4+: UNDEFINED 0, END_OF_STACK 1, CALL 2, REGS 3, ...
            end = typ == _ORC_TYPE_END_OF_STACK_V2
            typ = -1 if typ in (_ORC_TYPE_UNDEFINED_V2, _ORC_TYPE_END_OF_STACK_V2) else typ - 2
        signal = (
            bool(v["signal"]) if "signal" in v else typ in (ORC_TYPE_REGS, ORC_TYPE_REGS_PARTIAL)
        )
        sp_reg = ORC_REG_UNDEFINED if typ == -1 else v["sp_reg"]
        return OrcEntry(v["sp_offset"], v["bp_offset"], sp_reg, v["bp_reg"], typ, end, signal)


class OrcTable:
    """One pair of ORC tables (vmlinux's, or a module's): ip → entry by binary search.

    The ip table is read once (sorted: at build time by ``scripts/sorttable``, and by
    ``unwind_init()``/``unwind_module_init()`` at boot); entries are read on demand.
    """

    def __init__(self, kvirt, layout: OrcLayout, ip_table: int, orc_table: int, count: int,
                 what: str) -> None:  # fmt: skip
        self.kvirt, self.layout, self.orc_table = kvirt, layout, orc_table
        raw = kvirt.read(ip_table, 4 * count)
        if len(raw) != 4 * count:
            missing = ip_table + len(raw)
            raise Unavailable(f"{what}: ORC ip table at {missing:#x} is not in the dump")
        self.ip_table = ip_table
        self.rel = array.array("i", raw)
        if sys.byteorder != "little":
            self.rel.byteswap()
        self.count = count
        self._entries: dict[int, OrcEntry] = {}
        self._lock = threading.Lock()

    def ip(self, i: int) -> int:
        return self.ip_table + 4 * i + self.rel[i]

    def find(self, ip: int) -> OrcEntry | None:
        """The entry of the rightmost ip ≤ ``ip`` (``__orc_find``), or None."""
        rel, base = self.rel, self.ip_table
        lo, hi = 0, self.count  # bisect_right over ip(i) = &ip_table[i] + ip_table[i]
        while lo < hi:
            mid = (lo + hi) // 2
            if base + 4 * mid + rel[mid] <= ip:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1
        if i < 0:
            return None
        entry = self._entries.get(i)
        if entry is None:
            size = self.layout.size
            try:
                raw = self.kvirt.read_exact(self.orc_table + i * size, size)
            except FaultError:
                return None
            entry = self.layout.decode(raw)
            with self._lock:
                self._entries[i] = entry
        return entry


@dataclass(frozen=True)
class Frame:
    """One frame: ``pc`` and the stack pointer there. ``call`` when ``pc`` is a return
    address (named and looked up at ``pc - 1``); ``user`` for the user-space pc that ends a
    syscall's or interrupt's kernel stack."""

    pc: int
    sp: int
    call: bool
    user: bool = False


@dataclass
class _Regs:
    """Saved registers: a ``pt_regs`` in memory (``address``) or the CPU note's values."""

    address: int | None
    values: Mapping[str, int] | None = None


class Unwinder:
    """Walks stacks with the dump's ORC tables.

    ``modules`` maps an address to ``(module name, OrcTable or None)``: a module's tables,
    built by :mod:`vmcorefs.kernel.modules`.
    """

    def __init__(self, kvirt, symbols, btf: Btf,
                 module_orc: Callable[[int], OrcTable | None] | None = None) -> None:  # fmt: skip
        self.kvirt = kvirt
        self.symbols = symbols
        self.btf = btf
        self.module_orc = module_orc or (lambda ip: None)
        start_ip = symbols.get("__start_orc_unwind_ip")
        stop_ip = symbols.get("__stop_orc_unwind_ip")
        start_orc = symbols.get("__start_orc_unwind")
        if None in (start_ip, stop_ip, start_orc):
            # First: a frame-pointer kernel (Ubuntu 22.04's 5.15) has neither the tables nor
            # struct orc_entry, and the tables are the cause to name.
            raise Unavailable(
                "the symbol table has no __start_orc_unwind_ip/__stop_orc_unwind_ip"
                "/__start_orc_unwind (kernel without CONFIG_UNWINDER_ORC)"
            )
        self.layout = OrcLayout(btf)
        count, rest = divmod(stop_ip - start_ip, 4)
        if rest or not 0 < count <= 1 << 24:
            raise Unavailable(f"ORC ip table {start_ip:#x}..{stop_ip:#x} is not a table of ints")
        stop_orc = symbols.get("__stop_orc_unwind")
        if stop_orc is not None and stop_orc - start_orc != count * self.layout.size:
            raise Unavailable(
                f"ORC tables disagree: {count} ips, "
                f"{(stop_orc - start_orc) / self.layout.size:g} entries"
            )
        self.core = OrcTable(kvirt, self.layout, start_ip, start_orc, count, "vmlinux")
        # vmlinux text that the core table covers: [_text, _etext) and the init text
        ranges = []
        for lo, hi in (("_text", "_etext"), ("_sinittext", "_einittext")):
            a, b = symbols.get(lo), symbols.get(hi)
            if a is not None and b is not None and a < b:
                ranges.append((a, b))
        if not ranges:
            ranges.append((self.core.ip(0), self.core.ip(count - 1) + 1))
        self.core_ranges = ranges
        # where a new task's first switch returns: ret_from_fork (ret_from_fork_asm since 6.5)
        self.fork_returns = {
            a for a in (symbols.get("ret_from_fork"), symbols.get("ret_from_fork_asm")) if a
        }
        try:
            self.regs_off = {
                name: btf.offsetof("struct pt_regs", name)
                for name in ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
                             "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags",
                             "sp", "ss")
            }  # fmt: skip
            self.pt_regs_size = btf.sizeof(btf.find("struct pt_regs"))
            frame = btf.find("struct inactive_task_frame")
            self.frame_size = btf.sizeof(frame)
            self.frame_bp = btf.offsetof(frame, "bp")
            self.frame_ret = btf.offsetof(frame, "ret_addr")
        except BtfError as exc:
            raise Unavailable(f"BTF lacks the x86_64 frame layouts: {exc}") from None
        self.iret_offset = self.regs_off["ip"]  # IRET_FRAME_OFFSET

    # -- lookup ----------------------------------------------------------------------------
    def orc_find(self, ip: int) -> OrcEntry | None:
        if ip == 0:
            return NULL_ORC_ENTRY
        for lo, hi in self.core_ranges:
            if lo <= ip < hi:
                return self.core.find(ip)
        table = self.module_orc(ip)
        return table.find(ip) if table is not None else None

    def _in_core_text(self, ip: int) -> bool:
        return any(lo <= ip < hi for lo, hi in self.core_ranges)

    def _caller_of(self, ip: int, sp: int) -> tuple[int, int] | None:
        """The caller of the function at ``ip`` (one that has no ORC data) whose stack pointer
        there is ``sp``: ``(return address, caller's sp)``, or None when not found.

        Without ORC data (or debug info) the frame's size is unknown, but a direct call leaves
        its return address on the stack, and the call instruction that precedes it names its
        target. The first 8-byte slot at or above ``sp`` (within :data:`MAX_FRAME_SCAN`) whose
        value is an address in the kernel's text right after ``call rel32`` to this function
        (or into the padding just before it) is that return address; nothing else is taken.
        A function reached through a pointer (an indirect call) is not found: the walk ends.
        """
        found = self.symbols.containing(ip) if hasattr(self.symbols, "containing") else None
        if found is None:
            return None
        start = found[0].address
        raw = self.kvirt.read(sp, MAX_FRAME_SCAN)
        for off in range(0, len(raw) - 7, 8):
            ret = int.from_bytes(raw[off : off + 8], "little")
            if not self._in_core_text(ret - _CALL_REL32_LEN):
                continue
            try:
                insn = self.kvirt.read_exact(ret - _CALL_REL32_LEN, _CALL_REL32_LEN)
            except FaultError:
                continue
            if insn[0] != _CALL_REL32:
                continue
            target = (ret + int.from_bytes(insn[1:], "little", signed=True)) & (1 << 64) - 1
            if start - _FUNCTION_PADDING <= target <= start:
                return ret, sp + off + 8
        return None

    # -- registers ---------------------------------------------------------------------------
    def _get_reg(self, regs: _Regs | None, name: str) -> int | None:
        if regs is None:
            return None
        if regs.values is not None:
            return regs.values.get(name)
        if regs.address is None:
            return None
        try:
            return self.kvirt.u64(regs.address + self.regs_off[name])
        except FaultError:
            return None

    def _user_mode(self, regs: _Regs | None) -> bool:
        cs = self._get_reg(regs, "cs")
        return cs is not None and bool(cs & _USER_RPL_MASK)

    # -- walking -------------------------------------------------------------------------------
    def from_registers(self, values: Mapping[str, int],
                       stack: tuple[int, int] | None = None) -> list[Frame]:  # fmt: skip
        """The stack of a CPU from its registers (``ip``, ``sp``, ``bp``, ``cs``, ... by their
        ``pt_regs`` names). ``stack`` (the task's, for the frame-pointer unwinder's bounds) is
        not needed: ORC knows each frame's size, and sp must grow."""
        regs = _Regs(None, values)
        ip, sp, bp = values["ip"], values["sp"], values.get("bp", 0)
        if self._user_mode(regs):
            return [Frame(ip, sp, call=False, user=True)]
        return self._walk(ip, sp, bp, regs, full_regs=True, signal=True)

    def from_inactive_frame(self, thread_sp: int,
                            stack: tuple[int, int] | None = None) -> list[Frame]:  # fmt: skip
        """The stack of a task that is not running: ``thread.sp`` points to the
        ``struct inactive_task_frame`` that ``__switch_to_asm`` pushed."""
        try:
            bp = self.kvirt.u64(thread_sp + self.frame_bp)
            ip = self.kvirt.u64(thread_sp + self.frame_ret)
        except FaultError as exc:
            raise Unavailable(f"the task's saved frame is not in the dump ({exc})") from None
        # A task that never ran returns to ret_from_fork, whose entry describes that very ip.
        signal = ip in self.fork_returns
        return self._walk(ip, thread_sp + self.frame_size, bp, None, full_regs=False,
                          signal=signal)  # fmt: skip

    def _walk(self, ip: int, sp: int, bp: int, regs: _Regs | None, *, full_regs: bool,
              signal: bool) -> list[Frame]:  # fmt: skip
        frames = [Frame(ip, sp, call=not signal)]
        prev_regs: _Regs | None = None
        bp_unsure = False  # bp passed through a function without ORC data
        kvirt = self.kvirt
        for _ in range(MAX_FRAMES - 1):
            if regs is not None and self._user_mode(regs):
                frames[-1] = Frame(ip, sp, call=False, user=True)
                break
            look = ip if signal else ip - 1
            orc = self.orc_find(look)
            if orc is None:
                break  # no ORC data for this code (later kernels guess frame pointers; not us)
            if orc.sp_reg == ORC_REG_UNDEFINED and not orc.end and self._in_core_text(look):
                # A function objtool skipped (STACK_FRAME_NON_STANDARD: __crash_kexec).
                caller = self._caller_of(look, sp)
                if caller is None:
                    break
                ip, sp = caller
                regs, prev_regs, full_regs, signal = None, None, False, False
                bp_unsure = True
                frames.append(Frame(ip, sp, call=True))
                continue
            if orc.sp_reg == ORC_REG_UNDEFINED or orc.type == -1:
                break  # the end of the stack (orc.end), or an error: either way, stop
            if (
                bp_unsure
                and orc.sp_reg in (ORC_REG_BP, ORC_REG_BP_INDIRECT)
                and not sp < bp + orc.sp_offset <= sp + MAX_FRAME_SCAN
            ):
                break  # a frame pointer that may not be this frame's: not followed
            prev_sp = sp
            indirect = orc.sp_reg in (ORC_REG_SP_INDIRECT, ORC_REG_BP_INDIRECT)
            full = regs if full_regs else prev_regs
            if orc.sp_reg == ORC_REG_SP:
                new_sp = sp + orc.sp_offset
            elif orc.sp_reg == ORC_REG_BP:
                new_sp = bp + orc.sp_offset
            elif orc.sp_reg == ORC_REG_SP_INDIRECT:
                new_sp = sp
            elif orc.sp_reg == ORC_REG_BP_INDIRECT:
                new_sp = bp + orc.sp_offset
            elif orc.sp_reg in (ORC_REG_R10, ORC_REG_R13, ORC_REG_DI, ORC_REG_DX):
                name = {ORC_REG_R10: "r10", ORC_REG_R13: "r13", ORC_REG_DI: "di",
                        ORC_REG_DX: "dx"}[orc.sp_reg]  # fmt: skip
                value = self._get_reg(full, name)
                if value is None:
                    break
                new_sp = value
            else:
                break  # unknown base register
            try:
                if indirect:
                    new_sp = kvirt.u64(new_sp)
                    if orc.sp_reg == ORC_REG_SP_INDIRECT:
                        new_sp += orc.sp_offset
                new_sp &= (1 << 64) - 1
                if orc.type == ORC_TYPE_CALL:
                    ip = kvirt.u64(new_sp - 8)
                    sp = new_sp
                    regs, prev_regs, full_regs = None, None, False
                elif orc.type == ORC_TYPE_REGS:
                    ip = kvirt.u64(new_sp + self.regs_off["ip"])
                    sp = kvirt.u64(new_sp + self.regs_off["sp"])
                    regs, prev_regs, full_regs = _Regs(new_sp), None, True
                elif orc.type == ORC_TYPE_REGS_PARTIAL:
                    ip = kvirt.u64(new_sp)  # the IRET frame: ip, cs, flags, sp, ss
                    sp = kvirt.u64(new_sp + self.regs_off["sp"] - self.iret_offset)
                    if full_regs:
                        prev_regs = regs
                    regs, full_regs = _Regs(new_sp - self.iret_offset), False
                else:
                    break
                # the caller's frame pointer
                if orc.bp_reg == ORC_REG_UNDEFINED:
                    value = self._get_reg(regs if full_regs else prev_regs, "bp")
                    if value is not None:
                        bp, bp_unsure = value, False
                elif orc.bp_reg == ORC_REG_PREV_SP:
                    bp, bp_unsure = kvirt.u64(new_sp + orc.bp_offset), False
                elif orc.bp_reg == ORC_REG_BP:
                    bp = kvirt.u64(bp + orc.bp_offset)
                else:
                    break
            except FaultError:
                break
            signal = orc.signal
            switched = indirect or orc.type != ORC_TYPE_CALL
            if sp <= prev_sp and not switched:
                break  # "stack going in the wrong direction": bad data, stop
            frames.append(Frame(ip, sp, call=not signal))
        return frames


# -- naming frames --------------------------------------------------------------------------

#: Labels inside the x86_64 entry code (arch/x86/entry/entry_64.S, entry_64_compat.S: most
#: ``SYM_INNER_LABEL``, a few plain labels) and startup code (arch/x86/kernel/head_64.S) that
#: kallsyms lists like functions. A pc after one of them belongs to the function that encloses
#: it, as the ELF symbol table and debuggers name it (``entry_SYSCALL_64``, not
#: ``entry_SYSCALL_64_after_hwframe``; every CPU's idle stack ends in ``secondary_startup_64``).
ENTRY_INNER_LABELS = frozenset(
    {
        "entry_SYSCALL_64_safe_stack",
        "entry_SYSCALL_64_after_hwframe",
        "syscall_return_via_sysret",
        "entry_SYSRETQ_unsafe_stack",
        "entry_SYSRETQ_end",
        "swapgs_restore_regs_and_return_to_usermode",
        "restore_regs_and_return_to_kernel",
        "early_xen_iret_patch",
        "native_irq_return_iret",
        "native_irq_return_ldt",
        "asm_load_gs_index_gs_change",
        "nested_nmi",
        "nested_nmi_out",
        "first_nmi",
        "repeat_nmi",
        "end_repeat_nmi",
        "nmi_no_fsgsbase",
        "nmi_swapgs",
        "nmi_restore",
        "entry_SYSENTER_compat_after_hwframe",
        "__end_entry_SYSENTER_compat",
        "entry_SYSCALL_compat_safe_stack",
        "entry_SYSCALL_compat_after_hwframe",
        "sysret32_from_system_call",
        "entry_SYSRETL_compat_unsafe_stack",
        "entry_SYSRETL_compat_end",
        "secondary_startup_64_no_verify",
        "common_startup_64",  # newer head_64.S (6.12 has it): where the BSP and the APs go on
    }
)
#: GCC names the pieces it splits off or specialises a function into ``f.cold``,
#: ``f.part.0``, ``f.isra.0``, ``f.constprop.0`` (and combinations; clang's LTO ``f.llvm.N``);
#: they are code of ``f``, and debuggers name their frames ``f``.
_GCC_SUFFIX = re.compile(r"(?:\.(?:cold|part|isra|constprop|lto_priv|localalias|llvm)(?:\.\d+)?)+$")


def linker_marker(name: str) -> bool:
    """scripts/kallsyms.c ``may_be_linker_script_provide_symbol()``: section bounds such as
    ``__irqentry_text_end``, which share their address with a real function."""
    if len(name) < 8 or not name.startswith("__"):
        return False
    return (
        name.startswith(("__start_", "__stop_", "__end_"))
        or name.endswith("_start")
        or name.endswith("_end")
    )


def function_name(symbol_name: str) -> str:
    """The function a kallsyms symbol is code of: GCC's clone/partition suffixes removed."""
    base = _GCC_SUFFIX.sub("", symbol_name)
    return base or symbol_name


class Symbolizer:
    """Names pcs ``function+0xOFF/0xSIZE`` (`` [module]`` for module code).

    OFF and SIZE are relative to the symbol that holds the pc, as the kernel's ``%pB`` prints
    them; the name is that symbol's function (see :func:`function_name`), and a pc after one
    of :data:`ENTRY_INNER_LABELS` is named and measured from the enclosing function.
    """

    def __init__(self, symbols, module_symbol: Callable[[int], tuple[str, int, int, str] | None]
                 | None = None) -> None:  # fmt: skip
        self.symbols = symbols
        self.module_symbol = module_symbol or (lambda addr: None)

    def _aliases(self, address: int) -> list[str]:
        """Names of the symbols at ``address``, in table order (a SymbolTable's lists)."""
        addrs = getattr(self.symbols, "addresses", None)
        names = getattr(self.symbols, "names", None)
        if addrs is None or names is None:
            return []
        i = bisect.bisect_left(addrs, address)
        out: list[str] = []
        while i < len(addrs) and addrs[i] == address and len(out) < 64:
            out.append(names[i])
            i += 1
        return out

    @staticmethod
    def _label(name: str) -> bool:
        return name in ENTRY_INNER_LABELS or linker_marker(name)

    def _core(self, addr: int) -> tuple[str, int, int] | None:
        found = self.symbols.containing(addr)
        if found is None:
            return None
        sym, off, size = found
        name, start, end = sym.name, sym.address, sym.address + size
        for _ in range(8):  # a label: a function at the same address, else the one before
            if not self._label(name):
                break
            real = [n for n in self._aliases(start) if not self._label(n)]
            if real:
                name = real[0]
                break
            prev = self.symbols.containing(start - 1)
            if prev is None:
                break
            name, start = prev[0].name, prev[0].address
        for _ in range(8):  # and forward over the labels that follow inside the function
            nxt = self.symbols.containing(end)
            if nxt is None or nxt[0].address != end or nxt[0].name not in ENTRY_INNER_LABELS:
                break
            if any(not self._label(n) for n in self._aliases(end)):
                break
            end = nxt[0].address + nxt[2]
        return function_name(name), addr - start, end - start

    def name(self, frame: Frame) -> str:
        if frame.user:
            return f"{frame.pc:#x}"
        look = frame.pc - 1 if frame.call else frame.pc
        found = self._core(look)
        if found is not None:
            func, off, size = found
            return f"{func}+{off + (look != frame.pc):#x}/{size:#x}"
        mod = self.module_symbol(look)
        if mod is not None:
            func, off, size, module = mod
            return f"{function_name(func)}+{off + (look != frame.pc):#x}/{size:#x} [{module}]"
        return f"{frame.pc:#x}"

    def format(self, frames: list[Frame]) -> str:
        return "".join(self.name(f) + "\n" for f in frames)
