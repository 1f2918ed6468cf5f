"""fuse: the daemon hands free heap pages back when idle (IdleTrim), in few heaps."""

from __future__ import annotations

import sys

import pytest

from vmcorefs import heap
from vmcorefs.fuse import IdleTrim


class Clock:
    """Process CPU seconds, advanced by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def idle_trim():
    clock, calls = Clock(), []
    return clock, calls, IdleTrim(lambda pad: calls.append(pad) or 1, clock)


def test_a_pause_after_work_trims_once():
    clock, calls, trim = idle_trim()
    clock.now += 1.5  # a grep: busy
    assert not trim.step()
    clock.now += 0.3
    assert not trim.step()  # still busy
    clock.now += 0.001
    assert trim.step() and calls == [0]  # idle after work
    for _ in range(5):
        clock.now += 0.001
        assert not trim.step()  # idle without new work
    assert calls == [0]


def test_little_work_is_not_worth_a_trim():
    clock, calls, trim = idle_trim()
    for _ in range(5):
        clock.now += IdleTrim.WORK / 10
        trim.step()
        trim.step()
    assert calls == []
    clock.now += IdleTrim.WORK  # now enough, spread over pauses
    trim.step()
    assert trim.step() and calls == [0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_glibc_has_malloc_trim_and_mallopt():
    if not heap.can_trim():
        pytest.skip("not glibc")
    assert heap.trim() in (False, True)
    assert heap.limit_arenas(8)  # glibc's own default for this machine's size: harmless
