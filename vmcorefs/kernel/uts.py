"""``uts/``: the machine's names as ``uname(2)`` reports them, from ``init_uts_ns`` in memory.

VMCOREINFO gives ``SYMBOL(init_uts_ns)`` and ``OFFSET(uts_namespace.name)``; the ``struct
new_utsname`` there is six ``char[__NEW_UTS_LEN + 1]`` arrays in a fixed order
(include/uapi/linux/utsname.h, unchanged since Linux 2.6.19). Reading the live structure (not
VMCOREINFO's ``OSRELEASE``) shows what the running kernel said, ``hostname`` changes included.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo

#: include/uapi/linux/utsname.h
__NEW_UTS_LEN = 64
UTS_FIELD_SIZE = __NEW_UTS_LEN + 1
#: The members of ``struct new_utsname``, in order.
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
#: VMCOREINFO has no SIZE(uts_namespace): a kref, the name, a few pointers and ns_common make
#: it about 440 bytes (include/linux/utsname.h); a page bounds where ``name`` may lie.
MAX_UTS_NAMESPACE = 4096


@dataclass(frozen=True)
class Utsname:
    """The six ``new_utsname`` strings, raw bytes without their NUL."""

    sysname: bytes
    nodename: bytes
    release: bytes
    version: bytes
    machine: bytes
    domainname: bytes

    def field(self, name: str) -> bytes:
        return getattr(self, name)


def read_utsname(vmcoreinfo: VmcoreInfo, kvirt: AddressSpace) -> Utsname:
    """``init_uts_ns.name`` read from memory; Unavailable names the missing key or address."""
    size = UTS_FIELD_SIZE * len(UTS_FIELDS)
    offset = vmcoreinfo.need("OFFSET", "uts_namespace.name", within=MAX_UTS_NAMESPACE, width=size)
    base = vmcoreinfo.need("SYMBOL", "init_uts_ns") + offset
    try:
        raw = kvirt.read_exact(base, size)
    except FaultError as exc:
        raise Unavailable(f"init_uts_ns.name is not in the dump ({exc})") from None
    values = []
    for i in range(len(UTS_FIELDS)):
        chunk = raw[i * UTS_FIELD_SIZE : (i + 1) * UTS_FIELD_SIZE]
        # The kernel keeps each array NUL-terminated; a full array is cut at its size.
        values.append(chunk.split(b"\0", 1)[0])
    return Utsname(*values)
