"""The semantic fuzz of the numbers a dump gives (tests/test_fuzz_numbers.py): one value of the
bundled sample changed at a time, then the whole tree walked.

Two kinds of case, both on the real sample (``tests/data/sample``):

* a VMCOREINFO key set to an extreme value (:data:`EXTREMES`; the long mode adds
  :data:`LONG_EXTRAS` and the key's absence). The dump is built the way ``open_dump`` builds it,
  from the sample's own kdump source, whose ``vmcoreinfo_raw()`` returns the changed note: every
  layer above the container runs on the sample's real memory. The source is opened once per
  worker and its decompressed pages are kept between cases (the container does not depend on
  VMCOREINFO; ``tests/test_fuzz_containers.py`` fuzzes it), and so are the symbol table and
  BTF for the cases that cannot change them (:class:`SymbolTableMemo` says how that is known);
* a field of the kdump header or sub-header set to an extreme value of its width: a copy of the
  sample with that field changed, opened by path.

Each case runs under :func:`tests.fuzzing.limits` (:data:`CASE_CPU_SECONDS`, :data:`CASE_MEMORY`)
and walks the tree with :func:`tests.fuzzing.walk_tree` (``sym/`` sampled). It must end in data,
a ``DumpError`` at open, EIO or ``unavailable: ...``: any other exception, a size that its
content contradicts, a case past its time or memory is a failure. Cases run in a few worker
processes (:func:`run_cases`).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from tests import fuzzing as fz
from vmcorefs.dumpfile.kdump import _HEADER, _SUB_HEADER, DiskDumpHeader
from vmcorefs.errors import DumpError

#: Limits of one case (issue 20): a value must not make a view loop or allocate. The time is
#: the CPU time the case uses (a case takes 0.05-0.5 s of it), so that a machine busy with other
#: work does not fail a case; a case that waits instead (a deadlock) meets the wall-clock alarm.
CASE_CPU_SECONDS = 5.0
CASE_WALL_SECONDS = 60.0
CASE_MEMORY = 256 << 20
#: ``sym/`` entries walked per case (spread over the listing: every kind of symbol is met).
SYM_SAMPLE = 24
#: The values every VMCOREINFO key takes, as text (SYMBOL() values are read as hex).
EXTREMES = ("0", "1", "-1", "4095", str(2**63 - 1), str(2**64 - 1), str(10**29), "garbage")
#: More values in the long mode (``VMCOREFS_FUZZ_CASES`` set): the edges of the C types, powers
#: of two around page and structure sizes, syntax the kernel never writes.
LONG_EXTRAS = (
    "2", "7", "8", "12", "16", "20", "35", "36", "52", "53", "63", "64", "65", "255", "256",
    "4096", "4097", "65535", "65536", str(2**31 - 1), str(2**31), str(2**32 - 1), str(2**32),
    str(2**52), str(-(2**31)), str(-(2**63)), str(-(2**63) - 1), "-4096", "-129",
    "ffffffffffffffff", "ffffffff80000000", "", " ", "+1", "0x10", "1_0", "1e3", "9" * 5000,
)  # fmt: skip
#: A long-mode value that removes the key.
ABSENT = None


@dataclass(frozen=True)
class Case:
    """One case: a VMCOREINFO key and its new text (None: removed), or a kdump header field
    (``key`` names it) at ``offset`` of ``width`` bytes and its new value."""

    kind: str  #: "vmcoreinfo" or "kdump header"
    key: str
    value: str | int | None
    offset: int = 0
    width: int = 0

    def __str__(self) -> str:
        value = self.value
        if isinstance(value, str) and len(value) > 24:
            value = value[:24] + "..."
        if self.kind == "kdump header" and isinstance(value, int):
            value = f"{value:#x}"
        return f"{self.kind} {self.key}={value!r}"


@dataclass
class Result:
    case: Case
    seconds: float
    cpu_seconds: float = 0.0
    refused: str | None = None
    files: int = 0
    unavailable: int = 0
    faults: int = 0
    #: why the case failed (an exception with where it was raised), None when it passed
    failure: str | None = None


def long_mode() -> bool:
    return bool(os.environ.get("VMCOREFS_FUZZ_CASES"))


# --- the cases ----------------------------------------------------------------------------------


def vmcoreinfo_cases(long: bool = False) -> list[Case]:
    """Every key of the sample's VMCOREINFO × :data:`EXTREMES` (and more in the long mode)."""
    values: list[str | None] = list(EXTREMES)
    if long:
        values += [*LONG_EXTRAS, ABSENT]
    return [Case("vmcoreinfo", key, v) for key in fz.note_keys(fz.sample_note()) for v in values]


