"""The tree of a folder mount: ``index``, and each dump's whole tree as ``NAME/``.

Nothing is read when the tree is made: the folder is scanned (``scan.py``) on first listing or
lookup, and again when it or one of its subfolders changed (their mtimes), so that dumps
added later appear on the next listing. A name, once given, stays with its dump for the life
of the mount. Dumps are opened, held and closed by ``pool.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from ..dumpfile.detect import Probe, probe
from ..errors import DumpError
from ..tree import Directory, File, Node, NotFound, Tree, build_tree
from . import index
from .nodes import DumpDirectory, node_for
from .pool import IDLE_SECONDS, DumpPool, Opened, Slot
from .scan import ProbeCache, base_names, folders_changed, group, unique_name, walk

INDEX = "index"
#: Seconds a listing waits for a scan that another request is running.
SCAN_WAIT = 60.0


class FolderTree(Tree):
    """Paths of a folder mount → nodes; the same interface as a single dump's :class:`Tree`."""

    def __init__(
        self,
        folder: str,
        *,
        max_open: int = 8,
        idle: float = IDLE_SECONDS,
        skip: tuple[str, ...] = (),
        dump_options: Mapping[str, object] | None = None,
        prober: Callable[[str], Probe | None] = probe,
        reaper: bool = True,
    ) -> None:
        self.folder = folder
        self._skip = skip
        self._dump_options = dict(dump_options or {})
        self.pool = DumpPool(self._open, max_open=max_open, idle=idle, reaper=reaper)
        self._probes = ProbeCache(prober)
        self._slots: dict[str, Slot] = {}
        self._by_key: dict[tuple[str, ...], Slot] = {}
        self._walked: dict[str, int | None] | None = None  # None: never scanned
        self._stale = False
        self._scan_lock = threading.Lock()
        self._index_lock = threading.Lock()
        super().__init__(_FolderRoot(self))

    # -- scanning ----------------------------------------------------------------------------
    def refresh(self, *, wait: bool = True) -> None:
        """Scan the folder if it was never scanned or changed since. ``wait=False``: when
        another request is scanning, go on with the names of the last scan."""
        if not self._needs_scan():
            return
        if not self._scan_lock.acquire(timeout=SCAN_WAIT if wait or self._walked is None else 0):
            return
        try:
            if self._needs_scan():
                self._rescan()
        finally:
            self._scan_lock.release()

    def _needs_scan(self) -> bool:
        return self._walked is None or self._stale or folders_changed(self._walked)

    def _rescan(self) -> None:
        self._stale = False
        walked = walk(self.folder, skip=self._skip)
        dumps = group(self._probes.scan(walked.files))
        old = self._by_key
        taken = {old[d.key].name for d in dumps if d.key in old}  # names stay with their dump
        slots: dict[str, Slot] = {}
        by_key: dict[tuple[str, ...], Slot] = {}
        for d, base in zip(dumps, base_names(dumps), strict=True):
            prev = old.get(d.key)
            if prev is not None and prev.found == d:
                slot = prev
            else:
                name = prev.name if prev is not None else unique_name(base, taken)
                slot = Slot(name, d, failure=d.error)
                if prev is not None:
                    self.pool.retire(prev)  # the file changed: the old opening goes
            taken.add(slot.name)
            slots[slot.name] = slot
            by_key[d.key] = slot
        for key, prev in old.items():
            if key not in by_key:
                self.pool.retire(prev)
        self._slots, self._by_key = slots, by_key
        self._walked = walked.folders

    def slots(self) -> list[Slot]:
        """The dumps of the last scan, in the order of the walk (sorted paths)."""
        return list(self._slots.values())

    # -- opening -----------------------------------------------------------------------------
    def _open(self, slot: Slot) -> Opened:
        from ..kernel.dump import open_dump

        dump = open_dump(slot.paths, **self._dump_options)
        try:
            self._check_same_files(dump, slot)
            return Opened(dump, build_tree(dump))
        except BaseException:
            dump.close()
            raise

    def _check_same_files(self, dump, slot: Slot) -> None:
        """The files opened are those the scan found (a path checked then may lead elsewhere
        now: a link or folder replaced); else DumpError, and the folder is scanned again."""
        opened = set()
        for f in dump.source.files():
            f = getattr(f, "stream", f)  # a flattened stream's index reads the stream
            st = os.fstat(f.fd)
            opened.add((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        found = {(i.dev, i.ino, i.size, i.mtime_ns) for i in slot.found.ids}
        if opened != found:
            self._stale = True
            raise DumpError(
                slot.paths[0], "the file changed since the folder was listed: list it again"
            )

    # -- paths -------------------------------------------------------------------------------
    def lookup(self, path: str) -> Node:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self.root
        if len(parts) == 1 or self._walked is None:  # a name of the top, or the first lookup
            self.refresh(wait=False)
        name = parts[0]
        if name == INDEX:
            if len(parts) > 1:
                raise NotFound(path)
            return IndexFile(self)
        slot = self._slots.get(name)
        if slot is None:
            raise NotFound(path)
        sub = "/".join(parts[1:])
        if not sub:
            return DumpDirectory(self.pool, slot, "")
        with self.pool.use(slot) as opened:
            real = opened.tree.lookup(sub)
        return node_for(self.pool, slot, sub, real)

    def top_entries(self) -> dict[str, Node]:
        entries: dict[str, Node] = {INDEX: IndexFile(self)}
        for name, slot in self._slots.items():
            entries[name] = DumpDirectory(self.pool, slot, "")
        return entries

    # -- index -------------------------------------------------------------------------------
    def index_text(self) -> str:
        """The whole index, every dump opened in turn (within ``max_open``) where its line is
        not known yet; each line is kept, so a second read opens nothing."""
        self.refresh()
        with self._index_lock:
            lines = [index.HEADER]
            for slot in self.slots():
                fields = slot.memo.get("index")
                if fields is None:
                    fields = slot.memo["index"] = self._index_fields(slot)
                lines.append(index.line(slot.name, fields, slot.found.size))  # type: ignore[arg-type]
        return "".join(lines)

    def _index_fields(self, slot: Slot) -> tuple[str, str, str, str]:
        """A dump's columns. One that was not open is closed again at once: the views its
        line needed (the log) are not kept for a dump nobody looks at."""
        was_open = slot.opened is not None
        with self.pool.use(slot) as opened:
            if opened.dump is None:
                return index.failed_fields(slot.failure or "cannot be opened")
            fields = index.dump_fields(opened.dump)
        if not was_open:
            self.pool.close(slot)
        return fields

    def close(self) -> None:
        self.pool.close_all()


class _FolderRoot(Directory):
    """``MOUNTPOINT/``: listing it scans the folder again when it changed."""

    def __init__(self, tree: FolderTree) -> None:
        super().__init__({})
        self._tree = tree

    def entries(self) -> Mapping[str, Node]:
        self._tree.refresh()
        return self._tree.top_entries()


class IndexFile(File):
    """``index``: made when first read, from the dumps there are then; each open of the file
    reads one whole version of it. Its size is 0, as for the files of ``/proc``: it is known
    only once made, and it changes as dumps come and go (read it to its end)."""

    direct_io = True

    def __init__(self, tree: FolderTree) -> None:
        self._tree = tree
        self._content: bytes | None = None
        self._lock = threading.Lock()

    def content(self) -> bytes:
        with self._lock:
            if self._content is None:
                self._content = self._tree.index_text().encode("utf-8", "surrogateescape")
            return self._content

    def size(self) -> int:
        return 0

    def seek(self, offset: int, whence: int) -> int | None:
        """Data up to the end of what a read returns (not the size: 0)."""
        end = len(self.content())
        if not 0 <= offset < end:
            return None
        return offset if whence == os.SEEK_DATA else end

    def readinto(self, offset: int, buffer: memoryview) -> int:
        piece = self.content()[offset : offset + len(buffer)]
        buffer[: len(piece)] = piece
        return len(piece)


def build_folder_tree(folder: str, **kwargs) -> FolderTree:
    """The tree of a folder of dumps (see :class:`FolderTree`); reads nothing yet."""
    return FolderTree(folder, **kwargs)
