"""The monorepo layout: embtune (core) never imports an integration at import time, ``embtune eval``
runs without embtune-faiss (the core's exact search), and each integration is its own distribution
(``integrations/<name>/pyproject.toml``) that the core's extras point to."""
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


def test_eval_runs_without_embtune_faiss(monkeypatch, tmp_path, tiny_folder):
    """``embtune eval`` ranks with the core's exact search: it works with embtune-faiss unimportable and
    its rows are `evaluate_retrieval` of the same model, at full size and truncated (Matryoshka)."""
    import json

    from embtune.data import load_beir
    from embtune.eval import evaluate_retrieval
    from embtune.models.inference import load_inference_model

    for name in ("embtune_faiss", "embtune_faiss.evaluation", "embtune_faiss.cli"):
        monkeypatch.setitem(sys.modules, name, None)  # as if embtune-faiss were not installed
    (tmp_path / "qrels").mkdir()
    docs = ["a cat sat on the mat", "dogs bark at night", "the stock market fell", "rain in spain",
            "a kitten on a rug", "interest rates rose"]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                                   for i, t in enumerate(docs)))
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "cats on mats"}\n'
                                            '{"_id": "q2", "text": "markets and rates"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\td4\t1\n"
                                                 "q2\td2\t1\nq2\td5\t2\n")
    result = CliRunner().invoke(main, ["eval", tiny_folder, "--data", str(tmp_path), "--dims", "64,16", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["dims"] for row in rows] == [64, 16]
    data = load_beir(tmp_path)
    model = load_inference_model(tiny_folder)
    for row, cut in zip(rows, (None, 16)):
        expected = evaluate_retrieval(model, data.corpus, data.queries, data.split_qrels("test"),
                                      show_progress=False, truncate_dim=cut)
        assert row == {"dims": row["dims"], **{k: pytest.approx(expected[k], abs=1e-6) for k in
                                              ("ndcg@10", "recall@10", "mrr@10", "map@100")},
                       "num_queries": expected["num_queries"]}
    table = CliRunner().invoke(main, ["eval", tiny_folder, "--data", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "| dims |" in table.stdout and "| 64 |" in table.stdout
    bad = CliRunner().invoke(main, ["eval", tiny_folder, "--data", str(tmp_path), "--index", "HNSW32"])
    assert bad.exit_code == 2 and "--index" in bad.output


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
