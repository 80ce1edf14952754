"""Fixtures of the corpus and pair tests: the real MiniLM and a small SciFact slice.

The slice is a BEIR folder written to a temp dir: the documents judged relevant for the first
SciFact test queries plus as many other corpus documents, chunked at 80 tokens so that most
documents have several chunks. Its chunk embeddings are computed once, directly with
``model.encode_document``, as the brute-force reference for filtering and mining.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tiny_models import minilm_path, scifact_dir

SLICE_DOCS = 20


@dataclass
class SciFactSlice:
    folder: Path
    queries: dict[str, str]
    qrels: list[tuple[str, str]]
    titles: dict[str, str]


@pytest.fixture(scope="session")
def minilm():
    from embtune import FastSentenceTransformer

    # fp32: in bf16 an embedding depends on the other texts of its batch (padding) by ~1e-3, which would
    # blur the brute-force comparisons of ranks and guards
    return FastSentenceTransformer.from_pretrained(minilm_path(), for_inference=True, device="cpu",
                                                   dtype="fp32")


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory) -> SciFactSlice:
    src = scifact_dir()
    queries = {}
    with open(src / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            queries[obj["_id"]] = obj["text"]
    judged: list[tuple[str, str]] = []
    with open(src / "qrels" / "test.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            qid, doc_id, _ = line.rstrip("\n").split("\t")
            if len({d for _, d in judged} | {doc_id}) > SLICE_DOCS // 2:
                break
            judged.append((qid, doc_id))
    wanted = {d for _, d in judged}
    docs, others = [], []
    with open(src / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["_id"] in wanted:
                docs.append(obj)
            elif len(others) < SLICE_DOCS - len(wanted):
                others.append(obj)
    folder = tmp_path_factory.mktemp("scifact-slice")
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for obj in docs + others:
            fh.write(json.dumps(obj) + "\n")
    return SciFactSlice(folder=folder, queries={q: queries[q] for q, _ in judged}, qrels=judged,
                        titles={o["_id"]: o["title"] for o in docs + others})


@pytest.fixture(scope="session")
def slice_chunks(scifact_slice, minilm):
    from embtune.corpus.chunking import chunk_documents
    from embtune.corpus.ingest import read_documents

    docs = read_documents(scifact_slice.folder, show_progress=False)
    return chunk_documents(docs, minilm.tokenizer, 80, 16, show_progress=False)


@pytest.fixture(scope="session")
def slice_embeddings(slice_chunks, minilm) -> np.ndarray:
    emb = minilm.encode_document([c.text for c in slice_chunks], batch_size=64, convert_to_numpy=True)
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def encode_queries(minilm):
    """Brute-force reference: a function giving normalised query embeddings straight from the model."""
    def encode(texts: list[str]) -> np.ndarray:
        emb = minilm.encode_query(texts, batch_size=64, convert_to_numpy=True)
        return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    return encode
