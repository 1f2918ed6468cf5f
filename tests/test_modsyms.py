"""Modules' own symbols: ``kallsyms`` lines as /proc/kallsyms prints them and the ``sym/``
entries, on synthetic module lists (tests/modbuilder.py), with the expected text worked out
from kernel/kallsyms.c ``s_show()`` and kernel/module/kallsyms.c ``module_get_kallsym()``;
then the real dumps and the sample against the guests' own /proc/kallsyms."""

from __future__ import annotations

import pytest

from tests.kernelfakes import symbol_table
from tests.modbuilder import NULL_SYM, SHN_ABS, SHN_UNDEF, M, Mods, Sym
from vmcorefs.kernel import modsyms
from vmcorefs.kernel import modules as modules_mod
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.modsyms import kernel_tolower, kernel_toupper
from vmcorefs.kernel.symbols import SYM_FILE_CAP, SymbolFiles
from vmcorefs.tree import build_tree

A = 0xFFFFFFFFC0000000
B = 0xFFFFFFFFC0010000
PRINTK = 0xFFFFFFFF81100000


def alpha(s: Mods, **kwargs) -> int:
    """A live module: a core-only table (entry 0 the null symbol), two exports."""
    table = s.symtab([
        NULL_SYM,
        Sym(b"alpha_probe", "t", A + 0x10, size=0x20),
        Sym(b"alpha_exported", "t", A + 0x100),
        Sym(b"alpha_gpl_only", "t", A + 0x200),  # EXPORT_SYMBOL_GPL: not in mod->syms
        Sym(b"", "t", A + 0x300),  # no name: not printed
        Sym(b"alpha_moved", "t", A + 0x400),  # exported under this name, at another value
        Sym(b"alpha_table", "d", A + 0x2000),
        Sym(b"alpha_bss", "b", A + 0x2100),
    ])  # fmt: skip
    exports = s.exports([(b"alpha_exported", A + 0x100), (b"alpha_moved", A + 0x999)])
    return s.module("alpha", base=A, core=0x3000, text=0x1000, kallsyms=table.kallsyms,
                    exports=exports, **kwargs)  # fmt: skip


def test_kallsyms_lines_as_proc_kallsyms_prints_them():
    s = Mods()
    a = alpha(s)
    coming = s.symtab([
        NULL_SYM,
        Sym(b"beta_init", "t", B + 0x10),
        Sym(b"printk", "U", PRINTK, shndx=SHN_UNDEF),  # resolved by simplify_symbols()
        Sym(b"beta_version", "r", B + 0x800),
    ])  # fmt: skip
    b = s.module("beta", base=B, core=0x1000, state=1, kallsyms=coming.kallsyms)
    unformed = s.symtab([NULL_SYM, Sym(b"gamma_fn", "t", B + 0x20000)])
    c = s.module("gamma", base=B + 0x20000, core=0x1000, state=3, kallsyms=unformed.kallsyms)
    ml = s.listing([b, a, c])  # the list's order: the newest module first
    assert ml.kallsyms_text().splitlines() == [
        f"{B + 0x10:016x} t beta_init\t[beta]",
        f"{PRINTK:016x} u printk\t[beta]",  # 'U' lowered: not exported by beta
        f"{B + 0x800:016x} r beta_version\t[beta]",
        f"{A + 0x10:016x} t alpha_probe\t[alpha]",
        f"{A + 0x100:016x} T alpha_exported\t[alpha]",
        f"{A + 0x200:016x} t alpha_gpl_only\t[alpha]",
        f"{A + 0x400:016x} t alpha_moved\t[alpha]",
        f"{A + 0x2000:016x} d alpha_table\t[alpha]",
        f"{A + 0x2100:016x} b alpha_bss\t[alpha]",
    ]
    assert ml.symbol_problems() == []


