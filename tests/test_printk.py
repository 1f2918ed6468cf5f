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

from tests.printk_layouts import (
    COMMITTED,
    FINALIZED,
    ID_MASK,
    LB_BUF,
    LB_LEN,
    PRB_DATA,
    PRB_RB,
    RESERVED,
    REUSABLE,
    FakeMemory,
    LogBuf,
    Prb,
    plain_log,
    vmcoreinfo,
)
from vmcorefs.errors import FaultError, Unavailable
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.printk import format_record, kernel_version, read_dmesg
from vmcorefs.tree import build_tree
from vmcorefs.vmcoreinfo import VmcoreInfo

BASE = 0xFFFFFFFF82000000


def read_prb(prb: Prb) -> bytes:
    return read_dmesg(FakeMemory(prb.regions(BASE)), vmcoreinfo(prb.keys(BASE)))


def log_memory(log: LogBuf, release: str = "4.19.0-27-amd64") -> tuple[FakeMemory, VmcoreInfo]:
    keys = {"OSRELEASE": release, **log.keys(BASE)}
    return FakeMemory(log.regions(BASE)), vmcoreinfo(keys)


def read_log(log: LogBuf) -> bytes:
    return read_dmesg(*log_memory(log))


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


def test_lockless_records_in_id_order_across_the_id_wrap() -> None:
    prb = Prb(count_bits=2, size_bits=10)  # 4 descriptors: the oldest two are recycled
    ids = [prb.add(b"line %d" % i, ts=i * 1_500_000_000) for i in range(6)]
    assert ids[0] == (1 << 62) - 4 and ids[-1] == 1  # the id space wrapped to 0 on the way
    assert read_prb(prb) == b"".join(
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
    assert read_prb(prb) == b"[    3.000000] delta-delta-delta\n[    4.000000] echo\n"


def test_lockless_skips_reserved_reusable_and_dataless_records() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    prb.add(b"finalized", ts=1_000_000_000, state=FINALIZED)
    prb.add(b"committed", ts=2_000_000_000, state=COMMITTED)  # printed: committed counts
    prb.add(b"reopened for pr_cont", ts=3_000_000_000, state=RESERVED)  # skipped
    prb.add(b"", ts=4_000_000_000, room=0)  # FAILED_LPOS / empty line: no data, skipped
    prb.add(b"recycled", ts=5_000_000_000, state=REUSABLE)  # skipped
    prb.add(b"last", ts=6_000_000_000, state=COMMITTED)  # the head record is printed too
    assert read_prb(prb) == (
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
    assert read_prb(prb) == b"[    0.000000] r0\n[    2.000000] r2\n"


def test_lockless_continuation_dev_info_and_caller_id_are_not_printed() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    # pr_cont() extends the last record in place: one record holds "a" "b" "c" merged.
    prb.add(b"usb 1-1: new device abc", ts=7_000_000_000, dev_info=b"SUBSYSTEM=usb\0")
    prb.add(b"cont line", ts=8_000_000, caller_id=0x80000001)
    assert read_prb(prb) == b"[    7.000000] usb 1-1: new device abc\n[    0.008000] cont line\n"


def test_lockless_text_longer_than_its_block_is_cut() -> None:
    prb = Prb(count_bits=3, size_bits=10)
    prb.add(b"0123456789abcdef", ts=0, text_len=100, room=16)  # text_len says 100
    prb.add(b"multi\nline", ts=1000)
    assert read_prb(prb) == (
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
    assert read_prb(prb) == b"[    0.000000] k0\n[    0.000000] k1\n[    0.000000] k2\n"


def test_lockless_bad_sizes_are_refused() -> None:
    prb = Prb()
    mem, vi = FakeMemory(prb.regions(BASE)), vmcoreinfo(prb.keys(BASE))
    rb_addr, rb = mem.regions[1]
    assert rb_addr == BASE + PRB_RB
    bad = bytearray(rb)
    struct.pack_into("<I", bad, 0, 40)  # count_bits 40
    mem.regions[1] = (rb_addr, bytes(bad))
    with pytest.raises(Unavailable, match="count_bits"):
        read_dmesg(mem, vi)


def test_lockless_absent_memory_and_missing_key() -> None:
    prb = Prb()
    prb.add(b"x", ts=0)
    regions = prb.regions(BASE)
    mem = FakeMemory([r for r in regions if r[0] != BASE + PRB_DATA])
    with pytest.raises(FaultError):
        read_dmesg(mem, vmcoreinfo(prb.keys(BASE)))
    keys = prb.keys(BASE)
    del keys["OFFSET(prb_desc_ring.tail_id)"]
    with pytest.raises(Unavailable, match=r"OFFSET\(prb_desc_ring.tail_id\)"):
        read_dmesg(FakeMemory(regions), vmcoreinfo(keys))


@pytest.mark.parametrize("window", [16, 64, 1000])
def test_rings_read_in_windows_give_the_same_log(monkeypatch, window) -> None:
    # Rings of up to 2 GiB are never read as one buffer: here windows smaller than each ring
    # (16 bytes: less than a record; 1000: the data ring, not the descriptors) must give the
    # lines the whole-ring reading gives, and a ring the dump lacks a byte of still fails.
    prb = Prb(count_bits=3, size_bits=8)
    texts = [b"record %d %s" % (i, b"y" * (i * 5 % 23)) for i in range(12)]
    for i, text in enumerate(texts):
        prb.add(text, ts=i * 10**9)
    lines = [b"[%5d.000000] %s\n" % (i, text) for i, text in enumerate(texts)]
    want = read_prb(prb)  # every ring here is smaller than the default window: read whole
    assert want == b"".join(lines[-want.count(b"\n") :]) and want.count(b"\n") >= 4
    log = LogBuf(512)
    for i, text in enumerate(texts):
        log.add(text, ts=i * 10**9)
    log_want = read_log(log)
    assert log_want == b"".join(lines[-log_want.count(b"\n") :]) and log_want.count(b"\n") >= 4
    monkeypatch.setattr("vmcorefs.kernel.printk.RING_WINDOW", window)
    assert read_prb(prb) == want
    assert read_log(log) == log_want
    regions = [(a, d[:-1]) if a == BASE + PRB_DATA else (a, d) for a, d in prb.regions(BASE)]
    with pytest.raises(FaultError):  # the last byte of the text ring is absent
        read_dmesg(FakeMemory(regions), vmcoreinfo(prb.keys(BASE)))


# --- Linux 3.5 to 5.9: struct printk_log records in log_buf ---------------------------------


def line(ts_nsec: int, text: bytes) -> bytes:
    return b"[%5d.%06d] %s\n" % (ts_nsec // 10**9, ts_nsec % 10**9 // 1000, text)


def test_printk_log_records_with_dict_and_multiline() -> None:
    log = LogBuf(4096)
    log.add(b"Linux version 4.19.0", ts=0)
    log.add(b"usb 1-1: new high-speed USB device", ts=1_250_000_000, dict_=b"SUBSYSTEM=usb")
    log.add(b"two\nlines", ts=2_000_001_000)
    assert read_log(log) == (
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
    assert read_log(log) == want


def test_printk_log_wrap_marker_at_first_idx() -> None:
    log = LogBuf(128)
    for i in range(5):
        log.add(b"record-%d-abcdefghijklmnopq" % i, ts=i)
    # Point log_first_idx at the zero header: the walk reads the record at 0 in its place.
    marker = next(i for i in range(0, 128, 4) if i > log.next_idx and log.length(i) == 0)
    log.first_idx = marker
    got = read_log(log)
    assert got.startswith(line(4, b"record-4-abcdefghijklmnopq"))


def test_log_struct_of_3_5_to_3_10_and_caller_id() -> None:
    old = LogBuf(1024, name="log")  # 3.5-3.10: SIZE(log), OFFSET(log.*)
    old.add(b"Booting the kernel.", ts=0)
    assert read_log(old) == line(0, b"Booting the kernel.")
    # CONFIG_PRINTK_CALLER (5.1+): a 20-byte header; makedumpfile 1.7.2 prints no caller id.
    new = LogBuf(1024, caller_id=True)
    new.add(b"with caller", ts=5_000, cid=0x80000003)
    new.add(b"second", ts=6_000, cid=42)
    assert read_log(new) == line(5_000, b"with caller") + line(6_000, b"second")


def test_printk_log_empty_buffer() -> None:
    log = LogBuf(256)
    assert read_log(log) == b""


def test_printk_log_corruption_stops_like_makedumpfile() -> None:
    log = LogBuf(1024)
    for i in range(4):
        log.add(b"rec%d" % i, ts=i * 10**9)  # 20 bytes each: at 0, 20, 40, 60
    mem, vi = log_memory(log)
    # Record 2 turned into a zero (wrap) header: the walk goes 0 -> 20 -> 40 (read as the
    # record at 0) -> 20 again, a cycle that never meets log_next_idx. makedumpfile prints
    # each step of the walk once (rec0 rec1 rec0) and stops ("Cycle ... detected").
    buf = bytearray(log.buf)
    struct.pack_into("<H", buf, 40 + 8, 0)
    mem.regions[1] = (BASE + LB_BUF, bytes(buf))
    assert read_dmesg(mem, vi) == line(0, b"rec0") + line(10**9, b"rec1") + line(0, b"rec0")
    # An index past the buffer ("Index outside log_buf detected"): the lines before it stay.
    buf = bytearray(log.buf)
    struct.pack_into("<H", buf, 20 + 8, 2000)
    mem.regions[1] = (BASE + LB_BUF, bytes(buf))
    assert read_dmesg(mem, vi) == line(0, b"rec0") + line(10**9, b"rec1")
    # A text_len running past the buffer's end is cut there.
    buf = bytearray(log.buf)
    struct.pack_into("<H", buf, 60 + 10, 5000)
    mem.regions[1] = (BASE + LB_BUF, bytes(buf))
    assert read_dmesg(mem, vi).endswith(b"[    3.000000] rec3" + b"\\x00" * (1024 - 80) + b"\n")


def test_printk_log_bad_header_values() -> None:
    log = LogBuf(256)
    log.add(b"x", ts=0)
    log.first_idx = 250  # no header fits there
    with pytest.raises(Unavailable, match="log_first_idx"):
        read_log(log)
    log.first_idx = 0
    mem, vi = log_memory(log)
    head = bytearray(mem.regions[0][1])
    struct.pack_into("<i", head, LB_LEN, -1)
    mem.regions[0] = (BASE, bytes(head))
    with pytest.raises(Unavailable, match="log_buf_len"):
        read_dmesg(mem, vi)


# --- before 3.5: the plain character ring ---------------------------------------------------


def plain(text: bytes, size: int, release: str = "2.6.32-5-amd64") -> bytes:
    regions, keys = plain_log(text, size, wide_end=kernel_version(release) < (2, 6, 25))
    return read_dmesg(FakeMemory(regions(BASE)), vmcoreinfo({"OSRELEASE": release, **keys(BASE)}))


def test_plain_ring_is_written_as_is() -> None:
    text = b"<5>Linux version 2.6.32\n<6>Command line: root=/dev/sda1\xc3\xa9\n"
    assert plain(text, 1024) == text  # no timestamps, no escaping


def test_plain_ring_wrapped_starts_mid_line() -> None:
    text = b"".join(b"<6>line %03d\n" % i for i in range(20))  # 240 chars into 128
    assert plain(text, 128) == text[-128:]
    assert plain(text, 128, release="2.6.24.7") == text[-128:]
    assert plain(text[:128], 128) == text[:128]  # exactly full: from index 0


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
