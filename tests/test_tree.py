"""The tree without FUSE: lookups, info/ files, byte windows, EIO where bytes are absent."""

from __future__ import annotations

import pytest

import vmcorefs
from tests.elfbuilder import PageTables, PhysImage, simple_core, vmcoreinfo_text
from vmcorefs.errors import CorruptError, FaultError, Unavailable
from vmcorefs.tree import (
    DIR_MODE,
    FILE_MODE,
    KVIRT_BASE,
    BytesFile,
    Directory,
    LazyWindowFile,
    NotFound,
    build_tree,
)

KTEXT = 0xFFFFFFFF81000000


@pytest.fixture
def tree(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    mem.write(0x40_0000, b"T" * 4096)
    mem.write(0x60_0000, b"H" * 4096)
    pt.map(KTEXT, 0x40_0000)
    pt.map(KTEXT + 0x1000, 0x60_0000)  # maps into the hole below: absent physical page
    vi = vmcoreinfo_text(pt, extra={"OFFSET(a/b)": "1", "NUMBER(x)": "-5"})
    path = tmp_path / "core"
    path.write_bytes(simple_core(mem, [(0, 0x50_0000), (0x80_0000, 0x80_1000)], vi))
    dump = vmcorefs.open_dump(str(path))
    yield build_tree(dump)
    dump.close()


def test_root_and_modes(tree):
    root = tree.lookup("/")
    assert isinstance(root, Directory) and root.mode == DIR_MODE
    assert {"README", "vmcoreinfo", "info", "phys", "kvirt"} <= set(root.entries())
    assert tree.lookup("/phys").mode == FILE_MODE
    with pytest.raises(NotFound):
        tree.lookup("/nope")
    with pytest.raises(NotFound):
        tree.lookup("/phys/below-a-file")


def test_info_files_hold_value_and_newline(tree):
    assert tree.lookup("/info/NUMBER(x)").read(0, 100) == b"-5\n"
    assert tree.lookup("/info/PAGESIZE").size() == 5
    assert "OFFSET(a%2Fb)" in tree.lookup("/info").entries()  # '/' cannot be in a name


def test_phys_window_sizes_and_reads(tree):
    phys = tree.lookup("/phys")
    assert phys.size() == 0x80_1000
    assert phys.read(0x40_0000 - 2, 4) == b"\0\0TT"
    assert phys.read(0x4F_FFFE, 8) == b"\0\0"  # short read at the end of a range
    with pytest.raises(FaultError):
        phys.read(0x50_0000, 8)  # ... then EIO
    assert phys.read(phys.size(), 8) == b""  # EOF: 0 bytes, not EIO


def test_kvirt_window_offset_rule(tree):
    kvirt = tree.lookup("/kvirt")
    assert kvirt.size() == 2**63 - 1
    off = KTEXT - KVIRT_BASE
    assert kvirt.read(off + 4090, 16) == b"T" * 6  # the next page maps absent memory
    with pytest.raises(FaultError):
        kvirt.read(off + 4096, 16)
    with pytest.raises(FaultError):
        kvirt.read(0, 8)  # 0x8000000000000000: non-canonical


def test_vmcoreinfo_file_is_the_note(tree):
    data = tree.lookup("/vmcoreinfo").read(0, 1 << 16)
    assert data.startswith(b"OSRELEASE=6.1.0-test\n")
    assert b"\0" not in data


def test_readme_names_the_format(tree):
    text = tree.lookup("/README").read(0, 1 << 16).decode()
    assert "ELF64 core" in text and "2**63" in text


@pytest.mark.parametrize("error", [FaultError, CorruptError])
def test_a_fault_reads_unavailable_in_files_directories_and_windows(error):
    """Whatever cannot be built because memory is absent or corrupt reads the same line,
    with the fault's kind, in a file, a directory's ``unavailable`` entry, and a window
    whose bounds are unknown."""
    fault = error("kvirt", KTEXT + 0x1000, "PTE not present")

    def fail():
        raise fault

    line = f"unavailable: kvirt {KTEXT + 0x1000:#x}: {fault.kind}: PTE not present\n".encode()
    assert BytesFile(fail).read(0, 200) == line
    assert Directory(fail).entries()["unavailable"].read(0, 200) == line
    window = LazyWindowFile(None, fail)  # type: ignore[arg-type]  # never read
    assert window.read(0, 200) == line and window.size() == len(line)
    missing = Unavailable("VMCOREINFO has no SYMBOL(x)")

    def lacking():
        raise missing

    for node in (BytesFile(lacking), LazyWindowFile(None, lacking)):  # type: ignore[arg-type]
        assert node.read(0, 200) == b"unavailable: VMCOREINFO has no SYMBOL(x)\n"


#: Keys no file can be named (as the probe of hostile dumps found them), each with its value.
ODD_KEYS = {
    "a/b": "slash",
    "a%2Fb": "looks escaped",
    ".": "dot",
    "..": "dotdot",
    "": "empty",
    "x\0y": "nul",
    "K\udcff": "not utf-8",  # the byte 0xff
}


@pytest.fixture
def odd_tree(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    vi = vmcoreinfo_text(pt, extra={"OSRELEASE": "6.1.0-\udcff\udcfe-odd", **ODD_KEYS})
    path = tmp_path / "core"
    path.write_bytes(simple_core(mem, [(0, 0x50_0000)], vi))
    dump = vmcorefs.open_dump(str(path))
    yield build_tree(dump)
    dump.close()


def test_info_keys_that_are_no_file_names_are_escaped_by_one_rule(odd_tree):
    info = odd_tree.lookup("/info").entries()
    names = {
        "a%2Fb": b"slash\n",
        "a%252Fb": b"looks escaped\n",
        "%2E": b"dot\n",
        "%2E%2E": b"dotdot\n",
        "%": b"empty\n",
        "x%00y": b"nul\n",
        "K\udcff": b"not utf-8\n",  # a name of bytes: FUSE writes it back as b"K\xff"
    }
    assert set(names) <= set(info)
    assert len(info) == len(set(info))
    for name in info:
        assert name not in ("", ".", "..") and "/" not in name and "\0" not in name
    for name, value in names.items():
        assert odd_tree.lookup(f"/info/{name}").read(0, 100) == value


def test_values_that_are_not_utf8_keep_their_bytes(odd_tree):
    release = b"6.1.0-\xff\xfe-odd"
    assert odd_tree.lookup("/info/OSRELEASE").read(0, 100) == release + b"\n"
    assert b"\nrelease: " + release + b"\n" in odd_tree.lookup("/README").read(0, 1 << 16)
    assert b"release: " + release + b"\n" in odd_tree.lookup("/summary").read(0, 1 << 16)
    assert b"OSRELEASE=" + release + b"\n" in odd_tree.lookup("/vmcoreinfo").read(0, 1 << 16)
