"""TEI folders: TEI's loading rules (validate_tei_folder) and identical embeddings after reloading in ST."""
from __future__ import annotations

import json
import shutil

import pytest
from embtune.errors import ExportError
from embtune.export import export_tei, validate_tei_folder
from embtune.export.verify import TEXTS, cosines, reference_embeddings


@pytest.fixture(scope="module")
def minilm_tei(merged_minilm, tmp_path_factory):
    return export_tei(merged_minilm, tmp_path_factory.mktemp("tei") / "minilm")


def test_minilm_folder_layout_is_what_tei_parses(minilm_tei):
    validate_tei_folder(minilm_tei)
    pooling = json.loads((minilm_tei / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True and pooling["pooling_mode_cls_token"] is False
    assert pooling["word_embedding_dimension"] == 384
    modules = json.loads((minilm_tei / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer",
                                            "sentence_transformers.models.Pooling",
                                            "sentence_transformers.models.Normalize"]
    assert json.loads((minilm_tei / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    assert json.loads((minilm_tei / "config.json").read_text())["architectures"] == ["BertModel"]
    assert "prompts" in json.loads((minilm_tei / "config_sentence_transformers.json").read_text())
    assert (minilm_tei / "tokenizer.json").is_file() and (minilm_tei / "2_Normalize").is_dir()
    assert not list(minilm_tei.parent.glob(".*tmp"))


def test_minilm_reloads_with_identical_embeddings(minilm_tei, merged_minilm):
    cos = cosines(reference_embeddings(merged_minilm, TEXTS), reference_embeddings(minilm_tei, TEXTS))
    assert cos.min() >= 0.9999


@pytest.mark.parametrize("family", ["bert", "distilbert", "xlm-roberta", "mpnet", "modernbert", "qwen3"])
def test_tiny_families_export_and_reload(tiny_merged, tmp_path, family):
    folder = tiny_merged(family)
    out = export_tei(folder, tmp_path / "tei")
    validate_tei_folder(out)
    cos = cosines(reference_embeddings(folder, TEXTS), reference_embeddings(out, TEXTS))
    assert cos.min() >= 0.9999
    if family == "qwen3":
        pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
        assert pooling["pooling_mode_lasttoken"] is True
        prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
        assert prompts["query"].startswith("Instruct: ")


def _tei_copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data.update(changes)
        for key, value in changes.items():
            if value is None:
                data.pop(key)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("breakage,message", [
    (lambda d: (d / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True})),
     "pooling_mode_cls_token"),
    (lambda d: _edit_json(d / "sentence_bert_config.json", max_seq_length=None), "max_seq_length"),
    (lambda d: (d / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "",
          "type": "sentence_transformers.base.modules.transformer.Transformer"}])),
     "modules.json type"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json missing"),
    (lambda d: _edit_json(d / "config.json", architectures=None), "architectures"),
    (lambda d: _edit_json(d / "config.json", architectures=["BertForSequenceClassification"]), "classifier"),
    (lambda d: _edit_json(d / "config.json", model_type="electra"), "electra"),
    (lambda d: _edit_json(d / "config.json", layer_norm_eps=None), "layer_norm_eps"),
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
    (lambda d: (d / "adapter_config.json").write_text("{}"), "adapter"),
    (lambda d: _edit_json(d / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False,
                          pooling_mode_lasttoken=True), "last-token"),
])
def test_validator_reports_what_tei_would_reject(minilm_tei, tmp_path, breakage, message):
    folder = _tei_copy(minilm_tei, tmp_path)
    breakage(folder)
    with pytest.raises(ExportError, match=message):
        validate_tei_folder(folder)


def test_validator_lists_every_problem(minilm_tei, tmp_path):
    folder = _tei_copy(minilm_tei, tmp_path)
    (folder / "tokenizer.json").unlink()
    _edit_json(folder / "sentence_bert_config.json", max_seq_length="long")
    with pytest.raises(ExportError) as err:
        validate_tei_folder(folder)
    assert "tokenizer.json" in str(err.value) and "max_seq_length" in str(err.value)


def test_the_st6_merged_folder_itself_would_not_load_in_tei(merged_minilm):
    # ST 6 writes the compact pooling config and new module type names: the reason this export exists.
    with pytest.raises(ExportError, match="pooling_mode_cls_token"):
        validate_tei_folder(merged_minilm)


def test_unservable_models_are_refused(tiny_merged, tmp_path):
    folder = _tei_copy(tiny_merged("bert"), tmp_path)
    _edit_json(folder / "config.json", model_type="electra")
    with pytest.raises(ExportError, match="TEI does not serve electra"):
        export_tei(folder, tmp_path / "out")
    _edit_json(folder / "config.json", model_type="bert")
    _edit_json(folder / "1_Pooling" / "config.json", pooling_mode="lasttoken")
    with pytest.raises(ExportError, match="last-token"):
        export_tei(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_export_keeps_previous_folder(tiny_merged, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")
    folder = _tei_copy(tiny_merged("bert"), tmp_path)
    _edit_json(folder / "config.json", layer_norm_eps=None)  # the validator rejects the built folder
    with pytest.raises(ExportError, match="layer_norm_eps"):
        export_tei(folder, out)
    assert (out / "keep.txt").read_text() == "previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "out"]