#: Field names of ``struct disk_dump_header`` and ``struct kdump_sub_header`` (diskdump_mod.h),
#: in the order of their integer fields in ``_HEADER`` and ``_SUB_HEADER``.
HEADER_FIELDS = (
    "header_version", "timestamp.tv_sec", "timestamp.tv_usec", "status", "block_size",
    "sub_hdr_size", "bitmap_blocks", "max_mapnr", "total_ram_blocks", "device_blocks",
    "written_blocks", "current_cpu", "nr_cpus",
)  # fmt: skip
SUB_HEADER_FIELDS = (
    "phys_base", "dump_level", "split", "start_pfn", "end_pfn", "offset_vmcoreinfo",
    "size_vmcoreinfo", "offset_note", "size_note", "offset_eraseinfo", "size_eraseinfo",
    "start_pfn_64", "end_pfn_64", "max_mapnr_64",
)  # fmt: skip


def field_values(width: int, old: int, long: bool = False) -> list[int]:
    """:data:`EXTREMES` for a binary field of ``width`` bytes (as it would store them: -1 is
    every bit set, 2**63-1 the largest signed value of the width, 10**29 cut to the width,
    "garbage" a byte pattern), and in the long mode :func:`tests.fuzzing.interesting`."""
    bits = 8 * width
    mask = (1 << bits) - 1
    values = [0, 1, mask, 4095, mask >> 1, 10**29 & mask, int.from_bytes(b"\xa5" * width, "little")]
    if long:
        values += fz.interesting(width, old, fz.SAMPLE.stat().st_size)
    return sorted({v & mask for v in values} - {old})


def kdump_header_cases(long: bool = False) -> list[Case]:
    """Every integer field of the sample's kdump header and sub-header × its extreme values."""
    raw = sample_header_bytes()
    block_size = DiskDumpHeader.parse(raw).block_size
    cases = []
    for base, fmt, names in (
        (0, _HEADER.format, HEADER_FIELDS),
        (block_size, _SUB_HEADER.format, SUB_HEADER_FIELDS),
    ):
        fields = fz.fields(fmt)
        assert len(fields) == len(names), (fmt, names)
        for name, (rel, width) in zip(names, fields, strict=True):
            offset = base + rel
            old = int.from_bytes(raw[offset : offset + width], "little")
            for value in field_values(width, old, long):
                cases.append(Case("kdump header", name, value, offset, width))
    return cases


@cache
def sample_header_bytes() -> bytes:
    """The first 64 KiB of the sample: its header and sub-header."""
    with open(fz.SAMPLE, "rb") as f:
        return f.read(1 << 16)


def all_cases(long: bool | None = None) -> list[Case]:
    long = long_mode() if long is None else long
    return vmcoreinfo_cases(long) + kdump_header_cases(long)


# --- running a case -----------------------------------------------------------------------------


