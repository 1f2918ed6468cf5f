"""--system-map and --vmlinux: merged when they match the dump, refused when they do not.

The System.map is made from the guest's own /proc/kallsyms (gt/kallsyms.txt) moved back to
link-time addresses; the vmlinux is a synthetic ELF (tests/vmlinuxbuilder.py) carrying the
dump's build ID and banner (the banner text comes from dmesg.makedumpfile.txt).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from symtables import gt_core_lines
from vmlinuxbuilder import (
    SHN_ABS,
    SHN_UNDEF,
    STB_LOCAL,
    STB_WEAK,
    STT_FILE,
    STT_NOTYPE,
    STT_OBJECT,
    STT_SECTION,
    Sym,
    build_vmlinux,
)

from tests.elfbuilder import START_KERNEL_map
from vmcorefs.cli import main
from vmcorefs.errors import DumpError
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.symfiles import _parse_symtab
from vmcorefs.tree import build_tree


def link_address(addr: int, case) -> int:
    return addr - case.truth["kerneloffset"] if addr >= START_KERNEL_map else addr


def vmcoreinfo_value(case, key: str) -> str:
    for line in case.file("vmcoreinfo.txt").read_text().splitlines():
        k, _, v = line.partition("=")
        if k == key:
            return v
    raise KeyError(key)


def banner_text(case) -> bytes:
    """linux_banner as the kernel printed it first: the log's first line, plus its newline."""
    first = case.file("dmesg.makedumpfile.txt").read_text().splitlines()[0]
    return first.split("] ", 1)[1].encode() + b"\n"


def write_map(tmp_path, case, shift: int = 0, extra: str = "") -> str:
    lines = [
        f"{link_address(a, case) + (shift if a >= START_KERNEL_map else 0):016x} {t} {n}"
        for a, t, n in gt_core_lines(case)
    ]
    path = tmp_path / "System.map"
    path.write_text("\n".join(lines) + "\n" + extra)
    return str(path)


# -- System.map ------------------------------------------------------------------------------


@pytest.mark.realdump
def test_system_map_merges(tmp_path, case):
    gt = gt_core_lines(case)
    text_addr = next(a for a, t, _ in gt if t == "T")
    extra = f"{link_address(text_addr, case):016x} t map_only_label\n0000000000001234 A absolute\n"
    path = write_map(tmp_path, case, extra=extra)
    with open_dump(str(case.file("vmcore.elf")), system_map=path) as dump:
        table = dump.symbols
        [s] = table.lookup("map_only_label")
        assert (s.address, s.type, s.size) == (text_addr, "t", None)
        assert table.lookup("absolute") == []  # kallsyms leaves absolute symbols out, so do we
        assert any(src.startswith("system-map") and "1 new" in src for src in table.sources)
        have = set(zip(table.addresses, table.types, table.names, strict=True))
        assert all(line in have for line in gt)
        assert "map_only_label" in build_tree(dump).lookup("sym").entries()


@pytest.mark.realdump
def test_system_map_of_another_build_is_refused(tmp_path, case):
    path = write_map(tmp_path, case, shift=0x1000)
    with pytest.raises(DumpError, match="does not match the dump") as exc:
        open_dump(str(case.file("vmcore.elf")), system_map=path)
    assert exc.value.path == path


@pytest.mark.realdump
def test_text_file_is_not_a_system_map(tmp_path, case):
    path = tmp_path / "notes.txt"
    path.write_text("hello world\nthis is text\n")
    with pytest.raises(DumpError, match="not a System.map"):
        open_dump(str(case.file("vmcore.elf")), system_map=str(path))


