"""Kernel log buffers of the three printk eras, built as those kernels' writers build them.

Each builder lays its variables and buffers out in one block of kernel memory at ``base`` and
gives the VMCOREINFO keys that kernel exports, so that the same buffer can be read from a
:class:`FakeMemory` (unit tests) or written into a copy of a real dump for makedumpfile to read.

* :class:`Prb`: Linux 5.10+ ``kernel/printk/printk_ringbuffer.c`` (prb_reserve, data_alloc,
  get_next_lpos, data_push_tail; ids start at DESC0_ID, just below 2**62, and wrap).
* :class:`LogBuf`: Linux 3.5-5.9 ``kernel/printk/printk.c`` (log_store, log_make_free_space,
  logbuf_has_space; ``struct printk_log``, ``struct log`` before 3.11).
* :func:`plain_log`: before 3.5, ``emit_log_char`` into a power-of-two ring.
"""

from __future__ import annotations

import struct

from tests.kernelfakes import ReadFake
from vmcorefs.vmcoreinfo import VmcoreInfo

#: The block of kernel memory a builder uses (fits the 128 KiB text ring of the real dumps).
AREA_SIZE = 0x20000


class FakeMemory(ReadFake):
    """Kernel virtual memory made of a few regions; everything else is absent."""

    name = "kvirt"

    def __init__(self, regions: list[tuple[int, bytes]] | None = None) -> None:
        self.regions: list[tuple[int, bytes]] = list(regions or [])

    def read(self, addr: int, size: int) -> bytes:
        for base, data in self.regions:
            if base <= addr < base + len(data):
                return data[addr - base : addr - base + size]
        return b""


def vmcoreinfo(keys: dict[str, object]) -> VmcoreInfo:
    return VmcoreInfo("".join(f"{k}={v}\n" for k, v in keys.items()).encode())


# --- Linux 5.10+ ------------------------------------------------------------------------------

#: VMCOREINFO of a 6.1 kernel's ring buffer (log_buf_vmcoreinfo_setup()), as in the real dumps.
PRB_KEYS: dict[str, object] = {
    "SIZE(printk_ringbuffer)": 88,
    "OFFSET(printk_ringbuffer.desc_ring)": 0,
    "OFFSET(printk_ringbuffer.text_data_ring)": 48,
    "OFFSET(printk_ringbuffer.fail)": 80,
    "SIZE(prb_desc_ring)": 48,
    "OFFSET(prb_desc_ring.count_bits)": 0,
    "OFFSET(prb_desc_ring.descs)": 8,
    "OFFSET(prb_desc_ring.infos)": 16,
    "OFFSET(prb_desc_ring.head_id)": 24,
    "OFFSET(prb_desc_ring.tail_id)": 32,
    "SIZE(prb_desc)": 24,
    "OFFSET(prb_desc.state_var)": 0,
    "OFFSET(prb_desc.text_blk_lpos)": 8,
    "SIZE(prb_data_blk_lpos)": 16,
    "OFFSET(prb_data_blk_lpos.begin)": 0,
    "OFFSET(prb_data_blk_lpos.next)": 8,
    "SIZE(printk_info)": 88,
    "OFFSET(printk_info.seq)": 0,
    "OFFSET(printk_info.ts_nsec)": 8,
    "OFFSET(printk_info.text_len)": 16,
    "OFFSET(printk_info.caller_id)": 20,
    "OFFSET(printk_info.dev_info)": 24,
    "SIZE(dev_printk_info)": 64,
    "OFFSET(dev_printk_info.subsystem)": 0,
    "LENGTH(printk_info_subsystem)": 16,
    "OFFSET(dev_printk_info.device)": 16,
    "LENGTH(printk_info_device)": 48,
    "SIZE(prb_data_ring)": 32,
    "OFFSET(prb_data_ring.size_bits)": 0,
    "OFFSET(prb_data_ring.data)": 8,
    "OFFSET(prb_data_ring.head_lpos)": 16,
    "OFFSET(prb_data_ring.tail_lpos)": 24,
    "SIZE(atomic_long_t)": 8,
    "OFFSET(atomic_long_t.counter)": 0,
}
ID_MASK = (1 << 62) - 1
RESERVED, COMMITTED, FINALIZED, REUSABLE = 0, 1, 2, 3
FAILED_LPOS = 0x1
# Offsets inside the area: the "prb" pointer, the ring buffer struct, descs, infos, text data.
PRB_PTR, PRB_RB, PRB_DESCS, PRB_INFOS, PRB_DATA = 0x0, 0x100, 0x1000, 0x4000, 0x10000


