"""The pure parts of tools/make-sample-vmcore: QEMU's ELF header fix and the initramfs writer.

The whole script needs QEMU and a kernel package (about a minute); these parts decide whether
makedumpfile and the guest's kernel can read what it writes, so they are checked here against
pyelftools and the cpio "newc" format as the kernel documents it
(Documentation/driver-api/early-userspace/buffer-format.rst).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import lzma
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "make-sample-vmcore"


@pytest.fixture(scope="module")
def tool():
    loader = importlib.machinery.SourceFileLoader("make_sample_vmcore", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def qemu72_core() -> tuple[bytes, list[tuple[int, int, int]]]:
    """An ELF core laid out as QEMU 7.2 writes it: section headers at 64, then 3 phdrs at 192.

    Returns the file and (p_type, p_offset, p_filesz) of its segments.
    """
    notes = b"\x0b\0\0\0\x04\0\0\0\0\0\0\0VMCOREINFO\0\0" + b"A=1\n"
    ram = bytes(range(256)) * 16
    data_start = 64 + 2 * 64 + 3 * 56  # 360, as in QEMU's files
    segs = [(4, data_start, len(notes)), (1, data_start + len(notes), len(ram))]
    segs.append((1, segs[1][1] + len(ram), 4096))
    shstrtab = b"\0.shstrtab\0"
    shstr_off = segs[2][1] + 4096
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH",
        b"\x7fELF\x02\x01\x01" + bytes(9),
        4,  # ET_CORE
        62,  # EM_X86_64
        1,
        0,
        192,  # e_phoff
        64,  # e_shoff
        0,
        8,  # e_ehsize as QEMU 7.2 writes it
        56,
        3,
        64,
        2,
        1,
    )
    shdrs = bytes(64) + struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    phdrs = b"".join(
        struct.pack("<IIQQQQQQ", t, 0, off, 0, i * 0x100000, size, size, 0)
        for i, (t, off, size) in enumerate(segs)
    )
    body = notes + ram + bytes(range(1, 256)) * 16 + b"\x01" * 16 + shstrtab
    return ehdr + shdrs + phdrs + body, segs


def test_normalised_header_puts_phdrs_at_64_and_moves_no_data(tool, tmp_path):
    raw, segs = qemu72_core()
    path = tmp_path / "core"
    path.write_bytes(raw)
    tool.normalise_qemu_elf_header(path)
    fixed = path.read_bytes()
    assert len(fixed) == len(raw)
    assert fixed[360:] == raw[360:]  # everything the tables describe stays where it was
    elf = ELFFile(io.BytesIO(fixed))
    assert elf.header.e_phoff == 64 and elf.header.e_ehsize == 64
    assert elf.header.e_shoff == 64 + 3 * 56
    got = [(s.header.p_type, s.header.p_offset, s.header.p_filesz) for s in elf.iter_segments()]
    types = {4: "PT_NOTE", 1: "PT_LOAD"}
    assert got == [(types[t], off, size) for t, off, size in segs]
    assert [s.name for s in elf.iter_sections()] == ["", ".shstrtab"]
    assert tool.elf_vmcoreinfo(path) == b"A=1\n"
    # A second run leaves a normal header alone.
    tool.normalise_qemu_elf_header(path)
    assert path.read_bytes() == fixed


def parse_newc(data: bytes) -> list[tuple[str, int, bytes, int]]:
    """(name, mode, data, rdev) of each member, by the kernel's buffer-format description."""
    out = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmajor, rminor, namesize = f[1], f[6], f[9], f[10], f[11]
        name_end = pos + 110 + namesize
        name = data[pos + 110 : name_end - 1].decode()
        assert data[name_end - 1] == 0
        start = (name_end + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, data[start : start + filesize], (rmajor << 8) | rminor))
        pos = (start + filesize + 3) & ~3


def test_initramfs_archive_is_newc(tool):
    entries = [
        ("bin", 0o040755, b"", 0),
        ("dev/console", 0o020600, b"", (5 << 8) | 1),
        ("init", 0o100755, b"#!/bin/busybox sh\n", 0),
        ("odd", 0o100644, b"12345", 0),
    ]
    archive = tool.cpio_newc(entries)
    assert len(archive) % 4 == 0
    assert parse_newc(archive) == entries


def test_init_script_loads_fw_cfg_before_the_marker_and_crashes_last(tool):
    script = tool.INIT_SCRIPT
    assert script.startswith("#!/bin/busybox sh\n")
    assert script.index("insmod /qemu_fw_cfg.ko") < script.index('"@MARKER@" > /dev/kmsg')
    assert script.index("echo GT-DONE") < script.index("/proc/sysrq-trigger")
    for name in tool.GT_FILES:
        assert f"gt {name} " in script


# --- --kexec: what the host does with the crash kernel's disk --------------------------------


def kexec_core(text_paddr: int, text_pages: int, ram: list[tuple[int, int]]) -> bytes:
    """An ELF laid out as a crash kernel's /proc/vmcore: program headers at 64, a PT_NOTE, the
    kernel text's PT_LOAD (p_vaddr in the kernel image) and the direct map's, whose pages
    include the text's."""
    loads = [(0xFFFFFFFF81000000, text_paddr, text_pages * 4096)]
    loads += [(0xFFFF888000000000 + start, start, end - start) for start, end in ram]
    nph = 1 + len(loads)
    off = 64 + 56 * nph
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, 16, 16, 0)
    off += 16
    for vaddr, paddr, size in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, size, size, 0)
        off += size
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 4, 62, 1, 0, 64, 0, 0, 64, 56,
        nph, 64, 0, 0,
    )  # fmt: skip
    return ehdr + phdrs + bytes(off - 64 - len(phdrs))


