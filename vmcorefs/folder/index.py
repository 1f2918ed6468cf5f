"""``MOUNTPOINT/index``: one tab-separated line a dump, for triage with ``sort``, ``cut``, ``awk``.

Columns: name, release (VMCOREINFO ``OSRELEASE``), crash time (UTC, ISO 8601, from
``CRASHTIME``, else the kdump header's time), reason (the ``reason:`` line of the dump's own
``crash`` file: computed once, there), format (as ``summary`` says it), size (bytes of the
dump's file or files). A fact the dump does not record reads ``unknown``; a dump that cannot
be opened has ``unavailable: <reason>`` in the reason column.
"""

from __future__ import annotations

import time

from ..errors import Unavailable, VmcorefsError
from ..tree import File, Tree

COLUMNS = ("name", "release", "crash_time", "reason", "format", "size")
HEADER = "\t".join(COLUMNS) + "\n"
UNKNOWN = "unknown"
#: The ``crash`` file is a few KiB (a stack); its reason line is near the top.
CRASH_READ = 1 << 16


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


def crash_reason(tree: Tree) -> str:
    """The ``reason:`` of the tree's ``crash`` file, or its ``unavailable: ...`` line: the
    reason is found once, by the code behind that file, never a second time here."""
    node = tree.root.entries().get("crash")
    if not isinstance(node, File):
        return "unavailable: this version of vmcorefs has no crash file"
    try:
        content = node.read(0, CRASH_READ).decode("utf-8", "replace")
    except VmcorefsError as exc:
        return f"unavailable: {exc}"
    lines = content.split("\n")
    if lines[0].startswith("unavailable:"):
        return lines[0]
    for line in lines:
        if line.startswith("reason:"):
            return line[len("reason:") :].strip() or UNKNOWN
    return "unavailable: the crash file has no reason line"


def dump_fields(dump, tree: Tree) -> tuple[str, str, str, str]:
    """release, crash time, reason, format of an opened dump."""
    return (
        dump.vmcoreinfo.osrelease or UNKNOWN,
        crash_time(dump),
        crash_reason(tree),
        dump.source.info.format,
    )


def failed_fields(reason: str) -> tuple[str, str, str, str]:
    """The columns of a dump that cannot be opened."""
    return (UNKNOWN, UNKNOWN, f"unavailable: {reason}", UNKNOWN)


def line(name: str, fields: tuple[str, str, str, str], size: int) -> str:
    return "\t".join(cell(v) for v in (name, *fields, str(size))) + "\n"
