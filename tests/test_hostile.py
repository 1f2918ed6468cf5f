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
