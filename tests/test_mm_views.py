"""``mm/nodes``, ``mm/vmalloc``, ``mm/buddyinfo`` on synthetic kernels and the real dumps."""

from __future__ import annotations

import pytest

import vmcorefs
from tests.mmbuilder import VMALLOC, MiB, SyntheticKernel
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.mm import nodelist
from vmcorefs.tree import build_tree


def tree_of(k: SyntheticKernel, tmp_path, drop=()):
    return build_tree(vmcorefs.open_dump(k.write_core(tmp_path / "core", drop=drop)))


def read(tree, path: str) -> str:
    return tree.lookup(path).read(0, 1 << 20).decode()


def kernel(**kw) -> SyntheticKernel:
    return SyntheticKernel([(0, 64 * MiB)], init_struct_pages=False, **kw)


@pytest.mark.parametrize(
    ("nodes", "text"),
    [([0], "0"), ([0, 1], "0-1"), ([0, 1, 3], "0-1,3"), ([2, 4, 5, 6, 9], "2,4-6,9"), ([], "")],
)
def test_nodelist_is_the_kernels_list_format(nodes, text):
    assert nodelist(nodes) == text


def test_nodes_from_node_online_map(tmp_path):
    k = kernel()
    free = [0] * 11
    k.add_nodes({0: [(1, free)], 1: [(1, free)], 3: [(1, free)], 700: [(1, free)]})
    assert read(tree_of(k, tmp_path), "mm/nodes") == "0-1,3,700\n"


def test_vmalloc_lines_sorted_by_start(tmp_path):
    k = kernel()
    areas = [
        (VMALLOC + 0x5000, VMALLOC + 0x8000),
        (VMALLOC, VMALLOC + 0x2000),
        (VMALLOC + 0x100000, VMALLOC + 0x100000 + (3 << 30)),
    ]
    k.add_vmap_areas(areas)
    want = "".join(f"0x{s:016x}-0x{e:016x} {e - s:10d}\n" for s, e in sorted(areas))
    assert read(tree_of(k, tmp_path), "mm/vmalloc") == want
    assert want.splitlines()[0] == "0xffffc90000000000-0xffffc90000002000       8192"


def test_vmalloc_loop_is_reported_not_followed(tmp_path):
    k = kernel()
    k.add_vmap_areas([(VMALLOC, VMALLOC + 0x1000), (VMALLOC + 0x2000, VMALLOC + 0x3000)])
    # Make the second entry point back at the first instead of the head.
    head = int(k.vmcoreinfo["SYMBOL(vmap_area_list)"], 16)
    first = k.mem.read(head - 0xFFFFFFFF80000000, 8)
    second_link = int.from_bytes(
        k.mem.read(int.from_bytes(first, "little") - 0xFFFFFFFF80000000, 8), "little"
    )
    k.write(second_link - 0xFFFFFFFF80000000, first)
    text = read(tree_of(k, tmp_path), "mm/vmalloc")
    assert text == (
        f"unavailable: vmap_area_list: the list loops at {int.from_bytes(first, 'little'):#x} "
        "without returning to its head\n"
    )


def test_vmalloc_broken_prev_is_reported(tmp_path):
    k = kernel()
    k.add_vmap_areas([(VMALLOC, VMALLOC + 0x1000), (VMALLOC + 0x2000, VMALLOC + 0x3000)])
    kernel_map = 0xFFFFFFFF80000000
    head = int(k.vmcoreinfo["SYMBOL(vmap_area_list)"], 16)
    first = int.from_bytes(k.mem.read(head - kernel_map, 8), "little")
    second = int.from_bytes(k.mem.read(first - kernel_map, 8), "little")
    k.write(second + 8 - kernel_map, head.to_bytes(8, "little"))  # second's prev: the head
    text = read(tree_of(k, tmp_path), "mm/vmalloc")
    assert text == (
        f"unavailable: vmap_area_list: the list breaks at {second:#x} "
        f"(its prev is {head:#x}, not {first:#x})\n"
    )


