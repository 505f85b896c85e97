"""The library never imports the web app's wing: no module under stylegallery/ outside stylegallery/web/ names
stylegallery.web, and importing every library module loads none of it; app.py only wires."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.fixtures import REPO


LIBRARY = sorted(p for p in (REPO / "stylegallery").rglob("*.py") if "web" not in p.relative_to(REPO).parts[1:2])


def _imported(path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_library_module_imports_the_web_wing():
    assert len(LIBRARY) > 10 and not any(p.parent.name == "web" for p in LIBRARY)
    offenders = {str(p.relative_to(REPO)): name for p in LIBRARY for name in _imported(p)
                 if name == "stylegallery.web" or name.startswith("stylegallery.web.")}
    assert offenders == {}


def test_importing_every_library_module_loads_no_web_module():
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in LIBRARY
               if p.name != "__main__.py"]  # __main__ runs the CLI
    probe = ("import importlib, sys\n"
             f"for name in {modules!r}:\n"
             "    importlib.import_module(name)\n"
             "print(sorted(m for m in sys.modules if m == 'stylegallery.web' or m.startswith('stylegallery.web.')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_app_py_only_wires():
    """app.py holds constants, the cached pipeline, the handlers, the layout and launch; the rest is in the wing."""
    source = (REPO / "app.py").read_text()
    assert len(source.splitlines()) <= 400
    assert "gradio." not in source.replace("gradio_client", "")  # no reach into gradio's modules: web/compat does
