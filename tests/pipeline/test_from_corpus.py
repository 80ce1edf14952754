"""`embtune from-corpus` end to end on a tiny model: outputs, reruns that skip, --force, the shared
`pairs` / `train` path, user labels, training modes, exports."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pipeline_helpers import TINY_ARGS, invoke

from embtune.pipeline.evaluation import REPORT_METRICS

STAGES = ["chunks", "embed", "pairs", "split", "negatives", "bm25", "baseline", "train", "validation", "select", "merge",
          "embed_after", "after"]


def run_args(model: str, steps: int = 4) -> list[str]:
    return ["--model", model, *TINY_ARGS, "--max-steps", str(steps), "--batch-size", "8", "--save-steps", "2"]


def finished_at(run: Path) -> dict[str, str]:
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    return {name: entry["finished_at"] + str(entry["key"]) for name, entry in stages.items()}


@pytest.fixture
def corpus(tmp_path, small_corpus) -> Path:
    """A private copy of the small corpus (tests below edit it)."""
    return Path(shutil.copytree(small_corpus, tmp_path / "docs"))


def test_outputs_rerun_skip_change_and_force(corpus, tmp_path, tiny_model):
    run = tmp_path / "run"
    first = invoke("from-corpus", str(corpus), "--out", str(run), *run_args(tiny_model))
    for name in ("chunks.jsonl", "pairs.jsonl", "eval.jsonl", "report.json", "report.md", "report.png",
                 "adapter/adapter_config.json", "merged/modules.json", "checkpoints/step-4/state.json"):
        assert (run / name).exists(), name
    report = json.loads((run / "report.json").read_text())
    assert set(report["before"]) == set(REPORT_METRICS) == set(report["after"])
    assert report["counts"]["documents"] == 12 and report["counts"]["train_steps"] == 4
    assert report["settings"]["builder"] == "heuristic"
    # the report names its evaluation source first: held-out heuristic queries are synthetic
    md_first = (run / "report.md").read_text().splitlines()[0]
    assert list(report)[0] == "evaluation_source" and report["evaluation"]["kind"] == "synthetic"
    assert "synthetic queries from builder heuristic:title" in md_first and "not a measure" in md_first
    assert md_first.endswith(report["evaluation_source"])
    assert set(report["bm25"]) == set(REPORT_METRICS) and "| BM25 (keywords) |" in (run / "report.md").read_text()
    assert set(STAGES) <= set(report["timings"])
    assert [len(step) for step in report["loss_history"]] and report["loss_history"][-1][0] == 4
    assert "before" in first.output and "after" in first.output and str(run / "merged") in first.output
    pair = json.loads((run / "pairs.jsonl").read_text().splitlines()[0])
    assert set(pair) == {"query", "positive", "positive_id", "doc_id", "builder", "negatives", "negative_ids"}
    chunk_ids = {json.loads(line)["id"] for line in (run / "chunks.jsonl").read_text().splitlines()}
    for line in (run / "eval.jsonl").read_text().splitlines():
        assert set(json.loads(line)["relevant"]) <= chunk_ids
    # held-out documents give no training pair
    held = set(json.loads((run / "manifest.json").read_text())["stages"]["split"]["info"]["held_out_documents"])
    assert held and not held & {json.loads(line)["doc_id"] for line in (run / "pairs.jsonl").read_text().splitlines()}

    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(run / "merged"), device="cpu").encode(["a query"]).shape == (1, 64)

    stamps = finished_at(run)
    again = invoke("from-corpus", str(corpus), "--out", str(run), *run_args(tiny_model))
    assert finished_at(run) == stamps, "an unchanged rerun must skip every stage"
    assert again.output.count("unchanged, skipped") == len(STAGES)
    assert json.loads((run / "report.json").read_text())["after"] == report["after"]

    first_doc = sorted(corpus.iterdir())[0]
    first_doc.write_text(first_doc.read_text() + "\nAn added closing sentence about something else entirely.\n")
    invoke("from-corpus", str(corpus), "--out", str(run), *run_args(tiny_model))
    changed = finished_at(run)
    assert changed["chunks"] != stamps["chunks"]

    (run / "stray.txt").write_text("kept")
    invoke("from-corpus", str(corpus), "--out", str(run), *run_args(tiny_model), "--force")
    assert all(finished_at(run)[s] != changed[s] for s in STAGES)
    assert (run / "stray.txt").read_text() == "kept"  # --force removes embtune's outputs only


def test_pairs_command_then_train_from_run_folder(corpus, tmp_path, tiny_model):
    full, only = tmp_path / "full", tmp_path / "only"
    invoke("from-corpus", str(corpus), "--out", str(full), *run_args(tiny_model))
    invoke("pairs", str(corpus), "--out", str(only), "--model", tiny_model, *TINY_ARGS)
    for name in ("chunks.jsonl", "pairs.jsonl", "eval.jsonl"):
        assert (only / name).read_bytes() == (full / name).read_bytes(), name
    assert not (only / "adapter").exists() and not (only / "report.json").exists()
    result = invoke("train", "--data", str(only), "--out", str(only), "--model", tiny_model, "--max-steps", "2",
                    "--batch-size", "8", "--max-seq-length", "64")
    assert "trained 2 steps" in result.output
    assert (only / "adapter" / "adapter_config.json").is_file() and (only / "merged" / "modules.json").is_file()


def _labels(tmp_path: Path, corpus: Path, docs: list[Path]) -> tuple[Path, Path]:
    queries, qrels = tmp_path / "queries.jsonl", tmp_path / f"qrels-{docs[0].stem}.tsv"
    with open(queries, "a", encoding="utf-8") as fh:
        for doc in docs:
            title = doc.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            fh.write(json.dumps({"_id": doc.stem, "text": title}) + "\n")
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{d.stem}\t{d.name}\t1\n" for d in docs))
    return queries, qrels


def test_labels_and_eval_labels(corpus, tmp_path, tiny_model):
    docs = sorted(corpus.glob("*.md"))
    queries, train_qrels = _labels(tmp_path, corpus, docs[:8])
    _, test_qrels = _labels(tmp_path, corpus, docs[8:])
    run = tmp_path / "run"
    invoke("from-corpus", str(corpus), "--out", str(run), "--labels", str(train_qrels), "--queries", str(queries),
           "--eval-labels", str(test_qrels), *run_args(tiny_model))
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {p["builder"] for p in pairs} == {"labels"}
    assert {p["doc_id"] for p in pairs} <= {d.name for d in docs[:8]}
    chunks = [json.loads(line) for line in (run / "chunks.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["query_id"] for e in evals] == [d.stem for d in docs[8:]]
    for e in evals:  # every chunk of the labelled document is relevant
        assert sorted(e["relevant"]) == sorted(c["id"] for c in chunks if c["doc_id"] == e["query_id"] + ".md")
    report = json.loads((run / "report.json").read_text())
    assert report["evaluation"]["queries"] == 4 and "qrels-" in report["evaluation"]["source"]
    first_line = (run / "report.md").read_text().splitlines()[0]
    assert report["evaluation"]["kind"] == "labelled" and f"your labelled queries ({test_qrels.name})" in first_line
    assert "synthetic" not in first_line and report["evaluation_source"] in first_line


@pytest.mark.parametrize("mode", ["--full", "--qlora"])
def test_training_modes(mode, tmp_path, small_corpus, tiny_model):
    run = tmp_path / "run"
    invoke("from-corpus", str(small_corpus), "--out", str(run), *run_args(tiny_model, steps=2), mode,
           "--negatives", "0")
    assert (run / ("model" if mode == "--full" else "adapter")).is_dir()
    assert (run / "merged" / "modules.json").is_file()
    assert json.loads((run / "report.json").read_text())["counts"]["train_steps"] == 2


def test_exports_all_three_formats_that_load_in_their_runtimes(tmp_path, small_corpus, tiny_model):
    """--export gguf,tei,onnx: each file loads in its real runtime and embeds like the merged folder."""
    pytest.importorskip("embtune.export.api")
    from embtune.export.tei_rules import validate_tei_folder
    from embtune.export.verify import TEXTS, cosines, onnx_embeddings, reference_embeddings

    run = tmp_path / "run"
    result = invoke("from-corpus", str(small_corpus), "--out", str(run), *run_args(tiny_model, steps=2),
                    "--export", "gguf,tei,onnx")
    exports = run / "exports"
    assert sorted(p.name for p in exports.iterdir()) == ["gguf", "onnx", "tei"]
    assert not [p for p in run.iterdir() if p.name.startswith(".exports")]
    assert "exports" in result.output
    reference = reference_embeddings(run / "merged", TEXTS)
    validate_tei_folder(exports / "tei")
    assert cosines(reference, reference_embeddings(exports / "tei", TEXTS)).min() >= 0.9999
    assert cosines(reference, onnx_embeddings(exports / "onnx", TEXTS)).min() >= 0.9999
    (gguf,) = list((exports / "gguf").glob("*.gguf"))
    assert (exports / "gguf" / "Modelfile").is_file()
    llama_cpp = pytest.importorskip("llama_cpp")
    assert llama_cpp
    from embtune.export.verify import llama_embeddings

    assert cosines(reference, llama_embeddings(gguf, TEXTS)).min() >= 0.999
