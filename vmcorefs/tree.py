"""The mounted tree: paths → nodes. Pure Python, no FUSE: tests drive it directly.

Nodes are built lazily: a directory's entries are computed on first listing or lookup, a text
file's content on first ``getattr``/``read``. Each section of the tree (``info/``, ``sym/``,
``dmesg`` ...) is made by one small ``_section_*`` function below, over a
:class:`~vmcorefs.kernel.dump.Dump`.
"""

from __future__ import annotations

import contextlib
import stat
import threading
from collections.abc import Callable, Mapping
from os import SEEK_DATA

from .buffers import read_via
from .errors import NOT_AVAILABLE, FaultError, VmcorefsError, why
from .memory.cache import LockedLRU
from .memory.physical import ZeroFilled
from .memory.space import AddressSpace

FILE_MODE = stat.S_IFREG | 0o444
DIR_MODE = stat.S_IFDIR | 0o555
KVIRT_BASE = 1 << 63
#: Bytes of recently opened ``sym/`` files kept for the reads that follow their open (the open
#: read them to decide on ``direct_io``): a few typical symbols' worth, counted in bytes so
#: that a burst of 1 MiB symbols cannot hold more than this.
SYM_RECENT_BYTES = 4 << 20


_MISSING = object()


class NotFound(VmcorefsError):
    """No node at that path (ENOENT)."""


class Node:
    mode: int = FILE_MODE


class File(Node):
    """A read-only file. ``read`` raises :class:`FaultError` (absent or corrupt) where bytes
    cannot be read (EIO)."""

    mode = FILE_MODE
    #: Serve through the kernel's page cache (False: every read reaches us, short reads kept).
    direct_io = False

    def size(self) -> int:
        raise NotImplementedError

    def blocks(self) -> int:
        """``st_blocks``: 512-byte blocks of data the file holds (what ``du`` shows)."""
        return (self.size() + 511) // 512

    def readinto(self, offset: int, buffer: memoryview) -> int:
        """Copy the file's bytes at ``offset`` into ``buffer`` (up to its length): the count,
        0 at the end of the file. The FUSE reply is filled in place through it."""
        raise NotImplementedError

    def read(self, offset: int, size: int) -> bytes:
        """The bytes :meth:`readinto` copies, as a new bytes object."""
        return read_via(self.readinto, offset, size)

    def seek(self, offset: int, whence: int) -> int | None:
        """``lseek`` with ``SEEK_DATA`` (the first offset from ``offset`` on that holds data)
        or ``SEEK_HOLE`` (the first that does not, the size at the latest); None where there is
        none past ``offset`` (ENXIO, as for a sparse file). Here every byte is data; windows
        onto memory answer from the dump's map of what it holds."""
        size = self.size()
        if not 0 <= offset < size:
            return None
        return offset if whence == SEEK_DATA else size

    def open_direct_io(self) -> bool:
        """Whether this open should use ``direct_io`` (decided per open; see ``SymbolFile``)."""
        return self.direct_io

    def release(self) -> None:
        """An open of this file is closed (what was kept for its reads may go)."""

    def pinned(self) -> contextlib.AbstractContextManager:
        """Keep what this file reads from open for one whole request: a dump of a folder mount
        may be closed between two requests."""
        return contextlib.nullcontext()


