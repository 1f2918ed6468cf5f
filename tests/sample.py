"""The bundled sample dump, ``tests/data/sample/``, and its ground truth.

Made by ``tools/make-sample-vmcore --kexec oops`` (see ``tests/data/sample/README.md``): a
Debian 6.1 kernel oopsed in a module under QEMU, its crash kernel copied /proc/vmcore, which
``makedumpfile -c -d 31`` shrank. The ground truth was captured inside the guest before the
crash (and ``drgn-stacks.json`` by drgn with the debug vmlinux), so it is independent of
vmcorefs. Tests that use it run everywhere, also where ``../shared/dumps`` is absent.
"""

from __future__ import annotations

import functools
import json
import lzma
import os
from pathlib import Path

#: ``VMCOREFS_SAMPLE=DIR`` runs the sample's tests on another dump that make-sample-vmcore
#: made (``--kernel-package`` another kernel, ``--out DIR``): the suite against a new kernel.
SAMPLE_DIR = Path(
    os.environ.get("VMCOREFS_SAMPLE") or Path(__file__).resolve().parent / "data" / "sample"
)
#: ``__START_KERNEL`` (x86_64, CONFIG_PHYSICAL_START 0x1000000): ``_text`` without KASLR.
START_KERNEL = 0xFFFFFFFF81000000


class Sample:
    """Paths and parsed ground truth of the bundled sample."""

    def __init__(self, root: Path = SAMPLE_DIR) -> None:
        self.root = root
        self.truth = json.loads((root / "truth.json").read_text())
        self.dump = root / self.truth["dump"]["file"]

    def text(self, name: str) -> str:
        """A ground-truth file (``uname.txt``, ``iomem.txt``, ``dmesg.txt`` ...) as text."""
        return (self.root / name).read_text()

    @functools.cached_property
    def uts(self) -> dict[str, str]:
        """``uname`` in the guest: sysname nodename release version machine domainname."""
        out = {}
        for line in self.text("uname.txt").splitlines()[1:]:
            key, _, value = line.partition(": ")
            out[key] = value
        return out

    @functools.cached_property
    def kallsyms(self) -> list[tuple[int, str, str, str | None]]:
        """The guest's ``/proc/kallsyms``: (address, type, name, module or None), in order."""
        out = []
        text = lzma.decompress((self.root / "kallsyms.txt.xz").read_bytes()).decode()
        for line in text.splitlines():
            parts = line.split()
            module = parts[3].strip("[]") if len(parts) == 4 else None
            out.append((int(parts[0], 16), parts[1], parts[2], module))
        return out

    def symbol(self, name: str) -> int:
        """The address of the first core (non-module) symbol ``name`` in the guest's kallsyms."""
        for addr, _type, sym, module in self.kallsyms:
            if sym == name and module is None:
                return addr
        raise KeyError(name)

    def modules_at_crash(self) -> str:
        """``modules.txt`` (``/proc/modules`` before the crash) as it stood at the crash: after
        an oops in a module (``--kexec oops``) the task that oopsed held a reference to it (its
        debugfs file was open: ``fops_get``), one more than the file says."""
        oopsed = self.truth.get("oops_module", {}).get("name")
        lines = []
        for line in self.text("modules.txt").splitlines(keepends=True):
            fields = line.split(" ")
            if fields[0] == oopsed:
                fields[2] = str(int(fields[2]) + 1)
            lines.append(" ".join(fields))
        return "".join(lines)

    def iomem(self) -> list[tuple[int, int, str, int]]:
        """``/proc/iomem``: (start, end exclusive, name, nesting depth)."""
        out = []
        for line in self.text("iomem.txt").splitlines():
            depth = (len(line) - len(line.lstrip(" "))) // 2
            span, _, name = line.strip().partition(" : ")
            start, end = (int(x, 16) for x in span.split("-"))
            out.append((start, end + 1, name, depth))
        return out

    def iomem_range(self, name: str) -> tuple[int, int]:
        """The first ``/proc/iomem`` range called ``name`` (e.g. "Kernel code")."""
        for start, end, what, _depth in self.iomem():
            if what == name:
                return start, end
        raise KeyError(name)
