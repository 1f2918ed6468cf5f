"""A thread-safe, compute-once property: kernel views are built lazily, on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class lazy(Generic[T]):  # noqa: N801 - used as a decorator, like functools.cached_property
    """Like ``functools.cached_property`` but one computation even under concurrent first use.

    An exception is stored and re-raised on later accesses too: a view that cannot be built
    (``Unavailable``) is not retried on every FUSE call.
    """

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__
        self._lock = threading.RLock()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        slot = "_lazy_" + self.name
        cached = obj.__dict__.get(slot)
        if cached is None:
            with self._lock:
                cached = obj.__dict__.get(slot)
                if cached is None:
                    try:
                        cached = (True, self.func(obj))
                    except Exception as exc:  # noqa: BLE001 - stored, re-raised below
                        cached = (False, exc)
                    obj.__dict__[slot] = cached
        ok, value = cached
        if ok:
            return value
        raise value
