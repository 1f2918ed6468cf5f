"""Build a minimal x86_64 vmlinux-like ELF (sections, .symtab, build ID, banner) for tests.

Written from the ELF64 format (include/uapi/linux/elf.h), not from the reader under test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_NOBITS = 1, 2, 3, 7, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
SHN_UNDEF, SHN_ABS = 0, 0xFFF1


@dataclass
class Sym:
    name: str
    value: int
    section: str | int  # a section name, or SHN_UNDEF / SHN_ABS
    bind: int = STB_GLOBAL
    type: int = STT_FUNC
    size: int = 0


def build_vmlinux(
    *,
    text: tuple[int, int],
    rodata: tuple[int, bytes],
    bss: tuple[int, int],
    percpu: tuple[int, int] = (0, 0x40000),
    symbols: list[Sym],
    build_id: bytes | None,
    machine: int = 62,
    with_symtab: bool = True,
) -> bytes:
    """An ELF64 executable: .text (header only), .rodata (with data), .data..percpu, .bss,
    an optional .note.gnu.build-id, .symtab and .strtab."""
    shstr = bytearray(b"\0")

    def shname(name: str) -> int:
        shstr.extend(name.encode() + b"\0")
        return len(shstr) - len(name) - 1

    body = bytearray(bytes(64))  # the ELF header goes here at the end
    sections: list[list[int]] = [[0] * 10]  # name type flags addr offset size link info align ent
    index: dict[str, int] = {}

    def add(name, type_, flags, addr, data=b"", size=None, link=0, info=0, entsize=0, align=8):
        offset = len(body)
        body.extend(data)
        body.extend(bytes(-len(body) % 8))
        index[name] = len(sections)
        size = len(data) if size is None else size
        header = [shname(name), type_, flags, addr, offset, size, link, info, align, entsize]
        sections.append(header)

    add(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text[0], size=text[1])
    add(".rodata", SHT_PROGBITS, SHF_ALLOC, rodata[0], rodata[1])
    add(".data..percpu", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, percpu[0], size=percpu[1])
    add(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, bss[0], size=bss[1])
    if build_id is not None:
        note = struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id
        add(".note.gnu.build-id", SHT_NOTE, SHF_ALLOC, 0, note, align=4)
    strtab = bytearray(b"\0")
    symtab = bytearray(bytes(24))
    for s in symbols:
        name_off = len(strtab)
        strtab.extend(s.name.encode() + b"\0")
        shndx = index[s.section] if isinstance(s.section, str) else s.section
        symtab += struct.pack(
            "<IBBHQQ", name_off, (s.bind << 4) | s.type, 0, shndx, s.value, s.size
        )
    if with_symtab:
        strtab_index = len(sections) + 1
        add(".symtab", SHT_SYMTAB, 0, 0, bytes(symtab), link=strtab_index, info=1, entsize=24)
        add(".strtab", SHT_STRTAB, 0, 0, bytes(strtab))
    shstrndx = len(sections)
    name = shname(".shstrtab")
    sections.append([name, SHT_STRTAB, 0, 0, len(body), len(shstr), 0, 0, 1, 0])
    body.extend(shstr)
    body.extend(bytes(-len(body) % 8))
    shoff = len(body)
    for sh in sections:
        body += struct.pack("<IIQQQQIIQQ", *sh)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(sections), shstrndx
    )
    body[:64] = header
    return bytes(body)
