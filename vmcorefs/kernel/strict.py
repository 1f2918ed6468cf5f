"""The dump's memory exactly as held, whatever ``--zero-fill`` says.

``--zero-fill`` is for people reading ``phys``; kernel views must never take its zeros for
data (a zero-filled struct page would classify as a kernel page, a zero-filled ``init_uts_ns``
as empty names). Views read through these strict spaces instead: the dump's own ``phys`` and
``kvirt`` when they do not zero-fill, else one strict pair made once per dump.
"""

from __future__ import annotations

import threading

from ..memory.physical import PhysicalMemory
from ..memory.space import AddressSpace
from ..memory.x86_64 import KernelVirtualMemory

_LOCK = threading.Lock()


def strict_spaces(dump) -> tuple[PhysicalMemory, AddressSpace]:
    """``(phys, kvirt)`` of ``dump`` (a :class:`~vmcorefs.kernel.dump.Dump`) without zero-fill."""
    if not dump.phys.zero_fill:
        return dump.phys, dump.kvirt
    with _LOCK:
        pair = dump.__dict__.get("_strict_spaces")
        if pair is None:
            phys = PhysicalMemory(dump.phys.source, zero_fill=False)
            kvirt = KernelVirtualMemory(
                phys, dump.vmcoreinfo, cache_size_mib=dump.options.cache_size_mib
            )
            pair = dump.__dict__["_strict_spaces"] = (phys, kvirt)
    return pair
