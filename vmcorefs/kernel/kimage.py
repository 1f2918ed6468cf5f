"""The kernel image in the dump: where it starts, and its present bytes in pieces for a scan.

Kernels before 6.0 do not say in VMCOREINFO where their kallsyms tables are, and a symbol table
without ``__start_BTF`` does not say where the BTF is; both are then found by their own structure
in the image (:mod:`.kallsyms_finder`, :func:`.btf.find_btf`). x86_64 maps the image at
``__START_KERNEL_map`` + its physical offset: ``_stext`` is ``SYMBOL(_stext)`` (VMCOREINFO since
4.x), else ``__START_KERNEL`` + ``KERNELOFFSET`` (the KASLR slide). The mapping is at most
``KERNEL_IMAGE_SIZE`` long; past ``_end`` (rounded up to 2 MiB) no page table maps it.

A scan reads the present bytes only: an unmapped 2 MiB chunk is skipped in one step, an absent
page (freed init memory, a page ``makedumpfile`` left out) one page at a time, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import Unavailable, check_stop
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo

#: arch/x86/include/asm/page_64_types.h: __START_KERNEL_map
START_KERNEL_map = 0xFFFFFFFF80000000
#: __START_KERNEL = __START_KERNEL_map + CONFIG_PHYSICAL_START (16 MiB, every distribution)
START_KERNEL = 0xFFFFFFFF81000000
#: KERNEL_IMAGE_SIZE with CONFIG_RANDOMIZE_BASE (512 MiB without): the image mapping's extent
KERNEL_IMAGE_SIZE = 1 << 30
PAGE_SIZE = 1 << 12
#: A scan reads the image in pieces of one page-table chunk (PMD_SIZE).
PIECE = 1 << 21
#: Each piece also shows this many bytes of the next one, so that a pattern across the border
#: is seen (in the piece where it starts).
OVERLAP = 256


def image_start(vmcoreinfo: VmcoreInfo) -> int:
    """Where the kernel image starts: ``SYMBOL(_stext)``, else ``__START_KERNEL + KERNELOFFSET``."""
    stext = vmcoreinfo.symbol("_stext")
    if stext is not None:
        return stext
    try:
        offset = vmcoreinfo.kerneloffset or 0
    except Unavailable:
        offset = 0
    return (START_KERNEL + offset) & ((1 << 64) - 1)


def image_end(start: int) -> int:
    """The end of the image mapping that holds ``start``."""
    return min(START_KERNEL_map + KERNEL_IMAGE_SIZE, start + KERNEL_IMAGE_SIZE)


@dataclass
class ImageScan:
    """The present bytes of ``[start, end)`` in kernel memory, piece by piece.

    The scan goes down from the chunk holding ``first`` to ``start``, then up from there to
    ``end`` (``first`` None: up from ``start``): a search for what lies below a known address
    reads that part first. ``scanned`` counts the bytes handed out so far (for messages).
    """

    kvirt: AddressSpace
    start: int
    end: int
    first: int | None = None
    scanned: int = 0

    def _runs(self) -> list[range]:
        """The chunks (2 MiB-aligned addresses) in scan order, as two runs: down, then up."""
        pivot = self.start if self.first is None else min(max(self.first, self.start), self.end)
        pivot &= ~(PIECE - 1)
        return [range(pivot, (self.start & ~(PIECE - 1)) - 1, -PIECE),
                range(pivot + PIECE, self.end, PIECE)]  # fmt: skip

    def pieces(self) -> Iterator[tuple[int, bytes, int]]:
        """``(address, bytes, own)`` of each present run, in scan order (ascending within a
        chunk): ``own`` bytes (at most :data:`PIECE`) are this piece's, the rest (up to
        :data:`OVERLAP`) are the next one's. Bounded: every step advances by the piece, by a
        page or by a chunk."""
        mapped = getattr(self.kvirt, "chunk_mapped", None)
        for run in self._runs():
            for chunk in run:
                check_stop()
                pos, chunk_end = max(chunk, self.start), min(chunk + PIECE, self.end)
                if pos >= chunk_end or (mapped is not None and not mapped(pos)):
                    continue
                held = False
                while pos < chunk_end:
                    data = self.kvirt.read(pos, chunk_end - pos + OVERLAP)
                    if not data:
                        pos = (pos | (PAGE_SIZE - 1)) + 1  # absent: go on at the next page
                        continue
                    held = True
                    own = min(len(data), chunk_end - pos)
                    self.scanned += own
                    yield pos, data, own
                    pos += own
                if mapped is None and not held:
                    break  # no page-table view: a chunk without a page ends the image

    def find(self, pattern: bytes) -> Iterator[int]:
        """Addresses where ``pattern`` (at most :data:`OVERLAP` bytes) starts, in scan order."""
        assert 0 < len(pattern) <= OVERLAP
        for base, data, own in self.pieces():
            at = data.find(pattern, 0, own + len(pattern) - 1)
            while at >= 0:
                yield base + at
                at = data.find(pattern, at + 1, own + len(pattern) - 1)

    @property
    def scanned_mib(self) -> str:
        """``scanned`` in MiB, as a message gives it."""
        mib = self.scanned / (1 << 20)
        return f"{mib:.0f}" if mib >= 10 or mib == 0 else f"{mib:.1f}"


def read_present(kvirt: AddressSpace, addr: int, size: int) -> bytes:
    """The present bytes from ``addr`` on, at most ``size``: like ``read``, but a space that
    hands out a shorter prefix than is present (a chunk border) is asked again."""
    data = kvirt.read(addr, size)
    if len(data) in (0, size):
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = kvirt.read(addr + got, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def present_below(kvirt: AddressSpace, top: int, size: int) -> tuple[int, bytes]:
    """``(address, bytes)``: the present run that ends at ``top``, at most ``size`` bytes long
    (shorter where memory below it is absent). Bounded: each step passes an absent page."""
    base = top - size
    while base < top:
        data = read_present(kvirt, base, top - base)
        if len(data) == top - base:
            return base, data
        base = ((base + len(data)) | (PAGE_SIZE - 1)) + 1
    return top, b""


#: VMCOREINFO symbols in the kernel's data (.data, .bss), which follows its read-only data.
DATA_SYMBOLS = ("init_top_pgt", "swapper_pg_dir", "init_uts_ns", "node_online_map", "prb",
                "printk_rb_static", "log_buf", "vmap_area_list", "node_data")  # fmt: skip


def kernel_image(kvirt: AddressSpace, vmcoreinfo: VmcoreInfo) -> ImageScan:
    """A scan of the whole image mapping (from :func:`image_start`); it reads the part below
    the lowest data symbol VMCOREINFO names first, down (the read-only data, where the
    kallsyms tables and the BTF are, lies right below the data), then the rest."""
    start = image_start(vmcoreinfo)
    end = image_end(start)
    data = [a for n in DATA_SYMBOLS if (a := vmcoreinfo.symbol(n)) is not None and start < a < end]
    return ImageScan(kvirt, start, end, min(data) if data else None)
