"""The error model (vmcorefs/errors.py): absent, corrupt, unavailable and bugs, each with its
address or key and reason, from the container up through memory, the kernel views and the
tree; the damage record; ``lazy``'s caching. The FUSE side is in tests/test_errors_mount.py."""

from __future__ import annotations

import threading
import time
import zlib

import pytest

import vmcorefs
from tests.elfbuilder import PageTables as ElfPageTables
from tests.elfbuilder import PhysImage, simple_core
from tests.elfbuilder import vmcoreinfo_text as elf_vmcoreinfo
from tests.kdumpwriter import (
    PAGE,
    KdumpSpec,
    PageTables,
    build_kdump,
    pattern_page,
    vmcoreinfo_text,
)
from vmcorefs.errors import (
    CorruptError,
    DumpError,
    FaultError,
    MountPointError,
    OptionError,
    Unavailable,
    kind_of,
)
from vmcorefs.kernel.lazy import lazy
from vmcorefs.tree import BytesFile, build_tree

KTEXT = 0xFFFFFFFF81000000
#: The frames of the synthetic dump (see ``spec``).
DUMPED = [*range(0, 16), 22, 23]
EXCLUDED = 16
CORRUPT = 20
LOST = 21
HOLE = 50


#: VMCOREINFO's kallsyms keys (Linux 6.0+) and the BTF's bounds, all in an excluded page: the
#: symbol table and the BTF are then unavailable at once, without a search of the kernel image
#: (kallsyms tables, the BTF header) that would meet the corrupt page before the tests ask.
KALLSYMS_IN_EXCLUDED_PAGE = "".join(
    f"SYMBOL({name})={KTEXT + EXCLUDED * PAGE + 8 * i:x}\n"
    for i, name in enumerate(
        (
            "kallsyms_names",
            "kallsyms_num_syms",
            "kallsyms_token_table",
            "kallsyms_token_index",
            "kallsyms_offsets",
            "kallsyms_relative_base",
            "kallsyms_markers",
            "__start_BTF",
            "__stop_BTF",
        )
    )
)


def spec() -> KdumpSpec:
    """64 frames: RAM but 48..55 (a hole); frames 0-15, 22, 23 dumped; 16-19 excluded; 20
    dumped but its zlib data inflate to 2,011 bytes; 21 lost (an incomplete dump); page
    tables in 40-43 map KTEXT + n pages onto frame n for n < 64."""
    tables = PageTables(40)
    for pfn in range(64):
        tables.map_4k(KTEXT + pfn * PAGE, pfn * PAGE)
    pages = {p: pattern_page(p) for p in DUMPED}
    pages.update(tables.pages())
    pages[CORRUPT] = pattern_page(CORRUPT)
    pages[LOST] = pattern_page(LOST)
    bad = zlib.compress(pattern_page(CORRUPT)[:2011])
    return KdumpSpec(
        max_mapnr=64,
        pages=pages,
        ram=[(0, 48), (56, 64)],
        stored={CORRUPT: (0x1, bad)},
        lost=[LOST],
        incomplete=True,
        vmcoreinfo=vmcoreinfo_text(tables, extra=KALLSYMS_IN_EXCLUDED_PAGE),
    )


@pytest.fixture
def dump_path(tmp_path):
    path = tmp_path / "dump.kdump"
    path.write_bytes(build_kdump(spec()))
    return str(path)


def fault_of(call) -> FaultError:
    with pytest.raises(FaultError) as info:
        call()
    return info.value


# -- the classes ----------------------------------------------------------------------------


def test_every_error_says_where_and_why():
    absent = FaultError("kvirt", 0xFFFFFFFF81000000, "PTE not present")
    assert str(absent) == "kvirt 0xffffffff81000000: absent: PTE not present"
    corrupt = CorruptError("phys", 0x14000, "pfn 0x14: zlib data inflate to 2,011 bytes")
    assert isinstance(corrupt, FaultError) and corrupt.kind == "corrupt"
    assert str(corrupt) == "phys 0x14000: corrupt: pfn 0x14: zlib data inflate to 2,011 bytes"
    seen = corrupt.at("kvirt", KTEXT + 0x14000)
    assert type(seen) is CorruptError and seen.reason == corrupt.reason
    assert seen.address == KTEXT + 0x14000 and seen.space == "kvirt"
    missing = Unavailable.not_in_dump("init_uts_ns.name", absent)
    assert missing.reason == f"init_uts_ns.name is not in the dump ({absent})"
    assert str(MountPointError("/mnt", "mount point does not exist")) == (
        "/mnt: mount point does not exist"
    )
    assert not isinstance(MountPointError("/mnt", "x"), DumpError)  # its own error
    assert str(OptionError("rw", "the mount is always read-only")) == (
        "-o rw: the mount is always read-only"
    )
    kinds = [kind_of(e) for e in (absent, corrupt, missing, DumpError("d", "x"), KeyError(1))]
    assert kinds == ["absent", "corrupt", "unavailable", "dump", "bug"]


