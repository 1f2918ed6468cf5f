"""``mm/usage``: page classification on synthetic struct-page arrays of every memory model.

Expected counts come from what each test puts in the dump (which pages it made free, cache,
user ...; which pages hold data); where makedumpfile 1.7.2 is installed, it is run on the same
synthetic dumps as a second, independent judge.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

import vmcorefs
from tests.mmbuilder import (
    HUGETLB_PAGE_DTOR,
    OFF_DTOR,
    OFF_LRU,
    PAGE_BUDDY_MAPCOUNT_VALUE,
    PAGE_OFFLINE_MAPCOUNT_VALUE,
    STRUCT_PAGE_CLASSES,
    GiB,
    MiB,
    PG_head,
    PG_hwpoison,
    PG_lru,
    PG_private,
    PG_slab,
    PG_swapbacked,
    PG_swapcache,
    SyntheticKernel,
)
from vmcorefs.kernel.mm_usage import USAGE_KEYS, PageRules, flag_mask
from vmcorefs.tree import build_tree
from vmcorefs.vmcoreinfo import VmcoreInfo

PAGE = 4096
UTS = [b"Linux", b"synth", b"6.1.0-synthetic", b"#1 SMP", b"x86_64", b"(none)"]
MODELS = {
    # model name: SyntheticKernel arguments
    "sparsemem-extreme-vmemmap": dict(model="vmemmap", section_bits=27),
    "sparsemem-extreme-vmemmap-small-sections": dict(model="vmemmap", section_bits=24),
    "sparsemem-static": dict(model="sparse", section_bits=24, physmem_bits=36),
    "flatmem": dict(model="flat"),
    "node-mem-map": dict(model="nodes"),
}


def usage(path, **options) -> dict[str, int | str]:
    text = build_tree(vmcorefs.open_dump(str(path), **options)).lookup("mm/usage").read(0, 1 << 16)
    out: dict[str, int | str] = {}
    for line in text.decode().splitlines():
        if line.startswith("#"):
            out["#"] = line
        else:
            key, value = line.split(" ")
            out[key] = int(value)
    return out


def expected(
    k: SyntheticKernel,
    classes: dict[str, set[int]],
    max_mapnr: int,
    ram_pfns: set[int],
    skip_zero: set[int] = frozenset(),
    extra_free: int = 0,
) -> dict[str, int]:
    """The report for pages ``classes`` (name → pfns it excludes), from what the test built."""
    excluded = set().union(*classes.values()) if classes else set()
    nonzero = k.nonzero_pfns()
    kept = {p for p in ram_pfns if p < max_mapnr} - excluded - set(skip_zero)
    zero = len(kept - nonzero)
    counts = {name: len(pfns) for name, pfns in classes.items()}
    free = counts.get("free", 0) + extra_free
    excl = zero + free + sum(counts.get(n, 0) for n in ("cache", "private", "user", "hwp", "off"))
    original = len({p for p in ram_pfns if p < max_mapnr})
    return {
        "original_pages": original,
        "excluded_pages": excl,
        "pages_filled_with_zero": zero,
        "non_private_cache_pages": counts.get("cache", 0),
        "private_cache_pages": counts.get("private", 0),
        "user_process_data_pages": counts.get("user", 0),
        "free_pages": free,
        "hwpoison_pages": counts.get("hwp", 0),
        "offline_pages": counts.get("off", 0),
        "remaining_pages": (original - excl) % (1 << 64),
        "memory_hole": max_mapnr - original,
        "total_pages": max_mapnr,
    }


def makedumpfile_report(path, tmp_path) -> dict[str, int]:
    """``makedumpfile -d 31 --message-level 31``'s counts on ``path`` (skip if not installed)."""
    exe = shutil.which("makedumpfile")
    if not exe:
        pytest.skip("makedumpfile is not installed")
    out = tmp_path / "mdf.out"
    run = subprocess.run(
        [exe, "-d", "31", "--message-level", "31", "-c", str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    names = {
        "Original pages": "original_pages",
        "Excluded pages": "excluded_pages",
        "Pages filled with zero": "pages_filled_with_zero",
        "Non-private cache pages": "non_private_cache_pages",
        "Private cache pages": "private_cache_pages",
        "User process data pages": "user_process_data_pages",
        "Free pages": "free_pages",
        "Hwpoison pages": "hwpoison_pages",
        "Offline pages": "offline_pages",
        "Remaining pages": "remaining_pages",
        "Memory Hole": "memory_hole",
        "Total pages": "total_pages",
    }
    got = {}
    for line in (run.stdout + run.stderr).splitlines():
        m = re.match(r"\s*([A-Za-z -]+?)\s*:\s*0x([0-9a-f]+)$", line)
        if m and m.group(1) in names:
            got[names[m.group(1)]] = int(m.group(2), 16)
    assert run.returncode == 0 and len(got) == 12, run.stdout[-2000:] + run.stderr[-2000:]
    return got


# -- one of each class, every memory model ---------------------------------------------------


def basic_kernel(**kw) -> tuple[SyntheticKernel, dict[str, set[int]]]:
    """64 MiB of RAM with one page (or block) of each class at pfn 8192 on."""
    k = SyntheticKernel([(0, 64 * MiB)], **kw)
    k.add_uts(UTS)
    k.add_nodes({0: [(4096, [0] * 11), (12288, [1] * 11)]})
    mapping = k.kva(0x30_0000)
    k.free_block(8192, 10)
    k.free_block(9216, 0)
    k.set_page(9217, flags=1 << PG_lru, mapping=mapping)
    k.set_page(9218, flags=1 << PG_lru | 1 << PG_private, mapping=mapping)
    k.set_page(9219, mapping=mapping | 1)
    k.set_page(9220, flags=1 << PG_hwpoison)
    k.set_page(9221, mapcount=PAGE_OFFLINE_MAPCOUNT_VALUE)
    k.compound(9224, 3, mapping=mapping | 1)  # anonymous THP: 8 user pages
    k.compound(9232, 2, dtor=HUGETLB_PAGE_DTOR)  # hugetlb: 4 user pages
    for pfn in (9300, 9301, 15000):
        k.fill(pfn)
    classes = {
        "free": set(range(8192, 9217)),
        "cache": {9217},
        "private": {9218},
        "user": {9219, *range(9224, 9236)},
        "hwp": {9220},
        "off": {9221},
    }
    return k, classes


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_class_in_each_memory_model(tmp_path, name):
    k, classes = basic_kernel(**MODELS[name])
    path = k.write_core(tmp_path / "core")
    got = usage(path)
    want = expected(k, classes, 16384, set(range(16384)))
    assert got == want
    assert list(got) == list(USAGE_KEYS)
    # the counts that makedumpfile itself would print for this dump
    assert want["free_pages"] == 1025 and want["user_process_data_pages"] == 13


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_memory_model_agrees_with_makedumpfile(tmp_path, name):
    k, _ = basic_kernel(**MODELS[name])
    path = k.write_core(tmp_path / "core")
    assert usage(path) == makedumpfile_report(path, tmp_path)


# -- makedumpfile's corner rules -------------------------------------------------------------


def corner_kernel(model: str) -> tuple[SyntheticKernel, dict[str, set[int]], int]:
    """Holes, a BIOS range past the last section, 16 MiB sections, and the odd rules."""
    ram = [(0, 40 * MiB), (48 * MiB, 64 * MiB)]
    bios = [(4 * GiB - 256 * 1024, 4 * GiB)] if model != "flat" else []
    kw = MODELS[
        {
            "vmemmap": "sparsemem-extreme-vmemmap-small-sections",
            "sparse": "sparsemem-static",
            "flat": "flatmem",
            "nodes": "node-mem-map",
        }[model]
    ]
    k = SyntheticKernel(ram + bios, memmap_ram=ram, **kw)
    k.add_uts(UTS)
    if model == "nodes":
        k.add_nodes({0: [(4096, [0] * 11)]})
    m = k.kva(0x30_0000)
    k.free_block(9728, 10)  # [9728, 10752): its second half is a hole, counted all the same
    k.set_page(7679, flags=1 << PG_head)  # head in a window's last slot: order/dtor unread
    k.write(k.struct_page(7680) + OFF_DTOR, bytes([HUGETLB_PAGE_DTOR]))
    k.set_page(7000, mapcount=PAGE_BUDDY_MAPCOUNT_VALUE, private=11)  # invalid order: kept
    k.set_page(7001, flags=1 << PG_slab, mapcount=PAGE_BUDDY_MAPCOUNT_VALUE)  # slab: kept
    k.set_page(7002, flags=1 << PG_swapcache | 1 << PG_swapbacked, mapping=m)  # cache
    k.set_page(7003, flags=1 << PG_swapcache, mapping=m)  # swapcache without swapbacked: kept
    k.set_page(7004, flags=1 << PG_swapcache | 1 << PG_swapbacked, mapping=m | 1)  # user
    k.set_page(7005, flags=1 << PG_lru | 1 << PG_hwpoison, mapping=m)  # cache first
    k.set_page(7006, flags=1 << PG_slab, mapcount=PAGE_OFFLINE_MAPCOUNT_VALUE)  # kept
    k.compound(7011, 2, mapping=m | 1)  # misaligned order: the head alone is user
    k.compound(7024, 4, flags=1 << PG_lru, mapping=m)  # 16 cache pages
    # A buddy block across a mem_map boundary (sections of 4096 pages): counted whole, and
    # the next mem_map is walked from its start, so a buddy head inside counts again.
    k.free_block(3584, 10)
    k.free_block(4196, 0)
    for pfn in (7100, 7101, 7200):
        k.fill(pfn)
    classes = {
        "free": set(range(9728, 10752)) | set(range(3584, 4608)),
        "cache": {7002, 7005, *range(7024, 7040)},
        "user": {7004, 7011},
    }
    # The buddy head inside counts twice where the block crosses a mem_map boundary.
    return k, classes, 1 if model in ("vmemmap", "sparse") else 0


@pytest.mark.parametrize("model", ["vmemmap", "sparse", "flat", "nodes"])
def test_corner_rules(tmp_path, model):
    k, classes, twice = corner_kernel(model)
    path = k.write_core(tmp_path / "core")
    ram = set(range(0, 10240)) | set(range(12288, 16384))
    want = expected(k, classes, 16384, ram, extra_free=twice)
    assert want["free_pages"] == 2048 + twice and want["memory_hole"] == 2048
    assert usage(path) == want


@pytest.mark.parametrize("model", ["vmemmap", "sparse", "flat", "nodes"])
def test_corner_rules_agree_with_makedumpfile(tmp_path, model):
    k, _, _ = corner_kernel(model)
    path = k.write_core(tmp_path / "core")
    assert usage(path) == makedumpfile_report(path, tmp_path)


def test_more_excluded_than_present_wraps_like_makedumpfile(tmp_path):
    """Free ranges over holes can exceed the pages there are: makedumpfile's unsigned
    arithmetic wraps, and so does the report."""
    k = SyntheticKernel([(0, 40 * MiB), (48 * MiB, 64 * MiB)], model="vmemmap", section_bits=24)
    k.add_uts(UTS)
    for pfn in range(0, 9216, 1024):
        k.free_block(pfn, 10)
    k.free_block(9216, 9)
    k.free_block(9728, 10)  # [9728, 10752): 512 pages of RAM, 512 of the hole
    for pfn in range(12288, 16384, 1024):
        k.free_block(pfn, 10)
    path = k.write_core(tmp_path / "core")
    got = usage(path)
    assert got["free_pages"] == 9216 + 512 + 1024 + 4096
    assert got["pages_filled_with_zero"] == 0
    assert got["original_pages"] == 14336
    assert got["remaining_pages"] == (1 << 64) - 512


@pytest.mark.parametrize("window", [None, 512])
def test_free_pages_from_the_free_lists(tmp_path, monkeypatch, window):
    """A kernel without PAGE_BUDDY_MAPCOUNT_VALUE: the zones' free lists give the free pages."""
    if window:
        from vmcorefs.kernel import mm_usage

        monkeypatch.setattr(mm_usage, "BLOCK_PAGES", window)
        monkeypatch.setattr(mm_usage, "WINDOW_PAGES", window)
    k = SyntheticKernel([(0, 64 * MiB)], model="vmemmap")
    k.add_uts(UTS)
    blocks = {(0, 1, 10, 2): [8192, 10240], (0, 1, 0, 0): [9300], (0, 0, 3, 1): [400]}
    k.add_nodes({0: [(4096, [0] * 11), (12288, [0] * 11)]}, free_lists=blocks)
    k.vmcoreinfo.pop("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)")
    # makedumpfile also wants the zone's free page counter (it only prints a debug message)
    k.vmcoreinfo["OFFSET(zone.vm_stat)"] = "1344"
    k.vmcoreinfo["NUMBER(NR_FREE_PAGES)"] = "0"
    path = k.write_core(tmp_path / "core")
    free = set(range(8192, 9216)) | set(range(10240, 11264)) | {9300} | set(range(400, 408))
    want = expected(k, {"free": free}, 16384, set(range(16384)))
    assert want["free_pages"] == 2057
    assert usage(path) == want
    if shutil.which("makedumpfile"):
        assert usage(path) == makedumpfile_report(path, tmp_path)


def test_broken_free_list_is_unavailable(tmp_path):
    k = SyntheticKernel([(0, 64 * MiB)], model="vmemmap")
    k.add_uts(UTS)
    k.add_nodes({0: [(4096, [0] * 11)]}, free_lists={(0, 0, 0, 0): [100, 101]})
    k.vmcoreinfo.pop("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)")
    k.set_page(101, raw=(16, (0xFFFFFFFF80000000).to_bytes(8, "little")))  # 101's lru.prev
    dump = vmcorefs.open_dump(k.write_core(tmp_path / "core"))
    text = build_tree(dump).lookup("mm/usage").read(0, 4096).decode()
    lru100, lru101 = (k.struct_page_kva(pfn) + OFF_LRU for pfn in (100, 101))
    assert text == (
        f"unavailable: node 0 zone 0 free_area[0].free_list[0]: the list breaks at {lru101:#x} "
        f"(its prev is 0xffffffff80000000, not {lru100:#x})\n"
    )


def test_free_list_entry_that_is_not_a_struct_page(tmp_path):
    k = SyntheticKernel([(0, 64 * MiB)], model="vmemmap")
    k.add_uts(UTS)
    k.add_nodes({0: [(4096, [0] * 11)]}, free_lists={(0, 0, 2, 1): [100]})
    k.vmcoreinfo.pop("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)")
    lru = k.struct_page_kva(100) + OFF_LRU
    stray = k.data(16, lru.to_bytes(8, "little") * 2)  # a list_head that is kernel data
    k.set_page(100, raw=(OFF_LRU, stray.to_bytes(8, "little")))  # 100's lru.next: the stray
    text = build_tree(vmcorefs.open_dump(k.write_core(tmp_path / "core"))).lookup("mm/usage")
    text = text.read(0, 4096).decode()
    assert text == (
        f"unavailable: node 0 zone 0 free_area[2].free_list[1]: the entry {stray:#x} "
        "is not a struct page\n"
    )


# -- what the dump lacks ---------------------------------------------------------------------


def test_absent_struct_pages_are_counted_in_a_comment(tmp_path):
    k, classes = basic_kernel(model="vmemmap", section_bits=24)
    lost = k.unmap_struct_pages(12000)
    path = k.write_core(tmp_path / "core")
    got = usage(path)
    want = expected(k, classes, 16384, set(range(16384)), skip_zero=set(lost))
    assert got.pop("#") == (
        f"# {len(lost)} pages have no struct page in the dump: not classified, counted in "
        "remaining_pages"
    )
    assert got == want
    assert len(lost) == 64


def test_kept_pages_the_dump_lacks_are_not_zero_tested(tmp_path):
    k, classes = basic_kernel(model="vmemmap")
    path = k.write_core(tmp_path / "core")
    # Cut the file: the last 100 pages of RAM (kept, zero-filled) are no longer in the dump.
    os.truncate(path, os.path.getsize(path) - 100 * PAGE)
    lost = set(range(16384 - 100, 16384))
    want = expected(k, classes, 16384, set(range(16384)), skip_zero=lost)
    got = usage(path)
    assert got.pop("#") == (
        "# 100 kept pages are not in the dump: no zero test, counted in remaining_pages"
    )
    assert got == want
    # --zero-fill changes what phys reads, never the classification
    assert usage(path, zero_fill=True) == usage(path)


@pytest.mark.parametrize(
    "key",
    ["NUMBER(PG_lru)", "SIZE(page)", "OFFSET(page.flags)", "NUMBER(PG_head_mask)"],
)
def test_missing_key_is_one_unavailable_line(tmp_path, key):
    k, _ = basic_kernel(model="vmemmap")
    path = k.write_core(tmp_path / "core", drop=[key])
    text = build_tree(vmcorefs.open_dump(path)).lookup("mm/usage").read(0, 4096).decode()
    assert text.startswith("unavailable: ") and text.count("\n") == 1
    assert key in text


def test_no_memory_model_is_unavailable(tmp_path):
    k, _ = basic_kernel(model="vmemmap")
    path = k.write_core(tmp_path / "core", drop=["SYMBOL(mem_section)"])
    text = build_tree(vmcorefs.open_dump(path)).lookup("mm/usage").read(0, 4096).decode()
    assert text.startswith("unavailable: VMCOREINFO describes no memory model")


# -- the rules' small parts ---------------------------------------------------------------------


def test_flag_mask_is_makedumpfiles_test_bit():
    assert flag_mask(4) == 1 << 4
    assert flag_mask(36) == 1 << 4  # nr & 0x1f
    assert flag_mask(31) == 0xFFFF_FFFF_8000_0000  # (int)1 << 31, sign-extended


def test_rules_read_only_what_makedumpfile_1_7_2_reads():
    base = (
        "OSRELEASE=6.12.0\nPAGESIZE=4096\nSIZE(page)=64\nOFFSET(page.flags)=0\n"
        "OFFSET(page.mapping)=24\nOFFSET(page._mapcount)=48\nOFFSET(page.private)=40\n"
        "NUMBER(PG_lru)=4\nNUMBER(PG_private)=13\nNUMBER(PG_swapcache)=10\nNUMBER(PG_slab)=9\n"
        "NUMBER(PG_head_mask)=65536\nNUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n"
        "OFFSET(folio._folio_order)=82\nOFFSET(page.compound_info)=8\n"
    )
    rules = PageRules.from_vmcoreinfo(VmcoreInfo(base.encode()))
    assert rules.order_offset == 0  # folio._folio_order (6.3+) is not read by 1.7.2
    assert rules.off_chead is None  # nor page.compound_info (7.1)
    assert rules.buddy_mapcount == 0xFFFFFF7F
    old = PageRules.from_vmcoreinfo(VmcoreInfo(base.replace("6.12.0", "4.10.0").encode()))
    assert old.order_width == 2


# -- the real dumps ------------------------------------------------------------------------


REAL_FILES = (
    "vmcore.elf",
    "mdf-d31.elf",
    "mdf-d31-zlib.kdump",
    "mdf-d31-lzo.kdump",
    "mdf-d31-snappy.kdump",
    "mdf-d31-zstd.kdump",
    "mdf-d31-zlib.flat",
    "qemu-kdump-zlib.flat",
)


@pytest.mark.realdump
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_dumps_equal_makedumpfiles_report(case, name):
    """truth.json holds makedumpfile 1.7.2's own report on the full dump."""
    truth = case.truth["makedumpfile_d31_page_counts"]
    got = usage(case.dump(name))
    if name == "vmcore.elf":
        assert got == truth  # every count, and no '#' line
    else:
        # A filtered dump: the struct-page classes always; the rest where it says nothing.
        assert {k: got[k] for k in STRUCT_PAGE_CLASSES} == {
            k: truth[k] for k in STRUCT_PAGE_CLASSES
        }
        if "#" not in got:
            assert got == truth
    if name in ("vmcore.elf", "mdf-d31-zlib.kdump"):
        # --zero-fill changes nothing: classification reads memory as the dump holds it
        assert usage(case.dump(name), zero_fill=True) == got


# -- how the mem_section root is found ---------------------------------------------------------


def test_mem_section_given_as_the_pointers_address(tmp_path):
    """A vmlinux gives the address of the pointer mem_section, VMCOREINFO its value: with the
    former the root array is found by reading the pointer (makedumpfile's second try)."""
    k, classes = basic_kernel(model="vmemmap")
    pointer = k.data(8, int(k.vmcoreinfo["SYMBOL(mem_section)"], 16).to_bytes(8, "little"))
    k.symbol("mem_section", pointer)
    path = k.write_core(tmp_path / "core")
    assert usage(path) == expected(k, classes, 16384, set(range(16384)))


def test_without_length_mem_section_is_extreme(tmp_path):
    k, classes = basic_kernel(model="vmemmap")
    path = k.write_core(tmp_path / "core", drop=["LENGTH(mem_section)"])
    assert usage(path) == expected(k, classes, 16384, set(range(16384)))


# -- rules that newer kernels' VMCOREINFO switches on ------------------------------------------

HUGE, SLAB, UNACCEPTED = -1025, -513, -2049  # PAGE_*_MAPCOUNT_VALUE as Linux 6.10 has them
#: Linux 6.12 encodes the page type in the top byte (PGTY_slab << 24, as an int).
SLAB_6_12 = (0xF5 << 24) - (1 << 32)


def newer_kernel(**keys: str) -> tuple[SyntheticKernel, dict[str, set[int]]]:
    k = SyntheticKernel([(0, 64 * MiB)], model="vmemmap")
    k.add_uts(UTS)
    for name in ("HUGETLB_PAGE_DTOR",):
        k.vmcoreinfo.pop(f"NUMBER({name})")
    k.vmcoreinfo.update(keys)
    return k, {}


def folio(k: SyntheticKernel, pfn: int, order: int, *, head: dict, flags_1: int) -> None:
    """A large folio the 6.6+ way: the order in the first tail page's flags, low byte."""
    k.set_page(pfn, **{**head, "flags": head.get("flags", 0) | 1 << PG_head})
    for t in range(1, 1 << order):
        k.set_page(pfn + t, chead=k.struct_page_kva(pfn) | 1)
    k.set_page(pfn + 1, flags=flags_1 | order)


def makedumpfile_1_7_2(path, tmp_path) -> dict[str, int]:
    """makedumpfile's report, where the installed one is 1.7.2 (the rules followed)."""
    exe = shutil.which("makedumpfile")
    if not exe:
        pytest.skip("makedumpfile is not installed")
    version = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False)
    if "version 1.7.2 " not in version.stdout + version.stderr:
        pytest.skip("the installed makedumpfile is not 1.7.2")
    return makedumpfile_report(path, tmp_path)


#: Keys of kernels newer than makedumpfile 1.7.2, each with the page that would use it.
NEWER_KEYS = {
    "6.6 PG_hugetlb": {"NUMBER(PG_hugetlb)": "9"},
    "6.9 hugetlb type": {"NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)": str(HUGE)},
    "6.10 slab type": {"NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)": str(SLAB)},
    "6.16 unaccepted type": {"NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)": str(UNACCEPTED)},
}


@pytest.mark.parametrize("keys", sorted(NEWER_KEYS))
def test_keys_of_newer_kernels_change_no_count(tmp_path, keys):
    """1.7.2 does not know them: a hugetlb folio by flag or type is a folio with no order (its
    head alone is classified, here kept), an unaccepted block is kept, a slab page whose
    ``mapping`` word has bit 0 set is user data."""
    k, _ = newer_kernel(**NEWER_KEYS[keys])
    folio(k, 8192, 9, head={"mapcount": HUGE}, flags_1=1 << 9)
    k.set_page(9216, mapcount=UNACCEPTED)
    k.set_page(8000, mapcount=SLAB, flags=1 << PG_slab, mapping=k.kva(0x30_0000) | 1)
    k.set_page(8001, mapping=k.kva(0x30_0000) | 1)  # anonymous
    path = k.write_core(tmp_path / "core")
    got = usage(path)
    assert got == expected(k, {"user": {8000, 8001}}, 16384, set(range(16384)))
    assert got == makedumpfile_1_7_2(path, tmp_path)


def test_slab_without_pg_slab_linux_6_12(tmp_path):
    """Linux 6.10 dropped PG_slab: the counts are computed all the same (1.7.2's slab test
    then matches no page; the slab page type changes no count)."""
    k, _ = newer_kernel(**{"NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)": str(SLAB_6_12)})
    k.vmcoreinfo.pop("NUMBER(PG_slab)")
    k.set_page(8000, mapcount=SLAB_6_12, mapping=k.kva(0x30_0000) | 1)  # 1.7.2: user data
    k.set_page(8002, mapcount=SLAB_6_12)  # a slab page: kept
    path = k.write_core(tmp_path / "core")
    got = usage(path)
    assert got == expected(k, {"user": {8000}}, 16384, set(range(16384)))
    assert got == makedumpfile_1_7_2(path, tmp_path)


def test_folio_order_offset_linux_6_3_is_not_read(tmp_path):
    """Linux 6.3 to 6.5 keep the order and dtor in folio fields 1.7.2 does not read: a
    hugetlb folio's head is classified alone (no dtor known: kept)."""
    k, _ = newer_kernel(
        **{
            "NUMBER(HUGETLB_PAGE_DTOR)": "2",
            "OFFSET(folio._folio_dtor)": str(64 + 16),
            "OFFSET(folio._folio_order)": str(64 + 17),
        }
    )
    k.vmcoreinfo.pop("OFFSET(page.compound_order)")
    k.vmcoreinfo.pop("OFFSET(page.compound_dtor)")
    k.compound(8192, 4, dtor=2)
    k.compound(8208, 2, mapping=k.kva(0x30_0000) | 1)  # anonymous: its head alone is user data
    path = k.write_core(tmp_path / "core")
    got = usage(path)
    assert got == expected(k, {"user": {8208}}, 16384, set(range(16384)))
    assert got == makedumpfile_1_7_2(path, tmp_path)


def test_columns_of_an_unaligned_layout():
    from vmcorefs.kernel.mm_usage import _column

    data = b"".join(bytes([i]) * 3 + (1000 + i).to_bytes(8, "little") + bytes(69) for i in range(5))
    assert _column(data, 5, 80, 3, 8) == [1000, 1001, 1002, 1003, 1004]
    assert _column(data, 5, 80, 0, 4) == [
        int.from_bytes(bytes([i]) * 3 + bytes([232 + i]), "little") for i in range(5)
    ]


@pytest.mark.parametrize("model", ["vmemmap", "flat"])
def test_small_windows_give_the_same_counts(tmp_path, monkeypatch, model):
    """Ranges that run past a window are carried into the next ones."""
    from vmcorefs.kernel import mm_usage

    k, classes, twice = corner_kernel(model)
    k.compound(5120, 10, flags=1 << PG_lru, mapping=k.kva(0x30_0000))  # across 2 windows
    classes["cache"] |= set(range(5120, 6144))
    path = k.write_core(tmp_path / "core")
    ram = set(range(0, 10240)) | set(range(12288, 16384))
    want = expected(k, classes, 16384, ram, extra_free=twice)
    monkeypatch.setattr(mm_usage, "BLOCK_PAGES", 512)
    monkeypatch.setattr(mm_usage, "WINDOW_PAGES", 512)
    assert usage(path) == want


@pytest.mark.parametrize("zero_fill", [False, True])
def test_struct_pages_absent_from_the_file_are_never_zero_filled(tmp_path, zero_fill):
    k, classes = basic_kernel(model="vmemmap")
    backing = k.struct_page(12000) & ~(PAGE - 1)  # the page holding pfn 12000's struct page
    lost = set(range(12000 // 64 * 64, 12000 // 64 * 64 + 64))
    hole = backing // PAGE
    path = k.write_core(tmp_path / "core", ranges=[(0, backing), (backing + PAGE, 64 * MiB)])
    got = usage(path, zero_fill=zero_fill)
    ram = set(range(16384)) - {hole}
    assert got.pop("#").startswith("# 64 pages have no struct page in the dump")
    assert got == expected(k, classes, 16384, ram, skip_zero=lost)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("NUMBER(PG_slab)", "-1", "VMCOREINFO NUMBER(PG_slab)=-1 is out of range (0–63)"),
        ("NUMBER(PG_lru)", "64", "VMCOREINFO NUMBER(PG_lru)=64 is out of range (0–63)"),
        (
            "OFFSET(page._mapcount)",
            "62",
            "OFFSET(page._mapcount)=62 is out of range (0–60: 4 bytes in a 64-byte structure)",
        ),
        ("OFFSET(page.compound_order)", "64", "OFFSET(page.compound_order)=64 is out of range"),
        ("SIZE(page)", "4", "VMCOREINFO SIZE(page)=4 is out of range (8–256)"),
    ],
)
def test_implausible_values_are_unavailable(tmp_path, key, value, says):
    k, _ = basic_kernel(model="vmemmap")
    k.vmcoreinfo[key] = value
    text = build_tree(vmcorefs.open_dump(k.write_core(tmp_path / "core"))).lookup("mm/usage")
    got = text.read(0, 4096).decode()
    assert got.startswith("unavailable: ") and says in got and got.count("\n") == 1
