"""README.md stays true: two quick-start commands that CI runs, and the tree the man page has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# -- the examples run as written on the sample ------------------------------------------------

#: The placeholders the documents use, and what the tests put in their place.
DUMP_IN_DOCS = "/var/crash/202611261042/dump.202611261042"
MNT_IN_DOCS = "/tmp/dump"


def readme_commands() -> list[tuple[str, list[str]]]:
    """The shell commands of "Usage by example" (comments dropped, continuations joined)."""
    block = section("Usage by example").split("```\n")[3]
    return [(cmd, []) for cmd in _join(re.sub(r"\s+# .*$", "", line) for line in block.split("\n"))]


def _join(lines) -> list[str]:
    out: list[str] = []
    pending = ""
    for line in lines:
        line = pending + line.strip() if pending else line.rstrip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line.strip():
            out.append(line.strip())
    return out


def man_examples() -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The man page's EXAMPLES: ``$`` commands with the output lines shown after them, and
    the Python examples."""
    man = (REPO / "man" / "vmcorefs.1").read_text()
    examples = man.split(".SH EXAMPLES\n", 1)[1].split("\n.SH ", 1)[0]
    commands: list[tuple[str, list[str]]] = []
    python: list[str] = []
    for block in re.findall(r"^\.EX\n(.*?)^\.EE$", examples, re.S | re.M):
        text = (
            block.replace("\\-", "-")
            .replace("\\(aq", "'")
            .replace("\\e", "\\")
            .replace("\\(em", "-")
        )
        if not text.startswith("$ "):
            python.append(text)
            continue
        for chunk in re.split(r"^\$ ", text, flags=re.M)[1:]:
            lines = chunk.split("\n")
            cmd_lines = [lines[0]]
            while cmd_lines[-1].endswith("\\"):
                cmd_lines.append(lines[len(cmd_lines)])
            (cmd,) = _join(cmd_lines)
            shown = [line for line in lines[len(cmd_lines) :] if line]
            commands.append((cmd, shown))
    return commands, python


def run_examples(commands, tmp_path, sample) -> None:
    """Run ``commands`` in one shell, in order, on the sample (every one must succeed, with
    nothing on stderr, and print what the document shows where it shows something)."""
    from tests.mounting import env, fuse_available, unmount

    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    mnt = tmp_path / "dump"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "vmcorefs"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m vmcorefs "$@"\n')
    wrapper.chmod(0o755)
    script, ran = [], []
    for i, (cmd, shown) in enumerate(commands):
        programs = [part.split()[0] for part in cmd.split("|") if part.split()]
        programs = [p for p in programs if "=" not in p]
        if "part1" in cmd or any(not shutil.which(p) for p in programs if p != "vmcorefs"):
            continue  # a split dump's parts (not in the sample); a tool not installed
        real = cmd.replace(DUMP_IN_DOCS, str(sample.dump)).replace(MNT_IN_DOCS, str(mnt))
        script.append(
            f"{{ {real} ; }} >{tmp_path}/out{i} 2>{tmp_path}/err{i}; echo $? >{tmp_path}/rc{i}"
        )
        ran.append((i, cmd, shown))
    environ = dict(env(), PATH=f"{bin_dir}:{os.environ['PATH']}")
    try:
        subprocess.run(["bash", "-c", "\n".join(script)], env=environ, timeout=600, check=False)
    finally:
        unmount(mnt)
    for i, cmd, shown in ran:
        out = (tmp_path / f"out{i}").read_text(errors="replace")
        err = (tmp_path / f"err{i}").read_text(errors="replace")
        rc = int((tmp_path / f"rc{i}").read_text())
        assert err == "", (cmd, err[:500])
        if cmd.startswith("grep -r"):
            # grep exits with 2 once a file could not be read, even with -s: the documents say so.
            assert rc in (0, 2) and out.strip(), (cmd, rc, out[:200])
        else:
            assert rc == 0, (cmd, rc)
        if shown:
            assert out.splitlines() == shown, (cmd, out[:500])
    assert len(ran) >= 5


def run_python(code: str, sample) -> None:
    code = code.replace(DUMP_IN_DOCS, str(sample.dump)).replace('"vmcore"', repr(str(sample.dump)))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "Linux version" in out.stdout


@pytest.mark.mount
def test_readme_and_man_page_examples_run_as_written_on_the_sample(tmp_path, sample):
    """The README's examples, then the man page's, in one shell each on the sample (the
    man page's ``grep -r`` across sym/, the README's too, runs once: it takes ~20 s)."""
    readme = readme_commands()
    assert readme[1][0] == f"vmcorefs {DUMP_IN_DOCS} {MNT_IN_DOCS}"
    man, python = man_examples()
    assert ("cat /tmp/dump/info/OSRELEASE", [sample.uts["release"]]) in man
    grep = [cmd for cmd, _ in readme if cmd.startswith("grep -r")]
    man = [(cmd, shown) for cmd, shown in man if cmd not in grep]
    (tmp_path / "readme").mkdir()
    run_examples(readme, tmp_path / "readme", sample)
    (tmp_path / "man").mkdir()
    run_examples(man, tmp_path / "man", sample)
    run_python(section("Usage by example").split("```python\n", 1)[1].split("```", 1)[0], sample)
    assert len(python) == 1
    run_python(python[0], sample)