class RecordingValues(dict):
    """A VmcoreInfo's values that remember which keys were read, and whether the keys were
    listed (a listing depends on which keys there are)."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()
        self.listed = False

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def __iter__(self):
        self.listed = True
        return super().__iter__()

    def __len__(self) -> int:
        self.listed = True
        return super().__len__()

    def keys(self):
        self.listed = True
        return super().keys()

    def items(self):
        self.listed = True
        self.read.update(super().keys())
        return super().items()

    def values(self):
        self.listed = True
        self.read.update(super().keys())
        return super().values()


class SymbolTableMemo:
    """The sample's symbol table and BTF, built once and given to the cases that cannot change
    them.

    Decoding kallsyms and indexing BTF are most of a case's time, yet few keys reach them. The
    baseline build (the unchanged note) records every VMCOREINFO value that kernel virtual
    memory (the page-table keys) and ``build_symbol_table`` read; a case whose note has the
    same values for all of them (and the same keys, if the keys were listed) would compute the
    very same table from the same memory (the worker's source: not a kdump header case, whose
    memory differs), so it gets the baseline's, and with it the baseline's BTF (``load_btf``
    reads only the table and kernel memory). Every other case (a SYMBOL() or page-table key
    changed, a key removed) builds its own. The record is made by running the code, not from
    a list kept here: a key that the code starts to read is followed at once.
    """

    def __init__(self, source, note: bytes) -> None:
        from vmcorefs.kernel import btf, symbols
        from vmcorefs.memory.physical import PhysicalMemory
        from vmcorefs.memory.x86_64 import KernelVirtualMemory
        from vmcorefs.vmcoreinfo import VmcoreInfo

        self._build, self._load_btf = symbols.build_symbol_table, btf.load_btf
        self.source = source  # the memory the table was read from: only its cases share it
        vi = VmcoreInfo(note)
        values = vi._values = RecordingValues(vi._values)
        kvirt = KernelVirtualMemory(PhysicalMemory(source), vi)
        self.table = self._build(kvirt, vi)
        self.bounds = btf.kernel_btf_bounds(kvirt, vi, self.table)
        self.btf = self._load_btf(kvirt, self.table, self.bounds)
        text = self.table.kallsyms_text()  # a function of the table alone: made once
        self.table.kallsyms_text = lambda: text  # type: ignore[method-assign]
        self.read, self.listed = frozenset(values.read), values.listed
        self.key = self._key(vi)
        symbols.build_symbol_table, btf.load_btf = self.build, self.load_btf
        self.reused = 0

    def _key(self, vi) -> tuple:
        values = dict(vi._values)  # not recorded: a plain copy
        listed = tuple(values) if self.listed else ()
        return listed, tuple((k, values.get(k)) for k in sorted(self.read))

    def build(self, kvirt, vmcoreinfo, user_sources=()):
        shared = getattr(getattr(kvirt, "phys", None), "source", None) is self.source
        if shared and not user_sources and self._key(vmcoreinfo) == self.key:
            self.reused += 1
            return self.table
        return self._build(kvirt, vmcoreinfo, user_sources)

    def load_btf(self, kvirt, symbols, bounds=None):
        # The baseline's table is only given with the baseline's page-table keys (above).
        if symbols is self.table and bounds in (None, self.bounds):
            return self.btf
        return self._load_btf(kvirt, symbols, bounds)


class _Worker:
    """What a worker process keeps between cases: the sample's source and a scratch file."""

    def __init__(self, scratch: str) -> None:
        from vmcorefs.dumpfile.detect import open_source

        self.source = open_source([str(fz.SAMPLE)])
        self._shared_pages(self.source)
        self.source.close = lambda: None  # type: ignore[method-assign]  # shared by every case
        self.scratch = os.path.join(scratch, f"sample-{os.getpid()}.kdump")
        self.sample = fz.SAMPLE.read_bytes()
        self.kvirt = fz.sample_kvirt()
        self.symbols = SymbolTableMemo(self.source, fz.sample_note())

    @staticmethod
    def _shared_pages(source) -> None:
        """Keep every page the source decompresses: the next case finds it (pages do not
        depend on VMCOREINFO). Decompression then runs in this thread (no pool threads)."""
        load = source.load_pages
        pages: dict[object, bytes] = {}

        def load_pages(refs):
            out = [pages.get(r) for r in refs]
            missing = [i for i, page in enumerate(out) if page is None]
            if missing:
                for i, page in zip(missing, load([refs[i] for i in missing]), strict=True):
                    out[i] = page
                    if page is not None:
                        pages[refs[i]] = page
            return out

        source.load_pages = load_pages
        source.parallel_decompression = False

    def walk(self, dump, result: Result) -> None:
        from vmcorefs.tree import build_tree

        out = fz.Outcome()
        fz.walk_tree(build_tree(dump), out, phys=[0x100000, 0x1000000], kvirt=self.kvirt,
                     sampled={"/sym": SYM_SAMPLE})  # fmt: skip
        result.files, result.unavailable, result.faults = out.files, out.unavailable, out.faults

    def run(self, case: Case) -> Result:
        from vmcorefs.kernel.dump import Dump

        result = Result(case, 0.0)
        t0, c0 = time.monotonic(), time.process_time()
        try:
            with fz.limits(CASE_WALL_SECONDS, CASE_MEMORY, cpu_seconds=CASE_CPU_SECONDS):
                if case.kind == "vmcoreinfo":
                    note = fz.note_with(fz.sample_note(), case.key, case.value)  # type: ignore[arg-type]
                    self.source.vmcoreinfo_raw = lambda: note
                    try:
                        dump = Dump(self.source)
                    except DumpError as exc:
                        result.refused = exc.reason
                    else:
                        self.walk(dump, result)
                else:
                    value = case.value.to_bytes(case.width, "little")  # type: ignore[union-attr]
                    with open(self.scratch, "wb") as f:
                        f.write(self.sample[: case.offset])
                        f.write(value)
                        f.write(self.sample[case.offset + case.width :])
                    self._open_and_walk(self.scratch, result)
        except BaseException as exc:  # noqa: BLE001 - every other outcome is the failure
            result.failure = _describe(exc)
        result.seconds = time.monotonic() - t0
        result.cpu_seconds = time.process_time() - c0
        return result

    def _open_and_walk(self, path: str, result: Result) -> None:
        import vmcorefs

        try:
            dump = vmcorefs.open_dump(path)
        except DumpError as exc:
            assert exc.reason and "\n" not in exc.reason, exc
            result.refused = exc.reason
            return
        try:
            self.walk(dump, result)
        finally:
            dump.close()


