"""What of a dump is damaged: files shorter than their headers say, corrupt pages met.

Corrupt memory reads as EIO like absent memory, so the reader alone cannot tell a page the dump
left out from a page it holds damaged. :class:`Damage` keeps the difference: a truncation is
known when the dump is opened (``vmcorefs: PATH: warning: ...`` on stderr, a ``truncated:``
line in ``summary``); corrupt pages are recorded as they are met (a ``damage:`` line).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import CorruptError

#: Corrupt pages kept with their reasons (the ``damage:`` line names the first few).
KEEP = 4
#: Distinct corrupt pages counted one by one; past this the count reads "more than".
MAX_COUNTED = 1 << 16
#: Pages are counted at this granularity (x86_64's page size).
PAGE_SHIFT = 12


@dataclass(frozen=True)
class Truncation:
    """A dump file shorter than its own headers say: ``size`` bytes where they describe
    ``expected`` (at least ``expected`` when ``at_least``: the part of the headers that would
    say more is itself past the end)."""

    path: str
    size: int
    expected: int
    at_least: bool = False

    def __str__(self) -> str:
        """``truncated at 4,000,000 of 15,796,670 bytes``."""
        of = "of at least" if self.at_least else "of"
        return f"truncated at {self.size:,} {of} {self.expected:,} bytes"

    def warning(self) -> str:
        """The mount-time warning (after ``vmcorefs: PATH: warning: ``)."""
        return (
            f"the file is {self}: its headers describe more than it holds; what lies past its "
            "end reads as an I/O error (EIO) and the files that need it say so"
        )


class Damage:
    """Thread-safe record of a dump's damage; bounded whatever the dump holds."""

    def __init__(self) -> None:
        self.truncations: list[Truncation] = []
        self._lock = threading.Lock()
        self._pages: set[int] = set()
        self._more = False
        self._first: list[CorruptError] = []

    def record(self, fault: CorruptError) -> None:
        """A corrupt page was met (its fault says where and why)."""
        page = fault.address >> PAGE_SHIFT
        with self._lock:
            if page in self._pages:
                return
            if len(self._pages) >= MAX_COUNTED:
                self._more = True
                return
            self._pages.add(page)
            if len(self._first) < KEEP:
                self._first.append(fault)

    @property
    def version(self) -> tuple[int, bool]:
        """Changes whenever the record does (a text built on it is then out of date)."""
        return len(self._pages), self._more

    @property
    def corrupt_pages(self) -> int:
        """Distinct corrupt pages met so far (at most :data:`MAX_COUNTED`)."""
        return len(self._pages)

    def first(self) -> list[CorruptError]:
        with self._lock:
            return list(self._first)

    def summary(self) -> str | None:
        """The ``damage:`` line's value, None while no corrupt page was met."""
        with self._lock:
            count, more, first = len(self._pages), self._more, list(self._first)
        if not count:
            return None
        many = f"more than {count:,}" if more else f"{count:,}"
        pages = "page" if count == 1 and not more else "pages"
        shown = "; ".join(f"{f.space} {f.address:#x}: {f.reason}" for f in first)
        rest = f"; and {count - len(first):,} more" if count > len(first) else ""
        return f"{many} corrupt {pages} met so far (read as EIO): {shown}{rest}"
