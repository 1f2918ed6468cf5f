"""Nodes of a folder mount that stand for a path in one dump's tree.

A dump of the folder may be closed between two requests and opened again (``pool.py``): a
node of its tree lives only as long as that opening. What the FUSE layer keeps (an open file,
a directory handle) is therefore a :class:`DumpFile` or :class:`DumpDirectory`: the dump's
slot and a path; each call holds the dump, looks the path up in its current tree and
delegates. A lookup is a few dictionary probes; the dump stays open between requests unless
``max_open`` others are needed.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping

from ..errors import DumpError
from ..tree import Directory, File, Node, NotFound, WindowFile
from .pool import DumpPool, Opened, Slot


class _InDump:
    """A path inside the tree of the dump of ``slot``."""

    def __init__(self, pool: DumpPool, slot: Slot, path: str) -> None:
        self._pool = pool
        self._slot = slot
        self._path = path
        #: The node last looked up, and the opening it belongs to (weakly: a closed dump's
        #: memory must not stay alive through the stand-ins the FUSE layer keeps).
        self._last: tuple[weakref.ref, weakref.ref] | None = None

    def _node(self, opened: Opened) -> Node:
        last = self._last
        if last is not None and last[0]() is opened:
            node = last[1]()
            if node is not None:
                return node
        try:
            node = opened.tree.lookup(self._path)
            self._last = (weakref.ref(opened), weakref.ref(node))
            return node
        except NotFound:  # opened again, the dump fails now or no longer has it (it changed)
            slot = self._slot
            if opened.dump is None:
                raise DumpError(slot.paths[0], slot.failure or "cannot be opened") from None
            raise DumpError(slot.paths[0], f"{self._path}: no longer in the dump") from None


def node_for(pool: DumpPool, slot: Slot, path: str, real: Node) -> Node:
    """The stand-in for ``real``, the node at ``path`` of ``slot``'s tree."""
    if isinstance(real, Directory):
        return DumpDirectory(pool, slot, path)
    return DumpFile(pool, slot, path)


class DumpFile(_InDump, File):
    """A file of one dump's tree (see the module docstring)."""

    def size(self) -> int:
        with self._pool.use(self._slot) as opened:
            return self._file(opened).size()

    def _file(self, opened: Opened) -> File:
        node = self._node(opened)
        if not isinstance(node, File):
            raise DumpError(self._slot.paths[0], f"{self._path}: no longer a file")
        if type(node) is not WindowFile:
            # A dump that changed under us: EIO, even for what caches hold (as fuse.py does
            # for a single dump; plain windows check their reads in memory/).
            opened.tree.check()
        return node

    def read(self, offset: int, size: int) -> bytes:
        with self._pool.use(self._slot) as opened:
            return self._file(opened).read(offset, size)

    def readinto(self, offset: int, buffer: memoryview) -> int:
        with self._pool.use(self._slot) as opened:
            return self._file(opened).readinto(offset, buffer)

    def open_direct_io(self) -> bool:
        with self._pool.use(self._slot) as opened:
            return self._file(opened).open_direct_io()

    def seek(self, offset: int, whence: int) -> int | None:
        with self._pool.use(self._slot) as opened:
            return self._file(opened).seek(offset, whence)

    def pinned(self):
        """Hold the dump for the whole request (a read and its copy into the reply)."""
        return self._pool.use(self._slot)


class DumpDirectory(_InDump, Directory):
    """A directory of one dump's tree; ``""`` is the dump's own top (``MOUNTPOINT/NAME``)."""

    def entries(self) -> Mapping[str, Node]:
        with self._pool.use(self._slot) as opened:
            node = self._node(opened)
            if not isinstance(node, Directory):
                raise DumpError(self._slot.paths[0], f"{self._path}: no longer a folder")
            return _Entries(self, node.entries())


class _Entries(Mapping[str, Node]):
    """A dump directory's names (from the tree of the opening that listed them); lookups make
    stand-ins, so that nothing of that opening is kept beyond the listing."""

    def __init__(self, parent: DumpDirectory, real: Mapping[str, Node]) -> None:
        self._parent = parent
        self._names = real

    def _child(self, name: str) -> str:
        return f"{self._parent._path}/{name}" if self._parent._path else name

    def __getitem__(self, name: str) -> Node:
        node = self.get(name)
        if node is None:
            raise KeyError(name)
        return node

    def get(self, name: str, default=None):
        if name not in self._names:
            return default
        p = self._parent
        path = self._child(name)
        with p._pool.use(p._slot) as opened:
            try:
                real = opened.tree.lookup(path)
            except NotFound:
                return default
        return node_for(p._pool, p._slot, path, real)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