# -- absent and corrupt, from the container up ----------------------------------------------


def test_each_absent_page_says_why(dump_path):
    with vmcorefs.open_dump(dump_path) as dump:
        excluded = fault_of(lambda: dump.phys.read_exact(EXCLUDED * PAGE + 8, 8))
        assert type(excluded) is FaultError and excluded.address == EXCLUDED * PAGE + 8
        assert excluded.reason == "pfn 0x10 excluded by makedumpfile (dump level 31)"
        hole = fault_of(lambda: dump.phys.u64(HOLE * PAGE))
        assert type(hole) is FaultError and "pfn 0x32 is not RAM" in hole.reason
        lost = fault_of(lambda: dump.phys.u64(LOST * PAGE))
        assert type(lost) is FaultError and "pfn 0x15 was lost" in lost.reason
        # kvirt: the same reasons, at the virtual address; and where the tables map nothing.
        via = fault_of(lambda: dump.kvirt.u64(KTEXT + EXCLUDED * PAGE))
        assert str(via) == (
            f"kvirt {KTEXT + EXCLUDED * PAGE:#x}: absent: pfn 0x10 excluded by makedumpfile "
            "(dump level 31)"
        )
        unmapped = fault_of(lambda: dump.kvirt.u64(KTEXT + 64 * PAGE))
        assert type(unmapped) is FaultError and unmapped.reason == "PTE not present"
        assert dump.source.damage.summary() is None  # nothing corrupt met


def test_a_corrupt_page_is_eio_and_recorded_as_damage(dump_path):
    with vmcorefs.open_dump(dump_path) as dump:
        tree = build_tree(dump)
        summary = tree.lookup("summary")
        assert b"damage:" not in summary.read(0, 1 << 16)
        phys = tree.lookup("phys")
        assert phys.read(EXCLUDED * PAGE - 16, 64) == pattern_page(EXCLUDED - 1)[-16:]  # short
        bad = fault_of(lambda: phys.read(CORRUPT * PAGE, 64))
        assert type(bad) is CorruptError and bad.address == CORRUPT * PAGE
        assert bad.reason.startswith("pfn 0x14: zlib data inflate to 2,011 bytes")
        via = fault_of(lambda: tree.lookup("kvirt").read(KTEXT - (1 << 63) + CORRUPT * PAGE, 8))
        assert type(via) is CorruptError and via.reason == bad.reason
        # The summary read before says it now (it is computed again once damage is met).
        text = summary.read(0, 1 << 16).decode()
        (line,) = [x for x in text.splitlines() if x.startswith("damage: ")]
        assert line.startswith("damage: 1 corrupt page met so far (read as EIO): phys 0x14000:")
        assert "zlib data inflate to 2,011 bytes" in line
        assert summary.size() == len(text.encode())


def test_corrupt_page_tables_make_kvirt_corrupt_not_absent(tmp_path):
    s = spec()
    root = min(pfn for pfn in s.pages if pfn >= 40)  # the PGD: the first table made
    s.stored = {root: (0x1, zlib.compress(b"\0" * 100))}
    path = tmp_path / "bad-tables.kdump"
    path.write_bytes(build_kdump(s))
    with vmcorefs.open_dump(str(path)) as dump:  # the root table is read on first use
        fault = fault_of(lambda: dump.kvirt.u64(KTEXT))
        assert type(fault) is CorruptError
        assert fault.reason.startswith(f"PGD table page at {root * PAGE:#x}: pfn {root:#x}: ")
        assert "zlib data inflate to 100 bytes" in fault.reason
        assert dump.source.damage.corrupt_pages == 1


