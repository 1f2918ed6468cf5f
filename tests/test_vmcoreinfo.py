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
