"""Where a kdump file's metadata lie, so that a page descriptor pointing into them is corrupt.

makedumpfile writes the header, the sub-header with the notes, both bitmaps and the descriptor
table first, and every page's data after them (``offset_data`` is where the table ends:
``write_kdump_pages_and_bitmap_cyclic``). A descriptor whose data start before that names the
metadata's own bytes as memory (0xff from a bitmap, zeros from the header): never page data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KdumpLayout:
    """The metadata areas of one kdump file: ``[0, data_start)``, page data from there on."""

    block_size: int
    bitmap_offset: int
    desc_offset: int
    data_start: int

    def _area(self, offset: int) -> tuple[str, int, int]:
        if offset < self.block_size:
            return "the header", 0, self.block_size
        if offset < self.bitmap_offset:
            return "the sub-header and notes", self.block_size, self.bitmap_offset
        if offset < self.desc_offset:
            return "the page bitmaps", self.bitmap_offset, self.desc_offset
        return "the page descriptor table", self.desc_offset, self.data_start

    def metadata_overlap(self, offset: int) -> str | None:
        """Why page data at ``offset`` cannot be page data (None when they can): the area of
        the metadata they start in."""
        if offset >= self.data_start:
            return None
        name, lo, hi = self._area(offset)
        return f"inside {name} ({lo:#x}-{hi:#x}; page data start at {self.data_start:#x})"
