"""A thread-safe LRU cache: FUSE calls arrive on several threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LockedLRU(Generic[K, V]):
    """``cachetools.LRUCache`` behind a lock; ``maxsize`` counts entries."""

    def __init__(self, maxsize: int, getsizeof: Callable[[V], int] | None = None) -> None:
        """``maxsize`` counts entries, or, with ``getsizeof``, the sum of the entries' sizes."""
        self.maxsize = max(1, int(maxsize))
        self._cache: LRUCache = LRUCache(maxsize=self.maxsize, getsizeof=getsizeof)
        self._lock = threading.Lock()

    def get(self, key: K, default=None):
        with self._lock:
            try:
                return self._cache[key]  # one lookup on a hit (get() would make two)
            except KeyError:
                return default

    def put(self, key: K, value: V) -> None:
        with self._lock:
            try:
                self._cache[key] = value
            except ValueError:  # larger than the whole cache (sized caches): not kept
                pass

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value, else ``compute()`` (run outside the lock), stored and returned."""
        with self._lock:
            try:
                return self._cache[key]
            except KeyError:
                pass
        value = compute()
        self.put(key, value)
        return value

    def discard(self, key: K) -> None:
        """Forget ``key`` (nothing when it is not cached)."""
        with self._lock:
            self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