@pytest.mark.parametrize("at_once", [1 << 16, 0])
def test_exported_by_the_kernels_bsearch(monkeypatch, at_once):
    """is_exported() bsearches mod->syms: every name of a sorted table is found (read whole
    into a dict, or searched entry by entry); in a table that is not sorted, the search misses
    what the kernel's misses."""
    monkeypatch.setattr(modsyms, "MAX_EXPORTS_READ_AT_ONCE", at_once)
    s = Mods()
    names = [f"m_fn{i:02d}".encode() for i in range(9)]
    syms = [NULL_SYM] + [Sym(n, "t", A + 0x10 * i) for i, n in enumerate(names)]
    table = s.symtab(syms)
    exports = s.exports([(n, A + 0x10 * i) for i, n in enumerate(names)])
    a = s.module("m", base=A, core=0x1000, kallsyms=table.kallsyms, exports=exports)
    unsorted = s.symtab([NULL_SYM, Sym(b"zz", "t", B), Sym(b"aa", "t", B + 8)])
    b = s.module("u", base=B, core=0x1000, kallsyms=unsorted.kallsyms,
                 exports=s.exports([(b"zz", B), (b"aa", B + 8)]))  # fmt: skip
    lines = s.listing([a, b]).kallsyms_text().splitlines()
    assert [line.split()[1] for line in lines[:9]] == ["T"] * 9
    # num 2: the pivot is entry 1 ("aa"): found; "zz" > "aa" leaves nothing to search
    assert lines[9:] == [f"{B:016x} t zz\t[u]", f"{B + 8:016x} T aa\t[u]"]


@pytest.mark.parametrize("prel32", [True, False])
def test_kernel_symbol_layouts(prel32):
    """struct kernel_symbol with PREL32 offsets (x86_64 since 4.19) or absolute pointers."""
    s = Mods(prel32=prel32)
    lines = s.listing([alpha(s)]).kallsyms_text().splitlines()
    assert f"{A + 0x100:016x} T alpha_exported\t[alpha]" in lines


def test_type_in_st_info_before_5_2():
    """No typetab (before Linux 5.2): add_kallsyms() wrote the letter into st_info."""
    s = Mods(typetab=False)
    lines = s.listing([alpha(s)]).kallsyms_text().splitlines()
    assert lines[:2] == [
        f"{A + 0x10:016x} t alpha_probe\t[alpha]",
        f"{A + 0x100:016x} T alpha_exported\t[alpha]",
    ]


def test_names_letters_and_module_names_as_copied():
    """strscpy(KSYM_NAME_LEN) keeps 511 bytes of a name; raw bytes stay raw; the letter's
    case follows the kernel's ctype (Latin-1 included); a module with no name prints as a
    core symbol, its letter as recorded."""
    s = Mods()
    long = b"x" * 600
    table = s.symtab([NULL_SYM, Sym(long, "t", A), Sym(b"caf\xe9", "\xc9", A + 8)])
    a = s.module("m", base=A, core=0x1000, kallsyms=table.kallsyms)
    other = s.symtab([NULL_SYM, Sym(b"anon_fn", "T", B)])
    b = s.module(b"", base=B, core=0x1000, kallsyms=other.kallsyms)
    raw = s.listing([a, b]).kallsyms_text().encode("utf-8", "surrogateescape")
    assert raw.split(b"\n") == [
        b"%016x t " % A + b"x" * 511 + b"\t[m]",
        b"%016x \xe9 caf\xe9\t[m]" % (A + 8),  # tolower(0xc9) = 0xe9
        b"%016x T anon_fn" % B,
        b"",
    ]
    assert (kernel_tolower(0xD7), kernel_toupper(0xF7), kernel_toupper(0xFF)) == (0xD7, 0xF7, 0xDF)


def test_symbolizer_view_is_the_same_table():
    """The unwinder's lookup (find_kallsyms_symbol) reads the same decoded table."""
    s = Mods()
    ml = s.listing([alpha(s)])
    assert ml.symbol(A + 0x18) == ("alpha_probe", 0x8, 0xF0, "alpha")
    assert ml.symbol(A + 0x450) == ("alpha_moved", 0x50, 0x1000 - 0x400, "alpha")


