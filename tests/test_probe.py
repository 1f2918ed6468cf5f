"""detect.probe: whether a file is a dump, from its headers only (what a folder scan asks)."""

from __future__ import annotations

import folderbuilder as fb
import pytest

from vmcorefs.dumpfile.detect import probe
from vmcorefs.errors import DumpError

PAGE = fb.PAGE


def test_probe_tells_dumps_from_other_files(tmp_path):
    assert probe(str(fb.kdump(tmp_path / "k", 1))).kind == "kdump"
    assert probe(str(fb.flattened(tmp_path / "f", 1))).kind == "flattened"
    assert probe(str(fb.elf(tmp_path / "e", 1))).kind == "elf"
    parts = fb.split(tmp_path / "s", 1)
    found = [probe(str(p)).split for p in parts]
    assert [(s.start_pfn, s.end_pfn) for s in found] == [(0, 3), (3, 5), (5, fb.PFNS)]
    assert len({s.set_key for s in found}) == 1
    (tmp_path / "t").write_text("kdump-tools: dump saved\n")
    (tmp_path / "z").write_bytes(b"")
    (tmp_path / "r").write_bytes(bytes(range(256)) * 4)
    for other in ("t", "z", "r"):
        assert probe(str(tmp_path / other)) is None
    assert probe(str(fb.process_core(tmp_path / "p"))) is None
    assert probe(str(fb.executable(tmp_path / "x"))) is None


def test_probe_of_a_broken_dump_says_why(tmp_path):
    data = (tmp_path / "k").write_bytes(fb.kdump(tmp_path / "whole", 1).read_bytes()[:300])
    assert data == 300
    with pytest.raises(DumpError, match="truncated kdump header"):
        probe(str(tmp_path / "k"))


def test_probe_reads_headers_only(tmp_path, monkeypatch):
    """A big dump costs a folder scan a few small reads, not its bitmaps or its pages."""
    from vmcorefs.dumpfile import source

    path = fb.kdump(tmp_path / "k", 1)
    with open(path, "r+b") as f:  # a sparse 1 GiB tail the probe must not read
        f.truncate(1 << 30)
    reads = []
    real = source.DumpFile.pread

    def counted(self, offset, size):
        reads.append(size)
        return real(self, offset, size)

    monkeypatch.setattr(source.DumpFile, "pread", counted)
    assert probe(str(path)).kind == "kdump"
    assert sum(reads) <= 2 * PAGE
