"""Static checks that CI runs with the tests (the test extras install both tools): mypy on the
package (strict on dumpfile/, memory/, vmcoreinfo.py: pyproject.toml), ruff on every Python
file, the scripts in tools/ included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Python scripts without a .py suffix: ruff must see them (pyproject.toml extend-include).
SCRIPTS = ["tools/make-sample-vmcore", "tools/drgn-stacks"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_mypy_finds_no_error():
    """``python -m mypy`` (its files and strictness are configured in pyproject.toml)."""
    out = run("mypy", "--no-error-summary", "--cache-dir", str(REPO / ".mypy_cache"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_checks_every_file_and_finds_nothing():
    files = run("ruff", "check", "--show-files", ".").stdout
    for script in SCRIPTS:
        assert str(REPO / script) in files.split(), script
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr
