"""Bad input to `embtune from-corpus` / `pairs` / `train`: one line naming the file (and line), exit 2.

Table-driven through the real CLI (click's CliRunner), and a few cases through a real subprocess
(the installed console script) to check what a user's terminal shows, including `--debug`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_helpers import SUBPROCESS_ENV, TINY_ARGS

from embtune.cli import main


def _corpus_file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _labels_case(tmp: Path, corpus: Path, labels: str | bytes, queries: str | bytes | None = None,
                 flag: str = "--labels"):
    """A labels/queries pair next to the corpus; returns (args, labels path, queries path)."""
    lpath = tmp / "labels.tsv"
    lpath.write_bytes(labels.encode() if isinstance(labels, str) else labels)
    qpath = tmp / "queries.jsonl"
    if queries is None:
        queries = '{"_id": "q1", "text": "what causes cancer"}\n'
    qpath.write_bytes(queries.encode() if isinstance(queries, str) else queries)
    return [str(corpus), flag, str(lpath), "--queries", str(qpath)], lpath, qpath


# Each case: (id, build(tmp, corpus) -> (args after "from-corpus", [expected substrings])).
# The corpus' documents are doc<SciFact id>.md, so "doc4983.md" is a valid document id.
def _cases():
    def missing_folder(tmp, corpus):
        return [str(tmp / "nope")], [str(tmp / "nope"), "does not exist"]

    def empty_folder(tmp, corpus):
        (tmp / "empty").mkdir()
        return [str(tmp / "empty")], [str(tmp / "empty"), "no usable text"]

    def empty_file(tmp, corpus):
        path = _corpus_file(tmp, "empty.txt", b"")
        return [str(path)], [str(path)]

    def binary_file(tmp, corpus):
        path = _corpus_file(tmp, "blob.txt", bytes(range(256)) * 64)
        return [str(path)], [str(path)]

    def non_utf8_text(tmp, corpus):
        path = _corpus_file(tmp, "latin1.txt", "Café au lait, crème brûlée. ".encode("latin-1") * 50)
        return [str(path)], [str(path)]

    def malformed_jsonl_corpus(tmp, corpus):
        path = _corpus_file(tmp, "docs.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
        return [str(path)], [f"{path}:2:", "invalid JSON"]

    def malformed_csv_corpus(tmp, corpus):
        path = _corpus_file(tmp, "docs.csv", b"id,text\na,first document\nb,second,extra\n")
        return [str(path)], [f"{path}:3:"]

    def beir_missing_id(tmp, corpus):
        folder = tmp / "beir"
        folder.mkdir()
        (folder / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n{"text": "no id"}\n')
        return [str(folder)], ["corpus.jsonl:2:", "_id"]

    def labels_without_queries(tmp, corpus):
        (tmp / "l.tsv").write_text("q1\tdoc4983.md\t1\n")
        return [str(corpus), "--labels", str(tmp / "l.tsv")], ["--labels needs --queries"]

    def qlora_with_full(tmp, corpus):
        return [str(corpus), "--qlora", "--full"], ["--qlora and --full"]

    def unknown_pairs_value(tmp, corpus):
        return [str(corpus), "--pairs", "magic"], ["--pairs", "magic"]

    def bad_export_value(tmp, corpus):
        return [str(corpus), "--export", "gguf,pdf"], ["--export", "'pdf'"]

    def llm_url_without_model(tmp, corpus):
        return [str(corpus), "--llm-url", "http://localhost:1"], ["--llm-url needs --llm-model"]

    def llm_model_without_url(tmp, corpus):
        return [str(corpus), "--llm-model", "m"], ["--llm-model needs --llm-url"]

    def llm_gguf_missing_file(tmp, corpus):
        return [str(corpus), "--llm-gguf", str(tmp / "nope.gguf")], ["--llm-gguf file does not exist", "nope.gguf"]

    def llm_gguf_and_llm_url(tmp, corpus):
        gguf = _corpus_file(tmp, "m.gguf", b"GGUF")
        return [str(corpus), "--llm-gguf", str(gguf), "--llm-url", "http://localhost:1", "--llm-model", "m"], \
            ["--llm-url and --llm-gguf", "give one"]

    def pairs_labels_without_labels(tmp, corpus):
        return [str(corpus), "--pairs", "labels"], ["--pairs labels needs --labels"]

    def batch_size_one(tmp, corpus):
        return [str(corpus), "--batch-size", "1"], ["--batch-size"]

    def unwritable_out(tmp, corpus):
        (tmp / "a-file").write_text("x")
        return [str(corpus)], [str(tmp / "a-file" / "run"), "cannot create"], tmp / "a-file" / "run"

    def out_inside_corpus(tmp, corpus):
        return [str(corpus)], ["inside the corpus folder"], corpus / "run"

    def out_not_a_run_folder(tmp, corpus):
        (tmp / "busy").mkdir()
        (tmp / "busy" / "thesis.docx").write_text("precious")
        return [str(corpus)], ["not an embtune run folder", "--force"], tmp / "busy"

    def corrupt_manifest(tmp, corpus):
        (tmp / "run").mkdir()
        (tmp / "run" / "manifest.json").write_text("{oops")
        return [str(corpus)], [str(tmp / "run" / "manifest.json")], tmp / "run"

    def run_folder_in_use(tmp, corpus):
        (tmp / "run").mkdir()
        (tmp / "run" / ".embtune.lock").write_text(str(os.getppid()))  # a live process that is not us
        return [str(corpus), "--force"], ["another embtune run", f"pid {os.getppid()}"], tmp / "run"

    def labels_file_missing(tmp, corpus):
        (tmp / "q.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
        return ([str(corpus), "--labels", str(tmp / "none.tsv"), "--queries", str(tmp / "q.jsonl")],
                [str(tmp / "none.tsv"), "does not exist"])

    def eval_labels_without_queries(tmp, corpus):
        (tmp / "t.tsv").write_text("q1\tdoc4983.md\t1\n")
        return [str(corpus), "--eval-labels", str(tmp / "t.tsv")], ["--eval-labels needs --queries"]

    # the cases below get past the flag checks: the tiny model chunks the corpus, then the labels fail
    def qrels_unknown_document(tmp, corpus):
        args, lpath, _ = _labels_case(tmp, corpus, "q1\tdoc4983.md\t1\nq1\tnot-there.md\t1\n")
        return args, [f"{lpath}:2:", "'not-there.md'"]

    def qrels_unknown_query(tmp, corpus):
        args, lpath, _ = _labels_case(tmp, corpus, "query-id\tcorpus-id\tscore\nq9\tdoc4983.md\t1\n")
        return args, [f"{lpath}:2:", "'q9'"]

    def qrels_wrong_columns(tmp, corpus):
        args, lpath, _ = _labels_case(tmp, corpus, "q1\tdoc4983.md\t1\nq1 doc4983.md 1\n")
        return args, [f"{lpath}:2:", "3 tab-separated"]

    def qrels_empty_file(tmp, corpus):
        args, lpath, _ = _labels_case(tmp, corpus, "")
        return args, [str(lpath), "empty"]

    def queries_malformed_jsonl(tmp, corpus):
        args, _, qpath = _labels_case(tmp, corpus, "q1\tdoc4983.md\t1\n", '{"_id": "q1", "text": "a"}\n{"_id": \n')
        return args, [f"{qpath}:2:", "invalid JSON"]

    def queries_non_utf8(tmp, corpus):
        args, _, qpath = _labels_case(tmp, corpus, "q1\tdoc4983.md\t1\n", b'{"_id": "q1", "text": "caf\xe9"}\n')
        return args, [f"{qpath}:1:", "UTF-8"]

    def eval_labels_unknown_document(tmp, corpus):
        args, lpath, _ = _labels_case(tmp, corpus, "q1\tmissing.md\t1\n", flag="--eval-labels")
        return args, [f"{lpath}:1:", "'missing.md'"]

    return [v for k, v in locals().items() if callable(v)]


CASES = _cases()


def _run(args):
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def _check_one_line(exit_code, output, expected):
    assert exit_code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("embtune: error: "), output
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_from_corpus_bad_input(case, tmp_path, small_corpus, tiny_model):
    built = case(tmp_path, small_corpus)
    args, expected = built[0], built[1]
    out = built[2] if len(built) > 2 else tmp_path / "run"
    exit_code, output = _run(["from-corpus", *args, "--out", str(out), "--model", tiny_model, "--quiet",
                              *TINY_ARGS])
    _check_one_line(exit_code, output, expected)


def test_pairs_command_shares_the_checks(tmp_path, small_corpus):
    _check_one_line(*_run(["pairs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]),
                    [str(tmp_path / "nope"), "does not exist"])
    _check_one_line(*_run(["pairs", str(small_corpus), "--out", str(tmp_path / "o"), "--export", "gguf"]),
                    ["--export"])


def test_train_rejects_malformed_corpus_pairs(tmp_path, tiny_model):
    path = tmp_path / "pairs.jsonl"
    good = ('{"query": "q", "positive": "p", "positive_id": "c", "doc_id": "d", "builder": "heuristic", '
            '"negatives": ["n"], "negative_ids": ["c2"]}\n')
    path.write_text(good + good.replace('"negatives": ["n"]', '"negatives": "n"'))
    _check_one_line(*_run(["train", "--data", str(path), "--out", str(tmp_path / "o"), "--model", tiny_model]),
                    [f"{path}:2:", "negatives"])


def _cli(*args):
    script = Path(sys.executable).with_name("embtune")
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=120)


def test_subprocess_errors_are_one_line(tmp_path, small_corpus):
    bad = _corpus_file(tmp_path, "docs.jsonl", b'{"id": "a", "text": "ok"}\n[1, 2]\n')
    for args, expected in [
        (["from-corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], ["does not exist"]),
        (["from-corpus", str(small_corpus), "--out", str(tmp_path / "o"), "--qlora", "--full"], ["--qlora"]),
        (["from-corpus", str(bad), "--out", str(tmp_path / "o2"), "--quiet"], [f"{bad}:2:"]),
        (["merge", "--slerp", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")],
         [str(tmp_path / "a")]),
    ]:
        proc = _cli(*args)
        _check_one_line(proc.returncode, proc.stdout + proc.stderr, expected)


def test_subprocess_debug_shows_traceback(tmp_path):
    proc = _cli("--debug", "from-corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "DataFormatError" in proc.stderr


def test_export_without_export_package_fails_before_any_work(tmp_path, small_corpus):
    """A Python where embtune.export cannot be imported (as if not installed): --export is refused at once."""
    code = ("import sys; sys.modules['embtune.export'] = None; from embtune.cli import main; "
            f"main({['from-corpus', str(small_corpus), '--out', str(tmp_path / 'o'), '--export', 'gguf']!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=SUBPROCESS_ENV,
                          timeout=120)
    _check_one_line(proc.returncode, proc.stdout + proc.stderr, ["--export", "embtune.export"])
    assert not (tmp_path / "o").exists()
