"""The table of dump formats: each container module describes itself with one :class:`Format`.

A format is recognised by its magic number at offset 0 (never by the file's name). Its
``probe`` then reads no more than its headers: what a folder scan needs to know (a dump or
not, and which parts of a split dump belong together) without opening the dump. Its ``open``
builds the :class:`~vmcorefs.dumpfile.source.PhysicalSource`. Detection of a whole file, of a
flattened stream's payload and of each part of a split dump all go through one
:class:`Formats` table (``detect.FORMATS``), so a new format is one entry there.

The table is passed to the openers that open a file inside a file (a flattened stream's
payload): no container module imports the module that lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import DumpError
from .source import PhysicalSource, ReadableFile

#: Bytes read at offset 0 to recognise a format (the longest magic number fits).
HEAD_SIZE = 16


@dataclass(frozen=True)
class SplitPart:
    """One part of a split dump as its headers name it: every part of one dump has the same
    ``set_key`` (the set is checked in full when it is opened); it holds page frames
    ``[start_pfn, end_pfn)``."""

    set_key: tuple[object, ...]
    start_pfn: int
    end_pfn: int


@dataclass(frozen=True)
class Probe:
    """What a file's headers say it is, found without opening the dump."""

    path: str
    #: The format's name in the table: "elf", "kdump" or "flattened".
    kind: str
    #: Set for one part of a split dump.
    split: SplitPart | None = None
    #: A flattened stream's payload ("kdump", "elf"), when its first records hold the headers.
    payload: str | None = None


class Opener(Protocol):
    def __call__(
        self, file: ReadableFile, formats: Formats, *, split_part: bool
    ) -> PhysicalSource: ...


#: ``probe(file, formats)``: a :class:`Probe`, None when the file is not a dump after all (an
#: ELF file that is no core), DumpError when its headers announce a dump but are broken.
Prober = Callable[[ReadableFile, "Formats"], "Probe | None"]


@dataclass(frozen=True)
class Format:
    """One container format: how to recognise it, probe it and open it."""

    name: str
    #: What messages call a file of this format: "an ELF core".
    title: str
    #: Magic numbers at offset 0, any of which names this format.
    magics: tuple[bytes, ...]
    probe: Prober
    open: Opener
    #: Whether it may be the payload of a flattened stream (a stream in a stream may not).
    flattenable: bool = True

    def matches(self, head: bytes) -> bool:
        return head.startswith(self.magics)


class Formats:
    """The formats vmcorefs reads, tried in order on a file's first bytes."""

    def __init__(self, formats: Sequence[Format]) -> None:
        self.formats = tuple(formats)

    def match(self, head: bytes) -> Format | None:
        """The format whose magic number ``head`` starts with, or None."""
        return next((f for f in self.formats if f.matches(head)), None)

    def detect(self, file: ReadableFile, *, inside: str | None = None) -> Format:
        """The format of ``file`` by its magic number; DumpError naming what it is not.
        ``inside``: the format of the file that holds this one (a flattened stream)."""
        head = file.pread(0, HEAD_SIZE)
        found = self.match(head)
        if inside is not None:
            if found is None or not found.flattenable:
                kinds = _either(f.title for f in self.formats if f.flattenable)
                raise DumpError(file.path, f"{inside} stream that holds neither {kinds}")
            return found
        if found is not None:
            return found
        if not head:
            raise DumpError(file.path, "empty file")
        if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
            raise DumpError(file.path, "a text file, not a crash dump")
        kinds = _either(f.title for f in self.formats)
        raise DumpError(file.path, f"not a crash dump: neither {kinds} (by its first bytes)")

    def open(
        self, file: ReadableFile, *, split_part: bool = False, inside: str | None = None
    ) -> PhysicalSource:
        """Open ``file`` as the format it is (``split_part``: as one part of a split dump)."""
        return self.detect(file, inside=inside).open(file, self, split_part=split_part)

    def probe(self, file: ReadableFile, *, inside: str | None = None) -> Probe | None:
        """What ``file``'s headers say (see :class:`Probe`); None when it is not a dump."""
        head = file.pread(0, HEAD_SIZE)
        found = self.match(head)
        if found is None or (inside is not None and not found.flattenable):
            return None
        return found.probe(file, self)


def _either(titles: Iterable[str]) -> str:
    """``"a, b nor c"``."""
    *most, last = titles
    return f"{', '.join(most)} nor {last}" if most else last
