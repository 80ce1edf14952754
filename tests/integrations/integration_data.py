"""Small SciFact retrieval tasks for the integration tests (module name unique across tests/)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tiny_models import scifact_dir

#: A SciFact task description, and the Qwen3-Embedding query prompt it gives (written out, so the tests
#: check ``embtune.models.architectures.instruction_prompt`` rather than reuse it).
TASK = "Given a scientific claim, retrieve abstracts that support or refute it"
INSTRUCTED = f"Instruct: {TASK}\nQuery: "


@dataclass
class Slice:
    """A small retrieval task cut from SciFact test: every relevant doc plus distractors."""

    corpus: dict[str, str]
    titles: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def scifact_slice(n_queries: int, n_docs: int) -> Slice:
    """The first ``n_queries`` test queries, their relevant docs, and distractors up to ``n_docs``."""
    from embtune.data import load_beir

    data = load_beir(scifact_dir())
    qrels = dict(list(data.split_qrels("test").items())[:n_queries])
    relevant = list(dict.fromkeys(d for docs in qrels.values() for d in docs))
    others = [d for d in data.corpus if d not in set(relevant)]
    ids = relevant + others[: max(0, n_docs - len(relevant))]
    return Slice(corpus={d: data.corpus[d] for d in ids}, titles={d: data.titles.get(d, "") for d in ids},
                 queries={q: data.queries[q] for q in qrels}, qrels=qrels)


def write_beir(folder: Path, task: Slice) -> Path:
    """Write ``task`` as a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv); returns it."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, text in task.corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in task.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in task.qrels.items():
            for doc_id, score in docs.items():
                fh.write(f"{qid}\t{doc_id}\t{score}\n")
    return folder
