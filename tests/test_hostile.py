"""Regression tests for what the fuzz suite (tests/test_fuzz_*.py) found, one per finding.

Each builds the smallest hostile input that broke a layer and checks that it now ends in a
clean refusal at open, EIO, or an ``unavailable: ...`` line, never another exception.
"""

from __future__ import annotations

import pytest

import vmcorefs
import vmcorefs.tree
from tests import fuzzing as fz
from vmcorefs.errors import DumpError


@pytest.fixture
def scratch():
    seed = fz.SeedFile()
    yield seed
    seed.cleanup()


def _offset_of(raw: bytes, text: bytes) -> int:
    pos = raw.find(text)
    assert pos > 0
    return pos


def test_malformed_root_table_key_is_a_dump_error_naming_the_file(scratch):
    # Found by test_fuzz_elf: a NUL inside SYMBOL(init_top_pgt)'s value escaped open_dump as
    # Unavailable (no path); the dump has no address space at all, so it is refused at open.
    raw, _ = fz.elf_seed()
    pos = _offset_of(raw, b"SYMBOL(init_top_pgt)=") + len(b"SYMBOL(init_top_pgt)=")
    path = scratch.write(raw[:pos] + b"\0" + raw[pos + 1 :])
    with pytest.raises(DumpError) as info:
        vmcorefs.open_dump(path)
    assert info.value.path == path and "SYMBOL(init_top_pgt)" in info.value.reason


def test_missing_root_table_key_names_the_dump(scratch):
    raw, _ = fz.elf_seed()
    pos = _offset_of(raw, b"SYMBOL(init_top_pgt)=")
    path = scratch.write(raw[:pos] + b"X" + raw[pos + 1 :])
    with pytest.raises(DumpError) as info:
        vmcorefs.open_dump(path)
    assert info.value.path == path and "init_top_pgt" in info.value.reason


def test_symbol_names_that_are_not_utf8_keep_their_bytes(scratch):
    # Found by test_fuzz_kernel_structures[kallsyms tables]: a token table entry overwritten
    # with a pointer gave names with bytes >= 0x80 that are not UTF-8; kallsyms decodes them
    # with surrogateescape, and the kallsyms file then failed to encode (UnicodeEncodeError).
    raw, regions = fz.elf_seed()
    tables = next(r for r in regions if r.name == "kallsyms tables")
    token_table = tables.start + 800  # inside kallsyms_token_table
    bad = b"\x00\x00\x00\x82\xff\xff\xff\xff"
    mutated = raw[:token_table] + bad + raw[token_table + len(bad) :]
    assert fz.exercise(scratch.write(mutated)).refused is None  # no exception on the walk
    tree = vmcorefs.tree.build_tree(vmcorefs.open_dump(scratch.path))
    text = tree.lookup("kallsyms").read(0, 1 << 20)
    names = {line.split(b" ", 2)[2] for line in text.splitlines()}
    odd = [n for n in names if b"\xff" in n or b"\x82" in n]
    assert odd  # the raw bytes, not replacement characters
    listed = {n.encode("utf-8", "surrogateescape") for n in tree.lookup("sym").entries()}
    assert any(n.split(b"@")[0] in odd for n in listed)


def test_pt_load_beyond_the_physical_address_space_is_refused(scratch):
    # Found by review of the fuzz walk (st_size must fit stat's signed 64 bits): a PT_LOAD
    # whose p_paddr + p_memsz passed 2**63 made phys an impossible size, which ctypes would
    # silently wrap in getattr. x86_64 physical addresses have at most 52 bits.
    import struct

    raw, _ = fz.elf_seed()
    phdr = 64 + 56 * 1  # the first PT_LOAD (the PT_NOTE comes first)
    assert struct.unpack_from("<I", raw, phdr)[0] == 1
    mutated = bytearray(raw)
    struct.pack_into("<Q", mutated, phdr + 24, 0xFFFF_FFFF_FFFF_0000)  # p_paddr
    path = scratch.write(bytes(mutated))
    with pytest.raises(DumpError, match="52-bit physical address space"):
        vmcorefs.open_dump(path)


def test_ram_bitmap_of_alternating_bits_is_bounded(scratch):
    # Found by probing the kdump bitmaps at scale (the fuzz seeds' bitmaps are one block): a
    # 2 MiB kdump whose 1st bitmap alternates 0x55 made `summary` and `mm/usage` take seconds
    # and about 600 MiB, one tuple per run. A RAM map has tens of ranges: past 65536 runs the
    # bitmap is corrupt, and the views that need the RAM ranges say so.
    from tests import kdumpwriter as kw
    from vmcorefs.dumpfile.kdump import _HEADER, DiskDumpHeader

    k = fz.kernel()
    pages = {p: k.pages[p] for p in range(768)}
    spec = kw.KdumpSpec(max_mapnr=1 << 23, pages=pages, vmcoreinfo=k.vmcoreinfo)
    raw = bytearray(kw.build_kdump(spec))
    h = DiskDumpHeader.parse(bytes(raw[: _HEADER.size]))
    first = (1 + h.sub_hdr_size) * h.block_size
    half = h.bitmap_blocks * h.block_size // 2
    raw[first + 4096 : first + half] = b"\x55" * (half - 4096)
    path = scratch.write(bytes(raw))
    with fz.limits(seconds=10, headroom=256 << 20):
        tree = vmcorefs.tree.build_tree(vmcorefs.open_dump(path))
        summary = tree.lookup("summary").read(0, 4096)
        usage = tree.lookup("mm/usage").read(0, 4096)
        assert tree.lookup("phys").read(0x10_0000, 4096) == k.pages[0x100]
    assert b"RAM: unavailable: the kdump's RAM bitmap has more than 65536 ranges" in summary
    assert b"release: " in summary
    assert usage.startswith(b"unavailable: ")
