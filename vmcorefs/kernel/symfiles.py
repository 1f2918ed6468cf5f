"""``--vmlinux FILE`` and ``--system-map FILE``: symbols the user gives, checked against the dump.

Both hold link-time addresses; under KASLR the kernel image moved by VMCOREINFO's
``KERNELOFFSET``, so every address at or above ``__START_KERNEL_map`` is relocated by it. Smaller
values are per-CPU offsets (x86_64 SMP before 6.15) or constants and stay as they are.

A file that does not belong to the dump is refused (``DumpError``, before anything is mounted):

* vmlinux: its GNU build ID (``.note.gnu.build-id``) must equal VMCOREINFO's ``BUILD-ID``, and
  its ``linux_banner`` bytes must equal the dump's memory at the relocated ``linux_banner``.
* System.map: the dump's memory at its relocated ``linux_banner`` must read
  ``Linux version <OSRELEASE> ``.
* Both: every VMCOREINFO ``SYMBOL()`` the file also names must be at the same address.

A check that cannot be made (no BUILD-ID in VMCOREINFO, banner memory absent) is skipped; a file
for which no check at all could be made is refused too.

Symbols are filtered as scripts/kallsyms.c filters ``nm`` output: undefined (``U``, ``w``,
``v``), debugging (``N``) and absolute (``A``) symbols are left out, as are section and file
symbols of the ELF symbol table.
"""

from __future__ import annotations

import os
import re
import struct

from ..errors import DumpError, FaultError
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo
from .symbols import SymbolSource

#: arch/x86/include/asm/page_64_types.h: the kernel image's link-time base.
START_KERNEL_map = 0xFFFFFFFF80000000
_MASK64 = (1 << 64) - 1
#: A System.map is a few MB; anything much larger is not one.
MAX_SYSTEM_MAP = 256 << 20
#: A .symtab/.strtab larger than this is not a kernel's.
MAX_SYMTAB = 512 << 20
#: include/linux/kallsyms.h KSYM_NAME_LEN (6.1+): the longest name a kernel symbol has.
KSYM_NAME_LEN = 512
#: The banner is one line of text; bound the read.
BANNER_MAX = 1024
#: nm letters that scripts/kallsyms.c leaves out (and so do we).
IGNORED_TYPES = frozenset("UwvNnAau")

# include/uapi/linux/elf.h
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
SHT_SYMTAB = 2
SHT_NOBITS = 8
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2
STB_GNU_UNIQUE = 10
STT_OBJECT = 1
STT_SECTION = 3
STT_FILE = 4
NT_GNU_BUILD_ID = 3
EM_X86_64 = 62
_ELF64_SYM = struct.Struct("<IBBHQQ")

_MAP_LINE = re.compile(rb"^([0-9a-fA-F]{1,16}) ([A-Za-z?]) (\S+)(?:\s.*)?$")


def relocate(address: int, kerneloffset: int) -> int:
    """A link-time address as the running kernel has it (KASLR): image addresses move."""
    if address >= START_KERNEL_map:
        return (address + kerneloffset) & _MASK64
    return address


def load_user_symbols(
    vmlinux: str | None, system_map: str | None, kvirt: AddressSpace, vmcoreinfo: VmcoreInfo
) -> list[SymbolSource]:
    """The user's files, in order of precedence, each checked against the dump."""
    out = []
    if vmlinux:
        out.append(read_vmlinux(vmlinux, kvirt, vmcoreinfo))
    if system_map:
        out.append(read_system_map(system_map, kvirt, vmcoreinfo))
    return out


# -- checks ----------------------------------------------------------------------------------


def _dump_banner(kvirt: AddressSpace, address: int) -> bytes | None:
    try:
        return kvirt.cstring(address, BANNER_MAX)
    except FaultError:
        return None


def _check_vmcoreinfo_symbols(path: str, entries, vmcoreinfo: VmcoreInfo) -> int:
    """Every VMCOREINFO SYMBOL() that the file names once must be at the same address."""
    wanted = vmcoreinfo.symbols()
    seen: dict[str, set[int]] = {}
    for name, address, _t, _s in entries:
        if name in wanted:
            seen.setdefault(name, set()).add(address)
    checked = 0
    for name, addresses in seen.items():
        if len(addresses) != 1:
            continue
        (address,) = addresses
        if address != wanted[name]:
            raise DumpError(
                path,
                f"does not match the dump: {name} is {address:#x} here (relocated by "
                f"KERNELOFFSET) but SYMBOL({name}) is {wanted[name]:#x} in the dump",
            )
        checked += 1
    return checked


