"""The older log layouts against makedumpfile itself.

A copy of a real dump that makedumpfile reads (kaslr-256m's ``mdf-d31.elf``) gets a synthetic
log buffer of each era written into its kernel memory (over the 5.10+ text ring, 128 KiB of the
kernel image) and a VMCOREINFO note rewritten to that era's keys. Debian's ``makedumpfile
--dump-dmesg`` then prints the log, and vmcorefs must print the same bytes. Skips when
makedumpfile or the dump is absent.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.printk_layouts import AREA_SIZE, COMMITTED, RESERVED, LogBuf, Prb, plain_log
from vmcorefs.kernel.dump import open_dump

pytestmark = pytest.mark.realdump

#: VMCOREINFO keys of the 5.10+ ring buffer, dropped before another era's keys are added.
_PRINTK_KEY_WORDS = (
    "prb",
    "printk_rb_static",
    "clear_seq",
    "printk_ringbuffer",
    "prb_",
    "printk_info",
    "dev_printk_info",
    "atomic_long_t",
    "latched_seq",
)
PT_NOTE = 4


def _makedumpfile() -> str:
    path = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if not Path(path).exists():
        pytest.skip("makedumpfile is not installed (apt-get install makedumpfile)")
    return path


class Canvas:
    """A writable copy of a dump: kernel memory written by virtual address, notes replaced."""

    def __init__(self, src: Path, dest: Path) -> None:
        shutil.copyfile(src, dest)
        dest.chmod(0o644)
        self.path = dest
        with open_dump(str(src)) as dump:
            vi = dump.vmcoreinfo
            prb = dump.kvirt.u64(vi.need("SYMBOL", "prb"))
            rb = dump.kvirt.read_exact(prb, vi.need("SIZE", "printk_ringbuffer"))
            ring = vi.need("OFFSET", "printk_ringbuffer.text_data_ring")
            data = ring + vi.need("OFFSET", "prb_data_ring.data")
            self.base = struct.unpack_from("<Q", rb, data)[0]
            # File offset of every page of the area, through the dump's own page tables.
            self.offsets: dict[int, int] = {}
            for va in range(self.base & ~0xFFF, self.base + AREA_SIZE, 0x1000):
                self.offsets[va] = self._file_offset(dump, va)
            self.vmcoreinfo = dict(vi.items())
            # makedumpfile takes the kernel version from init_uts_ns.name.release in memory
            # (check_release()), struct new_utsname: sysname[65], nodename[65], release[65].
            uts = vi.need("SYMBOL", "init_uts_ns") + vi.need("OFFSET", "uts_namespace.name")
            self.release_va = uts + 2 * 65
            self.release = dump.kvirt.read_exact(self.release_va, 65)
            self.offsets[self.release_va & ~0xFFF] = self._file_offset(dump, self.release_va)
        with open(dest, "rb") as f:
            ehdr = f.read(64)
            phoff, phentsize, phnum = (
                struct.unpack_from("<Q", ehdr, 32)[0],
                *struct.unpack_from("<HH", ehdr, 54),
            )
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                p_type, _, p_offset, _, _, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
                if p_type == PT_NOTE:
                    self.note_phdr = phoff + i * phentsize
                    self.note_offset, self.note_size = p_offset, p_filesz
                    f.seek(p_offset)
                    self.notes = f.read(p_filesz)

    @staticmethod
    def _file_offset(dump, va: int) -> int:
        """Where the page of ``va`` sits in the ELF file."""
        paddr = dump.kvirt.translate(va & ~0xFFF)
        seg = next(s for s in dump.source.segments if s.start <= paddr < s.start + s.filesz)
        return seg.offset + paddr - seg.start

    def _poke(self, f, va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page = (va + pos) & ~0xFFF
            n = min(len(data) - pos, page + 0x1000 - (va + pos))
            f.seek(self.offsets[page] + (va + pos - page))
            f.write(data[pos : pos + n])
            pos += n

    def write(self, regions: list[tuple[int, bytes]]) -> None:
        with open(self.path, "r+b") as f:
            self._poke(f, self.base, bytes(AREA_SIZE))  # clear the area first
            for va, data in regions:
                assert self.base <= va and va + len(data) <= self.base + AREA_SIZE
                self._poke(f, va, data)

    def set_vmcoreinfo(self, keys: dict[str, object], release: str | None = None) -> None:
        kept = {
            k: v
            for k, v in self.vmcoreinfo.items()
            if not any(f"({w}" in k for w in _PRINTK_KEY_WORDS)
        }
        if release:
            kept["OSRELEASE"] = release
        uts_release = release.encode().ljust(65, b"\0") if release else self.release
        text = "".join(f"{k}={v}\n" for k, v in {**kept, **keys}.items()).encode()
        out = bytearray()
        pos = 0
        while pos + 12 <= len(self.notes):
            namesz, descsz, ntype = struct.unpack_from("<III", self.notes, pos)
            size = 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
            name = self.notes[pos + 12 : pos + 12 + namesz]
            if name.rstrip(b"\0") == b"VMCOREINFO":
                out += struct.pack("<III", namesz, len(text), ntype) + name.ljust(12, b"\0")
                out += text.ljust((len(text) + 3) // 4 * 4, b"\0")
            else:
                out += self.notes[pos : pos + size]
            pos += size
        assert len(out) <= self.note_size
        with open(self.path, "r+b") as f:
            f.seek(self.note_offset)
            f.write(bytes(out).ljust(self.note_size, b"\0"))
            f.seek(self.note_phdr + 32)
            f.write(struct.pack("<QQ", len(out), len(out)))  # p_filesz, p_memsz
            self._poke(f, self.release_va, uts_release)

    def compare(self, tmp: Path) -> bytes:
        out = tmp / "dmesg.txt"
        out.unlink(missing_ok=True)
        run = subprocess.run(
            [_makedumpfile(), "--dump-dmesg", str(self.path), str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        want = out.read_bytes()
        with open_dump(str(self.path)) as dump:
            got = dump.dmesg()
        assert got == want
        return want


@pytest.fixture(scope="module")
def canvas(dumps_dir: Path, tmp_path_factory) -> Canvas:
    _makedumpfile()
    src = dumps_dir / "kaslr-256m" / "mdf-d31.elf"
    if not src.exists():
        pytest.skip("kaslr-256m/mdf-d31.elf is absent")
    return Canvas(src, tmp_path_factory.mktemp("mdf") / "canvas.elf")


def _texts(n: int) -> list[bytes]:
    """Assorted record texts: plain, multi-line, tabs, control and 8-bit bytes, long lines."""
    kinds = [
        b"usb 1-1: new high-speed USB device number %d using ehci-pci",
        b"first line %d\nsecond line\n\tthird, tabbed",
        b"ctl \x01\x1b[0m del \x7f utf-8 \xc3\xa9\xe2\x82\xac nul \x00 end %d",
        b"x" * 300 + b" %d",
        b"%d",
    ]
    return [kinds[i % len(kinds)].replace(b"%d", b"%d" % i) for i in range(n)]


def test_printk_log_matches_makedumpfile(canvas: Canvas, tmp_path: Path) -> None:
    log = LogBuf(16384)
    for i, text in enumerate(_texts(150)):
        log.add(text, ts=i * 123_456_789_011, dict_=b"SUBSYSTEM=usb\0DEVICE=c189:1" * (i % 2))
    assert log.first_seq > 0 and log.first_idx > log.next_idx  # wrapped
    canvas.write(log.regions(canvas.base))
    canvas.set_vmcoreinfo(log.keys(canvas.base))
    want = canvas.compare(tmp_path)
    assert want.count(b"\n[") >= 20


def test_struct_log_of_3_5_and_caller_id_match_makedumpfile(canvas: Canvas, tmp_path) -> None:
    log = LogBuf(4096, name="log")
    for i, text in enumerate(_texts(30)):
        log.add(text, ts=i * 1_000_000)
    canvas.write(log.regions(canvas.base))
    canvas.set_vmcoreinfo(log.keys(canvas.base))
    canvas.compare(tmp_path)
    log = LogBuf(4096, caller_id=True)
    for i, text in enumerate(_texts(12)):
        log.add(text, ts=i, cid=0x80000000 | i)
    canvas.write(log.regions(canvas.base))
    canvas.set_vmcoreinfo(log.keys(canvas.base))
    canvas.compare(tmp_path)


def test_lockless_ring_matches_makedumpfile(canvas: Canvas, tmp_path: Path) -> None:
    prb = Prb(count_bits=5, size_bits=11)  # 32 descriptors, 2 KiB of text: both wrap
    for i, text in enumerate(_texts(70)):
        state = RESERVED if i == 69 else COMMITTED if i % 7 == 3 else 2
        room = 0 if i % 11 == 5 else None
        prb.add(text[:200], ts=i * 987_654_321, state=state, room=room, dev_info=b"SUBSYSTEM=pci")
    prb.add(b"cut short", ts=5, text_len=500, room=8)  # a block of 8 text bytes
    canvas.write(prb.regions(canvas.base))
    canvas.set_vmcoreinfo(prb.keys(canvas.base))
    want = canvas.compare(tmp_path)
    assert want.endswith(b"[    0.000000] cut shor\n")


@pytest.mark.parametrize("release", ["3.4.0", "2.6.24"])
def test_plain_ring_matches_makedumpfile(canvas: Canvas, tmp_path: Path, release: str) -> None:
    text = b"".join(b"<6>[%5d.000000] " % i + t.replace(b"\n", b" ") + b"\n" for i, t in
                    enumerate(_texts(120)))  # fmt: skip
    regions, keys = plain_log(text, 8192, wide_end=release == "2.6.24")
    canvas.write(regions(canvas.base))
    canvas.set_vmcoreinfo(keys(canvas.base), release=release)
    want = canvas.compare(tmp_path)
    assert want == text[-8192:]
