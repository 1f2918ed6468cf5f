"""The kernel log: the three layouts, built here from the kernels' own structures, and the real
dumps against ``makedumpfile --dump-dmesg``.

Synthetic buffers follow the kernel sources of each era: ``kernel/printk/printk_ringbuffer.[ch]``
(5.10+: ids start just below 2**62 and wrap, wrapping data blocks keep their data at offset 0),
``struct printk_log`` of 3.11-5.9 / ``struct log`` of 3.5-3.10 (records padded to 8 bytes, a
zero-length header marks the end of the buffer), and the plain ring before 3.5. Expected lines
are written out by hand from makedumpfile's rules (``printk.c``, ``makedumpfile.c``).
"""

from __future__ import annotations

import struct

import pytest

from vmcorefs.errors import FaultError, Unavailable
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.printk import format_record, kernel_version, read_dmesg
from vmcorefs.memory.space import AddressSpace
from vmcorefs.tree import build_tree
from vmcorefs.vmcoreinfo import VmcoreInfo


class FakeMemory(AddressSpace):
    """Kernel virtual memory made of a few regions; everything else is absent."""

    name = "kvirt"

    def __init__(self) -> None:
        self.regions: list[tuple[int, bytes]] = []

    def add(self, base: int, data: bytes) -> None:
        self.regions.append((base, bytes(data)))

    def read(self, addr: int, size: int) -> bytes:
        for base, data in self.regions:
            if base <= addr < base + len(data):
                return data[addr - base : addr - base + size]
        return b""


def vmcoreinfo(**keys: object) -> VmcoreInfo:
    text = "".join(f"{k}={v}\n" for k, v in keys.items())
    return VmcoreInfo(text.encode())


# --- formatting ----------------------------------------------------------------------------


def test_record_prefix_and_newline() -> None:
    assert format_record(0, b"Linux version") == b"[    0.000000] Linux version\n"
    assert format_record(1_234_567_891, b"x") == b"[    1.234567] x\n"
    # %5lld grows past five digits; microseconds are truncated, not rounded
    assert format_record(123456_999_999_999, b"y") == b"[123456.999999] y\n"


def test_multiline_record_is_indented_to_the_prefix() -> None:
    got = format_record(2_000_000_000, b"first\nsecond\n")
    assert got == b"[    2.000000] first\n               second\n               \n"
    wide = format_record(100000_000_000_000, b"a\nb")
    assert wide == b"[100000.000000] a\n" + b" " * 16 + b"b\n"


def test_escaping_follows_c_locale_and_signed_char() -> None:
    # isprint/isspace pass through (tab, CR, VT, FF too); other bytes are \x%02x of a signed
    # char: 0x01 -> \x01, 0x7f -> \x7f, 0xc3 -> \xffffffc3 (sign-extended), 0x00 -> \x00.
    text = b"a\tb\rc\x0bd\x0ce\x01f\x7fg\xc3\xa9h\x00i\xff"
    want = b"a\tb\rc\x0bd\x0ce\\x01f\\x7fg\\xffffffc3\\xffffffa9h\\x00i\\xffffffff"
    assert format_record(0, text) == b"[    0.000000] " + want + b"\n"


def test_kernel_version_reads_like_strtol() -> None:
    assert kernel_version("2.6.32-5-amd64") == (2, 6, 32)
    assert kernel_version("3.4.113") == (3, 4, 113)
    assert kernel_version("2.6.24.7-rt") == (2, 6, 24)
    with pytest.raises(Unavailable):
        kernel_version(None)


# --- Linux 5.10+: the lockless ring buffer ---------------------------------------------------

