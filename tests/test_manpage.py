"""man/vmcorefs.1: renders without a warning and stays in step with the command and the tree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import vmcorefs
from tests.elfbuilder import PageTables, PhysImage, simple_core, vmcoreinfo_text
from vmcorefs.cli import build_parser
from vmcorefs.kernel.dump import open_dump
from vmcorefs.tree import Directory, build_tree

MANPAGE = Path(__file__).resolve().parents[1] / "man" / "vmcorefs.1"


@pytest.fixture(scope="module")
def rendered() -> str:
    """The page as ``man`` shows it on a UTF-8 terminal, without overstriking."""
    if not shutil.which("groff"):
        pytest.skip("groff is not installed (apt-get install groff)")
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-P", "-cbou", str(MANPAGE)],
        capture_output=True,
        text=True,
        check=False,
    )
    # -ww: every warning groff knows; any of them fails the test.
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout


def test_renders_without_warnings(rendered):
    for section in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "THE TREE",
        "THE KVIRT OFFSET RULE",
        "HOW ABSENT MEMORY READS",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ):
        assert re.search(rf"^{section}$", rendered, re.M), section


def test_help_usage_is_the_synopsis(rendered, capsys):
    """``vmcorefs --help`` shows the same usage lines as the page (words, not layout)."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    usage = capsys.readouterr().out.split("\n\n", 1)[0].removeprefix("usage: ")
    synopsis = rendered.split("\nSYNOPSIS\n", 1)[1].split("\nDESCRIPTION\n", 1)[0]
    forms = [" ".join(form.split()) for form in synopsis.strip().split("\n\n")]
    assert len(forms) == 3  # a dump, a folder of dumps, --version | --help
    assert [" ".join(form.split()) for form in usage.split("\n       vmcorefs ")] == [
        forms[0],
        *(form.removeprefix("vmcorefs ") for form in forms[1:]),
    ]


def test_version_is_the_packages():
    th = next(line for line in MANPAGE.read_text().splitlines() if line.startswith(".TH "))
    assert f'"vmcorefs {vmcorefs.__version__}"' in th


def test_every_option_is_documented(rendered):
    options = [opt for action in build_parser()._actions for opt in action.option_strings]
    assert "--zero-fill" in options
    for opt in options:
        assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", rendered), opt


def test_see_also(rendered):
    see_also = rendered.split("\nSEE ALSO\n", 1)[1]
    for page in ("crash(8)", "drgn(1)", "makedumpfile(8)"):
        assert page in see_also


def test_every_top_level_entry_of_the_tree_is_documented(rendered, tmp_path):
    # A tiny synthetic dump is enough to list the entries this version of the tree has.
    mem = PhysImage()
    pt = PageTables(mem)
    core = tmp_path / "core"
    core.write_bytes(simple_core(mem, [(0, 1 << 20)], vmcoreinfo_text(pt)))
    with open_dump(str(core)) as dump:
        root = build_tree(dump).root
        names = [
            name + ("/" if isinstance(node, Directory) else "")
            for name, node in root.entries().items()
        ]
    tree = rendered.split("\nTHE TREE\n", 1)[1].split("\nTHE KVIRT OFFSET RULE\n", 1)[0]
    documented = set(re.findall(r"[+`]-- (\S+)", tree))
    documented |= {name.split("/", 1)[0] + "/" for name in documented if "/" in name}
    missing = [name for name in names if name not in documented]
    assert not missing
