"""Hostile VMCOREINFO numbers on the real sample (issue 20): each value outside what a kernel
can have reads ``unavailable: VMCOREINFO KEY=VALUE is out of range (LO–HI)``, never another
exception; the page-table keys refuse the dump at open, naming the key.

The ranges expected here are the kernel's (arch/x86/include/asm/sparsemem.h, mmzone.h,
page-flags.h), written out independently of the code's constants.
"""

from __future__ import annotations

import pytest

from tests import fuzzing as fz
from vmcorefs.dumpfile.detect import open_source
from vmcorefs.errors import DumpError
from vmcorefs.kernel.dump import Dump
from vmcorefs.tree import build_tree

BIG = {"2^63-1": str(2**63 - 1), "2^64-1": str(2**64 - 1), "10^29": str(10**29)}


@pytest.fixture(scope="module")
def source():
    src = open_source([str(fz.SAMPLE)])
    yield src
    src.close()


def tree_with(source, key: str, value: str | None):
    note = fz.note_with(fz.sample_note(), key, value)
    source.vmcoreinfo_raw = lambda: note
    return build_tree(Dump(source))


def read(tree, path: str) -> bytes:
    node = tree.lookup(path)
    size = node.size()
    data = node.read(0, size + 1)
    assert len(data) == size  # the size that stat shows is the content's
    return data


# The ten reproductions of the issue: mm/usage raised ZeroDivisionError, struct.error,
# ValueError (negative shift count), MemoryError or OverflowError.
ISSUE_CASES = [
    ("SIZE(mem_section)", "0", "8–64"),
    ("OFFSET(mem_section.section_mem_map)", "-1", "0–24: 8 bytes in a 32-byte structure"),
    ("NUMBER(SECTION_SIZE_BITS)", "4095", "20–35"),
    *(("NUMBER(SECTION_SIZE_BITS)", v, "20–35") for v in BIG.values()),
    ("NUMBER(MAX_PHYSMEM_BITS)", "1", "36–52"),
    *(("NUMBER(MAX_PHYSMEM_BITS)", v, "36–52") for v in BIG.values()),
]


@pytest.mark.parametrize(("key", "value", "limits"), ISSUE_CASES)
def test_issue_cases_read_unavailable_with_key_and_range(source, key, value, limits):
    got = read(tree_with(source, key, value), "mm/usage")
    assert got == f"unavailable: VMCOREINFO {key}={value} is out of range ({limits})\n".encode()


def test_the_other_views_survive_a_bad_memory_model_key(source):
    tree = tree_with(source, "NUMBER(MAX_PHYSMEM_BITS)", str(2**63 - 1))
    assert read(tree, "mm/usage").startswith(b"unavailable: ")
    assert read(tree, "uts/machine") == b"x86_64\n"
    assert read(tree, "dmesg").startswith(b"[    0.000000] Linux version 6.1.0-56-amd64")
    assert read(tree, "info/NUMBER(MAX_PHYSMEM_BITS)") == b"9223372036854775807\n"


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("NUMBER(phys_base)", str(2**63 - 1), "NUMBER(phys_base)=9223372036854775807 is out of"),
        ("NUMBER(phys_base)", "garbage", "malformed NUMBER(phys_base)"),
        ("NUMBER(pgtable_l5_enabled)", "2", "NUMBER(pgtable_l5_enabled)=2 is out of range (0–1)"),
        ("NUMBER(sme_mask)", "-1", "NUMBER(sme_mask)=-1 is out of range"),
        ("NUMBER(sme_mask)", "3", "NUMBER(sme_mask)=3 is not a single bit"),
        ("SYMBOL(init_top_pgt)", "1", "puts the root page table at physical address"),
    ],
)
def test_page_table_keys_out_of_range_refuse_the_dump(source, key, value, says):
    note = fz.note_with(fz.sample_note(), key, value)
    source.vmcoreinfo_raw = lambda: note
    with pytest.raises(DumpError) as info:
        Dump(source)
    # the dump file, then the key once: "PATH: cannot translate kernel addresses: VMCOREINFO ..."
    assert info.value.path == source.paths[0]
    assert info.value.reason.startswith("cannot translate kernel addresses: VMCOREINFO ")
    assert info.value.reason.count("VMCOREINFO") == 1
    assert says in info.value.reason and "\n" not in info.value.reason


