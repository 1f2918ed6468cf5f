"""Split dumps (``makedumpfile --split``): several kdump files, one range of page frames each.

Every part is a whole kdump file (headers, notes, both bitmaps) whose sub-header names its
range ``[start_pfn_64, end_pfn_64)``; together the parts cover ``[0, max_mapnr)`` exactly once.
The parts may be given in any order; a missing, overlapping or foreign part (another dump's)
is an error found when opening.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence

from ..errors import DumpError, FaultError
from .damage import Truncation
from .detect import sniff
from .kdump import KdumpSource, read_pages
from .source import DumpFile, Note, PagedSource, PhysicalSource, SourceInfo


class SplitSource(PhysicalSource, PagedSource):
    """The parts of a split dump as one physical memory; each frame is read from its part."""

    def __init__(self, parts: Sequence[KdumpSource]) -> None:
        self.parts = sorted(parts, key=lambda p: p.start_pfn)
        first = self.parts[0]
        self._check_set()
        self.paths = [p.file.path for p in self.parts]
        self.page_size = first.page_size
        self.phys_end = first.phys_end
        self._starts = [p.start_pfn for p in self.parts]
        self.parallel_decompression = all(p.parallel_decompression for p in self.parts)
        codecs = {p.info.compression for p in self.parts}
        info = SourceInfo(
            format=f"{first.info.format}, split in {len(self.parts)} parts",
            compression=codecs.pop() if len(codecs) == 1 else "mixed",
            dump_level=first.info.dump_level,
            crashed_cpu=first.info.crashed_cpu,
            nr_cpus=first.info.nr_cpus,
            page_size=first.info.page_size,
            dump_time=first.info.dump_time,
            extra=dict(first.info.extra),
        )
        info.extra.pop("kdump split part", None)
        info.extra["split parts"] = str(len(self.parts))
        info.extra["kdump dumped pages"] = str(sum(p.dumped.total for p in self.parts))
        self.info = info

    def _check_set(self) -> None:
        parts = self.parts
        first = parts[0]
        for p in parts:
            if not p.is_split:
                raise DumpError(p.file.path, "not part of a split dump (a whole kdump file)")
        ident = _identity(first)
        for p in parts[1:]:
            what = _differs(ident, _identity(p))
            if what:
                raise DumpError(
                    p.file.path, f"foreign part: its {what} differs from {first.file.path}'s"
                )
        expected = 0
        for prev, p in zip([None, *parts], parts, strict=False):
            if p.start_pfn < expected and prev is not None:
                raise DumpError(
                    p.file.path,
                    f"part overlaps {prev.file.path}: page frames "
                    f"{p.start_pfn:#x}-{min(p.end_pfn, expected):#x} are in both",
                )
            if p.start_pfn > expected:
                raise DumpError(
                    first.file.path,
                    f"split dump with a part missing: page frames {expected:#x}-"
                    f"{p.start_pfn:#x} are in none of the {len(parts)} parts given",
                )
            expected = p.end_pfn
        if expected != first.max_mapnr:
            raise DumpError(
                first.file.path,
                f"split dump with a part missing: page frames {expected:#x}-"
                f"{first.max_mapnr:#x} are in none of the {len(parts)} parts given",
            )

    def _part(self, pfn: int) -> KdumpSource | None:
        i = bisect.bisect_right(self._starts, pfn) - 1
        if i < 0:
            return None
        part = self.parts[i]
        return part if pfn < part.end_pfn else None

    # -- PhysicalSource ----------------------------------------------------------------------
    def notes(self) -> Sequence[Note]:
        return self.parts[0].notes()

    def ranges(self) -> Sequence[tuple[int, int]]:
        return self.parts[0].ranges()

    def read(self, paddr: int, size: int) -> bytes:
        return read_pages(self, paddr, size, self.phys_end)

    def truncations(self) -> Sequence[Truncation]:
        return [t for p in self.parts for t in p.truncations()]

    def held_bytes(self) -> int:
        return sum(p.held_bytes() for p in self.parts)

    def fault(self, paddr: int) -> FaultError:
        part = self._part(paddr // self.page_size)
        if part is None:
            return FaultError("phys", paddr, "past the dump's last page frame")
        return part.fault(paddr)

    def absent_until(self, paddr: int, limit: int) -> int:
        ps = self.page_size
        part = self._part(paddr // ps)
        if part is None:
            return min(limit, paddr - paddr % ps + ps)
        return min(part.absent_until(paddr, limit), max(part.end_pfn * ps, paddr + 1))

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def files(self) -> Sequence:
        return [p.file for p in self.parts]

    # -- PagedSource -------------------------------------------------------------------------
    def page_refs(self, pfn: int, count: int) -> list[object | None]:
        refs: list[object | None] = []
        pos, end = pfn, pfn + count
        while pos < end:  # bounded: each pass consumes up to one part's range
            part = self._part(pos)
            if part is None:
                refs.append(None)
                pos += 1
                continue
            n = min(end, part.end_pfn) - pos
            refs.extend(None if r is None else (part, r) for r in part.page_refs(pos, n))
            pos += n
        return refs

    def load_pages(self, refs: Sequence[object]) -> list[bytes | None]:
        out: list[bytes | None] = []
        i = 0
        while i < len(refs):  # one load per run of references into the same part
            part = refs[i][0]  # type: ignore[index]
            j = i
            while j < len(refs) and refs[j][0] is part:  # type: ignore[index]
                j += 1
            out.extend(part.load_pages([r[1] for r in refs[i:j]]))  # type: ignore[index]
            i = j
        return out


def _identity(part: KdumpSource) -> dict[str, object]:
    h = part.header
    return {
        "VMCOREINFO": part.vmcoreinfo_raw(),
        "kernel name (utsname)": h.utsname,
        "dump time": (h.timestamp_sec, h.timestamp_usec),
        "max_mapnr": part.max_mapnr,
        "block size": h.block_size,
        "header version": h.header_version,
    }


def _differs(a: dict[str, object], b: dict[str, object]) -> str | None:
    for key, value in a.items():
        if b[key] != value:
            return key
    return None


def open_split(paths: Sequence[str], *, cache_size_mib: int = 64) -> PhysicalSource:
    """Open every part of a split dump (kdump files, or flattened streams of them)."""
    parts: list[KdumpSource] = []
    seen: dict[tuple[int, int], str] = {}
    try:
        for path in paths:
            file = DumpFile(path)
            try:
                st = _file_id(file)
                if st in seen:
                    raise DumpError(path, f"given twice (also as {seen[st]})")
                seen[st] = path
                kind = sniff(file)
                if kind == "kdump":
                    part = KdumpSource(file, cache_size_mib=cache_size_mib, split_part=True)
                elif kind == "flattened":
                    from .flattened import FlattenedFile, open_payload

                    part = open_payload(  # type: ignore[assignment]
                        FlattenedFile(file), cache_size_mib=cache_size_mib, split_part=True
                    )
                else:
                    raise DumpError(path, "an ELF core cannot be part of a split dump")
            except BaseException:
                file.close()
                raise
            parts.append(part)
        return SplitSource(parts)
    except BaseException:
        for p in parts:
            p.close()
        raise


def _file_id(file: DumpFile) -> tuple[int, int]:
    st = os.fstat(file.fd)
    return st.st_dev, st.st_ino
