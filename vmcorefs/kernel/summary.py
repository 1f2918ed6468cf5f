"""The ``summary`` file: the facts an engineer asks of a dump first, one ``key: value`` a line.

Each value comes from the dump itself (VMCOREINFO, the container's header, its notes); a fact
the dump does not record reads ``unknown`` rather than a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from ..errors import NOT_AVAILABLE, Unavailable, why
from ..memory.x86_64 import MAX_PHYS_ADDR
from .cpus import PANIC_CPU_INVALID
from .crash import reason_line

UNKNOWN = "unknown"


def _size(n: int) -> str:
    """``268435456 bytes (256 MiB)``: exact bytes, then a readable figure."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            text = f"{value:.0f}" if n % (1 << shift) == 0 else f"{value:.1f}"
            return f"{n} bytes ({text} {unit})"
    return f"{n} bytes"


def _hex_signed(value: int) -> str:
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


def _number(get: Callable[[], int | None], render: Callable[[int], str]) -> str:
    """A VMCOREINFO number's line: ``unknown`` when the note lacks it, ``unknown (why)``
    when its value is malformed or out of range (the accessor's reason: key, value, range)."""
    try:
        value = get()
    except Unavailable as exc:
        return f"{UNKNOWN} ({exc.reason})"
    return UNKNOWN if value is None else render(value)


def crash_time(seconds: int | None) -> str:
    """CRASHTIME (seconds since the epoch, written by the crashing kernel) as UTC."""
    if seconds is None:
        return UNKNOWN
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (seconds since the epoch)"
    return f"{stamp} ({seconds})"


def summary_text(dump) -> str:
    """The content of ``summary`` for a :class:`~vmcorefs.kernel.dump.Dump`."""
    vi = dump.vmcoreinfo
    info = dump.source.info
    lines: list[tuple[str, str]] = []
    lines.append(("release", vi.osrelease or UNKNOWN))
    lines.append(("crash time", _number(lambda: vi.crashtime, crash_time)))
    lines.append(("reason", reason_line(dump)))

    try:
        ncpus: int | None = len(dump.cpus)
    except Unavailable:
        ncpus = info.nr_cpus
    lines.append(("CPUs", str(ncpus) if ncpus is not None else UNKNOWN))
    panic_cpu = dump.panic_cpu
    if panic_cpu is None:
        lines.append(("panic CPU", UNKNOWN))
    elif panic_cpu == PANIC_CPU_INVALID:
        lines.append(("panic CPU", "none (panic_cpu is -1: the kernel did not panic)"))
    else:
        lines.append(("panic CPU", str(panic_cpu)))
    if info.crashed_cpu is not None:
        lines.append(("kdump current_cpu", str(info.crashed_cpu)))

    try:
        ranges = list(dump.source.ranges())
    except Unavailable as exc:  # a corrupt RAM map: the other lines still hold
        lines.append(("RAM", f"unavailable: {exc.reason}"))
    else:
        total = sum(end - start for start, end in ranges)
        lines.append(("RAM", f"{_size(total)} in {len(ranges)} range(s) the dump describes"))
    lines.append(("format", info.format))
    lines.append(("compression", info.compression))
    lines.append(("dump level", str(info.dump_level) if info.dump_level is not None else UNKNOWN))
    lines.append(("paging levels", str(dump.kvirt.translator.levels)))
    lines.append(("KASLR offset", _number(lambda: vi.kerneloffset, _hex_signed)))
    # the translator's range (a dump whose phys_base is outside it does not open)
    phys_base = partial(vi.number, "phys_base", -MAX_PHYS_ADDR, MAX_PHYS_ADDR)
    lines.append(("phys_base", _number(phys_base, _hex_signed)))
    lines.append(("tasks", _listing(lambda: dump.tasks, lambda t: t.tasks)))
    lines.append(("modules", _listing(lambda: dump.modules, lambda m: m.modules)))
    lines.append(("module symbols", _module_symbols(dump)))
    for key, value in info.extra.items():
        lines.append((key, value))
    lines.extend(damage_lines(dump.source.damage))
    return "".join(f"{key}: {value}\n" for key, value in lines)


def _module_symbols(dump) -> str:
    """How many module symbols ``sym/`` and ``kallsyms`` show, and why some may be missing
    (``kallsyms`` has no room for a note)."""
    try:
        files = dump.symbol_files
    except NOT_AVAILABLE as exc:  # no symbol table at all
        return f"unavailable: {why(exc)}"
    if files.notes and files.notes[0].startswith("unavailable: "):
        return files.notes[0]
    count = len({(s.name, s.address) for s in files.modules})
    modules = len({s.module for s in files.modules})
    text = f"{count} in sym/ from {modules} module(s)"
    if files.notes:
        more = f" (and {len(files.notes) - 1} more problem(s))" if len(files.notes) > 1 else ""
        text += f", maybe not all: {files.notes[0]}{more}"
    return text


def damage_lines(damage) -> list[tuple[str, str]]:
    """``truncated:`` for each file shorter than its headers say (known at open), ``damage:``
    once a corrupt page was met (what this file has read so far, and every reader: the
    summary is computed once, at its first read; the count may have grown since)."""
    lines = [
        ("truncated", f"{t.path}: {t}; what lies past its end reads as EIO")
        for t in damage.truncations
    ]
    found = damage.summary()
    if found:
        lines.append(("damage", found))
    return lines


def _listing(get: Callable[[], object], items: Callable[[object], list]) -> str:
    """How many entries a kernel list (tasks, modules) gave, and whether the walk was whole:
    ``ps`` and ``modules`` have no room for a note, so a list cut short (by memory the dump
    lacks, a loop) is said here, never left to look complete."""
    try:
        listing = get()
    except NOT_AVAILABLE as exc:  # one line of the summary, not the whole file
        return f"unavailable: {why(exc)}"
    count = len(items(listing))
    problems: list[str] = getattr(listing, "problems", [])
    if not problems:
        return f"{count} listed"
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"{count} listed, maybe not all: {problems[0]}{more}"
