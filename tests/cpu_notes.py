"""NT_PRSTATUS and QEMU note payloads, laid out as the kernel and QEMU write them (x86_64)."""

from __future__ import annotations

import struct


def prstatus(pid: int, regs: list[int]) -> bytes:
    """x86_64 struct elf_prstatus: pr_pid at 32, pr_reg (27 u64) at 112, 336 bytes."""
    desc = bytearray(336)
    struct.pack_into("<i", desc, 32, pid)
    struct.pack_into("<27Q", desc, 112, *regs)
    return bytes(desc)


def qemu_state(crs: list[int], version: int = 1) -> bytes:
    """QEMUCPUState: version, size, 18 u64 registers, 10 segments of 24 bytes, cr[5]."""
    desc = bytearray(440)
    struct.pack_into("<II", desc, 0, version, 440)
    struct.pack_into("<5Q", desc, 8 + 18 * 8 + 10 * 24, *crs)
    return bytes(desc)
