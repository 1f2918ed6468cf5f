"""VMCOREINFO parsing: value syntax per key shape, repeated keys, missing keys."""

import pytest

from vmcorefs.errors import Unavailable
from vmcorefs.vmcoreinfo import VmcoreInfo

SAMPLE = (
    b"OSRELEASE=6.1.0-56-amd64\n"
    b"PAGESIZE=4096\n"
    b"SYMBOL(swapper_pg_dir)=ffffffff91210000\n"
    b"SYMBOL(mem_section)=ffff8c5f0feaf000\n"
    b"OFFSET(uts_namespace.name)=0\n"
    b"SIZE(page)=64\n"
    b"LENGTH(mem_section)=4096\n"
    b"NUMBER(phys_base)=-176160768\n"
    b"KERNELOFFSET=e800000\n"
    b"NUMBER(PG_lru)=4\n"
    b"NUMBER(PG_lru)=5\n"
    b"CRASHTIME=1700000000\n"
    b"\0\0\0"
)


def test_typed_accessors():
    vi = VmcoreInfo(SAMPLE)
    assert vi.osrelease == "6.1.0-56-amd64"
    assert vi.page_size == 4096
    assert vi.symbol("swapper_pg_dir") == 0xFFFFFFFF91210000
    assert vi.offset("uts_namespace.name") == 0
    assert vi.size("page") == 64
    assert vi.length("mem_section") == 4096
    assert vi.number("phys_base") == -176160768
    assert vi.kerneloffset == 0xE800000
    assert vi.crashtime == 1700000000


def test_raw_keeps_text_without_trailing_nuls():
    vi = VmcoreInfo(SAMPLE)
    assert vi.raw == SAMPLE.rstrip(b"\0")


def test_repeated_key_keeps_last_value_and_position():
    vi = VmcoreInfo(SAMPLE)
    assert vi.number("PG_lru") == 5
    assert list(vi).index("NUMBER(PG_lru)") == len(vi) - 2


def test_missing_keys_are_none_and_need_names_them():
    vi = VmcoreInfo(SAMPLE)
    assert vi.symbol("nope") is None
    with pytest.raises(Unavailable, match=r"VMCOREINFO has no OFFSET\(vmap_area.list\)"):
        vi.need("OFFSET", "vmap_area.list")


def test_symbols_leaves_out_mem_section_value():
    syms = VmcoreInfo(SAMPLE).symbols()
    assert syms == {"swapper_pg_dir": 0xFFFFFFFF91210000}


def test_malformed_value_is_unavailable_not_a_crash():
    vi = VmcoreInfo(b"SYMBOL(x)=zz\n")
    with pytest.raises(Unavailable):
        vi.symbol("x")


# --- ranges: every number is checked where it is read ---------------------------------------


def vi_of(**values: str) -> VmcoreInfo:
    return VmcoreInfo("".join(f"{k}={v}\n" for k, v in values.items()).encode())


def test_number_in_range_or_unavailable_naming_key_value_and_range():
    vi = VmcoreInfo(b"NUMBER(MAX_PHYSMEM_BITS)=9223372036854775807\nNUMBER(x)=46\n")
    assert vi.number("x", 36, 52) == 46
    with pytest.raises(Unavailable) as info:
        vi.number("MAX_PHYSMEM_BITS", 36, 52)
    assert info.value.reason == (
        "VMCOREINFO NUMBER(MAX_PHYSMEM_BITS)=9223372036854775807 is out of range (36–52)"
    )
    assert vi.number("absent", 36, 52) is None


def test_default_ranges_are_the_c_types_the_kernel_prints():
    # NUMBER is %ld, SYMBOL %lx (unsigned long), CRASHTIME %lld
    assert vi_of(**{"NUMBER(a)": str(-(2**63))}).number("a") == -(2**63)
    for bad in (str(2**63), str(-(2**63) - 1), str(10**29)):
        with pytest.raises(Unavailable, match="is out of range"):
            vi_of(**{"NUMBER(a)": bad}).number("a")
    assert vi_of(**{"SYMBOL(s)": "ffffffffffffffff"}).symbol("s") == 2**64 - 1
    with pytest.raises(Unavailable, match=r"SYMBOL\(s\)=10000000000000000 is out of range"):
        vi_of(**{"SYMBOL(s)": "10000000000000000"}).symbol("s")
    with pytest.raises(Unavailable, match="CRASHTIME"):
        _ = vi_of(CRASHTIME=str(10**29)).crashtime


