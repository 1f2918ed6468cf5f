"""vmcorefs: mount a Linux kernel crash dump as a read-only filesystem.

Library use, without FUSE::

    import vmcorefs
    with vmcorefs.open_dump("vmcore") as dump:
        dump.vmcoreinfo.osrelease
        dump.kvirt.read(dump.vmcoreinfo.symbol("init_uts_ns"), 64)
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["open_dump", "Dump", "__version__"]


def __getattr__(name: str):
    # Imported on demand so that ``import vmcorefs.dumpfile`` stays light and acyclic.
    if name in ("open_dump", "Dump"):
        from .kernel import dump

        return getattr(dump, name)
    raise AttributeError(name)
