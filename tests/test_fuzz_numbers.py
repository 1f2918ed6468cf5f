"""The semantic fuzz of numbers (issue 20): every VMCOREINFO key of the real sample, and every
integer field of its kdump header, at each extreme value, through the whole tree.

The cases and how each runs are in :mod:`tests.hostile_numbers`: a case must end in data, a
``DumpError`` at open, EIO or ``unavailable: ...``, within 5 s and 256 MiB; a file's size must
be its content's. Cases run in a few worker processes (``VMCOREFS_FUZZ_WORKERS``); the long mode
(``VMCOREFS_FUZZ_CASES`` set, ``benchmarks/fuzz_long.py``) adds more values and removes each key.
"""

from __future__ import annotations

import pytest

from tests import fuzzing as fz
from tests import hostile_numbers as hn

pytestmark = [
    pytest.mark.fuzz,
    pytest.mark.skipif(not fz.SAMPLE.exists(), reason="no bundled sample"),
]


def _check(name: str, cases: list[hn.Case]) -> list[hn.Result]:
    results = hn.run_cases(cases)
    counts = fz.STATS[name]
    for key, value in hn.summary(results).items():
        counts[key] += value  # type: ignore[operator]
    failures = [f"{r.case}: {r.failure}" for r in results if r.failure]
    assert not failures, f"{len(failures)} of {len(results)} cases failed:\n" + "\n".join(
        failures[:40]
    )
    return results


def test_every_vmcoreinfo_key_at_every_extreme(scratch):
    cases = hn.vmcoreinfo_cases(hn.long_mode())
    keys = {c.key for c in cases}
    assert len(keys) == len(fz.note_keys(fz.sample_note())) > 100  # every key, none skipped
    results = _check("numbers: VMCOREINFO", cases)
    # The walk reached the tree: most cases open the dump and read hundreds of files.
    opened = [r for r in results if r.refused is None]
    assert len(opened) > len(results) * 0.8 and min(r.files for r in opened) > 100


def test_every_kdump_header_field_at_every_extreme(scratch):
    cases = hn.kdump_header_cases(hn.long_mode())
    assert {c.key for c in cases} == set(hn.HEADER_FIELDS + hn.SUB_HEADER_FIELDS)
    results = _check("numbers: kdump header", cases)
    assert any(r.refused for r in results) and any(r.refused is None for r in results)
