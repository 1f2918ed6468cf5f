"""The list walker on lists the tests write: whole lists, and each way a list can fail (absent
memory, a loop, a broken ``prev``, a bad link, too many entries), with and without a
``problems`` list."""

from __future__ import annotations

import pytest

from tests.kernelfakes import SparseMemory, absent
from vmcorefs.errors import Unavailable
from vmcorefs.kernel.lists import LIST_HEAD, ListHead, list_for_each, list_for_each_entry
from vmcorefs.vmcoreinfo import VmcoreInfo

HEAD = 0xFFFFFFFF82000100
SLAB = 0xFFFF888001000000
MEMBER = 0x30  # where the list_head lies in each entry


def ring(mem: SparseMemory, head: int, nodes: list[int], links=LIST_HEAD) -> None:
    """head -> nodes... -> head, with each prev the node before."""
    all_ = [head, *nodes]
    for i, node in enumerate(all_):
        mem.put64(node + links.next, all_[(i + 1) % len(all_)])
        mem.put64(node + links.prev, all_[i - 1])


def nodes(n: int) -> list[int]:
    return [SLAB + 0x1000 * i + MEMBER for i in range(n)]


def walk(mem, limit=100, head=HEAD, links=LIST_HEAD):
    """The nodes a walk gives, and the problems it noted."""
    problems: list[str] = []
    got = list(list_for_each(mem, head, "test_list", limit, problems=problems, links=links))
    return got, problems


@pytest.fixture
def mem():
    return SparseMemory()


def test_whole_list_in_order(mem):
    ns = nodes(5)
    ring(mem, HEAD, ns)
    assert walk(mem) == (ns, [])
    entries = list(list_for_each_entry(mem, HEAD, MEMBER, "test_list", 100))
    assert entries == [n - MEMBER for n in ns]


def test_empty_list(mem):
    ring(mem, HEAD, [])
    assert walk(mem) == ([], [])


def test_empty_list_whose_head_prev_is_wrong(mem):
    ring(mem, HEAD, [])
    mem.put64(HEAD + 8, SLAB)
    assert walk(mem) == (
        [],
        [f"test_list: the list breaks at its head (its prev is {SLAB:#x}, not {HEAD:#x})"],
    )


def test_links_at_other_offsets(mem):
    """VMCOREINFO's OFFSET(list_head.next/prev) are honoured (here swapped)."""
    links = ListHead(next=8, prev=0)
    ns = nodes(3)
    ring(mem, HEAD, ns, links)
    assert walk(mem, links=links) == (ns, [])
    assert walk(mem) == (ns[::-1], [])  # with the usual layout the same bytes walk backwards


def test_absent_head_is_unavailable(mem):
    with pytest.raises(Unavailable, match=r"^test_list: the list head is unreadable \(kvirt"):
        walk(mem)


def test_head_that_is_not_a_kernel_address(mem):
    with pytest.raises(Unavailable, match="the list head 0x1000 is not a kernel address"):
        walk(mem, head=0x1000)


def test_absent_node_ends_the_walk_with_a_reason(mem):
    ns = nodes(4)
    ring(mem, HEAD, ns)
    mem.drop(ns[2])
    got, problems = walk(mem)
    assert got == ns[:2]
    assert problems == [f"test_list: the list breaks at {ns[2]:#x} ({absent(ns[2])})"]


def test_link_outside_the_kernel_half(mem):
    ns = nodes(3)
    ring(mem, HEAD, ns)
    mem.put64(ns[1], 0x7F0000001000)  # a user-space pointer: never followed
    got, problems = walk(mem)
    assert got == ns[:2]
    assert problems == [
        f"test_list: the list breaks at 0x7f0000001000 (the next of {ns[1]:#x}: "
        "not a kernel address)"
    ]


def test_loop_back_into_the_list(mem):
    ns = nodes(4)
    ring(mem, HEAD, ns)
    mem.put64(ns[3], ns[1])  # 0 1 2 3 1 2 3 ...
    got, problems = walk(mem)
    assert got == ns
    assert problems == [f"test_list: the list loops at {ns[1]:#x} without returning to its head"]