def _unique(entries, name: str) -> tuple[int, int | None] | None:
    found = {(a, s) for n, a, _t, s in entries if n == name}
    return found.pop() if len(found) == 1 else None


# -- System.map ------------------------------------------------------------------------------


def read_system_map(path: str, kvirt: AddressSpace, vmcoreinfo: VmcoreInfo) -> SymbolSource:
    """``nm -n vmlinux`` output: ``ADDRESS TYPE NAME`` lines."""
    data = _read_file(path, MAX_SYSTEM_MAP, "a System.map")
    offset = vmcoreinfo.kerneloffset or 0
    entries: list[tuple[str, int, str, int | None]] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        m = _MAP_LINE.match(line)
        if m is None or len(m.group(3)) >= KSYM_NAME_LEN:
            raise DumpError(path, f"line {number} is not 'address type name': not a System.map")
        type_ = m.group(2).decode()
        if type_ in IGNORED_TYPES:
            continue
        name = m.group(3).decode("utf-8", "surrogateescape")
        entries.append((name, relocate(int(m.group(1), 16), offset), type_, None))
    if not entries:
        raise DumpError(path, "holds no symbols: not a System.map")

    checked = _check_vmcoreinfo_symbols(path, entries, vmcoreinfo)
    banner = _unique(entries, "linux_banner")
    if banner is None:
        raise DumpError(path, "has no (unique) linux_banner: cannot check it matches the dump")
    text = _dump_banner(kvirt, banner[0])
    if text is not None:
        release = vmcoreinfo.osrelease or ""
        if not text.startswith(f"Linux version {release} ".encode("utf-8", "surrogateescape")):
            raise DumpError(
                path,
                f"does not match the dump: its linux_banner ({banner[0]:#x}) reads "
                f"{text[:60]!r} in the dump, not 'Linux version {release} ...'",
            )
        checked += 1
    if not checked:
        raise DumpError(path, "cannot be checked against the dump (linux_banner is absent)")
    return SymbolSource("system-map", path, entries)


# -- vmlinux ---------------------------------------------------------------------------------