@pytest.mark.realdump
def test_cli_refuses_a_foreign_map_in_one_line(tmp_path, case, capsys):
    path = write_map(tmp_path, case, shift=0x200000)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rc = main(["--system-map", path, str(case.file("vmcore.elf")), str(mnt)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith(f"vmcorefs: {path}: ")
    assert "Traceback" not in err


# -- vmlinux ---------------------------------------------------------------------------------


def make_vmlinux(tmp_path, case, *, build_id=None, banner=None, shift=0, extra=()):
    """A vmlinux for this case's kernel holding a few of its symbols at link-time addresses."""
    gt = {n: (a, t) for a, t, n in gt_core_lines(case)}
    banner = banner_text(case) if banner is None else banner
    rodata = link_address(gt["linux_banner"][0], case) + shift
    text = link_address(gt["_stext"][0], case) + shift
    bss = link_address(gt["__bss_start"][0], case) + shift
    syms = [
        Sym("linux_banner", rodata, ".rodata", type=STT_OBJECT, size=len(banner) + 1),
        Sym("_stext", text, ".text", type=STT_NOTYPE),
        Sym("schedule", link_address(gt["schedule"][0], case) + shift, ".text", size=0x123),
        Sym("cpu_tss_rw", gt["cpu_tss_rw"][0], ".data..percpu", type=STT_OBJECT, size=0x5000),
        Sym("vmlinux_only", bss + 0x10, ".bss", bind=STB_LOCAL, type=STT_OBJECT, size=8),
        Sym("an_absolute", 0x1234, SHN_ABS, type=STT_NOTYPE),
        Sym("an_undefined", 0, SHN_UNDEF, type=STT_NOTYPE),
        Sym("file.c", 0, SHN_ABS, bind=STB_LOCAL, type=STT_FILE),
        Sym("", text, ".text", bind=STB_LOCAL, type=STT_SECTION),
        *extra,
    ]
    if build_id is None:
        build_id = bytes.fromhex(vmcoreinfo_value(case, "BUILD-ID"))
    data = build_vmlinux(
        text=(text, 0x1000000),
        rodata=(rodata, banner + b"\0"),
        bss=(bss, 0x100000),
        symbols=syms,
        build_id=build_id,
    )
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    return str(path)


@pytest.mark.realdump
def test_vmlinux_merges_with_sizes(tmp_path, case):
    path = make_vmlinux(tmp_path, case)
    gt = {n: (a, t) for a, t, n in gt_core_lines(case)}
    with open_dump(str(case.file("vmcore.elf")), vmlinux=path) as dump:
        table = dump.symbols
        [s] = table.lookup("schedule")
        assert (s.address, s.type, s.size) == (gt["schedule"][0], "T", 0x123)
        # The dump's kallsyms letter wins where both have the pair ('A', not nm's 'D').
        [s] = table.lookup("cpu_tss_rw")
        assert (s.address, s.type, s.size) == (gt["cpu_tss_rw"][0], "A", 0x5000)
        [s] = table.lookup("vmlinux_only")
        assert (s.type, s.size) == ("b", 8)
        assert s.address == gt["__bss_start"][0] + 0x10
        for name in ("an_absolute", "an_undefined", "file.c", ""):
            assert table.lookup(name) == []
        tree = build_tree(dump)
        assert tree.lookup("sym/schedule").size() == 0x123
        sym, off, size = table.containing(gt["schedule"][0] + 4)
        assert (sym.name, off, size) == ("schedule", 4, 0x123)


@pytest.mark.realdump
def test_vmlinux_with_another_build_id_is_refused(tmp_path, case):
    path = make_vmlinux(tmp_path, case, build_id=bytes(20))
    with pytest.raises(DumpError, match="build ID 0000"):
        open_dump(str(case.file("vmcore.elf")), vmlinux=path)


@pytest.mark.realdump
def test_vmlinux_with_another_banner_is_refused(tmp_path, case):
    banner = banner_text(case).replace(b"#1 SMP", b"#2 SMP")
    path = make_vmlinux(tmp_path, case, banner=banner)
    with pytest.raises(DumpError, match="linux_banner"):
        open_dump(str(case.file("vmcore.elf")), vmlinux=path)


@pytest.mark.realdump
def test_vmlinux_with_moved_symbols_is_refused(tmp_path, case):
    path = make_vmlinux(tmp_path, case, shift=0x1000)
    with pytest.raises(DumpError, match="does not match the dump"):
        open_dump(str(case.file("vmcore.elf")), vmlinux=path)


@pytest.mark.realdump
def test_vmlinux_not_elf_or_stripped(tmp_path, case):
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ" + bytes(100))
    with pytest.raises(DumpError, match="not an ELF file"):
        open_dump(str(case.file("vmcore.elf")), vmlinux=str(path))
    stripped = tmp_path / "stripped"
    stripped.write_bytes(
        build_vmlinux(
            text=(0xFFFFFFFF81000000, 0x1000),
            rodata=(0xFFFFFFFF82000000, b"x\0"),
            bss=(0xFFFFFFFF83000000, 0x1000),
            symbols=[],
            build_id=None,
            with_symtab=False,
        )
    )
    with pytest.raises(DumpError, match=r"no \.symtab"):
        open_dump(str(case.file("vmcore.elf")), vmlinux=str(stripped))


def test_type_letters_agree_with_nm(tmp_path):
    """Our ELF symbol classification gives the letters binutils' nm prints."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    text, rodata, bss = 0xFFFFFFFF81000000, 0xFFFFFFFF82000000, 0xFFFFFFFF83000000
    syms = [
        Sym("f", text + 0x10, ".text", bind=STB_LOCAL, size=5),
        Sym("g", text + 0x20, ".text"),
        Sym("w", text + 0x30, ".text", bind=STB_WEAK),
        Sym("wo", rodata + 4, ".rodata", bind=STB_WEAK, type=STT_OBJECT),
        Sym("ro", rodata, ".rodata", type=STT_OBJECT),
        Sym("lr", rodata + 8, ".rodata", bind=STB_LOCAL, type=STT_OBJECT),
        Sym("pc", 0x40, ".data..percpu", type=STT_OBJECT),
        Sym("pcl", 0x80, ".data..percpu", bind=STB_LOCAL, type=STT_OBJECT),
        Sym("bs", bss, ".bss", type=STT_OBJECT),
        Sym("bl", bss + 0x10, ".bss", bind=STB_LOCAL, type=STT_OBJECT),
    ]
    data = build_vmlinux(
        text=(text, 0x1000),
        rodata=(rodata, bytes(16)),
        bss=(bss, 0x1000),
        symbols=syms,
        build_id=None,
    )
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    out = subprocess.run([nm, str(path)], capture_output=True, text=True, check=True).stdout
    expected = {line.split()[2]: line.split()[1] for line in out.splitlines()}
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        sections = [
            (s["sh_type"], s["sh_flags"], s["sh_addr"], s["sh_offset"], s["sh_size"])
            for s in elf.iter_sections()
        ]
        symtab = elf.get_section_by_name(".symtab")
        strtab = elf.get_section(symtab["sh_link"])
        got = _parse_symtab(str(path), symtab.data(), strtab.data(), sections)
    assert {n: t for n, _a, t, _s in got} == expected
