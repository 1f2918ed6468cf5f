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
