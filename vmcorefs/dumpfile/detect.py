"""The formats vmcorefs reads, in one table; a dump recognised by its content and opened.

:data:`FORMATS` lists each container module's :class:`~.format.Format` (magic number, probe,
opener). Opening a file, a flattened stream's payload and every part of a split dump go
through it; :func:`probe` tells what a file is from its headers alone (a folder scan).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import DumpError
from . import elf, flattened, kdump
from .format import Formats, Probe, SplitPart
from .kdump import KdumpSource
from .source import DumpFile, PhysicalSource, ReadableFile
from .split import SplitSource

__all__ = ["FORMATS", "Probe", "SplitPart", "open_one", "open_source", "probe"]

#: Every format, tried in this order on a file's first bytes.
FORMATS = Formats([kdump.FORMAT, elf.FORMAT, flattened.FORMAT])


def probe(path: str | ReadableFile) -> Probe | None:
    """What a file is, from its headers only (its notes, for an ELF core), without opening
    the dump: a :class:`Probe` (its format's name; for one part of a split dump its frames and
    the ``set_key`` every part of that dump shares); None for anything else (empty, text, an
    executable, a process's core); DumpError for a file that announces a dump but whose
    headers are broken or unsupported, or that cannot be read."""
    if not isinstance(path, str):
        return FORMATS.probe(path)
    file = DumpFile(path)
    try:
        return FORMATS.probe(file)
    finally:
        file.close()


def open_one(path: str) -> PhysicalSource:
    """Open one dump file of any supported format."""
    file = DumpFile(path)
    try:
        return FORMATS.open(file)
    except BaseException:
        file.close()
        raise


def open_source(paths: Sequence[str]) -> PhysicalSource:
    """Open a dump: one file, or every part of a split dump (in any order)."""
    if not paths:
        raise ValueError("no dump file given")
    if len(paths) == 1:
        return open_one(paths[0])
    parts: list[KdumpSource] = []
    seen: dict[tuple[int, int], str] = {}
    try:
        for path in paths:
            file = DumpFile(path)
            try:
                if file.inode in seen:
                    raise DumpError(path, f"given twice (also as {seen[file.inode]})")
                seen[file.inode] = path
                part = FORMATS.open(file, split_part=True)
            except BaseException:
                file.close()
                raise
            if not isinstance(part, KdumpSource):  # pragma: no cover - openers refuse first
                part.close()
                raise DumpError(path, f"a {part.info.format} cannot be part of a split dump")
            parts.append(part)
        return SplitSource(parts)
    except BaseException:
        for p in parts:
            p.close()
        raise
