"""A crash kernel's ``/proc/vmcore``: the kernel text's PT_LOAD overlaps the direct map's.

``crash_prepare_elf64_headers()`` puts a PT_LOAD for the kernel text first (``p_vaddr`` in the
kernel image) and then one per RAM range (``p_vaddr`` in the direct map), leaving out the first
MiB and the crash kernel's reservation: the text's physical pages are in two segments. ``phys``
holds each page once and reads the same bytes; ``mm/usage`` counts each physical page once,
where makedumpfile 1.7.2's report counts the text's pages once per segment.
"""

from __future__ import annotations

import json

import pytest

from tests.elfbuilder import PAGE, PhysImage, kexec_core, note
from tests.mmbuilder import MM_USAGE_LINES, STRUCT_PAGE_CLASSES
from tests.test_mm_usage import basic_kernel, expected, makedumpfile_report, usage
from vmcorefs.dumpfile.detect import open_one

MiB = 1 << 20
VMCOREINFO = b"OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\n"
#: The kernel text (2 MiB at 16 MiB), inside the second RAM range.
TEXT = (16 * MiB, 18 * MiB)
#: RAM without the first MiB and without a crash kernel's reservation at [8, 12) MiB.
RAM = [(1 * MiB, 8 * MiB), (12 * MiB, 32 * MiB)]


def filled() -> PhysImage:
    mem = PhysImage()
    for pfn in range(0, 32 * MiB // PAGE, 7):  # every 7th page holds its own number
        mem.write(pfn * PAGE, pfn.to_bytes(8, "little") * 16)
    return mem


def test_the_text_segment_reads_as_the_direct_map_holds_it(tmp_path):
    mem = filled()
    path = tmp_path / "vmcore"
    path.write_bytes(kexec_core(mem, RAM, TEXT, [note(b"VMCOREINFO", 0, VMCOREINFO)]).build())
    src = open_one(str(path))
    # each physical page once: the ranges are the RAM's, the text adds none
    assert list(src.ranges()) == RAM
    assert src.phys_end == RAM[-1][1]
    start, end = TEXT
    assert src.read(start - PAGE, end - start + 2 * PAGE) == mem.read(
        start - PAGE, end - start + 2 * PAGE
    )
    for absent in (0, MiB - 8, 8 * MiB, 12 * MiB - 8):  # the first MiB, the reservation
        assert src.read(absent, 8) == b""
    assert src.read(7 * PAGE * 700, 8) == (7 * 700).to_bytes(8, "little")


def test_the_text_segment_first_or_last_gives_the_same_memory(tmp_path):
    mem = filled()
    core = kexec_core(mem, RAM, TEXT, [note(b"VMCOREINFO", 0, VMCOREINFO)])
    first, last = tmp_path / "first", tmp_path / "last"
    first.write_bytes(core.build())
    core.segments.append(core.segments.pop(0))
    last.write_bytes(core.build())
    a, b = open_one(str(first)), open_one(str(last))
    assert list(a.ranges()) == list(b.ranges())
    for lo, hi in RAM:
        assert a.read(lo, hi - lo) == b.read(lo, hi - lo) == mem.read(lo, hi - lo)


# -- mm/usage counts each physical page once ---------------------------------------------------

#: basic_kernel's 64 MiB: the text PT_LOAD repeats [2, 6) MiB, kernel data and struct pages.
KERNEL_TEXT = (2 * MiB, 6 * MiB)
TEXT_PAGES = (KERNEL_TEXT[1] - KERNEL_TEXT[0]) // PAGE


def test_mm_usage_counts_the_text_pages_once(tmp_path):
    k, classes = basic_kernel()
    plain = usage(k.write_core(tmp_path / "plain"))
    got = usage(k.write_core(tmp_path / "kexec", kexec_text=KERNEL_TEXT))
    assert list(got) == list(MM_USAGE_LINES)
    assert got == plain == expected(k, classes, 16384, set(range(16384)))


def test_makedumpfile_counts_the_text_pages_twice(tmp_path):
    """makedumpfile 1.7.2's report on the same file: the text's pages once per PT_LOAD in
    original/remaining pages (and that many fewer in the memory hole); the page classes alike."""
    k, _ = basic_kernel()
    path = k.write_core(tmp_path / "kexec", kexec_text=KERNEL_TEXT)
    ours = usage(path)
    theirs = makedumpfile_report(path, tmp_path)
    assert theirs["original_pages"] == ours["original_pages"] + TEXT_PAGES
    assert theirs["remaining_pages"] == ours["remaining_pages"] + TEXT_PAGES
    # 1.7.2 subtracts each segment's pages from max_mapnr: here it goes below zero (u64)
    assert theirs["memory_hole"] == (ours["memory_hole"] - TEXT_PAGES) % (1 << 64)
    same = [n for n in MM_USAGE_LINES if n not in ("original_pages", "remaining_pages",
                                                    "memory_hole")]  # fmt: skip
    assert {n: ours[n] for n in same} == {n: theirs[n] for n in same}


@pytest.mark.realdump
def test_the_shared_kexec_case_counts_each_page_once(dumps_dir):
    """The shared kexec case's truth: makedumpfile's report with the kernel-text PT_LOAD's
    pages counted once (its README, truth.json's makedumpfile_d31_page_counts_note)."""
    root = dumps_dir / "kexec-oops-3cpu-448m"
    if not (root / "vmcore.elf").exists():
        pytest.skip("the kexec-oops-3cpu-448m case is absent")
    truth = json.loads((root / "truth.json").read_text())["makedumpfile_d31_page_counts"]
    assert usage(root / "vmcore.elf") == truth
    kdump = usage(root / "mdf-d31-zlib.kdump")
    assert {n: kdump[n] for n in STRUCT_PAGE_CLASSES} == {n: truth[n] for n in STRUCT_PAGE_CLASSES}
