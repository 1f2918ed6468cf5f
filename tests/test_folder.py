"""A folder of dumps as one tree (vmcorefs/folder/): found by content, named, opened lazily and
at most --max-open at once, indexed. Driven through the tree, without FUSE."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import folderbuilder as fb
import pytest

from tests.sample import Sample
from vmcorefs.errors import DumpError
from vmcorefs.folder import FolderTree, root, scan
from vmcorefs.kernel import crash
from vmcorefs.kernel.cpus import PANIC_CPU_INVALID
from vmcorefs.kernel.dump import Dump
from vmcorefs.tree import Directory, NotFound

PAGE = fb.PAGE
HEADER = ["name", "release", "crash_time", "reason", "format", "size"]


def folder_tree(path: Path, **kw) -> FolderTree:
    kw.setdefault("reaper", False)
    return FolderTree(str(path), **kw)


def names(tree: FolderTree) -> set[str]:
    return set(tree.root.entries()) - {"index"}


def read(tree: FolderTree, path: str) -> bytes:
    node = tree.lookup(path)
    return node.read(0, 1 << 20)


def index_rows(tree: FolderTree) -> dict[str, dict[str, str]]:
    lines = read(tree, "index").decode().splitlines()
    assert lines[0].split("\t") == HEADER
    rows = {}
    for line in lines[1:]:
        cells = line.split("\t")
        assert len(cells) == len(HEADER), line
        assert cells[0] not in rows, f"{cells[0]} listed twice"
        rows[cells[0]] = dict(zip(HEADER, cells, strict=True))
    return rows


def assert_is_dump(tree: FolderTree, name: str, seed: int) -> None:
    """NAME/phys holds dump ``seed``'s frames (the builder wrote its number in every page)."""
    phys = tree.lookup(f"{name}/phys")
    assert phys.size() == fb.PFNS * PAGE
    for pfn in (0, fb.PFNS // 2, fb.PFNS - 1):
        assert phys.read(pfn * PAGE, PAGE) == fb.page(seed, pfn), (name, pfn)


# -- names -----------------------------------------------------------------------------------------


def test_kdump_tools_and_rhel_layouts_take_their_folder_names(tmp_path):
    crash = tmp_path / "crash"
    fb.kdump(crash / "202611261042" / "dump.202611261042", 1)
    (crash / "202611261042" / "dmesg.202611261042").write_text("[    0.000000] Linux\n")
    fb.elf(crash / "127.0.0.1-2026-11-26-10:42:13" / "vmcore", 2)
    (crash / "127.0.0.1-2026-11-26-10:42:13" / "vmcore-dmesg.txt").write_text("log\n")
    (crash / "kexec_cmd").write_text("kexec -p ...\n")
    tree = folder_tree(crash)
    assert names(tree) == {"202611261042", "127.0.0.1-2026-11-26-10:42:13"}
    assert_is_dump(tree, "202611261042", 1)
    assert_is_dump(tree, "127.0.0.1-2026-11-26-10:42:13", 2)
    readme = read(tree, "202611261042/README").decode()
    assert "202611261042/dump.202611261042" in readme


def test_dumps_that_share_a_folder_take_their_file_names(tmp_path):
    fb.kdump(tmp_path / "host1" / "vmcore-a", 1)
    fb.kdump(tmp_path / "host1" / "vmcore-b", 2)
    fb.elf(tmp_path / "top.elf", 3)  # in the mounted folder itself: its file name
    tree = folder_tree(tmp_path)
    assert names(tree) == {"vmcore-a", "vmcore-b", "top.elf"}
    assert_is_dump(tree, "vmcore-b", 2)
    assert_is_dump(tree, "top.elf", 3)


def test_name_collisions_get_numbers_that_stay_across_mounts(tmp_path):
    fb.kdump(tmp_path / "a" / "2026" / "vmcore", 1)
    fb.kdump(tmp_path / "b" / "2026" / "vmcore", 2)
    fb.kdump(tmp_path / "c" / "2026" / "vmcore", 3)
    fb.kdump(tmp_path / "index", 4)  # the index's own name is taken
    for _ in range(2):  # two mounts, the same names for the same dumps
        tree = folder_tree(tmp_path)
        assert names(tree) == {"2026", "2026~2", "2026~3", "index~2"}
        assert_is_dump(tree, "2026", 1)
        assert_is_dump(tree, "2026~2", 2)
        assert_is_dump(tree, "2026~3", 3)
        assert_is_dump(tree, "index~2", 4)
        assert isinstance(tree.lookup("index"), root.IndexFile)


def test_nested_folders_are_searched_to_a_bounded_depth(tmp_path, monkeypatch):
    fb.kdump(tmp_path / "dc1" / "rack2" / "host3" / "202611261042" / "dump.202611261042", 1)
    deep = tmp_path.joinpath(*(f"d{i}" for i in range(6)))
    fb.kdump(deep / "too-deep" / "vmcore", 2)
    monkeypatch.setattr(scan, "MAX_DEPTH", 5)
    tree = folder_tree(tmp_path)
    assert names(tree) == {"202611261042"}
    assert_is_dump(tree, "202611261042", 1)


def test_files_that_are_no_dumps_are_ignored(tmp_path):
    fb.kdump(tmp_path / "2026" / "dump.2026", 1)
    (tmp_path / "2026" / "dmesg.2026").write_text("BUG: kernel NULL pointer dereference\n")
    fb.process_core(tmp_path / "cores" / "core.bash.1234")
    fb.executable(tmp_path / "vmlinux-6.1.0-56-amd64")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "random.bin").write_bytes(random.Random(1).randbytes(8192))
    os.mkfifo(tmp_path / "fifo")  # never opened: a scan must not block on it
    tree = folder_tree(tmp_path)
    assert names(tree) == {"2026"}
    assert list(index_rows(tree)) == ["2026"]


