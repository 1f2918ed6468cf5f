"""Copying into a caller's buffer: what every layer's ``readinto`` shares (below every layer).

Reads pass the destination down (``readinto(address, memoryview) -> count``), from the FUSE
reply buffer to the file it is filled from; ``read`` is the same into a new bytes object.
"""

from __future__ import annotations

from collections.abc import Callable

#: Zeros to copy from (made once).
_ZEROS = memoryview(bytes(1 << 16))


def fill_zeros(buffer: memoryview) -> None:
    """Set every byte of ``buffer`` to zero."""
    step = len(_ZEROS)
    for pos in range(0, len(buffer), step):
        n = min(step, len(buffer) - pos)
        buffer[pos : pos + n] = _ZEROS[:n] if n < step else _ZEROS


def read_via(readinto: Callable[[int, memoryview], int], address: int, size: int) -> bytes:
    """``read`` built on a ``readinto``: the bytes it copies from ``address``, at most
    ``size``, as a new bytes object."""
    if size <= 0:
        return b""
    buffer = bytearray(size)
    got = readinto(address, memoryview(buffer))
    return bytes(buffer) if got == size else bytes(buffer[:got])
