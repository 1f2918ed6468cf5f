"""Fuzzing header fields at extreme values that the files really back: bitmaps of up to 2**40
frames (a sparse file, a flattened stream), PN_XNUM program header counts.

The byte-flipping fuzz (test_fuzz_containers.py) makes a header claim 2**40 frames in a file
too short for it, which is refused at open; here the file is as large as its header says (holes
and flattened gaps cost nothing), so every scan of its metadata runs. Each case must end in
data, a ``DumpError`` at open, EIO or ``unavailable: ...`` within 5 s and 256 MiB more memory.
"""

from __future__ import annotations

import struct
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzzing as fz
from tests import kdumpwriter as kw
from tests.fuzzing import STATS, Region

pytestmark = pytest.mark.fuzz

PAGE = 4096
#: Per case, as the issue of hostile containers asks.
CASE_SECONDS = 5.0
CASE_MEMORY = 256 << 20
#: Frame counts a header may claim: powers of two up to kdump.MAX_MAPNR, and their neighbours.
MAPNRS = sorted(
    {1 << k for k in (20, 24, 28, 31, 32, 33, 36, 39, 40)}
    | {(1 << 40) - 1, (1 << 32) + 1, (1 << 33) - 7, 3 << 30, 1024}
)


def _record(name: str, out: fz.Outcome) -> None:
    counts = STATS[name]
    counts["cases"] += 1
    counts["refused at open" if out.refused is not None else "opened"] += 1
    counts["reads"] += out.reads
    counts["EIO"] += out.faults
    counts["unavailable"] += out.unavailable


def _run(name: str, paths, phys=()) -> fz.Outcome:
    k = fz.kernel()
    with fz.limits(seconds=CASE_SECONDS, headroom=CASE_MEMORY):
        out = fz.exercise(paths, phys=[*k.phys_reads, *phys], kvirt=k.kvirt_reads)
    _record(name, out)
    return out


@cache
def _stored_pages() -> dict[int, tuple[int, bytes]]:
    """The synthetic kernel's pages compressed once (zlib): ``pfn -> (flags, bytes)``."""
    out = {}
    for pfn, page in fz.kernel().pages.items():
        packed = kw.compress("zlib", page)
        out[pfn] = (kw.FLAGS["zlib"], packed) if len(packed) < PAGE else (0, page)
    return out


@st.composite
def huge_specs(draw):
    """A kdump of the synthetic kernel whose header claims up to 2**40 frames, with RAM and
    dumped pages near the top, and runs of all-set bitmap bytes the file stores."""
    k = fz.kernel()
    mapnr = draw(st.sampled_from(MAPNRS))
    low = [(s // PAGE, e // PAGE) for s, e in k.ranges if e // PAGE <= mapnr]
    ram = list(low)
    pages = {p: k.pages[p] for s, e in low for p in range(s, e)}
    top = draw(st.integers(0, 3))
    if top and mapnr > 1 << 16:  # RAM, and a dumped page, in the last frames
        n = min(mapnr - (1 << 16), draw(st.sampled_from([1, 7, 4096, 1 << 16])))
        ram.append((mapnr - n, mapnr))
        pages[mapnr - 1] = bytes(range(256)) * 16
    if draw(st.booleans()) and mapnr > 1 << 24:  # all-set bitmap blocks the file stores
        start = draw(st.integers(1 << 23, max(1 << 23, mapnr - (1 << 23) - 1)))
        length = draw(st.sampled_from([32768, (1 << 23) + 1, 1 << 22]))  # up to 1 MiB of 0xff
        ram.append((start, min(mapnr, start + length)))
    ram = _merged(ram)
    stored = {p: _stored_pages()[p] for p in pages if p in _stored_pages()}
    version = 6 if mapnr >= 1 << 32 else draw(st.sampled_from([6, 5]))
    spec = kw.KdumpSpec(
        max_mapnr=mapnr,
        pages=pages,
        ram=ram,
        vmcoreinfo=k.vmcoreinfo,
        notes=k.notes,
        header_version=version,
        stored=stored,
        single_bitmap=draw(st.booleans()) and draw(st.booleans()),
    )
    return spec, [(mapnr - 1) * PAGE] if top else []


def _merged(ranges):
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [tuple(r) for r in out]


@fz.fuzz_settings(60)
@given(st.data())
def test_fuzz_bitmaps_of_up_to_2_40_frames(scratch, data):
    spec, phys = data.draw(huge_specs())
    form = data.draw(st.sampled_from(["sparse", "flattened"]))
    if form == "sparse":
        kw.write_kdump(scratch.path, spec)
        path = scratch.path
    else:
        path = scratch.write(kw.build_flattened(spec))
    out = _run(f"extremes: kdump bitmaps ({form})", path, phys)
    assert out.refused is None, out.refused  # every one is a valid dump
    assert out.reads > 100


def _xnum_seed() -> tuple[bytes, list[Region]]:
    """The synthetic kernel as an ELF core with extended numbering (e_phnum PN_XNUM, the count
    in section header 0's sh_info), and its header regions."""
    k = fz.kernel()
    segments = []
    for start, end in k.ranges:
        data = b"".join(k.pages[p] for p in range(start // PAGE, end // PAGE))
        segments.append((start, data, end - start))
    raw = kw.build_elf_core(segments, k.vmcoreinfo, notes=k.notes, xnum=True)
    phnum = 1 + len(segments)
    shoff = struct.unpack_from("<Q", raw, 40)[0]
    regions = [
        Region("ELF header", 0, 64, fz.fields("<16sHHIQQQIHHHHHH")),
        Region("section header 0", shoff, shoff + 64, fz.fields("<IIQQQQIIQQ")),
        *(
            Region(f"phdr {i}", 64 + 56 * i, 120 + 56 * i, fz.fields("<IIQQQQQQ"))
            for i in range(phnum)
        ),
    ]
    return raw, regions


@fz.fuzz_settings(300)
@given(st.data())
def test_fuzz_pn_xnum_counts(scratch, data):
    raw, regions = _xnum_seed()
    edits = data.draw(fz.mutations(regions, len(raw)))
    _run("extremes: ELF PN_XNUM", scratch.write(fz.apply(raw, edits)))


def test_the_pn_xnum_seed_opens(scratch):
    out = fz.exercise(scratch.write(_xnum_seed()[0]), phys=fz.kernel().phys_reads)
    assert out.refused is None and out.reads > 100
