"""The monorepo layout: embtune (core) never imports an integration at import time (``embtune eval``
without embtune-faiss: tests/cli/test_eval_cmd.py), and each integration is its own distribution
(``integrations/<name>/pyproject.toml``) that the core's extras point to."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import embtune

INTEGRATIONS = {"langchain": "embtune_langchain", "llamaindex": "embtune_llamaindex", "faiss": "embtune_faiss"}
REPO = Path(__file__).resolve().parents[2]


def _module_level_imports(tree: ast.AST) -> list[ast.stmt]:
    """Import statements that run when the module is imported: not inside a function body."""
    found, todo = [], list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def test_core_never_imports_an_integration_at_import_time():
    package = Path(embtune.__file__).parent  # the installed core, wheel or editable
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(name.split(".")[0] in INTEGRATIONS.values() for name in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []


@pytest.mark.skipif(not (REPO / "integrations").is_dir(), reason="needs the monorepo checkout")
def test_each_integration_is_a_distribution_the_core_extras_point_to():
    tomllib = pytest.importorskip("tomllib")
    core = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert [Path(p).name for p in core["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]] == [
        "embtune", "embtune_kernels"]
    extras = core["project"]["optional-dependencies"]
    in_all = {name.strip() for req in extras["all"] for name in req.partition("[")[2].rstrip("]").split(",")}
    for folder, module in INTEGRATIONS.items():
        meta = tomllib.loads((REPO / "integrations" / folder / "pyproject.toml").read_text(encoding="utf-8"))
        project = meta["project"]
        assert project["name"] == f"embtune-{folder}" and project["version"] == core["project"]["version"]
        assert project["requires-python"] == core["project"]["requires-python"]
        assert any(dep.startswith("embtune>=") for dep in project["dependencies"])
        assert meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{module}"]
        assert any(dep.startswith(f"embtune-{folder}>=") for dep in extras[folder])
        assert folder in in_all
