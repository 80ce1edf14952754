"""Exports of folders with ST Dense heads after pooling (EmbeddingGemma, LaBSE-style BERT).

GGUF refuses them with one line naming what it cannot carry; TEI and ONNX carry them, checked by
loading the TEI folder in plain sentence-transformers and by running the ONNX graph in onnxruntime,
both against the merged folder's own embeddings.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny_models import build_family_st, randomize_lora_b

from embtune import FastSentenceTransformer
from embtune.errors import ExportError
from embtune.export.api import export_model
from embtune.export.gguf import export_gguf
from embtune.export.onnx import check_onnx_matches
from embtune.export.tei import export_tei
from embtune.export.tei_rules import validate_tei_folder

TEXTS = ["x", "Protein folding is driven by hydrophobic collapse of nonpolar residues in water.",
         "Mitosis splits one cell into two daughter cells, each with a full set of chromosomes. " * 2]
BERT_DENSE = dict(backbone="bert", pooling="cls", dense=(32,))


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """``{"gemma": folder, "bert-dense": folder}``: tiny folders with Dense heads, LoRA-tuned and merged."""
    root = tmp_path_factory.mktemp("dense-heads")
    out = {}
    for key, name, spec in (("gemma", "embeddinggemma", None), ("bert-dense", "bert-dense", BERT_DENSE)):
        folder = build_family_st(root / key, name, spec=spec)
        model = FastSentenceTransformer.from_pretrained(folder, dtype=torch.float32, device="cpu")
        model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
        randomize_lora_b(model, std=0.02, seed=3)
        model.save_pretrained_merged(root / key / "merged")
        out[key] = root / key / "merged"
    return out


def _max_diff(a, b) -> float:
    return (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()


def test_gguf_refuses_dense_heads_in_one_line(merged, tmp_path):
    with pytest.raises(ExportError, match="gemma3_text to GGUF.*Dense") as info:
        export_gguf(merged["gemma"], tmp_path / "g.gguf")
    assert "\n" not in str(info.value)
    with pytest.raises(ExportError, match="Dense module after pooling") as info:
        export_gguf(merged["bert-dense"], tmp_path / "b.gguf")
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("key", ["gemma", "bert-dense"])
def test_tei_carries_dense_heads(key, merged, tmp_path):
    out = export_tei(merged[key], tmp_path / "tei")
    validate_tei_folder(out)
    modules = json.loads((out / "modules.json").read_text())
    dense = [m["path"] for m in modules if m["type"] == "sentence_transformers.models.Dense"]
    assert dense == (["2_Dense", "3_Dense"] if key == "gemma" else ["2_Dense"])
    for path in dense:
        cfg = json.loads((out / path / "config.json").read_text())
        assert set(cfg) == {"in_features", "out_features", "bias", "activation_function"}
    if key == "gemma":
        config = json.loads((out / "config.json").read_text())
        assert "rope_parameters" not in config and config["_sliding_window_pattern"] == 3
        assert (config["rope_theta"], config["rope_local_base_freq"]) == (1_000_000.0, 10_000.0)
    want = SentenceTransformer(str(merged[key]), device="cpu").encode_query(TEXTS)
    got = SentenceTransformer(str(out), device="cpu").encode_query(TEXTS)
    assert _max_diff(got, want) < 1e-5


@pytest.mark.parametrize("key", ["gemma", "bert-dense"])
def test_onnx_carries_dense_heads(key, merged, tmp_path):
    out = export_model(merged[key], "onnx", tmp_path / "onnx")
    names = json.loads((out / "onnx_export.json").read_text())["inputs"]
    model = SentenceTransformer(str(merged[key]), device="cpu", model_kwargs={"dtype": torch.float32})
    # long texts: EmbeddingGemma's sliding window (4 tokens each side here) matters in the graph
    assert check_onnx_matches(out / "model.onnx", model, names, TEXTS, min_cosine=0.99999) >= 0.99999


def test_tei_refuses_dense_heads_it_cannot_run(merged, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(merged["bert-dense"], folder)
    cfg_path = folder / "2_Dense" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "activation_function": "torch.nn.modules.activation.GELU"}))
    with pytest.raises(ExportError, match="Tanh or Identity"):
        export_tei(folder, tmp_path / "o1")
    cfg_path.write_text(json.dumps({**cfg, "use_residual": True}))
    with pytest.raises(ExportError, match="residual"):
        export_tei(folder, tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_tei_validator_rejects_transformers5_gemma_rope(merged, tmp_path):
    out = export_tei(merged["gemma"], tmp_path / "tei")
    config = json.loads((merged["gemma"] / "config.json").read_text())
    assert isinstance(config["rope_parameters"]["full_attention"], dict)  # what transformers 5 writes
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="rope_local_base_freq|per-layer-type"):
        validate_tei_folder(out)
