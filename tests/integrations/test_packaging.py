"""The monorepo layout: embtune (core) never imports an integration at import time, ``embtune eval``
names the package to install when embtune-faiss is missing, and each integration is its own
distribution (``integrations/<name>/pyproject.toml``) that the core's extras point to."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import embtune
from embtune.cli import main

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


def test_eval_without_embtune_faiss_names_the_package(monkeypatch, tmp_path):
    for name in ("embtune_faiss", "embtune_faiss.evaluation"):
        monkeypatch.setitem(sys.modules, name, None)  # as if embtune-faiss were not installed
    # a valid BEIR folder: eval checks its inputs first, then needs embtune-faiss
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "a document"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    result = CliRunner().invoke(main, ["eval", "--data", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install embtune-faiss" in lines[0], result.output


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
