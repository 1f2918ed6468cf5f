"""``mm/``: what VMCOREINFO's memory-management entries say, as text a person can ``cat``.

- ``nodes``: ``node_online_map`` in the kernel's list format (``%*pbl``: ``0``, ``0-1,3``).
- ``vmalloc``: one line per busy ``vmap_area``, by start address: from ``vmap_area_list``
  (VMCOREINFO), or on Linux 6.9+, which dropped the list, from each ``vmap_nodes[]`` entry's
  ``busy`` list (the symbols ``vmap_nodes``/``nr_vmap_nodes`` and the layouts from BTF).
- ``buddyinfo``: ``/proc/buddyinfo`` rebuilt from the nodes' zones; zone names come from the
  kernel's own ``zone_names[]`` (a symbol: kallsyms, ``--vmlinux`` or ``--system-map``).
- ``usage``: every page frame classified as makedumpfile classifies it (:mod:`.mm_usage`).

Each is computed once, on first use, and never from a guess: a missing key or absent memory
makes the file one ``unavailable: <reason>`` line.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo
from .lazy import lazy
from .lists import LIST_HEAD_SIZE, ListHead, list_for_each_entry
from .mm_usage import ZoneLayout, page_usage
from .sparsemem import is_kvaddr, node_pgdats, online_nodes
from .strict import strict_spaces

#: The smallest ``struct vmap_area`` of any kernel with the list: va_start, va_end, an
#: rb_node and the list_head (2.6.28+); :func:`max_vmap_areas` bounds the walks with it.
MIN_VMAP_AREA_SIZE = 56
#: Longest zone name read from ``zone_names[]`` ("DMA32", "Normal", "Movable", "Device").
MAX_ZONE_NAME = 32
#: include/linux/mm_types.h (since 2.6.28): struct vmap_area starts with va_start, va_end.
VA_END_AFTER_VA_START = 8
#: include/linux/vmalloc.h: struct vmap_area (va_start, va_end, rb_node, list, a union of
#: subtree_max_size and vm, and flags since 6.4) has been 48 to 64 bytes; twice that is room.
MAX_VMAP_AREA_SIZE = 128
#: Bound on ``nr_vmap_nodes`` (Linux 6.9+: a few per machine; far above any real count).
MAX_VMAP_NODES = 4096


def nodelist(nodes: list[int]) -> str:
    """The kernel's ``%*pbl`` list: ``0``, ``0-1,3``."""
    parts: list[str] = []
    i = 0
    while i < len(nodes):
        j = i
        while j + 1 < len(nodes) and nodes[j + 1] == nodes[j] + 1:
            j += 1
        parts.append(str(nodes[i]) if i == j else f"{nodes[i]}-{nodes[j]}")
        i = j + 1
    return ",".join(parts)


def nodes_text(vi: VmcoreInfo, kvirt: AddressSpace) -> str:
    return nodelist(online_nodes(vi, kvirt)) + "\n"