def test_sizes_and_lengths_are_positive_and_bounded():
    vi = vi_of(**{"SIZE(zero)": "0", "SIZE(page)": "64", "SIZE(huge)": str(2**40)})
    assert vi.size("page", 8, 4096) == 64
    with pytest.raises(Unavailable, match=r"SIZE\(zero\)=0 is out of range \(1–"):
        vi.size("zero")
    with pytest.raises(Unavailable, match=r"SIZE\(huge\)"):
        vi.size("huge")
    with pytest.raises(Unavailable, match=r"SIZE\(page\)=64 is out of range \(8–32\)"):
        vi.need("SIZE", "page", 8, 32)
    with pytest.raises(Unavailable, match=r"LENGTH\(l\)=-3 is out of range \(1–64\)"):
        vi_of(**{"LENGTH(l)": "-3"}).length("l", 1, 64)


def test_offsets_lie_inside_their_structure():
    vi = vi_of(**{"OFFSET(s.a)": "24", "OFFSET(s.b)": "-1", "OFFSET(s.c)": "25"})
    assert vi.offset("s.a", within=32, width=8) == 24
    with pytest.raises(Unavailable) as info:
        vi.offset("s.c", within=32, width=8)
    assert info.value.reason == (
        "VMCOREINFO OFFSET(s.c)=25 is out of range (0–24: 8 bytes in a 32-byte structure)"
    )
    with pytest.raises(Unavailable, match=r"OFFSET\(s.b\)=-1 is out of range"):
        vi.offset("s.b")
    with pytest.raises(Unavailable, match="16 bytes cannot lie in a 8-byte structure"):
        vi.need("OFFSET", "s.a", within=8, width=16)


def test_values_must_have_the_kernels_syntax():
    # int() would take these; no kernel writes them, so they are malformed, not numbers.
    for text in ("+1", "1_0", "0x10", " ", "", "1e3", "١٢"):
        with pytest.raises(Unavailable, match="malformed"):
            vi_of(**{"NUMBER(a)": text}).number("a")
    with pytest.raises(Unavailable, match="malformed"):
        vi_of(**{"SYMBOL(s)": "0xffff"}).symbol("s")
    with pytest.raises(Unavailable, match="malformed"):
        vi_of(**{"SYMBOL(s)": "-1"}).symbol("s")


def test_a_huge_value_is_out_of_range_and_cut_in_the_message():
    vi = vi_of(**{"NUMBER(a)": "9" * 100_000})
    with pytest.raises(Unavailable) as info:
        vi.number("a")
    assert (
        info.value.reason
        == f"VMCOREINFO NUMBER(a)={'9' * 40}... is out of range ({-(2**63)}–{2**63 - 1})"
    )


def test_single_bit_masks():
    vi = vi_of(**{"NUMBER(m)": "65536", "NUMBER(z)": "0", "NUMBER(two)": "3"})
    assert vi.single_bit("m") == 1 << 16
    assert vi.single_bit("z", zero=True) == 0
    with pytest.raises(Unavailable, match=r"NUMBER\(z\)=0 is out of range"):
        vi.single_bit("z")
    with pytest.raises(Unavailable, match=r"NUMBER\(two\)=3 is not a single bit"):
        vi.single_bit("two")


def test_page_size_kerneloffset_and_symbols_skip_bad_values():
    vi = vi_of(PAGESIZE="65536", KERNELOFFSET="40000001", **{"SYMBOL(a)": "-1", "SYMBOL(b)": "10"})
    with pytest.raises(Unavailable, match=r"PAGESIZE=65536 is out of range \(4096–4096\)"):
        _ = vi.page_size
    with pytest.raises(Unavailable, match="KERNELOFFSET=40000001 is out of range"):
        _ = vi.kerneloffset
    assert vi.symbols() == {"b": 0x10}


def test_vmalloc_start_is_the_one_hex_number():
    """6.9+ writes NUMBER(VMALLOC_START) as ``0x%lx`` (kernel/vmcore_info.c): that form is
    taken for that key, and only that form; every other NUMBER() stays ``%ld``."""

    def number(key: str, text: str, **bounds):
        return VmcoreInfo(f"NUMBER({key})={text}\n".encode()).number(key, **bounds)

    assert number("VMALLOC_START", "0xffffc90000000000") == 0xFFFFC90000000000  # > LONG_MAX
    assert number("VMALLOC_START", "0x0") == 0
    for text in ("ffffc90000000000", "0XFF", "0xFF", "-0x1", "123", "0x", "0x1_0"):
        with pytest.raises(Unavailable, match=r"malformed NUMBER\(VMALLOC_START\)"):
            number("VMALLOC_START", text)
    with pytest.raises(Unavailable, match=r"=0x2000 is out of range \(0x0–0x1000\)"):
        number("VMALLOC_START", "0x2000", hi=0x1000)
    for key in ("phys_base", "KERNEL_IMAGE_SIZE", "PG_lru"):
        with pytest.raises(Unavailable, match="malformed"):
            number(key, "0x10")
