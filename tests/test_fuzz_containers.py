"""Fuzzing the dump containers: ELF, kdump-compressed, flattened and split dumps.

Seeds: the synthetic kernel of :mod:`tests.fuzzing` in each format (and the bundled sample).
Mutations hit every header field, program header, note, bitmap, page descriptor, compressed
page and flattened record, and cut the file anywhere. Each case must end in data, a clean
``DumpError`` at open, or EIO / ``unavailable: ...`` per file (see :func:`tests.fuzzing.walk_tree`).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzzing as fz

pytestmark = pytest.mark.fuzz


def _run(name: str, paths) -> fz.Outcome:
    k = fz.kernel()
    out = fz.run_case(paths, phys=k.phys_reads, kvirt=k.kvirt_reads)
    fz.record(name, out)
    return out


def test_unmutated_seeds_open_and_read(scratch):
    """The seeds themselves: every format opens and gives the kernel's data."""
    seeds = [fz.elf_seed()[0], *(fz.kdump_seed(c)[0] for c in fz.CODECS)]
    seeds += [s for s, _ in fz.flat_seeds()]
    for raw in seeds:
        out = fz.exercise(scratch.write(raw), phys=fz.kernel().phys_reads)
        # unavailable: what needs BTF (btf, ps, modules, tasks/, two stacks) and crash (the
        # seed's kernel did not crash)
        assert out.refused is None and out.reads > 100 and out.unavailable <= 7, out
    parts = [scratch.write(p, f"part{i}") for i, p in enumerate(fz.split_seed()[0])]
    assert fz.exercise(parts[::-1]).refused is None


@fz.fuzz_settings(2000)
@given(st.data())
def test_fuzz_elf(scratch, data):
    raw, regions = fz.elf_seed()
    container = [r for r in regions if r.name in fz.ELF_CONTAINER]
    edits = data.draw(fz.mutations(container, len(raw)))
    _run("ELF", scratch.write(fz.apply(raw, edits)))


@fz.fuzz_settings(2000)
@given(st.data())
def test_fuzz_kdump(scratch, data):
    codec = data.draw(st.sampled_from(fz.CODECS))
    version = data.draw(st.sampled_from([6, 6, 6, 5, 4, 3, 1, 0]))
    raw, regions = fz.kdump_seed(codec, version)
    edits = data.draw(fz.mutations(regions, len(raw)))
    _run("kdump", scratch.write(fz.apply(raw, edits)))


@fz.fuzz_settings(2000)
@given(st.data())
def test_fuzz_flattened(scratch, data):
    raw, regions = fz.flat_seeds()[data.draw(st.integers(0, 1))]
    edits = data.draw(fz.mutations(regions, len(raw)))
    _run("flattened", scratch.write(fz.apply(raw, edits)))


@fz.fuzz_settings(2000)
@given(st.data())
def test_fuzz_split(scratch, data):
    parts, regions = fz.split_seed()
    victim = data.draw(st.integers(0, len(parts) - 1))
    edits = data.draw(fz.mutations(regions[victim], len(parts[victim])))
    raws = list(parts)
    raws[victim] = fz.apply(parts[victim], edits)
    order = data.draw(st.permutations(range(len(parts))))
    paths = [scratch.write(raws[i], f"part{i}") for i in order]
    _run("split", paths)


@pytest.mark.skipif(not fz.SAMPLE.exists(), reason="no bundled sample")
@fz.fuzz_settings(12, scale=100)
@given(st.data())
def test_fuzz_sample(scratch, data):
    """The real sample's headers, bitmaps and descriptors (fewer cases: a walk costs more)."""
    raw, regions = fz.sample_seed()
    edits = data.draw(fz.mutations(regions, len(raw), truncate=False))
    out = fz.Outcome()
    with fz.limits():
        out = fz.exercise(scratch.write(fz.apply(raw, edits)), phys=[0x100000, 0x1000000],
                          kvirt=fz.sample_kvirt(), max_entries=40)  # fmt: skip
    fz.record("sample kdump", out)
