"""Test helpers: kallsyms tables built by the tests, and the real dumps' gt/kallsyms.txt.

The encoder here follows scripts/kallsyms.c (token table + index, ULEB128 lengths, the four
address encodings), written from the format, not from the decoder under test.
"""

from __future__ import annotations

import struct

from vmcorefs.kernel.kallsyms import ABSOLUTE, ABSOLUTE_PERCPU, RELATIVE
from vmcorefs.memory.space import AddressSpace
from vmcorefs.vmcoreinfo import VmcoreInfo

TABLES = 0xFFFFFFFF82000000  # where the test puts the kallsyms tables
STEXT = 0xFFFFFFFF81000000
LONG_NAME = "rust_" + "q" * 300  # compresses to > 127 bytes: a two-byte length

SYMBOLS = [
    # (address, type, name), sorted by address as scripts/kallsyms sorts them
    (0x0, "A", "__per_cpu_start"),
    (0x40, "A", "percpu_counter"),
    (0x2000, "A", "__per_cpu_end"),
    (STEXT, "T", "startup_64"),
    (STEXT, "T", "_stext"),
    (STEXT + 0x40, "t", "helper"),
    (STEXT + 0x40, "t", "helper_alias"),
    (STEXT + 0x100, "T", "kallsyms_lookup_name"),
    (STEXT + 0x180, "T", LONG_NAME),
    (STEXT + 0x200, "t", "helper"),
    (STEXT + 0x1000, "T", "_etext"),
    (0xFFFFFFFF81800000, "D", "init_task"),
    (0xFFFFFFFF81800100, "d", "__key.0"),
    (0xFFFFFFFF81800100, "d", "__key.0"),
    (0xFFFFFFFF81900000, "B", "__per_cpu_offset"),
    (0xFFFFFFFF81900100, "b", "_end"),
]
NONPERCPU = [s for s in SYMBOLS if s[1] != "A"]


class FakeKvirt(AddressSpace):
    """Kernel memory that holds one blob at ``base`` and nothing else."""

    name = "kvirt"

    def __init__(self, base: int, data: bytes, hole: tuple[int, int] | None = None) -> None:
        self.base = base
        self.data = data
        self.hole = hole  #: an absent [start, end) inside the blob

    def chunk_mapped(self, addr: int) -> bool:
        """Page tables would map the 2 MiB chunks that the blob touches (kimage's scan)."""
        chunk = addr & ~((1 << 21) - 1)
        return chunk < self.base + len(self.data) and chunk + (1 << 21) > self.base

    def read(self, addr: int, size: int) -> bytes:
        end = min(addr + size, self.base + len(self.data))
        if self.hole:
            if self.hole[0] <= addr < self.hole[1]:
                return b""
            if addr < self.hole[0]:
                end = min(end, self.hole[0])
        if not self.base <= addr < end:
            return b""
        return self.data[addr - self.base : end - self.base]


def make_tokens() -> list[bytes]:
    """256 tokens: every printable character as itself, the other codes as multi-char tokens."""
    multi = [b"kallsyms_", b"per_cpu", b"helper", b"startup", b"_", b"__", b"init", b"Tt"]
    tokens = []
    for code in range(256):
        if 0x21 <= code <= 0x7E:
            tokens.append(bytes([code]))
        else:
            tokens.append(multi[code % len(multi)] + (b"x" if code % 3 == 0 else b""))
    return tokens


def compress(text: bytes, tokens: list[bytes]) -> bytes:
    """Greedy longest-token compression (any valid token sequence is a valid table)."""
    out = bytearray()
    pos = 0
    while pos < len(text):
        best = max(
            (i for i, t in enumerate(tokens) if t and text.startswith(t, pos)),
            key=lambda i: len(tokens[i]),
        )
        out.append(best)
        pos += len(tokens[best])
    return bytes(out)


def uleb_length(n: int) -> bytes:
    assert 0 < n <= 0x3FFF
    return bytes([n]) if n <= 0x7F else bytes([(n & 0x7F) | 0x80, n >> 7])


def align8(buf: bytearray) -> None:
    buf += bytes(-len(buf) % 8)


def build(
    encoding: str,
    symbols=None,
    *,
    relative_base_key: bool | None = None,
    stext=STEXT,
    offsets_last: bool = False,
):
    """Lay the tables out as scripts/kallsyms.c does; return (kvirt, vmcoreinfo, locations).

    ``offsets_last``: the later order (num_syms, names, markers, token table and index, then
    the offsets), instead of the 6.1 order (offsets, relative_base, num_syms, names, ...).
    """
    if symbols is None:
        symbols = SYMBOLS if encoding in (ABSOLUTE, ABSOLUTE_PERCPU) else NONPERCPU
    tokens = make_tokens()
    buf = bytearray()
    loc: dict[str, int] = {}
    base = min(a for a, t, _ in symbols if t != "A")

    def addresses() -> None:
        at = TABLES + len(buf)
        loc["kallsyms_offsets" if encoding != ABSOLUTE else "kallsyms_addresses"] = at
        for i, (addr, type_, _name) in enumerate(symbols):
            if encoding == ABSOLUTE:
                buf.extend(struct.pack("<Q", addr))
            elif encoding == RELATIVE:
                buf.extend(struct.pack("<I", addr - base))
            elif encoding == ABSOLUTE_PERCPU:
                buf.extend(struct.pack("<i", addr if type_ == "A" else base - addr - 1))
            else:
                buf.extend(struct.pack("<i", addr - (at + 4 * i)))
        align8(buf)
        if encoding in (RELATIVE, ABSOLUTE_PERCPU):
            loc["kallsyms_relative_base"] = TABLES + len(buf)
            buf.extend(struct.pack("<Q", base))

    if not offsets_last:
        addresses()
    loc["kallsyms_num_syms"] = TABLES + len(buf)
    buf += struct.pack("<I", len(symbols))
    align8(buf)
    loc["kallsyms_names"] = TABLES + len(buf)
    for _addr, type_, name in symbols:
        data = compress((type_ + name).encode(), tokens)
        buf += uleb_length(len(data)) + data
    align8(buf)
    buf += struct.pack("<I", 0)  # kallsyms_markers (one marker)
    align8(buf)
    loc["kallsyms_token_table"] = TABLES + len(buf)
    index = []
    table = bytearray()
    for t in tokens:
        index.append(len(table))
        table += t + b"\0"
    buf += table
    align8(buf)
    loc["kallsyms_token_index"] = TABLES + len(buf)
    buf += struct.pack("<256H", *index)
    align8(buf)
    if offsets_last:
        addresses()
    if relative_base_key and "kallsyms_relative_base" not in loc:
        # A key 7.0 no longer has; its value here is a plausible base.
        loc["kallsyms_relative_base"] = TABLES + len(buf)
        buf += struct.pack("<Q", STEXT)
    text = "".join(f"SYMBOL({k})={v:x}\n" for k, v in loc.items())
    if stext is not None:
        text += f"SYMBOL(_stext)={stext:x}\n"
    text += f"SYMBOL(init_task)={0xFFFFFFFF81800000:x}\n"
    return FakeKvirt(TABLES, bytes(buf)), VmcoreInfo(text.encode()), loc


def gt_core_lines(case) -> list[tuple[int, str, str]]:
    """(address, type, name) of every core (non-module) line of gt/kallsyms.txt, in order."""
    out = []
    for line in case.file("gt/kallsyms.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # module lines have a fourth field, "[module]"
            out.append((int(parts[0], 16), parts[1], parts[2]))
    return out
