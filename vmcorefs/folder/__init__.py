"""A folder of dumps as one tree (``vmcorefs DIR MOUNTPOINT``): ``index`` and ``NAME/`` each.

``scan.py`` finds and names the dumps, ``pool.py`` opens at most ``--max-open`` of them at
once, ``nodes.py`` stands for paths inside a dump's tree, ``index.py`` makes the index lines,
``root.py`` puts them together as a :class:`~vmcorefs.tree.Tree`.
"""

from __future__ import annotations

from .root import FolderTree, build_folder_tree

__all__ = ["FolderTree", "build_folder_tree"]
