"""`embtune from-corpus`: the training flags reach the run, and its saved config alone repeats it.
(The from-corpus stages, resume, kill and bad input are tested in ``tests/pipeline/``.)"""
from __future__ import annotations

import json
import re

from cli_helpers import fingerprint, ok, one_line_error
from pipeline_helpers import TINY_ARGS


def test_from_corpus_training_flags_and_config_rerun(tmp_path, small_corpus, tiny_model):
    run = tmp_path / "run"
    ok("from-corpus", small_corpus, "--out", run, "--model", tiny_model, *TINY_ARGS, "--negatives", "0",
       "--max-steps", "2", "--batch-size", "8", "--loss", "infonce-symmetric", "--matryoshka-dims", "32",
       "--query-prompt", "query: ", "--lora-target-modules", "query,value", "--lora-alpha", "4", "--dtype", "fp32",
       "--quiet")
    report = json.loads((run / "report.json").read_text())
    assert report["settings"]["loss"] == "infonce_symmetric" and report["settings"]["matryoshka_dims"] == [32]
    state = fingerprint(run)
    assert state["loss"] == "infonce_symmetric" and state["prompts"]["query"] == "query: "
    assert {re.search(r"\.(\w+)\.lora_", n).group(1) for n in state["trainable"]} == {"query", "value"}
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["lora_alpha"] == 4 and sorted(adapter["target_modules"]) == ["query", "value"]
    prompts = json.loads((run / "merged" / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: "
    stamps = json.loads((run / "manifest.json").read_text())["stages"]
    result = ok("from-corpus", "--config", run / "run_config.toml")  # the saved config alone repeats the run
    assert json.loads((run / "manifest.json").read_text())["stages"] == stamps, result.output
    assert "--min-cosine filters built pairs" in one_line_error(
        "from-corpus", small_corpus, "--out", tmp_path / "x", "--pairs", "labels", "--labels", run / "eval.jsonl",
        "--queries", run / "eval.jsonl", "--min-cosine", "0.7")
