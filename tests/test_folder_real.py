"""Folder mounts of the real dumps (../shared/dumps): /var/crash as kdump-tools and RHEL's kdump
lay it out, made of links to the real files, and the whole unpacked folder of cases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from oracle import check_samples, samples_for

from vmcorefs.errors import FaultError
from vmcorefs.folder import FolderTree
from vmcorefs.kernel.crash import NO_CRASH

pytestmark = pytest.mark.realdump
RELEASE = "6.1.0-56-amd64"


def rows_of(tree: FolderTree) -> dict[str, list[str]]:
    lines = tree.lookup("index").read(0, 1 << 20).decode().splitlines()
    assert lines[0] == "name\trelease\tcrash_time\treason\tformat\tsize"
    rows = {}
    for line in lines[1:]:
        cells = line.split("\t")
        assert cells[0] not in rows
        rows[cells[0]] = cells
    return rows


def crashtime(case_root: Path) -> int | None:
    """CRASHTIME of the case's own copy of its VMCOREINFO (vmcoreinfo.txt)."""
    for line in (case_root / "vmcoreinfo.txt").read_text().splitlines():
        if line.startswith("CRASHTIME="):
            return int(line.split("=", 1)[1])
    return None


def iso(seconds: int | None) -> str:
    if seconds is None:
        return "unknown"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def link(target: Path, path: Path, missing: list[str]) -> None:
    if not target.exists():
        missing.append(str(target))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_var_crash_layouts_of_links_to_the_real_dumps(tmp_path, dumps_dir):
    kexec = dumps_dir / "kexec-oops-3cpu-448m"
    kaslr = dumps_dir / "kaslr-256m"
    la57 = dumps_dir / "la57-nokaslr-384m"
    crash = tmp_path / "crash"
    missing: list[str] = []
    layout = {  # NAME: (case, dump file, log file, the dump's and the log's names in crash/)
        "202612041811": (kexec, "mdf-d31-zlib.kdump", "dump.202612041811", "dmesg.202612041811"),
        "127.0.0.1-2026-12-04-18:11:42": (kaslr, "vmcore.elf", "vmcore", "vmcore-dmesg.txt"),
        "202612041900": (la57, "mdf-d31-zstd.kdump", "dump.202612041900", "dmesg.202612041900"),
    }
    for name, (case, dump, as_dump, as_log) in layout.items():
        link(case / dump, crash / name / as_dump, missing)
        link(case / "dmesg.makedumpfile.txt", crash / name / as_log, missing)
    if missing:
        pytest.skip(f"not in ../shared/dumps: {missing}")
    tree = FolderTree(str(crash), reaper=False)
    rows = rows_of(tree)
    assert set(rows) == set(layout)
    for name, (case, dump, _, _) in layout.items():
        truth = json.loads((case / "truth.json").read_text())
        row = rows[name]
        assert row[1] == truth["osrelease"] == RELEASE
        assert row[2] == iso(crashtime(case))
        assert int(row[5]) == truth["files"][dump]["size"]
        # the log of each dump is makedumpfile's for that dump (an independent reader)
        dmesg = tree.lookup(f"{name}/dmesg").read(0, 1 << 22)
        assert dmesg == (case / "dmesg.makedumpfile.txt").read_bytes()
        summary = tree.lookup(f"{name}/summary").read(0, 1 << 16).decode()
        assert summary.startswith(f"release: {RELEASE}\n")
    assert rows["202612041811"][2] != "unknown"  # a kexec dump has CRASHTIME
    for name, (case, _, _, _) in layout.items():
        truth = json.loads((case / "truth.json").read_text())
        if truth.get("crash_reason") is None:  # the case did not crash (DESIGN, "Crash")
            assert rows[name][3] == f"unavailable: {NO_CRASH}", name
            crash = tree.lookup(f"{name}/crash").read(0, 1 << 16).decode()
            assert crash == f"{rows[name][3]}\n", name  # the same words
        else:
            assert rows[name][3] == truth["crash_reason"], name


def test_the_unpacked_folder_of_cases(dumps_dir):
    """The done-when check: every dump of every case listed once, each with its summary."""
    started = time.monotonic()
    tree = FolderTree(str(dumps_dir), reaper=False)
    names = set(tree.root.entries()) - {"index"}
    assert tree.pool.opens == 0
    listed = time.monotonic() - started
    expected = set()
    for case in sorted(dumps_dir.iterdir()):
        if (case / "truth.json").exists():
            for name in json.loads((case / "truth.json").read_text())["files"]:
                expected.add(os.path.realpath(case / name))
    found = {p for slot in tree.slots() for p in slot.paths}
    assert found == expected
    assert len(names) == len(expected)
    rows = rows_of(tree)
    assert set(rows) == names
    for name, row in rows.items():
        assert row[1] == RELEASE, row
        summary = tree.lookup(f"{name}/summary").read(0, 1 << 16).decode()
        assert summary.startswith(f"release: {RELEASE}\n"), name
    assert tree.pool.peak <= tree.pool.max_open
    print(f"\nscan and list {len(names)} dumps: {listed:.2f} s")


class _ThroughTree:
    """``phys`` and ``kvirt`` of one dump of a folder tree, read through the tree's files (the
    oracle's samples then check what a reader of the mount gets)."""

    class _Space:
        def __init__(self, tree: FolderTree, path: str, base: int) -> None:
            self.node = tree.lookup(path)
            self.base = base

        def read(self, addr: int, size: int) -> bytes:
            try:
                return self.node.read(addr - self.base, size)
            except FaultError:
                return b""

    def __init__(self, tree: FolderTree, name: str) -> None:
        self.phys = self._Space(tree, f"{name}/phys", 0)
        self.kvirt = self._Space(tree, f"{name}/kvirt", 1 << 63)


def test_a_split_dump_made_by_makedumpfile(tmp_path, dumps_dir):
    mdf = shutil.which("makedumpfile")
    if not mdf:
        pytest.skip("makedumpfile is not installed")
    case = dumps_dir / "kaslr-256m"
    src = case / "mdf-d31-zlib.kdump"
    if not src.exists():
        pytest.skip("kaslr-256m/mdf-d31-zlib.kdump is absent")
    folder = tmp_path / "crash" / "202612041811"
    folder.mkdir(parents=True)
    parts = [folder / f"dump.202612041811-{i}" for i in (1, 2, 3)]
    r = subprocess.run(
        [mdf, "--split", "-c", "-d", "31", "--splitblock-size", "1024", str(src), *parts],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"makedumpfile --split failed: {r.stderr.strip()[-200:]}")
    (folder / "dmesg.202612041811").write_bytes((case / "dmesg.makedumpfile.txt").read_bytes())
    os.symlink(src, tmp_path / "crash" / "whole.kdump")
    tree = FolderTree(str(tmp_path / "crash"), reaper=False, max_open=1)
    rows = rows_of(tree)
    assert set(rows) == {"202612041811", "whole.kdump"}
    row = rows["202612041811"]
    assert row[1] == RELEASE
    assert row[4] == "kdump-compressed, split in 3 parts"
    assert int(row[5]) == sum(os.path.getsize(p) for p in parts)
    oracle = json.loads((case / "oracle.json").read_text())
    for name in ("202612041811", "whole.kdump"):
        samples = samples_for(oracle, "mdf-d31-zlib.kdump")
        assert samples
        problems = check_samples(_ThroughTree(tree, name), samples)
        assert not problems, problems[:3]
