"""Finding the kallsyms tables and the BTF in the kernel image, against today's table load.

    python3 benchmarks/bench_find.py [CASE-DIR]     (default: kaslr-256m of the shared dumps)

A kernel before 6.0 has no kallsyms keys in VMCOREINFO: the tables are found in the image
(kernel/kallsyms_finder.py), and without ``__start_BTF`` the BTF by its header (kernel/btf.py
find_btf). Measured in-process, interleaved rounds, best and median:

* the reference: the table load with the keys (``read_kallsyms`` on the case's dump);
* the same dump with the keys hidden (tools/hide-kallsyms-keys): search and load;
* the BTF search (a symbol table without ``__start_BTF``) over the image's read-only data,
  and over the whole image;
* a 64 MiB image (the case's kernel image up to the end of its BTF, behind random bytes):
  the tables and the BTF as the search goes (down from the lowest data symbol VMCOREINFO
  names, then up), and with every byte before them scanned (up from the image's start).

The goal (issue 15): the search adds at most 1 s to the load on a 64 MiB image.
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

from common import REPO, dumps_dir

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from symtables import FakeKvirt  # noqa: E402

from vmcorefs.kernel import btf as B  # noqa: E402
from vmcorefs.kernel.dump import open_dump  # noqa: E402
from vmcorefs.kernel.kallsyms_finder import (
    find_kallsyms,  # noqa: E402
    read_kallsyms,  # noqa: E402
)
from vmcorefs.kernel.kimage import START_KERNEL, ImageScan, image_start, kernel_image  # noqa: E402
from vmcorefs.vmcoreinfo import VmcoreInfo  # noqa: E402

ROUNDS = 5
MiB = 1 << 20


class NoBtfSymbols:
    """A symbol table without __start_BTF/__stop_BTF (a kernel without CONFIG_KALLSYMS_ALL)."""

    def __init__(self, table, keep_rodata: bool) -> None:
        self.table, self.keep_rodata = table, keep_rodata

    def get(self, name: str):
        if name in ("__start_BTF", "__stop_BTF"):
            return None
        if not self.keep_rodata and name in ("__start_rodata", "__end_rodata"):
            return None
        return self.table.get(name)


def hide_keys(src: Path, dest: Path) -> None:
    loader = SourceFileLoader("hide_kallsyms_keys", str(REPO / "tools" / "hide-kallsyms-keys"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    tool = importlib.util.module_from_spec(spec)
    loader.exec_module(tool)
    subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True)
    tool.hide_keys(dest)


def fresh(path: str):
    """A newly opened dump (cold caches of its own; the OS page cache is warm)."""
    return open_dump(path)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(name: str, samples: list[float], ref: list[float] | None = None) -> None:
    best, median = min(samples), statistics.median(samples)
    line = f"{name:<52} best {best * 1000:7.0f} ms   median {median * 1000:7.0f} ms"
    if ref is not None:
        extra = [s - r for s, r in zip(samples, ref, strict=True)]
        line += f"   +{statistics.median(extra) * 1000:5.0f} ms on the reference"
    print(line)


def kallsyms_load(path: str) -> None:
    d = fresh(path)
    read_kallsyms(d.kvirt, d.vmcoreinfo)
    d.close()


def btf_search(path: str, keep_rodata: bool) -> None:
    d = fresh(path)
    symbols = NoBtfSymbols(d.symbols, keep_rodata)
    t = timed(lambda: B.kernel_btf_bounds(d.kvirt, d.vmcoreinfo, symbols))
    d.close()
    return t


def synthetic_64(path: str) -> tuple[FakeKvirt, VmcoreInfo, int]:
    """The dump's kernel image from its start to the end of its BTF (the tables lie before
    it), behind random bytes that make 64 MiB: the search goes through all of it."""
    d = fresh(path)
    start = image_start(d.vmcoreinfo)
    end = d.symbols.address("__stop_BTF")
    image = d.kvirt.read_exact(start, end - start)
    lead = (64 * MiB - len(image)) & ~0xFFF
    base = start - lead
    fake = FakeKvirt(base, random.Random(3).randbytes(lead) + image)
    # The scan starts at __START_KERNEL + KERNELOFFSET when VMCOREINFO has no SYMBOL(_stext).
    lines = [
        line
        for line in d.vmcoreinfo.raw.split(b"\n")
        if not line.startswith((b"SYMBOL(_stext)=", b"KERNELOFFSET="))
    ]
    lines.append(f"KERNELOFFSET={base - START_KERNEL:x}".encode())
    vi = VmcoreInfo(b"\n".join(lines))
    d.close()
    return fake, vi, len(fake.data)


def main() -> None:
    case = Path(sys.argv[1]) if len(sys.argv) > 1 else dumps_dir() / "kaslr-256m"
    with tempfile.TemporaryDirectory(prefix="bench-find-") as tmp:
        for name in ("vmcore.elf", "mdf-d31-zlib.kdump"):
            original = case / name
            if not original.exists():
                continue
            hidden = Path(tmp) / name
            hide_keys(original, hidden)
            keyed, found, btf_ro, btf_all = [], [], [], []
            for _ in range(ROUNDS):
                keyed.append(timed(lambda o=original: kallsyms_load(str(o))))
                found.append(timed(lambda h=hidden: kallsyms_load(str(h))))
                btf_ro.append(btf_search(str(original), True))
                btf_all.append(btf_search(str(original), False))
            print(f"{case.name}/{name}:")
            report("  kallsyms with the keys (reference)", keyed)
            report("  kallsyms found in the image (keys hidden)", found, keyed)
            report("  BTF found by its header, read-only data", btf_ro)
            report("  BTF found by its header, the whole image", btf_all)
        fake, vi, size = synthetic_64(str(case / "vmcore.elf"))
        no_btf = NoBtfSymbols({}, False)
        start = image_start(vi)
        for how, first in (("as searched", "pivot"), ("every byte before them scanned", None)):
            tables, btf = [], []

            def scan(first=first):
                image = kernel_image(fake, vi)
                return image if first else ImageScan(fake, image.start, image.end)

            for _ in range(ROUNDS):
                tables.append(timed(lambda s=scan: find_kallsyms(fake, vi, s())))
                btf.append(timed(lambda s=scan: B.find_btf(fake, vi, no_btf, s())))
            print(f"{size / MiB:.0f} MiB image from {start:#x}, tables and BTF at its end, {how}:")
            report("  kallsyms found", tables)
            report("  BTF found by its header", btf)
            report("  both", [a + b for a, b in zip(tables, btf, strict=True)])


if __name__ == "__main__":
    main()
