"""The error model through a real mount: a truncated copy of the sample."""

from __future__ import annotations

import os

import pytest

from tests.mounting import run_vmcorefs, unmount

pytestmark = pytest.mark.mount
KVIRT_BASE = 1 << 63


def test_a_truncated_sample_mounts_with_a_warning_and_says_why(tmp_path, sample):
    cut = tmp_path / "t.kdump"
    with open(sample.dump, "rb") as f:
        cut.write_bytes(f.read(4_000_000))
    whole = os.path.getsize(sample.dump)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = run_vmcorefs(str(cut), str(mnt))
    try:
        assert out.returncode == 0, out.stderr
        assert out.stderr == (
            f"vmcorefs: {cut}: warning: the file is truncated at 4,000,000 of {whole:,} bytes: "
            "its headers describe more than it holds; what lies past its end reads as an I/O "
            "error (EIO) and the files that need it say so\n"
        )
        summary = (mnt / "summary").read_text()
        trunc = f"truncated at 4,000,000 of {whole:,} bytes"
        assert f"\ntruncated: {cut}: {trunc}; what lies past its end reads as EIO\n" in summary
        assert "\ndamage: " in summary
        tasks = summary.split("\ntasks: ", 1)[1].split("\n", 1)[0]
        assert tasks.startswith("unavailable: ") and trunc in tasks
        assert "kernel without BTF" not in summary  # the kernel has BTF; the file is cut
        for name in ("ps", "btf", "dmesg", "uts/release", "mm/usage"):
            text = (mnt / name).read_text()
            assert text.startswith("unavailable: ") and trunc in text, (name, text)
    finally:
        unmount(mnt)
