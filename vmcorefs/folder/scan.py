"""Find the dumps under a folder by their content, and name them.

A walk of the folder (bounded in depth and entries) stats every regular file and asks the
``dumpfile`` layer whether it is a dump (:func:`~vmcorefs.dumpfile.detect.probe`, headers
only); the parts of a split dump are grouped by their headers. Each dump gets a name: its
folder's when the folder holds that dump alone (``/var/crash/202611261042/dump.202611261042``
is ``202611261042``), else its file name, made unique with ``~2``, ``~3`` in the order of the
walk (sorted), so that the same folder gives the same names at every mount.

Symbolic links: a link whose target is inside the folder is followed; one that leads out of it
only when the mounting user or root owns the link (as Apache's ``SymLinksIfOwnerMatch``): in a
folder others may write to (``/var/crash`` is world-writable on some systems), a link someone
else planted to a file outside (``/proc/kcore``) is never served, while a folder of links that
the user made to dumps kept elsewhere works.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..dumpfile.detect import Probe, probe
from ..errors import DumpError

#: Folders deeper than this below the mounted folder are not searched.
MAX_DEPTH = 16
#: Entries (files and folders) looked at in one walk, at most: a folder is not a file system.
MAX_ENTRIES = 200_000
#: The top-level file of the folder mount; a dump of that name is renamed as a collision.
RESERVED_NAMES = frozenset({"index"})


@dataclass(frozen=True)
class FileId:
    """A file as the walk found it: a dump opened later must still be this file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class FoundFile:
    rel: str  #: path under the folder, as walked ("202611261042/dump.202611261042")
    path: str  #: the real path that is opened (links resolved, checked at the walk)
    id: FileId


@dataclass(frozen=True)
class FoundDump:
    """One dump: its file(s), in part order for a split dump; ``error`` when its headers
    already show it cannot be opened (the index and its folder's README say why)."""

    files: tuple[FoundFile, ...]
    error: str | None = None

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    @property
    def ids(self) -> tuple[FileId, ...]:
        return tuple(f.id for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.id.size for f in self.files)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.files[0].rel)


@dataclass
class Walk:
    files: list[FoundFile]
    #: Every folder walked, real path → mtime (None: could not be read): a change of any of
    #: them means the folder must be scanned again.
    folders: dict[str, int | None]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def walk(root: str, *, skip: Iterable[str] = (), trusted_uids: Iterable[int] | None = None) -> Walk:
    """Every non-empty regular file under ``root`` (sorted, depth first; each file once even
    when links reach it twice), following links as the module docstring says. ``skip``: paths
    of folders neither entered nor even looked at (the mount point, when it lies inside:
    a stat there would be a request to this very file system)."""
    real_root = os.path.realpath(root)
    trusted = set(trusted_uids) if trusted_uids is not None else {0, os.getuid()}
    skipped = {os.path.abspath(p) for p in skip}
    files: list[FoundFile] = []
    folders: dict[str, int | None] = {}
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    try:
        st = os.stat(real_root)
        seen_dirs.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    stack: list[tuple[str, str, int]] = [(real_root, "", 0)]
    budget = MAX_ENTRIES
    while stack and budget > 0:  # bounded: MAX_ENTRIES entries, each folder entered once
        path, rel, depth = stack.pop()
        try:
            folders[path] = os.stat(path).st_mtime_ns
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            folders[path] = None
            continue
        subfolders: list[tuple[str, str, int]] = []
        for entry in entries:
            budget -= 1
            if budget < 0:
                break
            name_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.path in skipped:
                continue  # not even a stat: it would ask this file system itself
            try:
                lst = entry.stat(follow_symlinks=False)
                real = entry.path
                st = lst
                if stat.S_ISLNK(lst.st_mode):
                    target = os.path.join(path, os.readlink(entry.path))
                    if any(_inside(os.path.normpath(target), s) for s in skipped):
                        continue
                    real = os.path.realpath(entry.path)
                    if not _inside(real, real_root) and lst.st_uid not in trusted:
                        continue
                    if any(_inside(real, s) for s in skipped):
                        continue
                    st = os.stat(real)
            except OSError:
                continue  # vanished, dangling link, no permission to stat
            ident = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if depth < MAX_DEPTH and ident not in seen_dirs and real not in skipped:
                    seen_dirs.add(ident)
                    subfolders.append((real, name_rel, depth + 1))
            elif stat.S_ISREG(st.st_mode) and st.st_size > 0 and ident not in seen_files:
                seen_files.add(ident)
                files.append(FoundFile(name_rel, real, FileId.of(st)))
        stack.extend(reversed(subfolders))
    files.sort(key=lambda f: f.rel.split("/"))
    return Walk(files, folders)


