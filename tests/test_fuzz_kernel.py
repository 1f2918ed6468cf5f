"""Fuzzing the kernel structures that the views walk: page tables, struct pages and the lists
of mm/, the printk ring, kallsyms tables (through a whole dump and its tree), and BTF, the task
list, ORC unwinding and module symbol tables (through their modules, on the test kernels of
test_btf/test_tasks/test_unwind/modbuilder).

Pointers are the dangerous values in kernel memory: besides bit flips and random bytes, the
mutations write pointers into the structures themselves (loops), to unmapped or non-canonical
addresses, and the edges of the integer types. Every walk must stay bounded and end in data,
EIO or ``unavailable: ...``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzzing as fz
from tests.elfbuilder import START_KERNEL_map
from tests.fuzzing import STATS
from vmcorefs.errors import FaultError, Unavailable
from vmcorefs.kernel import btf as B
from vmcorefs.kernel import unwind as U

pytestmark = pytest.mark.fuzz
STRUCTURES = ["page tables", "struct pages", "uts, nodes, vmap areas", "printk ring",
              "kallsyms tables"]  # fmt: skip


@st.composite
def pointer_edits(draw, start: int, end: int, targets: list[int]):
    """Edits of 8-byte aligned slots in ``[start, end)``: pointers and bit flips."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        slot = start + 8 * draw(st.integers(0, max(0, (end - start) // 8 - 1)))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            value = targets[draw(st.integers(0, len(targets) - 1))]
            value += draw(st.sampled_from([0, 0, 8, -8, 16, 0x40]))
            edits.append(("set", slot, struct.pack("<Q", value & (1 << 64) - 1)))
        elif kind == 1:
            edits.append(
                ("field", slot, 8, draw(st.integers(0, 40)), draw(st.integers(0, 2**64 - 1)))
            )
        elif kind == 2:
            edits.append(("xor", slot + draw(st.integers(0, 7)), 1 << draw(st.integers(0, 7))))
        else:
            n = draw(st.integers(1, 8))
            edits.append(("set", slot, draw(st.binary(min_size=n, max_size=n))))
    return edits


def _targets(file_start: int, paddr: int, size: int) -> list[int]:
    """Pointer values: into the structure (kernel-image and direct-map aliases), its file
    offset, and addresses nothing maps."""
    kva = START_KERNEL_map + paddr
    return [kva, kva + size // 2, kva + size - 8, paddr, paddr | 0x63, paddr | 0xE3,
            0xFFFF888000000000 + paddr, 0, 1, 0xFFFFFFFFFFFFFFFF, 0x8000000000000000,
            0xFFFFEA0000000000, 0xDEAD000000000000, file_start]  # fmt: skip


@pytest.mark.parametrize("structure", STRUCTURES)
@fz.fuzz_settings(300)
@given(data=st.data())
def test_fuzz_kernel_structures(scratch, structure, data):
    """Mutate one kernel structure of the ELF seed and walk the whole tree."""
    raw, regions = fz.elf_seed()
    region = next(r for r in regions if r.name == structure)
    paddr, size = fz.kernel().structures[structure]
    edits = data.draw(pointer_edits(region.start, region.end, _targets(region.start, paddr, size)))
    k = fz.kernel()
    out = fz.run_case(scratch.write(fz.apply(raw, edits)), phys=k.phys_reads, kvirt=k.kvirt_reads)
    counts = STATS[structure]
    counts["cases"] += 1
    counts["reads"] += out.reads
    counts["EIO"] += out.faults
    counts["unavailable"] += out.unavailable
    assert out.refused is None, out.refused  # the container is intact


