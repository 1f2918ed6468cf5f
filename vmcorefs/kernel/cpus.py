"""Where each CPU was: the registers of the dump's ``NT_PRSTATUS`` notes (and QEMU's notes).

Each CPU's registers come from one ``CORE``/``NT_PRSTATUS`` note: the kernel writes them at
crash time (``crash_save_cpu``), QEMU at ``dump-guest-memory``. CPU N is the N-th such note,
in note order. QEMU adds one ``QEMU`` note per CPU (``QEMUCPUState``), in the same order, which
also holds the control registers. The CPU that panicked is the kernel's own ``panic_cpu``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace

#: include/uapi/linux/elf.h: the note type of ``struct elf_prstatus``.
NT_PRSTATUS = 1
# include/uapi/linux/elfcore.h, x86_64: struct elf_prstatus is 336 bytes; pr_pid (pid_t) at 32,
# pr_reg (elf_gregset_t: struct user_regs_struct, arch/x86/include/asm/user_64.h) at 112.
ELF_PRSTATUS_SIZE = 336
PR_PID_OFFSET = 32
PR_REG_OFFSET = 112
#: struct user_regs_struct, in order.
USER_REGS = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
    "eflags rsp ss fs_base gs_base ds es fs gs"
).split()
_PR_REG = struct.Struct(f"<{len(USER_REGS)}Q")

# QEMU target/i386/arch_dump.c: struct QEMUCPUState, version 1 (QEMUCPUSTATE_VERSION). Two u32
# (version, size), 18 u64 (rax..r15, rip, rflags), 10 QEMUCPUSegment of 24 bytes, then cr[5].
QEMU_NOTE_NAME = "QEMU"
QEMUCPUSTATE_VERSION = 1
QEMU_CR_OFFSET = 8 + 18 * 8 + 10 * 24
_QEMU_CR = struct.Struct("<5Q")
#: The control registers shown, by index into cr[5] (cr1 is reserved).
CONTROL_REGS = {"cr0": 0, "cr2": 2, "cr3": 3, "cr4": 4}

#: include/linux/panic.h: panic_cpu holds this while no CPU panics.
PANIC_CPU_INVALID = -1


@dataclass(frozen=True)
class CpuState:
    """One CPU's saved state. ``regs`` is empty when the note is too short to hold pr_reg."""

    index: int
    prstatus: bytes  #: the raw NT_PRSTATUS descriptor
    pid: int | None  #: pr_pid: the task that ran on the CPU (0: idle)
    regs: dict[str, int] = field(default_factory=dict)  #: user_regs_struct names → values
    crs: dict[str, int] | None = None  #: cr0 cr2 cr3 cr4 where a QEMU note gives them

    @property
    def problem(self) -> str | None:
        """Why this CPU's registers cannot be shown, or None."""
        if not self.regs:
            return (
                f"the NT_PRSTATUS note of CPU {self.index} has {len(self.prstatus)} bytes, "
                f"{PR_REG_OFFSET + _PR_REG.size} needed for its registers"
            )
        return None


def _qemu_crs(desc: bytes) -> dict[str, int] | None:
    """cr0 cr2 cr3 cr4 of a QEMUCPUState, or None when it is not a version 1 state."""
    if len(desc) < QEMU_CR_OFFSET + _QEMU_CR.size:
        return None
    version, size = struct.unpack_from("<II", desc, 0)
    if version != QEMUCPUSTATE_VERSION or size < QEMU_CR_OFFSET + _QEMU_CR.size:
        return None
    cr = _QEMU_CR.unpack_from(desc, QEMU_CR_OFFSET)
    return {name: cr[i] for name, i in CONTROL_REGS.items()}


class NoteLike(Protocol):
    """An ELF note as the dump layer parsed it (``dumpfile.source.Note``)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> int: ...
    @property
    def desc(self) -> bytes: ...


def cpu_states(notes: Iterable[NoteLike]) -> list[CpuState]:
    """The CPUs of a dump, from its notes (``PhysicalSource.notes()``), in note order."""
    notes = list(notes)
    prstatus = [n for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS]
    qemu = [n for n in notes if n.name == QEMU_NOTE_NAME]
    if not prstatus:
        raise Unavailable("the dump has no NT_PRSTATUS notes")
    # QEMU writes all CORE notes, then all QEMU notes, CPU by CPU: pair them by position, and
    # only when there is one QEMU note per CPU.
    crs: list[dict[str, int] | None] = [None] * len(prstatus)
    if len(qemu) == len(prstatus):
        crs = [_qemu_crs(n.desc) for n in qemu]
    out = []
    for i, note in enumerate(prstatus):
        desc = note.desc
        pid = struct.unpack_from("<i", desc, PR_PID_OFFSET)[0] if len(desc) >= 36 else None
        regs: dict[str, int] = {}
        if len(desc) >= PR_REG_OFFSET + _PR_REG.size:
            regs = dict(zip(USER_REGS, _PR_REG.unpack_from(desc, PR_REG_OFFSET), strict=True))
        out.append(CpuState(i, desc, pid, regs, crs[i]))
    return out


def read_panic_cpu(kvirt: AddressSpace, address: int | None) -> int | None:
    """The value of ``atomic_t panic_cpu`` at ``address`` (-1: no CPU panicked), or None when
    the dump does not tell (no address for the symbol, or its page is not in the dump)."""
    if address is None:
        return None
    try:
        return kvirt.s32(address)
    except FaultError:
        return None


def regs_text(cpu: CpuState, crashed: bool) -> str:
    """``cpus/N/regs``: ``name 0x%016x`` per register, ``pid N``, the crs, ``crashed yes``."""
    if cpu.problem:
        raise Unavailable(cpu.problem)
    lines = [f"{name} 0x{cpu.regs[name]:016x}" for name in USER_REGS]
    lines.append(f"pid {cpu.pid}")
    if cpu.crs is not None:
        lines += [f"{name} 0x{value:016x}" for name, value in cpu.crs.items()]
    if crashed:
        lines.append("crashed yes")
    return "\n".join(lines) + "\n"