# -- hostile tables ------------------------------------------------------------------------


def test_a_table_past_the_dump_gives_fewer_symbols_and_says_why():
    s = Mods()
    syms = [NULL_SYM] + [Sym(f"f{i}".encode(), "t", A + 8 * i) for i in range(1, 400)]
    table = s.symtab(syms)
    s.mem.drop(table.symtab + 4096)  # entries 171.. (24 bytes each) are absent
    a = s.module("m", base=A, core=0x1000, kallsyms=table.kallsyms)
    ml = s.listing([a])
    lines = ml.kallsyms_text().splitlines()
    assert len(lines) == 4096 // 24 - 1 and lines[0].endswith(" f1\t[m]")
    assert any("past memory the dump lacks" in p for p in ml.symbol_problems())


def test_names_and_letters_the_dump_lacks():
    s = Mods()
    # strtab: "\0kept\0" (6 bytes), 3700 x's (511 of them copied), then "cut" 3707 bytes in,
    # whose NUL and 511-byte window are past the page the dump holds, then "lost" past it
    long, cut = b"x" * 3700, b"c" * 600
    syms = [NULL_SYM, Sym(b"kept", "t", A), Sym(long, "t", A + 8), Sym(cut, "t", A + 16),
            Sym(b"lost", "t", A + 24)]  # fmt: skip
    table = s.symtab(syms)
    assert table.name_offsets[3] + 511 > 4096 > table.name_offsets[2] + 511
    s.mem.drop(table.strtab + 4096)
    a = s.module("m", base=A, core=0x1000, kallsyms=table.kallsyms)
    ml = s.listing([a])
    names = [line.split()[2] for line in ml.kallsyms_text().splitlines()]
    assert names == ["kept", "x" * 511]  # "ccc..." not cut short at the gap: left out
    assert any("names of 2 symbols" in p for p in ml.symbol_problems())
    # the letters gone: no kallsyms line, but sym/ and the unwinder still have the symbol
    s2 = Mods()
    t2 = s2.symtab([NULL_SYM, Sym(b"kept", "t", A)])
    s2.mem.drop(t2.typetab)
    ml2 = s2.listing([s2.module("m", base=A, core=0x1000, kallsyms=t2.kallsyms)])
    assert ml2.kallsyms_text() == ""
    assert [f.name for f in ml2.symbol_files()] == ["kept"]
    assert ml2.symbol(A + 4)[0] == "kept"
    assert any("types of 2 symbols" in p for p in ml2.symbol_problems())


def test_a_broken_mod_kallsyms_leaves_the_others(monkeypatch):
    s = Mods()
    a = s.module("gone", base=A, core=0x1000, kallsyms=0xFFFF888777000000)
    huge = s.symtab([NULL_SYM, Sym(b"h1", "t", B), Sym(b"h2", "t", B + 8)], num=0xFFFFFFFF)
    b = s.module("huge", base=B, core=0x1000, kallsyms=huge.kallsyms)
    ok = s.symtab([NULL_SYM, Sym(b"fine", "t", B + 0x10000)])
    c = s.module("ok", base=B + 0x10000, core=0x1000, kallsyms=ok.kallsyms)
    monkeypatch.setattr(modules_mod, "MAX_MODULE_SYMBOLS", 64)
    ml = s.listing([a, b, c])
    text = ml.kallsyms_text()
    assert text.splitlines() == [
        f"{B:016x} t h1\t[huge]",
        f"{B + 8:016x} t h2\t[huge]",
        f"{B + 0x10000:016x} t fine\t[ok]",
    ]
    problems = ml.symbol_problems()
    assert any(p.startswith("gone: its struct mod_kallsyms is not in the dump") for p in problems)
    assert any("num_symtab 4294967295 is more than 64" in p for p in problems)
    assert [m.name for m in ml.modules] == ["gone", "huge", "ok"]  # /proc/modules unharmed


