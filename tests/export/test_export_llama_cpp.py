"""GGUF exports run in the real llama.cpp (llama-cpp-python): embeddings and tokens vs sentence-transformers.

llama-cpp-python is on PyPI only as a source package; CI builds it once (see the export section of
the README / Makefile) and these tests skip with that reason where it is not installed.
"""
from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed; build it from its PyPI sdist: "
    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF' pip install llama-cpp-python")

from transformers import AutoTokenizer  # noqa: E402

from embtune.export import export_gguf  # noqa: E402
from embtune.export.verify import (LONG_TEXT, TEXTS, TOKENIZER_TEXTS, cosines, llama_embeddings,  # noqa: E402
                                   llama_tokenize, load_llama, reference_embeddings)

THRESHOLDS = {"f16": 0.9999, "q8_0": 0.998}
"""Least cosine to the sentence-transformers embeddings. Measured 2026-12-06 (AMD EPYC): merged MiniLM f16
0.9999987, q8_0 0.99924; tiny families f16 ≥ 0.9999993, q8_0 ≥ 0.99977. An export of the *unmerged* MiniLM
scores 0.9928 (`test_thresholds_would_catch_an_export_without_the_merge`)."""


@pytest.fixture(scope="module")
def minilm(merged_minilm, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama")
    return {"folder": merged_minilm, "reference": reference_embeddings(merged_minilm, TEXTS + [LONG_TEXT]),
            **{q: export_gguf(merged_minilm, out / f"minilm-{q}.gguf", q) for q in ("f16", "q8_0")}}


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_minilm_embeddings_match_sentence_transformers(minilm, quant):
    cos = cosines(minilm["reference"], llama_embeddings(minilm[quant], TEXTS + [LONG_TEXT]))
    assert cos.min() >= THRESHOLDS[quant], cos


def test_thresholds_would_catch_an_export_without_the_merge(minilm):
    """Control: the base MiniLM (the adapter dropped) is further from the merged model than any threshold
    allows, so the parity tests above fail on an export that lost the merge."""
    from tiny_models import minilm_path

    base = reference_embeddings(minilm_path(), TEXTS + [LONG_TEXT])
    assert cosines(minilm["reference"], base).min() < min(THRESHOLDS.values())


def test_llama_cpp_reads_pooling_and_size(minilm):
    llm = load_llama(minilm["f16"])
    try:
        assert llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_MEAN
        assert llm.n_embd() == 384
        assert len(llm.embed("one text")) == 384  # pooled: one vector, not one per token
    finally:
        llm.close()


def test_minilm_tokenization_matches_hf_on_plain_and_accented_text(minilm):
    hf = AutoTokenizer.from_pretrained(str(minilm["folder"]))
    want = [hf(t)["input_ids"] for t in TOKENIZER_TEXTS]
    assert llama_tokenize(minilm["f16"], TOKENIZER_TEXTS) == want


@pytest.mark.parametrize("family", ["bert", "distilbert", "xlm-roberta", "qwen3"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_tiny_models_match(tiny_merged, tmp_path, family, quant):
    folder = tiny_merged(family)
    path = export_gguf(folder, tmp_path, quant)
    cos = cosines(reference_embeddings(folder, TEXTS), llama_embeddings(path, TEXTS))
    assert cos.min() >= THRESHOLDS[quant], cos


def test_qwen3_tokens_match_and_end_with_eos(tiny_merged, tmp_path):
    folder = tiny_merged("qwen3")
    path = export_gguf(folder, tmp_path, "f16")
    hf = AutoTokenizer.from_pretrained(str(folder))
    got = llama_tokenize(path, TOKENIZER_TEXTS)
    assert got == [hf(t)["input_ids"] for t in TOKENIZER_TEXTS]
    assert all(ids[-1] == hf.eos_token_id == 0 for ids in got)
    llm = load_llama(path)
    try:
        assert llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_LAST
    finally:
        llm.close()


def test_unigram_xlmr_tokens_and_embeddings(unigram_xlmr_merged, tmp_path):
    path = export_gguf(unigram_xlmr_merged, tmp_path, "f16")
    hf = AutoTokenizer.from_pretrained(str(unigram_xlmr_merged))
    assert llama_tokenize(path, TOKENIZER_TEXTS) == [hf(t)["input_ids"] for t in TOKENIZER_TEXTS]
    cos = cosines(reference_embeddings(unigram_xlmr_merged, TEXTS), llama_embeddings(path, TEXTS))
    assert cos.min() >= 0.999, cos


def test_qwen2_pretokenizer_splits_like_hf(qwen_pretokenizer_merged, tmp_path):
    path = export_gguf(qwen_pretokenizer_merged, tmp_path, "f16")
    hf = AutoTokenizer.from_pretrained(str(qwen_pretokenizer_merged))
    texts = TOKENIZER_TEXTS + ["In 2023, 42 patients got 3.5 mg/kg.", "it's   spaced\n\nlines"]
    assert llama_tokenize(path, texts) == [hf(t)["input_ids"] for t in texts]
    cos = cosines(reference_embeddings(qwen_pretokenizer_merged, TEXTS), llama_embeddings(path, TEXTS))
    assert cos.min() >= 0.999, cos
