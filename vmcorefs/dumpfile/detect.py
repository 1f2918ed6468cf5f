"""Recognise a dump's format by its content (never by its name) and open it."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DumpError
from .source import DumpFile, PhysicalSource

ELF_MAGIC = b"\x7fELF"
KDUMP_SIGNATURES = (b"KDUMP   ", b"DISKDUMP")
FLATTENED_SIGNATURE = b"makedumpfile"


def sniff(file: DumpFile) -> str:
    """``"elf"``, ``"kdump"`` or ``"flattened"``; DumpError for anything else."""
    if file.size == 0:
        raise DumpError(file.path, "empty file")
    head = file.pread(0, 16)
    if head.startswith(ELF_MAGIC):
        return "elf"
    if head[:8] in KDUMP_SIGNATURES:
        return "kdump"
    if head.startswith(FLATTENED_SIGNATURE):
        return "flattened"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        raise DumpError(file.path, "a text file, not a crash dump")
    raise DumpError(file.path, "not a crash dump: no ELF, kdump or flattened signature")


def open_one(path: str, *, cache_size_mib: int = 64) -> PhysicalSource:
    """Open one dump file of any supported format."""
    file = DumpFile(path)
    try:
        kind = sniff(file)
        if kind == "elf":
            from .elf import ElfSource

            return ElfSource(file)
        if kind == "kdump":
            from .kdump import KdumpSource

            return KdumpSource(file, cache_size_mib=cache_size_mib)
        from .flattened import open_flattened

        return open_flattened(file, cache_size_mib=cache_size_mib)
    except BaseException:
        file.close()
        raise


def open_source(paths: Sequence[str], *, cache_size_mib: int = 64) -> PhysicalSource:
    """Open a dump: one file, or every part of a split dump (in any order)."""
    if not paths:
        raise ValueError("no dump file given")
    if len(paths) == 1:
        return open_one(paths[0], cache_size_mib=cache_size_mib)
    from .split import open_split

    return open_split(list(paths), cache_size_mib=cache_size_mib)