def test_node_that_links_to_itself(mem):
    ns = nodes(2)
    ring(mem, HEAD, ns)
    mem.put64(ns[0], ns[0])
    got, problems = walk(mem)
    assert got == ns[:1]
    assert problems == [f"test_list: the list loops at {ns[0]:#x} without returning to its head"]


def test_loop_whose_prevs_agree_with_the_loop(mem):
    """A ring that does not hold the head (each prev right within it): the way in is what
    the prev check catches."""
    ns = nodes(3)
    ring(mem, HEAD, ns)
    ring(mem, ns[0], ns[1:])  # ns0 -> ns1 -> ns2 -> ns0, prevs along that ring
    got, problems = walk(mem)
    assert got == []
    assert problems == [
        f"test_list: the list breaks at {ns[0]:#x} (its prev is {ns[2]:#x}, not {HEAD:#x})"
    ]


def test_broken_prev(mem):
    ns = nodes(4)
    ring(mem, HEAD, ns)
    mem.put64(ns[2] + 8, ns[0])  # a stale prev: ns1 was put in without telling ns2
    got, problems = walk(mem)
    assert got == ns[:2]
    assert problems == [
        f"test_list: the list breaks at {ns[2]:#x} (its prev is {ns[0]:#x}, not {ns[1]:#x})"
    ]


def test_head_prev_checked_at_the_end(mem):
    """list_add_tail() cut short: head.prev names a new entry the last one does not lead to."""
    ns = nodes(3)
    ring(mem, HEAD, ns)
    mem.put64(HEAD + 8, SLAB + 0x10000)
    got, problems = walk(mem)
    assert got == ns  # every entry reached is given
    assert problems == [
        f"test_list: the list breaks at its head (its prev is {SLAB + 0x10000:#x}, not {ns[2]:#x})"
    ]


def test_limit(mem):
    ns = nodes(6)
    ring(mem, HEAD, ns)
    assert walk(mem, limit=6) == (ns, [])
    got, problems = walk(mem, limit=4)
    assert got == ns[:4]
    assert problems == ["test_list: the list has more than 4 entries (the walk stops there)"]


def test_without_problems_the_walk_raises_where_it_stops(mem):
    ns = nodes(3)
    ring(mem, HEAD, ns)
    mem.put64(ns[2], ns[0])
    it = list_for_each(mem, HEAD, "test_list", 100)
    assert [next(it), next(it), next(it)] == ns  # the nodes before the problem
    with pytest.raises(Unavailable, match=f"test_list: the list loops at {ns[0]:#x}"):
        next(it)


def test_head_is_read_before_the_first_node_is_asked_for(mem):
    """A view can tell "no list" (Unavailable at the call) from "a list cut short"."""
    with pytest.raises(Unavailable):
        list_for_each_entry(mem, HEAD, MEMBER, "test_list", 100, problems=[])


def test_layout_from_vmcoreinfo():
    """OFFSET(list_head.next/prev) are checked inside the 16-byte structure; absent keys are
    every kernel's layout unless the caller needs them."""

    def layout(text: str, **kw) -> ListHead:
        return ListHead.from_vmcoreinfo(VmcoreInfo(text.encode()), **kw)

    assert layout("OFFSET(list_head.next)=8\nOFFSET(list_head.prev)=0\n") == ListHead(8, 0)
    assert layout("") == LIST_HEAD
    with pytest.raises(Unavailable, match=r"^VMCOREINFO has no OFFSET\(list_head.next\)"):
        layout("", need=True)
    with pytest.raises(Unavailable, match=r"OFFSET\(list_head.prev\)=4096 is out of range"):
        layout("OFFSET(list_head.prev)=4096\n")
    with pytest.raises(Unavailable, match="implausible struct list_head: next at 4, prev at 8"):
        layout("OFFSET(list_head.next)=4\n")
