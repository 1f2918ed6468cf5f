"""Split dumps (``makedumpfile --split``): several kdump files, one range of page frames each.

Every part is a whole kdump file (headers, notes, both bitmaps) whose sub-header names its
range ``[start_pfn_64, end_pfn_64)``; together the parts cover ``[0, max_mapnr)`` exactly once.
The parts may be given in any order; a missing, overlapping or foreign part (another dump's)
is an error found when opening.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

from ..errors import DumpError, FaultError
from .damage import Truncation
from .kdump import KdumpSource, PageDesc, split_identity
from .paged import PagedReader, PagedSource
from .source import Note, ReadableFile, SourceInfo, merge_runs


class SplitSource(PagedSource[tuple[KdumpSource, PageDesc]]):
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
        self.pages = PagedReader(self)

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

    def present_runs(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Each part's runs in its own frames, merged where they meet across parts."""
        ps = self.page_size
        runs = (
            part.present_runs(max(start, part.start_pfn * ps), min(end, part.end_pfn * ps))
            for part in self.parts  # bounded by the number of parts
        )
        return merge_runs(itertools.chain.from_iterable(runs), start, end)

    def _part_spans(self, start: int, end: int) -> Iterator[tuple[KdumpSource, int, int]]:
        """Each part with the bytes of ``[start, end)`` in its frames, in address order."""
        ps = self.page_size
        for part in self.parts:  # bounded by the number of parts
            lo, hi = max(start, part.start_pfn * ps), min(end, part.end_pfn * ps)
            if lo < hi:
                yield part, lo, hi

    def next_data(self, start: int, end: int) -> int | None:
        for part, lo, hi in self._part_spans(start, end):
            found = part.next_data(lo, hi)
            if found is not None:
                return found
        return None

    def next_hole(self, start: int, end: int) -> int:
        pos = start
        for part, lo, hi in self._part_spans(start, end):
            if lo > pos:  # no part holds the frames between
                return pos
            pos = part.next_hole(lo, hi)
            if pos < hi:
                return pos
        return min(pos, end)

    def truncations(self) -> Sequence[Truncation]:
        return [t for p in self.parts for t in p.truncations()]

    def held_bytes(self) -> int:
        return sum(p.held_bytes() for p in self.parts)

    def _fault(self, paddr: int) -> FaultError:
        part = self._part(paddr // self.page_size)
        if part is None:
            return FaultError("phys", paddr, "past the dump's last page frame")
        return part._fault(paddr)  # recorded as this source's damage, not the part's

    def close(self) -> None:
        super().close()
        for p in self.parts:
            p.close()

    def files(self) -> Sequence[ReadableFile]:
        return [p.file for p in self.parts]

    # -- PagedSource -------------------------------------------------------------------------
    def page_refs(self, pfn: int, count: int) -> list[tuple[KdumpSource, PageDesc] | None]:
        refs: list[tuple[KdumpSource, PageDesc] | None] = []
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

    def load_pages(self, refs: Sequence[tuple[KdumpSource, PageDesc]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for part, i, j in _part_runs(refs):
            out.extend(part.load_pages([r[1] for r in refs[i:j]]))
        return out

    def load_pages_into(
        self, refs: Sequence[tuple[KdumpSource, PageDesc]], dest: memoryview
    ) -> int:
        ps = self.page_size
        for part, i, j in _part_runs(refs):
            done = part.load_pages_into([r[1] for r in refs[i:j]], dest[i * ps : j * ps])
            if done < j - i:
                return i + done
        return len(refs)


def _part_runs(
    refs: Sequence[tuple[KdumpSource, PageDesc]],
) -> Iterator[tuple[KdumpSource, int, int]]:
    """``(part, i, j)``: the runs ``refs[i:j]`` of references into the same part, in order
    (one load each)."""
    i = 0
    while i < len(refs):  # bounded: each pass consumes at least one reference
        part = refs[i][0]
        j = i + 1
        while j < len(refs) and refs[j][0] is part:
            j += 1
        yield part, i, j
        i = j


def _identity(part: KdumpSource) -> dict[str, object]:
    return split_identity(part.header, part.sub, part.vmcoreinfo_raw())


def _differs(a: dict[str, object], b: dict[str, object]) -> str | None:
    for key, value in a.items():
        if b[key] != value:
            return key
    return None