def test_codec_errors_are_corrupt_pages_and_bugs_are_not(tmp_path, monkeypatch):
    from vmcorefs.dumpfile import compression

    s = spec()
    s.stored = {CORRUPT: (0x1, b"not zlib at all")}
    path = tmp_path / "junk.kdump"
    path.write_bytes(build_kdump(s))
    with vmcorefs.open_dump(str(path)) as dump:
        bad = fault_of(lambda: dump.phys.u8(CORRUPT * PAGE))
        assert type(bad) is CorruptError and "zlib data do not decompress" in bad.reason
    # A decoder that fails for a reason other than the data (a bug) is not taken for damage.
    with vmcorefs.open_dump(dump_path_of(tmp_path)) as dump:

        def broken(*_args):
            raise AttributeError("a bug in a decoder")

        monkeypatch.setattr(compression.inflate_module, "decompressobj", broken)
        monkeypatch.setattr(dump.source, "_decoders", {})
        with pytest.raises(AttributeError):
            dump.phys.read(0, PAGE)


def dump_path_of(tmp_path) -> str:
    path = tmp_path / "good.kdump"
    path.write_bytes(build_kdump(spec()))
    return str(path)


# -- truncated files ------------------------------------------------------------------------


def test_a_truncated_kdump_says_so_at_open_on_read_and_in_summary(tmp_path):
    data = build_kdump(spec())
    cut = len(data) - 100  # into the data of the last pages: the page tables (40-43)
    path = tmp_path / "cut.kdump"
    path.write_bytes(data[:cut])
    with vmcorefs.open_dump(str(path)) as dump:
        (trunc,) = dump.source.truncations()
        assert (trunc.path, trunc.size, trunc.expected) == (str(path), cut, len(data))
        assert str(trunc) == f"truncated at {cut:,} of {len(data):,} bytes"
        assert trunc.warning().startswith(f"the file is truncated at {cut:,} of {len(data):,}")
        fault = fault_of(lambda: dump.kvirt.u64(KTEXT))  # the page tables are past the end
        assert type(fault) is CorruptError
        assert "lies past the end of the file" in fault.reason and str(trunc) in fault.reason
        summary = build_tree(dump).lookup("summary").read(0, 1 << 16).decode()
        assert f"truncated: {path}: {trunc}; what lies past its end reads as EIO\n" in summary
        assert "damage: " in summary
        # held (st_blocks of phys): the dumped pages whose data are inside the file: not the
        # lost one, not those cut off.
        dumped = len(spec().pages)
        assert 0 < dump.phys.held_bytes() <= (dumped - 2) * PAGE
    with vmcorefs.open_dump(dump_path_of(tmp_path)) as dump:
        assert dump.phys.held_bytes() == (len(spec().pages) - 1) * PAGE  # all but the lost


def test_a_truncated_elf_core_says_so(tmp_path):
    mem = PhysImage()
    pt = ElfPageTables(mem)
    mem.write(0x10_0000, b"x" * 0x2000)
    data = simple_core(mem, [(0, 0x20_0000)], elf_vmcoreinfo(pt))
    path = tmp_path / "cut.core"
    path.write_bytes(data[: len(data) - 0x1000])
    with vmcorefs.open_dump(str(path)) as dump:
        (trunc,) = dump.source.truncations()
        assert trunc.expected == len(data) and trunc.size == len(data) - 0x1000
        fault = fault_of(lambda: dump.phys.u8(0x20_0000 - 0x800))
        assert type(fault) is CorruptError and str(trunc) in fault.reason
        assert dump.phys.held_bytes() == 0x20_0000 - 0x1000
    whole = tmp_path / "whole.core"
    whole.write_bytes(data)
    with vmcorefs.open_dump(str(whole)) as dump:
        assert dump.source.truncations() == [] and dump.phys.held_bytes() == 0x20_0000


# -- unavailable ----------------------------------------------------------------------------


def test_unavailable_names_what_is_missing_and_the_fault(dump_path):
    with vmcorefs.open_dump(dump_path) as dump:
        tree = build_tree(dump)
        # No SYMBOL(init_uts_ns) in this VMCOREINFO: the key is named.
        assert tree.lookup("uts/release").read(0, 200) == (
            b"unavailable: VMCOREINFO has no SYMBOL(init_uts_ns)\n"
        )
        assert tree.lookup("info/PAGE_SIZE").read(0, 10) == b"4096\n"


# -- bugs -----------------------------------------------------------------------------------


def test_a_bug_is_raised_not_cached_and_not_rendered_as_text():
    calls = []

    def compute():
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        return "fine\n"

    node = BytesFile(compute)
    with pytest.raises(KeyError):
        node.read(0, 10)
    assert node.read(0, 10) == b"fine\n" and len(calls) == 2


# -- lazy -----------------------------------------------------------------------------------


class Views:
    def __init__(self, compute):
        self.compute = compute
        self.calls = 0

    @lazy
    def view(self):
        self.calls += 1
        return self.compute()


