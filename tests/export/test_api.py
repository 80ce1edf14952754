"""export_model (adapter folders merged on the fly) and the model methods (`embtune export`: tests/cli/test_export_cmd.py)."""
from __future__ import annotations

import json

import gguf
import pytest
import torch

from embtune import FastSentenceTransformer
from embtune.errors import ExportError
from embtune.export import export_model
from embtune.export.output import inside
from embtune.export.verify import TEXTS, cosines, reference_embeddings


def test_adapter_folder_is_merged_on_the_fly(minilm_folders, tmp_path):
    from_adapter = export_model(minilm_folders["adapter"], "tei", tmp_path / "a")
    from_merged = export_model(minilm_folders["merged"], "tei", tmp_path / "m")
    assert not (from_adapter / "adapter_config.json").exists()
    cos = cosines(reference_embeddings(from_adapter, TEXTS), reference_embeddings(from_merged, TEXTS))
    assert cos.min() >= 0.9999


def test_the_lora_merge_changes_the_model(merged_minilm):
    from tiny_models import minilm_path

    cos = cosines(reference_embeddings(minilm_path(), TEXTS), reference_embeddings(merged_minilm, TEXTS))
    assert cos.min() < 0.999  # so parity against the merged model proves the merge was exported


def test_model_methods_export_the_merged_adapter(tiny_merged, tmp_path):
    from tiny_models import build_tiny_hf, randomize_lora_b

    model = FastSentenceTransformer.from_pretrained(build_tiny_hf(tmp_path / "hf", "bert"),
                                                    dtype=torch.float32, device="cpu")
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    randomize_lora_b(model)
    model.eval()
    live = model.encode(TEXTS, normalize_embeddings=True)
    gguf_path = model.save_pretrained_gguf(tmp_path / "g", quantization="q8_0")
    assert gguf_path.name == "model-q8_0.gguf" and (tmp_path / "g" / "Modelfile").is_file()
    assert gguf.GGUFReader(gguf_path).get_field("general.file_type").contents() == 7
    tei = model.save_pretrained_tei(tmp_path / "tei")
    assert cosines(live, reference_embeddings(tei, TEXTS)).min() >= 0.9999
    onnx_dir = model.save_pretrained_onnx(tmp_path / "onnx")
    assert (onnx_dir / "model.onnx").is_file()
    with pytest.raises(ExportError, match="quantization"):
        model.save_pretrained_gguf(tmp_path / "g2", quantization="q4_0")


def test_bad_requests(tiny_merged, tmp_path):
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(tiny_merged("bert"), "safetensors", tmp_path / "x")
    with pytest.raises(ExportError, match="model folder not found"):
        export_model(tmp_path / "missing", "tei", tmp_path / "x")


@pytest.mark.parametrize("relative", ["../escape.json", "/etc/passwd", "a/../../b"])
def test_writes_cannot_leave_the_output_folder(tmp_path, relative):
    with pytest.raises(ExportError, match="outside the output folder"):
        inside(tmp_path / "out", relative)
    target = inside(tmp_path / "out", "1_Pooling/config.json")
    assert target == tmp_path / "out" / "1_Pooling" / "config.json"


def test_plain_hf_folder_gets_an_st_layout_first(tmp_path):
    from tiny_models import build_tiny_hf

    hf = build_tiny_hf(tmp_path / "hf", "bert")
    out = export_model(hf, "tei", tmp_path / "tei")
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True  # embtune's default for encoders
