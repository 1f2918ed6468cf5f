"""Test helpers: kallsyms tables built by the tests, and the real dumps' gt/kallsyms.txt.

The encoder here follows scripts/kallsyms.c (token table + index, ULEB128 lengths, the four
address encodings), written from the format, not from the decoder under test.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass
from functools import cache

from tests.kernelfakes import ReadFake
from vmcorefs.kernel.kallsyms import ABSOLUTE, ABSOLUTE_PERCPU, PLACE_RELATIVE, RELATIVE
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


class FakeKvirt(ReadFake):
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


# -- scripts/kallsyms.c output of each kernel era, inside a synthetic kernel image ---------------
#
# Written from the layout scripts/kallsyms.c has had (its write_src()), for the finder of
# vmcorefs/kernel/kallsyms_finder.py: each label is 8-byte aligned (".balign 8"); the tables in
# the era's order; names compressed with the token algorithm below.


@dataclass(frozen=True)
class Era:
    """How one range of kernels lays out its kallsyms tables."""

    name: str
    encoding: str  #: the address encoding (kallsyms.ABSOLUTE, ABSOLUTE_PERCPU ...)
    wide_counts: bool  #: num_syms and markers as u64 ("PTR"), before 4.20
    uleb: bool  #: two-byte name lengths (6.1+)
    seqs: str  #: "" (none), "before_tokens" (6.1-6.3), "last" (6.4+)
    addresses_last: bool  #: the addresses after the token index (6.4+)

    @property
    def percpu(self) -> bool:
        """Per-CPU symbols as small absolute values (x86_64 SMP before 6.15)."""
        return self.encoding in (ABSOLUTE, ABSOLUTE_PERCPU)


ERAS = {
    e.name: e
    for e in (
        Era("4.5", ABSOLUTE, True, False, "", False),
        Era("4.6", ABSOLUTE_PERCPU, True, False, "", False),
        Era("4.20", ABSOLUTE_PERCPU, False, False, "", False),
        Era("5.x relative", RELATIVE, False, False, "", False),
        Era("6.1", ABSOLUTE_PERCPU, False, True, "before_tokens", False),
        Era("6.4", ABSOLUTE_PERCPU, False, True, "last", True),
        Era("6.15", RELATIVE, False, True, "last", True),
        Era("7.0", PLACE_RELATIVE, False, True, "last", True),
    )
}

IMAGE_KASLR = 0x2C00000
IMAGE_STEXT = 0xFFFFFFFF81000000 + IMAGE_KASLR
_WORDS = (
    "vfs read write sched tick irq mm page alloc free lock unlock net skb tcp udp ext4 "
    "inode dentry kmem cache rcu work queue timer hrtimer pci acpi usb blk"
).split()


def era_symbols(era: Era, count: int = 900, seed: int = 1, shift: int = 0):
    """About ``count`` kernel-like symbols ``(address, type, name)`` sorted by address, as
    scripts/kallsyms sorts them; ``shift`` moves every image address (a decoy's table)."""
    rng = random.Random(seed)
    stext = IMAGE_STEXT + shift
    out: list[tuple[int, str, str]] = []
    if era.percpu:
        out += [(0, "A", "__per_cpu_start"), (0, "A", "fixed_percpu_data"),
                (0x1B0, "A", "cpu_number"), (0x2E000, "A", "__per_cpu_end")]  # fmt: skip
    out += [(stext, "T", "startup_64"), (stext, "T", "_stext"), (stext, "T", "_text")]
    addr = stext + 0x40
    for i in range(count):
        name = "_".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
        if i % 7 == 0:
            name += f"_{i}"
        if i % 97 == 0:
            name = "helper"  # a static name that occurs more than once
        out.append((addr, rng.choice("Tt"), name))
        if i % 50 == 0:
            out.append((addr, "t", f"{name}.cold"))  # an alias at the same address
        addr += rng.randint(1, 64) * 16
    if era.uleb:
        out.append((addr, "T", "rust_" + "q" * 300))  # a two-byte length (6.1+)
        addr += 0x100
    out.append((addr, "T", "_etext"))
    data = stext + 0x1600000
    out += [(data, "D", "init_top_pgt"), (data + 0x2000, "D", "init_task"),
            (data + 0x4000, "D", "init_uts_ns"), (data + 0x5000, "D", "node_online_map"),
            (data + 0x6000, "d", "prb"), (data + 0x8000, "B", "__per_cpu_offset"),
            (data + 0x9000, "B", "_end")]  # fmt: skip
    return out


@cache
def learn_tokens(entries: tuple[bytes, ...]) -> tuple[list[bytes], list[bytes]]:
    """scripts/kallsyms.c's compression: each character that occurs stands for itself; from
    code 255 down, each free code takes the most frequent adjacent pair, which is then replaced
    in every entry. Returns the 256 tokens and the compressed entries."""
    table = [b""] * 256
    for c in {b for e in entries for b in e}:
        table[c] = bytes([c])
    syms = [bytes(e) for e in entries]
    counts: Counter = Counter()
    for sym in syms:
        counts.update(zip(sym, sym[1:], strict=False))
    for code in range(255, -1, -1):
        if table[code]:
            continue
        (a, b), profit = counts.most_common(1)[0] if counts else ((0, 0), 0)
        if profit <= 0:
            break
        table[code] = table[a] + table[b]
        pair = bytes([a, b])
        for i, sym in enumerate(syms):
            if pair in sym:
                counts.subtract(zip(sym, sym[1:], strict=False))
                syms[i] = sym = sym.replace(pair, bytes([code]))
                counts.update(zip(sym, sym[1:], strict=False))
    return table, syms


def era_tables(era: Era, symbols, at: int) -> tuple[bytes, dict[str, int]]:
    """The kallsyms tables of ``symbols`` as scripts/kallsyms.c of ``era`` lays them out at
    ``at`` (8-aligned); and where each table is."""
    assert at % 8 == 0
    tokens, compressed = learn_tokens(tuple((t + n).encode() for _a, t, n in symbols))
    buf = bytearray()
    loc: dict[str, int] = {}

    def label(name: str) -> None:
        align8(buf)
        loc[name] = at + len(buf)

    def addresses() -> None:
        if era.encoding == ABSOLUTE:
            label("kallsyms_addresses")
            for a, _t, _n in symbols:
                buf.extend(struct.pack("<Q", a))
            return
        label("kallsyms_offsets")
        base = min(a for a, t, _n in symbols if not (era.percpu and t == "A"))
        for i, (a, t, _n) in enumerate(symbols):
            if era.encoding == RELATIVE:
                buf.extend(struct.pack("<I", a - base))
            elif era.encoding == ABSOLUTE_PERCPU:
                buf.extend(struct.pack("<i", a if t == "A" else base - a - 1))
            else:  # PLACE_RELATIVE
                buf.extend(struct.pack("<i", a - (loc["kallsyms_offsets"] + 4 * i)))
        if era.encoding != PLACE_RELATIVE:
            label("kallsyms_relative_base")
            buf.extend(struct.pack("<Q", base))

    def seqs() -> None:
        label("kallsyms_seqs_of_names")
        order = sorted(range(len(symbols)), key=lambda i: (symbols[i][2], symbols[i][0], i))
        for i in order:
            buf.extend(i.to_bytes(3, "big"))

    if not era.addresses_last:
        addresses()
    label("kallsyms_num_syms")
    buf.extend(struct.pack("<Q" if era.wide_counts else "<I", len(symbols)))
    label("kallsyms_names")
    markers = []
    names_at = len(buf)
    for i, entry in enumerate(compressed):
        if i % 256 == 0:
            markers.append(len(buf) - names_at)
        assert era.uleb or len(entry) <= 0x7F
        buf.extend(uleb_length(len(entry)) + entry)
    label("kallsyms_markers")
    for m in markers:
        buf.extend(struct.pack("<Q" if era.wide_counts else "<I", m))
    if era.seqs == "before_tokens":
        seqs()
    label("kallsyms_token_table")
    index = []
    for t in tokens:
        index.append(len(buf) - (loc["kallsyms_token_table"] - at))
        buf.extend(t + b"\0")
    label("kallsyms_token_index")
    buf.extend(struct.pack("<256H", *index))
    if era.addresses_last:
        addresses()
    if era.seqs == "last":
        seqs()
    align8(buf)
    return bytes(buf), loc


def era_vmcoreinfo(symbols, loc: dict[str, int] | None = None) -> VmcoreInfo:
    """The VMCOREINFO of the synthetic kernel: the SYMBOL() keys a 4.x/5.x kernel writes;
    with ``loc`` also the kallsyms keys 6.0+ writes."""
    by_name = {n: a for a, _t, n in symbols}
    lines = [
        "OSRELEASE=5.10.0-synthetic",
        f"SYMBOL(init_uts_ns)={by_name['init_uts_ns']:x}",
        f"SYMBOL(node_online_map)={by_name['node_online_map']:x}",
        f"SYMBOL(swapper_pg_dir)={by_name['init_top_pgt']:x}",
        f"SYMBOL(_stext)={by_name['_stext']:x}",
        "SYMBOL(mem_section)=ffff888007ff1000",
        f"SYMBOL(prb)={by_name['prb']:x}",
        f"SYMBOL(init_top_pgt)={by_name['init_top_pgt']:x}",
        f"KERNELOFFSET={IMAGE_KASLR:x}",
    ]
    for key, value in (loc or {}).items():
        if key != "kallsyms_markers" and key != "kallsyms_seqs_of_names":
            lines.append(f"SYMBOL({key})={value:x}")
    return VmcoreInfo(("\n".join(lines) + "\n").encode())


@dataclass
class SyntheticImage:
    kvirt: FakeKvirt
    vmcoreinfo: VmcoreInfo
    symbols: list  #: the real table's (address, type, name), in order
    loc: dict[str, int]  #: where the real table's parts are


#: Where the "rodata" of the synthetic image starts (the text before it is random bytes).
RODATA = 0x100000


def _era_blob(era_name: str, seed: int, shift: int, at: int):
    """The tables of ``era_name`` at ``at``: of its own symbols (seed 1), or of a decoy's (the
    symbols of the plain relative era, whatever the layout: one token table for every era)."""
    era = ERAS[era_name]
    symbols = era_symbols(era if seed == 1 else ERAS["5.x relative"], seed=seed, shift=shift)
    blob, loc = era_tables(era, symbols, at)
    return symbols, blob, loc


def synthetic_image(era_name: str, decoys: tuple[str, ...] = ("random", "truncated", "other"),
                    *, real: bool = True, pad: int = 0) -> SyntheticImage:  # fmt: skip
    """A kernel image at IMAGE_STEXT: random "text", then in "rodata" the decoys asked for,
    then ``pad`` bytes and (``real``) the era's real tables. Decoys: ``random`` (bytes, with
    the digit run a token table starts with), ``truncated`` (a table with 600 bytes cut out of
    its names), ``other`` (a whole table of other symbols, which VMCOREINFO's SYMBOL()s
    contradict)."""
    rng = random.Random(7)
    image = bytearray(rng.randbytes(RODATA))
    symbols = era_symbols(ERAS[era_name])
    for decoy in decoys:
        align8(image)
        image += bytes(64)
        if decoy == "random":
            image += rng.randbytes(4096)
            image += b"".join(b"%c\0" % c for c in b"0123456789abcdefghijklmnopqrstuvwxyz")
            image += rng.randbytes(4096)
        elif decoy == "truncated":
            at = IMAGE_STEXT + len(image)
            _syms, blob, loc = _era_blob(era_name, 2, 0x1000, at)
            cut = loc["kallsyms_names"] - at + 64
            image += blob[:cut] + blob[cut + 600 :]
        elif decoy == "other":
            at = IMAGE_STEXT + len(image)
            _syms, blob, _loc = _era_blob(era_name, 3, 0x1000, at)
            image += blob
        else:
            raise ValueError(decoy)
        image += rng.randbytes(1000)
    image += bytes(pad)
    align8(image)
    loc: dict[str, int] = {}
    if real:
        symbols, blob, loc = _era_blob(era_name, 1, 0, IMAGE_STEXT + len(image))
        image += blob
    image += rng.randbytes(8192)
    return SyntheticImage(
        FakeKvirt(IMAGE_STEXT, bytes(image)), era_vmcoreinfo(symbols), symbols, loc
    )