def test_vmalloc_without_its_keys(tmp_path):
    k = kernel()
    k.add_vmap_areas([(VMALLOC, VMALLOC + 0x1000)])
    text = read(tree_of(k, tmp_path, drop=["OFFSET(vmap_area.list)"]), "mm/vmalloc")
    assert text == "unavailable: VMCOREINFO has no OFFSET(vmap_area.list)\n"


def test_buddyinfo_populated_zones_with_kernel_names(tmp_path):
    k = kernel()
    z0 = [0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 3]
    z1 = [4, 23, 27, 11, 8, 7, 3, 3, 1, 2, 37]
    z2 = [123456, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    # node 0: DMA, DMA32, an empty Normal zone; node 2: Normal only (zones 0, 1 empty)
    k.add_nodes({0: [(4095, z0), (61440, z1), (0, z2)], 2: [(0, z0), (0, z1), (8192, z2)]})
    want = (
        "Node 0, zone      DMA      0      0      0      0      0      1      1      1      0"
        "      1      3 \n"
        "Node 0, zone    DMA32      4     23     27     11      8      7      3      3      1"
        "      2     37 \n"
        "Node 2, zone   Normal 123456      0      0      0      0      0      0      0      0"
        "      0      1 \n"
    )
    assert read(tree_of(k, tmp_path), "mm/buddyinfo") == want


def test_buddyinfo_of_a_kernel_without_numa(tmp_path):
    k = kernel()
    k.add_nodes({0: [(4095, [1] * 11)]}, node_data=False)
    text = read(tree_of(k, tmp_path), "mm/buddyinfo")
    assert text == "Node 0, zone      DMA " + "     1 " * 11 + "\n"


def test_buddyinfo_without_zone_names(tmp_path):
    k = kernel()
    k.add_nodes({0: [(4095, [1] * 11)]})
    text = read(tree_of(k, tmp_path, drop=["SYMBOL(zone_names)"]), "mm/buddyinfo")
    assert text.startswith("unavailable: the kernel symbol zone_names is not known")
    assert text.count("\n") == 1


def test_buddyinfo_refuses_an_unknown_free_area_layout(tmp_path):
    k = kernel()
    k.add_nodes({0: [(4095, [1] * 11)]})
    k.vmcoreinfo["SIZE(free_area)"] = "96"
    text = read(tree_of(k, tmp_path), "mm/buddyinfo")
    assert text.startswith("unavailable: SIZE(free_area) 96 is not 5 list heads and nr_free")


# -- the real dumps ------------------------------------------------------------------------


@pytest.mark.realdump
@pytest.mark.parametrize(
    "name", ["vmcore.elf", "mdf-d31.elf", "mdf-d31-zlib.kdump", "mdf-d31-zlib.flat"]
)
def test_real_views(case, name):
    expect = case.json("expect.json")
    with vmcorefs.open_dump(str(case.dump(name))) as dump:
        tree = build_tree(dump)
        assert read(tree, "mm/nodes").strip() == case.file("gt/node-online.txt").read_text().strip()
        assert read(tree, "mm/buddyinfo") == expect["buddyinfo"]
        lines = read(tree, "mm/vmalloc").splitlines()
        areas = [(int(x[2:18], 16), int(x[21:37], 16)) for x in lines]
        assert sorted(areas) == areas
        assert set(areas) == {tuple(a) for a in expect["vmalloc"]}


def _vmalloc_btf():
    """The layouts Linux 6.9+ has: vmap_node { ...; struct rb_list busy; ... },
    rb_list { rb_root root; list_head head; ... }, vmap_area { va_start; va_end; rb_node; list }."""
    from tests.btfbuilder import BtfBuilder
    from vmcorefs.kernel.btf import Btf

    b = BtfBuilder()
    u64 = b.int_("long unsigned int", 8)
    lh = b.next_id
    b.struct("list_head", 16, [("next", lh + 1, 0), ("prev", lh + 1, 64)])
    b.ptr(lh)
    root = b.struct("rb_root", 8, [("rb_node", u64, 0)])
    rb_list = b.struct("rb_list", 32, [("root", root, 0), ("head", lh, 64)])
    b.struct("vmap_node", 112, [("pool_lock", u64, 0), ("busy", rb_list, 64 * 8),
                                ("lazy", rb_list, 96 * 8)])  # fmt: skip
    b.struct("vmap_area", 64, [("va_start", u64, 0), ("va_end", u64, 64), ("rb_node", u64, 128),
                               ("list", lh, 192)])  # fmt: skip
    return Btf(b.build())


def test_vmalloc_from_vmap_nodes_linux_6_9():
    """No vmap_area_list (Linux 6.9+): every vmap_node's busy list, in address order."""
    from tests.kernelfakes import SparseMemory, symbol_table
    from vmcorefs.errors import Unavailable
    from vmcorefs.kernel.mm import vmalloc_text
    from vmcorefs.vmcoreinfo import VmcoreInfo

    mem = SparseMemory()
    nodes, base = 0xFFFF888000100000, 0xFFFF888000200000
    node_size, busy_head = 112, 64 + 8  # vmap_node.busy.head
    areas = {0: [(VMALLOC + 0x5000, VMALLOC + 0x7000)], 1: [(VMALLOC, VMALLOC + 0x2000)]}
    slot = base
    for n in range(2):
        head = nodes + n * node_size + busy_head
        ring = [head]
        for start, end in areas[n]:
            mem.put64(slot, start, end)  # va_start, va_end
            ring.append(slot + 24)  # the links point at vmap_area.list
            slot += 4096  # one area a page: a test can drop one
        for i, link in enumerate(ring):  # next, prev: back to the head
            mem.put64(link, ring[(i + 1) % len(ring)], ring[i - 1])
    symbols = symbol_table({"vmap_nodes": 0xFFFFFFFF82000000, "nr_vmap_nodes": 0xFFFFFFFF82000010})
    mem.put64(0xFFFFFFFF82000000, nodes)
    mem.put32(0xFFFFFFFF82000010, 2)
    vi = VmcoreInfo(b"OSRELEASE=6.12.0\n")
    text = vmalloc_text(vi, mem, lambda: (symbols, _vmalloc_btf()), held=1 << 20)
    want = [(VMALLOC, VMALLOC + 0x2000), (VMALLOC + 0x5000, VMALLOC + 0x7000)]
    assert text == "".join(f"0x{s:016x}-0x{e:016x} {e - s:10d}\n" for s, e in want)
    mem.drop(base + 4096)  # node 1's area is not in the dump: said, not skipped
    with pytest.raises(Unavailable, match=r"vmap_nodes\[1\]\.busy: "):
        vmalloc_text(vi, mem, lambda: (symbols, _vmalloc_btf()), held=1 << 20)


def test_vmap_areas_are_bounded_by_the_memory_the_dump_holds(tmp_path):
    """Each area is a struct vmap_area read from the dump: no more than its memory holds."""
    from vmcorefs.kernel.mm import MIN_VMAP_AREA_SIZE, MemoryViews, max_vmap_areas, vmap_areas
    from vmcorefs.vmcoreinfo import VmcoreInfo

    k = kernel()
    areas = [(VMALLOC + 0x2000 * i, VMALLOC + 0x2000 * i + 0x1000) for i in range(3)]
    k.add_vmap_areas(areas)
    dump = vmcorefs.open_dump(k.write_core(tmp_path / "core"))
    views = MemoryViews(dump)
    assert views._held() == 64 * MiB  # the synthetic ELF core holds all its RAM
    assert max_vmap_areas(64 * MiB) == 64 * MiB // MIN_VMAP_AREA_SIZE
    vi = VmcoreInfo(dump.source.vmcoreinfo_raw())
    assert vmap_areas(vi, dump.kvirt, held=3 * MIN_VMAP_AREA_SIZE) == areas
    with pytest.raises(Unavailable, match="vmap_area_list: the list has more than 2 entries"):
        vmap_areas(vi, dump.kvirt, held=3 * MIN_VMAP_AREA_SIZE - 1)
    dump.close()