def test_an_empty_folder_has_an_index_with_its_header_only(tmp_path):
    tree = folder_tree(tmp_path)
    assert set(tree.root.entries()) == {"index"}
    assert read(tree, "index").decode() == "\t".join(HEADER) + "\n"
    with pytest.raises(NotFound):
        tree.lookup("nothing/summary")


# -- split dumps -----------------------------------------------------------------------------------


def test_the_parts_of_a_split_dump_are_one_dump(tmp_path):
    parts = fb.split(tmp_path / "202611261042", 1)
    fb.kdump(tmp_path / "other" / "vmcore", 2)
    tree = folder_tree(tmp_path)
    assert names(tree) == {"202611261042", "other"}
    phys = tree.lookup("202611261042/phys")
    # across both boundaries between the parts (frames 3 and 5)
    assert phys.read(2 * PAGE, 4 * PAGE) == b"".join(fb.page(1, p) for p in range(2, 6))
    assert_is_dump(tree, "202611261042", 1)
    row = index_rows(tree)["202611261042"]
    assert row["format"] == "kdump-compressed, split in 3 parts"
    assert int(row["size"]) == fb.file_size(*parts)


def test_two_crashes_split_alike_in_one_folder_are_two_dumps(tmp_path):
    """No time in the headers (makedumpfile 1.7.2 writes 0): VMCOREINFO's CRASHTIME tells."""
    fb.split(tmp_path / "c", 1, prefix="a", timestamp=0, crashtime=1796407902)
    fb.split(tmp_path / "c", 2, prefix="b", timestamp=0, crashtime=1796407999)
    tree = folder_tree(tmp_path)
    assert names(tree) == {"a-1", "b-1"}
    assert_is_dump(tree, "a-1", 1)
    assert_is_dump(tree, "b-1", 2)


def test_two_split_dumps_in_one_folder_and_one_with_a_part_missing(tmp_path):
    fb.split(tmp_path / "crash", 1, prefix="early", timestamp=fb.TIMESTAMP)
    late = fb.split(tmp_path / "crash", 2, prefix="late", timestamp=fb.TIMESTAMP + 60)
    late[1].unlink()
    tree = folder_tree(tmp_path)
    assert names(tree) == {"early-1", "late-1"}
    assert_is_dump(tree, "early-1", 1)
    row = index_rows(tree)["late-1"]
    assert row["reason"].startswith("unavailable: ")
    assert "part missing: page frames 0x3-0x5" in row["reason"]


