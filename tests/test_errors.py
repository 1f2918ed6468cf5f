"""The error model (vmcorefs/errors.py): absent, corrupt, unavailable and bugs, each with its
address or key and reason."""

from __future__ import annotations

from vmcorefs.errors import (
    CorruptError,
    DumpError,
    FaultError,
    MountPointError,
    OptionError,
    Unavailable,
    kind_of,
)

KTEXT = 0xFFFFFFFF81000000


def test_every_error_says_where_and_why():
    absent = FaultError("kvirt", 0xFFFFFFFF81000000, "PTE not present")
    assert str(absent) == "kvirt 0xffffffff81000000: absent: PTE not present"
    corrupt = CorruptError("phys", 0x14000, "pfn 0x14: zlib data inflate to 2,011 bytes")
    assert isinstance(corrupt, FaultError) and corrupt.kind == "corrupt"
    assert str(corrupt) == "phys 0x14000: corrupt: pfn 0x14: zlib data inflate to 2,011 bytes"
    seen = corrupt.at("kvirt", KTEXT + 0x14000)
    assert type(seen) is CorruptError and seen.reason == corrupt.reason
    assert seen.address == KTEXT + 0x14000 and seen.space == "kvirt"
    missing = Unavailable.not_in_dump("init_uts_ns.name", absent)
    assert missing.reason == f"init_uts_ns.name is not in the dump ({absent})"
    assert str(MountPointError("/mnt", "mount point does not exist")) == (
        "/mnt: mount point does not exist"
    )
    assert not isinstance(MountPointError("/mnt", "x"), DumpError)  # its own error
    assert str(OptionError("rw", "the mount is always read-only")) == (
        "-o rw: the mount is always read-only"
    )
    kinds = [kind_of(e) for e in (absent, corrupt, missing, DumpError("d", "x"), KeyError(1))]
    assert kinds == ["absent", "corrupt", "unavailable", "dump", "bug"]
