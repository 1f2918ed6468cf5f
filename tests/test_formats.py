"""The table of formats: detection by content, probes from the headers alone, split grouping."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from kdumpwriter import KdumpSpec, assemble, build_elf_core, flatten, kdump_chunks, pattern_page

from tests.elfbuilder import ElfCore, LoadSegment, note
from vmcorefs.dumpfile import detect
from vmcorefs.dumpfile.detect import FORMATS, open_one, open_source, probe
from vmcorefs.dumpfile.source import DumpFile
from vmcorefs.errors import DumpError

PAGE = 4096
VI = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82000000\n"
PACKAGE = Path(__file__).resolve().parents[1] / "vmcorefs"


def spec(**kw) -> KdumpSpec:
    pages = {p: pattern_page(p) for p in range(64) if p % 3}
    return KdumpSpec(max_mapnr=64, pages=pages, **kw)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def parts(tmp_path: Path, s: KdumpSpec, bounds: list[int], prefix: str, **flat) -> list[str]:
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        chunks = kdump_chunks(s, split=(a, b))
        data = flatten(*chunks, **flat) if flat else assemble(*chunks)
        out.append(write(tmp_path, f"{prefix}{i}", data))
    return out


def test_each_format_is_probed_from_its_headers(tmp_path):
    kdump = write(tmp_path, "k", assemble(*kdump_chunks(spec())))
    elf = write(tmp_path, "e", build_elf_core([(0, bytes(PAGE), PAGE)], VI))
    flat_kdump = write(tmp_path, "fk", flatten(*kdump_chunks(spec()), record_size=3000))
    flat_elf = write(tmp_path, "fe", flatten([(0, open(elf, "rb").read())], 0))
    got = {path: probe(path) for path in (kdump, elf, flat_kdump, flat_elf)}
    assert got[kdump] == detect.Probe(kdump, "kdump")
    assert got[elf] == detect.Probe(elf, "elf")
    assert got[flat_kdump] == detect.Probe(flat_kdump, "flattened", payload="kdump")
    assert got[flat_elf] == detect.Probe(flat_elf, "flattened", payload="elf")
    # a file already open: the same answer, and the file is left open for the caller
    file = DumpFile(kdump)
    assert probe(file) == got[kdump]
    assert file.pread(0, 8) == b"KDUMP   "
    file.close()


def test_what_is_not_a_dump_probes_as_none(tmp_path):
    exe = ElfCore(segments=[LoadSegment(0, b"x" * 64)]).build()
    exe = exe[:16] + (2).to_bytes(2, "little") + exe[18:]  # ET_EXEC
    process_core = ElfCore(notes=[note(b"CORE", 1, bytes(336))], segments=[LoadSegment(0, b"x")])
    for name, data in [
        ("empty", b""),
        ("text", b"not a dump\n" * 10),
        ("binary", bytes(range(256))),
        ("exe", exe),
        ("process-core", process_core.build()),  # no VMCOREINFO: a process's core
    ]:
        assert probe(write(tmp_path, name, data)) is None, name


def test_a_dump_with_broken_headers_probes_as_an_error(tmp_path):
    whole = assemble(*kdump_chunks(spec()))
    flat = flatten(*kdump_chunks(spec()))
    elf32 = bytearray(build_elf_core([(0, bytes(PAGE), PAGE)], VI))
    elf32[4] = 1  # ELFCLASS32
    for name, data, message in [
        ("cut.kdump", whole[:300], "truncated kdump header"),
        ("cut.flat", flat[:1000], "truncated flattened header"),
        ("elf32", bytes(elf32), "32-bit ELF"),
    ]:
        with pytest.raises(DumpError, match=message):
            probe(write(tmp_path, name, data))
    with pytest.raises(DumpError, match="no such file"):
        probe(str(tmp_path / "missing"))


def test_split_parts_are_grouped_as_opening_accepts_them(tmp_path):
    s = spec()
    bounds = [0, 20, 45, 64]
    mine = parts(tmp_path, s, bounds, "part")
    flat = parts(tmp_path, s, bounds, "flat", record_size=3000)
    # another crash of the same kernel: only VMCOREINFO's CRASHTIME differs (no header time)
    other_spec = spec(vmcoreinfo=VI + b"CRASHTIME=2\n", timestamp=(0, 0))
    same_spec = spec(vmcoreinfo=VI + b"CRASHTIME=1\n", timestamp=(0, 0))
    other = parts(tmp_path, other_spec, bounds, "other")
    same = parts(tmp_path, same_spec, bounds, "same")
    probes = {path: probe(path) for path in mine + flat + other + same}
    for paths, kind in [(mine, "kdump"), (flat, "flattened")]:
        found = [probes[p] for p in paths]
        assert [(p.split.start_pfn, p.split.end_pfn) for p in found] == list(
            itertools.pairwise(bounds)
        )
        assert {p.kind for p in found} == {kind}
        assert len({p.split.set_key for p in found}) == 1
    key = probes[mine[0]].split.set_key
    assert probes[flat[0]].split.set_key == key  # flattened or not, one dump
    assert probes[other[0]].split.set_key != probes[same[0]].split.set_key
    assert len({probes[p].split.set_key for p in other}) == 1
    # opening agrees: a set of one key opens, a part of another key is foreign
    assert open_source([mine[2], flat[1], mine[0]]).phys_end == 64 * PAGE
    with pytest.raises(DumpError, match="foreign part: its VMCOREINFO differs"):
        open_source([same[0], other[1], same[2]])


def test_detection_names_what_a_file_is_not(tmp_path):
    with pytest.raises(DumpError, match="empty file"):
        open_one(write(tmp_path, "empty", b""))
    with pytest.raises(DumpError, match="a text file, not a crash dump"):
        open_one(write(tmp_path, "text", b"hello\n" * 100))
    titles = [f.title for f in FORMATS.formats]
    with pytest.raises(DumpError, match="not a crash dump: neither") as caught:
        open_one(write(tmp_path, "binary", bytes(range(1, 255))))
    assert all(title in caught.value.reason for title in titles)
    # a flattened stream holds one of the others, never another stream
    inner = flatten([(0, b"makedumpfile".ljust(4096, b"\0"))], 0)
    with pytest.raises(DumpError, match="flattened stream that holds neither"):
        open_one(write(tmp_path, "nested", flatten([(0, inner)], 0)))
    elf = build_elf_core([(0, bytes(PAGE), PAGE)], VI)
    with pytest.raises(DumpError, match="cannot be part of a split dump"):
        open_source([write(tmp_path, "a.elf", elf), write(tmp_path, "b.elf", elf)])


def test_each_magic_number_is_defined_once():
    """The magic numbers live in their container module; detection uses the table only."""
    magics = [m for f in FORMATS.formats for m in f.magics]
    assert len(magics) == len(set(magics)) >= 4
    literals: dict[bytes, list[str]] = {}
    for path in sorted((PACKAGE / "dumpfile").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                for magic in magics:
                    if node.value.startswith(magic):
                        literals.setdefault(magic, []).append(path.name)
    assert all(len(files) == 1 for files in literals.values()), literals
    assert set(literals) == set(magics)
