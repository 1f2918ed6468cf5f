"""The dumps of a folder mount that are open: at most ``max_open`` at once, least recently
used closed first, and each closed once unused for ``idle`` seconds.

A dump is opened by the first request that needs it and *held* (pinned) for the length of
that request only: an open file of the mount does not hold its dump, so four readers of four
dumps with ``max_open`` 2 all read on, each request waiting, if need be, until another one
ends and its dump can be closed. Between two requests a dump may be closed and opened again;
its tree is then built afresh, with the same content (a dump does not change). Memory and
file descriptors are bounded by ``max_open`` dumps however many the folder holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import heap
from ..errors import DumpError
from ..tree import Directory, Tree, text
from .scan import FoundDump

log = logging.getLogger("vmcorefs")

#: Seconds a dump stays open after its last use (when ``max_open`` does not close it first).
IDLE_SECONDS = 60.0


@dataclass
class Opened:
    """What a request holds: the dump (None when it cannot be opened) and its tree."""

    dump: Any
    tree: Tree


@dataclass(eq=False)
class Slot:
    """One dump of the folder, open or not. Compared by identity (a key of the LRU)."""

    name: str
    found: FoundDump
    #: Why the dump cannot be opened, once known (its tree is then a README saying so).
    failure: str | None = None
    opened: Opened | None = None
    opening: bool = False
    pins: int = 0
    last_used: float = 0.0
    #: Gone from the folder or changed since it was found: closed as soon as unused.
    retired: bool = False
    #: Data that callers keep about the dump while it is closed (its index line).
    memo: dict[str, object] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.found.files]


def failure_tree(slot: Slot) -> Tree:
    """The tree of a dump that cannot be opened: a ``README`` that says why."""
    files = "\n".join(f"  {f.rel}" for f in slot.found.files)
    body = (
        f"vmcorefs: {slot.name} cannot be opened as a crash dump.\n"
        f"file(s):\n{files}\n"
        f"unavailable: {slot.failure}\n"
    )
    return Tree(Directory({"README": text(body)}))


Opener = Callable[[Slot], Opened]


class _Use:
    """``with pool.use(slot) as opened``: a plain class, as every FUSE request of a folder
    mount makes one or two (a generator-based context manager costs several times more).
    Within a ``with`` of the same thread on the same slot (a read inside ``pinned``), it holds
    nothing more: the dump is held already."""

    __slots__ = ("_pool", "_slot", "_nested")

    def __init__(self, pool: DumpPool, slot: Slot) -> None:
        self._pool = pool
        self._slot = slot
        self._nested = False

    def __enter__(self) -> Opened:
        held = _held.__dict__
        opened = held.get(id(self._slot))
        if opened is not None:
            self._nested = True
            return opened
        opened = self._pool._acquire(self._slot)
        held[id(self._slot)] = opened
        return opened

    def __exit__(self, *exc: object) -> None:
        if not self._nested:
            del _held.__dict__[id(self._slot)]
            self._pool._release(self._slot)


#: Per thread: the dumps this thread holds now, by ``id`` of their slot.
_held = threading.local()


class DumpPool:
    """Opens, holds and closes the dumps of :class:`Slot` s (thread-safe)."""

    def __init__(
        self,
        opener: Opener,
        *,
        max_open: int = 8,
        idle: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        reaper: bool = True,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self._opener = opener
        self.max_open = max_open
        self.idle = idle
        self._clock = clock
        self._cond = threading.Condition()
        #: Slots open or being opened, least recently used first.
        self._open: OrderedDict[Slot, None] = OrderedDict()
        self._reaper_wanted = reaper
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self._waiting = 0  #: requests waiting for a dump to be opened or a place to be free
        #: Counts for tests and benchmarks: dumps opened and closed so far, most open at once.
        self.opens = 0
        self.closes = 0
        self.peak = 0

    @property
    def open_count(self) -> int:
        with self._cond:
            return len(self._open)

    def use(self, slot: Slot) -> _Use:
        """Hold ``slot``'s dump open (opening it if need be) for a ``with`` block, which gets
        the :class:`Opened` dump."""
        return _Use(self, slot)

    def _acquire(self, slot: Slot) -> Opened:
        victims: list[tuple[str, Opened | None]] = []
        with self._cond:
            while True:  # bounded: each wait ends when a held dump is let go
                if slot.retired and slot.opened is None and slot.failure is None:
                    slot.failure = "the file changed or went away since the folder was listed"
                if slot.failure is not None:
                    slot.pins += 1
                    return Opened(None, failure_tree(slot))
                if slot.opened is not None:
                    slot.pins += 1
                    self._open.move_to_end(slot)
                    return slot.opened
                if not slot.opening:
                    if len(self._open) < self.max_open:
                        break
                    victim = next((s for s in self._open if s.pins == 0 and s.opened), None)
                    if victim is not None:
                        victims.append(self._evict(victim))
                        break
                self._waiting += 1
                self._cond.wait()
                self._waiting -= 1
            slot.opening = True
            self._open[slot] = None
            self.peak = max(self.peak, len(self._open))
        self._close(victims)
        try:
            opened: Opened | None = self._opener(slot)
            failure = None
        except DumpError as exc:
            opened, failure = None, exc.reason
        except Exception as exc:  # noqa: BLE001 - one bad dump must not stop the others
            log.exception("opening %s failed", slot.name)
            opened, failure = None, f"cannot be opened: {type(exc).__name__}: {exc}"
        with self._cond:
            slot.opening = False
            slot.pins += 1
            slot.last_used = self._clock()
            if opened is None:
                del self._open[slot]
                slot.failure = failure
                result = Opened(None, failure_tree(slot))
            else:
                slot.opened = opened
                self.opens += 1
                result = opened
            self._cond.notify_all()
        self._start_reaper()
        return result

    def _release(self, slot: Slot) -> None:
        victims: list[tuple[str, Opened | None]] = []
        with self._cond:
            slot.pins -= 1
            slot.last_used = self._clock()
            if slot.retired and slot.pins == 0 and slot.opened is not None:
                victims.append(self._evict(slot))
            if self._waiting:
                self._cond.notify_all()
        self._close(victims)

    def _evict(self, slot: Slot) -> tuple[str, Opened | None]:
        """Take ``slot``'s dump out of the open set (under the lock): the next request for it
        opens it again; :meth:`_close` closes this one."""
        del self._open[slot]
        opened, slot.opened = slot.opened, None
        if opened is not None:
            self.closes += 1
        return slot.name, opened

    @staticmethod
    def _close(victims: list[tuple[str, Opened | None]]) -> None:
        """Close evicted dumps, outside the lock (closing costs system calls), and give the
        memory they held back to the system."""
        closed = False
        for name, opened in victims:
            if opened is not None and opened.dump is not None:
                closed = True
                try:
                    opened.dump.close()
                except OSError as exc:  # pragma: no cover - close of a read-only file
                    log.warning("closing %s: %s", name, exc)
        victims.clear()  # the last references: the dumps' memory is freed here
        if closed:
            del opened
            heap.trim()

    def close(self, slot: Slot) -> None:
        """Close ``slot``'s dump now unless a request holds it (it opens again on next use)."""
        victims: list[tuple[str, Opened | None]] = []
        with self._cond:
            if slot.pins == 0 and slot.opened is not None:
                victims.append(self._evict(slot))
        self._close(victims)

    def retire(self, slot: Slot) -> None:
        """``slot`` left the folder (or changed): close it now, or when its last use ends."""
        victims: list[tuple[str, Opened | None]] = []
        with self._cond:
            slot.retired = True
            if slot.pins == 0 and slot.opened is not None:
                victims.append(self._evict(slot))
        self._close(victims)

    def close_idle(self) -> int:
        """Close every dump unused for ``idle`` seconds; how many were closed."""
        now = self._clock()
        with self._cond:
            victims = [
                self._evict(s)
                for s in list(self._open)
                if s.pins == 0 and s.opened is not None and now - s.last_used >= self.idle
            ]
        count = len(victims)
        self._close(victims)
        return count

    def close_all(self) -> None:
        """Close every dump that no request holds, and stop the idle timer (at unmount)."""
        self._stop.set()
        with self._cond:
            victims = [self._evict(s) for s in list(self._open) if s.pins == 0 and s.opened]
        self._close(victims)

    def _start_reaper(self) -> None:
        """The idle timer: a thread started on first use, so in the daemon after it forked
        (a thread started before libfuse daemonises would not survive the fork)."""
        if not self._reaper_wanted or self._reaper is not None or self._stop.is_set():
            return
        with self._cond:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap, name="vmcorefs-idle", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        period = max(0.5, min(self.idle / 4, 15.0))
        while not self._stop.wait(period):
            self.close_idle()
            heap.trim()  # what building a dump's views left freed but kept (vmcorefs/heap.py)
