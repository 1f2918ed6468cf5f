"""``pip install`` needs no compiler: every dependency comes as a wheel, for each Python we
support, and a wheel of vmcorefs installs into a fresh venv with ``--only-binary :all:`` and
decodes every codec there (marker ``network``: PyPI).

Where PyPI cannot be reached the tests skip, except under CI (``CI`` set), where installing
needs PyPI anyway: there they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.network

#: The Pythons we support (Ubuntu 22.04 has 3.10, Debian 12 3.11, Debian 13 3.13) on x86_64
#: with glibc 2.35 or older (Ubuntu 22.04).
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 36)] + [
    "manylinux1_x86_64",
    "manylinux2010_x86_64",
    "manylinux2014_x86_64",
]


@cache
def pypi_error() -> str | None:
    """Why pip cannot reach its package index (None: it can). Asked of pip itself: its index
    configuration and its certificates are what the installs below use."""
    args = ["index", "versions", "pip", "--retries", "1", "--timeout", "20"]
    run = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode == 0:
        return None
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"pip index exited with {run.returncode}"


@pytest.fixture
def pypi() -> None:
    error = pypi_error()
    if error is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"PyPI unreachable under CI: {error}")
    pytest.skip(f"PyPI unreachable: {error}")


def dependencies() -> list[str]:
    """The requirements in pyproject.toml's [project] dependencies."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("\ndependencies = [\n", 1)[1].split("\n]", 1)[0]
    return re.findall(r'^\s*"([^"]+)",', block, re.M)


def pip(python: Path | str, *args: str, cwd: Path | None = None) -> str:
    run = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )
    assert run.returncode == 0, f"pip {' '.join(args)}:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    return run.stdout


def test_the_dependencies_are_the_known_ones():
    """The list the wheel checks read (python-lzo is not in it: it builds with gcc)."""
    names = {re.split(r"[<>=!~;\s\[]", req, maxsplit=1)[0].lower() for req in dependencies()}
    assert names == {
        "mfusepy",
        "pyelftools",
        "cachetools",
        "lzallright",
        "cramjam",
        "zstandard",
        "isal",
    }


@pytest.mark.parametrize("version", PYTHONS)
def test_every_dependency_has_a_wheel(pypi, tmp_path, version):
    """What pip would install for that Python on manylinux x86_64, wheels only."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip(
        sys.executable,
        "download",
        "--quiet",
        "--only-binary",
        ":all:",
        "--python-version",
        version,
        "--implementation",
        "cp",
        *platforms,
        "--dest",
        str(tmp_path),
        *dependencies(),
    )
    got = {w.name.split("-")[0].lower() for w in tmp_path.iterdir()}
    assert all(w.suffix == ".whl" for w in tmp_path.iterdir())
    assert {"lzallright", "cramjam", "zstandard", "isal", "mfusepy"} <= got


CHECK = r"""
import base64, hashlib, json, sys, zlib
from pathlib import Path
import cramjam, zstandard
import vmcorefs
from vmcorefs.dumpfile import compression

assert not vmcorefs.__file__.startswith(sys.argv[1]), vmcorefs.__file__  # the installed one
page = bytes(range(256)) * 16
for bit, stored in (
    (compression.DUMP_DH_COMPRESSED_ZLIB, zlib.compress(page)),
    (compression.DUMP_DH_COMPRESSED_SNAPPY, bytes(cramjam.snappy.compress_raw(page))),
    (compression.DUMP_DH_COMPRESSED_ZSTD, zstandard.ZstdCompressor().compress(page)),
):
    assert compression.decompress(bit, stored, 4096) == page, compression.NAMES[bit]
assert compression.inflate_module.__name__ == "isal.isal_zlib"
real = json.loads(Path(sys.argv[2]).read_text())
for p in real["pages"]:
    out = compression.decompress(compression.DUMP_DH_COMPRESSED_LZO,
                                 base64.b64decode(p["stream"]), 4096)
    assert hashlib.sha256(out).hexdigest() == p["sha256"]
with vmcorefs.open_dump(sys.argv[3]) as dump:
    print(dump.vmcoreinfo.osrelease)
"""


def test_a_wheel_of_vmcorefs_installs_from_wheels_only_and_decodes(pypi, tmp_path):
    """A fresh venv: a wheel of this checkout and its dependencies, --only-binary :all:
    (nothing built from source), then every codec decodes and the sample opens."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("vmcorefs", "man"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    only_binary = ("--only-binary", ":all:")
    pip(
        python,
        "wheel",
        "--quiet",
        *only_binary,
        "--no-deps",
        "-w",
        str(tmp_path / "dist"),
        str(src),
    )
    (wheel,) = (tmp_path / "dist").glob("vmcorefs-*-py3-none-any.whl")
    pip(python, "install", "--quiet", *only_binary, str(wheel))
    installed = json.loads(pip(python, "list", "--format", "json"))
    names = {p["name"].lower() for p in installed}
    assert {"vmcorefs", "lzallright", "cramjam", "zstandard", "isal"} <= names
    assert "python-lzo" not in names
    assert (venv / "share" / "man" / "man1" / "vmcorefs.1").is_file()
    sample = REPO / "tests" / "data" / "sample" / "vmcore.kdump"
    lzo_pages = REPO / "tests" / "data" / "lzo1x_1.json"
    run = subprocess.run(
        [str(python), "-c", CHECK, str(REPO), str(lzo_pages), str(sample)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    truth = json.loads((REPO / "tests" / "data" / "sample" / "truth.json").read_text())
    assert run.stdout.strip() == truth["osrelease"]  # uname -r in the guest
    version = subprocess.run(
        [str(venv / "bin" / "vmcorefs"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and "vmcorefs" in version.stdout
