"""Run single methods of the official StyleGallery code (iiiiiiiword/StyleGallery) from its own source.

The official pipeline.py imports its vendored Depth-Anything, SAM and accelerate at module top, so it is not
imported here: the wanted methods of class `StyleGallery` are cut out of the source with `ast` and executed
in a namespace holding torch, numpy and F, with `self` given by the caller (None where a method does not use
it). Nothing is copied into this repository; the code is read from the checkout the user points to.

    source = official_source("/path/to/StyleGallery")        # a checkout or a bare git dir
    merge = official_method(source, "merge_similar_clusters")
    labels, centroids = merge(None, labels, centroids, features, x_pca, similar_threshold=0.85)

Locations: an explicit path, else $STYLEGALLERY_OFFICIAL_REPO. `find_official()` returns None when neither
holds the official pipeline.py, so callers can say what they skipped.
"""

from __future__ import annotations

import ast
import os
import subprocess
from collections.abc import Callable
from pathlib import Path


ENV = "STYLEGALLERY_OFFICIAL_REPO"


def find_official(location: str | os.PathLike | None = None) -> Path | None:
    """The official repository (a checkout with pipeline.py, or a bare git dir), or None when absent."""
    for candidate in (location, os.environ.get(ENV)):
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        if (path / "pipeline.py").is_file() and (path / "utils.py").is_file():
            return path
        if (path / "HEAD").is_file() and (path / "objects").is_dir():  # bare git dir
            try:
                _git_show(path, "pipeline.py")
            except (OSError, subprocess.CalledProcessError):
                continue
            return path
    return None


def _git_show(git_dir: Path, name: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{name}"], check=True, capture_output=True,
                          text=True).stdout


def official_source(repo: Path, name: str = "pipeline.py") -> str:
    """The text of one file of the official repository."""
    repo = Path(repo)
    if (repo / name).is_file():
        return (repo / name).read_text()
    return _git_show(repo, name)


def official_method(source: str, method: str, cls: str = "StyleGallery") -> Callable:
    """The function `cls.method` of the official source, compiled on its own (call it with `self` first)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    item.decorator_list = []
                    module = ast.Module(body=[item], type_ignores=[])
                    namespace = {"torch": torch, "np": np, "F": F, "device": torch.device("cpu"),
                                 "print": lambda *a, **k: None}
                    exec(compile(module, f"<official {cls}.{method}>", "exec"), namespace)  # noqa: S102
                    return namespace[method]
    raise LookupError(f"{cls}.{method} is not in the official source")


def official_function(source: str, name: str) -> Callable:
    """A module-level function of an official file (e.g. utils.style_loss)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            node.decorator_list = []
            namespace = {"torch": torch, "np": np, "F": F, "device": torch.device("cpu")}
            exec(compile(ast.Module(body=[node], type_ignores=[]), f"<official {name}>", "exec"),  # noqa: S102
                 namespace)
            return namespace[name]
    raise LookupError(f"{name} is not in the official source")
