"""PT_LOAD segments that say different things about the same memory: checked once at open.

A kexec ``/proc/vmcore`` maps the kernel image twice (``crash_prepare_elf64_headers()``: a
PT_LOAD of the kernel text with ``p_vaddr`` in the kernel image, and the RAM range that holds
the same pages in the direct map): the two are the same bytes, compared here once and then
served. Where overlapping segments hold different bytes, or a segment contradicts itself
(``p_filesz > p_memsz``: the ELF specification forbids it), no one of them can be believed:
that physical range is *corrupt* (EIO, and ``damage:`` in ``summary`` once read), never the
bytes of whichever segment happened to be listed first.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol, TypeVar

#: Bytes of overlapping segments compared at most: the legitimate overlap is the kernel image
#: (``KERNEL_IMAGE_SIZE``: 1 GiB at most, arch/x86/include/asm/page_64_types.h). An overlap
#: beyond it is corrupt without being compared.
MAX_COMPARED = 1 << 30
#: Compared at once, and what a difference marks corrupt at the finest (x86_64's page).
CHUNK = 1 << 20
PAGE = 4096
#: Contradicting ranges kept apart at most; past this the rest of an overlap is one range.
MAX_RANGES = 1 << 12


class SegmentLike(Protocol):
    """A PT_LOAD as ``elf.Segment`` holds it (a frozen dataclass: ``replace`` makes a cut one)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def start(self) -> int: ...

    @property
    def memsz(self) -> int: ...

    @property
    def filesz(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def end(self) -> int: ...


class FileLike(Protocol):
    size: int

    def pread(self, offset: int, size: int) -> bytes: ...


Seg = TypeVar("Seg", bound=SegmentLike)


@dataclass(frozen=True)
class Contradiction:
    """Physical ``[start, end)`` that the program headers contradict themselves about."""

    start: int
    end: int
    reason: str


def resolve(file: FileLike, segments: list[Seg]) -> tuple[list[Seg], list[Contradiction]]:
    """The segments made disjoint (sorted, each byte from one segment) with every
    contradicting range cut out of them, and those ranges (sorted, disjoint)."""
    bad: list[Contradiction] = []
    sane: list[Seg] = []
    for seg in segments:
        if seg.filesz > seg.memsz:
            bad.append(
                Contradiction(
                    seg.start,
                    seg.end,
                    f"its PT_LOAD (file offset {seg.offset:#x}) has p_filesz {seg.filesz:#x} "
                    f"> p_memsz {seg.memsz:#x}",
                )
            )
        else:
            sane.append(seg)
    out: list[Seg] = []
    budget = [MAX_COMPARED]
    for seg in sorted(sane, key=lambda s: (s.start, -s.memsz)):
        if out and seg.start < out[-1].end:
            prev = out[-1]
            overlap_end = min(seg.end, prev.end)
            bad.extend(_compare(file, prev, seg, seg.start, overlap_end, budget))
            cut = overlap_end - seg.start
            if cut >= seg.memsz:
                continue
            seg = replace(
                seg,
                start=seg.start + cut,
                memsz=seg.memsz - cut,
                filesz=max(0, seg.filesz - cut),
                offset=seg.offset + cut,
            )
        out.append(seg)
    if not bad:
        return out, []
    ranges = _merge(bad)
    return _cut(out, ranges), ranges


def _bytes(file: FileLike, seg: SegmentLike, start: int, size: int) -> bytes:
    """What ``seg`` says ``[start, start+size)`` holds: its file bytes, zeros past
    ``p_filesz``; shorter where the file ends first."""
    rel = start - seg.start
    held = max(0, min(size, seg.filesz - rel))
    data = file.pread(seg.offset + rel, held) if held else b""
    if len(data) < held:
        return data  # a truncated file: only what both hold is compared
    return data + bytes(size - held)


def _compare(
    file: FileLike, a: SegmentLike, b: SegmentLike, start: int, end: int, budget: list[int]
) -> list[Contradiction]:
    """Where ``a`` and ``b`` disagree in ``[start, end)``, at page granularity."""
    found: list[Contradiction] = []
    why = (
        f"overlapping PT_LOADs (file offsets {a.offset:#x} and {b.offset:#x}) hold different "
        "bytes for it"
    )
    pos = start
    while pos < end:  # bounded: MAX_COMPARED bytes in all, then the rest at once
        n = min(CHUNK, end - pos)
        if budget[0] < n or len(found) >= MAX_RANGES:
            found.append(
                Contradiction(
                    pos,
                    end,
                    f"overlapping PT_LOADs (file offsets {a.offset:#x} and {b.offset:#x}) "
                    f"overlap by more than the {MAX_COMPARED >> 20} MiB compared at open",
                )
            )
            break
        budget[0] -= n
        x, y = _bytes(file, a, pos, n), _bytes(file, b, pos, n)
        common = min(len(x), len(y))
        if x[:common] != y[:common]:
            for p in range(0, common, PAGE):
                if x[p : p + PAGE] != y[p : p + PAGE]:
                    lo = pos + p
                    hi = min(pos + p + PAGE, end)
                    if found and found[-1].end == lo:
                        found[-1] = replace(found[-1], end=hi)
                    else:
                        found.append(Contradiction(lo, hi, why))
        pos += n
    return found


def _merge(ranges: list[Contradiction]) -> list[Contradiction]:
    """Sorted, overlapping ranges joined (the first one's reason kept)."""
    out: list[Contradiction] = []
    for r in sorted(ranges, key=lambda c: c.start):
        if out and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = replace(out[-1], end=r.end)
        else:
            out.append(r)
    return out


def _cut(segments: list[Seg], ranges: list[Contradiction]) -> list[Seg]:
    """``segments`` less ``ranges`` (both sorted): each segment split around them."""
    out = []
    starts = [r.start for r in ranges]
    for seg in segments:
        pos = seg.start
        i = max(0, bisect.bisect_right(starts, seg.start) - 1)
        while pos < seg.end:  # bounded: each pass passes one range or ends the segment
            r = ranges[i] if i < len(ranges) else None
            if r is not None and r.end <= pos:
                i += 1
                continue
            stop = seg.end if r is None else min(seg.end, max(pos, r.start))
            if stop > pos:
                rel = pos - seg.start
                out.append(
                    replace(
                        seg,
                        start=pos,
                        memsz=stop - pos,
                        filesz=max(0, min(stop - pos, seg.filesz - rel)),
                        offset=seg.offset + rel,
                    )
                )
            if r is None or r.start >= seg.end:
                break
            pos = max(stop, r.end)
            i += 1
    return out


def contradiction_at(
    ranges: list[Contradiction], starts: list[int], paddr: int
) -> Contradiction | None:
    """The range of ``ranges`` (with ``starts`` their starts) holding ``paddr``, or None."""
    i = bisect.bisect_right(starts, paddr) - 1
    if i >= 0 and paddr < ranges[i].end:
        return ranges[i]
    return None
