"""Loaded modules (the kernel's ``modules`` list), ``/proc/modules`` lines, and what the
unwinder, ``kallsyms`` and ``sym/`` need of them: their ORC tables and their own symbol tables
(decoded by :mod:`.modsyms`).

``/proc/modules`` is printed as ``kernel/module/procfs.c`` ``m_show()`` prints it (Linux 6.1):
``name size refcount users state 0xbase[ (taints)]`` with size = init + core layout sizes
(core only once init is freed), refcount = ``refcnt - MODULE_REF_BASE``, users = the modules
on ``source_list`` each followed by ``,`` (``[permanent],`` for a module without an exit
function), else ``-``. Layouts come from BTF: ``core_layout`` (until Linux 6.3) or ``mem[]``
(6.4+).

The ``modules`` list and each module's ``source_list`` are walked by :mod:`.lists`: a walk cut
short keeps what it found, and its reason is one of :attr:`ModuleList.problems`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import FaultError, Unavailable
from .btf import Btf, BtfError
from .lists import list_for_each_entry
from .modsyms import (
    MAX_ALL_MODULE_SYMBOLS,
    MAX_MODULE_SYMBOLS,
    Exports,
    ModKallsymsLayout,
    ModSymtab,
    ModuleSymbolFile,
    kallsyms_lines,
    read_num_symtab,
    read_symtab,
    symbol_files,
)
from .unwind import OrcLayout, OrcTable

#: kernel/module/main.c: the reference a live module holds on itself.
MODULE_REF_BASE = 1
#: include/linux/module.h MODULE_NAME_LEN on 64-bit (the BTF array size wins when present).
MODULE_NAME_LEN = 56
#: Modules at most (a walk of the list stops there).
MAX_MODULES = 65536
#: ORC entries per module at most.
MAX_MODULE_ORCS = 1 << 22


@dataclass
class Module:
    address: int
    name: str
    state: int
    base: int
    size: int  # the size /proc/modules prints
    core_size: int
    text_size: int
    refcount: int | None
    users: list[str]
    permanent: bool
    taints: int
    ranges: list[tuple[int, int]]
    orc: tuple[int, int, int] | None  # (orc_unwind_ip, orc_unwind, num_orcs)
    raw_name: bytes = b""  # as strscpy(MODULE_NAME_LEN) copies it (kallsyms prints this)
    exports: tuple[int, int] | None = None  # (syms, num_syms)
    percpu: tuple[int, int] | None = None  # (percpu, percpu_size)
    _symbols: list[tuple[int, str]] | None = field(default=None, repr=False)
    _symtab: ModSymtab | None = field(default=None, repr=False)
    _exports: Exports | None = field(default=None, repr=False)

    def contains(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.ranges)


class ModuleList:
    """The ``modules`` list, read once."""

    def __init__(self, kvirt, symbols, btf: Btf) -> None:
        self.kvirt, self.btf = kvirt, btf
        self.problems: list[str] = []
        head = symbols.get("modules")
        if head is None:
            raise Unavailable("the symbol table has no modules list")
        try:
            self._layout(btf)
        except BtfError as exc:
            raise Unavailable(f"BTF lacks the module layout: {exc}") from None
        self.taint_flags = symbols.get("taint_flags")
        self.modules: list[Module] = []
        # The list's own problems first (they cut it short), then each module's.
        entries = list_for_each_entry(kvirt, head, self.off_list, "modules", MAX_MODULES,
                                      problems=self.problems)  # fmt: skip
        module_problems: list[str] = []
        for addr in entries:
            users_problems: list[str] = []
            try:
                self.modules.append(self._read(addr, users_problems))
            except FaultError as exc:
                module_problems.append(f"module {addr:#x} is not in the dump ({exc})")
            else:
                module_problems += users_problems
        self.problems += module_problems
        self._orc: dict[int, OrcTable | None] = {}
        self._orc_layout: OrcLayout | None = None
        self._lock = threading.Lock()
        self._budget: dict[int, tuple[int, int]] | None = None
        self._budget_problems: list[str] = []
        self.percpu_offset0: int | None = getattr(symbols, "percpu_offset0", None)

    # -- layout --------------------------------------------------------------------------
    def _layout(self, btf: Btf) -> None:
        mod = btf.find("struct module")
        off = btf.offsetof
        self.off_list = off(mod, "list")
        self.off_name = off(mod, "name")
        self.name_len = btf.member_size(mod, "name") or MODULE_NAME_LEN
        self.off_state = off(mod, "state")
        self.state_size = btf.member_size(mod, "state")
        states = {v.name: v.value for v in btf.find("enum module_state").values}
        self.STATE_LIVE = states["MODULE_STATE_LIVE"]
        self.STATE_COMING = states["MODULE_STATE_COMING"]
        self.STATE_GOING = states["MODULE_STATE_GOING"]
        self.STATE_UNFORMED = states["MODULE_STATE_UNFORMED"]
        if btf.has_member(mod, "core_layout"):  # until Linux 6.3
            self.layouts = None
            self.off_core = off(mod, "core_layout")
            self.off_init = off(mod, "init_layout")
            self.off_base = off("struct module_layout", "base")
            self.off_size = off("struct module_layout", "size")
            self.off_text_size = off("struct module_layout", "text_size")
        else:  # Linux 6.4+: struct module_memory mem[MOD_MEM_NUM_TYPES], MOD_TEXT first
            arr = btf.resolve(btf.member(mod, "mem").type_id)
            self.layouts = arr.nelems
            self.off_mem = off(mod, "mem")
            self.mem_size = btf.sizeof(arr.elem_type)
            self.off_base = off("struct module_memory", "base")
            self.off_size = off("struct module_memory", "size")
        self.off_refcnt = off(mod, "refcnt") if btf.has_member(mod, "refcnt") else None
        self.off_source_list = (
            off(mod, "source_list") if btf.has_member(mod, "source_list") else None
        )
        if self.off_source_list is not None:
            self.use_source_list = off("struct module_use", "source_list")
            self.use_source = off("struct module_use", "source")
        self.off_init_fn = off(mod, "init")
        self.off_exit_fn = off(mod, "exit") if btf.has_member(mod, "exit") else None
        self.off_taints = off(mod, "taints")
        self.off_orc = None
        if btf.has_member(mod, "arch.orc_unwind_ip"):
            self.off_orc = (
                off(mod, "arch.orc_unwind_ip"),
                off(mod, "arch.orc_unwind"),
                off(mod, "arch.num_orcs"),
            )
        self.ks_layout = ModKallsymsLayout.from_btf(btf)
        if btf.has_member("struct taint_flag", "c_true"):
            tf = btf.find("struct taint_flag")
            self.taint_size = btf.sizeof(tf)
            self.taint_c_true = off(tf, "c_true")
            self.taint_module = off(tf, "module")
        else:
            self.taint_size = 0

    # -- reading -------------------------------------------------------------------------
    def _read(self, addr: int, problems: list[str]) -> Module:
        """The module at ``addr``; where its users list stops short, why, in ``problems``."""
        kv = self.kvirt
        name = kv.read_exact(addr + self.off_name, self.name_len).split(b"\0", 1)[0]
        state = int.from_bytes(kv.read_exact(addr + self.off_state, self.state_size), "little")
        ranges: list[tuple[int, int]] = []
        if self.layouts is None:
            base = kv.u64(addr + self.off_core + self.off_base)
            core = kv.u32(addr + self.off_core + self.off_size)
            text = kv.u32(addr + self.off_core + self.off_text_size)
            init_base = kv.u64(addr + self.off_init + self.off_base)
            init = kv.u32(addr + self.off_init + self.off_size)
            size = core + init
            ranges.append((base, base + core))
            if init_base and init:
                ranges.append((init_base, init_base + init))
        else:
            size = 0
            base = kv.u64(addr + self.off_mem + self.off_base)
            core = kv.u32(addr + self.off_mem + self.off_size)
            text = core
            for i in range(self.layouts):
                at = addr + self.off_mem + i * self.mem_size
                b, s = kv.u64(at + self.off_base), kv.u32(at + self.off_size)
                size += s
                if b and s:
                    ranges.append((b, b + s))
        refcount = None
        if self.off_refcnt is not None:
            refcount = kv.s32(addr + self.off_refcnt) - MODULE_REF_BASE
        users: list[str] = []
        if self.off_source_list is not None:
            users = self._users(addr, name.decode("utf-8", "replace"), problems)
        permanent = False
        if self.off_exit_fn is not None:
            permanent = bool(kv.u64(addr + self.off_init_fn)) and not kv.u64(
                addr + self.off_exit_fn
            )
        orc = None
        if self.off_orc is not None:
            ip, table, num = self.off_orc
            orc = (kv.u64(addr + ip), kv.u64(addr + table), kv.u32(addr + num))
        exports = percpu = None
        lay = self.ks_layout
        if lay is not None:
            if lay.syms is not None and lay.num_syms is not None:
                exports = (kv.u64(addr + lay.syms), kv.u32(addr + lay.num_syms))
            if lay.percpu is not None and lay.percpu_size is not None:
                percpu = (kv.u64(addr + lay.percpu), kv.u32(addr + lay.percpu_size))
        return Module(
            address=addr,
            name=name.decode("utf-8", "replace"),
            state=state,
            base=base,
            size=size,
            core_size=core,
            text_size=text,
            refcount=refcount,
            users=users,
            permanent=permanent,
            taints=kv.u64(addr + self.off_taints),
            ranges=ranges,
            orc=orc,
            raw_name=name[: self.name_len - 1],
            exports=exports,
            percpu=percpu,
        )

    def _users(self, addr: int, name: str, problems: list[str]) -> list[str]:
        """The modules on ``source_list`` (each ``struct module_use``'s ``source``)."""
        what = f"{name}.source_list"
        users: list[str] = []
        off_source_list = self.off_source_list
        assert off_source_list is not None  # called only where the layout has the list
        try:
            uses = list_for_each_entry(self.kvirt, addr + off_source_list,
                                       self.use_source_list, what, MAX_MODULES,
                                       problems=problems)  # fmt: skip
        except Unavailable as exc:
            problems.append(exc.reason)
            return users
        for use in uses:
            try:
                source = self.kvirt.u64(use + self.use_source)
                raw = self.kvirt.read_exact(source + self.off_name, self.name_len)
            except FaultError as exc:
                problems.append(f"{what}: the user at {use:#x} is not in the dump ({exc})")
                continue
            users.append(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        return users

    def _taint_chars(self, taints: int) -> str:
        """``module_flags_taint()``: ``c_true`` of each set bit that ``taint_flags[]`` marks as
        a module taint (the table is read from the dump)."""
        out = []
        if not taints or self.taint_flags is None or not self.taint_size:
            return ""
        for bit in range(64):
            if not taints >> bit & 1:
                continue
            try:
                raw = self.kvirt.read_exact(self.taint_flags + bit * self.taint_size,
                                            self.taint_size)  # fmt: skip
            except FaultError:
                continue
            if raw[self.taint_module]:
                out.append(chr(raw[self.taint_c_true]))
        return "".join(out)

    # -- /proc/modules ---------------------------------------------------------------------
    def proc_modules(self) -> str:
        lines = []
        for m in self.modules:
            if m.state == self.STATE_UNFORMED:
                continue
            if m.refcount is None:
                unload = " - -"
            else:
                users = "".join(f"{u}," for u in m.users)
                if m.permanent:
                    users += "[permanent],"
                unload = f" {m.refcount} {users or '-'}"
            state = (
                "Unloading"
                if m.state == self.STATE_GOING
                else "Loading"
                if m.state == self.STATE_COMING
                else "Live"
            )
            flags = ""
            if m.taints or m.state in (self.STATE_GOING, self.STATE_COMING):
                flags = self._taint_chars(m.taints)
                flags += "-" if m.state == self.STATE_GOING else ""
                flags += "+" if m.state == self.STATE_COMING else ""
                flags = f" ({flags})"
            lines.append(f"{m.name} {m.size}{unload} {state} 0x{m.base:016x}{flags}\n")
        return "".join(lines)

    # -- for the unwinder ------------------------------------------------------------------
    def module_at(self, addr: int) -> Module | None:
        for m in self.modules:
            if m.contains(addr):
                return m
        return None

    def orc_table(self, addr: int) -> OrcTable | None:
        """The ORC table of the module holding ``addr`` (``orc_module_find``)."""
        m = self.module_at(addr)
        if m is None or m.orc is None:
            return None
        if m.address not in self._orc:
            table = None
            ip, orc, num = m.orc
            if ip and orc and 0 < num <= MAX_MODULE_ORCS:
                try:
                    if self._orc_layout is None:
                        self._orc_layout = OrcLayout(self.btf)
                    table = OrcTable(self.kvirt, self._orc_layout, ip, orc, num, m.name)
                except Unavailable:
                    table = None
            with self._lock:
                self._orc[m.address] = table
        return self._orc[m.address]

    # -- module symbols (kernel/modsyms.py) ---------------------------------------------------
    def _symtab_budget(self) -> dict[int, tuple[int, int]]:
        """Module address -> (``mod->kallsyms``, how many of its entries to read): every
        module's ``num_symtab``, capped a module and, in list order, in all (so that what one
        module shows never depends on which was read first)."""
        with self._lock:
            if self._budget is None:
                budget: dict[int, tuple[int, int]] = {}
                left = MAX_ALL_MODULE_SYMBOLS
                lay = self.ks_layout
                for m in self.modules:
                    if lay is None or m.state == self.STATE_UNFORMED:
                        continue
                    try:
                        ks, num = read_num_symtab(self.kvirt, lay, m.address)
                    except FaultError as exc:
                        self._budget_problems.append(
                            f"{m.name}: its struct mod_kallsyms is not in the dump ({exc})"
                        )
                        continue
                    if num > MAX_MODULE_SYMBOLS:
                        self._budget_problems.append(
                            f"{m.name}: num_symtab {num} is more than {MAX_MODULE_SYMBOLS}: "
                            "only the first are shown"
                        )
                        num = MAX_MODULE_SYMBOLS
                    if num > left:
                        self._budget_problems.append(
                            f"{m.name}: the modules have more than {MAX_ALL_MODULE_SYMBOLS} "
                            f"symbols in all: {num - left} of its {num} left out"
                        )
                        num = left
                    left -= num
                    budget[m.address] = (ks, num)
                self._budget = budget
            return self._budget

    def symtab(self, m: Module) -> ModSymtab:
        """The module's own kallsyms, decoded once (entries with a name, in table order)."""
        if m._symtab is None:
            ks, num = self._symtab_budget().get(m.address, (0, 0))
            table = ModSymtab()
            if self.ks_layout is not None:
                table = read_symtab(self.kvirt, self.ks_layout, ks, num, m.name)
            with self._lock:
                if m._symtab is None:
                    m._symtab = table
        return m._symtab

    def _exports(self, m: Module) -> Exports | None:
        if m._exports is None and m.exports is not None and self.ks_layout is not None:
            syms, num = m.exports
            if syms and 0 < num <= MAX_MODULE_SYMBOLS:
                m._exports = Exports(self.kvirt, self.ks_layout, syms, num)
        return m._exports

    def kallsyms_text(self) -> str:
        """Every module's lines of ``/proc/kallsyms``, in the kernel's order."""
        lines: list[str] = []
        for m in self.modules:
            if m.state == self.STATE_UNFORMED:
                continue
            lines += kallsyms_lines(m.raw_name, self.symtab(m), self._exports(m))
        return "".join(lines)

    def symbol_files(self) -> list[ModuleSymbolFile]:
        """Every module's symbols for ``sym/``, in the kernel's order."""
        out: list[ModuleSymbolFile] = []
        for m in self.modules:
            if m.state == self.STATE_UNFORMED:
                continue
            files, dropped = symbol_files(
                m.name, self.symtab(m), m.ranges, m.percpu, self.percpu_offset0
            )
            out += files
            if dropped:
                with self._lock:
                    note = (
                        f"{m.name}: {dropped} per-CPU symbols left out of sym/ "
                        "(__per_cpu_offset[0] is unknown)"
                    )
                    if note not in self._budget_problems:
                        self._budget_problems.append(note)
        return out

    def symbol_problems(self) -> list[str]:
        """Why module symbols may be missing: tables, names, exports the dump lacks."""
        self._symtab_budget()
        out = list(self._budget_problems)
        for m in self.modules:
            if m._symtab is not None:
                out += m._symtab.problems
            if m._exports is not None and m._exports.problem:
                out.append(f"{m.name}: {m._exports.problem}")
        return out

    def _module_symbols(self, m: Module) -> list[tuple[int, str]]:
        """``find_kallsyms_symbol()``'s candidates: named, defined, not mapping symbols."""
        if m._symbols is None:
            syms = [
                (s.value, s.text)
                for s in self.symtab(m).symbols
                # ELF symbols start at 1; SHN_UNDEF, and mapping symbols ($x, .L...), skipped
                if s.index and s.shndx and m.contains(s.value)
                and not s.name.startswith((b"$", b".L"))
            ]  # fmt: skip
            syms.sort()
            with self._lock:
                m._symbols = syms
        return m._symbols

    def symbol(self, addr: int) -> tuple[str, int, int, str] | None:
        """``(name, offset, size, module)`` as ``find_kallsyms_symbol()`` computes them: the
        closest symbol at or below ``addr``, size up to the next symbol or the text end."""
        m = self.module_at(addr)
        if m is None:
            return None
        best: tuple[int, str] | None = None
        nextval = None
        for lo, hi in m.ranges:
            if lo <= addr < hi:
                nextval = lo + m.text_size if lo == m.base else hi
        for value, name in self._module_symbols(m):  # sorted by value
            if value <= addr:
                if best is None or value > best[0]:
                    best = (value, name)
            else:
                if nextval is None or value < nextval:
                    nextval = value
                break
        if best is None:
            return None
        end = nextval if nextval is not None and nextval > best[0] else addr + 1
        return best[1], addr - best[0], end - best[0], m.name