def test_the_cap_on_all_modules_is_taken_in_list_order(monkeypatch):
    monkeypatch.setattr(modules_mod, "MAX_ALL_MODULE_SYMBOLS", 5)
    s = Mods()
    mods = []
    for k, base in enumerate((A, B)):
        t = s.symtab([NULL_SYM] + [Sym(f"m{k}_{i}".encode(), "t", base + i) for i in range(1, 4)])
        mods.append(s.module(f"m{k}", base=base, core=0x1000, kallsyms=t.kallsyms))
    ml = s.listing(mods)
    assert ml.symbol(B + 2) is None  # the second module read first: its share is the same
    names = [line.split()[2] for line in ml.kallsyms_text().splitlines()]
    assert names == ["m0_1", "m0_2", "m0_3"]  # 4 + 1: m1's entry 0 only (the null symbol)
    assert any("more than 5 symbols in all" in p for p in ml.symbol_problems())


def test_exports_the_dump_lacks_are_lower_case_and_noted():
    s = Mods()
    a = alpha(s)
    syms = s.mem.read(a + M["syms"], 8)
    s.mem.drop(int.from_bytes(syms, "little"))
    ml = s.listing([a])
    assert f"{A + 0x100:016x} t alpha_exported\t[alpha]" in ml.kallsyms_text().splitlines()
    assert any("exported symbols are not all in the dump" in p for p in ml.symbol_problems())


# -- sym/ ------------------------------------------------------------------------------------


def test_symbol_files_sizes_and_per_cpu_copies():
    s = Mods()
    pcpu = 0x2B000
    table = s.symtab([
        NULL_SYM,
        Sym(b"own_size", "t", A + 0x10, size=0x8),
        Sym(b"to_next", "t", A + 0x40),
        Sym(b"to_text_end", "t", A + 0x80),
        Sym(b"far_data", "d", A + 0x100000 + 0x10),  # the init layout: to its end
        Sym(b"undefined", "U", PRINTK, shndx=SHN_UNDEF),
        Sym(b"absolute", "a", 0x1234, shndx=SHN_ABS),
        Sym(b"pcpu_var", "d", pcpu + 0x10, shndx=5),
        Sym(b"pcpu_last", "d", pcpu + 0x30, shndx=5),
    ])  # fmt: skip
    a = s.module("m", base=A, core=0x100, init=0x1000, kallsyms=table.kallsyms,
                 percpu=(pcpu, 0x40))  # fmt: skip
    files = s.listing([a], percpu_offset0=0xFFFF88801F400000).symbol_files()
    got = {f.name: (f.address, f.start, f.size, f.module) for f in files}
    assert got == {
        "own_size": (A + 0x10, A + 0x10, 0x8, "m"),
        "to_next": (A + 0x40, A + 0x40, 0x40, "m"),
        "to_text_end": (A + 0x80, A + 0x80, 0x80, "m"),
        "far_data": (A + 0x100010, A + 0x100010, 0x1000 - 0x10, "m"),
        "pcpu_var": (pcpu + 0x10, 0xFFFF88801F400000 + pcpu + 0x10, 0x20, "m"),
        "pcpu_last": (pcpu + 0x30, 0xFFFF88801F400000 + pcpu + 0x30, 0x10, "m"),
    }
    ml = s.listing([a])  # __per_cpu_offset[0] unknown: the per-CPU ones are left out
    assert "pcpu_var" not in {f.name for f in ml.symbol_files()}
    assert any("2 per-CPU symbols left out" in p for p in ml.symbol_problems())


