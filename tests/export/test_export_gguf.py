"""GGUF files read back with gguf.GGUFReader: keys, tokenizer, tensors, dtypes, refusals, atomicity.

These tests need no llama.cpp; test_export_llama_cpp.py runs the files in the real runtime.
"""
from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from safetensors.torch import load_file

from embtune.errors import ExportError
from embtune.export import export_gguf


def _fields(reader: gguf.GGUFReader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")
            and k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")}


@pytest.fixture(scope="module")
def minilm_gguf(merged_minilm, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {q: export_gguf(merged_minilm, out, q) for q in ("f16", "q8_0")}


def test_minilm_keys_match_llama_cpp_expectations(minilm_gguf):
    reader = gguf.GGUFReader(minilm_gguf["f16"])
    f = _fields(reader)
    assert f["general.architecture"] == "bert"
    assert f["bert.block_count"] == 6
    assert (f["bert.embedding_length"], f["bert.feed_forward_length"]) == (384, 1536)
    assert (f["bert.attention.head_count"], f["bert.context_length"]) == (12, 512)
    assert f["bert.pooling_type"] == int(gguf.PoolingType.MEAN)
    assert f["bert.attention.causal"] is False
    assert f["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert f["tokenizer.ggml.model"] == "bert"
    assert f["tokenizer.ggml.token_type_count"] == 2
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.seperator_token_id"],
            f["tokenizer.ggml.unknown_token_id"], f["tokenizer.ggml.padding_token_id"],
            f["tokenizer.ggml.mask_token_id"]) == (101, 102, 100, 0, 103)
    assert f["tokenizer.ggml.normalizer.lowercase"] is True
    assert reader.get_field("tokenizer.ggml.token_type").types[-1] == gguf.GGUFValueType.INT32
    assert reader.get_field("bert.pooling_type").types == [gguf.GGUFValueType.UINT32]


def test_wordpiece_tokens_use_phantom_space_form(minilm_gguf):
    tokens = gguf.GGUFReader(minilm_gguf["f16"]).get_field("tokenizer.ggml.tokens").contents()
    assert len(tokens) == 30522
    assert tokens[101] == "[CLS]" and tokens[0] == "[PAD]"
    assert "\u2581the" in tokens and "ing" in tokens and "##ing" not in tokens


def test_tensors_names_shapes_and_dtypes(minilm_gguf, merged_minilm):
    state = load_file(str(merged_minilm / "model.safetensors"))
    for quant, big_type in (("f16", gguf.GGMLQuantizationType.F16), ("q8_0", gguf.GGMLQuantizationType.Q8_0)):
        tensors = {t.name: t for t in gguf.GGUFReader(minilm_gguf[quant]).tensors}
        expected = {"token_embd.weight", "token_types.weight", "position_embd.weight",
                    "token_embd_norm.weight", "token_embd_norm.bias"}
        for i in range(6):
            for part in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"):
                expected |= {f"blk.{i}.{part}.weight", f"blk.{i}.{part}.bias"}
            for part in ("attn_output_norm", "layer_output_norm"):
                expected |= {f"blk.{i}.{part}.weight", f"blk.{i}.{part}.bias"}
        assert set(tensors) == expected
        assert list(tensors["position_embd.weight"].shape) == [384, 512]
        assert list(tensors["blk.0.ffn_up.weight"].shape) == [384, 1536]
        for name, t in tensors.items():
            small = (name.endswith(".bias") or "norm" in name
                     or name.startswith(("position_embd", "token_types")))
            assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if small else big_type), name
        got = gguf.quants.dequantize(tensors["blk.0.attn_q.weight"].data, big_type)
        want = state["encoder.layer.0.attention.self.query.weight"].numpy()
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < (1e-3 if quant == "f16" else 1e-2)
        bias = state["encoder.layer.0.attention.self.query.bias"].numpy()
        assert np.array_equal(tensors["blk.0.attn_q.bias"].data, bias)


def test_modelfile_points_at_the_gguf(minilm_gguf):
    text = (minilm_gguf["q8_0"].parent / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in text.splitlines()
    assert "PARAMETER num_ctx 256" in text.splitlines()


@pytest.mark.parametrize("quant", ["f32", "bf16"])
def test_other_outtypes(tiny_merged, tmp_path, quant):
    path = export_gguf(tiny_merged("bert"), tmp_path / f"m.{quant}.gguf", quant)
    assert path == tmp_path / f"m.{quant}.gguf"
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    want = gguf.GGMLQuantizationType.F32 if quant == "f32" else gguf.GGMLQuantizationType.BF16
    assert tensors["blk.0.attn_q.weight"].tensor_type == want
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32


def test_roberta_position_rows_are_offset(tiny_merged, tmp_path):
    folder = tiny_merged("xlm-roberta")
    path = export_gguf(folder, tmp_path, "f32")
    reader = gguf.GGUFReader(path)
    state = load_file(str(folder / "model.safetensors"))
    pos = {t.name: t for t in reader.tensors}["position_embd.weight"]
    # pad_token_id 0 → HF numbers positions from 1, llama.cpp from 0: one row dropped
    assert reader.get_field("bert.context_length").contents() == 129 == pos.shape[1]
    assert np.array_equal(pos.data, state["embeddings.position_embeddings.weight"].numpy()[1:])


def test_distilbert_maps_to_bert_with_token_type_count(tiny_merged, tmp_path):
    reader = gguf.GGUFReader(export_gguf(tiny_merged("distilbert"), tmp_path, "f16"))
    names = {t.name for t in reader.tensors}
    assert "blk.1.ffn_down.weight" in names and "token_types.weight" not in names
    assert reader.get_field("tokenizer.ggml.token_type_count").contents() == 1
    assert reader.get_field("bert.attention.layer_norm_epsilon").contents() == pytest.approx(1e-12)


def test_qwen3_keys_eos_and_merges(tiny_merged, tmp_path):
    folder = tiny_merged("qwen3")
    reader = gguf.GGUFReader(export_gguf(folder, tmp_path, "q8_0"))
    f = _fields(reader)
    assert f["general.architecture"] == "qwen3"
    assert f["qwen3.pooling_type"] == int(gguf.PoolingType.LAST)
    assert (f["qwen3.attention.key_length"], f["qwen3.attention.value_length"]) == (16, 16)
    assert f["qwen3.attention.head_count_kv"] == 2
    assert "qwen3.attention.causal" not in f
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.add_eos_token"] is True and f["tokenizer.ggml.eos_token_id"] == 0
    assert f["tokenizer.ggml.add_bos_token"] is False
    assert len(reader.get_field("tokenizer.ggml.merges").contents()) > 100
    norms = {t.name: t.tensor_type for t in reader.tensors if "norm" in t.name}
    assert norms["blk.0.attn_q_norm.weight"] == gguf.GGMLQuantizationType.F32


@pytest.mark.parametrize("family,needle", [("mpnet", "no MPNet"), ("modernbert", "ModernBERT")])
def test_architectures_llama_cpp_cannot_run_are_refused(tiny_merged, tmp_path, family, needle):
    with pytest.raises(ExportError, match=needle):
        export_gguf(tiny_merged(family), tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists()


def _copy(folder, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(folder, dst)
    return dst


def test_max_pooling_and_dense_heads_are_refused(tiny_merged, tmp_path):
    folder = _copy(tiny_merged("bert"), tmp_path)
    pool = folder / "1_Pooling" / "config.json"
    cfg = json.loads(pool.read_text())
    pool.write_text(json.dumps({**cfg, "pooling_mode": "max"}))
    with pytest.raises(ExportError, match="mean, cls or last token"):
        export_gguf(folder, tmp_path / "o1", "f16")
    pool.write_text(json.dumps(cfg))
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                       "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="Dense"):
        export_gguf(folder, tmp_path / "o2", "f16")


def test_missing_tokenizer_json_and_bad_quantization(tiny_merged, tmp_path):
    folder = _copy(tiny_merged("bert"), tmp_path)
    with pytest.raises(ExportError, match="quantization"):
        export_gguf(folder, tmp_path / "o", "q4_k")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="tokenizer.json"):
        export_gguf(folder, tmp_path / "o", "f16")


def test_failed_export_keeps_the_old_file_and_leaves_no_temp(tiny_merged, tmp_path):
    target = tmp_path / "model.gguf"
    target.write_bytes(b"old")
    folder = _copy(tiny_merged("bert"), tmp_path)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ExportError, match="pre-tokenizer"):
        export_gguf(folder, target, "f16")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.gguf"]


def test_unwritable_output(tiny_merged, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot create folder"):
        export_gguf(tiny_merged("bert"), blocker / "sub" / "m.gguf", "f16")


def test_unigram_tokenizer_goes_to_llama_cpp_ugm(unigram_xlmr_merged, tmp_path):
    reader = gguf.GGUFReader(export_gguf(unigram_xlmr_merged, tmp_path, "f16"))
    f = _fields(reader)
    tok = json.loads((unigram_xlmr_merged / "tokenizer.json").read_text())
    assert f["tokenizer.ggml.model"] == "t5"
    assert f["bert.context_length"] == 128  # 130 positions minus XLM-R's offset of pad_token_id + 1 = 2
    ids = tuple(f[f"tokenizer.ggml.{k}_token_id"] for k in ("bos", "eos", "unknown"))
    assert ids == (0, 2, 3)
    assert f["tokenizer.ggml.add_space_prefix"] is True
    assert f["tokenizer.ggml.remove_extra_whitespaces"] is True
    scores = reader.get_field("tokenizer.ggml.scores").contents()
    assert scores[10] == pytest.approx(tok["model"]["vocab"][10][1])
    types = reader.get_field("tokenizer.ggml.token_type").contents()
    assert (types[0], types[3], types[10]) == (gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN,
                                               gguf.TokenType.NORMAL)


def test_qwen_pretokenizer_is_named_qwen2(qwen_pretokenizer_merged, tmp_path):
    reader = gguf.GGUFReader(export_gguf(qwen_pretokenizer_merged, tmp_path, "f16"))
    assert reader.get_field("tokenizer.ggml.pre").contents() == "qwen2"


def test_unknown_bpe_pretokenizer_is_refused(qwen_pretokenizer_merged, tmp_path):
    folder = _copy(qwen_pretokenizer_merged, tmp_path)
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+"
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ExportError, match="pre-tokenizer not known to llama.cpp"):
        export_gguf(folder, tmp_path / "o", "f16")


def test_pooling_without_prompt_tokens_is_refused(tiny_merged, tmp_path):
    from embtune.export import export_tei

    folder = _copy(tiny_merged("qwen3"), tmp_path)  # has a non-empty query prompt
    pool = folder / "1_Pooling" / "config.json"
    pool.write_text(json.dumps({**json.loads(pool.read_text()), "include_prompt": False}))
    with pytest.raises(ExportError, match="include_prompt"):
        export_gguf(folder, tmp_path / "g", "f16")
    with pytest.raises(ExportError, match="include_prompt"):
        export_tei(folder, tmp_path / "t")
