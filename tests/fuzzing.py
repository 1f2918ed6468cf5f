"""Helpers of the fuzz suite (tests/test_fuzz_*.py): seed dumps, mutations, limits, the walk.

Every case opens a mutated dump through the library (``vmcorefs.open_dump``), builds the tree
(``tree.build_tree``), lists every directory, takes the size of every file and reads every kind
of path. A case may end only in: data, a :class:`DumpError` at open, or, per file, EIO
(:class:`FaultError`) or an ``unavailable: ...`` text. Anything else fails the test: another
exception, a case that runs past :data:`CASE_SECONDS` (a loop that a corrupt value does not
bound) or an allocation that follows a corrupt size (the address space of the process is
limited to what it uses plus :data:`MEMORY_HEADROOM` while a case runs).

The case budget per test is ``VMCOREFS_FUZZ_CASES`` when set (the long mode,
``benchmarks/fuzz_long.py``), else the CI default of each test; hypothesis runs derandomized
(fixed seeds), so CI runs are reproducible.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import resource
import signal
import struct
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import vmcorefs
from tests import kdumpwriter as kw
from tests.cpu_notes import prstatus
from tests.elfbuilder import PAGE, START_KERNEL_map
from tests.mmbuilder import VMALLOC, SyntheticKernel
from tests.printk_layouts import AREA_SIZE, Prb
from tests.symtables import ERAS, STEXT, SYMBOLS, TABLES, era_tables
from tests.symtables import build as build_kallsyms
from vmcorefs.errors import DumpError, FaultError
from vmcorefs.kernel.kallsyms import PLACE_RELATIVE
from vmcorefs.tree import Directory, File, LazyWindowFile, Tree, WindowFile, build_tree

#: Wall-clock limit of one case (a hang is a failure). Generous: CI machines are shared.
CASE_SECONDS = 20.0
#: Address space a case may add to the process (a corrupt size must not be allocated).
MEMORY_HEADROOM = 768 << 20
MiB = 1 << 20


def budget(default: int, scale: int = 1) -> int:
    """Cases for one fuzz test: ``VMCOREFS_FUZZ_CASES`` (divided by ``scale`` for the tests
    whose cases cost more) when set, else ``default``."""
    value = os.environ.get("VMCOREFS_FUZZ_CASES")
    return max(default, int(value) // scale) if value else default


def fuzz_settings(default: int, scale: int = 1) -> settings:
    """Derandomized hypothesis settings with a fixed case budget and no example database."""
    return settings(
        max_examples=budget(default, scale),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# --- limits ------------------------------------------------------------------------------------


class CaseTimeout(Exception):
    """A case ran past :data:`CASE_SECONDS`: some loop over dump data is not bounded."""


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def limits(
    seconds: float = CASE_SECONDS, headroom: int = MEMORY_HEADROOM, cpu_seconds: float | None = None
) -> Iterator[None]:
    """Run a case under a wall-clock alarm and a cap on the process's address space; with
    ``cpu_seconds``, also under a limit on the CPU time the process uses (a bound that a
    machine loaded by other work does not make fail)."""
    assert threading.current_thread() is threading.main_thread()

    def expired(signum, frame):
        if signum == signal.SIGPROF:
            raise CaseTimeout(f"case used more than {cpu_seconds} s of CPU")
        raise CaseTimeout(f"case still running after {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, expired)
    old_prof = signal.signal(signal.SIGPROF, expired) if cpu_seconds else None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if cpu_seconds:
        signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if cpu_seconds:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, old_prof)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --- the walk ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one case did: refused at open, or opened with so many reads, faults, unavailables."""

    refused: str | None = None
    files: int = 0
    reads: int = 0
    faults: int = 0
    unavailable: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _read(node: File, offset: int, size: int, out: Outcome) -> bytes | None:
    """One read: bytes (at most ``size``, the same twice) or None for EIO."""
    try:
        data = node.read(offset, size)
    except FaultError:
        out.faults += 1
        return None
    assert isinstance(data, bytes), type(data)
    assert len(data) <= size, (offset, size, len(data))
    out.reads += 1
    out.bytes += len(data)
    if data and size > 1 and isinstance(node, WindowFile):
        # Never lies twice differently: a prefix read gives the same bytes (caches included).
        half = node.read(offset, max(1, len(data) // 2))
        assert data.startswith(half), (offset, size)
    return data


def walk_tree(tree: Tree, out: Outcome, *, phys: Sequence[int] = (), kvirt: Sequence[int] = (),
              max_entries: int = 2000,
              sampled: Mapping[str, int] | None = None) -> None:  # fmt: skip
    """List every directory, stat every file, read each at its start, middle and end; read
    ``phys`` and ``kvirt`` at the given addresses (kvirt: kernel addresses).

    ``sampled``: directories (``"/sym"``) of which only so many entries, spread evenly over the
    listing, are walked (the first ``max_entries`` of the others).
    """
    stack: list[tuple[str, Directory]] = [("", tree.root)]
    while stack:
        path, directory = stack.pop()
        entries = directory.entries()
        names: Iterable[str] = entries
        if sampled and path in sampled:
            step = max(1, len(entries) // max(1, sampled[path]))
            names = itertools.islice(entries, 0, None, step)
        for i, name in enumerate(names):
            if i >= max_entries:
                break
            assert name and "/" not in name and name not in (".", ".."), (path, name)
            node = entries[name]
            child = f"{path}/{name}"
            if isinstance(node, Directory):
                stack.append((child, node))
                continue
            assert isinstance(node, File)
            out.files += 1
            try:
                size = node.size()
                node.open_direct_io()
            except FaultError:
                out.faults += 1
                continue
            assert 0 <= size < 1 << 63, (child, size)  # st_size is a signed 64-bit number
            if child in ("/phys", "/kvirt"):
                base = 0 if child == "/phys" else 1 << 63
                for i, addr in enumerate(phys if child == "/phys" else kvirt):
                    for n in (1, 3 * 4096 + 17) if i else (1, MiB):
                        _read(node, addr - base, n, out)
                _read(node, size, 16, out)
                continue
            data = _read(node, 0, min(size, MiB) or 4096, out)
            if data is not None and data.startswith(b"unavailable: "):
                out.unavailable += 1
                assert data.endswith(b"\n") and data.count(b"\n") == 1, data
            if data is not None and not isinstance(node, (WindowFile, LazyWindowFile)):
                # Content computed whole (text, notes): exactly as long as the size said.
                assert len(data) == min(size, MiB), (child, size, len(data))
            assert node.size() == size, (child, size, node.size())  # the size never changes
            if size > MiB:
                _read(node, size // 2, 4096, out)
            if size > 1:
                _read(node, size - 1, 4096, out)
            assert _read(node, size, 4096, out) in (b"", None)


def exercise(paths: Sequence[str] | str, *, phys: Sequence[int] = (), kvirt: Sequence[int] = (),
             max_entries: int = 2000) -> Outcome:  # fmt: skip
    """Open a dump, build its tree and walk it; DumpError at open is a clean refusal."""
    out = Outcome()
    try:
        dump = vmcorefs.open_dump(paths)
    except DumpError as exc:
        assert exc.reason and "\n" not in exc.reason, exc
        out.refused = exc.reason
        return out
    try:
        walk_tree(build_tree(dump), out, phys=phys, kvirt=kvirt, max_entries=max_entries)
    finally:
        dump.close()
    return out


def run_case(paths: Sequence[str] | str, **kwargs) -> Outcome:
    """:func:`exercise` under :func:`limits`."""
    with limits():
        return exercise(paths, **kwargs)


# --- mutations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A part of a seed file worth mutating: ``[start, end)`` and the widths of its fields."""

    name: str
    start: int
    end: int
    #: Offsets (relative to start) and widths of the fields inside (headers); empty: any byte.
    fields: tuple[tuple[int, int], ...] = ()


def interesting(width: int, old: int, file_size: int) -> list[int]:
    """Values a corrupt field takes: edges of the type, the old value nudged, the file size."""
    top = (1 << (8 * width)) - 1
    edges = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x1000, 0xFFFF, top, top >> 1, (top >> 1) + 1]
    nudged = [old + 1, old - 1, old * 2, old * 4096, old ^ (1 << (8 * width - 1))]
    sizes = [file_size, file_size + 1, file_size - 1, file_size * 2]
    vals = edges + nudged + sizes + [1 << 31, 1 << 32, 1 << 40, 1 << 62]
    return sorted({v & top for v in vals})


def _pick(draw, items: Sequence):
    """One of ``items`` (an index draw: ``sampled_from`` rebuilds its strategy per call)."""
    return items[draw(st.integers(0, len(items) - 1))]


@st.composite
def mutations(draw, regions: Sequence[Region], size: int, *, truncate: bool = True):
    """A list of edits: ``("field", offset, width, choice, value)``, ``("xor", offset, mask)``,
    ``("set", offset, bytes)``, ``("cut", length)`` on a seed of ``size`` bytes."""
    kinds = ("field", "field", "bytes", "bits", "cut") if truncate else ("field", "bytes", "bits")
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        region = _pick(draw, regions)
        kind = _pick(draw, kinds)
        if kind == "cut":
            edits.append(("cut", draw(st.integers(region.start, max(region.start, region.end)))))
            continue
        if kind == "field" and region.fields:
            rel, width = _pick(draw, region.fields)
            edits.append(("field", region.start + rel, width, draw(st.integers(0, 40)),
                          draw(st.integers(0, (1 << (8 * width)) - 1))))  # fmt: skip
            continue
        start = draw(st.integers(region.start, max(region.start, region.end - 1)))
        if kind == "bits" or kind == "field":
            edits.append(("xor", start, draw(st.integers(1, 255))))
        else:
            n = draw(st.integers(1, 16))
            edits.append(("set", start, draw(st.binary(min_size=n, max_size=n))))
    return edits


def apply(seed: bytes, edits) -> bytes:
    buf = bytearray(seed)
    for edit in edits:
        if edit[0] == "cut":
            del buf[edit[1] :]
        elif edit[0] == "xor":
            if edit[1] < len(buf):
                buf[edit[1]] ^= edit[2]
        elif edit[0] == "set":
            _, start, data = edit
            if start < len(buf):
                buf[start : start + len(data)] = data[: len(buf) - start]
        else:
            _, start, width, choice, rand = edit
            if start + width > len(buf):
                continue
            old = int.from_bytes(buf[start : start + width], "little")
            values = interesting(width, old, len(seed))
            value = values[choice] if choice < len(values) else rand
            buf[start : start + width] = value.to_bytes(width, "little")
    return bytes(buf)


def fields(fmt: str) -> tuple[tuple[int, int], ...]:
    """Offsets and widths of the integer fields of a little-endian ``struct`` format."""
    out = []
    pos = 0
    for code, count in _codes(fmt.lstrip("<>=!")):
        size = struct.calcsize("<" + code)
        if code in "bBhHiIlLqQ":
            out.extend((pos + k * size, size) for k in range(count))
        pos += size * count
    return tuple(out)


def _codes(fmt: str):
    count = ""
    for ch in fmt:
        if ch.isdigit():
            count += ch
            continue
        n = int(count or 1)
        count = ""
        if ch in "sx":
            yield "x", n
        else:
            yield ch, n


class SeedFile:
    """A scratch file in tmpfs (when there is one) that each case rewrites."""

    def __init__(self, name: str = "dump") -> None:
        where = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="vmcorefs-fuzz-", dir=where)
        self.path = os.path.join(self.dir, name)

    def write(self, data: bytes, name: str | None = None) -> str:
        path = os.path.join(self.dir, name) if name else self.path
        with open(path, "wb") as f:
            f.write(data)
        return path

    def cleanup(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


# --- the synthetic kernel every format carries ------------------------------------------------

#: RAM of the synthetic kernel: its data and page tables live in the first range; the kallsyms
#: tables at TABLES and a little kernel text at STEXT sit in ranges of their own.
KERNEL_RAM = 3 * MiB
TABLES_PADDR = TABLES - START_KERNEL_map
STEXT_PADDR = STEXT - START_KERNEL_map
TEXT_SIZE = 2 * PAGE


@dataclass
class Kernel:
    """The synthetic kernel: memory, RAM ranges, VMCOREINFO, notes, and where things are."""

    pages: dict[int, bytes]
    ranges: list[tuple[int, int]]
    vmcoreinfo: bytes
    notes: list[tuple[bytes, int, bytes]]
    #: Physical ranges of kernel structures: name -> (paddr, size)
    structures: dict[str, tuple[int, int]]
    #: Addresses worth reading through phys and kvirt.
    phys_reads: list[int]
    kvirt_reads: list[int]

    @property
    def max_mapnr(self) -> int:
        return max(e for _, e in self.ranges) // PAGE


@cache
def kernel(found: bool = False) -> Kernel:
    """Page tables, struct pages (SPARSEMEM vmemmap), uts, nodes and zones with free lists,
    vmap areas, a printk ring, kallsyms tables and two CPUs' PRSTATUS notes.

    ``found``: a kernel before 6.0: VMCOREINFO without the kallsyms keys, the tables laid out
    as 6.1's scripts/kallsyms.c does (the finder must find them in the image)."""
    k = SyntheticKernel([(0, KERNEL_RAM)], section_bits=21, physmem_bits=36)
    structures: dict[str, tuple[int, int]] = {}
    structures["page tables"] = (0x10_0000, k.pt._next - 0x10_0000)
    pages_start = min(k._page_addr.values())
    structures["struct pages"] = (pages_start, max(k._page_addr.values()) + 512 * 64 - pages_start)
    k.set_page(5, flags=1 << 4, mapping=0xFFFF888000001000)
    k.free_block(8, 2)
    k.compound(16, 2, flags=1 << 4)
    before = k._next
    k.add_uts([b"Linux", b"fuzz", b"6.1.0-fuzz", b"#1 SMP", b"x86_64", b"(none)"])
    free = [1, 0, 1] + [0] * 8
    k.add_nodes(
        {0: [(256, free), (512, [0] * 11)]}, free_lists={(0, 0, 0, 0): [8], (0, 0, 2, 1): [16]}
    )
    k.add_vmap_areas([(VMALLOC, VMALLOC + 0x3000), (VMALLOC + 0x10000, VMALLOC + 0x12000)])
    structures["uts, nodes, vmap areas"] = (before, k._next - before)
    prb = Prb(count_bits=4, size_bits=11)
    for i in range(24):
        prb.add(b"fuzz line %d: %s" % (i, b"x" * (i * 7 % 50)), ts=i * 1_234_567)
    area = k.alloc(AREA_SIZE, PAGE)
    for addr, data in prb.regions(START_KERNEL_map + area):
        k.write(addr - START_KERNEL_map, data)
    structures["printk ring"] = (area, AREA_SIZE)
    for key, value in prb.keys(START_KERNEL_map + area).items():
        k.vmcoreinfo[key] = str(value)
    if found:
        # Every digit occurs in some name, as in every real kernel (the search starts there).
        symbols = sorted([*SYMBOLS, (STEXT + 0x300, "t", "crc_0123456789")])
        blob, _loc = era_tables(ERAS["6.1"], symbols, TABLES)
        k.vmcoreinfo["SYMBOL(_stext)"] = f"{STEXT:x}"
        k.vmcoreinfo["SYMBOL(init_task)"] = f"{0xFFFFFFFF81800000:x}"
    else:
        kallsyms, vi, _loc = build_kallsyms(PLACE_RELATIVE)
        blob = kallsyms.data
        for line in vi.raw.decode().splitlines():
            key, _, value = line.partition("=")
            k.vmcoreinfo[key] = value
    structures["kallsyms tables"] = (TABLES_PADDR, len(blob))
    k.write(TABLES_PADDR, blob)
    k.write(STEXT_PADDR, bytes(range(256)) * (TEXT_SIZE // 256))
    tables_end = -(-(TABLES_PADDR + len(blob)) // PAGE) * PAGE
    ranges = [(0, KERNEL_RAM), (STEXT_PADDR, STEXT_PADDR + TEXT_SIZE), (TABLES_PADDR, tables_end)]
    regs = [0x1000 * i for i in range(27)]
    notes = [(b"CORE", 1, prstatus(100 + cpu, regs)) for cpu in range(2)]
    pages = {pfn: bytes(page) for pfn, page in k.mem.pages.items()}
    for start, end in ranges:  # every RAM page exists (zero pages too: the kdump shares them)
        for pfn in range(start // PAGE, end // PAGE):
            pages.setdefault(pfn, bytes(PAGE))
    return Kernel(
        pages=pages,
        ranges=ranges,
        vmcoreinfo=k.vmcoreinfo_bytes(),
        notes=notes,
        structures=structures,
        phys_reads=[0, 0x10_0000, area, KERNEL_RAM - 100, STEXT_PADDR, TABLES_PADDR, 5 * MiB],
        kvirt_reads=[
            STEXT,
            TABLES,
            START_KERNEL_map + area,
            VMALLOC,
            0xFFFFEA0000000000,
            0xFFFF888000000000,
            0xFFFFFFFFFFFFF000,
        ],  # fmt: skip
    )


@cache
def elf_seed(found: bool = False) -> tuple[bytes, list[Region]]:
    """The synthetic kernel (``kernel(found)``) as an ELF core, and its regions (header,
    phdrs, notes, segments)."""
    kern = kernel(found)
    segments = []
    for start, end in kern.ranges:
        data = b"".join(kern.pages[pfn] for pfn in range(start // PAGE, end // PAGE))
        segments.append((start, data, end - start))
    notes = [(n, t, d) for n, t, d in kern.notes]
    raw = kw.build_elf_core(segments, kern.vmcoreinfo, notes=notes)
    phnum = 1 + len(segments)
    phdrs_end = 64 + 56 * phnum
    note_len = struct.unpack_from("<Q", raw, 64 + 32)[0]
    regions = [
        Region("ELF header", 0, 64, fields("<16sHHIQQQIHHHHHH")),
        *(
            Region(f"phdr {i}", 64 + 56 * i, 120 + 56 * i, fields("<IIQQQQQQ"))
            for i in range(phnum)
        ),
        Region("notes", phdrs_end, phdrs_end + note_len, fields("<III") * 1),
        Region("memory", phdrs_end + note_len, len(raw)),
    ]
    return raw, regions + structure_regions(lambda paddr: _elf_offset(raw, paddr), found)


def _elf_offset(raw: bytes, paddr: int) -> int | None:
    phnum = struct.unpack_from("<H", raw, 56)[0]
    for i in range(phnum):
        ptype, _, off, _, pa, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", raw, 64 + 56 * i)
        if ptype == 1 and pa <= paddr < pa + filesz:
            return off + paddr - pa
    return None


def structure_regions(where: Callable[[int], int | None], found: bool = False) -> list[Region]:
    """File regions of the kernel structures, for a format that stores memory raw."""
    out = []
    for name, (paddr, size) in kernel(found).structures.items():
        start = where(paddr)
        if start is not None:
            out.append(Region(name, start, start + size, ()))
    return out


def kdump_spec(codec: str = "zlib", **kwargs) -> kw.KdumpSpec:
    kern = kernel()
    ram = [(s // PAGE, e // PAGE) for s, e in kern.ranges]
    return kw.KdumpSpec(
        max_mapnr=kern.max_mapnr, pages=kern.pages, ram=ram, compression=codec,
        vmcoreinfo=kern.vmcoreinfo, notes=kern.notes, nr_cpus=2, **kwargs,
    )  # fmt: skip


def kdump_regions(raw: bytes) -> list[Region]:
    """Header, sub-header, notes, both bitmaps, descriptors, page data of a kdump file."""
    from vmcorefs.dumpfile.kdump import _HEADER, _SUB_HEADER, DiskDumpHeader, KdumpSubHeader

    h = DiskDumpHeader.parse(raw[: _HEADER.size])
    bs = h.block_size
    sub = KdumpSubHeader.parse(raw[bs : bs + _SUB_HEADER.size], h.header_version)
    bitmap = (1 + h.sub_hdr_size) * bs
    half = h.bitmap_blocks * bs // 2
    descs = bitmap + 2 * half
    ndesc = sum(bin(b).count("1") for b in raw[bitmap + half : descs])
    data = descs + 24 * ndesc
    return [
        Region("kdump header", 0, _HEADER.size, fields("<8si390s6xqqIiiIIIIIIi")),
        Region("sub-header", bs, bs + _SUB_HEADER.size, fields("<qiiQQqQqQqQQQQ")),
        Region("notes", sub.offset_note, sub.offset_note + sub.size_note, fields("<III")),
        Region("1st bitmap", bitmap, bitmap + half),
        Region("2nd bitmap", bitmap + half, descs),
        Region(
            "page descriptors",
            descs,
            data,
            tuple((24 * i + o, w) for i in range(ndesc) for o, w in ((0, 8), (8, 4), (12, 4))),
        ),  # fmt: skip
        Region("page data", data, len(raw)),
    ]


@cache
def kdump_seed(codec: str = "zlib", version: int = 6) -> tuple[bytes, list[Region]]:
    raw = kw.build_kdump(kdump_spec(codec, header_version=version))
    return raw, kdump_regions(raw)


def flat_regions(raw: bytes) -> list[Region]:
    """The flat header and every record header (big-endian offset and size) of a stream."""
    regions = [Region("flat header", 0, 32, ((16, 8), (24, 8)))]
    pos = 4096
    records = 0
    while pos + 16 <= len(raw):
        offset, size = struct.unpack_from(">qq", raw, pos)
        regions.append(Region(f"record {records}", pos, pos + 16, ((0, 8), (8, 8))))
        if offset == -1:
            break
        regions.append(Region(f"record {records} data", pos + 16, pos + 16 + size))
        pos += 16 + size
        records += 1
    return regions


@cache
def flat_seeds() -> list[tuple[bytes, list[Region]]]:
    """A flattened kdump (shuffled records of 16 KiB) and a flattened ELF core."""
    out = []
    stream = kw.flatten(*kw.kdump_chunks(kdump_spec("zlib")), record_size=16 << 10, shuffle=3)
    out.append((stream, flat_regions(stream)))
    elf, _ = elf_seed()
    stream = kw.flatten([(0, elf)], len(elf), record_size=64 << 10)
    out.append((stream, flat_regions(stream)))
    return out


@cache
def split_seed() -> tuple[list[bytes], list[list[Region]]]:
    """The zlib kdump split in three parts."""
    kern = kernel()
    bounds = [0, 300, kern.max_mapnr // 2, kern.max_mapnr]
    parts = kw.build_split(kdump_spec("zlib"), bounds)
    return parts, [kdump_regions(p) for p in parts]


#: kdump codecs the seeds use ("none": pages stored raw).
CODECS = ("zlib", "lzo", "snappy", "zstd", "none")
#: The regions of the ELF seed that belong to the container (the rest is kernel memory).
ELF_CONTAINER = frozenset({"ELF header", "notes", "memory"} | {f"phdr {i}" for i in range(8)})

SAMPLE = Path(__file__).parent / "data" / "sample" / "vmcore.kdump"


@cache
def sample_seed() -> tuple[bytes, list[Region]]:
    """The bundled real sample: header, sub-header, notes, bitmaps, descriptors, page data."""
    raw = SAMPLE.read_bytes()
    return raw, kdump_regions(raw)


def sample_kvirt() -> list[int]:
    """A few symbols of the sample's VMCOREINFO (kernel text and data)."""
    text = (SAMPLE.parent / "vmcoreinfo.txt").read_text()
    out = []
    for name in ("init_uts_ns", "_stext", "swapper_pg_dir", "prb"):
        for line in text.splitlines():
            if line.startswith(f"SYMBOL({name})="):
                out.append(int(line.split("=", 1)[1], 16))
    return out


@cache
def sample_note() -> bytes:
    """The sample's VMCOREINFO note text, as the dump holds it."""
    return (SAMPLE.parent / "vmcoreinfo.txt").read_bytes()


def note_keys(note: bytes) -> list[str]:
    """The keys of a VMCOREINFO note, in order."""
    return [line.partition(b"=")[0].decode() for line in note.splitlines() if b"=" in line]


def note_with(note: bytes, key: str, value: str | None) -> bytes:
    """``note`` with ``key``'s value replaced (its line removed when ``value`` is None)."""
    out = []
    for line in note.splitlines():
        name, sep, _ = line.partition(b"=")
        if sep and name.decode() == key:
            if value is None:
                continue
            line = name + b"=" + value.encode()
        out.append(line)
    return b"\n".join(out) + b"\n"


#: Cases per fuzz target and how they ended, printed when a fuzz module finishes.
STATS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
