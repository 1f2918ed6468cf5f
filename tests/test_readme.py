"""README.md stays true: two quick-start commands that CI runs, and the tree the man page has."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def first_code_block(text: str) -> list[str]:
    block = text.split("```\n", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    commands = first_code_block(section("Quick start"))
    assert commands == ["tools/quickstart", "tools/quickstart --test"]
    script = REPO / "tools" / "quickstart"
    assert os.access(script, os.X_OK)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == f"exec {commands[1]} -q"


def test_the_tree_lists_the_same_entries_as_the_man_page():
    tree = section("The tree").split("```\n", 2)[1]
    readme = set(re.findall(r"[├└]── (\S+)", tree))
    man = (REPO / "man" / "vmcorefs.1").read_text()
    man_tree = man.split(".SH THE TREE\n", 1)[1].split(".EE\n", 1)[0]
    in_man = set(re.findall(r"(?:\+|\\\(ga)\\-\\- (\S+)", man_tree))
    assert readme == in_man
    assert {"phys", "kvirt", "sym/NAME", "dmesg", "mm/"} <= readme
