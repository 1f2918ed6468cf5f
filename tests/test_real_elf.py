"""The real ELF dumps of ../shared/dumps against their independent truth (drgn, the guest)."""

from __future__ import annotations

import hashlib

import pytest

import vmcorefs
from vmcorefs.errors import FaultError
from vmcorefs.tree import KVIRT_BASE, build_tree

ELF_FILES = ("vmcore.elf", "mdf-d31.elf")


def check_oracle_samples(dump, samples) -> list[str]:
    """Each drgn sample: exactly ``present`` bytes with that sha256, then absence."""
    bad = []
    for s in samples:
        space = dump.phys if s["space"] == "phys" else dump.kvirt
        addr, length, present = s["addr"], s["len"], s["present"]
        got = bytearray()
        while len(got) < length:
            chunk = space.read(addr + len(got), length - len(got))
            if not chunk:
                break
            got += chunk
        ok = len(got) == present and hashlib.sha256(got).hexdigest() == s["sha256"]
        if ok and present < length:
            ok = space.read(addr + present, 1) == b""
        if not ok:
            bad.append(f"{s['space']} {addr:#x} {s['why']}: {len(got)} of {present} bytes")
    return bad


@pytest.mark.parametrize("name", ELF_FILES)
def test_oracle_samples(case, name):
    oracle = case.json("oracle.json")
    with vmcorefs.open_dump(str(case.dump(name))) as dump:
        bad = check_oracle_samples(dump, oracle["files"][name])
    assert not bad, bad[:5]


def test_header_facts(case):
    truth = case.truth
    with vmcorefs.open_dump(str(case.file("vmcore.elf"))) as dump:
        vi = dump.vmcoreinfo
        assert vi.raw == case.file("vmcoreinfo.txt").read_bytes()
        assert vi.osrelease == truth["osrelease"]
        assert vi.page_size == truth["page_size"]
        assert vi.kerneloffset == truth["kerneloffset"]
        assert vi.number("phys_base") == truth["phys_base"]
        assert dump.kvirt.translator.levels == (5 if truth["pgtable_l5"] else 4)
        assert dump.phys.size == truth["phys_end"]
        assert [list(r) for r in dump.source.ranges()] == truth["ram_ranges"]
        notes = truth["elf_header"]["notes"]
        assert [(n.name, n.type, len(n.desc)) for n in dump.source.notes()] == [
            (n["name"], n["type"], n["descsz"]) for n in notes
        ]


def test_runtime_regions_translate_like_drgn(case):
    """The direct map, vmalloc, vmemmap and per-CPU bases drgn read all resolve here too."""
    bases = case.truth["runtime_bases"]
    with vmcorefs.open_dump(str(case.file("vmcore.elf"))) as dump:
        # page_offset_base maps physical 0: the first RAM page matches phys.
        assert dump.kvirt.read(bases["page_offset_base"], 4096) == dump.phys.read(0, 4096)
        for off in bases["__per_cpu_offset"]:
            assert dump.kvirt.translate(off) >= 0
        with pytest.raises(FaultError):
            dump.kvirt.read_exact(bases["vmalloc_base"] - 4096, 8)


def test_tree_kvirt_offset_rule_on_linux_banner(case):
    banner = case.truth["symbols"]["linux_banner"]
    with vmcorefs.open_dump(str(case.file("vmcore.elf"))) as dump:
        tree = build_tree(dump)
        kvirt = tree.lookup("/kvirt")
        data = kvirt.read(banner & 0x7FFFFFFFFFFFFFFF, 64)
        assert data.startswith(f"Linux version {case.truth['osrelease']}".encode())
        assert banner - KVIRT_BASE == banner & 0x7FFFFFFFFFFFFFFF
        info = tree.lookup("/info")
        release = tree.lookup("/info/OSRELEASE").read(0, 100)
        assert release == (case.truth["osrelease"] + "\n").encode()
        # Every key, and PAGE_SIZE beside PAGESIZE (DESIGN: the name users type).
        assert set(info.entries()) == {*dict(dump.vmcoreinfo.items()), "PAGE_SIZE"}
        assert tree.lookup("/info/PAGE_SIZE").read(0, 100) == b"4096\n"
