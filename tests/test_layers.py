"""Layers import only downwards (DEVELOPERS.md): checked on the source, module by module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vmcorefs"

#: Layer of each module or package, bottom to top. Modules not named take their package's.
LAYERS = {
    "vmcorefs.errors": 0,
    "vmcorefs.heap": 0,  # the daemon's malloc settings (glibc), for folder/ and fuse
    "vmcorefs.dumpfile": 1,
    "vmcorefs.vmcoreinfo": 2,
    "vmcorefs.memory": 3,
    "vmcorefs.kernel": 4,
    "vmcorefs.tree": 5,
    "vmcorefs.folder": 5,  # a folder of dumps: trees of trees
    "vmcorefs.fuse": 6,
    "vmcorefs.cli": 7,
    "vmcorefs.__main__": 7,
    "vmcorefs": 7,  # the package's __init__: a lazy re-export of open_dump
}


def layer_of(module: str) -> int:
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


def imported_modules(path: Path, module: str):
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
                if node.module is None:  # from . import x: each name is a module
                    for alias in node.names:
                        yield f"{target}.{alias.name}", node.lineno
                else:
                    yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vmcorefs"):
                    yield alias.name, node.lineno


def test_every_import_goes_down_or_sideways():
    upward = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10
    for path in modules:
        module = module_name(path)
        own = layer_of(module)
        for target, line in imported_modules(path, module):
            if target == "vmcorefs":
                continue  # the package itself (version string)
            if layer_of(target) > own:
                upward.append(f"{module}:{line} imports {target}")
    assert not upward, upward


def test_the_core_imports_no_fuse():
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if layer_of(module) <= LAYERS["vmcorefs.tree"]:
            assert "mfusepy" not in path.read_text(), module