def max_vmap_areas(held: int) -> int:
    """Bound on the busy vmap areas of a dump that holds ``held`` bytes of memory: each is a
    distinct ``struct vmap_area`` (from its slab cache) that the walk reads from the dump, so
    no more fit than ``held / MIN_VMAP_AREA_SIZE`` (a real machine has some thousands). The
    vmalloc range bounds them too (an area spans a page at least), but only beyond 480 TB:
    32 TiB of it with 4-level paging (arch/x86/include/asm/pgtable_64_types.h)."""
    return max(1, held // MIN_VMAP_AREA_SIZE)


def vmap_areas(
    vi: VmcoreInfo, kvirt: AddressSpace, kernel: Callable[[], tuple] | None = None, *, held: int
) -> list[tuple[int, int]]:
    """``(va_start, va_end)`` of each busy ``vmap_area``, sorted by start; ``held``: the bytes
    of memory the dump holds (:func:`max_vmap_areas`).

    Up to Linux 6.8 they are on ``vmap_area_list``: VMCOREINFO gives ``OFFSET(vmap_area.va_start)``
    only; ``va_end`` is the next field, as in every kernel that has the list (2.6.28 to 6.8).
    Linux 6.9 ("mm/vmalloc: remove vmap_area_list", in the series that added ``vmap_nodes``)
    keeps them on the busy list of each ``vmap_node`` and drops the list and its keys:
    ``kernel()`` then gives the symbol table and BTF to find them.
    """
    if vi.symbol("vmap_area_list") is None and kernel is not None:
        symbols, btf = kernel()
        return _vmap_nodes_areas(kvirt, symbols, btf, max_vmap_areas(held))
    head = vi.need("SYMBOL", "vmap_area_list")
    # VMCOREINFO has no SIZE(vmap_area): both fields lie inside the largest it has been.
    off_start = vi.need("OFFSET", "vmap_area.va_start", within=MAX_VMAP_AREA_SIZE, width=16)
    off_list = vi.need("OFFSET", "vmap_area.list", within=MAX_VMAP_AREA_SIZE, width=LIST_HEAD_SIZE)
    links = ListHead.from_vmcoreinfo(vi)
    off_end = off_start + VA_END_AFTER_VA_START
    limit = max_vmap_areas(held)
    out = _walk_areas(kvirt, "vmap_area_list", head, links, off_list, off_start, off_end, limit)
    out.sort()
    return out


def _walk_areas(
    kvirt: AddressSpace,
    what: str,
    head: int,
    links: ListHead,
    off_list: int,
    off_start: int,
    off_end: int,
    limit: int,
) -> list[tuple[int, int]]:
    """The areas on one list of ``vmap_area.list`` links, in list order: all or Unavailable."""
    out: list[tuple[int, int]] = []
    for va in list_for_each_entry(kvirt, head, off_list, what, limit, links=links):
        try:
            out.append((kvirt.u64(va + off_start), kvirt.u64(va + off_end)))
        except FaultError as exc:
            raise Unavailable(f"{what}: {exc}") from None
    return out


def _vmap_nodes_areas(kvirt: AddressSpace, symbols, btf, limit: int) -> list[tuple[int, int]]:
    """Linux 6.9+: the busy areas of ``vmap_nodes[0 .. nr_vmap_nodes)`` (mm/vmalloc.c)."""
    from .btf import BtfError

    try:
        nodes_sym, nr_sym = symbols.get("vmap_nodes"), symbols.get("nr_vmap_nodes")
    except Unavailable as exc:
        raise Unavailable(f"no vmap_area_list in VMCOREINFO and no symbols: {exc}") from None
    if nodes_sym is None or nr_sym is None:
        raise Unavailable("VMCOREINFO has no SYMBOL(vmap_area_list), the symbols no vmap_nodes")
    try:
        node_size = btf.sizeof(btf.find("vmap_node"))
        off_busy = btf.offsetof("vmap_node", "busy.head")
        off_list = btf.offsetof("vmap_area", "list")
        off_start = btf.offsetof("vmap_area", "va_start")
        off_end = btf.offsetof("vmap_area", "va_end")
        links = ListHead(btf.offsetof("list_head", "next"), btf.offsetof("list_head", "prev"))
    except (BtfError, Unavailable) as exc:
        raise Unavailable(f"vmap_nodes: the layouts are not in BTF ({exc})") from None
    try:
        nodes = kvirt.u64(nodes_sym)
        nr = kvirt.u32(nr_sym)
    except FaultError as exc:
        raise Unavailable(f"vmap_nodes: {exc}") from None
    if not 1 <= nr <= MAX_VMAP_NODES or not is_kvaddr(nodes):
        raise Unavailable(f"implausible vmap_nodes {nodes:#x} / nr_vmap_nodes {nr}")
    out: list[tuple[int, int]] = []
    for i in range(nr):
        head = nodes + i * node_size + off_busy
        what = f"vmap_nodes[{i}].busy"
        out += _walk_areas(kvirt, what, head, links, off_list, off_start, off_end, limit)
        if len(out) > limit:
            raise Unavailable(f"the vmap nodes hold more than {limit} areas (the dump's memory)")
    out.sort()
    return out


def vmalloc_text(
    vi: VmcoreInfo, kvirt: AddressSpace, kernel: Callable[[], tuple] | None = None, *, held: int
) -> str:
    areas = vmap_areas(vi, kvirt, kernel, held=held)
    return "".join(f"0x{s:016x}-0x{e:016x} {e - s:10d}\n" for s, e in areas)


def zone_names(kvirt: AddressSpace, address: int | None, count: int) -> list[str]:
    """The first ``count`` names of the kernel's ``zone_names[]`` (an array of ``char *``)."""
    if address is None:
        raise Unavailable(
            "the kernel symbol zone_names is not known (it needs the dump's kallsyms tables, "
            "or --vmlinux / --system-map): zone names are never guessed"
        )
    names = []
    try:
        for z in range(count):
            ptr = kvirt.u64(address + 8 * z)
            raw = kvirt.cstring(ptr, MAX_ZONE_NAME)
            if not raw or not raw.isascii() or not raw.decode().isprintable():
                raise Unavailable(f"zone_names[{z}] is not a zone name: {raw!r}")
            names.append(raw.decode())
    except FaultError as exc:
        raise Unavailable(f"zone_names: {exc}") from None
    return names


def buddyinfo_text(
    vi: VmcoreInfo, kvirt: AddressSpace, zone_names_address: Callable[[], int | None]
) -> str:
    """``/proc/buddyinfo`` (mm/vmstat.c ``frag_show_print``) for the zones with pages.

    ``free_area.nr_free`` follows the ``LENGTH(free_area.free_list)`` list heads (struct
    free_area since 2.6.24); that layout is checked against ``SIZE(free_area)``.
    """
    layout = ZoneLayout.from_vmcoreinfo(vi)
    size_zone, off_zones, off_span = layout.size_zone, layout.off_zones, layout.off_span
    off_free, orders, size_fa = layout.off_free, layout.orders, layout.size_free_area
    types = layout.types
    nr_free_off = layout.off_free_list + types * LIST_HEAD_SIZE
    if nr_free_off + 8 != size_fa:
        raise Unavailable(
            f"SIZE(free_area) {size_fa} is not {types} list heads and nr_free: layout unknown"
        )
    rows: list[tuple[int, int, list[int]]] = []
    highest = 0
    try:
        for nid, pgdat in node_pgdats(vi, kvirt):
            nr_zones = layout.nr_zones(kvirt, nid, pgdat)
            for z in range(nr_zones):
                zone = pgdat + off_zones + z * size_zone
                if kvirt.u64(zone + off_span) == 0:
                    continue  # not populated (VMCOREINFO has no present_pages)
                free = [
                    kvirt.u64(zone + off_free + o * size_fa + nr_free_off) for o in range(orders)
                ]
                rows.append((nid, z, free))
                highest = max(highest, z + 1)
    except FaultError as exc:
        raise Unavailable(f"zones: {exc}") from None
    names = zone_names(kvirt, zone_names_address(), highest) if rows else []
    return "".join(
        f"Node {nid}, zone {names[z]:>8} " + "".join(f"{n:6d} " for n in free) + "\n"
        for nid, z, free in rows
    )


class MemoryViews:
    """The ``mm/`` files of one dump, each built once, on first use.

    They read memory as the dump holds it, ``--zero-fill`` or not (:mod:`.strict`).
    """

    def __init__(self, dump) -> None:
        self.dump = dump
        self.vmcoreinfo: VmcoreInfo = dump.vmcoreinfo
        self.phys, self.kvirt = strict_spaces(dump)

    def _zone_names_address(self) -> int | None:
        try:
            return self.dump.symbols.get("zone_names")
        except Unavailable:  # no symbol table at all: the names are not known
            return None

    @lazy
    def usage(self) -> str:
        return page_usage(
            self.vmcoreinfo, self.kvirt, self.phys, self.phys.source.ranges()
        ).render()

    @lazy
    def nodes(self) -> str:
        return nodes_text(self.vmcoreinfo, self.kvirt)

    def _held(self) -> int:
        """Bytes of memory the dump holds; without a count, the RAM it describes."""
        source = self.phys.source
        try:
            return source.held_bytes() or sum(end - start for start, end in source.ranges())
        except Unavailable:  # a corrupt RAM map: the highest address then
            return self.phys.size

    @lazy
    def vmalloc(self) -> str:
        def kernel() -> tuple:
            return self.dump.symbols, self.dump.btf

        return vmalloc_text(self.vmcoreinfo, self.kvirt, kernel, held=self._held())

    @lazy
    def buddyinfo(self) -> str:
        return buddyinfo_text(self.vmcoreinfo, self.kvirt, self._zone_names_address)
