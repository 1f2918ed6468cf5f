"""drgn walking a dump's kernel image with ``prog.read``: the reference of ``bench_read.py``.

Runs in an interpreter that has drgn (0.3.0 from PyPI, in a venv of its own: it opens kdump
files through its bundled libkdumpfile) and nothing of vmcorefs, as a worker: one request a
line on stdin, ``{"dump": PATH, "start": ADDR, "end": ADDR}``, one answer a line on stdout,
``{"seconds": ..., "digest": ..., "held": ..., "faults": ...}``. Each request gets a fresh
``drgn.Program`` (opening the dump is not timed, as mounting is not on vmcorefs's side).

    PYTHON_WITH_DRGN benchmarks/drgn_walk.py     # prints {"drgn": VERSION} first

``extents_digest`` is also what the benchmark hashes vmcorefs's bytes with.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable

MiB = 1 << 20
PAGE = 4096


def extents_digest(pieces: Iterable[tuple[int, bytes | memoryview]]) -> tuple[str, int]:
    """A digest of the bytes read and of where they lie, whatever the reads' boundaries were
    (``pieces``: (address, bytes) in address order), and the byte count."""
    data = hashlib.sha256()
    extents: list[list[int]] = []
    for addr, piece in pieces:
        n = len(piece)
        if not n:
            continue
        data.update(piece)
        if extents and extents[-1][1] == addr:
            extents[-1][1] = addr + n
        else:
            extents.append([addr, addr + n])
    data.update(repr(extents).encode())
    return data.hexdigest(), sum(end - start for start, end in extents)


def walk(prog, start: int, end: int) -> tuple[float, list[tuple[int, bytes]], int]:
    """``[start, end)`` in 1 MiB reads, page by page where a read faults: (seconds, the
    pieces read, the pages that faulted)."""
    import drgn

    pieces = []
    faults = 0
    t0 = time.perf_counter()
    for chunk in range(start, end, MiB):
        n = min(MiB, end - chunk)
        try:
            pieces.append((chunk, prog.read(chunk, n)))
        except drgn.FaultError:
            for page in range(chunk, chunk + n, PAGE):
                try:
                    pieces.append((page, prog.read(page, min(PAGE, chunk + n - page))))
                except drgn.FaultError:
                    faults += 1
    return time.perf_counter() - t0, pieces, faults


def main() -> None:
    import drgn

    print(json.dumps({"drgn": drgn.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        prog = drgn.Program()
        prog.set_core_dump(request["dump"])
        seconds, pieces, faults = walk(prog, request["start"], request["end"])
        digest, held = extents_digest(pieces)
        del prog, pieces
        answer = {"seconds": seconds, "digest": digest, "held": held, "faults": faults}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