class Prb:
    """A printk_ringbuffer filled like the kernel's prb_reserve()/data_alloc() fill it."""

    def __init__(self, count_bits: int = 3, size_bits: int = 8) -> None:
        assert 24 << count_bits <= PRB_INFOS - PRB_DESCS
        assert 88 << count_bits <= PRB_DATA - PRB_INFOS and 1 << size_bits <= AREA_SIZE - PRB_DATA
        self.count_bits, self.size_bits = count_bits, size_bits
        self.count, self.size = 1 << count_bits, 1 << size_bits
        self.descs = bytearray(24 * self.count)
        self.infos = bytearray(88 * self.count)
        self.data = bytearray(self.size)
        # DESC0_ID(): the first id sits just below the id space's end, so ids wrap early.
        self.head_id = self.tail_id = (-(self.count + 1)) & ID_MASK
        self.head_lpos = 0
        self.blocks: list[tuple[int, int]] = []  # (id, begin lpos) of records holding data

    def set_state(self, rid: int, state: int) -> None:
        struct.pack_into("<Q", self.descs, (rid % self.count) * 24, (state << 62) | rid)

    def add(
        self,
        text: bytes,
        ts: int,
        state: int = FINALIZED,
        text_len: int | None = None,
        room: int | None = None,
        dev_info: bytes = b"",
        caller_id: int = 0,
    ) -> int:
        """Store one record with the next id; ``room`` overrides the data block's text room."""
        rid = (self.head_id + 1) & ID_MASK
        slot = rid % self.count
        room = len(text) if room is None else room
        if room == 0:
            begin = nxt = FAILED_LPOS  # a data-less record
        else:
            blk = (8 + room + 7) & ~7  # the id, then the text, aligned to sizeof(long)
            begin = self.head_lpos
            nxt = begin + blk
            wraps = begin // self.size != nxt // self.size
            if wraps:  # get_next_lpos(): a wrapping block keeps its data at offset 0
                nxt = (nxt // self.size) * self.size + blk
            # data_push_tail(): blocks that the new one overwrites lose their record
            for old, old_begin in list(self.blocks):
                if old_begin < nxt - self.size:
                    self.set_state(old, REUSABLE)
                    self.blocks.remove((old, old_begin))
            at = 0 if wraps else begin % self.size
            struct.pack_into("<Q", self.data, begin % self.size, rid)
            struct.pack_into("<Q", self.data, at, rid)
            self.data[at + 8 : at + 8 + room] = text[:room].ljust(room, b"\0")
            self.head_lpos = nxt
            self.blocks.append((rid, begin))
        struct.pack_into("<QQQ", self.descs, slot * 24, (state << 62) | rid, begin, nxt)
        info = bytearray(88)
        tl = len(text) if text_len is None else text_len
        struct.pack_into("<QQHBBI", info, 0, 0, ts, tl, 0, 6 << 5, caller_id)
        info[24 : 24 + len(dev_info)] = dev_info
        self.infos[slot * 88 : slot * 88 + 88] = info
        self.head_id = rid
        if (self.head_id - self.tail_id) & ID_MASK >= self.count:
            self.tail_id = (self.head_id - self.count + 1) & ID_MASK
        return rid

    def regions(self, base: int) -> list[tuple[int, bytes]]:
        rb = bytearray(88)
        struct.pack_into(
            "<IxxxxQQQQ", rb, 0, self.count_bits, base + PRB_DESCS, base + PRB_INFOS, 0, 0
        )
        struct.pack_into("<QQ", rb, 24, self.head_id, self.tail_id)
        struct.pack_into("<IxxxxQQQ", rb, 48, self.size_bits, base + PRB_DATA, self.head_lpos, 0)
        return [
            (base + PRB_PTR, struct.pack("<Q", base + PRB_RB)),
            (base + PRB_RB, bytes(rb)),
            (base + PRB_DESCS, bytes(self.descs)),
            (base + PRB_INFOS, bytes(self.infos)),
            (base + PRB_DATA, bytes(self.data)),
        ]

    def keys(self, base: int) -> dict[str, object]:
        return {"SYMBOL(prb)": f"{base + PRB_PTR:x}", **PRB_KEYS}


# --- Linux 3.5 to 5.9 -------------------------------------------------------------------------

# Offsets inside the area: char *log_buf, u32 log_buf_len, the indexes, then __log_buf.
LB_PTR, LB_LEN, LB_FIRST, LB_NEXT, LB_CLEAR, LB_END, LB_BUF = 0, 8, 0x10, 0x14, 0x20, 0x18, 0x100


class LogBuf:
    """A 3.5-5.9 log_buf filled like log_store()/log_make_free_space() fill it (x86_64)."""

    def __init__(self, size: int, caller_id: bool = False, name: str = "printk_log") -> None:
        assert size <= AREA_SIZE - LB_BUF
        # struct printk_log { u64 ts_nsec; u16 len, text_len, dict_len; u8 facility;
        # u8 flags:5, level:3; [u32 caller_id;] } __packed __aligned(4): 16 or 20 bytes.
        self.hdr = 20 if caller_id else 16
        self.caller_id = caller_id
        self.name = name
        self.buf = bytearray(size)
        self.first_idx = self.next_idx = 0
        self.first_seq = self.next_seq = 0

    def length(self, idx: int) -> int:
        return struct.unpack_from("<H", self.buf, idx + 8)[0]

    def _log_next(self, idx: int) -> int:
        n = self.length(idx)
        return self.length(0) if n == 0 else idx + n  # a zero header: wrap to the start

    def _has_space(self, size: int, empty: bool) -> bool:
        if self.next_idx > self.first_idx or empty:
            free = max(len(self.buf) - self.next_idx, self.first_idx)
        else:
            free = self.first_idx - self.next_idx
        return free >= size + self.hdr  # room for an empty wrap header too

    def add(self, text: bytes, ts: int, dict_: bytes = b"", cid: int = 0) -> None:
        size = self.hdr + len(text) + len(dict_)
        size += -size % 4  # LOG_ALIGN: 4 with CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS
        while self.first_seq < self.next_seq and not self._has_space(size, False):
            self.first_idx = self._log_next(self.first_idx)
            self.first_seq += 1
        assert self._has_space(size, self.first_seq == self.next_seq)
        if self.next_idx + size + self.hdr > len(self.buf):
            self.buf[self.next_idx : self.next_idx + self.hdr] = bytes(self.hdr)
            self.next_idx = 0
        rec = struct.pack("<QHHHBB", ts, size, len(text), len(dict_), 0, 6 << 5)
        if self.caller_id:
            rec += struct.pack("<I", cid)
        rec += text + dict_
        self.buf[self.next_idx : self.next_idx + size] = rec.ljust(size, b"\0")
        self.next_idx += size
        self.next_seq += 1

    def regions(self, base: int) -> list[tuple[int, bytes]]:
        head = bytearray(LB_BUF)
        struct.pack_into("<QI", head, LB_PTR, base + LB_BUF, len(self.buf))
        struct.pack_into("<II", head, LB_FIRST, self.first_idx, self.next_idx)
        struct.pack_into("<I", head, LB_CLEAR, self.first_idx)
        return [(base, bytes(head)), (base + LB_BUF, bytes(self.buf))]

    def keys(self, base: int) -> dict[str, object]:
        n = self.name
        keys: dict[str, object] = {
            "SYMBOL(log_buf)": f"{base + LB_PTR:x}",
            "SYMBOL(log_buf_len)": f"{base + LB_LEN:x}",
            "SYMBOL(log_first_idx)": f"{base + LB_FIRST:x}",
            "SYMBOL(clear_idx)": f"{base + LB_CLEAR:x}",
            "SYMBOL(log_next_idx)": f"{base + LB_NEXT:x}",
            f"SIZE({n})": self.hdr,
            f"OFFSET({n}.ts_nsec)": 0,
            f"OFFSET({n}.len)": 8,
            f"OFFSET({n}.text_len)": 10,
            f"OFFSET({n}.dict_len)": 12,
        }
        if self.caller_id:
            keys[f"OFFSET({n}.caller_id)"] = 16
        return keys


# --- before 3.5 ---------------------------------------------------------------------------------


def plain_log(text: bytes, size: int, wide_end: bool = False):
    """A pre-3.5 log_buf after emit_log_char() wrote ``text`` (log_end counts every char).

    ``wide_end``: "unsigned long log_end" (before 2.6.25) instead of "unsigned".
    Returns ``(regions(base), keys(base))`` functions.
    """
    assert size & (size - 1) == 0 and size <= AREA_SIZE - LB_BUF
    buf = bytearray(size)
    for i, c in enumerate(text):
        buf[i & (size - 1)] = c

    def regions(base: int) -> list[tuple[int, bytes]]:
        head = bytearray(LB_BUF)
        struct.pack_into("<Qi", head, LB_PTR, base + LB_BUF, size)
        struct.pack_into("<Q" if wide_end else "<I", head, LB_END, len(text))
        return [(base, bytes(head)), (base + LB_BUF, bytes(buf))]

    def keys(base: int) -> dict[str, object]:
        return {
            "SYMBOL(log_buf)": f"{base + LB_PTR:x}",
            "SYMBOL(log_end)": f"{base + LB_END:x}",
            "SYMBOL(log_buf_len)": f"{base + LB_LEN:x}",
            "SYMBOL(logged_chars)": f"{base + LB_CLEAR:x}",
        }

    return regions, keys
