"""The kernel's circular doubly linked lists (``include/linux/list.h``), walked one way.

Every list the kernel views read (tasks, threads, modules, a module's users, vmap areas, free
lists) is walked here, so that each walk is bounded and checked alike and says why it stopped
in the same words:

- the head is read first: when it is unreadable nothing of the list is known (Unavailable);
- each link must be a kernel address and its ``list_head`` must be in the dump;
- each node's ``prev`` must be the node before it, as ``CONFIG_DEBUG_LIST`` checks on every
  change; so must the head's ``prev`` once the walk is back at the head;
- at most ``limit`` nodes.

A loop needs no set of seen nodes: the first node met twice is always met from another node
than the first time (its ``prev`` can name only one), so the ``prev`` check stops there; only
then is the list walked again up to that point to tell a loop from a broken link.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import FaultError, Unavailable
from ..memory.space import AddressSpace
from ..vmcoreinfo import VmcoreInfo
from .sparsemem import is_kvaddr

#: include/linux/types.h: struct list_head is two pointers.
LIST_HEAD_SIZE = 16
POINTER_SIZE = 8


def list_head_offset(vi: VmcoreInfo, name: str) -> int | None:
    """``OFFSET(list_head.next|prev)``: a pointer inside the 16-byte ``struct list_head``."""
    return vi.offset(f"list_head.{name}", within=LIST_HEAD_SIZE, width=POINTER_SIZE)


@dataclass(frozen=True)
class ListHead:
    """Where ``next`` and ``prev`` lie in ``struct list_head`` (next, then prev, in every
    kernel; VMCOREINFO and BTF give the offsets, checked here: two pointers that do not
    overlap inside the 16-byte structure, else Unavailable)."""

    next: int = 0
    prev: int = POINTER_SIZE

    def __post_init__(self) -> None:
        top = LIST_HEAD_SIZE - POINTER_SIZE
        if not (0 <= self.next <= top and 0 <= self.prev <= top) or (
            abs(self.next - self.prev) < POINTER_SIZE
        ):
            raise Unavailable(
                f"implausible struct list_head: next at {self.next}, prev at {self.prev}"
            )

    @classmethod
    def from_vmcoreinfo(cls, vi: VmcoreInfo, *, need: bool = False) -> ListHead:
        """``OFFSET(list_head.next)`` and ``OFFSET(list_head.prev)``, each checked; an absent
        key is the layout of every kernel, or Unavailable naming it when ``need`` (as
        makedumpfile requires them for the free lists)."""
        offsets = []
        for name, default in (("next", 0), ("prev", POINTER_SIZE)):
            value = list_head_offset(vi, name)
            if value is None and need:
                raise Unavailable(f"VMCOREINFO has no OFFSET(list_head.{name})")
            offsets.append(default if value is None else value)
        return cls(*offsets)

    def read(self, space: AddressSpace, node: int) -> tuple[int, int]:
        """``(next, prev)`` of the ``list_head`` at ``node``; FaultError when it is absent."""
        lo = min(self.next, self.prev)
        raw = space.read_exact(node + lo, max(self.next, self.prev) + 8 - lo)
        n, p = self.next - lo, self.prev - lo
        return int.from_bytes(raw[n : n + 8], "little"), int.from_bytes(raw[p : p + 8], "little")


#: ``struct list_head`` as every kernel lays it out.
LIST_HEAD = ListHead()


def list_for_each(
    space: AddressSpace,
    head: int,
    what: str,
    limit: int,
    *,
    problems: list[str] | None = None,
    links: ListHead = LIST_HEAD,
) -> Iterator[int]:
    """The nodes (``list_head`` addresses) of the list at ``head``, head excluded, in order.

    Each node is checked before it is given. ``what`` names the list in reasons
    (``init_task.tasks``). The head is read now: Unavailable when it cannot be. Past the head
    the first problem ends the walk: its reason, ``"<what>: ..."``, is appended to
    ``problems`` (the nodes given so far stand), or without ``problems`` raised as
    Unavailable (a view that is whole or nothing).
    """
    if not is_kvaddr(head):
        raise Unavailable(f"{what}: the list head {head:#x} is not a kernel address")
    try:
        first, last = links.read(space, head)
    except FaultError as exc:
        raise Unavailable(f"{what}: the list head is unreadable ({exc})") from None
    return _walk(space, head, first, last, what, limit, problems, links)


def list_for_each_entry(
    space: AddressSpace,
    head: int,
    member: int,
    what: str,
    limit: int,
    *,
    problems: list[str] | None = None,
    links: ListHead = LIST_HEAD,
) -> Iterator[int]:
    """The entries (``container_of`` each node: its address minus ``member``, the offset of
    the ``list_head`` in the entry) of the list at ``head``; as :func:`list_for_each`."""
    nodes = list_for_each(space, head, what, limit, problems=problems, links=links)
    return (node - member for node in nodes)


def _walk(
    space: AddressSpace,
    head: int,
    node: int,
    head_prev: int,
    what: str,
    limit: int,
    problems: list[str] | None,
    links: ListHead,
) -> Iterator[int]:
    def stop(reason: str) -> None:
        if problems is None:
            raise Unavailable(f"{what}: {reason}")
        problems.append(f"{what}: {reason}")

    before = head  # the node whose next is ``node``
    count = 0
    while node != head:
        if count >= limit:
            stop(f"the list has more than {limit} entries (the walk stops there)")
            return
        if not is_kvaddr(node):
            stop(f"the list breaks at {node:#x} (the next of {before:#x}: not a kernel address)")
            return
        try:
            after, prev = links.read(space, node)
        except FaultError as exc:
            stop(f"the list breaks at {node:#x} ({exc})")
            return
        if prev != before:
            if _among_first(space, head, node, count, links):
                stop(f"the list loops at {node:#x} without returning to its head")
            else:
                stop(f"the list breaks at {node:#x} (its prev is {prev:#x}, not {before:#x})")
            return
        count += 1
        yield node
        before, node = node, after
    if head_prev != before:
        stop(f"the list breaks at its head (its prev is {head_prev:#x}, not {before:#x})")


def _among_first(space: AddressSpace, head: int, node: int, count: int, links: ListHead) -> bool:
    """Whether ``node`` is one of the first ``count`` nodes after ``head`` (read before)."""
    at = head
    for _ in range(count):
        try:
            at = links.read(space, at)[0]
        except FaultError:
            return False
        if at == node:
            return True
    return False