# VMCOREINFO of a 6.1 kernel (as in the real dumps: log_buf_vmcoreinfo_setup()).
PRB_KEYS = {
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
PRB_SYM = 0xFFFFFFFF82000000  # struct printk_ringbuffer *prb
RB_ADDR = 0xFFFFFFFF82000100  # printk_rb_static
DESCS_ADDR = 0xFFFFFFFF82010000
INFOS_ADDR = 0xFFFFFFFF82020000
DATA_ADDR = 0xFFFF888000100000


class Prb:
    """A printk_ringbuffer filled like the kernel's prb_reserve()/data_alloc() fill it."""

    def __init__(self, count_bits: int = 3, size_bits: int = 8) -> None:
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
            begin = nxt = 0x1  # FAILED_LPOS: a data-less record
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

    def memory(self) -> tuple[FakeMemory, VmcoreInfo]:
        mem = FakeMemory()
        mem.add(PRB_SYM, struct.pack("<Q", RB_ADDR))
        rb = bytearray(88)
        struct.pack_into("<IxxxxQQQQ", rb, 0, self.count_bits, DESCS_ADDR, INFOS_ADDR, 0, 0)
        struct.pack_into("<QQ", rb, 24, self.head_id, self.tail_id)
        struct.pack_into("<IxxxxQQQ", rb, 48, self.size_bits, DATA_ADDR, self.head_lpos, 0)
        mem.add(RB_ADDR, rb)
        mem.add(DESCS_ADDR, self.descs)
        mem.add(INFOS_ADDR, self.infos)
        mem.add(DATA_ADDR, self.data)
        return mem, vmcoreinfo(**{"SYMBOL(prb)": f"{PRB_SYM:x}"}, **PRB_KEYS)

    def dmesg(self) -> bytes:
        return read_dmesg(*self.memory())


def test_lockless_records_in_id_order_across_the_id_wrap() -> None:
    prb = Prb(count_bits=2, size_bits=10)  # 4 descriptors: the oldest two are recycled
    ids = [prb.add(b"line %d" % i, ts=i * 1_500_000_000) for i in range(6)]
    assert ids[0] == (1 << 62) - 4 and ids[-1] == 1  # the id space wrapped to 0 on the way
    assert prb.dmesg() == b"".join(
        b"[%5d.%06d] line %d\n" % (i * 3 // 2, 500000 * (i % 2), i) for i in range(2, 6)
    )


def test_lockless_wrapped_data_block_and_overwritten_records() -> None:
    prb = Prb(count_bits=3, size_bits=6)  # 8 descriptors, 64 bytes of text data
    for i, word in enumerate([b"alpha", b"bravo-bravo", b"charlie", b"delta-delta-delta", b"echo"]):
        prb.add(word, ts=i * 1_000_000_000)
    # Blocks (lpos): alpha [0,16) bravo [16,40) charlie [40,56); delta needs 32 bytes from 56:
    # it wraps, lpos [56, 96), its data at offset 0 (so alpha's and bravo's records are made
    # reusable); echo [96,112) at offset 32 overwrites charlie's data.
    assert bytes(prb.data[8:25]) == b"delta-delta-delta"
    assert prb.dmesg() == b"[    3.000000] delta-delta-delta\n[    4.000000] echo\n"


def test_lockless_skips_reserved_reusable_and_dataless_records() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    prb.add(b"finalized", ts=1_000_000_000, state=FINALIZED)
    prb.add(b"committed", ts=2_000_000_000, state=COMMITTED)  # printed: committed counts
    prb.add(b"reopened for pr_cont", ts=3_000_000_000, state=RESERVED)  # skipped
    prb.add(b"", ts=4_000_000_000, room=0)  # FAILED_LPOS / empty line: no data, skipped
    prb.add(b"recycled", ts=5_000_000_000, state=REUSABLE)  # skipped
    prb.add(b"last", ts=6_000_000_000, state=COMMITTED)  # the head record is printed too
    assert prb.dmesg() == (
        b"[    1.000000] finalized\n[    2.000000] committed\n[    6.000000] last\n"
    )


def test_lockless_descriptor_with_a_stale_id_is_skipped() -> None:
    prb = Prb(count_bits=2, size_bits=10)
    for i in range(3):
        prb.add(b"r%d" % i, ts=i * 1_000_000_000)
    # slot of the middle record now claims an id from the previous lap: id mismatch
    rid = (prb.head_id - 1) & ID_MASK
    slot = rid % prb.count
    struct.pack_into("<Q", prb.descs, slot * 24, (FINALIZED << 62) | ((rid - 4) & ID_MASK))
    assert prb.dmesg() == b"[    0.000000] r0\n[    2.000000] r2\n"


def test_lockless_continuation_dev_info_and_caller_id_are_not_printed() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    # pr_cont() extends the last record in place: one record holds "a" "b" "c" merged.
    prb.add(b"usb 1-1: new device abc", ts=7_000_000_000, dev_info=b"SUBSYSTEM=usb\0")
    prb.add(b"cont line", ts=8_000_000, caller_id=0x80000001)
    assert prb.dmesg() == b"[    7.000000] usb 1-1: new device abc\n[    0.008000] cont line\n"


def test_lockless_text_longer_than_its_block_is_cut() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    prb.add(b"0123456789abcdef", ts=0, text_len=100, room=16)  # text_len says 100
    prb.add(b"multi\nline", ts=1000)
    assert prb.dmesg() == (
        b"[    0.000000] 0123456789abcdef\n[    0.000001] multi\n               line\n"
    )


def test_lockless_corrupt_head_and_tail_stay_bounded() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    for i in range(3):
        prb.add(b"k%d" % i, ts=0)
    prb.tail_id = (prb.head_id + 5) & ID_MASK  # a span of almost 2**62 ids
    # makedumpfile's walk would visit ~2**62 ids; the records it would print are still those
    # whose descriptor holds their id, in id order from the tail: none lies after head+5 but
    # the walk passes the whole id space, so all three come out, in id order.
    assert prb.dmesg() == b"[    0.000000] k0\n[    0.000000] k1\n[    0.000000] k2\n"


def test_lockless_bad_sizes_are_refused() -> None:
    prb = Prb()
    mem, vi = prb.memory()
    rb_addr, rb = mem.regions[1]
    bad = bytearray(rb)
    struct.pack_into("<I", bad, 0, 40)  # count_bits 40
    mem.regions[1] = (rb_addr, bytes(bad))
    with pytest.raises(Unavailable, match="count_bits"):
        read_dmesg(mem, vi)


def test_lockless_absent_memory_and_missing_key() -> None:
    prb = Prb()
    prb.add(b"x", ts=0)
    mem, vi = prb.memory()
    mem.regions = [r for r in mem.regions if r[0] != DATA_ADDR]
    with pytest.raises(FaultError):
        read_dmesg(mem, vi)
    keys = dict(PRB_KEYS)
    del keys["OFFSET(prb_desc_ring.tail_id)"]
    vi2 = vmcoreinfo(**{"SYMBOL(prb)": f"{PRB_SYM:x}"}, **keys)
    with pytest.raises(Unavailable, match=r"OFFSET\(prb_desc_ring.tail_id\)"):
        read_dmesg(prb.memory()[0], vi2)


# --- Linux 3.5 to 5.9: struct printk_log records in log_buf ---------------------------------

LOG_BUF_SYM = 0xFFFFFFFF81E00000  # char *log_buf
LOG_BUF_LEN_SYM = 0xFFFFFFFF81E00008  # u32 log_buf_len
FIRST_IDX_SYM = 0xFFFFFFFF81E00010
NEXT_IDX_SYM = 0xFFFFFFFF81E00014
LOG_END_SYM = 0xFFFFFFFF81E00018
BUF_ADDR = 0xFFFFFFFF81F00000  # __log_buf


class LogBuf:
    """A 3.5-5.9 log_buf filled like log_store()/log_make_free_space() fill it (x86_64)."""

    def __init__(self, size: int, caller_id: bool = False, name: str = "printk_log") -> None:
        # struct printk_log { u64 ts_nsec; u16 len, text_len, dict_len; u8 facility;
        # u8 flags:5, level:3; [u32 caller_id;] } __packed __aligned(4): 16 or 20 bytes.
        self.hdr = 20 if caller_id else 16
        self.caller_id = caller_id
        self.name = name
        self.buf = bytearray(size)
        self.first_idx = self.next_idx = 0
        self.first_seq = self.next_seq = 0

    def _len(self, idx: int) -> int:
        return struct.unpack_from("<H", self.buf, idx + 8)[0]

    def _log_next(self, idx: int) -> int:
        n = self._len(idx)
        return self._len(0) if n == 0 else idx + n  # a zero header: wrap to the start

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

    def keys(self) -> dict[str, object]:
        n = self.name
        keys: dict[str, object] = {
            "OSRELEASE": "4.19.0-27-amd64" if n == "printk_log" else "3.9.11",
            "SYMBOL(log_buf)": f"{LOG_BUF_SYM:x}",
            "SYMBOL(log_buf_len)": f"{LOG_BUF_LEN_SYM:x}",
            "SYMBOL(log_first_idx)": f"{FIRST_IDX_SYM:x}",
            "SYMBOL(clear_idx)": "ffffffff81e00020",
            "SYMBOL(log_next_idx)": f"{NEXT_IDX_SYM:x}",
            f"SIZE({n})": self.hdr,
            f"OFFSET({n}.ts_nsec)": 0,
            f"OFFSET({n}.len)": 8,
            f"OFFSET({n}.text_len)": 10,
            f"OFFSET({n}.dict_len)": 12,
        }
        if self.caller_id:
            keys[f"OFFSET({n}.caller_id)"] = 16
        return keys

    def memory(self) -> tuple[FakeMemory, VmcoreInfo]:
        mem = FakeMemory()
        hdr = struct.pack("<QIxxxxII", BUF_ADDR, len(self.buf), self.first_idx, self.next_idx)
        mem.add(LOG_BUF_SYM, hdr)
        mem.add(BUF_ADDR, self.buf)
        return mem, vmcoreinfo(**self.keys())

    def dmesg(self) -> bytes:
        return read_dmesg(*self.memory())


def line(ts_nsec: int, text: bytes) -> bytes:
    return b"[%5d.%06d] %s\n" % (ts_nsec // 10**9, ts_nsec % 10**9 // 1000, text)


def test_printk_log_records_with_dict_and_multiline() -> None:
    log = LogBuf(4096)
    log.add(b"Linux version 4.19.0", ts=0)
    log.add(b"usb 1-1: new high-speed USB device", ts=1_250_000_000, dict_=b"SUBSYSTEM=usb")
    log.add(b"two\nlines", ts=2_000_001_000)
    assert log.dmesg() == (
        line(0, b"Linux version 4.19.0")
        + line(1_250_000_000, b"usb 1-1: new high-speed USB device")
        + b"[    2.000001] two\n               lines\n"
    )


def test_printk_log_wraps_around_the_buffer() -> None:
    log = LogBuf(256)
    texts = [b"message number %02d %s" % (i, b"x" * (i % 7)) for i in range(40)]
    for i, text in enumerate(texts):
        log.add(text, ts=i * 10**9)
    # The writer dropped the oldest records and wrapped with a zero-length header.
    assert log.first_idx > log.next_idx and 0 < log.first_seq < 40
    want = b"".join(line(i * 10**9, texts[i]) for i in range(log.first_seq, 40))
    assert log.dmesg() == want


def test_printk_log_wrap_marker_at_first_idx() -> None:
    log = LogBuf(128)
    for i in range(5):
        log.add(b"record-%d-abcdefghijklmnopq" % i, ts=i)
    # Point log_first_idx at the zero header: the walk reads the record at 0 in its place.
    marker = next(i for i in range(0, 128, 4) if i > log.next_idx and log._len(i) == 0)
    log.first_idx = marker
    got = log.dmesg()
    assert got.startswith(line(4, b"record-4-abcdefghijklmnopq"))


def test_log_struct_of_3_5_to_3_10_and_caller_id() -> None:
    old = LogBuf(1024, name="log")  # 3.5-3.10: SIZE(log), OFFSET(log.*)
    old.add(b"Booting the kernel.", ts=0)
    assert old.dmesg() == line(0, b"Booting the kernel.")
    # CONFIG_PRINTK_CALLER (5.1+): a 20-byte header; makedumpfile 1.7.2 prints no caller id.
    new = LogBuf(1024, caller_id=True)
    new.add(b"with caller", ts=5_000, cid=0x80000003)
    new.add(b"second", ts=6_000, cid=42)
    assert new.dmesg() == line(5_000, b"with caller") + line(6_000, b"second")


def test_printk_log_empty_buffer() -> None:
    log = LogBuf(256)
    assert log.dmesg() == b""


def test_printk_log_corruption_stops_like_makedumpfile() -> None:
    log = LogBuf(1024)
    for i in range(4):
        log.add(b"rec%d" % i, ts=i * 10**9)  # 20 bytes each: at 0, 20, 40, 60
    mem, vi = log.memory()
    # Record 2 turned into a zero (wrap) header: the walk goes 0 -> 20 -> 40 (read as the
    # record at 0) -> 20 again, a cycle that never meets log_next_idx. makedumpfile prints
    # each step of the walk once (rec0 rec1 rec0) and stops ("Cycle ... detected").
    buf = bytearray(log.buf)
    struct.pack_into("<H", buf, 40 + 8, 0)
    mem.regions[1] = (BUF_ADDR, bytes(buf))
    assert read_dmesg(mem, vi) == line(0, b"rec0") + line(10**9, b"rec1") + line(0, b"rec0")
    # An index past the buffer ("Index outside log_buf detected"): the lines before it stay.
    buf = bytearray(log.buf)
    struct.pack_into("<H", buf, 20 + 8, 2000)
    mem.regions[1] = (BUF_ADDR, bytes(buf))
    assert read_dmesg(mem, vi) == line(0, b"rec0") + line(10**9, b"rec1")
    # A text_len running past the buffer's end is cut there.
    buf = bytearray(log.buf)
    struct.pack_into("<H", buf, 60 + 10, 5000)
    mem.regions[1] = (BUF_ADDR, bytes(buf))
    assert read_dmesg(mem, vi).endswith(b"[    3.000000] rec3" + b"\\x00" * (1024 - 80) + b"\n")


def test_printk_log_bad_header_values() -> None:
    log = LogBuf(256)
    log.add(b"x", ts=0)
    log.first_idx = 250  # no header fits there
    with pytest.raises(Unavailable, match="log_first_idx"):
        log.dmesg()
    log.first_idx = 0
    mem, vi = log.memory()
    mem.regions[0] = (LOG_BUF_SYM, struct.pack("<QixxxxII", BUF_ADDR, -1, 0, log.next_idx))
    with pytest.raises(Unavailable, match="log_buf_len"):
        read_dmesg(mem, vi)


# --- before 3.5: the plain character ring ---------------------------------------------------


def plain(text: bytes, size: int, release: str = "2.6.32-5-amd64") -> tuple[FakeMemory, VmcoreInfo]:
    """A pre-3.5 log_buf after emit_log_char() wrote ``text``: log_end counts every char."""
    buf = bytearray(size)
    for i, c in enumerate(text):
        buf[i & (size - 1)] = c
    wide = kernel_version(release) < (2, 6, 25)  # "unsigned long log_end" before 2.6.25
    mem = FakeMemory()
    mem.add(LOG_BUF_SYM, struct.pack("<Qi", BUF_ADDR, size))
    mem.add(LOG_END_SYM, struct.pack("<Q" if wide else "<I", len(text)))
    mem.add(BUF_ADDR, buf)
    vi = vmcoreinfo(
        OSRELEASE=release,
        **{
            "SYMBOL(log_buf)": f"{LOG_BUF_SYM:x}",
            "SYMBOL(log_end)": f"{LOG_END_SYM:x}",
            "SYMBOL(log_buf_len)": f"{LOG_BUF_LEN_SYM:x}",
            "SYMBOL(logged_chars)": "ffffffff81e00030",
        },
    )
    return mem, vi


def test_plain_ring_is_written_as_is() -> None:
    text = b"<5>Linux version 2.6.32\n<6>Command line: root=/dev/sda1\xc3\xa9\n"
    assert read_dmesg(*plain(text, 1024)) == text  # no timestamps, no escaping


def test_plain_ring_wrapped_starts_mid_line() -> None:
    text = b"".join(b"<6>line %03d\n" % i for i in range(20))  # 240 chars into 128
    assert read_dmesg(*plain(text, 128)) == text[-128:]
    assert read_dmesg(*plain(text, 128, release="2.6.24.7")) == text[-128:]
    assert read_dmesg(*plain(text[:128], 128)) == text[:128]  # exactly full: from index 0


# --- the real dumps ---------------------------------------------------------------------------


@pytest.mark.realdump
def test_real_dmesg_equals_makedumpfile(case) -> None:
    want = case.file("dmesg.makedumpfile.txt").read_bytes()
    checked, missing = [], []
    for name in case.dump_files():
        path = case.root / name
        if not path.exists():
            continue
        try:
            dump = open_dump(str(path))
        except ImportError:  # a container whose reader is not on this branch yet
            missing.append(name)
            continue
        with dump:
            node = build_tree(dump).lookup("dmesg")
            got = node.read(0, 1 << 20)
            assert got == want, name
            assert node.size() == len(want)
            assert case.truth["marker"].encode() in got
        checked.append(name)
    if not checked:
        pytest.skip(f"no readable dump in {case.name} ({missing})")
