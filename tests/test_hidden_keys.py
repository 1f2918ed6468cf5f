"""Dumps without VMCOREINFO's kallsyms keys (every kernel before 6.0), made from real 6.1 dumps
by ``tools/hide-kallsyms-keys``: the kallsyms tables and everything that follows from them
(symbols, BTF, tasks, stacks, modules, mm/, crash) must be the same as with the keys."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DUMPS
from vmcorefs.kernel.dump import open_dump
from vmcorefs.tree import NotFound, build_tree

TOOL = REPO / "tools" / "hide-kallsyms-keys"
ACCEPT = SHARED_DUMPS.parent / "accept" / "accept.py"
#: Files whose text must be the same with and without the keys (kallsyms and sym/ differ only
#: in the names of the VMCOREINFO keys themselves, see _normalised).
SAME = ["ps", "modules", "crash", "summary", "mm/buddyinfo", "mm/vmalloc", "cpus/0/stack",
        "cpus/1/stack", "kallsyms"]  # fmt: skip


def _tool():
    loader = SourceFileLoader("hide_kallsyms_keys", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _hidden_copy(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True)
    renamed = _tool().hide_keys(dest)
    if not renamed:  # VMCOREFS_SAMPLE: a kernel before 6.0 has no keys to hide
        pytest.skip(f"{src.name} has no kallsyms keys")
    assert renamed == 6
    return dest


def _read(tree, path: str) -> bytes:
    node = tree.lookup(path)
    return node.read(0, node.size())


def _normalised(text: bytes) -> bytes:
    """The renamed keys are VMCOREINFO SYMBOL()s of their own ("xallsyms_names" at the table's
    address): named back, the merged tables must be equal."""
    return text.replace(b" xallsyms_", b" kallsyms_")


def _views(path: Path) -> dict[str, object]:
    with open_dump(str(path)) as dump:
        tree = build_tree(dump)
        out: dict[str, object] = {}
        for p in SAME:
            try:
                out[p] = _normalised(_read(tree, p))
            except NotFound:  # a file this branch does not have yet (crash)
                continue
        out["sources"] = [s.split(":")[0] for s in dump.symbols.sources[:1]]
        out["btf"] = (tree.lookup("btf").size(), hashlib.sha256(_read(tree, "btf")).hexdigest())
        pids = sorted(tree.lookup("tasks").entries(), key=lambda p: (len(p), p))
        out["stacks"] = {pid: _read(tree, f"tasks/{pid}/stack") for pid in pids}
        out["sym"] = sorted(
            n.replace("xallsyms_", "kallsyms_") for n in tree.lookup("sym").entries()
        )
        return out


def _compare(original: Path, hidden: Path) -> None:
    want, got = _views(original), _views(hidden)
    assert want.pop("sources") == ["kallsyms (absolute-percpu)"]
    assert got.pop("sources") == ["kallsyms (absolute-percpu, found in the kernel image)"]
    # (crash of a dump taken while running reads "unavailable: no crash: ...", keys or not)
    assert not [k for k in _read_unavailable(want) if k != "crash"], "the views must work"
    for key in want:
        assert got[key] == want[key], key


def _read_unavailable(views: dict[str, object]) -> list[str]:
    return [k for k, v in views.items() if isinstance(v, bytes) and v.startswith(b"unavailable")]


def test_only_the_note_is_renamed(sample, tmp_path):
    hidden = _hidden_copy(sample.dump, tmp_path / "vmcore.kdump")
    a, b = sample.dump.read_bytes(), hidden.read_bytes()
    assert len(a) == len(b)
    changed = [i for i in range(0, len(a), 1 << 16) if a[i : i + (1 << 16)] != b[i : i + (1 << 16)]]
    assert changed == [0]  # only the header blocks (the note's copies) differ
    diff = [i for i in range(1 << 16) if a[i] != b[i]]
    assert len(diff) == 6 and all(a[i : i + 9] == b"kallsyms_" for i in diff)
    with open_dump(str(hidden)) as dump:
        assert not [k for k in dump.vmcoreinfo.symbols() if k.startswith("kallsyms_")]


def test_sample_without_keys_gives_the_same_views(sample, tmp_path):
    _compare(sample.dump, _hidden_copy(sample.dump, tmp_path / "vmcore.kdump"))


@pytest.mark.realdump
@pytest.mark.parametrize("name", ["vmcore.elf", "mdf-d31-zlib.kdump"])
def test_real_dumps_without_keys_give_the_same_views(case, name, tmp_path):
    original = case.dump(name)
    _compare(original, _hidden_copy(original, tmp_path / name))


@pytest.mark.realdump
def test_kexec_dump_without_keys_gives_the_same_views(dumps_dir, tmp_path):
    root = dumps_dir / "kexec-oops-3cpu-448m"
    if not (root / "vmcore.elf").exists():
        pytest.skip("case kexec-oops-3cpu-448m is absent")
    _compare(root / "vmcore.elf", _hidden_copy(root / "vmcore.elf", tmp_path / "vmcore.elf"))


def _accept_rows(cases: Path, files: str, cache: Path) -> list[tuple[str, ...]]:
    """(status, dump, group, check) of every row accept.py gives the cases. ``cache``: its own
    cache folder (accept.py keeps the split sets it cuts by case name: a run of the originals
    elsewhere on the machine would overwrite the hidden copy's)."""
    cmd = [sys.executable, str(ACCEPT), "--cmd", str(Path(sys.executable).parent / "vmcorefs"),
           "--skip", "badinput", "--keep-going", "--files", files, str(cases)]  # fmt: skip
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, env=env)
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("PASS", "FAIL", "SKIP"):
            check = parts[3].rstrip(":") if len(parts) > 3 and parts[3].endswith(":") else ""
            rows.append((parts[0], parts[1], parts[2], check))
    assert rows, out.stdout + out.stderr
    return sorted(rows)