def test_lazy_keeps_an_unavailable_as_its_reason_and_raises_a_fresh_one():
    def cannot():
        raise Unavailable("VMCOREINFO has no OFFSET(x.y)")

    v = Views(cannot)
    raised = []
    for _ in range(1000):
        with pytest.raises(Unavailable) as info:
            v.view  # noqa: B018
        raised.append(info.value)
    assert v.calls == 1
    assert len({id(e) for e in raised[-2:]}) == 2  # a new exception each time
    tb, depth = raised[-1].__traceback__, 0
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 5  # not 2,000 frames of earlier raises
    assert all(e.reason == "VMCOREINFO has no OFFSET(x.y)" for e in raised)


def test_lazy_turns_a_fault_into_unavailable_and_does_not_keep_bugs_or_dump_errors():
    fault = FaultError("kvirt", KTEXT, "PTE not present")

    def absent():
        raise fault

    v = Views(absent)
    for _ in range(2):
        with pytest.raises(Unavailable) as info:
            v.view  # noqa: B018
        assert info.value.reason == str(fault)
    assert v.calls == 1
    for error in (KeyError("bug"), DumpError("dump", "the file changed while in use")):
        results = [error, "ok"]

        def flaky(results=results):
            r = results.pop(0)
            if isinstance(r, BaseException):
                raise r
            return r

        v = Views(flaky)
        with pytest.raises(type(error)):
            v.view  # noqa: B018
        assert v.view == "ok" and v.calls == 2


def test_lazy_computes_once_under_threads_with_a_lock_per_instance():
    gate = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        gate.wait(10)
        return object()

    a = Views(slow)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(a.view)) for _ in range(8)]
    for t in threads:
        t.start()
    assert started.wait(10)
    # Another instance is not held up by the first one's computation (its own lock).
    b = Views(lambda: "b")
    done = threading.Event()
    threading.Thread(target=lambda: (b.view, done.set())).start()
    assert done.wait(5), "a second instance waited for the first one's lock"
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join(10)
    assert a.calls == 1 and len(results) == 8 and len({id(r) for r in results}) == 1


def test_no_catch_all_continue_where_dump_data_are_decoded():
    """``except Exception`` may not hide a bug as absent data in the containers or memory."""
    from pathlib import Path

    import vmcorefs as pkg

    root = Path(pkg.__file__).parent
    found = []
    for sub in ("dumpfile", "memory"):
        for path in sorted((root / sub).glob("*.py")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                if "except Exception" in line or line.strip() == "except:":
                    after = "\n".join(lines[i + 1 : i + 3])
                    if "continue" in after or "return None" in after or "pass" in after:
                        found.append(f"{path.name}:{i + 1}")
    assert found == [], found


def test_zero_fill_zeros_corrupt_and_lost_pages_in_phys_only(dump_path):
    """--zero-fill: the phys file reads every absent byte as zeros, corrupt and lost pages too
    (the metadata say they are held, the data do not load); kvirt over them still fails, and
    the corrupt page is still recorded as damage."""
    with vmcorefs.open_dump(dump_path, zero_fill=True) as dump:
        phys = build_tree(dump).lookup("phys")
        got = phys.read(15 * PAGE, 9 * PAGE)  # 15 held, 16-19 excluded, 20 corrupt, 21 lost
        assert got == pattern_page(15) + bytes(6 * PAGE) + pattern_page(22) + pattern_page(23)
        assert phys.read(HOLE * PAGE + 5, 10) == bytes(10)  # not RAM at all
        assert dump.source.damage.corrupt_pages == 1
        assert fault_of(lambda: dump.kvirt.u8(KTEXT + CORRUPT * PAGE)).kind == "corrupt"
        assert dump.phys.read(15 * PAGE, 9 * PAGE) == pattern_page(15)


def test_present_runs_come_from_the_metadata_alone(dump_path):
    """Held by the bitmaps: the corrupt and the lost page are in a run (only reading them
    tells), the excluded pages and the hole are not."""
    with vmcorefs.open_dump(dump_path) as dump:
        runs = list(dump.phys.present_runs(0, 1 << 40))
        assert runs == [(0, 16 * PAGE), (20 * PAGE, 24 * PAGE), (40 * PAGE, 44 * PAGE)]
        assert dump.phys.next_present(16 * PAGE, 64 * PAGE) == 20 * PAGE
        assert dump.phys.next_present(44 * PAGE, 64 * PAGE) == 64 * PAGE
