"""ONNX exports: pooling + normalisation in the graph, dynamic axes, onnxruntime vs sentence-transformers."""
from __future__ import annotations

import json

import onnx
import pytest

from embtune.errors import ExportError
from embtune.export import export_onnx
from embtune.export.verify import LONG_TEXT, TEXTS, cosines, onnx_embeddings, reference_embeddings


@pytest.fixture(scope="module")
def minilm_onnx(merged_minilm, tmp_path_factory):
    return export_onnx(merged_minilm, tmp_path_factory.mktemp("onnx") / "minilm")


def test_minilm_graph_has_dynamic_axes_and_one_pooled_output(minilm_onnx):
    graph = onnx.load(str(minilm_onnx / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    (output,) = graph.output
    assert output.name == "sentence_embedding"
    dims = output.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 384
    info = json.loads((minilm_onnx / "onnx_export.json").read_text())
    assert info["normalized"] is True and info["pooling"] == "mean"
    assert (minilm_onnx / "tokenizer.json").is_file()


def test_minilm_matches_sentence_transformers(minilm_onnx, merged_minilm):
    texts = TEXTS + [LONG_TEXT]
    got = onnx_embeddings(minilm_onnx, texts)
    cos = cosines(reference_embeddings(merged_minilm, texts), got)
    assert cos.min() >= 0.9999
    single = onnx_embeddings(minilm_onnx, [LONG_TEXT])  # another batch size and sequence length
    assert cosines(single, got[-1:]).min() >= 0.9999


def test_normalisation_is_inside_the_graph(minilm_onnx):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(str(minilm_onnx))(TEXTS, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(minilm_onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    raw = session.run(None, {k: v.astype(np.int64) for k, v in batch.items()})[0]
    assert np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert", "xlm-roberta", "mpnet", "modernbert", "qwen3"])
def test_tiny_families_match(tiny_merged, tmp_path, family):
    folder = tiny_merged(family)
    out = export_onnx(folder, tmp_path / "onnx")
    cos = cosines(reference_embeddings(folder, TEXTS), onnx_embeddings(out, TEXTS))
    assert cos.min() >= 0.9999


def test_missing_tokenizer_and_unwritable_output(tiny_merged, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_merged("bert"), folder)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot create folder"):
        export_onnx(folder, blocker / "onnx")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="tokenizer.json"):
        export_onnx(folder, tmp_path / "onnx")