def test_sym_names_shared_with_the_core_or_another_module():
    s = Mods()
    t1 = s.symtab([NULL_SYM, Sym(b"shared", "t", A), Sym(b"dup", "t", A + 8),
                   Sym(b"only_here", "t", A + 16), Sym(b"same_pair", "t", A + 24),
                   Sym(b"a/b", "t", A + 32)])  # fmt: skip
    t2 = s.symtab([NULL_SYM, Sym(b"dup", "t", B), Sym(b"dup", "t", B)])
    mods = [s.module("m1", base=A, core=0x1000, kallsyms=t1.kallsyms),
            s.module("m2", base=B, core=0x1000, kallsyms=t2.kallsyms)]  # fmt: skip
    core = {"shared": 0xFFFFFFFF81000000, "same_pair": A + 24, "core_only": 0xFFFFFFFF81000100}
    ml = s.listing(mods)
    table = symbol_table({**s.syms, **core})
    files = SymbolFiles(table, ml.symbol_files())
    names = set(files.entries)
    assert {"shared@ffffffff81000000", f"shared@{A:016x}"} <= names and "shared" not in names
    assert "shared" not in files.entries and files.entries.get("shared") is None
    assert len(files.entries) == len(names) == len(list(files.entries))
    assert {f"dup@{A + 8:016x}", f"dup@{B:016x}"} <= names and "dup" not in names
    assert {"only_here", "same_pair", "core_only", "a%2Fb"} <= names
    assert files.extent(files.entries["same_pair"]) == table.file_extent(
        table.indices("same_pair")[0]
    )
    assert files.extent(files.entries["only_here"]) == (A + 16, 8)
    assert files.extent(files.entries[f"dup@{B:016x}"]) == (B, 0x1000)
    # the core's plain "shared" becomes two; dup x2, only_here, a/b; same_pair stays the core's
    assert len(names) == len(table) - 1 + 2 + 2 + 1 + 1
    huge = s.symtab([NULL_SYM, Sym(b"big", "d", A, size=1 << 30)])
    ml2 = s.listing([s.module("h", base=A, core=0x1000, kallsyms=huge.kallsyms)])
    files2 = SymbolFiles(table, ml2.symbol_files())
    assert files2.extent(files2.entries["big"]) == (A, SYM_FILE_CAP)


# -- real dumps --------------------------------------------------------------------------------


def _module_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "\t[" in line]


@pytest.mark.realdump
def test_module_lines_equal_the_guests(case):
    """Every module line of gt/kallsyms.txt, in the same order (every dump file of the case
    holds the same modules)."""
    gt = case.file("gt/kallsyms.txt").read_text()
    addresses: dict[str, set[int]] = {}
    for line in gt.splitlines():
        address, _type, name = line.split("\t")[0].split()
        addresses.setdefault(name, set()).add(int(address, 16))
    with open_dump(str(case.dump("mdf-d31-zlib.kdump"))) as dump:
        tree = build_tree(dump)
        node = tree.lookup("kallsyms")
        text = node.read(0, node.size()).decode()
        assert _module_lines(text) == _module_lines(gt)
        listing = tree.lookup("sym").entries()
        for line in _module_lines(gt):  # sym/ as DESIGN names them, each at its address
            address, _type, name = line.split("\t")[0].split()
            at = int(address, 16)
            path = name if len(addresses[name]) == 1 else f"{name}@{at:016x}"
            node = listing[path]
            want = dump.kvirt.read(at, min(64, node.size()))
            assert node.read(0, 64)[: len(want)] == want, path


def test_sample_module_lines_equal_the_guests(sample):
    want = [f"{a:016x} {t} {n}\t[{m}]" for a, t, n, m in sample.kallsyms if m is not None]
    assert want  # the sample's guest loaded qemu_fw_cfg
    with open_dump(str(sample.dump)) as dump:
        node = build_tree(dump).lookup("kallsyms")
        assert _module_lines(node.read(0, node.size()).decode()) == want
        summary = dump.summary()
        assert f"module symbols: {len(want)} in sym/ from 1 module(s)\n" in summary
