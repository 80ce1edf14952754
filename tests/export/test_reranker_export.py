"""Reranker exports: a TEI ``/rerank`` folder and ONNX with the score head inside, each checked against
the CrossEncoder's own scores (`embtune.rerankers.score_pairs`) on tiny random-init rerankers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from tiny_rerankers import build_tiny_reranker

from embtune.errors import ExportError
from embtune.export import (export_reranker, export_reranker_onnx, export_reranker_tei, validate_tei_folder,
                            verify_reranker_onnx)
from embtune.export.verify import RERANK_PAIRS, onnx_scores, reference_scores
from embtune.rerankers import add_lora, load_reranker, save_reranker, score_pairs

# pairs unlike RERANK_PAIRS (the exporters' own self-check), in a batch of another size
PAIRS = [("how do cells divide", "Mitosis splits one cell into two."),
         ("how do cells divide", "Bananas are yellow."),
         ("which gene controls eye colour", "OCA2 variants largely set eye colour."),
         ("x", "y")]


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory):
    """A saved tiny BERT reranker (spread weights, 64-token pairs)."""
    return build_tiny_reranker(tmp_path_factory.mktemp("reranker"), "bert", max_length=64)


@pytest.fixture(scope="module")
def crossencoder(tiny_reranker):
    return load_reranker(tiny_reranker, device="cpu", dtype=torch.float32, for_inference=True)


@pytest.fixture(scope="module")
def reranker_onnx(tiny_reranker, tmp_path_factory):
    return export_reranker_onnx(tiny_reranker, tmp_path_factory.mktemp("onnx") / "reranker")


@pytest.fixture(scope="module")
def reranker_tei(tiny_reranker, tmp_path_factory):
    return export_reranker_tei(tiny_reranker, tmp_path_factory.mktemp("tei") / "reranker")


def test_scores_are_spread_enough_to_test_anything(crossencoder):
    scores = score_pairs(crossencoder, PAIRS + RERANK_PAIRS)
    assert np.diff(np.sort(scores)).min() > 1e-3  # a constant-score model would make parity trivial


def test_onnx_graph_ends_in_the_score(reranker_onnx):
    graph = onnx.load(str(reranker_onnx / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in graph.input:
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]
    (output,) = graph.output
    dims = output.type.tensor_type.shape.dim
    assert output.name == "logits" and dims[0].dim_param == "batch" and dims[1].dim_value == 1
    info = json.loads((reranker_onnx / "onnx_export.json").read_text())
    assert info["task"] == "rerank" and info["output"] == "logits" and info["max_seq_length"] == 64
    assert info["self_check_max_abs_diff"] < 1e-4
    assert (reranker_onnx / "tokenizer.json").is_file()
    assert json.loads((reranker_onnx / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]


def test_onnx_scores_equal_the_crossencoder(reranker_onnx, crossencoder):
    want = score_pairs(crossencoder, PAIRS)
    got = onnx_scores(reranker_onnx, PAIRS)
    assert np.abs(got - want).max() < 1e-4
    # one pair alone: another batch and sequence length than the traced example
    assert np.abs(onnx_scores(reranker_onnx, PAIRS[:1]) - want[:1]).max() < 1e-4
    assert verify_reranker_onnx(reranker_onnx, crossencoder, PAIRS) < 1e-4


def test_onnx_pairs_are_truncated_like_the_crossencoder(reranker_onnx, crossencoder):
    long_pair = [("a question " * 40, "an answer that goes on " * 40)]  # far beyond 64 tokens
    assert np.abs(onnx_scores(reranker_onnx, long_pair) - score_pairs(crossencoder, long_pair)).max() < 1e-4


def test_verify_catches_a_different_model(reranker_onnx, tmp_path):
    other = build_tiny_reranker(tmp_path / "other", "bert", seed=1, max_length=64)
    with pytest.raises(ExportError, match="differ"):
        verify_reranker_onnx(reranker_onnx, other, PAIRS)


def test_tei_folder_is_a_one_label_classifier(reranker_tei):
    validate_tei_folder(reranker_tei, reranker=True)
    config = json.loads((reranker_tei / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert len(config["id2label"]) == 1 and len(config["label2id"]) == 1
    assert json.loads((reranker_tei / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    assert {p.name for p in reranker_tei.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json", "README.md"}
    assert not (reranker_tei / "1_Pooling").exists() and not (reranker_tei / "modules.json").exists()
    with pytest.raises(ExportError, match="Classification"):
        validate_tei_folder(reranker_tei)  # as an embedder TEI would serve a classifier instead


def test_tei_folder_reloads_in_transformers_with_the_same_logits(reranker_tei, crossencoder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(reranker_tei)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(reranker_tei))
    batch = tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True,
                      max_length=64, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (len(PAIRS), 1)
    assert np.abs(logits[:, 0].numpy() - score_pairs(crossencoder, PAIRS)).max() < 1e-5
    assert np.abs(reference_scores(reranker_tei, PAIRS) - score_pairs(crossencoder, PAIRS)).max() < 1e-5


@pytest.mark.parametrize("family", ["distilbert", "modernbert"])
def test_other_tei_reranker_families(tmp_path, family):
    folder = build_tiny_reranker(tmp_path / family, family, max_length=64)
    tei = export_reranker_tei(folder, tmp_path / "tei")
    validate_tei_folder(tei, reranker=True)
    assert np.abs(reference_scores(tei, PAIRS) - reference_scores(folder, PAIRS)).max() < 1e-5
    out = export_reranker_onnx(folder, tmp_path / "onnx")
    assert np.abs(onnx_scores(out, PAIRS) - reference_scores(folder, PAIRS)).max() < 1e-4


def test_tei_refuses_a_family_tei_has_no_classifier_for(tmp_path):
    folder = build_tiny_reranker(tmp_path / "mpnet", "mpnet", max_length=64)
    with pytest.raises(ExportError, match="TEI serves no reranker .*mpnet"):
        export_reranker_tei(folder, tmp_path / "tei")
    assert not (tmp_path / "tei").exists()
    out = export_reranker_onnx(folder, tmp_path / "onnx")  # ONNX has no such limit
    assert np.abs(onnx_scores(out, PAIRS) - reference_scores(folder, PAIRS)).max() < 1e-4


def test_validator_names_a_missing_or_wrong_head(reranker_tei, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "no-pooler"
    shutil.copytree(reranker_tei, broken)
    state = load_file(str(broken / "model.safetensors"))
    kept = {k: v for k, v in state.items() if not k.startswith("bert.pooler")}
    save_file(kept, str(broken / "model.safetensors"))
    with pytest.raises(ExportError, match="bert.pooler.dense.weight"):
        validate_tei_folder(broken, reranker=True)
    two = tmp_path / "two-labels"
    shutil.copytree(reranker_tei, two)
    config = json.loads((two / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "no", "1": "yes"}, {"no": 0, "yes": 1}
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="one label"):
        validate_tei_folder(two, reranker=True)
    with pytest.raises(ExportError, match="one score"):
        export_reranker_onnx(two, tmp_path / "out")


def test_in_memory_crossencoder_with_lora_is_merged_first(tiny_reranker, tmp_path):
    from tiny_models import randomize_lora_b

    model = load_reranker(tiny_reranker, device="cpu", dtype=torch.float32)
    add_lora(model, r=4, lora_alpha=8)
    randomize_lora_b(model, std=0.2, seed=3)
    model.eval()
    with_adapter = score_pairs(model, PAIRS)
    assert np.abs(with_adapter - reference_scores(tiny_reranker, PAIRS)).max() > 1e-3  # the adapter matters
    out = export_reranker(model, "onnx", tmp_path / "onnx")
    assert np.abs(onnx_scores(out, PAIRS) - with_adapter).max() < 1e-4
    tei = export_reranker(model, "tei", tmp_path / "tei")
    assert np.abs(reference_scores(tei, PAIRS) - with_adapter).max() < 1e-4


def test_refusals(tiny_reranker, tmp_path):
    from tiny_models import build_tiny_decoder_reranker, build_tiny_hf

    model = load_reranker(tiny_reranker, device="cpu", dtype=torch.float32)
    add_lora(model, r=4, lora_alpha=8)
    save_reranker(model, tmp_path / "adapter", merged=False)
    with pytest.raises(ExportError, match="adapter folder"):
        export_reranker_tei(tmp_path / "adapter", tmp_path / "out")
    backbone = build_tiny_decoder_reranker(tmp_path / "qwen3")
    decoder = load_reranker(backbone, device="cpu", dtype=torch.float32)
    for exporter in (export_reranker_tei, export_reranker_onnx):
        with pytest.raises(ExportError, match="decoder rerankers"):
            exporter(decoder, tmp_path / "out")
    save_reranker(decoder, tmp_path / "decoder")
    with pytest.raises(ExportError, match="decoder rerankers"):
        export_reranker_onnx(tmp_path / "decoder", tmp_path / "out")
    embedder = build_tiny_hf(tmp_path / "bert", "bert", hidden_size=32)
    with pytest.raises(ExportError, match="not a reranker: config.json names BertModel"):
        export_reranker_onnx(embedder, tmp_path / "out")
    with pytest.raises(ExportError, match="not 'gguf'"):
        export_reranker(tiny_reranker, "gguf", tmp_path / "out")
    with pytest.raises(TypeError):
        export_reranker_tei(object(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_recognises_a_reranker_folder(tiny_reranker, tmp_path, crossencoder):
    from cli_helpers import ok, one_line_error

    result = ok("export", "onnx", tiny_reranker, "--out", tmp_path / "onnx")
    assert "onnx reranker export written to" in result.output
    got = onnx_scores(tmp_path / "onnx", PAIRS)
    np.testing.assert_allclose(got, score_pairs(crossencoder, PAIRS), atol=1e-4)
    assert "gguf" in one_line_error("export", "gguf", tiny_reranker, "--out", tmp_path / "m.gguf")
