"""The thread-safe LRU: entry counts, byte budgets, values larger than the cache."""

from __future__ import annotations

import threading

from vmcorefs.memory.cache import LockedLRU


def test_entries_are_evicted_least_recently_used_first():
    cache: LockedLRU[int, str] = LockedLRU(2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # 1 is now the most recent
    cache.put(3, "c")
    assert cache.get(2) is None and cache.get(1) == "a" and cache.get(3) == "c"


def test_a_byte_budget_bounds_the_sum_of_sizes():
    cache: LockedLRU[int, bytes] = LockedLRU(10, getsizeof=len)
    for key in range(5):
        cache.put(key, bytes(4))
    assert len(cache) == 2  # 2 x 4 bytes fit in 10, a third does not
    assert cache.get(4) == bytes(4) and cache.get(0) is None


def test_a_value_larger_than_the_cache_is_simply_not_kept():
    cache: LockedLRU[str, bytes] = LockedLRU(8, getsizeof=len)
    cache.put("small", b"1234")
    cache.put("huge", bytes(100))
    assert cache.get("huge") is None and cache.get("small") == b"1234"
    assert cache.get_or_compute("big", lambda: bytes(50)) == bytes(50)  # returned, not kept
    assert cache.get("big") is None


def test_concurrent_use_keeps_the_bound():
    cache: LockedLRU[int, int] = LockedLRU(64)

    def work(base: int) -> None:
        for i in range(2000):
            cache.get_or_compute((base * 10000 + i) % 500, lambda i=i: i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) <= 64