def folders_changed(folders: dict[str, int | None]) -> bool:
    """Whether any folder of a walk changed since (a file added, removed, renamed)."""
    for path, mtime in folders.items():
        try:
            now: int | None = os.stat(path).st_mtime_ns
        except OSError:
            now = None
        if now != mtime:
            return True
    return False


ProbeResult = Probe | None | DumpError


class ProbeCache:
    """Probes of files by identity: a rescan looks again only at files that are new or
    changed. Thread-unsafe: the caller scans under its own lock."""

    def __init__(self, prober: Callable[[str], Probe | None] = probe) -> None:
        self._prober = prober
        self._known: dict[tuple[str, FileId], ProbeResult] = {}

    def scan(self, files: list[FoundFile]) -> list[tuple[FoundFile, Probe | DumpError]]:
        """The dumps among ``files`` (a probe result or why it cannot be one), in order."""
        known: dict[tuple[str, FileId], ProbeResult] = {}
        out: list[tuple[FoundFile, Probe | DumpError]] = []
        for f in files:
            key = (f.path, f.id)
            if key in self._known:
                result = self._known[key]
            else:
                try:
                    result = self._prober(f.path)
                except DumpError as exc:
                    result = exc
            known[key] = result
            if result is not None:
                out.append((f, result))
        self._known = known
        return out


def group(probed: list[tuple[FoundFile, Probe | DumpError]]) -> list[FoundDump]:
    """One :class:`FoundDump` per dump: the parts of a split dump that share their folder and
    headers are one (in part order); everything else stands alone. In the walk's order (a
    split dump where its first part in that order was)."""
    dumps: list[FoundDump | list[tuple[int, FoundFile]]] = []
    sets: dict[tuple, list[tuple[int, FoundFile]]] = {}
    for f, result in probed:
        if isinstance(result, DumpError):
            dumps.append(FoundDump((f,), error=result.reason))
        elif result.split is None:
            dumps.append(FoundDump((f,)))
        else:
            key = (os.path.dirname(f.rel), result.split.set_key)
            parts = sets.get(key)
            if parts is None:
                parts = sets[key] = []
                dumps.append(parts)
            parts.append((result.split.start_pfn, f))
    out: list[FoundDump] = []
    for item in dumps:
        if isinstance(item, FoundDump):
            out.append(item)
        else:
            out.append(FoundDump(tuple(f for _, f in sorted(item, key=lambda p: p[0]))))
    return out


def base_names(dumps: list[FoundDump]) -> list[str]:
    """Each dump's name before collisions are resolved: its folder's name when the folder
    holds it alone (not for the mounted folder itself), else its (first part's) file name."""
    per_folder: dict[str, int] = {}
    for d in dumps:
        per_folder[d.folder] = per_folder.get(d.folder, 0) + 1
    return [
        os.path.basename(d.folder)
        if d.folder and per_folder[d.folder] == 1
        else os.path.basename(d.files[0].rel)
        for d in dumps
    ]


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, else ``base~2``, ``base~3`` ...: the first not in ``taken`` (nor reserved)."""
    name, n = base, 1
    while name in taken or name in RESERVED_NAMES:  # bounded: taken is finite
        n += 1
        name = f"{base}~{n}"
    return name