@fz.fuzz_settings(300)
@given(data=st.data())
def test_fuzz_kallsyms_found_in_the_image(scratch, data):
    """A kernel before 6.0 (no kallsyms keys): its tables, mutated, are searched for in the
    image; the search must refuse what does not hold together, in bounded time and memory."""
    raw, regions = fz.elf_seed(found=True)
    region = next(r for r in regions if r.name == "kallsyms tables")
    k = fz.kernel(found=True)
    paddr, size = k.structures["kallsyms tables"]
    edits = data.draw(pointer_edits(region.start, region.end, _targets(region.start, paddr, size)))
    if data.draw(st.booleans()):  # hostile counts where the finder reads them
        at = region.start + data.draw(st.integers(0, (region.end - region.start) // 4 - 1)) * 4
        value = data.draw(st.sampled_from([1 << 31, 0xFFFFFFFF, 0, 1, 257, 0x100000]))
        edits.append(("set", at, struct.pack("<I", value)))
    out = fz.run_case(scratch.write(fz.apply(raw, edits)), phys=k.phys_reads, kvirt=k.kvirt_reads)
    counts = STATS["kallsyms tables (found)"]
    counts["cases"] += 1
    counts["unavailable"] += out.unavailable
    assert out.refused is None, out.refused


# -- BTF -----------------------------------------------------------------------------------------


def _btf_blob() -> tuple[bytes, bytes]:
    from tests.test_tasks import task_btf
    from tests.test_unwind import layout_btf

    return task_btf().data, layout_btf().data


def _use_btf(btf: B.Btf) -> None:
    """Decode every type, its size and name; look members up by path."""
    for type_id in range(1, min(btf.count, 5000) + 1):
        for call in (btf.type, btf.resolve, btf.sizeof, btf.type_name):
            try:
                call(type_id)
            except B.BtfError:
                pass
    for name, path in (("struct task_struct", "tasks.next"), ("struct task_struct", "comm"),
                       ("struct list_head", "prev"), ("struct pt_regs", "ip"),
                       ("struct orc_entry", "sp_offset")):  # fmt: skip
        try:
            btf.offsetof(name, path)
            btf.member_size(name, path)
        except (B.BtfError, Unavailable):
            pass


@fz.fuzz_settings(1500)
@given(data=st.data())
def test_fuzz_btf(data):
    blob = _btf_blob()[data.draw(st.integers(0, 1))]
    hdr = B.parse_header(blob)
    base = hdr.hdr_len
    regions = [
        fz.Region("header", 0, 24, fz.fields("<HBBIIIIII")[:8]),
        fz.Region(
            "types",
            base + hdr.type_off,
            base + hdr.type_off + hdr.type_len,
            tuple((o, 4) for o in range(0, hdr.type_len, 4)),
        ),  # fmt: skip
        fz.Region("strings", base + hdr.str_off, base + hdr.str_off + hdr.str_len),
    ]
    mutated = fz.apply(blob, data.draw(fz.mutations(regions, len(blob))))
    counts = STATS["BTF"]
    counts["cases"] += 1
    with fz.limits():
        try:
            btf = B.Btf(mutated)
        except B.BtfError:
            counts["refused"] += 1
            return
        _use_btf(btf)


# -- the task list -------------------------------------------------------------------------------


@fz.fuzz_settings(1000)
@given(data=st.data())
def test_fuzz_task_list(data):
    from tests import test_tasks as T
    from vmcorefs.kernel.tasks import ps_text

    s = _system()
    tasks = [s.init, s.idle1, s.t1, s.t2, s.t100, s.t101, s.t102]
    targets = [*tasks, *(t + T.OFF["tasks"] for t in tasks), T.PCPU[0], 0, 0xDEAD000000000000,
               0xFFFFFFFFFFFFFFFF, T.INIT_TASK + T.OFF["tasks"]]  # fmt: skip
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.sampled_from([*tasks, T.PCPU[0] + T.RUNQUEUES, T.PCPU[1] + T.RUNQUEUES,
                                           T.PER_CPU_OFFSET, T.NR_CPU_IDS]))  # fmt: skip
        slot = where + 8 * data.draw(st.integers(0, T.TASK_SIZE // 8 - 1))
        if data.draw(st.booleans()):
            value = data.draw(st.sampled_from(targets)) + data.draw(st.sampled_from([0, 8, -8]))
        else:
            value = data.draw(st.integers(0, 2**64 - 1))
        if data.draw(st.integers(0, 9)) == 0:
            s.mem.drop(slot)
        else:
            s.mem.put64(slot, value)
    STATS["task list"]["cases"] += 1
    with fz.limits():
        try:
            tl = s.build()
        except (Unavailable, FaultError):
            STATS["task list"]["unavailable"] += 1
            return
        assert len(tl.tasks) < 100_000
        ps_text(tl)


def _system():
    """The kernel of test_tasks.py's ``system`` fixture: two CPUs, seven tasks, threads."""
    from tests.test_tasks import build_system

    return build_system()


# -- ORC unwinding -------------------------------------------------------------------------------


@fz.fuzz_settings(1000)
@given(data=st.data())
def test_fuzz_orc_unwind(data):
    from tests import test_unwind as TU

    k = TU.Kernel()
    sp = TU.STACK + 0x1000
    for i in range(64):  # a plausible stack: return addresses into the known functions
        k.mem.put64(sp + 8 * i, TU.fn(list(TU.FUNCS)[i % len(TU.FUNCS)], 8 * (i % 5)))
    for _ in range(data.draw(st.integers(1, 6))):
        area = data.draw(st.sampled_from(["orc", "ip", "stack"]))
        if area == "orc":
            addr = TU.ORC + data.draw(st.integers(0, 6 * len(TU.ROWS) - 1))
            k.mem.write(addr, bytes([data.draw(st.integers(0, 255))]))
        elif area == "ip":
            addr = TU.ORC_IP + 4 * data.draw(st.integers(0, len(TU.ROWS) - 1))
            k.mem.put32(addr, data.draw(st.integers(0, 2**32 - 1)))
        else:
            addr = sp + 8 * data.draw(st.integers(-8, 80))
            value = data.draw(st.sampled_from([sp, sp - 8, sp + 0x100, 0, 2**64 - 1,
                                               TU.fn("looper", 8), TU.IRQ_STACK]))  # fmt: skip
            k.mem.put64(addr, value)
    ip = TU.fn(data.draw(st.sampled_from(list(TU.FUNCS))), 8)
    bp = data.draw(st.sampled_from([0, sp + 0x40, 2**64 - 1]))
    regs = {"ip": ip, "sp": sp, "bp": bp, "cs": TU.KERNEL_CS}
    STATS["ORC"]["cases"] += 1
    with fz.limits():
        try:
            frames = k.unwinder().from_registers(regs)
        except (Unavailable, FaultError):
            STATS["ORC"]["unavailable"] += 1
            return
        assert 1 <= len(frames) <= U.MAX_FRAMES
        k.names(frames)
        try:
            k.unwinder().from_inactive_frame(sp)
        except (Unavailable, FaultError):
            pass


# -- module symbol tables --------------------------------------------------------------------------


def _module_system():
    """Two modules (tests/modbuilder.py): one with a core-only table and exports, one still
    loading (its whole table, an undefined symbol) with a per-CPU area. Returns the builder,
    the two modules, their tables and the core symbols sym/ merges them with."""
    from tests.modbuilder import NULL_SYM, SHN_UNDEF, Mods, Sym

    s = Mods()
    a_base, b_base = 0xFFFFFFFFC0000000, 0xFFFFFFFFC0010000
    ta = s.symtab([NULL_SYM] + [Sym(f"a_fn{i}".encode(), "t", a_base + 0x10 * i, size=i)
                                for i in range(1, 24)])  # fmt: skip
    exports = s.exports([(f"a_fn{i}".encode(), a_base + 0x10 * i) for i in (3, 5, 8, 13)])
    a = s.module("alpha", base=a_base, core=0x1000, kallsyms=ta.kallsyms, exports=exports)
    tb = s.symtab([NULL_SYM, Sym(b"b_init", "t", b_base), Sym(b"printk", "U", 0, SHN_UNDEF),
                   Sym(b"b_pcpu", "d", 0x2B010, shndx=4),
                   Sym(b"a_fn3", "t", b_base + 8)])  # fmt: skip
    b = s.module("beta", base=b_base, core=0x1000, init=0x800, state=1, kallsyms=tb.kallsyms,
                 percpu=(0x2B000, 0x100))  # fmt: skip
    return s, (a, b), (ta, tb), exports[0]


@fz.fuzz_settings(1000)
@given(data=st.data())
def test_fuzz_module_symbols(data):
    """Mutate a module's struct, its mod_kallsyms, symbol, string and type tables, its exports;
    kallsyms, sym/, the unwinder's lookups and the summary's notes must stay bounded."""
    from tests.kernelfakes import symbol_table
    from tests.modbuilder import MOD_SIZE, M
    from vmcorefs.kernel.symbols import SymbolFiles

    s, mods, tables, syms = _module_system()
    areas = {
        "module": [(m, MOD_SIZE) for m in mods],
        "mod_kallsyms": [(t.kallsyms, 32) for t in tables],
        "symtab": [(t.symtab, 24 * 24) for t in tables],
        "strtab": [(t.strtab, 256) for t in tables],
        "typetab": [(t.typetab, 24) for t in tables],
        "exports": [(syms, 4 * 12)],
    }
    targets = [*mods, *(t.kallsyms for t in tables), *(t.symtab for t in tables),
               *(t.strtab for t in tables), syms, 0, 1, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF,
               0xDEAD000000000000, 0xFFFF888777000000]  # fmt: skip
    for _ in range(data.draw(st.integers(1, 6))):
        area = data.draw(st.sampled_from(sorted(areas)))
        start, size = data.draw(st.sampled_from(areas[area]))
        if area == "module":  # the members the symbols use, most of the time
            slot = start + data.draw(st.sampled_from(
                [M["kallsyms"], M["syms"], M["num_syms"], M["percpu"], M["percpu_size"],
                 M["state"], M["core"], M["core"] + 8, M["list"], M["name"]]))  # fmt: skip
        else:
            slot = start + data.draw(st.integers(0, size - 1))
        kind = data.draw(st.integers(0, 3))
        if kind == 0:
            s.mem.put64(slot, data.draw(st.sampled_from(targets)) + data.draw(
                st.sampled_from([0, 8, -8, 24])))  # fmt: skip
        elif kind == 1:
            s.mem.put32(slot, data.draw(st.sampled_from([0, 1, 0xFFFF, 1 << 20, 0xFFFFFFFF])))
        elif kind == 2:
            s.mem.write(slot, bytes([data.draw(st.integers(0, 255))]))
        else:
            s.mem.drop(slot)
    STATS["module symbols"]["cases"] += 1
    with fz.limits():
        try:
            ml = s.listing(list(mods), percpu_offset0=0xFFFF88801F400000)
        except (Unavailable, FaultError):
            STATS["module symbols"]["unavailable"] += 1
            return
        text = ml.kallsyms_text()
        assert text.count("\n") <= 2 * (1 << 21)
        files = ml.symbol_files()
        merged = SymbolFiles(symbol_table({"a_fn3": 0xFFFFFFFF81000000}), files)
        for key in list(merged.entries.values())[:64]:
            start, size = merged.extent(key)
            assert 0 <= size <= 1 << 20
        for addr in (0xFFFFFFFFC0000018, 0xFFFFFFFFC0010004, 0xFFFFFFFFC0000FFF):
            ml.symbol(addr)
        if ml.symbol_problems():
            STATS["module symbols"]["noted"] += 1
