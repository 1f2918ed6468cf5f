"""``uts/``: the machine's names as ``uname(2)`` reports them, from ``init_uts_ns`` in memory.

VMCOREINFO gives ``SYMBOL(init_uts_ns)`` and ``OFFSET(uts_namespace.name)`` (else the BTF
does); the ``struct new_utsname`` there is six ``char[__NEW_UTS_LEN + 1]`` arrays in a fixed order
(include/uapi/linux/utsname.h, unchanged since Linux 2.6.19). Reading the live structure (not
VMCOREINFO's ``OSRELEASE``) shows what the running kernel said, ``hostname`` changes included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo
from .btf import BtfError

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


def read_utsname(
    vmcoreinfo: VmcoreInfo, kvirt: AddressSpace, btf: Callable[[], object] | None = None
) -> Utsname:
    """``init_uts_ns.name`` read from memory; Unavailable names the missing key or address.

    Kernels before 5.11 write no ``OFFSET(uts_namespace.name)`` (commit 55d9e11398a4,
    "kdump: append uts_namespace.name offset to VMCOREINFO"); the kernel's BTF (``btf``,
    called only then) says where the member is.
    """
    size = UTS_FIELD_SIZE * len(UTS_FIELDS)
    base = vmcoreinfo.need("SYMBOL", "init_uts_ns")
    offset = vmcoreinfo.offset("uts_namespace.name", within=MAX_UTS_NAMESPACE, width=size)
    if offset is None:
        missing = "VMCOREINFO has no OFFSET(uts_namespace.name)"
        if btf is None:
            raise Unavailable(missing)
        try:
            offset = btf().offsetof("struct uts_namespace", "name")
        except (Unavailable, BtfError) as exc:
            reason = exc.reason if isinstance(exc, Unavailable) else str(exc)
            raise Unavailable(f"{missing}, and the BTF does not say: {reason}") from None
        if not 0 <= offset <= MAX_UTS_NAMESPACE - size:
            raise Unavailable(f"{missing}, and the BTF's ({offset}) is out of range")
    base += offset
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
