"""The BTF parser against blobs the tests build (tests/btfbuilder.py) and the real dumps'
own BTF (checked against VMCOREINFO's offsets and bpftool, both independent of the parser)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess

import pytest

from tests.btfbuilder import BtfBuilder
from vmcorefs.errors import Unavailable
from vmcorefs.kernel import btf as B
from vmcorefs.kernel.btf import Btf, BtfError, read_bits


def sample() -> tuple[Btf, dict[str, int]]:
    """A small kernel-like type graph using every kind."""
    b = BtfBuilder()
    ids: dict[str, int] = {}
    ids["int"] = b.int_("int", 4, signed=True)
    ids["uint"] = b.int_("unsigned int", 4)
    ids["ulong"] = b.int_("long unsigned int", 8)
    ids["char"] = b.int_("char", 1, char=True, signed=True)
    ids["bool"] = b.int_("_Bool", 1, boolean=True)
    ids["u8"] = b.typedef("u8", b.int_("unsigned char", 1))
    ids["s16"] = b.typedef("s16", b.int_("short int", 2, signed=True))
    ids["u64"] = b.typedef("u64", ids["ulong"])
    ids["cvu64"] = b.const(b.volatile(ids["u64"]))
    ids["tagged"] = b.type_tag("percpu", ids["ulong"])
    ids["restrict"] = b.restrict(b.ptr(ids["char"]))
    ids["comm"] = b.array(ids["char"], ids["int"], 16)
    ids["row"] = b.array(ids["int"], ids["int"], 3)
    ids["matrix"] = b.array(ids["row"], ids["int"], 2)  # int[2][3]
    ids["fwd_task"] = b.fwd("task_struct")
    ids["fwd_union"] = b.fwd("u_fwd", union=True)
    # struct list_head { struct list_head *next, *prev; }
    lh = b.next_id
    ptr_lh = lh + 1
    ids["list_head"] = b.struct("list_head", 16, [("next", ptr_lh, 0), ("prev", ptr_lh, 64)])
    assert b.ptr(lh) == ptr_lh
    ids["thread"] = b.struct("thread_struct", 24, [("sp", ids["ulong"], 0), ("es", ids["int"], 64)])
    # bitfields with kind_flag: like struct orc_entry
    ids["orc"] = b.struct(
        "orc_entry",
        6,
        [
            ("sp_offset", ids["s16"], 0),
            ("bp_offset", ids["s16"], 16),
            ("sp_reg", ids["uint"], 32, 4),
            ("bp_reg", ids["uint"], 36, 4),
            ("type", ids["uint"], 40, 2),
            ("end", ids["uint"], 42, 1),
        ],
    )
    # bitfields without kind_flag: the int type carries the width (and an int offset)
    ids["int3"] = b.int_("unsigned int", 4, bits=3)
    ids["int5_off2"] = b.int_("unsigned int", 4, bits=5, offset=2)
    ids["oldbits"] = b.struct(
        "oldbits", 4, [("a", ids["int3"], 0), ("b", ids["int5_off2"], 3)], kflag=False
    )
    # anonymous members, nested two deep, behind a typedef and a const
    inner_anon = b.struct("", 16, [("deep", ids["ulong"], 0), ("deeper", ids["int"], 64)])
    anon_union = b.union("", 16, [("lru", ids["list_head"], 0), ("", b.const(inner_anon), 0)])
    ids["info"] = b.struct(
        "thread_info", 24, [("flags", ids["ulong"], 0), ("cpu", ids["uint"], 128)]
    )
    ids["state_enum"] = b.enum("", [("TASK_COMM_LEN", 16), ("NEG", -1)], signed=True)
    ids["uenum"] = b.enum("module_state", [("MODULE_STATE_LIVE", 0), ("BIG", -2)])
    ids["e64"] = b.enum64("big64", [("E_HUGE", 1 << 40), ("E_NEG", -5)], signed=True)
    ids["e64u"] = b.enum64("big64u", [("U_MAX", (1 << 64) - 1)])
    vol_state = b.volatile(ids["uint"])
    anon_t = b.typedef("anon_t", anon_union)
    ts = b.next_id
    task_ptr = ts + 1
    ids["task"] = b.struct(
        "task_struct",
        256,
        [
            ("thread_info", ids["info"], 0),
            ("__state", vol_state, 192),
            ("", anon_t, 256),
            ("tasks", ids["list_head"], 384),
            ("real_parent", task_ptr, 512),
            ("comm", ids["comm"], 576),
            ("thread", ids["thread"], 704),
            ("mat", ids["matrix"], 896),
            ("pcpu", ids["tagged"], 1088),
            ("stamp", ids["cvu64"], 1152),
        ],
    )
    assert ids["task"] == ts and b.ptr(ts) == task_ptr
    ids["tdef_task"] = b.typedef("task_t", ids["task"])
    ids["proto"] = b.func_proto(ids["int"], [("p", b.ptr(ids["task"])), ("", 0)])
    ids["func"] = b.func("wake_up_process", ids["proto"], linkage=1)
    ids["var"] = b.var("runqueues", ids["ulong"], linkage=1)
    ids["datasec"] = b.datasec(".data..percpu", 64, [(ids["var"], 8, 8)])
    ids["float"] = b.float_("double", 8)
    ids["decl_tag"] = b.decl_tag("user", ids["task"], 2)
    ids["u_def"] = b.union("u_fwd", 8, [("x", ids["ulong"], 0)])
    ids["cycle_a"] = b.next_id
    b.typedef("cyc_a", b.next_id + 1)
    b.typedef("cyc_b", ids["cycle_a"])
    return Btf(b.build()), ids


@pytest.fixture(scope="module")
def btf_sample():
    return sample()


# -- decoding every kind --------------------------------------------------------------------


def test_every_kind_decodes(btf_sample):
    btf, ids = btf_sample
    kinds = {t.kind for t in btf.types()}
    assert kinds == set(range(1, B.NR_BTF_KINDS))
    assert btf.type(0).kind == B.BTF_KIND_UNKN and btf.type(0).name == "void"


def test_int_encoding(btf_sample):
    btf, ids = btf_sample
    t = btf.type(ids["char"])
    assert (t.kind, t.size, t.int_bits, t.signed) == (B.BTF_KIND_INT, 1, 8, True)
    assert t.int_encoding == B.BTF_INT_SIGNED | B.BTF_INT_CHAR
    assert btf.type(ids["bool"]).int_encoding == B.BTF_INT_BOOL
    assert not btf.type(ids["uint"]).signed
    t = btf.type(ids["int5_off2"])
    assert (t.int_bits, t.int_offset) == (5, 2)


def test_refs_array_func_var_datasec(btf_sample):
    btf, ids = btf_sample
    arr = btf.type(ids["comm"])
    assert (arr.elem_type, arr.index_type, arr.nelems) == (ids["char"], ids["int"], 16)
    proto = btf.type(ids["proto"])
    assert proto.ref == ids["int"]
    assert [p.name for p in proto.params] == ["p", ""]
    assert proto.params[1].type_id == 0  # varargs
    f = btf.type(ids["func"])
    assert (f.name, f.ref, f.linkage) == ("wake_up_process", ids["proto"], 1)
    v = btf.type(ids["var"])
    assert (v.name, v.ref, v.linkage) == ("runqueues", ids["ulong"], 1)
    ds = btf.type(ids["datasec"])
    assert (ds.name, ds.size, ds.secinfo) == (".data..percpu", 64, ((ids["var"], 8, 8),))
    assert btf.type(ids["float"]).size == 8
    tag = btf.type(ids["decl_tag"])
    assert (tag.name, tag.ref, tag.component_idx) == ("user", ids["task"], 2)
    tt = btf.type(ids["tagged"])
    assert (tt.kind, tt.name, tt.ref) == (B.BTF_KIND_TYPE_TAG, "percpu", ids["ulong"])
    assert btf.type(ids["fwd_union"]).kind_flag and not btf.type(ids["fwd_task"]).kind_flag


def test_enums(btf_sample):
    btf, ids = btf_sample
    assert [(v.name, v.value) for v in btf.type(ids["state_enum"]).values] == [
        ("TASK_COMM_LEN", 16),
        ("NEG", -1),
    ]
    # an unsigned 32-bit enum: -2 stored is 0xfffffffe
    assert btf.enum_value("enum module_state", "BIG") == 0xFFFFFFFE
    assert btf.enum_value("enum big64", "E_HUGE") == 1 << 40
    assert btf.enum_value("enum big64", "E_NEG") == -5
    assert btf.enum_value("enum big64u", "U_MAX") == (1 << 64) - 1
    assert btf.enumerator("TASK_COMM_LEN") == 16
    with pytest.raises(BtfError, match="NOPE"):
        btf.enumerator("NOPE")


# -- names, resolution, sizes -----------------------------------------------------------------


def test_find_by_kind_and_name(btf_sample):
    btf, ids = btf_sample
    assert btf.find("struct task_struct").id == ids["task"]  # the FWD is skipped
    assert btf.find("task_t").id == ids["tdef_task"]
    assert btf.find("typedef task_t").id == ids["tdef_task"]
    assert btf.find("union u_fwd").id == ids["u_def"]
    assert btf.find_all("task_struct") == [ids["fwd_task"], ids["task"]]
    with pytest.raises(BtfError, match="no type"):
        btf.find("struct nosuch")
    # a name that is a suffix of another string is not matched
    assert btf.find_all("head") == []


def test_resolve_and_sizeof(btf_sample):
    btf, ids = btf_sample
    assert btf.resolve(ids["cvu64"]).id == ids["ulong"]
    assert btf.resolve(ids["tagged"]).id == ids["ulong"]
    assert btf.resolve(ids["tdef_task"]).id == ids["task"]
    assert btf.sizeof(ids["matrix"]) == 24  # int[2][3]
    assert btf.sizeof(ids["comm"]) == 16
    assert btf.sizeof(ids["restrict"]) == 8
    assert btf.sizeof(ids["tdef_task"]) == 256
    assert btf.sizeof(ids["uenum"]) == 4 and btf.sizeof(ids["e64"]) == 8
    with pytest.raises(BtfError, match="no size"):
        btf.sizeof(ids["fwd_task"])
    assert btf.type_name(ids["comm"]) == "char [16]"
    assert btf.type_name(btf.member("struct task_struct", "real_parent").type_id) == (
        "struct task_struct *"
    )
    assert btf.type_name(ids["cvu64"]) == "const volatile u64"


def test_typedef_cycle_is_bounded(btf_sample):
    btf, ids = btf_sample
    with pytest.raises(BtfError, match="typedefs"):
        btf.resolve(ids["cycle_a"])
    with pytest.raises(BtfError):
        btf.sizeof(ids["cycle_a"])


# -- members -------------------------------------------------------------------------------


def test_offsetof_paths(btf_sample):
    btf, ids = btf_sample
    assert btf.offsetof("struct task_struct", "tasks") == 48
    assert btf.offsetof("struct task_struct", "tasks.prev") == 56
    assert btf.offsetof("struct task_struct", "thread.sp") == 88
    assert btf.offsetof("struct task_struct", "thread.es") == 96
    assert btf.offsetof("struct task_struct", "thread_info.cpu") == 16
    assert btf.offsetof("struct task_struct", "__state") == 24
    assert btf.offsetof("task_t", "comm") == 72  # through the typedef
    assert btf.offsetof(ids["task"], "mat[1]") == 112 + 12
    assert btf.offsetof(ids["task"], "mat[1][2]") == 112 + 12 + 8
    assert btf.offsetof(ids["task"], "comm[5]") == 77
    assert btf.member_size("struct task_struct", "comm") == 16
    assert btf.member_size("struct task_struct", "stamp") == 8
    m = btf.member("struct task_struct", "real_parent")
    assert btf.resolve(btf.type(m.type_id).ref).id == ids["task"]


def test_anonymous_members_are_searched(btf_sample):
    btf, _ = btf_sample
    # task_struct -> (typedef) anon union at byte 32 -> lru / (const) anon struct -> deep
    assert btf.offsetof("struct task_struct", "lru") == 32
    assert btf.offsetof("struct task_struct", "lru.prev") == 40
    assert btf.offsetof("struct task_struct", "deep") == 32
    assert btf.offsetof("struct task_struct", "deeper") == 40


def test_bitfields_with_and_without_kind_flag(btf_sample):
    btf, _ = btf_sample
    got = {
        n: (m.bit_offset, m.bitfield_size)
        for n in ("sp_offset", "bp_offset", "sp_reg", "bp_reg", "type", "end")
        for m in [btf.member("struct orc_entry", n)]
    }
    assert got == {
        "sp_offset": (0, 0),
        "bp_offset": (16, 0),
        "sp_reg": (32, 4),
        "bp_reg": (36, 4),
        "type": (40, 2),
        "end": (42, 1),
    }
    a, b = btf.member("struct oldbits", "a"), btf.member("struct oldbits", "b")
    assert (a.bit_offset, a.bitfield_size) == (0, 3)
    assert (b.bit_offset, b.bitfield_size) == (5, 5)  # member offset 3 + int offset 2
    with pytest.raises(BtfError, match="bit 36"):
        btf.offsetof("struct orc_entry", "bp_reg")
    with pytest.raises(BtfError, match="bitfield"):
        btf.member("struct orc_entry", "sp_reg.x")


def test_missing_members_are_named(btf_sample):
    btf, _ = btf_sample
    with pytest.raises(BtfError, match="'nope'"):
        btf.offsetof("struct task_struct", "thread.nope")
    with pytest.raises(BtfError, match="not a struct"):
        btf.offsetof("struct task_struct", "comm.x")
    with pytest.raises(BtfError, match="index past"):
        btf.offsetof("struct task_struct", "comm[16]")
    with pytest.raises(BtfError, match="bad member path"):
        btf.offsetof("struct task_struct", "comm..x")
    with pytest.raises(BtfError, match="not a struct"):
        btf.offsetof("u64", "x")
    assert not btf.has_member("struct task_struct", "on_cpu")
    assert btf.has_member("struct task_struct", "thread.sp")


def test_read_bits_orc_entry():
    # sp_offset=16, bp_offset=-16, sp_reg=5 (SP), bp_reg=1 (PREV_SP), type=2, end=1
    raw = struct.pack("<hh", 16, -16) + bytes([5 | (1 << 4), 2 | (1 << 2)])
    assert read_bits(raw, 0, 16, signed=True) == 16
    assert read_bits(raw, 16, 16, signed=True) == -16
    assert read_bits(raw, 32, 4) == 5
    assert read_bits(raw, 36, 4) == 1
    assert read_bits(raw, 40, 2) == 2
    assert read_bits(raw, 42, 1) == 1
    assert read_bits(bytes([0b1110_0000, 0b0000_0001]), 5, 4) == 0b1111  # across a byte
    assert read_bits(bytes([0b0110_0000]), 5, 2, signed=True) == -1  # 0b11 -> -1
    with pytest.raises(BtfError):
        read_bits(b"\0", 4, 8)


# -- validation ----------------------------------------------------------------------------


def _blob(**kw) -> bytes:
    b = BtfBuilder()
    b.int_("int", 4, signed=True)
    b.struct("s", 4, [("a", 1, 0)])
    return b.build(**kw)


def test_valid_variants_parse():
    assert Btf(_blob()).count == 3
    assert Btf(_blob(hdr_len=32)).offsetof("struct s", "a") == 0  # a longer header
    assert Btf(_blob(gap=8)).find("struct s").size == 4  # sections need not touch


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:10], "shorter than a BTF header"),
        (lambda d: b"\x12\x34" + d[2:], "bad magic"),
        (lambda d: b"\xeb\x9f" + d[2:], "big-endian"),
        (lambda d: d[:2] + b"\x02" + d[3:], "version"),
        (lambda d: d[:4] + struct.pack("<I", 8) + d[8:], "header length"),
        (lambda d: d[:4] + struct.pack("<I", 1 << 20) + d[8:], "header length"),
        (lambda d: d[:-1], "string section"),  # strings run past the end
        (lambda d: d[:12] + struct.pack("<I", 1 << 30) + d[16:], "type section"),
        (lambda d: d[:12] + struct.pack("<I", 13) + d[16:], "aligned"),
        (lambda d: d[:20] + struct.pack("<I", 0) + d[24:], "empty string section"),
    ],
)
def test_header_validation(mutate, message):
    with pytest.raises(BtfError, match=message):
        Btf(mutate(_blob()))


def _types_with(record: bytes) -> bytes:
    strings = b"\0a\0"
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(record), len(record), len(strings))
    return hdr + record + strings


def test_record_validation():
    info = (B.BTF_KIND_STRUCT << 24) | 5  # five members announced, none present
    with pytest.raises(BtfError, match="runs past"):
        Btf(_types_with(struct.pack("<III", 1, info, 4)))
    with pytest.raises(BtfError, match="unknown kind"):
        Btf(_types_with(struct.pack("<III", 1, 25 << 24, 0)))
    with pytest.raises(BtfError, match="unknown kind"):
        Btf(_types_with(struct.pack("<III", 1, 0, 0)))
    with pytest.raises(BtfError, match="name offset"):
        Btf(_types_with(struct.pack("<III", 99, B.BTF_KIND_INT << 24, 4) + b"\x20\0\0\0"))
    with pytest.raises(BtfError, match="runs past"):
        Btf(_types_with(struct.pack("<II", 1, B.BTF_KIND_PTR << 24)))
    with pytest.raises(BtfError, match="runs past"):
        Btf(_types_with(struct.pack("<I", 1)))
    with pytest.raises(BtfError, match="start and end with a NUL"):
        blob = _types_with(struct.pack("<III", 1, B.BTF_KIND_PTR << 24, 0))
        Btf(blob[:-3] + b"xa\0")
    # a reference past the last type is found when the type is decoded
    btf = Btf(_types_with(struct.pack("<III", 1, B.BTF_KIND_PTR << 24, 7)))
    with pytest.raises(BtfError, match=r"\[7\]"):
        btf.type(1)
    with pytest.raises(BtfError):
        btf.type(2)
    # an int whose bits do not fit its size
    btf = Btf(_types_with(struct.pack("<IIII", 1, B.BTF_KIND_INT << 24, 1, 9)))
    with pytest.raises(BtfError, match="do not fit"):
        btf.type(1)


# -- loading from memory -------------------------------------------------------------------


class _Symbols:
    def __init__(self, table: dict[str, int]) -> None:
        self.table = table

    def get(self, name: str) -> int | None:
        return self.table.get(name)


class _Memory:
    def __init__(self, base: int, data: bytes, present: int | None = None) -> None:
        self.base, self.data = base, data
        self.present = len(data) if present is None else present

    def read(self, addr: int, size: int) -> bytes:
        lo = addr - self.base
        if not 0 <= lo < self.present:
            return b""
        return self.data[lo : min(lo + size, self.present)]


def test_load_btf_reasons():
    blob = _blob()
    base = 0xFFFFFFFF82000000
    syms = _Symbols({"__start_BTF": base, "__stop_BTF": base + len(blob)})
    assert B.load_btf(_Memory(base, blob), syms).find("struct s").size == 4
    with pytest.raises(Unavailable, match="no __start_BTF"):
        B.load_btf(_Memory(base, blob), _Symbols({}))
    with pytest.raises(Unavailable, match="not in the dump"):
        B.load_btf(_Memory(base, blob, present=10), syms)
    with pytest.raises(Unavailable, match="fails validation: bad magic"):
        B.load_btf(_Memory(base, b"\0" * len(blob)), syms)
    bad = _Symbols({"__start_BTF": base, "__stop_BTF": base})
    with pytest.raises(Unavailable, match="not a BTF span"):
        B.load_btf(_Memory(base, blob), bad)


# -- found by its header (a symbol table without __start_BTF) ------------------------------

_IMAGE = 0xFFFFFFFF83C00000


def _kernel_blob() -> bytes:
    """A small vmlinux-like BTF: it describes struct task_struct."""
    b = BtfBuilder()
    i = b.int_("int", 4, signed=True)
    b.struct("task_struct", 8, [("pid", i, 0), ("tgid", i, 32)])
    return b.build()


def _image(*parts: bytes) -> tuple[object, dict[str, int]]:
    """A kernel image at _IMAGE: random "text", then ``parts`` (each 8-aligned); their places."""
    import random

    from tests.symtables import FakeKvirt

    data = bytearray(random.Random(5).randbytes(0x30000))
    places = {}
    for i, part in enumerate(parts):
        data += bytes(-len(data) % 8)
        places[i] = _IMAGE + len(data)
        data += part + random.Random(i).randbytes(300)
    return FakeKvirt(_IMAGE, bytes(data)), places


def _vi():
    from vmcorefs.vmcoreinfo import VmcoreInfo

    return VmcoreInfo(f"SYMBOL(_stext)={_IMAGE:x}\n".encode())


def test_btf_found_by_its_header_among_decoys():
    blob = _kernel_blob()
    bad_sections = bytearray(blob)
    struct.pack_into("<I", bad_sections, 20, 1 << 30)  # str_len: far past memory and 64 MiB
    decoys = [
        bytes(bad_sections),
        _blob(),  # valid BTF, but not the kernel's (no struct task_struct)
        _blob(version=2),  # another version: not a header this kernel writes
        blob[:40],  # the header of a blob cut short
    ]
    kvirt, places = _image(*decoys, blob)
    assert B.find_btf(kvirt, _vi(), _Symbols({})) == (places[4], places[4] + len(blob))
    # kernel_btf_bounds: the symbols first, the search only without them.
    syms = _Symbols({"__start_BTF": places[4], "__stop_BTF": places[4] + len(blob)})
    assert B.kernel_btf_bounds(kvirt, _vi(), syms) == (places[4], places[4] + len(blob))
    assert B.kernel_btf_bounds(kvirt, _vi(), _Symbols({}))[0] == places[4]
    btf = B.load_btf(kvirt, _Symbols({}), B.kernel_btf_bounds(kvirt, _vi(), _Symbols({})))
    assert btf.offsetof("struct task_struct", "tgid") == 4


def test_btf_search_messages():
    kvirt, _ = _image(_blob())
    with pytest.raises(Unavailable) as exc:
        B.kernel_btf_bounds(kvirt, _vi(), _Symbols({}))
    assert exc.value.reason.startswith("BTF: no 0xeB9F header in the kernel's read-only data (0")
    assert "1 header(s) refused" in exc.value.reason
    assert "task_struct" in exc.value.reason
    assert "the symbol table has no __start_BTF" in exc.value.reason
    kvirt, _ = _image(b"no btf here")
    with pytest.raises(Unavailable, match=r"no 0xeB9F header .* MiB scanned; the symbol table"):
        B.kernel_btf_bounds(kvirt, _vi(), _Symbols({}))


def test_btf_search_keeps_to_the_read_only_data():
    blob = _kernel_blob()
    kvirt, places = _image(blob)
    rodata = {"__start_rodata": _IMAGE, "__end_rodata": places[0]}  # ends before the blob
    with pytest.raises(Unavailable, match="no 0xeB9F header"):
        B.find_btf(kvirt, _vi(), _Symbols(rodata))
    rodata["__end_rodata"] = places[0] + len(blob)
    assert B.find_btf(kvirt, _vi(), _Symbols(rodata))[0] == places[0]


def test_wrong_btf_symbols_are_not_searched_around():
    kvirt, places = _image(_kernel_blob())
    bad = _Symbols({"__start_BTF": places[0], "__stop_BTF": places[0]})
    with pytest.raises(Unavailable, match="not a BTF span"):
        B.kernel_btf_bounds(kvirt, _vi(), bad)


# -- the real dumps ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_btf(case):
    """The case's BTF, read from kvirt at the bounds of kernel-truth.json (drgn's)."""
    import vmcorefs

    bounds = case.json("kernel-truth.json")["btf"]
    start, stop = int(bounds["start"]), int(bounds["stop"])
    with vmcorefs.open_dump(str(case.file("vmcore.elf"))) as dump:
        data = dump.kvirt.read(start, stop - start)
    assert len(data) == stop - start
    return Btf(data), data


@pytest.mark.realdump
def test_real_btf_matches_vmcoreinfo_offsets(case, real_btf):
    """Every OFFSET()/SIZE() that the kernel wrote into VMCOREINFO (computed by the compiler
    with offsetof/sizeof) equals what the BTF says."""
    btf, _ = real_btf
    text = (case.root / "vmcoreinfo.txt").read_text()
    checked = 0
    for key, struct_name, member, value in re.findall(
        r"^(OFFSET|SIZE)\(([A-Za-z_0-9]+)(?:\.([A-Za-z_0-9.]+))?\)=(\d+)$", text, re.M
    ):
        name = struct_name
        tid = None
        for candidate in (f"struct {name}", name):
            try:
                tid = btf.find(candidate).id
                break
            except BtfError:
                continue
        assert tid is not None, name
        if key == "SIZE":
            assert btf.sizeof(tid) == int(value), name
        else:
            assert btf.offsetof(tid, member) == int(value), f"{name}.{member}"
        checked += 1
    assert checked >= 40


@pytest.mark.realdump
def test_real_btf_matches_bpftool(real_btf, tmp_path):
    """bpftool (libbpf, an independent parser) dumps the same members and offsets."""
    tool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    if not tool:
        pytest.skip("bpftool is not installed")
    btf, data = real_btf
    path = tmp_path / "btf"
    path.write_bytes(data)
    out = subprocess.run(
        [tool, "-j", "btf", "dump", "file", str(path)], capture_output=True, check=True
    ).stdout
    types = json.loads(out)["types"]
    assert len(types) == btf.count - 1
    for ref in types[:: max(1, len(types) // 4000)]:  # a spread of about 4000 types
        mine = btf.type(ref["id"])
        assert mine.kind_name == ref["kind"], ref
        assert mine.name == ("" if ref["name"] == "(anon)" else ref["name"]), ref
        if ref["kind"] in ("STRUCT", "UNION"):
            assert mine.size == ref["size"]
            got = [(m.name, m.type_id, m.bit_offset, m.bitfield_size) for m in mine.members]
            want = [
                (
                    "" if m["name"] == "(anon)" else m["name"],
                    m["type_id"],
                    m["bits_offset"],
                    m.get("bitfield_size", 0),
                )
                for m in ref["members"]
            ]
            assert got == want, ref["name"]
        elif ref["kind"] == "ARRAY":
            assert (mine.elem_type, mine.nelems) == (ref["type_id"], ref["nr_elems"])
        elif ref["kind"] in ("ENUM", "ENUM64"):
            assert [(v.name, v.value) for v in mine.values] == [
                (v["name"], v["val"]) for v in ref["values"]
            ]


@pytest.mark.realdump
def test_real_btf_kernel_layouts(real_btf):
    """Layouts the tasks and unwinder rely on, with values from the 6.1 x86_64 sources."""
    btf, _ = real_btf
    assert btf.sizeof(btf.find("struct inactive_task_frame")) == 7 * 8
    assert btf.offsetof("struct inactive_task_frame", "ret_addr") == 48
    assert btf.sizeof(btf.find("struct orc_entry")) == 6
    assert btf.member("struct orc_entry", "type").bitfield_size == 2
    assert btf.member("struct task_struct", "comm").type_id
    assert btf.member_size("struct task_struct", "comm") == btf.enumerator("TASK_COMM_LEN")
    assert btf.offsetof("struct list_head", "prev") == 8
    assert btf.sizeof(btf.find("struct pt_regs")) == 21 * 8
    assert btf.offsetof("struct pt_regs", "ip") == 16 * 8


def test_members_must_lie_inside_their_struct():
    b = BtfBuilder()
    u64 = b.int_("long unsigned int", 8)
    b.struct("past", 8, [("a", u64, 72)])  # starts past its struct's end
    b.struct("overlong", 8, [("a", u64, 32)])  # starts inside, ends past it
    b.struct("bits", 4, [("x", u64, 30, 4)])  # a bitfield crossing the end
    btf = Btf(b.build())
    with pytest.raises(BtfError, match="outside"):
        btf.find("struct past")
    with pytest.raises(BtfError, match="ends past"):
        btf.offsetof("struct overlong", "a")
    with pytest.raises(BtfError, match="outside"):
        btf.member("struct bits", "x")