@pytest.mark.realdump
@pytest.mark.mount
def test_accept_passes_the_same_rows_without_keys(dumps_dir, tmp_path):
    """accept.py on copies of the cases with the keys hidden gives the rows it gives the
    originals (``VMCOREFS_ACCEPT_FILES`` widens the files: ``*`` for every dump, the ELF
    dumps then decompressed into the test's own cache)."""
    if not ACCEPT.exists():
        pytest.skip("../shared/accept/accept.py is absent")
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
        pytest.skip("no FUSE here")
    files = os.environ.get("VMCOREFS_ACCEPT_FILES", "mdf-d31-zlib.kdump")
    hidden = tmp_path / "hidden"
    subprocess.run([sys.executable, str(TOOL), str(dumps_dir), str(hidden)], check=True)
    want = _accept_rows(SHARED_DUMPS, files, tmp_path / "cache-originals")
    got = _accept_rows(hidden, files, tmp_path / "cache-hidden")
    assert got == want


class _WithoutBtfSymbols:
    """The dump's symbols without __start_BTF/__stop_BTF (a kernel without KALLSYMS_ALL);
    without the read-only data's bounds too when ``rodata`` is False."""

    def __init__(self, table, rodata: bool) -> None:
        self.table, self.rodata = table, rodata

    def get(self, name: str):
        hidden = {"__start_BTF", "__stop_BTF"}
        if not self.rodata:
            hidden |= {"__start_rodata", "__end_rodata"}
        return None if name in hidden else self.table.get(name)


def _btf_found_by_header(path: Path) -> None:
    from vmcorefs.kernel.btf import find_btf

    with open_dump(str(path)) as dump:
        want = (dump.symbols.address("__start_BTF"), dump.symbols.address("__stop_BTF"))
        for rodata in (True, False):
            symbols = _WithoutBtfSymbols(dump.symbols, rodata)
            assert find_btf(dump.kvirt, dump.vmcoreinfo, symbols) == want


def test_sample_btf_found_by_its_header_is_the_kernels(sample):
    _btf_found_by_header(sample.dump)


@pytest.mark.realdump
@pytest.mark.parametrize("name", ["vmcore.elf", "mdf-d31-zlib.kdump"])
def test_real_btf_found_by_its_header_is_the_kernels(case, name):
    _btf_found_by_header(case.dump(name))
