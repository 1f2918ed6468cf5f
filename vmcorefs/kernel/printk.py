"""The kernel log (``dmesg``), decoded from the dump as ``makedumpfile --dump-dmesg`` prints it.

Three layouts, told apart by their VMCOREINFO keys as makedumpfile tells them apart:

* Linux 5.10+: the lockless ring buffer (``SYMBOL(prb)``): a descriptor ring, a ring of
  ``struct printk_info`` and a text data ring (``kernel/printk/printk_ringbuffer.h``).
* Linux 3.5 to 5.9: the structured ``log_buf`` of variable-length records
  (``struct log``, renamed ``struct printk_log`` in 3.11): ``SYMBOL(log_first_idx)``.
* Before 3.5: a plain character ring (``SYMBOL(log_end)``), written out as it is.

The output rules follow makedumpfile 1.7.2 (the Debian 12 build that wrote the reference
``dmesg.makedumpfile.txt`` files): ``dump_record`` in ``printk.c`` and ``dump_log_entry`` /
``dump_dmesg`` in ``makedumpfile.c``. Each record is one line ``[%5lld.%06ld] text``; a newline
inside the text starts a new line indented to the width of that prefix; a byte that is neither
printable nor white space in the C locale is written ``\\x%02x`` of a *signed* ``char``, so a
byte from 0x80 up reads ``\\xffffffc3``. makedumpfile 1.7.5 and later add the caller id
(``[    T123] ``) after the timestamp when VMCOREINFO has ``OFFSET(printk_info.caller_id)``;
1.7.2 does not, and neither does this module.
"""

from __future__ import annotations

import re
import struct

from ..errors import Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo

# kernel/printk/printk_ringbuffer.h: the top two bits of a descriptor's state_var are its state.
DESC_SV_BITS = 64
DESC_FLAGS_SHIFT = DESC_SV_BITS - 2
DESC_FLAGS_MASK = 3 << DESC_FLAGS_SHIFT
DESC_ID_MASK = ((1 << DESC_SV_BITS) - 1) & ~DESC_FLAGS_MASK
# enum desc_state
desc_reserved = 0x0
desc_committed = 0x1
desc_finalized = 0x2
desc_reusable = 0x3
#: A data block starts with the descriptor id that owns it (``unsigned long``).
DATA_BLOCK_ID_SIZE = 8

#: Bounds on sizes read from the dump. The kernel caps log_buf_len at LOG_BUF_LEN_MAX (2 GiB)
#: and makes one descriptor per 32 bytes of text on average (PRB_AVGBITS = 5).
MAX_TEXT_BITS = 31
MAX_DESC_BITS = 31 - 5
MAX_LOG_BUF_LEN = 1 << 31
#: Bound on SIZE() of the printk structures: printk_ringbuffer is 88 bytes, printk_info 88,
#: prb_desc 24 (40 in 5.10 with its dict block), printk_log 16 (kernel/printk/*.h).
MAX_PRINTK_STRUCT = 4096
#: The rings are read this much at a time (a whole ring of up to 2 GiB is never one buffer).
RING_WINDOW = 1 << 20

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# --- one record's line ------------------------------------------------------------------------

#: Bytes makedumpfile writes as they are: isprint() or isspace() in the C locale.
_UNSAFE = re.compile(rb"[^\t\n\x0b\x0c\r\x20-\x7e]")


def _escape(match: re.Match[bytes]) -> bytes:
    byte = match.group(0)[0]
    # sprintf("\\x%02x", *p) with a signed char: 0x80..0xff print as 0xffffff80..0xffffffff.
    return b"\\x%02x" % (byte if byte < 0x80 else byte | 0xFFFFFF00)


