"""Encoding and searching a corpus in bounded memory gives the same bits as doing it all at once.

The embed stage reads chunk texts from chunks.jsonl on demand (``records.ChunkTexts``) and encodes
them batch by batch (``models.inference.encode_batches``); the pipeline's evaluation searches the
matrix in slices. These tests pin that each streaming path equals the all-at-once computation it
replaced, bit for bit, on a tiny model (bf16 and fp32, packed and padded, with prompts).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from embtune.errors import DataFormatError


def _chunks(n: int = 150) -> list[dict]:
    """Chunk records with texts of many lengths, some of equal length (ties in the length sort)."""
    from tiny_models import sample_texts

    texts = sample_texts(n)
    records = [{"id": f"c{i}", "doc_id": f"d{i // 3}", "text": t[: 40 + (i * 37) % 400], "title": "",
                "headings": [], "source": f"s{i}"} for i, t in enumerate(texts)]
    records += [{"id": f"tie{i}", "doc_id": "dt", "text": f"same length {i:03d} " * 5, "title": "", "headings": [],
                 "source": "t"} for i in range(20)]
    return records


def _normalise(emb: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32, written out here as the reference."""
    emb = np.asarray(emb, dtype=np.float32)
    return np.ascontiguousarray(emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12),
                                dtype=np.float32)


def _one_call_matrix(model, texts: list[str]) -> np.ndarray:
    """What the embed stage computed before streaming: one encode call, then float32 normalisation."""
    emb = model.encode_document(texts, batch_size=64, show_progress_bar=False, convert_to_tensor=True,
                                normalize_embeddings=False)
    return _normalise(emb.float().cpu().numpy())


@pytest.fixture(scope="module")
def chunks_file(tmp_path_factory) -> tuple[Path, list[dict]]:
    from embtune.pipeline.records import write_jsonl

    records = _chunks()
    path = tmp_path_factory.mktemp("stream") / "chunks.jsonl"
    write_jsonl(path, records)
    return path, records


def test_chunk_texts_reads_lazily_and_validates(chunks_file, tmp_path):
    from embtune.pipeline.records import ChunkTexts, read_chunks

    path, records = chunks_file
    with ChunkTexts(path) as texts:
        assert len(texts) == len(records)
        assert texts[0] == records[0]["text"] and texts[-1] == records[-1]["text"]
        assert texts[2:4] == [records[2]["text"], records[3]["text"]]
        assert texts.lengths.tolist() == [len(r["text"]) for r in records]
        with pytest.raises(IndexError):
            texts[len(records)]
    assert read_chunks(path, fields=("id", "doc_id"))[5] == {"id": "c5", "doc_id": "d1"}
    bad = tmp_path / "chunks.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join(lines[:3] + [lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="duplicate chunk id") as err:
        ChunkTexts(bad)
    assert err.value.line == 4
    bad.write_text(lines[0] + "\n" + json.dumps({**records[1], "text": " "}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="non-empty text"):
        ChunkTexts(bad)


@pytest.mark.parametrize("dtype,packing", [("bfloat16", True), ("float32", True), ("float32", False)])
def test_embed_stage_equals_one_encode_call(chunks_file, tiny_model, tmp_path, dtype, packing):
    from embtune.models import FastSentenceTransformer
    from embtune.pipeline.stages import embed_stage

    path, records = chunks_file
    model = FastSentenceTransformer.from_pretrained(tiny_model, for_inference=True, dtype=dtype, packing=packing,
                                                    device="cpu")
    expected = _one_call_matrix(model, [r["text"] for r in records])
    buffer = io.BytesIO()
    np.save(buffer, expected, allow_pickle=False)
    out = tmp_path / "work" / "emb.npy"
    info = embed_stage(path, out, model, show_progress=False)
    assert info == {"chunks": len(records), "dim": expected.shape[1]}
    assert out.read_bytes() == buffer.getvalue()  # the same file, byte for byte
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_encode_batches_equal_one_call_with_prompts(tmp_path):
    from tiny_models import build_tiny_st

    from embtune.models.inference import batch_order, encode_texts as inference_encode
    from embtune.models.inference import truncate_normalize

    model = build_tiny_st(tmp_path, prompts={"query": "q: ", "document": "d: "})
    texts = [r["text"] for r in _chunks(90)]
    assert sorted(batch_order(model, texts).tolist()) == list(range(len(texts)))
    assert np.array_equal(inference_encode(model, texts, "document", batch_size=16),
                          _one_call_matrix_bs(model, texts, 16))
    one_call = model.encode_query(texts, batch_size=8, show_progress_bar=False, convert_to_numpy=True,
                                  normalize_embeddings=False)
    assert np.array_equal(inference_encode(model, texts, "query", batch_size=8, truncate_dim=32),
                          truncate_normalize(one_call, 32, True))
    assert inference_encode(model, [], "query").shape == (0, 64)
    with pytest.raises(ValueError, match="one entry per text"):
        batch_order(model, texts, lengths=[1, 2])


def _one_call_matrix_bs(model, texts, batch_size):
    emb = model.encode_document(texts, batch_size=batch_size, show_progress_bar=False, convert_to_tensor=True,
                                normalize_embeddings=False)
    return _normalise(emb.float().cpu().numpy())


def test_rank_chunks_in_slices_equals_one_slice(monkeypatch):
    import torch

    from embtune.pipeline import evaluation

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1000, 8)).astype(np.float32)
    emb[500:520] = emb[3]  # ties across slice boundaries break by id
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"c{(i * 7919) % 1000:04d}" for i in range(1000)]
    queries = {f"q{j}": rng.standard_normal(8).tolist() for j in range(30)}
    queries["q_tie"] = emb[3].tolist()

    class Model:
        def encode_query(self, texts, **kwargs):
            return torch.tensor([queries[t] for t in texts], dtype=torch.float32)

    whole = evaluation.rank_chunks(Model(), list(queries), ids, emb, 50, show_progress=False)
    monkeypatch.setattr(evaluation, "SEARCH_ROWS", 64)
    assert evaluation.rank_chunks(Model(), list(queries), ids, emb, 50, show_progress=False) == whole
