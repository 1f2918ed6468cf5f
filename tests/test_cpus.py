"""Per-CPU registers from NT_PRSTATUS and QEMU notes, ``panic_cpu``, and the ``summary`` file.

Synthetic notes are laid out from ``struct elf_prstatus`` (x86_64) and QEMU's ``QEMUCPUState``;
the real dumps are checked against QEMU's own ``info registers -a`` (``gt/registers.txt``), the
guest's ``/proc/kallsyms`` (``gt/kallsyms.txt``) and ``truth.json``.
"""

from __future__ import annotations

import re
import struct

import pytest

from tests.cpu_notes import prstatus, qemu_state
from vmcorefs.dumpfile.source import NT_PRSTATUS, Note
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.cpus import cpu_states, read_panic_cpu, regs_text
from vmcorefs.kernel.dump import open_dump
from vmcorefs.memory.space import AddressSpace
from vmcorefs.tree import build_tree

NAMES = (
    "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
    "eflags rsp ss fs_base gs_base ds es fs gs"
).split()


def notes(ncpu: int = 2, with_qemu: bool = True) -> list[Note]:
    out = [
        Note("CORE", NT_PRSTATUS, prstatus(100 + i, [i << 8 | r for r in range(27)]))
        for i in range(ncpu)
    ]
    if with_qemu:
        out += [Note("QEMU", 0, qemu_state([0x80050033, 0, 0x1000 + i, 0x3000 + i, 0x750EF0]))
                for i in range(ncpu)]  # fmt: skip
    out.append(Note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\n"))
    return out


def test_regs_file_format() -> None:
    cpus = cpu_states(notes())
    assert [c.index for c in cpus] == [0, 1]
    want = "".join(f"{n} 0x{0x100 | i:016x}\n" for i, n in enumerate(NAMES))
    want += "pid 101\ncr0 0x0000000080050033\ncr2 0x0000000000001001\n"
    want += "cr3 0x0000000000003001\ncr4 0x0000000000750ef0\n"
    assert regs_text(cpus[1], crashed=False) == want
    assert regs_text(cpus[1], crashed=True) == want + "crashed yes\n"
    assert cpus[0].regs["rip"] == 16 and cpus[0].pid == 100
    assert cpus[0].prstatus == notes()[0].desc


def test_without_qemu_notes_there_are_no_control_registers() -> None:
    cpus = cpu_states(notes(with_qemu=False))
    text = regs_text(cpus[0], crashed=False)
    assert text.endswith("gs 0x000000000000001a\npid 100\n")
    # one QEMU note for two CPUs: the pairing is unknown, so none is used
    odd = notes()
    del odd[3]
    assert all(c.crs is None for c in cpu_states(odd))
    # a QEMUCPUState of another version is not read
    other = notes(1)
    other[1] = Note("QEMU", 0, qemu_state([1, 2, 3, 4, 5], version=2))
    assert cpu_states(other)[0].crs is None


def test_short_note_and_no_notes() -> None:
    cpus = cpu_states([Note("CORE", NT_PRSTATUS, prstatus(7, [0] * 27)[:200])])
    assert cpus[0].pid == 7 and cpus[0].regs == {}
    with pytest.raises(Unavailable, match="200 bytes"):
        regs_text(cpus[0], crashed=False)
    with pytest.raises(Unavailable, match="no NT_PRSTATUS"):
        cpu_states([Note("VMCOREINFO", 0, b"")])


class Word(AddressSpace):
    """One s32 at one address."""

    name = "kvirt"

    def __init__(self, addr: int, value: int) -> None:
        self.addr, self.data = addr, struct.pack("<i", value)

    def read(self, addr: int, size: int) -> bytes:
        if self.addr <= addr < self.addr + 4:
            return self.data[addr - self.addr : addr - self.addr + size]
        return b""


def test_read_panic_cpu() -> None:
    addr = 0xFFFFFFFF8244DA20
    assert read_panic_cpu(Word(addr, 1), addr) == 1
    assert read_panic_cpu(Word(addr, -1), addr) == -1  # PANIC_CPU_INVALID
    assert read_panic_cpu(Word(addr, 1), None) is None  # no symbol
    assert read_panic_cpu(Word(addr, 1), addr + 8) is None  # its page is not in the dump


# --- the real dumps ---------------------------------------------------------------------------


class GtSymbols:
    """The guest's own /proc/kallsyms, by name."""

    def __init__(self, path) -> None:
        self.table: dict[str, int] = {}
        for row in path.read_text().splitlines():
            addr, _type, name = row.split()[:3]
            self.table.setdefault(name, int(addr, 16))

    def get(self, name: str) -> int | None:
        return self.table.get(name)


def qemu_registers(text: str) -> dict[int, dict[str, int]]:
    """rip, rsp, cr3 per CPU from QEMU's ``info registers -a``."""
    out: dict[int, dict[str, int]] = {}
    cpu = None
    for row in text.splitlines():
        m = re.match(r"\s*CPU#(\d+)", row)
        if m:
            cpu = out.setdefault(int(m.group(1)), {})
        elif cpu is not None:
            for name, value in re.findall(r"\b(RIP|RSP|CR3)=([0-9a-f]+)", row):
                cpu.setdefault(name.lower(), int(value, 16))
    return out


def _values(text: str) -> dict[str, str]:
    return dict(row.split(" ", 1) for row in text.splitlines())


def dump_paths(case):
    """Every dump file of the case that is present (ELF, kdump, flattened)."""
    paths = [case.root / name for name in case.dump_files()]
    return [p for p in paths if p.exists()]


@pytest.mark.realdump
def test_real_cpus_and_summary(case) -> None:
    """Every dump file of the case, opened once: registers, crashed CPU, summary."""
    qemu = qemu_registers(case.file("gt/registers.txt").read_text())
    assert len(qemu) == case.truth["ncpus"]
    gt = GtSymbols(case.file("gt/kallsyms.txt"))
    for path in dump_paths(case):
        with open_dump(str(path)) as dump:
            tree = build_tree(dump)
            check_registers(tree, qemu, path.name)
            assert dump.symbols.get("panic_cpu") == gt.get("panic_cpu")  # decoded from the dump
            check_crashed(tree, case.truth["crashed_cpu"], path.name)
            check_summary(tree, case.truth, path.name)


def check_registers(tree, qemu: dict[int, dict[str, int]], name: str) -> None:
    assert sorted(tree.lookup("cpus").entries()) == [str(i) for i in range(len(qemu))]
    for cpu, want in qemu.items():
        regs = _values(tree.lookup(f"cpus/{cpu}/regs").read(0, 4096).decode())
        for reg, value in want.items():
            assert int(regs[reg], 16) == value, (name, cpu, reg)
        raw = tree.lookup(f"cpus/{cpu}/prstatus").read(0, 4096)
        assert len(raw) == 336
        assert regs["pid"] == str(struct.unpack_from("<i", raw, 32)[0])


def check_crashed(tree, want: int | None, name: str) -> None:
    crashed = [
        n
        for n in tree.lookup("cpus").entries()
        if tree.lookup(f"cpus/{n}/regs").read(0, 4096).endswith(b"crashed yes\n")
    ]
    assert crashed == ([] if want is None else [str(want)]), name


def check_summary(tree, t: dict, name: str) -> None:
    facts = t["files"][name]
    text = tree.lookup("summary").read(0, 4096).decode()
    lines = dict(row.split(": ", 1) for row in text.splitlines())
    assert list(lines)[:4] == ["release", "crash time", "reason", "CPUs"]
    assert lines["release"] == t["osrelease"]
    if "crash_reason" in t:  # the first line of the last panic or oops report
        assert lines["reason"] == (t["crash_reason"] or lines["reason"])
        assert lines["reason"].startswith("unavailable: no crash") == (t["crash_reason"] is None)
    assert lines["CPUs"] == str(t["ncpus"])
    assert lines["crash time"] == "unknown"  # QEMU's dumps carry no CRASHTIME
    want = t["crashed_cpu"]
    assert lines["panic CPU"].startswith("none" if want is None else str(want))
    assert lines["compression"] == facts["compression"]
    if facts["format"] == "elf":
        assert lines["format"] == "ELF64 core" and lines["dump level"] == "unknown"
        ram = sum(end - start for start, end in t["ram_ranges"])
        assert lines["RAM"].startswith(f"{ram} bytes ")
    else:  # the kdump header records the dump level and current_cpu
        assert lines["dump level"] == str(facts["dump_level"])
        if "kdump_header" in facts:  # truth.json parses some of the headers
            assert lines["kdump current_cpu"] == str(facts["kdump_header"]["current_cpu"])
    assert lines["paging levels"] == ("5" if t["pgtable_l5"] else "4")
    assert int(lines["KASLR offset"], 16) == t["kerneloffset"]
    phys_base = lines["phys_base"]
    sign = -1 if phys_base.startswith("-") else 1
    assert sign * int(phys_base.lstrip("-"), 16) == t["phys_base"]
