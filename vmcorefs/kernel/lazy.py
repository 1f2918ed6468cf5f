"""A thread-safe, compute-once property: kernel views are built lazily, on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..errors import FaultError, Unavailable

T = TypeVar("T")


class lazy(Generic[T]):  # noqa: N801 - used as a decorator, like functools.cached_property
    """Like ``functools.cached_property`` but one computation even under concurrent first use.

    The dump does not change, so what a view cannot be is kept too: an :class:`Unavailable`
    (or a :class:`FaultError` that escaped the computation: absent or corrupt memory the view
    needed) is stored as its reason, and every later access raises a fresh ``Unavailable``
    with it, not the same object again (whose traceback would grow with each raise). Anything
    else is not kept: a bug, or a :class:`~vmcorefs.errors.DumpError` (the file changed under
    us), is raised to this caller and the next access computes again.

    Each instance has a lock per view: two dumps, or two views of one dump, never wait for
    each other (views depend on each other without cycles, so the locks cannot deadlock).
    """

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _lock(self, obj: Any) -> threading.RLock:
        # dict.setdefault is atomic: two threads that race here get the same lock.
        locks = obj.__dict__.get("_lazy_locks")
        if locks is None:
            locks = obj.__dict__.setdefault("_lazy_locks", {})
        lock = locks.get(self.name)
        if lock is None:
            lock = locks.setdefault(self.name, threading.RLock())
        return lock

    def __get__(self, obj: Any, objtype: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        slot = "_lazy_" + self.name
        cached = obj.__dict__.get(slot)
        if cached is None:
            with self._lock(obj):
                cached = obj.__dict__.get(slot)
                if cached is None:
                    try:
                        cached = (True, self.func(obj))
                    except Unavailable as exc:
                        cached = (False, exc.reason)
                    except FaultError as exc:
                        cached = (False, str(exc))
                    obj.__dict__[slot] = cached
        ok, value = cached
        if ok:
            return value
        raise Unavailable(value)
