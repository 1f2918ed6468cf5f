"""Recognise a dump's format by its content (never by its name) and open it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DumpError
from .source import DumpFile, PhysicalSource

ELF_MAGIC = b"\x7fELF"
KDUMP_SIGNATURES = (b"KDUMP   ", b"DISKDUMP")
FLATTENED_SIGNATURE = b"makedumpfile"
ET_CORE = 4  # include/uapi/linux/elf.h


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


@dataclass(frozen=True)
class SplitPart:
    """One part of a split dump as its headers name it: ``set_key`` is what every part of one
    set shares (``split.py`` checks the set in full when it is opened)."""

    set_key: tuple
    start_pfn: int
    end_pfn: int


@dataclass(frozen=True)
class Probe:
    """What a look at a file's headers tells: a dump of this ``kind``, maybe one split part."""

    path: str
    kind: str  #: "elf", "kdump" or "flattened"
    split: SplitPart | None = None


def probe(path: str) -> Probe | None:
    """Whether ``path`` is a crash dump, from its headers only (a folder scan calls this for
    every file): None for anything else (text, another file type, an ELF file that is no core,
    a core without VMCOREINFO such as a process's); DumpError for a file that announces a dump
    but whose headers are broken, or that cannot be read."""
    file = DumpFile(path)
    try:
        try:
            kind = sniff(file)
        except DumpError:
            return None  # empty, text or no signature: not a dump
        if kind == "elf":
            head = file.pread(0, 18)
            order = "big" if head[5:6] == b"\x02" else "little"
            if len(head) < 18 or int.from_bytes(head[16:18], order) != ET_CORE:
                return None
            from .elf import ElfSource

            if ElfSource(file).vmcoreinfo_raw() is None:
                return None
            return Probe(path, kind)
        if kind == "kdump":
            from .kdump import MAX_VMCOREINFO, read_headers, split_range

            h, sub = read_headers(file)
            pfns = split_range(h, sub)
            if pfns is None:
                return Probe(path, kind)
            key = (h.signature, h.utsname, h.timestamp_sec, h.timestamp_usec, h.block_size)
            key += (h.header_version, h.max_mapnr, sub.max_mapnr_64, sub.dump_level)
            if h.header_version >= 3 and 0 < sub.size_vmcoreinfo <= MAX_VMCOREINFO:
                # Tells apart two crashes of one kernel (its CRASHTIME) where makedumpfile
                # wrote no time in the header (1.7.2 writes 0).
                note = file.pread(sub.offset_vmcoreinfo, sub.size_vmcoreinfo)
                key += (hashlib.sha256(note).digest(),)
            return Probe(path, kind, SplitPart(key, *pfns))
        return Probe(path, kind)  # flattened: its records are indexed when it is opened
    finally:
        file.close()
