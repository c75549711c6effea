"""Layout rules from DESIGN.md: one import root, packages listed explicitly, import directions,
and a runtime that runs without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"stream": "sonoflow.stream", "models": "sonoflow.models",
           "training": "sonoflow.training"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for folder, dotted in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([dotted, *rel.parts]) if rel.parts else dotted)
    assert found - listed == set(), "folders with __init__.py missing from pyproject packages"
    assert listed - found == set(), "pyproject lists packages that have no folder"


def test_package_dir_maps_the_one_import_root():
    pd = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert pd == {v: k for k, v in MAPPING.items()}


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, top_level) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno, id(node) in top))
    return out


def _py_files(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py") if ".venv" not in p.parts]


def test_no_bare_folder_imports():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _py_files("stream", "models", "training", "tests", "benchmarks", "tools")
           for mod, line, _ in _imports(p)
           if mod.split(".")[0] in MAPPING]
    assert bad == []


@pytest.mark.parametrize("folder, forbidden", [
    ("models", ("sonoflow.stream", "sonoflow.training")),
    ("stream", ("sonoflow.training",)),
])
def test_import_direction(folder, forbidden):
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _py_files(folder) for mod, line, _ in _imports(p)
           if mod.startswith(forbidden)]
    assert bad == []


def test_model_runtime_and_stream_never_import_torch_at_module_level():
    bad = [f"{p.relative_to(ROOT)}:{line}"
           for p in _py_files("stream", "models/runtime")
           for mod, line, top in _imports(p) if mod.split(".")[0] == "torch" and top]
    assert bad == []


def test_no_pickle_anywhere():
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in _py_files("stream", "models", "training")
           for mod, line, _ in _imports(p) if mod in ("pickle", "cPickle", "dill")]
    assert bad == []
    for p in _py_files("stream"):
        assert "recv_pyobj" not in p.read_text() and "send_pyobj" not in p.read_text(), p


def test_capture_to_outputs_runs_without_torch(tmp_path):
    """Block torch outright and replay through the engine: the runtime must not need it."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
from sonoflow.stream.replay import replay_source
r = replay_source("pattern:frames=20,width=128,height=96", r"{tmp_path}", pipeline="relay",
                  progress=False)
assert r.ok, r.error
assert r.counts["total"] == 20, r.counts
assert "torch" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
