"""``uts/``: the six new_utsname strings from init_uts_ns, synthetic and real."""

from __future__ import annotations

import pytest

import vmcorefs
from tests.mmbuilder import MiB, SyntheticKernel
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.uts import UTS_FIELDS
from vmcorefs.tree import build_tree

FIELDS = [b"Linux", b"host-\xc3\xa9", b"6.1.0-x", b"#1 SMP " + b"v" * 57, b"x86_64", b"(none)"]


def make(tmp_path, fields=FIELDS, drop=()):
    k = SyntheticKernel([(0, 64 * MiB)], init_struct_pages=False)
    k.add_uts(fields)
    return build_tree(vmcorefs.open_dump(k.write_core(tmp_path / "core", drop=drop))), k


def test_each_field_is_its_bytes_and_a_newline(tmp_path):
    tree, _ = make(tmp_path)
    assert sorted(tree.lookup("uts").entries()) == sorted(UTS_FIELDS)
    for name, value in zip(UTS_FIELDS, FIELDS, strict=True):
        assert tree.lookup(f"uts/{name}").read(0, 200) == value + b"\n"
    # a 64-byte value fills its array up to the NUL of the 65th byte
    assert len(FIELDS[3]) == 64


@pytest.mark.parametrize("key", ["SYMBOL(init_uts_ns)", "OFFSET(uts_namespace.name)"])
def test_missing_key_is_unavailable(tmp_path, key):
    tree, _ = make(tmp_path, drop=[key])
    # Without the offset the BTF is asked; this kernel has none, and the text says both.
    assert (
        tree.lookup("uts/release")
        .read(0, 200)
        .startswith(f"unavailable: VMCOREINFO has no {key}".encode())
    )


def test_before_5_11_the_btf_gives_the_offset():
    """No OFFSET(uts_namespace.name) before 5.11: struct uts_namespace from the BTF (there,
    a struct kref came first: the name at 4)."""
    from symtables import FakeKvirt

    from tests.btfbuilder import BtfBuilder
    from vmcorefs.kernel.btf import Btf
    from vmcorefs.kernel.uts import read_utsname
    from vmcorefs.vmcoreinfo import VmcoreInfo

    b = BtfBuilder()
    i = b.int_("int", 4, signed=True)
    kref = b.struct("kref", 4, [("refcount", i, 0)])
    char = b.int_("char", 1, signed=True, char=True)
    name = b.struct("new_utsname", 390, [("sysname", b.array(char, i, 65), 0)])
    b.struct("uts_namespace", 400, [("kref", kref, 0), ("name", name, 32)])
    btf = Btf(b.build())
    at = 0xFFFFFFFF82612000
    memory = b"\xff" * 4 + b"".join(f.ljust(65, b"\0") for f in FIELDS)
    vi = VmcoreInfo(f"SYMBOL(init_uts_ns)={at:x}\n".encode())
    uts = read_utsname(vi, FakeKvirt(at, memory), lambda: btf)
    assert [uts.field(n) for n in UTS_FIELDS] == list(FIELDS)
    with pytest.raises(Unavailable, match=r"OFFSET\(uts_namespace.name\)$"):
        read_utsname(vi, FakeKvirt(at, memory))


def test_absent_memory_is_unavailable(tmp_path):
    k = SyntheticKernel([(0, 64 * MiB)], init_struct_pages=False)
    k.symbol("init_uts_ns", 0xFFFFC90000000000)  # not mapped
    k.vmcoreinfo["OFFSET(uts_namespace.name)"] = "0"
    tree = build_tree(vmcorefs.open_dump(k.write_core(tmp_path / "core")))
    text = tree.lookup("uts/sysname").read(0, 300).decode()
    assert text.startswith("unavailable: init_uts_ns.name is not in the dump")
    assert text.count("\n") == 1


@pytest.mark.realdump
@pytest.mark.parametrize(
    "name", ["vmcore.elf", "mdf-d31.elf", "mdf-d31-zlib.kdump", "mdf-d31-zlib.flat"]
)
def test_real_dumps_equal_the_guests_uname(case, name):
    with vmcorefs.open_dump(str(case.dump(name))) as dump:
        tree = build_tree(dump)
        for field in UTS_FIELDS:
            want = (case.truth["uts"][field] + "\n").encode()
            assert tree.lookup(f"uts/{field}").read(0, 200) == want


def test_zero_fill_never_makes_names_up(tmp_path):
    """With --zero-fill an absent init_uts_ns page would read as zeros: uts/ still says it
    is not in the dump rather than show empty names."""
    k = SyntheticKernel([(0, 64 * MiB)], init_struct_pages=False)
    addr = k.add_uts(FIELDS)
    page = (addr - 0xFFFFFFFF80000000) & ~0xFFF
    path = k.write_core(tmp_path / "core", ranges=[(0, page), (page + 4096, 64 * MiB)])
    for zero_fill in (False, True):
        tree = build_tree(vmcorefs.open_dump(path, zero_fill=zero_fill))
        assert tree.lookup("uts/sysname").read(0, 300).startswith(b"unavailable: ")
        if zero_fill:  # the same address does read as zeros through phys
            assert tree.lookup("phys").read(page, 16) == bytes(16)


def test_a_btf_offset_outside_the_structure_is_unavailable():
    """The BTF's offset is bounded as VMCOREINFO's would be (a page holds the structure)."""
    from symtables import FakeKvirt

    from tests.btfbuilder import BtfBuilder
    from vmcorefs.kernel.btf import Btf
    from vmcorefs.kernel.uts import read_utsname
    from vmcorefs.vmcoreinfo import VmcoreInfo

    b = BtfBuilder()
    char = b.int_("char", 1, signed=True, char=True)
    i = b.int_("int", 4, signed=True)
    name = b.struct("new_utsname", 390, [("sysname", b.array(char, i, 65), 0)])
    b.struct("uts_namespace", 1 << 20, [("name", name, 8 * 65536)])
    at = 0xFFFFFFFF82612000
    vi = VmcoreInfo(f"SYMBOL(init_uts_ns)={at:x}\n".encode())
    with pytest.raises(Unavailable, match=r"and the BTF's \(65536\) is out of range"):
        read_utsname(vi, FakeKvirt(at, b"\0" * 400), lambda: Btf(b.build()))
