"""Check a dump against the real cases' ``oracle.json`` samples (expected reads made by drgn).

A sample is ``{space, addr, len, present, sha256, why}``: ``present`` bytes are readable at
``addr`` (their sha256 given), and the next byte is not (or is past the end of ``phys``). Used
by the truth tests of every container (ELF, kdump, flattened, split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def samples_for(oracle: dict, name: str) -> list[dict]:
    """The sample list of dump file ``name`` (keys are the names as shipped)."""
    files = oracle.get("files", oracle)
    return list(files.get(name) or [])


def read_all(space, addr: int, size: int) -> bytes:
    """Read like the judge: in a loop until ``size`` bytes or the first empty read."""
    parts: list[bytes] = []
    got = 0
    while got < size:  # bounded: every pass reads at least one byte or stops
        data = space.read(addr + got, size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def check_sample(dump, sample: dict) -> str | None:
    """None when ``dump`` reads as the sample says, else what differs."""
    space = dump.phys if sample["space"] == "phys" else dump.kvirt
    addr, size, present = int(sample["addr"]), int(sample["len"]), int(sample["present"])
    got = read_all(space, addr, size)
    where = f"[{sample.get('why', '?')}] {sample['space']} {addr:#x}+{size}"
    if len(got) != present:
        return f"{where}: {len(got)} bytes readable, expected {present}"
    if hashlib.sha256(got).hexdigest() != sample["sha256"]:
        return f"{where}: {present} bytes but their sha256 differs (head {got[:16].hex()})"
    if present < size and space.read(addr + present, 1):
        return f"{where}: byte {addr + present:#x} is readable, expected absent"
    return None


def check_samples(dump, samples: Iterable[dict]) -> list[str]:
    """Every sample that ``dump`` does not reproduce, described (empty: all agree)."""
    problems = []
    for sample in samples:
        problem = check_sample(dump, sample)
        if problem:
            problems.append(problem)
    return problems
