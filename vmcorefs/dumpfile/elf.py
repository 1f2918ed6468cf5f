"""ELF64 core files: QEMU ``dump-guest-memory``, kexec ``/proc/vmcore`` copies, makedumpfile -E.

pyelftools parses the header; the program headers are read with ``struct`` (a core may have a
million: makedumpfile -E writes one per run of dumped pages), counted as the ELF specification
says (PN_XNUM: :class:`HeaderCounts`); the notes go through the one notes parser that kdump
files use too (:func:`~vmcorefs.dumpfile.source.parse_notes`).

QEMU 7.2 writes ``e_ehsize = 8`` and puts the program headers at ``e_phoff = 192`` (after the
section headers): the header size is not trusted, ``e_phoff`` is honoured.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import CorruptError, DumpError, FaultError
from .damage import Truncation
from .source import (
    DumpFile,
    FileExtent,
    Note,
    PhysicalSource,
    Piece,
    ReadableFile,
    SourceInfo,
    parse_notes,
)

ELF_MAGIC = b"\x7fELF"
EHDR_SIZE = 64
PHDR_SIZE = 56
SHDR_SIZE = 64
# include/uapi/linux/elf.h
PT_LOAD = 1
PT_NOTE = 4
#: e_phnum when there are 0xffff program headers or more: section header 0's sh_info counts them.
PN_XNUM = 0xFFFF
#: e_shstrndx when the index is 0xff00 or more: section header 0's sh_link holds it.
SHN_XINDEX = 0xFFFF
#: Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
_PHDR = struct.Struct("<IIQQQQQQ")
#: Elf64_Shdr: sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
#: sh_addralign, sh_entsize.
_SHDR = struct.Struct("<IIQQQQIIQQ")
#: Program headers read at once (bytes): a table of a million is read in pieces.
PHDR_READ = 1 << 20
#: A note segment larger than this is corrupt (real ones are a few KiB per CPU).
MAX_NOTE_SEGMENT = 64 << 20
MAX_PHNUM = 1 << 20
#: x86_64's architectural limit of physical addresses (MAXPHYADDR <= 52): a PT_LOAD ending past
#: it is corrupt (and ``phys`` would need an st_size beyond what stat can hold).
MAX_PHYS_END = 1 << 52

_MACHINES = {
    "EM_386": "i386",
    "EM_AARCH64": "aarch64",
    "EM_ARM": "arm",
    "EM_PPC64": "ppc64",
    "EM_PPC": "ppc",
    "EM_S390": "s390",
    "EM_RISCV": "riscv",
    "EM_MIPS": "mips",
    "EM_LOONGARCH": "loongarch",
    "EM_SPARCV9": "sparc64",
}


@dataclass(frozen=True)
class HeaderCounts:
    """``e_phnum``, ``e_shnum`` and ``e_shstrndx`` as the ELF specification reads them.

    Past 0xfffe program headers ``e_phnum`` is PN_XNUM and section header 0's ``sh_info`` holds
    the count (makedumpfile and the kernel's core dumps write it so); past 0xfeff sections
    ``e_shnum`` is 0 and ``sh_size`` holds the count, and ``e_shstrndx`` is SHN_XINDEX with the
    index in ``sh_link``. A core's sections are not used: where section header 0 cannot be read
    their counts are None, but a PN_XNUM without it is refused (the program headers cannot be
    counted).
    """

    phnum: int
    shnum: int | None
    shstrndx: int | None
    #: Whether e_phnum was PN_XNUM (the count came from section header 0).
    phnum_extended: bool = False


def header_counts(file: ReadableFile, ehdr) -> HeaderCounts:
    """The counts of an ELF64 header (pyelftools' parsed ``ehdr``), escapes resolved."""
    phnum, shnum, shstrndx = ehdr["e_phnum"], ehdr["e_shnum"], ehdr["e_shstrndx"]
    shoff, shentsize = ehdr["e_shoff"], ehdr["e_shentsize"]
    shnum_escaped = shnum == 0 and shoff != 0  # e_shnum 0 without a table is no escape
    if phnum != PN_XNUM and not shnum_escaped and shstrndx != SHN_XINDEX:
        return HeaderCounts(phnum, shnum, shstrndx)
    sh0 = None
    if shoff and shentsize >= SHDR_SIZE and shoff + SHDR_SIZE <= file.size:
        sh0 = _SHDR.unpack(file.pread_exact(shoff, SHDR_SIZE, "section header 0"))
    if phnum == PN_XNUM:
        if sh0 is None:
            raise DumpError(
                file.path,
                "corrupt ELF header: e_phnum is PN_XNUM (0xffff) but section header 0, which "
                f"holds the count, is not in the file (e_shoff {shoff:#x}, e_shentsize "
                f"{shentsize})",
            )
        phnum = sh0[7]  # sh_info
    if shnum_escaped:
        shnum = sh0[5] if sh0 is not None else None  # sh_size
    if shstrndx == SHN_XINDEX:
        shstrndx = sh0[6] if sh0 is not None else None  # sh_link
    return HeaderCounts(phnum, shnum, shstrndx, ehdr["e_phnum"] == PN_XNUM)


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: physical ``[start, start+memsz)``; file bytes for the first ``filesz``."""

    start: int
    memsz: int
    filesz: int
    offset: int

    @property
    def end(self) -> int:
        return self.start + self.memsz


class ElfSource(PhysicalSource):
    """Physical memory from the PT_LOAD segments of an ELF64 x86_64 core."""

    def __init__(self, file: DumpFile) -> None:
        self.file = file
        self.paths = [file.path]
        path = file.path
        if file.size < EHDR_SIZE:
            raise DumpError(path, f"truncated ELF header ({file.size} bytes, 64 needed)")
        ident = file.pread_exact(0, 16, "ELF identification")
        if ident[:4] != ELF_MAGIC:
            raise DumpError(path, "not an ELF file")
        if ident[4] != 2:
            raise DumpError(path, "32-bit ELF: only ELF64 cores of x86_64 kernels are supported")
        if ident[5] != 1:
            raise DumpError(path, "big-endian ELF: only x86_64 (little-endian) dumps are supported")
        ehdr = self._parse_header(path)
        if ehdr["e_type"] != "ET_CORE":
            raise DumpError(path, f"ELF file of type {ehdr['e_type']}, not a core dump (ET_CORE)")
        machine = ehdr["e_machine"]
        if machine != "EM_X86_64":
            arch = _MACHINES.get(machine, str(machine))
            raise DumpError(
                path, f"dump of another architecture ({arch}): only x86_64 is supported"
            )
        counts = header_counts(file, ehdr)
        phoff, phnum, phentsize = ehdr["e_phoff"], counts.phnum, ehdr["e_phentsize"]
        if phnum == 0 or phnum > MAX_PHNUM:
            raise DumpError(path, f"ELF core with {phnum} program headers")
        if phentsize != PHDR_SIZE:
            raise DumpError(path, f"ELF program header size {phentsize}, expected {PHDR_SIZE}")
        if phoff + phnum * PHDR_SIZE > file.size:
            raise DumpError(path, "truncated: the program headers run past the end of the file")
        self._notes: list[Note] = []
        segments: list[Segment] = []
        data_end = phoff + phnum * PHDR_SIZE  # where the headers say the file's data end
        for ptype, _flags, offset, _vaddr, paddr, filesz, memsz, _align in _program_headers(
            file, phoff, phnum
        ):
            if ptype in (PT_NOTE, PT_LOAD):
                data_end = max(data_end, offset + min(filesz, memsz))
            if ptype == PT_NOTE:
                self._notes.extend(self._read_notes(offset, filesz))
            elif ptype == PT_LOAD and memsz > 0:
                if paddr + memsz > MAX_PHYS_END:
                    raise DumpError(
                        path,
                        f"corrupt program header: PT_LOAD at {paddr:#x} of {memsz:#x} bytes is "
                        "beyond x86_64's 52-bit physical address space",
                    )
                segments.append(Segment(paddr, memsz, min(filesz, memsz), offset))
        if not segments:
            raise DumpError(path, "ELF core without PT_LOAD segments: it holds no memory")
        self.segments = self._disjoint(segments)
        self._starts = [s.start for s in self.segments]
        self.phys_end = max(s.end for s in self.segments)
        self._truncation = Truncation(path, file.size, data_end) if data_end > file.size else None
        self.info = SourceInfo(format="ELF64 core", compression="none", page_size=None)
        if counts.phnum_extended:
            self.info.extra["ELF program headers"] = (
                f"{phnum} (e_phnum is PN_XNUM: the count is in section header 0)"
            )

    # -- parsing -------------------------------------------------------------------------
    def _parse_header(self, path: str):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        try:
            self._elf = ELFFile(_PreadStream(self.file))
            return self._elf.header
        except (ELFError, ValueError, KeyError, OSError) as exc:
            raise DumpError(path, f"corrupt ELF header: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - pyelftools raises assorted errors on junk
            raise DumpError(path, f"corrupt ELF header: {type(exc).__name__}: {exc}") from None

    def _read_notes(self, offset: int, size: int) -> list[Note]:
        if size > MAX_NOTE_SEGMENT:
            raise DumpError(self.file.path, f"PT_NOTE segment of {size} bytes: corrupt header")
        data = self.file.pread_exact(offset, size, "the PT_NOTE segment")
        return list(parse_notes(data))

    @staticmethod
    def _disjoint(segments: list[Segment]) -> list[Segment]:
        """Sort by address and cut overlaps (kexec cores map the kernel image twice)."""
        out: list[Segment] = []
        for seg in sorted(segments, key=lambda s: (s.start, -s.memsz)):
            if out and seg.start < out[-1].end:
                cut = out[-1].end - seg.start
                if cut >= seg.memsz:
                    continue
                seg = Segment(
                    seg.start + cut, seg.memsz - cut, max(0, seg.filesz - cut), seg.offset + cut
                )
            out.append(seg)
        return out

    # -- PhysicalSource --------------------------------------------------------------------
    def notes(self) -> Sequence[Note]:
        return self._notes

    def ranges(self) -> Sequence[tuple[int, int]]:
        merged: list[tuple[int, int]] = []
        for s in self.segments:
            if merged and merged[-1][1] == s.start:
                merged[-1] = (merged[-1][0], s.end)
            else:
                merged.append((s.start, s.end))
        return merged

    def _runs(self, paddr: int, size: int) -> list[tuple[int | None, int]]:
        """``(file offset, length)`` runs holding ``[paddr, paddr+size)`` in order, up to the
        first hole; a ``None`` offset is a run of zeros (past ``p_filesz``, up to ``p_memsz``).
        Bounded by the number of segments."""
        i = bisect.bisect_right(self._starts, paddr) - 1
        runs: list[tuple[int | None, int]] = []
        pos, end = paddr, paddr + size
        segments = self.segments
        while i >= 0 and pos < end and i < len(segments):
            seg = segments[i]
            if not seg.start <= pos < seg.end:
                break
            rel = pos - seg.start
            n = min(end, seg.end) - pos
            if rel < seg.filesz:
                want = min(n, seg.filesz - rel)
                runs.append((seg.offset + rel, want))
                pos += want
                n -= want
            if n > 0:
                runs.append((None, n))
                pos += n
            i += 1
        return runs

    def read(self, paddr: int, size: int) -> bytes:
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i < 0:
            return b""
        seg = self.segments[i]
        rel = paddr - seg.start
        if rel + size <= seg.filesz:  # the common case: inside one segment's file bytes
            return self.file.pread(seg.offset + rel, size)
        parts: list[bytes] = []
        for offset, n in self._runs(paddr, size):
            if offset is None:
                parts.append(bytes(n))
                continue
            data = self.file.pread(offset, n)
            parts.append(data)
            if len(data) < n:  # the file is shorter than its headers say
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def extents(self, paddr: int, size: int) -> list[Piece]:
        file = self.file
        if not isinstance(file, DumpFile):  # an ELF inside a flattened stream: plain bytes
            return super().extents(paddr, size)
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:  # the common case: inside one segment's file bytes
            seg = self.segments[i]
            offset = seg.offset + paddr - seg.start
            if paddr + size <= seg.start + seg.filesz and offset + size <= file.size:
                return [FileExtent(file, offset, size)]
        pieces: list[Piece] = []
        for offset, n in self._runs(paddr, size):
            if offset is None:
                pieces.append(bytes(n))
                continue
            n = min(n, file.size - offset)  # a truncated copy holds less than its headers
            if n <= 0:
                break
            pieces.append(FileExtent(file, offset, n))
        return pieces

    def truncations(self) -> Sequence[Truncation]:
        return [self._truncation] if self._truncation is not None else []

    def held_bytes(self) -> int:
        """The segments' bytes, less what a truncated file lacks."""
        size = self.file.size
        return sum(
            s.memsz - s.filesz + max(0, min(s.filesz, size - s.offset)) for s in self.segments
        )

    def fault(self, paddr: int) -> FaultError:
        i = bisect.bisect_right(self._starts, paddr) - 1
        seg = self.segments[i] if i >= 0 else None
        if seg is None or not seg.start <= paddr < seg.end:
            return FaultError("phys", paddr, "no PT_LOAD segment holds it (not in the dump)")
        offset = seg.offset + paddr - seg.start
        if paddr - seg.start < seg.filesz and offset >= self.file.size:
            t = self._truncation
            cut = str(t) if t is not None else f"the file ends at {self.file.size:,} bytes"
            return CorruptError(
                "phys",
                paddr,
                f"its PT_LOAD data at offset {offset:#x} lie past the end of the file ({cut})",
            )
        return FaultError("phys", paddr, "could not be read")

    def absent_until(self, paddr: int, limit: int) -> int:
        i = bisect.bisect_right(self._starts, paddr)
        nxt = self._starts[i] if i < len(self._starts) else limit
        return min(limit, max(nxt, paddr + 1))

    def close(self) -> None:
        self.file.close()


def _program_headers(file: ReadableFile, phoff: int, phnum: int) -> Iterator[tuple[int, ...]]:
    """The ``phnum`` Elf64_Phdr at ``phoff`` (checked to lie in the file), as tuples: read a
    piece at a time with ``struct`` (pyelftools takes 30 us a header; a core may have 10**6)."""
    step = PHDR_READ // PHDR_SIZE
    for first in range(0, phnum, step):
        n = min(step, phnum - first)
        raw = file.pread_exact(phoff + first * PHDR_SIZE, n * PHDR_SIZE, "the program headers")
        yield from _PHDR.iter_unpack(raw)


class _PreadStream:
    """A minimal file-like object over a :class:`DumpFile` for pyelftools (seek/read/tell)."""

    def __init__(self, file: DumpFile) -> None:
        self._file = file
        self._pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._file.size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._file.size - self._pos
        data = self._file.pread(self._pos, n)
        self._pos += len(data)
        return data