def read_vmlinux(path: str, kvirt: AddressSpace, vmcoreinfo: VmcoreInfo) -> SymbolSource:
    """The ELF ``.symtab`` of the kernel's vmlinux, with symbol sizes."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    with _open_input(path) as f:
        if f.read(4) != b"\x7fELF":
            raise DumpError(path, "not an ELF file (a vmlinuz? give the uncompressed vmlinux)")
        f.seek(0)
        try:
            elf = ELFFile(f)
            if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
                raise DumpError(path, f"not an x86_64 vmlinux ({elf['e_machine']})")
            sections = [
                (s["sh_type"], s["sh_flags"], s["sh_addr"], s["sh_offset"], s["sh_size"])
                for s in elf.iter_sections()
            ]
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None or symtab["sh_type"] != "SHT_SYMTAB":
                raise DumpError(path, "has no .symtab (a stripped vmlinux?)")
            strtab_index = symtab["sh_link"]
            build_id = _build_id(elf)
        except ELFError as exc:
            raise DumpError(path, f"corrupt ELF file: {exc}") from None
        sym_data = _section_bytes(f, path, sections, elf.get_section_index(".symtab"))
        str_data = _section_bytes(f, path, sections, strtab_index)
        raw = _parse_symtab(path, sym_data, str_data, sections)
        banner = _vmlinux_banner(f, raw, sections)

    dump_id = (vmcoreinfo.build_id or "").strip().lower()
    checked = 0
    if dump_id and build_id:
        if build_id != dump_id:
            raise DumpError(
                path,
                f"does not match the dump: build ID {build_id}, the dump's BUILD-ID is {dump_id}",
            )
        checked += 1

    offset = vmcoreinfo.kerneloffset or 0
    entries = [(n, relocate(a, offset), t, s) for n, a, t, s in raw]
    checked += _check_vmcoreinfo_symbols(path, entries, vmcoreinfo)
    at = _unique(entries, "linux_banner")
    if banner is not None and at is not None:
        text = _dump_banner(kvirt, at[0])
        if text is not None:
            if text != banner:
                raise DumpError(
                    path,
                    f"does not match the dump: linux_banner is {banner[:60]!r} here, "
                    f"{text[:60]!r} in the dump",
                )
            checked += 1
    if not checked:
        raise DumpError(path, "cannot be checked against the dump (no build ID, no banner)")
    return SymbolSource("vmlinux", path, entries)


def _open_input(path: str):
    """The file opened for reading; DumpError (one line for the user) when it cannot be."""
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise DumpError(path, "is a directory") from None
    except OSError as exc:
        raise DumpError(path, exc.strerror or str(exc)) from None


def _read_file(path: str, limit: int, what: str) -> bytes:
    with _open_input(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise DumpError(path, f"is {size} bytes: too large to be {what}")
            return f.read(limit + 1)
        except OSError as exc:
            raise DumpError(path, exc.strerror or str(exc)) from None


def _build_id(elf) -> str | None:
    """The GNU build ID (NT_GNU_BUILD_ID note), lowercase hex, or None."""
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_NOTE":
            continue
        for note in section.iter_notes():
            if note["n_name"] == "GNU" and note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"]).lower()
    return None


def _section_bytes(f, path: str, sections, index: int) -> bytes:
    if not 0 < index < len(sections):
        raise DumpError(path, f"corrupt ELF file: section index {index} out of range")
    _type, _flags, _addr, offset, size = sections[index]
    if size > MAX_SYMTAB:
        raise DumpError(path, f"corrupt ELF file: symbol section of {size} bytes")
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise DumpError(path, "truncated ELF file: a symbol section is past its end")
    return data


def _letter(shndx: int, info: int, sections) -> str | None:
    """The letter ``nm`` prints for an ELF symbol (binutils' rules), or None to leave it out."""
    bind, stype = info >> 4, info & 0xF
    if stype in (STT_SECTION, STT_FILE) or shndx == SHN_UNDEF:
        return None
    if bind == STB_GNU_UNIQUE:
        return "u"
    if shndx == SHN_ABS:
        letter = "a"
    elif shndx == SHN_COMMON:
        letter = "c"
    elif shndx >= SHN_LORESERVE or shndx >= len(sections):
        return None
    else:
        sh_type, flags = sections[shndx][0], sections[shndx][1]
        if not flags & SHF_ALLOC:
            letter = "n"
        elif sh_type == "SHT_NOBITS":
            letter = "b"
        elif flags & SHF_EXECINSTR:
            letter = "t"
        elif flags & SHF_WRITE:
            letter = "d"
        else:
            letter = "r"
    if bind == STB_WEAK:
        return "V" if stype == STT_OBJECT else "W"
    return letter.upper() if bind == STB_GLOBAL else letter


def _parse_symtab(path: str, data: bytes, strings: bytes, sections):
    """(name, link-time address, letter, size or None) of every symbol kallsyms would keep."""
    if len(data) % _ELF64_SYM.size:
        raise DumpError(path, "corrupt ELF file: .symtab is not a whole number of symbols")
    letters: dict[tuple[int, int], str | None] = {}
    out = []
    for st_name, st_info, _other, shndx, value, size in _ELF64_SYM.iter_unpack(data):
        key = (shndx, st_info)
        letter = letters.get(key, "")
        if letter == "":
            letter = letters[key] = _letter(shndx, st_info, sections)
        if letter is None or letter in IGNORED_TYPES:
            continue
        end = strings.find(b"\0", st_name, st_name + KSYM_NAME_LEN)
        if end <= st_name:
            continue  # no name, or one that runs past the string table or KSYM_NAME_LEN
        name = strings[st_name:end].decode("utf-8", "surrogateescape")
        out.append((name, value, letter, size or None))
    return out


def _vmlinux_banner(f, raw, sections) -> bytes | None:
    """The bytes of ``linux_banner`` in the file (up to its NUL), or None."""
    found = [(a, s) for n, a, _t, s in raw if n == "linux_banner"]
    if len(found) != 1:
        return None
    address, size = found[0]
    for sh_type, flags, sh_addr, offset, sh_size in sections:
        if flags & SHF_ALLOC and sh_type != "SHT_NOBITS" and sh_addr <= address < sh_addr + sh_size:
            f.seek(offset + address - sh_addr)
            data = f.read(min(size or BANNER_MAX, BANNER_MAX, sh_addr + sh_size - address))
            return data.split(b"\0", 1)[0]
    return None
