"""Exceptions shared by every layer.

They live below every layer so that each can raise them and the CLI and the FUSE adapter can
map them (to ``vmcorefs: PATH: reason`` lines and to errno values) without knowing formats.
"""

from __future__ import annotations


class VmcorefsError(Exception):
    """Base of every error vmcorefs raises on purpose."""


class DumpError(VmcorefsError):
    """The dump file cannot be used: missing, unreadable, truncated, corrupt, foreign.

    ``path`` names the file at fault and ``reason`` says why, in words a user can act on; the CLI
    prints ``vmcorefs: PATH: reason``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FaultError(VmcorefsError):
    """A byte the dump does not hold was needed (a hole, an excluded page, an unmapped address)."""

    def __init__(self, space: str, address: int, reason: str = "not present in the dump") -> None:
        super().__init__(f"{space} address {address:#x}: {reason}")
        self.space = space
        self.address = address
        self.reason = reason


class Unavailable(VmcorefsError):
    """A derived view cannot be computed from this dump (a missing key, absent memory, no BTF).

    Files built on such a view read as one line ``unavailable: <reason>``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
