"""The real kdump and flattened dumps of ../shared/dumps against their truth and oracle."""

from __future__ import annotations

import pytest
from oracle import check_samples, samples_for

import vmcorefs

pytestmark = pytest.mark.realdump
KDUMP_LIKE = (".kdump", ".flat")


def kdump_files(case) -> list[str]:
    names = [n for n in case.dump_files() if n.endswith(KDUMP_LIKE)]
    if not names:
        pytest.skip(f"{case.name} has no kdump or flattened file")
    return names


def test_every_kdump_file_reproduces_the_oracle(case):
    oracle = case.json("oracle.json")
    for name in kdump_files(case):
        samples = samples_for(oracle, name)
        assert samples, f"oracle.json has no samples for {name}"
        with vmcorefs.open_dump(str(case.file(name))) as dump:
            problems = check_samples(dump, samples)
        assert not problems, f"{name}: {len(problems)} samples differ: {problems[:3]}"


def test_headers_match_the_truth(case):
    vmcoreinfo = case.file("vmcoreinfo.txt").read_bytes()
    for name in kdump_files(case):
        meta = case.truth["files"][name]
        with vmcorefs.open_dump(str(case.file(name))) as dump:
            info = dump.source.info
            assert dump.vmcoreinfo.raw.rstrip(b"\n") == vmcoreinfo.rstrip(b"\n")
            assert info.compression == meta["compression"]
            assert info.dump_level == meta["dump_level"]
            expect_format = "kdump-compressed"
            if meta["format"] == "flattened":
                expect_format = f"flattened ({expect_format})"
            assert info.format == expect_format
            kh = meta.get("kdump_header")
            if not kh:  # la57's snappy and zstd files: truth.json has no parsed header
                continue
            mapnr = kh["sub"]["max_mapnr_64"] or kh["max_mapnr"]
            assert dump.phys.size == mapnr * kh["block_size"]
            assert info.dump_level == kh["sub"]["dump_level"]
            assert info.crashed_cpu == kh["current_cpu"]
            assert info.nr_cpus == kh["nr_cpus"]
            assert info.page_size == kh["block_size"]
            assert info.extra["kdump header version"] == str(kh["header_version"])
            base = kh["sub"]["phys_base"]
            sign = "-" if base < 0 else ""
            assert info.extra["kdump header phys_base"] == f"{sign}{abs(base):#x}"
            fields = ("sysname", "nodename", "release", "version", "machine", "domainname")
            uts = [info.extra.get(f"kdump utsname {k}", "") for k in fields]
            assert uts == kh["utsname"]


def test_qemu_header_phys_base_loses_to_vmcoreinfo(kaslr_case):
    """QEMU 7.2 writes VMCOREINFO's decimal phys_base parsed as hex into its sub-header."""
    name = "qemu-kdump-zlib.flat"
    kh = kaslr_case.truth["files"][name]["kdump_header"]
    with vmcorefs.open_dump(str(kaslr_case.file(name))) as dump:
        assert kh["sub"]["phys_base"] != kaslr_case.truth["phys_base"]
        assert dump.vmcoreinfo.number("phys_base") == kaslr_case.truth["phys_base"]
        banner = dump.kvirt.read(kaslr_case.truth["symbols"]["linux_banner"], 14)
        assert banner == b"Linux version "