@pytest.mark.parametrize(
    ("key", "value", "path", "says"),
    [
        ("NUMBER(PG_lru)", "64", "mm/usage", "NUMBER(PG_lru)=64 is out of range (0–63)"),
        ("NUMBER(PG_head_mask)", "65537", "mm/usage", "NUMBER(PG_head_mask)=65537 is not a"),
        ("LENGTH(zone.free_area)", "0", "mm/buddyinfo", "LENGTH(zone.free_area)=0 is out of"),
        ("SIZE(nodemask_t)", "-1", "mm/nodes", "SIZE(nodemask_t)=-1 is out of range (1–8192)"),
        ("OFFSET(vmap_area.va_start)", "4095", "mm/vmalloc", "OFFSET(vmap_area.va_start)=4095"),
        ("SIZE(prb_desc)", str(2**64 - 1), "dmesg", "SIZE(prb_desc)=18446744073709551615 is"),
        ("OFFSET(printk_info.text_len)", "87", "dmesg", "(0–86: 2 bytes in a 88-byte"),
        ("OFFSET(uts_namespace.name)", "4095", "uts/sysname", "OFFSET(uts_namespace.name)="),
        ("PAGESIZE", "8192", "mm/usage", "VMCOREINFO PAGESIZE=8192 is out of range (4096–4096)"),
    ],
)
def test_each_view_names_the_key_out_of_range(source, key, value, path, says):
    got = read(tree_with(source, key, value), path).decode()
    assert got.startswith("unavailable: ") and says in got and got.count("\n") == 1, got


def test_symbol_out_of_range_is_not_a_symbol(source):
    note = fz.note_with(fz.sample_note(), "SYMBOL(init_uts_ns)", "1" + "0" * 16)  # 2**64
    source.vmcoreinfo_raw = lambda: note
    dump = Dump(source)
    got = read(build_tree(dump), "uts/release").decode()
    assert got.startswith("unavailable: VMCOREINFO SYMBOL(init_uts_ns)=10000000000000000 is out")
    symbols = dump.vmcoreinfo.symbols()
    assert "init_uts_ns" not in symbols and "_stext" in symbols


def test_case_limits_stop_a_loop_by_its_cpu_time():
    # The fuzz bounds each case by CPU time (tests/hostile_numbers.py): a busy loop ends in
    # CaseTimeout however loaded the machine is.
    with pytest.raises(fz.CaseTimeout, match="CPU"):
        with fz.limits(60, 1 << 30, cpu_seconds=0.2):
            while True:
                pass


@pytest.mark.parametrize(
    ("key", "value", "line"),
    [
        ("KERNELOFFSET", "ffffffffff", "KASLR offset: unknown (VMCOREINFO KERNELOFFSET=ffffffffff "
         "is out of range (0x0–0x40000000))"),
        ("CRASHTIME", "1e", "crash time: unknown (VMCOREINFO has a malformed CRASHTIME: '1e')"),
        ("CRASHTIME", "9" * 20, "crash time: unknown (VMCOREINFO CRASHTIME=99999999999999999999 "
         "is out of range (-9223372036854775808–9223372036854775807))"),
    ],
)  # fmt: skip
def test_summary_says_why_a_number_is_unknown(source, key, value, line):
    summary = read(tree_with(source, key, value), "summary").decode().splitlines()
    assert line in summary
    assert "phys_base: -0x" in "\n".join(summary)  # the other numbers stand


def test_summary_says_unknown_alone_for_an_absent_number(source):
    summary = read(tree_with(source, "CRASHTIME", None), "summary").decode().splitlines()
    assert "crash time: unknown" in summary