def _describe(exc: BaseException) -> str:
    """``Type: message`` and the innermost frames of the project's code."""
    frames = [
        f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)
    ]
    text = str(exc).replace("\n", " ")[:300]
    return f"{type(exc).__name__}: {text} (at {' <- '.join(reversed(frames[-4:]))})"


_WORKER: _Worker | None = None


def _init_worker(scratch: str) -> None:
    global _WORKER
    _WORKER = _Worker(scratch)


def _run_in_worker(case: Case) -> Result:
    assert _WORKER is not None
    return _WORKER.run(case)


def workers() -> int:
    """Worker processes: ``VMCOREFS_FUZZ_WORKERS``, else one per CPU (at most 4)."""
    value = os.environ.get("VMCOREFS_FUZZ_WORKERS")
    return max(1, int(value)) if value else max(1, min(4, os.cpu_count() or 1))


def run_cases(cases: Sequence[Case], processes: int | None = None) -> list[Result]:
    """Run ``cases`` in ``processes`` worker processes (in this one when 1), in case order."""
    processes = workers() if processes is None else processes
    scratch = fz.SeedFile()
    try:
        if processes <= 1:
            worker = _Worker(scratch.dir)
            return [worker.run(case) for case in cases]
        # forkserver: clean workers (no threads or memory inherited from the test process).
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(processes, initializer=_init_worker, initargs=(scratch.dir,)) as pool:
            results = pool.map(_run_in_worker, cases, chunksize=4)
            pool.close()
            pool.join()
        return results
    finally:
        scratch.cleanup()


def summary(results: Iterable[Result]) -> dict[str, object]:
    results = list(results)
    return {
        "cases": len(results),
        "refused at open": sum(r.refused is not None for r in results),
        "failures": sum(r.failure is not None for r in results),
        "unavailable files": sum(r.unavailable for r in results),
        "slowest case (s)": round(max((r.seconds for r in results), default=0.0), 2),
        "most CPU a case (s)": round(max((r.cpu_seconds for r in results), default=0.0), 2),
        "case time (s)": round(sum(r.seconds for r in results), 1),
        "case CPU time (s)": round(sum(r.cpu_seconds for r in results), 1),
    }
