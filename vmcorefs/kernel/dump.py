"""The library entry point: :func:`open_dump` → :class:`Dump`, everything below FUSE.

A ``Dump`` ties a container (``dumpfile``), its VMCOREINFO and the two address spaces
(``memory``) together, and builds each kernel view lazily, once, on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..dumpfile.detect import open_source
from ..dumpfile.source import PhysicalSource
from ..errors import NOT_AVAILABLE, DumpError, FaultError, Unavailable, VmcorefsError, why
from ..memory.physical import PhysicalMemory
from ..memory.x86_64 import KernelVirtualMemory
from ..vmcoreinfo import VmcoreInfo
from .lazy import lazy

if TYPE_CHECKING:  # imported where used: mounting stays fast (the table is built lazily)
    from .symbols import SymbolSource, SymbolTable


@dataclass
class DumpOptions:
    #: ``--zero-fill``: the ``phys`` file reads absent bytes as zeros (nothing else does).
    zero_fill: bool = False
    cache_size_mib: int = 64
    vmlinux: str | None = None
    system_map: str | None = None


class Dump:
    """An opened crash dump: ``vmcoreinfo``, ``phys``, ``kvirt`` and the kernel views."""

    def __init__(self, source: PhysicalSource, options: DumpOptions | None = None) -> None:
        self.source = source
        self.options = options or DumpOptions()
        raw = source.vmcoreinfo_raw()
        if not raw:
            raise DumpError(
                source.paths[0],
                "no VMCOREINFO note: not a Linux kernel crash dump this tool can read",
            )
        try:
            self.vmcoreinfo = VmcoreInfo(raw)
        except Unavailable as exc:  # a note nothing can be built on
            raise DumpError(source.paths[0], exc.reason) from None
        #: Physical memory exactly as the dump holds it: what every kernel view reads
        #: (``--zero-fill`` is only for the ``phys`` file: ``tree.py``).
        self.phys = PhysicalMemory(source, cache_size_mib=self.options.cache_size_mib)
        try:
            self.kvirt = KernelVirtualMemory(
                self.phys, self.vmcoreinfo, cache_size_mib=self.options.cache_size_mib
            )
        except Unavailable as exc:  # no root-table key, or a malformed one: no address space
            raise DumpError(
                source.paths[0], f"cannot translate kernel addresses: {exc.reason}"
            ) from None
        #: Symbols from --vmlinux / --system-map, checked against the dump (kernel/symfiles.py)
        #: now, so that a file that does not belong to the dump is refused before mounting.
        self.user_symbols: list[SymbolSource] = []
        if self.options.vmlinux or self.options.system_map:
            from .symfiles import load_user_symbols

            self.user_symbols = load_user_symbols(
                self.options.vmlinux, self.options.system_map, self.kvirt, self.vmcoreinfo
            )

    def close(self) -> None:
        self.source.close()

    def warm(self) -> None:
        """Load what a session reads first, once, before mounting: the page tables down to
        the kernel image's first page and the dump's index there (every view reads through
        them). A fresh process would otherwise charge that, and the one-time cost of running
        the code that does it (~0.5 ms), to its first request: the first ``lseek`` on
        ``kvirt`` of the 1 TiB synthetic dump took 0.8-1 ms, ~0.15 ms after this
        (``benchmarks/bench_kdump.py``). One page: one walk, whatever the dump holds there. A
        dump too damaged for it mounts as before: its readers are told."""
        from .kimage import PAGE_SIZE, image_start

        start = image_start(self.vmcoreinfo)
        try:
            self.kvirt.next_data(start, start + PAGE_SIZE)
        except VmcorefsError:
            pass

    def check(self) -> None:
        """DumpError when the dump file changed since it was opened (truncated, overwritten)."""
        self.source.check()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Kernel views, each built on first use -----------------------------------------------
    # (symbols, dmesg, cpus, uts, mm, btf, tasks, modules are added here by their modules.)

    @lazy
    def symbols(self) -> SymbolTable:
        """The merged symbol table (kernel/symbols.py), decoded once, on first use."""
        from .symbols import build_symbol_table

        return build_symbol_table(self.kvirt, self.vmcoreinfo, self.user_symbols)

    @lazy
    def symbol_files(self):
        """``sym/``: the core table and the modules' symbols (``symbols.SymbolFiles``)."""
        from .symbols import SymbolFiles

        table = self.symbols
        try:
            modules = self.modules
            return SymbolFiles(table, modules.symbol_files(), modules.symbol_problems())
        except NOT_AVAILABLE as exc:
            return SymbolFiles(table, (), [f"unavailable: {why(exc)}"])

    def kallsyms_text(self) -> str:
        """``kallsyms``: the core's symbols, then the modules' as /proc/kallsyms lists them
        (the core's alone when the module list cannot be read: ``summary`` says why)."""
        core = self.symbols.kallsyms_text()
        try:
            return core + self.modules.kallsyms_text()
        except (Unavailable, FaultError):
            return core

    @lazy
    def uts(self):
        """``init_uts_ns.name``: the six uname strings (:mod:`.uts`)."""
        from .uts import read_utsname

        return read_utsname(self.vmcoreinfo, self.kvirt, lambda: self.btf)

    @lazy
    def mm(self):
        """The ``mm/`` views: usage, vmalloc, nodes, buddyinfo (:mod:`.mm`)."""
        from .mm import MemoryViews

        return MemoryViews(self)

    @lazy
    def kernel_log(self) -> bytes:
        """The kernel log as ``makedumpfile --dump-dmesg`` prints it (``kernel/printk.py``)."""
        from .printk import read_dmesg

        return read_dmesg(self.kvirt, self.vmcoreinfo)

    def dmesg(self) -> bytes:
        """The kernel log (computed once); Unavailable (with the fault) when it cannot be read."""
        return self.kernel_log

    @lazy
    def cpus(self) -> list:
        """Each CPU's saved registers (``kernel/cpus.py`` CpuState), in note order."""
        from .cpus import cpu_states

        return cpu_states(self.source.notes())

    @lazy
    def panic_cpu(self) -> int | None:
        """The kernel's ``panic_cpu`` (-1: no CPU panicked), None when the dump does not tell."""
        from .cpus import read_panic_cpu

        try:
            address = self.symbols.get("panic_cpu")
        except (Unavailable, FaultError):  # no symbol table at all
            address = None
        return read_panic_cpu(self.kvirt, address)

    def _symbol_cause(self, exc: Unavailable) -> Unavailable:
        """``exc`` (a view that misses a symbol) with the cause when the dump's kallsyms
        tables could not be read: "no init_task" alone would hide why."""
        try:
            missing = self.symbols.kallsyms_unavailable
        except (Unavailable, FaultError):
            return exc
        if missing and "symbol" in exc.reason and missing not in exc.reason:
            return Unavailable(f"{exc.reason} (kallsyms: {missing})")
        return exc

    @lazy
    def btf_bounds(self) -> tuple[int, int]:
        """``(__start_BTF, __stop_BTF)``: where the kernel's own BTF blob lies (found by its
        header where the symbols do not say)."""
        from .btf import kernel_btf_bounds

        try:
            return kernel_btf_bounds(self.kvirt, self.vmcoreinfo, self.symbols)
        except Unavailable as exc:
            raise self._symbol_cause(exc) from None

    @lazy
    def btf(self):
        """The kernel's own types (``kernel/btf.py``), parsed once, on first use."""
        from .btf import load_btf

        return load_btf(self.kvirt, self.symbols, self.btf_bounds)

    @lazy
    def modules(self):
        """The loaded modules (``kernel/modules.py`` ModuleList)."""
        from .modules import ModuleList

        try:
            return ModuleList(self.kvirt, self.symbols, self.btf)
        except Unavailable as exc:
            raise self._symbol_cause(exc) from None

    @lazy
    def tasks(self):
        """Every task, idle tasks included (``kernel/tasks.py`` TaskList)."""
        from .tasks import build_task_list

        try:
            return build_task_list(self.kvirt, self.symbols, self.btf)
        except Unavailable as exc:
            raise self._symbol_cause(exc) from None

    @lazy
    def stacks(self):
        """Stacks of tasks and CPUs (``kernel/tasks.py`` Stacks), unwound as the kernel was
        built to: with its ORC tables (``kernel/unwind.py``), else along frame pointers
        (``kernel/unwind_frame.py``; also without BTF: CPU stacks then, no tasks)."""
        from .tasks import Stacks, thread_size
        from .unwind import Symbolizer, Unwinder
        from .unwind_frame import FramePointerUnwinder, frame_layouts, kernel_code, unwinder_kind

        try:
            modules = self.modules
            module_orc, module_symbol = modules.orc_table, modules.symbol
            module_code = modules.module_at, modules.symbol
        except Unavailable:
            module_orc = module_symbol = module_code = None
        symbols = self.symbols
        if unwinder_kind(symbols) == "frame pointer":
            try:
                btf = self.btf
            except Unavailable:  # pt_regs is x86_64's; without BTF there are no tasks
                btf = None
            regs, regs_size, inactive = frame_layouts(btf)
            fork_returns = frozenset(
                a for a in (symbols.get("ret_from_fork"), symbols.get("ret_from_fork_asm")) if a
            )
            unwinder = FramePointerUnwinder(
                self.kvirt, regs=regs, pt_regs_size=regs_size, inactive=inactive,
                code=kernel_code(symbols, self.vmcoreinfo, module_code),
                thread_size=thread_size(symbols), fork_returns=fork_returns,
            )  # fmt: skip
        else:
            unwinder = Unwinder(self.kvirt, symbols, self.btf, module_orc)
        symbolizer = Symbolizer(symbols, module_symbol)

        def tasks():
            return self.tasks

        return Stacks(tasks, unwinder, symbolizer, self.cpu_registers, thread_size(symbols))

    def cpu_registers(self, index: int) -> dict[str, int] | None:
        """CPU ``index``'s registers by ``user_regs_struct`` name, or None."""
        try:
            cpus = self.cpus
        except Unavailable:
            return None
        if 0 <= index < len(cpus) and cpus[index].regs:
            return cpus[index].regs
        return None

    def crash(self) -> str:
        """The ``crash`` file: what crashed, where, and its stack (``kernel/crash.py``)."""
        from .crash import crash_text

        return crash_text(self)

    def summary(self) -> str:
        """The ``summary`` text (``kernel/summary.py``)."""
        from .summary import summary_text

        return summary_text(self)


def open_dump(paths: Sequence[str] | str, **options) -> Dump:
    """Open a dump (one file, or every part of a split dump) as a :class:`Dump`.

    Raises :class:`~vmcorefs.errors.DumpError` for anything that makes the dump unusable.
    """
    if isinstance(paths, str):
        paths = [paths]
    opts = DumpOptions(**options)
    source = open_source(list(paths))
    try:
        return Dump(source, opts)
    except BaseException:
        source.close()
        raise
