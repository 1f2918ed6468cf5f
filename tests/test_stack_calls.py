"""Every return address of every stack (tasks/*/stack, cpus/*/stack) of a real dump lies right
after a call instruction, read from the dump's own bytes: the frames are the kernel's, not
words that merely look like text addresses.

Runs on the bundled sample (ORC), and with ``VMCOREFS_SAMPLE=DIR`` on a dump
``tools/make-sample-vmcore`` made: the frame-pointer kernels (Ubuntu's 4.18, 5.4, 5.15).
The exceptions are the kernel's: a return address in the init text (freed after boot, its
bytes gone) and the address head code pushes for the unwinder as a stack's last frame
(``secondary_startup_64``).
"""

from __future__ import annotations

from vmcorefs.errors import NOT_AVAILABLE
from vmcorefs.kernel.dump import open_dump
from vmcorefs.kernel.tasks import pt_regs_view


def after_call(raw: bytes) -> bool:
    """``raw``: the 7 bytes before a return address. ``call rel32`` (E8), or ``call`` through
    a register or memory (FF with ModRM reg 2, maybe a REX prefix) ending there."""
    if raw[-5] == 0xE8:
        return True
    for length in range(2, 8):
        i = len(raw) - length
        if 0x40 <= raw[i] <= 0x4F:
            i += 1
        if i + 1 < len(raw) and raw[i] == 0xFF and (raw[i + 1] >> 3) & 7 == 2:
            return True
    return False


def test_every_return_address_follows_a_call(sample):
    init = (sample.symbol("_sinittext"), sample.symbol("_einittext"))
    with open_dump(str(sample.dump)) as dump:
        stacks = dump.stacks
        found: list[tuple[str, list]] = []
        try:
            tasks = dump.tasks.tasks
        except NOT_AVAILABLE:
            tasks = []  # a kernel without BTF: CPU stacks only
        for task in tasks:
            try:
                found.append((f"pid {task.pid}", stacks.task_frames(task)))
            except NOT_AVAILABLE:
                pass
        for cpu in range(64):
            regs = dump.cpu_registers(cpu)
            if regs is not None:
                found.append((f"cpu {cpu}", stacks.unwinder.from_registers(pt_regs_view(regs))))
        assert found, "no stack at all"
        checked, bad = 0, []
        for who, frames in found:
            for n, frame in enumerate(frames):
                if not frame.call or frame.user:
                    continue
                if init[0] <= frame.pc < init[1]:
                    continue
                last = n == len(frames) - 1 or frames[n + 1].user
                name = stacks.symbolizer.name(frame)
                if last and name.startswith("secondary_startup_64"):
                    continue
                raw = dump.kvirt.read(frame.pc - 7, 7)
                checked += 1
                if len(raw) != 7 or not after_call(raw):
                    bad.append(f"{who}: {name} ({raw.hex()})")
        assert not bad, f"{len(bad)} of {checked} return addresses follow no call: {bad}"
        assert checked > 0
