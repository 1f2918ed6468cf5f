"""The bundled sample dump through the library, against the ground truth taken in the guest.

Every expected value comes from ``tests/data/sample/`` files written by
``tools/make-sample-vmcore`` from outside vmcorefs: the guest's uname, /proc/kallsyms,
/proc/iomem, the VMCOREINFO note of the ELF, makedumpfile's report and its
``--dump-dmesg`` output.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from tests.mmbuilder import MM_USAGE_LINES, STRUCT_PAGE_CLASSES
from tests.mounting import mounted
from tests.sample import START_KERNEL
from vmcorefs.kernel.dump import open_dump
from vmcorefs.tree import build_tree

#: The issue's budget for the committed sample.
SAMPLE_SIZE_LIMIT = 20_000_000
#: ``struct new_utsname`` (include/uapi/linux/utsname.h): six char[__NEW_UTS_LEN + 1] fields.
NEW_UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
NEW_UTS_LEN = 65


@pytest.fixture(scope="module")
def dump(sample):
    opened = open_dump(str(sample.dump))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def tree(dump):
    return build_tree(dump)


def read_file(tree, path: str, limit: int = 1 << 24) -> bytes:
    return tree.lookup(path).read(0, limit)


# --- the files themselves -------------------------------------------------------------------


def test_sample_is_small_and_intact(sample):
    data = sample.dump.read_bytes()
    assert len(data) == sample.truth["dump"]["size"] <= SAMPLE_SIZE_LIMIT
    # A git LFS pointer or a damaged checkout would pass a size check only by accident.
    assert hashlib.sha256(data).hexdigest() == sample.truth["dump"]["sha256"]
    assert data[:8] == b"KDUMP   "


def test_ground_truth_agrees_with_itself(sample):
    truth = sample.truth
    assert truth["osrelease"] == sample.uts["release"]
    assert truth["uts"] == sample.uts
    for name, addr in truth["symbols"].items():
        assert sample.symbol(name) == int(addr, 16), name
    core = [line for line in sample.kallsyms if line[3] is None]
    assert len(core) == truth["kallsyms_count"]
    assert truth["marker"] in sample.text("dmesg.txt")


# --- through the library --------------------------------------------------------------------


def test_vmcoreinfo_is_the_note_of_the_elf(sample, dump):
    # vmcoreinfo.txt was read by the builder from the ELF (QEMU's, or the crash kernel's
    # /proc/vmcore), before makedumpfile.
    assert dump.vmcoreinfo.raw == (sample.root / "vmcoreinfo.txt").read_bytes()
    assert dump.vmcoreinfo.osrelease == sample.uts["release"]
    assert dump.vmcoreinfo.page_size == sample.truth["page_size"]
    # The KASLR slide, from the guest's own _text.
    assert dump.vmcoreinfo.kerneloffset == sample.symbol("_text") - START_KERNEL
    assert dump.vmcoreinfo.kerneloffset == sample.truth["kerneloffset"] != 0


def test_linux_banner_through_kvirt(sample, dump):
    banner = dump.kvirt.cstring(sample.symbol("linux_banner"), 512).decode()
    assert banner.startswith(f"Linux version {sample.uts['release']} (")
    # linux_banner ends with UTS_VERSION and a newline (init/version.c).
    assert banner.endswith(f" {sample.uts['version']}\n")


def test_init_uts_ns_is_uname(sample, dump):
    offset = dump.vmcoreinfo.offset("uts_namespace.name")
    if offset is None:  # before 5.11 (VMCOREFS_SAMPLE=a 5.10 dump): the member's place in BTF
        offset = dump.btf.offsetof("struct uts_namespace", "name")
    base = sample.symbol("init_uts_ns") + offset
    raw = dump.kvirt.read_exact(base, NEW_UTS_LEN * len(NEW_UTS_FIELDS))
    for i, field in enumerate(NEW_UTS_FIELDS):
        value = raw[i * NEW_UTS_LEN : (i + 1) * NEW_UTS_LEN].split(b"\0", 1)[0].decode()
        assert value == sample.uts[field], field


def test_phys_size_is_makedumpfiles_page_count(sample, dump):
    pages = sample.truth["makedumpfile_d31_page_counts"]["total_pages"]
    assert dump.phys.size == pages * sample.truth["page_size"]
    assert dump.phys.read(dump.phys.size, 16) == b""


@pytest.mark.parametrize("name", ["Kernel code", "Kernel rodata"])
def test_kernel_image_in_system_ram_reads_alike_in_phys_and_kvirt(sample, dump, name):
    start, end = sample.iomem_range(name)
    ram = [(s, e) for s, e, what, depth in sample.iomem() if what == "System RAM" and depth == 0]
    assert any(s <= start and end <= e for s, e in ram)
    # /proc/iomem places the image physically, kallsyms virtually: _text is "Kernel code".
    code_start, _ = sample.iomem_range("Kernel code")
    virt = sample.symbol("_text") + (start - code_start)
    size = min(end - start, 1 << 20)
    data = dump.phys.read_exact(start, size)
    assert data == dump.kvirt.read_exact(virt, size)
    assert data != bytes(size)  # real code and data, not zero pages


def test_linux_banner_through_phys(sample, dump):
    # The banner is in rodata: its physical address from iomem and kallsyms alone.
    start, end = sample.iomem_range("Kernel rodata")
    offset = sample.symbol("linux_banner") - sample.symbol("_text")
    code_start, _ = sample.iomem_range("Kernel code")
    assert start <= code_start + offset < end
    phys = dump.phys.read_exact(code_start + offset, 14)
    assert phys == b"Linux version "


def test_every_core_symbol_is_in_the_merged_table(sample, dump):
    table = dump.symbols
    have = set(zip(table.addresses, table.types, table.names, strict=True))
    missing = [line[:3] for line in sample.kallsyms if line[3] is None and line[:3] not in have]
    assert not missing[:10]


# --- through the tree -----------------------------------------------------------------------


def test_tree_info_and_vmcoreinfo(sample, tree):
    assert read_file(tree, "info/OSRELEASE") == (sample.uts["release"] + "\n").encode()
    assert read_file(tree, "vmcoreinfo") == (sample.root / "vmcoreinfo.txt").read_bytes()


def test_tree_dmesg_is_makedumpfiles(sample, tree):
    expected = (sample.root / "dmesg.makedumpfile.txt").read_bytes()
    assert read_file(tree, "dmesg") == expected
    assert sample.truth["marker"].encode() in expected


def test_tree_uts(sample, tree):
    for field in NEW_UTS_FIELDS:
        assert read_file(tree, f"uts/{field}") == (sample.uts[field] + "\n").encode()


def test_tree_sym_linux_banner(sample, tree):
    data = read_file(tree, "sym/linux_banner", 64)
    assert data.startswith(f"Linux version {sample.uts['release']} ".encode())


def test_tree_kallsyms_has_every_core_line_of_proc_kallsyms(sample, tree):
    lines = set(read_file(tree, "kallsyms", 1 << 26).decode().splitlines())
    core = [f"{a:016x} {t} {n}" for a, t, n, module in sample.kallsyms if module is None]
    missing = [line for line in core if line not in lines]
    assert not missing[:10]


def test_tree_modules_is_proc_modules(sample, tree):
    assert read_file(tree, "modules").decode() == sample.modules_at_crash()


def test_tree_mm_usage_matches_makedumpfile(sample, tree):
    usage = {}
    comments = []
    for line in read_file(tree, "mm/usage").decode().splitlines():
        if line.startswith("#"):
            comments.append(line)
            continue
        name, value = line.split(" ")
        usage[name] = int(value)
    expected = sample.truth["makedumpfile_d31_page_counts"]
    assert list(usage) == list(MM_USAGE_LINES)
    # makedumpfile counted on the full ELF core; from struct page the classes must agree even
    # though this dump is filtered (DESIGN: only the zero test may need excluded content).
    for name in ("original_pages", "total_pages", *STRUCT_PAGE_CLASSES):
        assert usage[name] == expected[name], name
    if not comments:
        assert usage == {name: expected[name] for name in MM_USAGE_LINES}


def crash_functions(sample) -> tuple[str, ...]:
    """Functions on the crashed task's stack that the kernel's Call Trace in the log names."""
    if sample.truth.get("kexec", {}).get("mode") == "oops":
        return ("full_proxy_write", "vfs_write", "ksys_write")  # the write into the module
    return ("panic", "sysrq_handle_crash", "write_sysrq_trigger", "ksys_write")


def test_the_crashed_cpu_and_task(sample, tree):
    cpu, pid = sample.truth["crashed_cpu"], sample.truth["crashed_pid"]
    cpus = tree.lookup("cpus").entries()
    assert len(cpus) == sample.truth["guest"]["cpus"]
    for n in cpus:
        regs = read_file(tree, f"cpus/{n}/regs").decode().splitlines()
        assert ("crashed yes" in regs) == (int(n) == cpu), n
    assert read_file(tree, f"tasks/{pid}/comm") == (sample.truth["crashed_comm"] + "\n").encode()
    assert read_file(tree, f"tasks/{pid}/cpu") == f"{cpu}\n".encode()
    ps = read_file(tree, "ps").decode().splitlines()
    assert any(line.startswith(">") and line.split()[1] == str(pid) for line in ps)
    # The kernel's own trace in the log names these frames too (it unwound the same stack).
    stack = read_file(tree, f"tasks/{pid}/stack").decode()
    for function in crash_functions(sample):
        assert f"\n{function}+0x" in stack
        assert re.search(rf"\] +{function}\+0x", sample.text("dmesg.makedumpfile.txt"))


# --- mounted, as the README's quick start does it -------------------------------------------


@pytest.mark.mount
def test_quick_start_reads(sample, dump, tmp_path):
    with mounted([str(sample.dump)], tmp_path / "mnt") as mnt:
        assert (mnt / "info" / "OSRELEASE").read_text() == sample.uts["release"] + "\n"
        fd = os.open(mnt / "kvirt", os.O_RDONLY)
        try:
            offset = sample.symbol("linux_banner") & 0x7FFFFFFFFFFFFFFF  # the kvirt offset rule
            data = os.pread(fd, 64, offset)
        finally:
            os.close(fd)
        assert data.startswith(f"Linux version {sample.uts['release']} ".encode())
