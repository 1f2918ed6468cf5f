"""Shared fixtures: the real dumps of ``../shared/dumps`` (skipped cleanly when absent).

``../shared/dumps`` keeps its ELF dumps as ``*.zst``; its ``unpack`` script writes a usable copy
to a cache folder once. ``VMCOREFS_DUMPS`` may name another folder of cases (already unpacked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sample import Sample

REPO = Path(__file__).resolve().parents[1]
SHARED_DUMPS = REPO.parent / "shared" / "dumps"
CASES = ("kaslr-256m", "la57-nokaslr-384m")


@pytest.fixture(scope="session")
def dumps_dir() -> Path:
    """The unpacked folder of real dump cases, or skip."""
    override = os.environ.get("VMCOREFS_DUMPS")
    if override:
        path = Path(override)
        if not path.is_dir():
            pytest.skip(f"VMCOREFS_DUMPS={override} is not a folder")
        return path
    unpack = SHARED_DUMPS / "unpack"
    if not unpack.exists():
        pytest.skip("../shared/dumps is absent")
    if not shutil.which("zstd"):
        pytest.skip("zstd is not installed (needed to unpack ../shared/dumps)")
    out = subprocess.run([str(unpack)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip(f"../shared/dumps/unpack failed: {out.stderr.strip()}")
    return Path(out.stdout.strip().splitlines()[-1])


class Case:
    """One real dump case: its folder, truth files and dump files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = root.name
        self.truth = json.loads((root / "truth.json").read_text())

    def json(self, name: str):
        path = self.root / name
        if not path.exists():
            pytest.skip(f"{self.name} has no {name}")
        return json.loads(path.read_text())

    def file(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            pytest.skip(f"{self.name} has no {name}")
        return path

    def dump(self, name: str) -> Path:
        """The dump file ``name`` of this case; skip where the case has no such file."""
        if name not in self.truth["files"]:
            pytest.skip(f"{self.name} has no {name}")
        return self.file(name)

    def dump_files(self) -> list[str]:
        return sorted(self.truth["files"])


@pytest.fixture(scope="session", params=CASES)
def case(request, dumps_dir: Path) -> Case:
    """Each real case in turn."""
    root = dumps_dir / request.param
    if not (root / "truth.json").exists():
        pytest.skip(f"case {request.param} is absent")
    return Case(root)


@pytest.fixture(scope="session")
def kaslr_case(dumps_dir: Path) -> Case:
    root = dumps_dir / "kaslr-256m"
    if not (root / "truth.json").exists():
        pytest.skip("case kaslr-256m is absent")
    return Case(root)


@pytest.fixture(scope="session")
def sample() -> Sample:
    """The bundled sample dump (tests/data/sample/) and its ground truth: always present, but
    for another dump named by ``VMCOREFS_SAMPLE`` that lacks the dump file (skipped then)."""
    found = Sample()
    if not found.dump.exists():
        pytest.skip(f"{found.root.name} has no {found.dump.name}")
    return found


@pytest.fixture(scope="module")
def scratch():
    """A scratch seed file for a fuzz module (tests/fuzzing.py); the case counts so far are
    printed when the module ends."""
    from tests import fuzzing

    seed = fuzzing.SeedFile()
    yield seed
    seed.cleanup()
    for name, counts in sorted(fuzzing.STATS.items()):
        print(f"\nfuzz {name}: {dict(counts)}")
