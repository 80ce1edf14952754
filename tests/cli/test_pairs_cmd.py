"""`embtune pairs`: the pair-filter flags reach ``filter_pairs``."""
from __future__ import annotations

import json

import numpy as np
from cli_helpers import ok, one_line_error, saved
from pipeline_helpers import TINY_ARGS


def test_pair_filter_flags_reach_filter_pairs(tmp_path, small_corpus, tiny_model):
    from embtune.models import FastSentenceTransformer
    from embtune.models.inference import encode_texts

    run = tmp_path / "run"
    base = ["pairs", small_corpus, "--out", run, "--model", tiny_model, *TINY_ARGS, "--negatives", "0", "--quiet"]

    def kept() -> dict:
        return json.loads((run / "manifest.json").read_text())["stages"]["pairs"]["info"]

    ok(*base)
    default = kept()
    ok(*base, "--filter-top-k", "0", "--min-cosine", "-1")  # no rank test, every cosine passes
    everything = kept()
    dropped = everything["filter"]["dropped"]
    assert dropped["not_top_k"] == 0 and everything["kept"] > default["kept"]
    # without the rank/cosine test only duplicates (exact or near, a property of the texts) are dropped
    assert everything["kept"] == everything["built"] - sum(dropped.values())
    pairs = [json.loads(line) for line in (run / "work" / "pairs.built.jsonl").read_text().splitlines()]
    row = {json.loads(line)["id"]: r for r, line in enumerate((run / "chunks.jsonl").read_text().splitlines())}
    assert all(p["positive_id"] in row for p in pairs)  # a positive is scored by its chunk's embedding
    chunk_emb = np.load(run / "work" / "chunk_embeddings.npy")
    model = FastSentenceTransformer.from_pretrained(tiny_model, max_seq_length=64, for_inference=True)
    q = encode_texts(model, [p["query"] for p in pairs], "query", batch_size=64)
    cosines = sorted((q * chunk_emb[[row[p["positive_id"]] for p in pairs]]).sum(axis=1).tolist())
    threshold = (cosines[len(cosines) // 2 - 1] + cosines[len(cosines) // 2]) / 2
    ok(*base, "--filter-top-k", "0", "--min-cosine", f"{threshold:.6f}")
    assert kept()["kept"] == sum(c >= threshold for c in cosines) < everything["kept"]
    assert "no pair survived" in one_line_error(*base, "--filter-top-k", "0", "--min-cosine", "0.9999")
    config = saved(run)
    assert config["command"] == "pairs" and config["filter_top_k"] == 0 and "force" not in config