# -- dumps that cannot be opened -------------------------------------------------------------------


def test_a_dump_that_cannot_be_opened_is_a_readme_and_an_index_line(tmp_path):
    good = fb.kdump(tmp_path / "good" / "vmcore", 1)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "vmcore").write_bytes(good.read_bytes()[:300])  # truncated header
    # Its signature passes the scan; it fails when opened: the stream stops short.
    data = fb.flattened(tmp_path / "x" / "vmcore", 3).read_bytes()
    (tmp_path / "x" / "vmcore").write_bytes(data[: len(data) // 2])
    tree = folder_tree(tmp_path)
    assert names(tree) == {"good", "cut", "x"}
    rows = index_rows(tree)
    for name, why in (("cut", "truncated kdump header"), ("x", "truncated flattened stream")):
        assert rows[name]["reason"].startswith("unavailable: ")
        assert why in rows[name]["reason"]
        assert rows[name]["release"] == "unknown"
        assert set(tree.lookup(name).entries()) == {"README"}
        readme = read(tree, f"{name}/README").decode()
        assert why in readme and f"{name}/vmcore" in readme
        with pytest.raises(NotFound):
            tree.lookup(f"{name}/summary")
    assert rows["good"]["release"] == "6.1.0-test"
    assert_is_dump(tree, "good", 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_dump_says_so(tmp_path):
    path = fb.kdump(tmp_path / "2026" / "vmcore", 1)
    path.chmod(0)
    tree = folder_tree(tmp_path)
    assert "permission denied" in index_rows(tree)["2026"]["reason"]


# -- the index -------------------------------------------------------------------------------------


def test_index_columns(tmp_path):
    a = fb.kdump(tmp_path / "a" / "vmcore", 1, release="6.1.0-56-amd64", crashtime=1796407902)
    b = fb.kdump(tmp_path / "b" / "vmcore", 2, release="5.10.0-30-amd64")
    c = fb.elf(tmp_path / "c" / "vmcore", 3, release="6.12.1\twith a tab")
    d = fb.flattened(tmp_path / "d" / "vmcore", 4)
    rows = index_rows(folder_tree(tmp_path))
    assert list(rows) == ["a", "b", "c", "d"]
    assert rows["a"]["release"] == "6.1.0-56-amd64"
    assert rows["a"]["crash_time"] == "2026-12-04T18:11:42Z"  # CRASHTIME wins
    assert rows["b"]["crash_time"] == "2023-11-14T22:13:20Z"  # the kdump header's time
    assert rows["c"]["crash_time"] == "unknown"  # an ELF core has neither
    assert rows["c"]["release"] == "6.12.1 with a tab"
    formats = {n: r["format"] for n, r in rows.items()}
    assert formats == {
        "a": "kdump-compressed",
        "b": "kdump-compressed",
        "c": "ELF64 core",
        "d": "flattened (kdump-compressed)",
    }
    for name, path in zip("abcd", (a, b, c, d), strict=True):
        assert int(rows[name]["size"]) == os.path.getsize(path)


def crash_file_reason(tree: FolderTree, name: str) -> str:
    """What NAME/crash says of the reason: its ``reason:`` value, else its ``unavailable:``
    line."""
    first = read(tree, f"{name}/crash").decode().split("\n", 1)[0]
    return first.removeprefix("reason: ")


def test_the_reason_is_the_crash_files_and_no_stack_is_unwound(tmp_path, monkeypatch):
    """A synthetic dump has no kernel log: the column says the reason is not known and why,
    in the words of the dump's ``crash`` file, which the index does not build (that would
    unwind the crashing task's stack for every dump)."""
    fb.kdump(tmp_path / "a" / "vmcore", 1)
    tree = folder_tree(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(crash, "find_crash", None)  # the crash file's whole text: not made
        reason = index_rows(tree)["a"]["reason"]
    assert reason.startswith("unknown (the kernel log: unavailable: "), reason
    assert reason == crash_file_reason(tree, "a")


def test_a_running_system_reads_as_in_its_crash_file(tmp_path, monkeypatch):
    fb.kdump(tmp_path / "a" / "vmcore", 1)
    monkeypatch.setattr(Dump, "panic_cpu", PANIC_CPU_INVALID)  # no CPU panicked
    tree = folder_tree(tmp_path)
    reason = index_rows(tree)["a"]["reason"]
    assert reason.startswith(f"unavailable: {crash.NO_CRASH} (the kernel log: "), reason
    assert reason == crash_file_reason(tree, "a")


def sample_reason(sample: Sample) -> str:
    """The sample's crash reason from its ground truth (``crash_reason`` where the truth has
    it), else from its log as makedumpfile printed it (one report: a sysrq panic)."""
    if "crash_reason" in sample.truth:
        return sample.truth["crash_reason"]
    log = (sample.root / "dmesg.makedumpfile.txt").read_text()
    lines = [line.split("] ", 1)[1] for line in log.splitlines() if "Kernel panic - " in line]
    return lines[-1]


def test_the_reason_of_a_real_dump(tmp_path, sample):
    (tmp_path / "202611261042").mkdir()
    os.symlink(sample.dump, tmp_path / "202611261042" / "dump.202611261042")
    tree = folder_tree(tmp_path)
    tree.refresh()
    assert index_rows(tree)["202611261042"]["reason"] == sample_reason(sample)


def test_an_index_line_is_kept_once_made(tmp_path):
    paths = {str(fb.kdump(tmp_path / f"d{seed}" / "vmcore", seed)) for seed in range(3)}
    tree = folder_tree(tmp_path)
    assert_is_dump(tree, "d1", 1)  # open before the index
    first = read(tree, "index")
    assert tree.pool.opens == 3
    assert open_dump_files(paths) == 1  # those the index opened are closed again
    assert read(tree, "index") == first
    assert tree.pool.opens == 3  # nothing opened again


# -- lazy, bounded ---------------------------------------------------------------------------------


def test_listing_opens_no_dump(tmp_path):
    for seed in range(5):
        fb.kdump(tmp_path / f"d{seed}" / "vmcore", seed)
    tree = folder_tree(tmp_path)
    assert len(names(tree)) == 5
    for name in names(tree):
        assert isinstance(tree.lookup(name), Directory)
    assert tree.lookup("index").size() == 0
    assert tree.pool.opens == 0
    assert tree.lookup("d3/summary").read(0, 100).startswith(b"release: 6.1.0-test\n")
    assert tree.pool.opens == 1


def open_dump_files(paths: set[str]) -> int:
    """How many of ``paths`` this process has open now (its /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in paths:
                count += 1
        except OSError:
            pass
    return count


def test_at_most_max_open_dumps_are_open(tmp_path):
    paths = {str(fb.kdump(tmp_path / f"d{seed}" / "vmcore", seed)) for seed in range(5)}
    tree = folder_tree(tmp_path, max_open=2)
    for _ in range(2):
        for seed in range(5):
            assert_is_dump(tree, f"d{seed}", seed)
            assert open_dump_files(paths) <= 2
    assert tree.pool.peak == 2
    assert tree.pool.opens == 10  # two rounds through five dumps, two places: every one again
    tree.close()
    assert open_dump_files(paths) == 0


def test_four_readers_on_four_dumps_with_two_places(tmp_path):
    paths = {str(fb.kdump(tmp_path / f"d{seed}" / "vmcore", seed)) for seed in range(4)}
    tree = folder_tree(tmp_path, max_open=2)
    errors: list[str] = []
    most = [0]
    done = threading.Event()

    start = threading.Barrier(4)

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        phys = tree.lookup(f"d{seed}/phys")  # held like an open file: it holds no dump
        start.wait()
        try:
            for _ in range(150):
                time.sleep(0.0002)  # let the others in: four readers, two places
                pfn = rng.randrange(fb.PFNS)
                buffer = bytearray(PAGE)
                with phys.pinned():
                    got = phys.readinto(pfn * PAGE, memoryview(buffer))
                if bytes(buffer[:got]) != fb.page(seed, pfn):
                    errors.append(f"d{seed} frame {pfn}: wrong bytes")
        except Exception as exc:  # noqa: BLE001 - any failure in a reader fails the test
            errors.append(f"d{seed}: {type(exc).__name__}: {exc}")

    def watch() -> None:
        while not done.is_set():
            most[0] = max(most[0], open_dump_files(paths))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors
    assert tree.pool.peak == 2 and most[0] <= 2


def test_dumps_unused_for_a_while_are_closed(tmp_path):
    paths = {str(fb.kdump(tmp_path / f"d{seed}" / "vmcore", seed)) for seed in range(2)}
    tree = folder_tree(tmp_path, idle=3600)
    assert_is_dump(tree, "d0", 0)
    assert_is_dump(tree, "d1", 1)
    assert tree.pool.close_idle() == 0  # used just now
    tree.pool.idle = 0
    phys = tree.lookup("d0/phys")
    with phys.pinned():  # a request in progress holds its dump
        assert tree.pool.close_idle() == 1
        assert open_dump_files(paths) == 1
    assert tree.pool.close_idle() == 1
    assert open_dump_files(paths) == 0
    assert phys.read(PAGE, PAGE) == fb.page(0, 1)  # opened again on use


def test_the_idle_timer_closes_dumps_by_itself(tmp_path):
    path = str(fb.kdump(tmp_path / "d" / "vmcore", 1))
    tree = folder_tree(tmp_path, idle=0.1, reaper=True)
    try:
        assert_is_dump(tree, "d", 1)
        deadline = time.monotonic() + 10
        while open_dump_files({path}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_dump_files({path}) == 0
    finally:
        tree.close()


# -- changes ---------------------------------------------------------------------------------------


def test_dumps_added_and_removed_show_on_the_next_listing(tmp_path):
    fb.kdump(tmp_path / "2026a" / "vmcore", 1)
    tree = folder_tree(tmp_path)
    assert names(tree) == {"2026a"}
    old = tree.lookup("2026a/phys")
    fb.kdump(tmp_path / "2026b" / "vmcore", 2)  # a new subfolder: the folder changed
    fb.kdump(tmp_path / "2026a" / "vmcore.2", 3)  # a second dump in a folder: it changed
    assert names(tree) == {"2026a", "2026b", "vmcore.2"}  # 2026a keeps its name
    assert_is_dump(tree, "2026a", 1)
    assert_is_dump(tree, "2026b", 2)
    assert_is_dump(tree, "vmcore.2", 3)
    assert set(index_rows(tree)) == {"2026a", "2026b", "vmcore.2"}
    shutil.rmtree(tmp_path / "2026b")
    assert names(tree) == {"2026a", "vmcore.2"}
    assert set(index_rows(tree)) == {"2026a", "vmcore.2"}
    assert old.read(0, PAGE) == fb.page(1, 0)  # an open file of a dump that stayed reads on


def test_a_file_of_a_removed_dump_fails_rather_than_reads_another(tmp_path):
    fb.kdump(tmp_path / "2026a" / "vmcore", 1)
    tree = folder_tree(tmp_path, max_open=1)
    phys = tree.lookup("2026a/phys")
    shutil.rmtree(tmp_path / "2026a")
    fb.kdump(tmp_path / "2026a" / "vmcore", 2)  # another dump at the same path
    assert names(tree) == {"2026a"}
    with pytest.raises(DumpError):
        phys.read(0, PAGE)  # EIO through FUSE: the file held was of the dump that went
    assert_is_dump(tree, "2026a", 2)


def test_a_dump_rewritten_in_place_is_read_as_it_is_now(tmp_path):
    path = fb.kdump(tmp_path / "crash" / "2026" / "vmcore", 1)
    new = fb.kdump(tmp_path / "new", 2).read_bytes()
    tree = folder_tree(tmp_path / "crash", idle=0)
    phys = tree.lookup("2026/phys")
    assert phys.read(0, PAGE) == fb.page(1, 0)
    assert tree.pool.close_idle() == 1
    with open(path, "r+b") as f:  # same inode, same folder mtime: only the file tells
        f.write(new)
    with pytest.raises(DumpError, match="changed since the folder was listed"):
        phys.read(0, PAGE)  # never dump 2's bytes under dump 1's open file
    assert names(tree) == {"2026"}  # found again, under its name
    assert_is_dump(tree, "2026", 2)


# -- links -----------------------------------------------------------------------------------------


def test_links_inside_the_folder_and_to_the_users_own_dumps(tmp_path):
    store = tmp_path / "store"
    fb.kdump(store / "a.kdump", 1)
    fb.kdump(store / "b.kdump", 2)
    crash = tmp_path / "crash"
    (crash / "2026a").mkdir(parents=True)
    os.symlink(store / "a.kdump", crash / "2026a" / "vmcore")  # out of the folder, ours
    os.symlink(crash / "2026a", crash / "again")  # a second way to the same dump
    os.symlink(crash, crash / "loop")  # a loop
    (crash / "2026b").mkdir()
    os.symlink(store / "b.kdump", crash / "2026b" / "vmcore")
    tree = folder_tree(crash)
    assert names(tree) == {"2026a", "2026b"}  # each dump once
    assert_is_dump(tree, "2026a", 1)
    assert_is_dump(tree, "2026b", 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a link of another user")
def test_links_out_of_the_folder_that_another_user_made_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    fb.kdump(outside / "secret.kdump", 1)
    crash = tmp_path / "crash"
    fb.kdump(crash / "2026" / "vmcore", 2)
    fb.kdump(crash / "inside.kdump", 3)
    os.symlink(outside / "secret.kdump", crash / "planted")
    os.symlink(outside, crash / "planted-dir")
    os.symlink(crash / "inside.kdump", crash / "planted-inside")
    for link in ("planted", "planted-dir", "planted-inside"):
        os.lchown(crash / link, 12345, 12345)
    tree = folder_tree(crash)
    assert names(tree) == {"2026", "inside.kdump"}  # the link inside leads to a dump listed


def test_the_mount_point_inside_the_folder_is_not_looked_at(tmp_path, monkeypatch):
    fb.kdump(tmp_path / "2026" / "vmcore", 1)
    (tmp_path / "mnt").mkdir()
    fb.kdump(tmp_path / "mnt" / "vmcore", 2)  # would be hidden by the mount
    os.symlink(tmp_path / "mnt", tmp_path / "link-to-mnt")
    stats = []
    real_scandir = os.scandir

    def scandir(path):
        stats.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    tree = folder_tree(tmp_path, skip=(str(tmp_path / "mnt"),))
    assert names(tree) == {"2026"}
    assert str(tmp_path / "mnt") not in stats


def test_lseek_answers_through_the_folder(tmp_path):
    """A dump's files in a folder mount answer SEEK_DATA/SEEK_HOLE as the dump's own tree."""
    fb.kdump(tmp_path / "vmcore-a", 1)
    tree = folder_tree(tmp_path)
    phys = tree.lookup("vmcore-a/phys")
    size = phys.size()
    assert phys.seek(PAGE + 5, os.SEEK_DATA) == PAGE + 5  # every frame is dumped
    assert phys.seek(0, os.SEEK_HOLE) == size
    assert phys.seek(size, os.SEEK_DATA) is None
    index = tree.lookup("index")  # size 0 (as in /proc), data to the end of what it reads
    text = read(tree, "index")
    assert index.seek(0, os.SEEK_DATA) == 0 and index.seek(0, os.SEEK_HOLE) == len(text)
    readme = tree.lookup("vmcore-a/README")
    assert readme.seek(3, os.SEEK_DATA) == 3 and readme.seek(3, os.SEEK_HOLE) == readme.size() > 3
