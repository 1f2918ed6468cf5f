"""``MOUNTPOINT/index``: one tab-separated line a dump, for triage with ``sort``, ``cut``, ``awk``.

Columns: name, release (VMCOREINFO ``OSRELEASE``), crash time (UTC, ISO 8601, from
``CRASHTIME``, else the kdump header's time), reason (as the dump's own ``crash`` file says
it), format (as ``summary`` says it), size (bytes of the dump's file or files). A fact the
dump does not record reads ``unknown``; a dump that cannot be opened has
``unavailable: <reason>`` in the reason column.
"""

from __future__ import annotations

import time

from ..errors import Unavailable, VmcorefsError
from ..kernel.crash import reason_line

COLUMNS = ("name", "release", "crash_time", "reason", "format", "size")
HEADER = "\t".join(COLUMNS) + "\n"
UNKNOWN = "unknown"


def cell(value: str) -> str:
    """A value as one cell: tabs and line breaks (a log line may hold any) become spaces."""
    return value.replace("\t", " ").replace("\r", " ").replace("\n", " ") or UNKNOWN


def iso_utc(seconds: int | None) -> str:
    """``2026-11-26T10:42:13Z``, or ``unknown``."""
    if seconds is None:
        return UNKNOWN
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return UNKNOWN


def crash_time(dump) -> str:
    """When the kernel crashed: its own ``CRASHTIME``, else when the dump was written."""
    try:
        seconds = dump.vmcoreinfo.crashtime
    except Unavailable:
        seconds = None
    if seconds is None:
        seconds = dump.source.info.dump_time
    return iso_utc(seconds)


def crash_reason(dump) -> str:
    """The dump's reason as its ``crash`` file says it (``reason:``, or its ``unavailable:``
    line), by the same code (``kernel/crash.py``), which reads the log but unwinds no stack."""
    try:
        return reason_line(dump)
    except VmcorefsError as exc:  # the dump changed under us, say
        return f"unavailable: {exc}"


def dump_fields(dump) -> tuple[str, str, str, str]:
    """release, crash time, reason, format of an opened dump."""
    return (
        dump.vmcoreinfo.osrelease or UNKNOWN,
        crash_time(dump),
        crash_reason(dump),
        dump.source.info.format,
    )


def failed_fields(reason: str) -> tuple[str, str, str, str]:
    """The columns of a dump that cannot be opened."""
    return (UNKNOWN, UNKNOWN, f"unavailable: {reason}", UNKNOWN)


def line(name: str, fields: tuple[str, str, str, str], size: int) -> str:
    return "\t".join(cell(v) for v in (name, *fields, str(size))) + "\n"
