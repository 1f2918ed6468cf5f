"""Command-line errors: one line ``vmcorefs: PATH: reason``, exit 1, no traceback; usage: 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.elfbuilder import (
    ElfCore,
    LoadSegment,
    PageTables,
    PhysImage,
    note,
    simple_core,
    vmcoreinfo_text,
)
from vmcorefs.cli import main, parse_fuse_options


def run_main(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def good_core(tmp_path):
    mem = PhysImage()
    pt = PageTables(mem)
    path = tmp_path / "good.core"
    path.write_bytes(simple_core(mem, [(0, 0x20_0000)], vmcoreinfo_text(pt)))
    return str(path)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: str(d / "missing"), "no such file"),
        (lambda d: _file(d / "empty", b""), "empty file"),
        (lambda d: _file(d / "text", b"hello world\n" * 10), "text file"),
        (lambda d: _file(d / "short", b"\x7fELF\x02\x01\x01" + bytes(20)), "truncated ELF header"),
        (lambda d: _file(d / "junk", bytes(range(256)) * 4), "not a crash dump"),
        (
            lambda d: _file(
                d / "novi",
                ElfCore(
                    notes=[note(b"CORE", 1, bytes(8))], segments=[LoadSegment(0, bytes(64))]
                ).build(),
            ),
            "no VMCOREINFO",
        ),
    ],
)
def test_bad_dumps(tmp_path, capsys, make, reason):
    path = make(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    code, err = run_main(capsys, path, str(mnt))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"vmcorefs: {path}: ")
    assert reason in err
    assert "Traceback" not in err


def test_a_folder_among_several_inputs_is_an_error(tmp_path, capsys, good_core):
    """A folder alone is a folder of dumps (tests/test_folder_mount.py); with parts, a mistake."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, err = run_main(capsys, good_core, str(tmp_path), str(mnt))
    assert code == 1
    assert err == f"vmcorefs: {tmp_path}: is a directory\n"


def _file(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_missing_and_file_mount_points(tmp_path, capsys, good_core):
    code, err = run_main(capsys, good_core, str(tmp_path / "nowhere"))
    assert code == 1 and "mount point does not exist" in err
    code, err = run_main(capsys, good_core, good_core)
    assert code == 1 and "not a directory" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["only-one-arg"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["--cache-size", "0", "a", "b"])
    assert info.value.code == 2


def test_fuse_options_are_split():
    assert parse_fuse_options(["allow_other,uid=5", "ro"]) == {
        "allow_other": True,
        "uid": "5",
        "ro": True,
    }


def test_python_m_and_version():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(
        [sys.executable, "-m", "vmcorefs", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.startswith("vmcorefs ")


def test_unreadable_dump_is_one_line(tmp_path, capsys, monkeypatch, good_core):
    # As root every file is readable: make os.open refuse this one path as it would for a user.
    import vmcorefs.dumpfile.source as source

    real_open = os.open

    def refusing_open(path, flags, *args):
        if str(path) == good_core:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(source.os, "open", refusing_open)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, err = run_main(capsys, good_core, str(mnt))
    assert code == 1 and err == f"vmcorefs: {good_core}: permission denied\n"


def test_missing_dependency_is_one_line(tmp_path, capsys, monkeypatch, good_core):
    import vmcorefs.cli as cli

    def broken_run(argv):
        raise ModuleNotFoundError("No module named 'cachetools'", name="cachetools")

    monkeypatch.setattr(cli, "run", broken_run)
    code, err = run_main(capsys, good_core, str(tmp_path))
    assert code == 1 and err.startswith("vmcorefs: cannot load cachetools") and err.count("\n") == 1


def test_mount_points_undo_the_kernels_escapes():
    from vmcorefs.cli import mount_points

    mountinfo = (
        b"36 35 98:0 / /mnt/a\\040b rw,noatime shared:1 - ext4 /dev/sda1 rw\n"
        b"37 35 0:52 / /mnt/tab\\011and\\134slash rw - fuse.vmcorefs vmcorefs ro\n"
        b"38 35 0:53 / /mnt/caf\xc3\xa9 rw - tmpfs tmpfs rw\n"
    )
    assert mount_points(mountinfo) == ["/mnt/a b", "/mnt/tab\tand\\slash", "/mnt/café"]
    assert "/" in mount_points()  # this process's own mount table


def _fifo(d) -> str:
    os.mkfifo(d / "fifo")
    return str(d / "fifo")


def _socket(d) -> str:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "sock"))  # the socket file stays once it is closed
    return str(d / "sock")


def _block_device(d) -> str:
    import stat

    for name in sorted(os.listdir("/dev")):
        if stat.S_ISBLK(os.stat(f"/dev/{name}").st_mode):
            return f"/dev/{name}"
    pytest.skip("no block device in /dev")


@pytest.mark.parametrize(
    "make, what",
    [
        (_fifo, "a FIFO (named pipe)"),
        (_socket, "a socket"),
        (lambda d: "/dev/null", "a character device"),
        (_block_device, "a block device"),
    ],
)
def test_a_dump_that_is_no_regular_file_is_refused_at_once(tmp_path, capsys, make, what):
    """A FIFO would block the open until a writer came; a device's size is 0 (not "empty")."""
    from tests import fuzzing as fz

    path = make(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with fz.limits(seconds=10):
        code, err = run_main(capsys, path, str(mnt))
    assert code == 1
    assert err == (
        f"vmcorefs: {path}: is {what}, not a regular file: copy the dump to a file first "
        "(it is read in place)\n"
    )


@pytest.mark.parametrize("value", ["max_read=1048577", "max_read=0", "max_read=4k", "max_read"])
def test_a_max_read_that_cannot_be_honoured_is_refused(tmp_path, capsys, good_core, value):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, err = run_main(capsys, "-o", f"ro,{value}", good_core, str(mnt))
    assert code == 2
    assert err == f"vmcorefs: -o {value}: a number of bytes from 1 to 1048576 is needed\n"


def test_paths_with_control_characters_stay_one_line(tmp_path, capsys, good_core):
    """A newline, an escape sequence or a byte that is not UTF-8 in a path is written \\xNN."""
    mnt = str(tmp_path / "no\nwhere\x1b[2J")
    code, err = run_main(capsys, good_core, mnt)
    shown = str(tmp_path) + "/no\\x0awhere\\x1b[2J"
    assert (code, err) == (1, f"vmcorefs: {shown}: mount point does not exist\n")
    dump = os.fsdecode(os.fsencode(str(tmp_path)) + b"/dump\xff\t")
    os.mkdir(tmp_path / "mnt")
    code, err = run_main(capsys, dump, str(tmp_path / "mnt"))
    assert (code, err) == (1, f"vmcorefs: {tmp_path}/dump\\xff\\x09: no such file\n")


def test_the_dump_is_warmed_before_it_is_mounted(tmp_path, capsys, monkeypatch, good_core):
    """``Dump.warm`` runs before ``mount`` gets the tree (in the process that then serves)."""
    import vmcorefs.fuse
    from vmcorefs.kernel.dump import Dump

    events = []
    monkeypatch.setattr(Dump, "warm", lambda self: events.append("warm"))
    monkeypatch.setattr(vmcorefs.fuse, "mount", lambda tree, *a, **k: events.append("mount"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert run_main(capsys, good_core, str(mnt)) == (0, "")
    assert events == ["warm", "mount"]