def test_disk_is_cut_to_the_elfs_end(tool, tmp_path):
    core = kexec_core(0x3000000, 4, [(0x100000, 0x200000), (0x3000000, 0x3008000)])
    disk = tmp_path / "disk.raw"
    disk.write_bytes(core + b"\xee" * 5000)  # the rest of the disk
    vmcore = tmp_path / "vmcore.elf"
    assert tool.cut_to_elf(disk, vmcore) == len(core)
    assert vmcore.read_bytes() == core and not disk.exists()
    elf = ELFFile(io.BytesIO(core))
    ends = [s.header.p_offset + s.header.p_filesz for s in elf.iter_segments()]
    assert max(ends) == len(core)
    assert [load[2] for load in tool.elf_loads(vmcore)] == [0x3000000, 0x100000, 0x3000000]


def test_a_disk_without_an_elf_is_refused(tool, tmp_path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(8192))
    with pytest.raises(SystemExit, match="ELF"):
        tool.cut_to_elf(disk, tmp_path / "vmcore.elf")


def test_pages_two_segments_hold_are_counted_once(tool):
    # the text (4 pages at 0x3000000) lies in the second RAM range (8 pages from 0x3000000)
    ram = [(0x100000, 0x200000), (0x3000000, 0x3008000)]
    loads = [(0, 0, p, 0, n) for p, n in [(0x3000000, 0x4000)] + [(a, b - a) for a, b in ram]]
    assert tool.page_overlap(loads) == 4
    assert tool.page_overlap(loads[1:]) == 0
    # a text segment that sticks out of RAM overlaps only where it lies inside
    assert tool.page_overlap([(0, 0, 0x3006000, 0, 0x4000), *loads[1:]]) == 2


def test_crash_facts_come_from_after_the_announcement(tool):
    console = (
        "[    1.0] CPU: 0 PID: 7 Comm: early Not tainted\r\n"  # an earlier warning's
        "init: kexec load: kexec -p -s\r\n"
        "[   24.1] vmcorefs-sample: triggering the oops on CPU 1\r\n"
        "[   24.2] BUG: kernel NULL pointer dereference, address: 0000000000000018\r\n"
        "[   24.3] CPU: 1 UID: 0 PID: 1 Comm: init Kdump: loaded Tainted: G OE\r\n"
        "[   24.4] Kernel panic - not syncing: Fatal exception\r\n"
    )
    assert tool.console_crash(console) == {
        "crashed_cpu": 1,
        "crashed_pid": 1,
        "crashed_comm": "init",
        "crash_reason": "BUG: kernel NULL pointer dereference, address: 0000000000000018",
    }


def modinfo_ko(depends: str) -> bytes:
    return b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1\0"


def test_crash_modules_come_after_their_dependencies_and_built_ins_are_skipped(tool, tmp_path):
    mods = tmp_path / "lib" / "modules" / "6.1.0-1-amd64"
    drivers = mods / "kernel" / "drivers"
    drivers.mkdir(parents=True)
    (drivers / "virtio_blk.ko").write_bytes(modinfo_ko("virtio,virtio_ring"))
    (drivers / "virtio_ring.ko").write_bytes(modinfo_ko(""))
    (drivers / "virtio-pci.ko.xz").write_bytes(lzma.compress(modinfo_ko("virtio")))
    (mods / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    order = tool.modules_with_depends(tmp_path, ("virtio_pci", "virtio_blk"))
    assert [name for name, _ in order] == ["virtio_pci", "virtio_ring", "virtio_blk"]
    assert order[0][1] == modinfo_ko("virtio")  # decompressed: busybox insmod takes plain .ko
    with pytest.raises(SystemExit, match="0 modules missing"):
        tool.modules_with_depends(tmp_path, ("missing",))


def test_initramfs_folders_come_before_their_files(tool):
    entries = tool.with_parents(
        [("lib/x86_64-linux-gnu/libc.so.6", 0o100755, b"x", 0), ("lib64/ld.so", 0o100755, b"", 0)]
    )
    assert [e[0] for e in entries] == [
        "lib", "lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu/libc.so.6", "lib64", "lib64/ld.so",
    ]  # fmt: skip
    assert parse_newc(tool.cpio_newc(entries)) == entries


def test_kexec_init_loads_the_crash_kernel_before_the_ground_truth_and_crashes_last(tool):
    for mode in ("panic", "oops"):
        script = tool.kexec_init_script(mode, "vmcorefs-sample-marker: 00")
        assert "@" not in script.replace("$@", "")  # every placeholder filled in
        load = script.index("kexec -p -s /boot/vmlinuz")
        assert load < script.index("kexec -p /boot/vmlinuz") < script.index("echo GT-DONE")
        assert f'--append="{tool.CRASH_CMDLINE}"' in script
        trigger = (
            script.index("/proc/sysrq-trigger")
            if mode == "panic"
            else script.index("> /sys/kernel/debug/vmcorefs_oops")
        )
        assert script.index("taskset -p 2 $$") < trigger
        assert script.index("taskset 4 dd if=/dev/zero of=/dev/null") < trigger
        assert script.index("echo GT-DONE") < trigger
    crash = tool.CRASH_INIT_SCRIPT
    assert crash.index("insmod") < crash.index("dd if=/proc/vmcore of=/dev/vda")
    assert crash.index("dd if=/proc/vmcore") < crash.index("poweroff -f")
