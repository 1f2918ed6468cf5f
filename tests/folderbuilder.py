"""Small synthetic dumps for the folder-mount tests: each says which dump it is in every page.

``page(seed, pfn)`` is the content of frame ``pfn`` of dump ``seed``: a read of the wrong dump,
or of the wrong frame, cannot pass for the right one.
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

from elfbuilder import ElfCore, LoadSegment, note
from kdumpwriter import KdumpSpec, build_elf_core, kdump_chunks, write_kdump
from kdumpwriter import flatten as flatten_writes

PAGE = 4096
PFNS = 8
TIMESTAMP = 1700000000  # 2023-11-14T22:13:20Z
NT_PRSTATUS = 1


def page(seed: int, pfn: int) -> bytes:
    head = f"dump {seed} frame {pfn};".encode()
    return (head * (PAGE // len(head) + 1))[:PAGE]


def vmcoreinfo(release: str = "6.1.0-test", crashtime: int | None = None) -> bytes:
    text = (
        f"OSRELEASE={release}\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82000000\n"
        "NUMBER(phys_base)=0\n"
    )
    if crashtime is not None:
        text += f"CRASHTIME={crashtime}\n"
    return text.encode()


def spec(seed: int, *, release="6.1.0-test", crashtime=None, timestamp=TIMESTAMP, **kw):
    return KdumpSpec(
        max_mapnr=PFNS,
        pages={p: page(seed, p) for p in range(PFNS)},
        vmcoreinfo=vmcoreinfo(release, crashtime),
        timestamp=(timestamp, 0),
        **kw,
    )


def kdump(path: Path, seed: int, **kw) -> Path:
    """A kdump-compressed dump (zlib) of :data:`PFNS` frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_kdump(path, spec(seed, **kw))
    return path


def flattened(path: Path, seed: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatten_writes(*kdump_chunks(spec(seed, **kw)), record_size=3000))
    return path


def elf(path: Path, seed: int, *, release="6.1.0-test", crashtime=None) -> Path:
    """An ELF64 core with VMCOREINFO, memory ``[0, PFNS pages)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(page(seed, p) for p in range(PFNS))
    path.write_bytes(build_elf_core([(0, data, len(data))], vmcoreinfo(release, crashtime)))
    return path


def split(folder: Path, seed: int, bounds=(0, 3, 5, PFNS), prefix="dump", **kw) -> list[Path]:
    """The parts of a split dump (``makedumpfile --split``): ``prefix-1``, ``prefix-2`` ..."""
    folder.mkdir(parents=True, exist_ok=True)
    s = spec(seed, **kw)
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        path = folder / f"{prefix}-{i + 1}"
        write_kdump(path, s, split=(a, b))
        paths.append(path)
    return paths


def process_core(path: Path) -> Path:
    """An ELF core with no VMCOREINFO (a process's core, as systemd-coredump keeps them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    core = ElfCore(notes=[note(b"CORE", NT_PRSTATUS, bytes(336))])
    core.segments.append(LoadSegment(0x400000, b"\x90" * PAGE))
    path.write_bytes(core.build())
    return path


def executable(path: Path) -> Path:
    """An ELF file of type ET_EXEC (a vmlinux or a program left next to the dumps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(build_elf_core([(0, page(0, 0), PAGE)], vmcoreinfo()))
    struct.pack_into("<H", data, 16, 2)  # e_type = ET_EXEC
    path.write_bytes(bytes(data))
    return path


def file_size(*paths: os.PathLike) -> int:
    return sum(os.path.getsize(p) for p in paths)
