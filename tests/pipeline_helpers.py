"""Shared constants and helpers of the from-corpus tests (a plain module: conftest files are not importable
reliably when several test folders have one)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tiny_models import scifact_dir

# Tiny matmuls gain nothing from threads; on a busy 2-core machine OpenMP spinning slows them a lot.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                  "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
TINY_ARGS = ["--max-seq-length", "64", "--chunk-tokens", "48", "--chunk-overlap", "8"]


def write_corpus(folder: Path, n_docs: int = 12, start: int = 0) -> Path:
    """Write ``n_docs`` SciFact abstracts as Markdown files into ``folder`` (title heading + paragraphs
    of three sentences); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(scifact_dir() / "corpus.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line) for _, line in zip(range(start + n_docs), fh)][start:]
    for doc in docs:
        sentences = [s.strip() for s in doc["text"].split(". ") if s.strip()]
        paragraphs = [". ".join(sentences[i:i + 3]) for i in range(0, len(sentences), 3)]
        body = "\n\n".join(p if p.endswith(".") else p + "." for p in paragraphs)
        (folder / f"doc{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{body}\n", encoding="utf-8")
    return folder


def write_plain_corpus(folder: Path, n_docs: int = 12) -> Path:
    """Write ``n_docs`` SciFact abstracts as title-less ``.txt`` files of lower-cased words with the
    punctuation and the stop words stripped (what scraped or OCR'd exports look like); returns the folder."""
    import re

    from embtune.pairs.heuristic import _STOPWORDS

    folder.mkdir(parents=True, exist_ok=True)
    with open(scifact_dir() / "corpus.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line) for _, line in zip(range(n_docs), fh)]
    for doc in docs:
        words = [w for w in re.findall(r"[a-z0-9]+", doc["text"].lower()) if w not in _STOPWORDS]
        (folder / f"doc{doc['_id']}.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
    return folder


def invoke(*args: str):
    """Run the ``embtune`` CLI in-process with ``args``; assert exit code 0 (showing the output and the
    exception otherwise) and return click's Result."""
    from click.testing import CliRunner
    from embtune.cli import main

    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result
