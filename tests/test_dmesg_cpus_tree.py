"""dmesg, cpus/ and summary end to end: a synthetic ELF core opened like any dump.

The core (tests/elfbuilder.py) maps a kernel image with crafted page tables, holds a 4.19-style
log_buf, two CPUs' NT_PRSTATUS and QEMU notes, and ``panic_cpu`` named by a VMCOREINFO SYMBOL()
key (the merged symbol table takes those when the dump has no kallsyms).
"""

from __future__ import annotations

import struct

from tests.cpu_notes import prstatus, qemu_state
from tests.elfbuilder import ElfCore, LoadSegment, PageTables, PhysImage, note, vmcoreinfo_text
from tests.printk_layouts import LogBuf
from vmcorefs.dumpfile.source import NT_PRSTATUS
from vmcorefs.kernel.dump import open_dump
from vmcorefs.tree import Directory, build_tree

IMAGE_VA = 0xFFFFFFFF81000000
IMAGE_PA = 0x200000
PANIC_CPU_VA = IMAGE_VA + 0x40
LOG_VA = IMAGE_VA + 0x200000  # in a second 2 MiB page, left out of the core on request
LOG_PA = 0x400000


def make_core(tmp_path, *, panic_cpu: int = 1, with_log: bool = True, with_cpus: bool = True):
    mem = PhysImage()
    pt = PageTables(mem)
    pt.map(IMAGE_VA, IMAGE_PA, 1 << 21)
    pt.map(LOG_VA, LOG_PA, 1 << 21)
    log = LogBuf(2048)
    log.add(b"Linux version 4.19.0-test", ts=0)
    log.add(b"panic: oops\nsecond line", ts=12_345_678_901)
    for va, data in log.regions(LOG_VA):
        mem.write(LOG_PA + va - LOG_VA, data)
    mem.write(IMAGE_PA + PANIC_CPU_VA - IMAGE_VA, struct.pack("<i", panic_cpu))
    keys = {k: str(v) for k, v in log.keys(LOG_VA).items()}
    keys["SYMBOL(panic_cpu)"] = f"{PANIC_CPU_VA:x}"
    keys["OSRELEASE"] = "4.19.0-test"
    core = ElfCore()
    if with_cpus:
        for i in range(2):
            regs = [0x1111 * (i + 1)] * 27
            core.notes.append(note(b"CORE", NT_PRSTATUS, prstatus(i + 1, regs)))
        for i in range(2):
            core.notes.append(note(b"QEMU", 0, qemu_state([0x80050033, 0, 0, 0x5000 + i, 0])))
    core.notes.append(note(b"VMCOREINFO", 0, vmcoreinfo_text(pt, extra=keys)))
    core.segments.append(LoadSegment(0, mem.range_bytes(0, LOG_PA)))
    if with_log:
        core.segments.append(LoadSegment(LOG_PA, mem.range_bytes(LOG_PA, LOG_PA + 0x200000)))
    path = tmp_path / "core.elf"
    path.write_bytes(core.build())
    return path


def read(tree, path: str) -> bytes:
    node = tree.lookup(path)
    data = node.read(0, 1 << 20)
    assert node.size() == len(data)
    return data


def test_dmesg_cpus_summary(tmp_path) -> None:
    with open_dump(str(make_core(tmp_path))) as dump:
        tree = build_tree(dump)
        assert read(tree, "dmesg") == (
            b"[    0.000000] Linux version 4.19.0-test\n"
            b"[   12.345678] panic: oops\n               second line\n"
        )
        assert sorted(tree.lookup("cpus").entries()) == ["0", "1"]
        regs0 = read(tree, "cpus/0/regs").decode()
        regs1 = read(tree, "cpus/1/regs").decode()
        assert regs0.startswith("r15 0x0000000000001111\n")
        assert "pid 1\ncr0 0x0000000080050033\n" in regs0
        assert regs0.endswith("cr4 0x0000000000000000\n")
        assert regs1.endswith("cr3 0x0000000000005001\ncr4 0x0000000000000000\ncrashed yes\n")
        assert len(read(tree, "cpus/1/prstatus")) == 336
        summary = read(tree, "summary").decode()
        assert "release: 4.19.0-test\n" in summary
        assert "CPUs: 2\n" in summary and "panic CPU: 1\n" in summary
        assert "paging levels: 4\n" in summary and "KASLR offset: 0x0\n" in summary


def test_no_panic_no_notes_no_log(tmp_path) -> None:
    core = make_core(tmp_path, panic_cpu=-1, with_log=False, with_cpus=False)
    with open_dump(str(core)) as dump:
        tree = build_tree(dump)
        # log_first_idx, the first variable read: mapped past the end of the 4 MiB of phys.
        want = b"unavailable: kvirt 0xffffffff81200010: absent: past the end of phys (0x400000)\n"
        assert read(tree, "dmesg") == want
        cpus = tree.lookup("cpus")
        assert isinstance(cpus, Directory) and list(cpus.entries()) == ["unavailable"]
        assert read(tree, "cpus/unavailable") == b"unavailable: the dump has no NT_PRSTATUS notes\n"
        summary = read(tree, "summary").decode()
        assert "CPUs: unknown\n" in summary and "panic CPU: none" in summary