class BytesFile(File):
    """A file whose whole content is computed once, on first use, and kept."""

    def __init__(self, compute: Callable[[], bytes | str]) -> None:
        self._compute = compute
        self._content: bytes | None = None
        self._lock = threading.Lock()

    def content(self) -> bytes:
        if self._content is None:
            with self._lock:
                if self._content is None:
                    try:
                        value = self._compute()
                    except NOT_AVAILABLE as exc:  # absent or corrupt memory: with its kind
                        value = f"unavailable: {why(exc)}\n"
                    # Names decoded from the dump keep their raw bytes as surrogates (kallsyms):
                    # encoded back the same way, the file holds the dump's exact bytes.
                    self._content = (
                        value.encode("utf-8", "surrogateescape")
                        if isinstance(value, str)
                        else bytes(value)
                    )
        return self._content

    def size(self) -> int:
        return len(self.content())

    def read(self, offset: int, size: int) -> bytes:
        return self.content()[offset : offset + size]

    def readinto(self, offset: int, buffer: memoryview) -> int:
        data = self.content()[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        return len(data)


class GrowingFile(BytesFile):
    """A :class:`BytesFile` computed again whenever ``version()`` changes (``summary``: its
    ``damage:`` line appears once a corrupt page is met, whatever was read before). Served
    with ``direct_io``, so that no reader gets an old copy from the page cache."""

    direct_io = True

    def __init__(self, compute: Callable[[], bytes | str], version: Callable[[], object]) -> None:
        super().__init__(compute)
        self._version = version
        self._seen: object = None

    def content(self) -> bytes:
        version = self._version()
        if version != self._seen:
            with self._lock:
                if version != self._seen:
                    self._content, self._seen = None, version
        return super().content()


def text(value: str) -> BytesFile:
    """A small constant text file."""
    return BytesFile(lambda: value)


class WindowFile(File):
    """A window onto an address space: file offset ``o`` is address ``base + o``.

    Served with ``direct_io`` so that a short read at absent memory reaches the reader (the page
    cache would pad it with zeros and hide the EIO that follows).
    """

    direct_io = True

    def __init__(
        self,
        space: AddressSpace,
        base: int,
        length: int,
        held: Callable[[], int] | None = None,
    ) -> None:
        self.space = space
        self.base = base
        self.length = length
        #: Bytes of the window the dump holds (``st_blocks``; ``phys``, ``kvirt``), when the
        #: size says nothing of it; None: the size (a symbol).
        self._held = held

    def size(self) -> int:
        return self.length

    def blocks(self) -> int:
        if self._held is None:
            return super().blocks()
        return (self._held() + 511) // 512

    def readinto(self, offset: int, buffer: memoryview) -> int:
        got = self.read_present(offset, buffer)
        if not got and offset < self.length and len(buffer):
            raise self.fault(offset)
        return got

    def read_present(self, offset: int, buffer: memoryview) -> int:
        """As :meth:`readinto`, but 0 also where the byte at ``offset`` is absent: no fault is
        built (asking why costs more than the read; the FUSE adapter asks only to log it)."""
        if offset >= self.length or not len(buffer):
            return 0
        if len(buffer) > self.length - offset:
            buffer = buffer[: self.length - offset]
        return self.space.readinto(self.base + offset, buffer)

    def fault(self, offset: int) -> FaultError:
        """Why the byte at ``offset`` cannot be read (absent or corrupt)."""
        return self.space.fault(self.base + offset)

    def seek(self, offset: int, whence: int) -> int | None:
        """From the dump's metadata and the page tables (no page is read): a page the dump
        says it holds is data even when it turns out corrupt (its read fails with EIO)."""
        if not 0 <= offset < self.length:
            return None
        start, end = self.base + offset, self.base + self.length
        if whence == SEEK_DATA:
            found = self.space.next_data(start, end)
            return None if found is None else found - self.base
        return self.space.next_hole(start, end) - self.base


class SymbolWindows:
    """What the ``sym/`` files of a dump share, so that no node need be kept per file (100k
    nodes held ~15 MiB after a ``grep -r``): one byte per file, whether its range is whole
    (learned at its first open), and the bytes an open read, kept for that open's reads until
    it is released (``recent``: an LRU bounded in bytes, for opens never released)."""

    UNKNOWN, WHOLE, PARTLY_ABSENT = 0, 1, 2

    def __init__(self, count: int) -> None:
        self.presence = bytearray(count)  #: per file key: UNKNOWN, WHOLE or PARTLY_ABSENT
        self.recent: LockedLRU[int, bytes] = LockedLRU(SYM_RECENT_BYTES, getsizeof=len)


class SymbolFile(WindowFile):
    """``sym/NAME``: a window onto ``kvirt`` at a symbol (see kernel/symbols.py for extents).

    Served through the page cache when its whole range is present (the dump never changes);
    opened with ``direct_io`` when part of it is absent, so that a read stops at the gap and
    the next one fails with EIO, as for ``kvirt``. The first open reads the range to decide;
    those bytes wait in ``shared.recent`` for the reads that follow the open. A node is made
    for each lookup: what it learns is kept by key in ``shared`` (:class:`SymbolWindows`).
    """

    direct_io = False

    def __init__(
        self, space: AddressSpace, base: int, length: int, key: int, shared: SymbolWindows
    ) -> None:
        super().__init__(space, base, length)
        self.key = key
        self.shared = shared

    def open_direct_io(self) -> bool:
        shared, key = self.shared, self.key
        state = shared.presence[key]
        if state == SymbolWindows.UNKNOWN:  # a benign race learns it twice
            try:
                data = self.space.read_exact(self.base, self.length)
            except FaultError:
                state = SymbolWindows.PARTLY_ABSENT
            else:
                shared.recent.put(key, data)
                state = SymbolWindows.WHOLE
            shared.presence[key] = state
        return state == SymbolWindows.PARTLY_ABSENT

    def readinto(self, offset: int, buffer: memoryview) -> int:
        data = self.shared.recent.get(self.key)
        if data is not None:
            piece = data[offset : offset + len(buffer)]
            buffer[: len(piece)] = piece
            return len(piece)
        return super().readinto(offset, buffer)

    def release(self) -> None:
        self.shared.recent.discard(self.key)


class LazyEntries(Mapping[str, Node]):
    """Directory entries whose nodes are made at each lookup: ``keys`` maps each name to what
    ``make`` needs. Listing a 100k-entry directory then costs no node and no I/O, and reading
    every file leaves none behind."""

    def __init__(self, keys: Mapping[str, object], make: Callable[[object], Node]) -> None:
        self._keys = keys
        self._make = make

    def __getitem__(self, name: str) -> Node:
        return self._make(self._keys[name])

    def get(self, name: str, default=None):
        """As ``Mapping.get``, without an exception per miss (FUSE looks names up a lot)."""
        key = self._keys.get(name, _MISSING)
        return default if key is _MISSING else self._make(key)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class Directory(Node):
    """A directory whose entries are built once, on first use."""

    mode = DIR_MODE

    def __init__(self, entries: Mapping[str, Node] | Callable[[], Mapping[str, Node]]) -> None:
        self._source = entries
        self._entries: Mapping[str, Node] | None = None
        self._lock = threading.Lock()

    def entries(self) -> Mapping[str, Node]:
        if self._entries is None:
            with self._lock:
                if self._entries is None:
                    src = self._source
                    try:
                        self._entries = src() if callable(src) else src
                    except NOT_AVAILABLE as exc:  # as a BytesFile says it
                        self._entries = {"unavailable": text(f"unavailable: {why(exc)}\n")}
        return self._entries


class Tree:
    """Path lookup over a root directory; ``check`` raises DumpError once the dump changed."""

    def __init__(self, root: Directory, check: Callable[[], None] | None = None) -> None:
        self.root = root
        self.check = check or (lambda: None)

    def lookup(self, path: str) -> Node:
        node: Node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not isinstance(node, Directory):
                raise NotFound(path)
            child = node.entries().get(part)
            if child is None:
                raise NotFound(path)
            node = child
        return node


# --- sections -------------------------------------------------------------------------------


def _section_info(dump) -> Directory:
    """``info/KEY`` for each VMCOREINFO key, and ``info/PAGE_SIZE``: the name users type for
    ``PAGESIZE`` (the kernel's key), unless the note has a ``PAGE_SIZE`` key of its own."""
    from .kernel.symbols import escape_file_name

    vi = dump.vmcoreinfo

    def entries() -> dict[str, Node]:
        files: dict[str, Node] = {escape_file_name(k): text(v + "\n") for k, v in vi.items()}
        if "PAGE_SIZE" not in files and "PAGESIZE" in files:
            files["PAGE_SIZE"] = files["PAGESIZE"]
        return files

    return Directory(entries)


def _section_sym(dump) -> Directory:
    """``sym/NAME``: the kernel's memory at each symbol (naming and sizes: kernel/symbols.py)."""

    def entries() -> Mapping[str, Node]:
        files = dump.symbol_files
        shared = SymbolWindows(files.key_count)

        def make(key: object) -> Node:
            assert isinstance(key, int)  # what files.entries maps each name to
            address, size = files.extent(key)
            return SymbolFile(dump.kvirt, address, size, key, shared)

        return LazyEntries(files.entries, make)

    return Directory(entries)


def _section_uts(dump) -> Directory:
    from .kernel.uts import UTS_FIELDS

    def field(name: str) -> BytesFile:
        return BytesFile(lambda: dump.uts.field(name) + b"\n")

    return Directory({name: field(name) for name in UTS_FIELDS})


def _section_mm(dump) -> Directory:
    def view(name: str) -> BytesFile:
        return BytesFile(lambda: getattr(dump.mm, name))

    return Directory({name: view(name) for name in ("usage", "vmalloc", "nodes", "buddyinfo")})


#: The body of ``README``: one entry per line of the tree, in tree order.
README_ENTRIES = """\
README       this text
vmcoreinfo   the VMCOREINFO note, exactly as in the dump
info/KEY     one file per VMCOREINFO key, named verbatim: its value, byte for byte;
             info/PAGE_SIZE is PAGESIZE under the name users type. A key that cannot be
             a file name is escaped: '%' '/' NUL as %25 %2F %00, '.' '..' as %2E %2E%2E,
             the empty key as % (sym/ names too)
summary      release, crash time, reason, CPUs, RAM, format, compression, dump level, paging,
             KASLR; how many tasks, modules and module symbols were listed, and why a list
             may be incomplete; truncated: and damage: when the dump file is cut short or
             holds corrupt pages
phys         physical memory: file offset = physical address
kvirt        kernel virtual memory: file offset = address - 2**63
             (= address & 0x7fffffffffffffff), e.g.
             dd if=kvirt bs=64 count=1 iflag=skip_bytes \\
                skip=$((0xffffffff81000000 & 0x7fffffffffffffff)) | hexdump -C
kallsyms     the symbol table in /proc/kallsyms format, sorted by address (the dump's own
             kallsyms, VMCOREINFO, --vmlinux, --system-map), then each module's symbols as
             the kernel lists them ("address type name\\t[module]")
sym/NAME     kernel memory at symbol NAME, modules' symbols included (NAME@ADDRESS when NAME
             has several addresses); size: the symbol's own, else up to the next symbol, at
             most 1 MiB; per-CPU symbols show CPU 0's copy
crash        what crashed: reason (the first line of the last panic or oops report in the
             log), cpu, pid, comm, task, then "stack:" and the crashing task's stack (as
             tasks/PID/stack); "unavailable: no crash: ..." for a dump of a running system
dmesg        the kernel log, as makedumpfile --dump-dmesg prints it
cpus/N/      regs (name value lines, pid, control registers, "crashed yes"), prstatus (the
             raw NT_PRSTATUS note), stack
btf          the kernel's own BTF blob (__start_BTF..__stop_BTF):
             bpftool btf dump file btf format c
tasks/NAME/  comm state ppid tgid cpu task stack of every task, from BTF (no vmlinux);
             NAME is the pid; a pid that several tasks share is PID@cpuN for each
             CPU's idle task (pid 0) and PID@ADDRESS (task_struct, 16 hex digits) else
ps           PID PPID CPU TASK ST COMM; '>' marks the task running on each CPU
modules      as /proc/modules: name size refcount users state 0xbase
stack        (tasks/NAME/, cpus/N/) one frame a line, innermost first, unwound with the
             dump's ORC tables: function+0xOFF/0xSIZE ([module]); a user-space pc ends it
uts/         sysname nodename release version machine domainname, from init_uts_ns
mm/          usage (page classes as makedumpfile counts them), vmalloc, nodes, buddyinfo

Absent memory (holes, pages the dump left out, unmapped addresses) reads as an I/O error
(EIO); a read that reaches it stops short first. --zero-fill reads the absent bytes of
phys (only) as zeros instead. Corrupt memory (pages that do not decompress, data past the end of a
truncated file) reads as EIO too, and summary says so. A file that this dump cannot
support reads "unavailable: <reason>". vmcorefs --debug logs why each read failed.
"""


def readme_text(dump) -> str:
    """The ``README`` at the top of the mount: this dump, then what each entry is."""
    info = dump.source.info
    return (
        "vmcorefs: a Linux kernel crash dump as files (see vmcorefs(1)).\n"
        f"dump: {', '.join(dump.source.paths)}\n"
        f"format: {info.format}, compression: {info.compression}\n"
        f"release: {dump.vmcoreinfo.osrelease or 'unknown'}\n"
        "\n" + README_ENTRIES
    )


def _cpu_entries(dump, cpu) -> dict[str, Node]:
    """The files of ``cpus/N/`` for one CPU (a ``kernel/cpus.py`` CpuState); add more here."""
    from .kernel.cpus import regs_text

    return {
        "regs": BytesFile(lambda: regs_text(cpu, crashed=dump.panic_cpu == cpu.index)),
        "prstatus": BytesFile(lambda: cpu.prstatus),
        "stack": BytesFile(lambda: dump.stacks.cpu_stack(cpu.index)),
    }


def _section_cpus(dump) -> Directory:
    return Directory(lambda: {str(c.index): Directory(_cpu_entries(dump, c)) for c in dump.cpus})


class LazyWindowFile(File):
    """A window onto an address space whose bounds are found on first use (``bounds()``);
    one line ``unavailable: <reason>`` when they cannot be."""

    def __init__(self, space: AddressSpace, bounds: Callable[[], tuple[int, int]]) -> None:
        self._space = space
        self._bounds = bounds
        self._file: File | None = None
        self._complete: bool | None = None
        self._lock = threading.Lock()

    def _resolve(self) -> File:
        if self._file is None:
            with self._lock:
                if self._file is None:
                    try:
                        start, stop = self._bounds()
                        self._file = WindowFile(self._space, start, stop - start)
                    except NOT_AVAILABLE as exc:  # as a BytesFile says it
                        self._file = text(f"unavailable: {why(exc)}\n")
        return self._file

    def size(self) -> int:
        return self._resolve().size()

    def read(self, offset: int, size: int) -> bytes:
        return self._resolve().read(offset, size)

    def readinto(self, offset: int, buffer: memoryview) -> int:
        return self._resolve().readinto(offset, buffer)

    def seek(self, offset: int, whence: int) -> int | None:
        return self._resolve().seek(offset, whence)

    def open_direct_io(self) -> bool:
        """Through the page cache when every byte is present (checked once), else direct_io
        so that the short read and the EIO at the gap reach the reader (as ``sym/``)."""
        f = self._resolve()
        if not isinstance(f, WindowFile):
            return f.open_direct_io()
        if self._complete is None:
            done, pos = True, 0
            while pos < f.length:  # bounded: advances by what each read returns, or stops
                got = len(f.space.read(f.base + pos, min(1 << 20, f.length - pos)))
                if not got:
                    done = False
                    break
                pos += got
            self._complete = done
        return not self._complete


def _task_entries(dump, task) -> dict[str, Node]:
    """The files of ``tasks/NAME/`` (a ``kernel/tasks.py`` Task)."""
    from .kernel.tasks import ppid_text

    return {
        "comm": BytesFile(lambda: task.comm + b"\n"),
        "state": text(task.state + "\n"),
        "ppid": BytesFile(lambda: ppid_text(task)),
        "tgid": text(f"{task.tgid}\n"),
        "cpu": text(f"{task.cpu}\n"),
        "task": text(f"0x{task.address:016x}\n"),
        "stack": BytesFile(lambda: dump.stacks.task_stack(task)),
    }


def _section_tasks(dump) -> Directory:
    def task_dir(task) -> Directory:
        return Directory(lambda: _task_entries(dump, task))

    return Directory(lambda: {t.name: task_dir(t) for t in dump.tasks.tasks})


def _section_btf_tasks(dump) -> dict[str, Node]:
    """``btf``, ``tasks/``, ``ps``, ``modules``: the kernel's types and what they reveal."""
    from .kernel.tasks import ps_text

    return {
        "btf": LazyWindowFile(dump.kvirt, lambda: dump.btf_bounds),
        "tasks": _section_tasks(dump),
        "ps": BytesFile(lambda: ps_text(dump.tasks)),
        "modules": BytesFile(lambda: dump.modules.proc_modules()),
    }


def _phys_space(dump) -> AddressSpace:
    """What the ``phys`` file reads: the dump's physical memory, with ``--zero-fill`` its
    absent bytes as zeros (the one place that option applies)."""
    return ZeroFilled(dump.phys) if dump.options.zero_fill else dump.phys


def build_tree(dump) -> Tree:
    """The whole mounted tree of ``dump`` (a :class:`~vmcorefs.kernel.dump.Dump`)."""
    entries: dict[str, Node] = {
        "README": BytesFile(lambda: readme_text(dump)),
        "vmcoreinfo": BytesFile(lambda: dump.vmcoreinfo.raw),
        "info": _section_info(dump),
        # st_blocks: what the dump holds of phys; 0 for kvirt (it maps phys many times over,
        # and counting what it maps would walk every page table).
        "phys": WindowFile(_phys_space(dump), 0, dump.phys.size, held=dump.phys.held_bytes),
        "kvirt": WindowFile(dump.kvirt, KVIRT_BASE, KVIRT_BASE - 1, held=lambda: 0),
        "uts": _section_uts(dump),
        "mm": _section_mm(dump),
        "summary": GrowingFile(dump.summary, lambda: dump.source.damage.version),
        "crash": BytesFile(dump.crash),
        "dmesg": BytesFile(dump.dmesg),
        "cpus": _section_cpus(dump),
        "kallsyms": BytesFile(dump.kallsyms_text),
        "sym": _section_sym(dump),
        **_section_btf_tasks(dump),
    }
    return Tree(Directory(entries), getattr(dump, "check", None))
