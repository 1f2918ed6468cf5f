"""The layers (DEVELOPERS.md), checked on the source, module by module: every import goes down
to a layer its layer reads through (none upward, none that skips a layer), and no two modules
import each other, directly or round a circle. Imports inside functions and under
``TYPE_CHECKING`` count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vmcorefs"

#: Layer of each module or package, bottom to top. Modules not named take their package's.
LAYERS = {
    "vmcorefs.errors": "base",
    "vmcorefs.buffers": "base",
    "vmcorefs.heap": "base",  # the daemon's malloc settings (glibc), for folder/ and fuse
    "vmcorefs.dumpfile": "dumpfile",
    "vmcorefs.vmcoreinfo": "vmcoreinfo",
    "vmcorefs.memory": "memory",
    "vmcorefs.kernel": "kernel",
    "vmcorefs.tree": "tree",
    "vmcorefs.folder": "folder",  # a folder of dumps: trees of trees
    "vmcorefs.fuse": "fuse",
    "vmcorefs.cli": "cli",
    "vmcorefs.__main__": "cli",
    "vmcorefs": "cli",  # the package's __init__: a lazy re-export of open_dump
}
ORDER = ["base", "dumpfile", "vmcoreinfo", "memory", "kernel", "tree", "folder", "fuse", "cli"]
#: What each layer reads through, besides itself and "base" (which every layer may use).
READS = {
    "base": set(),
    "dumpfile": set(),
    "vmcoreinfo": set(),
    "memory": {"dumpfile", "vmcoreinfo"},
    "kernel": {"memory", "vmcoreinfo"},
    "tree": {"kernel", "memory"},  # files are windows onto address spaces
    "folder": {"tree", "kernel"},
    "fuse": {"tree"},
    "cli": {"fuse", "folder", "tree", "kernel"},
}
#: Modules that reach past the layer below on purpose, and why.
REACHES = {
    ("vmcorefs.kernel.dump", "dumpfile"): "open_dump opens the container (the library's entry)",
    ("vmcorefs.cli", "dumpfile"): "a missing or unreadable dump is an input error before loading",
    ("vmcorefs.folder", "dumpfile"): "a folder scan asks each file's headers (detect.probe)",
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    while parts:
        name = ".".join(parts)
        if name in LAYERS:
            return LAYERS[name]
        parts.pop()
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    assert len(found) > 10
    return found


def imported_modules(path: Path, module: str) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("vmcorefs"):
                for alias in node.names:  # `from . import x`: x may be a module
                    yield f"{target}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vmcorefs"):
                    yield alias.name, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line}; an imported name resolves to its module."""
    known = modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges = graph.setdefault(module, {})
        for target, line in imported_modules(path, module):
            while target not in known:  # `from .source import Note`: the module source
                target = target.rsplit(".", 1)[0]
            if target != module:
                edges.setdefault(target, line)
    return graph


def bad_edges(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports that go up, or down past a layer their layer does not read through."""
    bad = []
    for module, edges in graph.items():
        own = layer_of(module)
        for target, line in edges.items():
            if target == "vmcorefs":
                continue  # the package itself (the version string)
            theirs = layer_of(target)
            if theirs in (own, "base") or theirs in READS[own]:
                continue
            if any(module.startswith(m) and theirs == t for m, t in REACHES):
                continue
            up = ORDER.index(theirs) > ORDER.index(own)
            bad.append(f"{module}:{line} imports {target} ({'upward' if up else 'skips a layer'})")
    return bad


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every set of modules that import each other round a circle (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth: the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            scc = []
            while True:
                top = stack.pop()
                scc.append(top)
                if top == node:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_goes_down_to_a_layer_it_reads_through():
    assert not bad_edges(import_graph())


def test_no_module_imports_round_a_circle():
    assert not circles(import_graph())


def test_the_checks_catch_an_upward_import_a_skipped_layer_and_a_circle():
    """The checks themselves, on graphs with the faults they exist for (main had the last
    two: kernel/cpus.py read notes from dumpfile, and detect and split imported each other)."""
    graph = {
        "vmcorefs.kernel.cpus": {"vmcorefs.dumpfile.source": 15, "vmcorefs.errors": 16},
        "vmcorefs.dumpfile.detect": {"vmcorefs.dumpfile.split": 61},
        "vmcorefs.dumpfile.split": {"vmcorefs.dumpfile.detect": 16},
        "vmcorefs.memory.x86_64": {"vmcorefs.kernel.symbols": 3, "vmcorefs.vmcoreinfo": 4},
        "vmcorefs.kernel.dump": {"vmcorefs.dumpfile.detect": 13},
    }
    assert bad_edges(graph) == [
        "vmcorefs.kernel.cpus:15 imports vmcorefs.dumpfile.source (skips a layer)",
        "vmcorefs.memory.x86_64:3 imports vmcorefs.kernel.symbols (upward)",
    ]
    assert circles(graph) == [["vmcorefs.dumpfile.detect", "vmcorefs.dumpfile.split"]]
    graph["vmcorefs.dumpfile.split"] = {"vmcorefs.dumpfile.kdump": 16}
    graph["vmcorefs.dumpfile.kdump"] = {"vmcorefs.dumpfile.detect": 9}
    assert circles(graph) == [
        ["vmcorefs.dumpfile.detect", "vmcorefs.dumpfile.kdump", "vmcorefs.dumpfile.split"]
    ]


def test_the_core_imports_no_fuse():
    for module, path in modules().items():
        if ORDER.index(layer_of(module)) <= ORDER.index("tree"):
            assert "mfusepy" not in path.read_text(), module