def format_record(ts_nsec: int, text: bytes) -> bytes:
    """One record as makedumpfile prints it: timestamp prefix, escaped text, newline."""
    prefix = b"[%5d.%06d] " % (ts_nsec // 1_000_000_000, ts_nsec % 1_000_000_000 // 1000)
    body = _UNSAFE.sub(_escape, text)
    if b"\n" in body:
        body = body.replace(b"\n", b"\n" + b" " * len(prefix))
    return prefix + body + b"\n"


# --- helpers ---------------------------------------------------------------------------------


def _field(buf: bytes, offset: int, fmt: struct.Struct, what: str) -> int:
    """A value at ``offset`` inside a structure read whole; Unavailable when it is outside."""
    if offset < 0 or offset + fmt.size > len(buf):
        raise Unavailable(f"{what} at offset {offset} lies outside its {len(buf)}-byte structure")
    return fmt.unpack_from(buf, offset)[0]


class _Ring:
    """``size`` bytes of kernel memory at ``addr``, read a window at a time.

    Every window is read once when the ring is opened, so that a ring the dump lacks any byte
    of fails as a whole (makedumpfile reads each ring whole); only the last window read is
    kept, so memory stays bounded whatever size the dump claims.
    """

    def __init__(self, kvirt: AddressSpace, addr: int, size: int) -> None:
        self.kvirt, self.addr, self.size = kvirt, addr, size
        self._start, self._data = 0, b""
        for start in range(0, size, RING_WINDOW):
            self._load(start)

    def _load(self, start: int) -> None:
        n = min(RING_WINDOW, self.size - start)
        self._start, self._data = start, self.kvirt.read_exact(self.addr + start, n)

    def get(self, offset: int, n: int) -> bytes:
        """Bytes ``[offset, offset + n)`` of the ring (cut at its end)."""
        n = max(0, min(n, self.size - offset))
        if self._start <= offset and offset + n <= self._start + len(self._data):
            rel = offset - self._start
            return self._data[rel : rel + n]
        if n > RING_WINDOW // 2:
            return self.kvirt.read_exact(self.addr + offset, n)
        self._load(offset // (RING_WINDOW // 2) * (RING_WINDOW // 2))
        return self.get(offset, n)

    def unpack(self, offset: int, fmt: struct.Struct) -> int:
        return fmt.unpack(self.get(offset, fmt.size))[0]


# --- Linux 5.10+: the lockless ring buffer ---------------------------------------------------


def _lockless(kvirt: AddressSpace, vi: VmcoreInfo) -> bytes:
    """``dump_lockless_dmesg`` + ``dump_record`` (makedumpfile ``printk.c``)."""
    need = vi.need
    prb = kvirt.u64(need("SYMBOL", "prb"))  # struct printk_ringbuffer *prb
    rb_size = need("SIZE", "printk_ringbuffer", 1, MAX_PRINTK_STRUCT)
    rb = kvirt.read_exact(prb, rb_size)
    desc_ring = need("OFFSET", "printk_ringbuffer.desc_ring", within=rb_size)
    data_ring = need("OFFSET", "printk_ringbuffer.text_data_ring", within=rb_size)
    counter = need("OFFSET", "atomic_long_t.counter", within=vi.size("atomic_long_t") or 8, width=8)

    def member(base: int, key: str, fmt: struct.Struct, extra: int = 0) -> int:
        return _field(rb, base + need("OFFSET", key, within=rb_size) + extra, fmt, key)

    count_bits = member(desc_ring, "prb_desc_ring.count_bits", _U32)
    if count_bits > MAX_DESC_BITS:
        raise Unavailable(f"prb desc_ring.count_bits is {count_bits}: corrupt ring buffer")
    count = 1 << count_bits
    desc_size = need("SIZE", "prb_desc", 1, MAX_PRINTK_STRUCT)
    info_size = need("SIZE", "printk_info", 1, MAX_PRINTK_STRUCT)
    descs_addr = member(desc_ring, "prb_desc_ring.descs", _U64)
    infos_addr = member(desc_ring, "prb_desc_ring.infos", _U64)
    head_id = member(desc_ring, "prb_desc_ring.head_id", _U64, counter)
    tail_id = member(desc_ring, "prb_desc_ring.tail_id", _U64, counter)

    size_bits = member(data_ring, "prb_data_ring.size_bits", _U32)
    if size_bits > MAX_TEXT_BITS:
        raise Unavailable(f"prb text_data_ring.size_bits is {size_bits}: corrupt ring buffer")
    data_size = 1 << size_bits
    data_addr = member(data_ring, "prb_data_ring.data", _U64)

    off_state = need("OFFSET", "prb_desc.state_var", within=desc_size, width=8) + counter
    off_lpos = need("OFFSET", "prb_desc.text_blk_lpos", within=desc_size, width=16)
    lpos_size = vi.size("prb_data_blk_lpos", 16, MAX_PRINTK_STRUCT) or 16
    off_begin = off_lpos + need("OFFSET", "prb_data_blk_lpos.begin", within=lpos_size, width=8)
    off_next = off_lpos + need("OFFSET", "prb_data_blk_lpos.next", within=lpos_size, width=8)
    off_ts = need("OFFSET", "printk_info.ts_nsec", within=info_size, width=8)
    off_len = need("OFFSET", "printk_info.text_len", within=info_size, width=2)
    for off, width, size, what in (
        (off_state, 8, desc_size, "prb_desc.state_var"),
        (off_begin, 8, desc_size, "prb_data_blk_lpos.begin"),
        (off_next, 8, desc_size, "prb_data_blk_lpos.next"),
        (off_ts, 8, info_size, "printk_info.ts_nsec"),
        (off_len, 2, info_size, "printk_info.text_len"),
    ):
        if off < 0 or off + width > size:
            raise Unavailable(f"VMCOREINFO puts {what} outside its structure ({size} bytes)")

    descs = _Ring(kvirt, descs_addr, desc_size * count)
    infos = _Ring(kvirt, infos_addr, info_size * count)
    data = _Ring(kvirt, data_addr, data_size)

    # makedumpfile walks the ids from tail_id to head_id (inclusive) and prints the record of
    # each id whose descriptor carries exactly that id in a committed or finalized state. A slot
    # holds one id, so the same records come out of one pass over the slots, in id order: the
    # walk stays bounded by the ring's size even when head_id and tail_id are corrupt.
    tail_id &= DESC_ID_MASK
    span = (head_id - tail_id) & DESC_ID_MASK
    found: list[tuple[int, int]] = []
    for slot in range(count):
        state_var = descs.unpack(slot * desc_size + off_state, _U64)
        desc_id = state_var & DESC_ID_MASK
        if desc_id % count != slot:
            continue
        distance = (desc_id - tail_id) & DESC_ID_MASK
        if distance > span:
            continue
        if state_var >> DESC_FLAGS_SHIFT not in (desc_committed, desc_finalized):
            continue  # reserved (being written or reopened for a continuation) or reusable
        found.append((distance, slot))
    found.sort()

    out: list[bytes] = []
    for _, slot in found:
        desc = slot * desc_size
        begin = descs.unpack(desc + off_begin, _U64) % data_size
        next_ = descs.unpack(desc + off_next, _U64) % data_size
        if begin == next_:
            continue  # a data-less record (FAILED_LPOS, or an empty line)
        info = slot * info_size
        text_len = infos.unpack(info + off_len, _U16)
        if begin > next_:
            begin = 0  # a wrapping data block keeps its data at the start of the ring
        begin += DATA_BLOCK_ID_SIZE
        if next_ >= begin and next_ - begin < text_len:
            text_len = next_ - begin  # the text was cut to fit its data block
        text = data.get(begin, text_len)
        out.append(format_record(infos.unpack(info + off_ts, _U64), text))
    return b"".join(out)


# --- Linux 3.5 to 5.9: struct printk_log records in log_buf -----------------------------------


def _structured(kvirt: AddressSpace, vi: VmcoreInfo) -> bytes:
    """``dump_dmesg`` / ``dump_log_entry`` of makedumpfile for variable-length records."""
    # 3.5-3.10 call the record "struct log"; 3.11 renamed it "struct printk_log" (commit
    # 62e32ac3505a). makedumpfile takes the printk_log keys when SIZE(printk_log) is present.
    name = "printk_log" if vi.size("printk_log") is not None else "log"
    need = vi.need
    hdr_size = need("SIZE", name, 1, MAX_PRINTK_STRUCT)
    off_ts = need("OFFSET", f"{name}.ts_nsec", within=hdr_size, width=8)
    off_len = need("OFFSET", f"{name}.len", within=hdr_size, width=2)
    off_text_len = need("OFFSET", f"{name}.text_len", within=hdr_size, width=2)

    first_idx = kvirt.u32(need("SYMBOL", "log_first_idx"))
    next_idx = kvirt.u32(need("SYMBOL", "log_next_idx"))
    log_buf = kvirt.u64(need("SYMBOL", "log_buf"))  # char *log_buf
    buf_len = kvirt.s32(need("SYMBOL", "log_buf_len"))
    if buf_len < hdr_size or buf_len > MAX_LOG_BUF_LEN:
        raise Unavailable(f"log_buf_len is {buf_len}: corrupt log buffer")
    buf = _Ring(kvirt, log_buf, buf_len)
    last = buf_len - hdr_size  # the highest index a record header may start at

    def length(idx: int) -> int:
        return buf.unpack(idx + off_len, _U16)

    out: list[bytes] = []
    if first_idx != next_idx and first_idx > last:
        raise Unavailable(f"log_first_idx {first_idx} lies outside log_buf ({buf_len} bytes)")
    ptr = first_idx
    seen: set[int] = set()
    # Bounded: every pass visits a new index of the buffer. makedumpfile stops the same way: at
    # log_next_idx, at an index outside the buffer ("Index outside log_buf detected"), or after
    # one round of a cycle ("Cycle when parsing dmesg detected"), keeping the lines written.
    while ptr != next_idx and ptr not in seen:
        seen.add(ptr)
        msg_len = length(ptr)
        # A record of length 0 marks the end of the buffer: the record is at its start.
        rec = ptr if msg_len else 0
        text_len = buf.unpack(rec + off_text_len, _U16)
        text = buf.get(rec + hdr_size, text_len)
        out.append(format_record(buf.unpack(rec + off_ts, _U64), text))
        ptr = ptr + msg_len if msg_len else length(0)
        if ptr > last:
            break
    return b"".join(out)


# --- before Linux 3.5: a plain character ring ------------------------------------------------


def kernel_version(release: str | None) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of an OSRELEASE such as ``2.6.32-5-amd64`` (as strtol reads)."""
    if release is None:
        raise Unavailable("VMCOREINFO has no OSRELEASE")
    nums = [int(m) if m else 0 for m in re.findall(r"^(\d*)\D?(\d*)\D?(\d*)", release)[0]]
    return nums[0], nums[1], nums[2]


def _plain(kvirt: AddressSpace, vi: VmcoreInfo) -> bytes:
    """makedumpfile's pre-3.5 path: the ring's bytes, oldest first, written out unchanged."""
    need = vi.need
    log_buf = kvirt.u64(need("SYMBOL", "log_buf"))
    # log_end became "unsigned" in 2.6.25; it was "unsigned long" before. (makedumpfile reads
    # the release from init_uts_ns in memory; VMCOREINFO's OSRELEASE is the same string.)
    if kernel_version(vi.osrelease) >= (2, 6, 25):
        log_end = kvirt.u32(need("SYMBOL", "log_end"))
    else:
        log_end = kvirt.u64(need("SYMBOL", "log_end"))
    buf_len = kvirt.s32(need("SYMBOL", "log_buf_len"))
    if buf_len <= 0 or buf_len > MAX_LOG_BUF_LEN or buf_len & (buf_len - 1):
        raise Unavailable(f"log_buf_len is {buf_len}: corrupt log buffer")
    if log_end < buf_len:
        return kvirt.read_exact(log_buf, log_end)
    index = log_end & (buf_len - 1)
    return kvirt.read_exact(log_buf + index, buf_len - index) + kvirt.read_exact(log_buf, index)


def read_dmesg(kvirt: AddressSpace, vi: VmcoreInfo) -> bytes:
    """The kernel log of the dump, byte for byte as ``makedumpfile --dump-dmesg`` writes it.

    Raises Unavailable (a missing key, a corrupt header) or FaultError (the log's memory is
    not in the dump), as makedumpfile fails rather than printing a partial log in those cases.
    """
    if vi.symbol("prb") is not None:
        return _lockless(kvirt, vi)
    for key in ("log_buf", "log_buf_len"):
        vi.need("SYMBOL", key)
    if vi.symbol("log_end") is not None:
        return _plain(kvirt, vi)
    return _structured(kvirt, vi)
