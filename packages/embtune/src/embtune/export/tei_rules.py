"""Text Embeddings Inference's loading rules for a local model folder, as one validator.

TEI is a Rust binary (not on PyPI), so where it cannot run, the folder is checked against the rules
its loader applies. Each rule names its source in huggingface/text-embeddings-inference @ 0d124dc9
(2026-07-24).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from embtune.errors import ExportError

#: ``config.json`` model types TEI's candle backend serves on CPU (backends/candle/src/lib.rs, enum Config).
TEI_CPU_MODEL_TYPES = frozenset({
    "bert", "camembert", "roberta", "xlm-roberta", "distilbert", "deberta-v2", "mpnet", "modernbert",
    "nomic_bert", "gte", "new", "qwen3", "gemma3_text", "bidirectional_pplx_qwen3",
})
#: Served by TEI only on CUDA with fp16 + flash-attention (same source).
TEI_CUDA_ONLY_MODEL_TYPES = frozenset({"qwen2", "mistral", "llama", "llama_bidirec"})
#: Types whose RoBERTa loader rejects last-token pooling; plain ``bert`` panics at request time.
NO_LAST_TOKEN_TYPES = frozenset({"bert", "camembert", "roberta", "xlm-roberta", "distilbert", "mpnet"})
#: The only ``modules.json`` type strings TEI's ``ModuleConfig`` enum parses.
LEGACY_MODULE_TYPES = frozenset(f"sentence_transformers.models.{k}" for k in
                                ("Transformer", "Pooling", "Normalize", "Dense"))
#: Fields the per-model Rust config structs require (reference §4.2).
REQUIRED_FIELDS = {
    "bert": ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "hidden_act", "hidden_dropout_prob", "max_position_embeddings", "type_vocab_size",
             "initializer_range", "layer_norm_eps", "pad_token_id"),
    "qwen3": ("attention_bias", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "hidden_act", "max_position_embeddings",
              "rms_norm_eps", "use_sliding_window", "eos_token_id"),
}
for _t in ("camembert", "roberta", "xlm-roberta"):
    REQUIRED_FIELDS[_t] = REQUIRED_FIELDS["bert"]
#: TEI's ``Gemma3Config`` (backends/candle/src/models/gemma3.rs): non-Option fields.
REQUIRED_FIELDS["gemma3_text"] = (
    "attention_bias", "pad_token_id", "hidden_activation", "hidden_size", "intermediate_size",
    "max_position_embeddings", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
    "query_pre_attn_scalar", "rms_norm_eps", "rope_local_base_freq", "_sliding_window_pattern",
    "use_bidirectional_attention", "vocab_size")
#: Activations TEI's ``DenseActivation`` parses in ``{n}_Dense/config.json`` (models/dense.rs).
TEI_DENSE_ACTIVATIONS = frozenset({"torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"})
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
#: Rerankers: the ``model_type`` values whose TEI classifier head serves a ``*ForSequenceClassification``
#: on CPU, with the weight names that head loads (backends/candle/src/models/{bert,distilbert,
#: modernbert}.rs). BERT's pooler is optional to TEI (skipped when ``bert.pooler.dense`` is absent)
#: but always applied by transformers, so it is required here. TEI refuses a classifier for MPNet,
#: Nomic, Qwen2/3, Gemma3, Mistral; flash DistilBERT (CUDA fp16) has none either.
TEI_RERANKER_HEADS = {
    "bert": ("bert.pooler.dense.weight", "classifier.weight", "classifier.bias"),
    "distilbert": ("pre_classifier.weight", "classifier.weight", "classifier.bias"),
    "modernbert": ("head.dense.weight", "classifier.weight", "classifier.bias"),
}
for _t in ("camembert", "roberta", "xlm-roberta"):
    TEI_RERANKER_HEADS[_t] = ("classifier.dense.weight", "classifier.out_proj.weight",
                              "classifier.out_proj.bias")


def _load(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path.name} missing")
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} does not parse ({exc})")
    return None


def _check_config(folder: Path, problems: list[str], reranker: bool = False) -> dict[str, Any]:
    config = _load(folder / "config.json", problems)
    if not isinstance(config, dict):
        return {}
    archs = config.get("architectures")
    if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
        problems.append("config.json needs a non-empty `architectures` list (ModelConfig.architectures)")
    elif reranker:
        _check_reranker_config(config, archs, problems)
    elif any(a.endswith("Classification") for a in archs):
        problems.append(f"config.json architectures {archs} end in Classification: "
                        "TEI would serve a classifier")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        problems.append("config.json needs a `model_type` string")
    elif model_type not in TEI_CPU_MODEL_TYPES | TEI_CUDA_ONLY_MODEL_TYPES:
        problems.append(f"TEI serves no model_type {model_type!r}")
    elif reranker and model_type not in TEI_RERANKER_HEADS:
        problems.append(f"TEI has no classifier (reranker) head for model_type {model_type!r}")
    missing = [f for f in REQUIRED_FIELDS.get(model_type, ()) if f not in config]
    if missing:
        problems.append(f"config.json lacks fields TEI's {model_type} config requires: {', '.join(missing)}")
    if model_type == "bert" and config.get("position_embedding_type", "absolute") != "absolute":
        problems.append("TEI's BERT needs position_embedding_type 'absolute'")
    if model_type == "gemma3_text":
        rope = config.get("rope_parameters")
        if rope is not None and not isinstance((rope or {}).get("rope_theta"), (int, float)):
            problems.append("Gemma3 config.json rope_parameters must be flat ({rope_theta, rope_type}); "
                            "TEI does not parse the per-layer-type form")
        if "rope_theta" not in config and rope is None:
            problems.append("Gemma3 config.json needs rope_theta or rope_parameters")
    if model_type == "qwen3":
        if not isinstance(config.get("eos_token_id"), int):
            problems.append("Qwen3 config.json eos_token_id must be a single integer")
        if "rope_theta" not in config and "rope_parameters" not in config:
            problems.append("Qwen3 config.json needs rope_theta or rope_parameters")
    return config


def _check_reranker_config(config: dict[str, Any], archs: list[str], problems: list[str]) -> None:
    """A reranker: classifier mode (an architecture ending in Classification) with exactly one label,
    which makes TEI serve ``/rerank`` (``id2label`` and ``label2id`` both required) — router/src/lib.rs."""
    if not any(a.endswith("Classification") for a in archs):
        problems.append(f"config.json architectures {archs}: none ends in Classification, so TEI would "
                        "serve embeddings, not /rerank")
    id2label, label2id = config.get("id2label"), config.get("label2id")
    if not isinstance(id2label, dict) or not isinstance(label2id, dict):
        problems.append("config.json needs `id2label` and `label2id` (TEI's classifier mode)")
    elif len(id2label) != 1:
        problems.append(f"config.json id2label has {len(id2label)} labels: TEI serves /rerank for one label "
                        "only (more make a classifier)")


def weight_keys(folder: Path) -> set[str]:
    """Tensor names of the folder's safetensors weights (single file, or the index's weight map)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "np") as fh:
        return set(fh.keys())


def _check_reranker_head(folder: Path, model_type: str, problems: list[str]) -> None:
    needed = TEI_RERANKER_HEADS.get(model_type)
    if not needed or not ((folder / "model.safetensors").is_file()
                          or (folder / "model.safetensors.index.json").is_file()):
        return  # reported by _check_config / _check_weights
    try:
        keys = weight_keys(folder)
    except Exception:  # noqa: BLE001 - a corrupt file is reported by _check_weights
        return
    missing = [k for k in needed if k not in keys]
    if missing:
        problems.append(f"the weights lack the score head TEI's {model_type} classifier loads: "
                        f"{', '.join(missing)}")


def _check_weights(folder: Path, problems: list[str]) -> None:
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        problems.append("no model.safetensors / pytorch_model.bin / model.safetensors.index.json")
    if (folder / "adapter_config.json").exists() or (folder / "adapter_model.safetensors").exists():
        problems.append("adapter files present: TEI never loads LoRA adapters (merge first)")
    single = folder / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(single), "np") as fh:
                keys = list(fh.keys())
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            problems.append(f"model.safetensors does not open ({exc})")
            return
        if any("lora_" in k for k in keys):
            problems.append("model.safetensors holds lora_ weights (not merged)")


def _check_tokenizer(folder: Path, problems: list[str]) -> None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        problems.append("tokenizer.json missing: TEI only supports fast tokenizers")
        return
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on parse errors
        problems.append(f"tokenizer.json does not load with tokenizers ({exc})")


def _check_pooling(folder: Path, model_type: str, problems: list[str]) -> None:
    path = folder / "1_Pooling" / "config.json"
    if not path.is_file():
        problems.append("1_Pooling/config.json missing: TEI would default to CLS (BERT-likes) "
                        "or refuse to start")
        return
    cfg = _load(path, problems)
    if not isinstance(cfg, dict):
        return
    for key in ("pooling_mode_cls_token", "pooling_mode_mean_tokens"):
        if not isinstance(cfg.get(key), bool):
            problems.append(f"1_Pooling/config.json needs boolean {key} (PoolConfig; ST 6's compact "
                            "`pooling_mode` string is not parsed)")
    if "pooling_mode_lasttoken" in cfg and not isinstance(cfg["pooling_mode_lasttoken"], bool):
        problems.append("1_Pooling/config.json pooling_mode_lasttoken must be boolean")
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
    if len(modes) != 1 or modes[0] not in ("pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                           "pooling_mode_lasttoken"):
        problems.append(f"1_Pooling/config.json must turn on exactly one of cls/mean/lasttoken, "
                        f"found {modes}")
    elif modes[0] == "pooling_mode_lasttoken" and model_type in NO_LAST_TOKEN_TYPES:
        problems.append(f"TEI has no last-token pooling for {model_type}")


def _check_st_files(folder: Path, config: dict[str, Any], problems: list[str]) -> None:
    modules_path = folder / "modules.json"
    if modules_path.is_file():
        modules = _load(modules_path, problems)
        for entry in modules if isinstance(modules, list) else []:
            kind = entry.get("type") if isinstance(entry, dict) else None
            if kind not in LEGACY_MODULE_TYPES:
                problems.append(f"modules.json type {kind!r} is not one of TEI's "
                                f"{sorted(LEGACY_MODULE_TYPES)}")
            elif kind.endswith("Dense"):
                _check_dense(folder / str(entry.get("path", "")), problems)
    st_cfg_path = folder / "sentence_bert_config.json"
    if st_cfg_path.is_file():
        st_cfg = _load(st_cfg_path, problems)
        length = st_cfg.get("max_seq_length") if isinstance(st_cfg, dict) else None
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            problems.append("sentence_bert_config.json needs a positive integer max_seq_length (STConfig)")
        elif (isinstance(config.get("max_position_embeddings"), int)
              and length > config["max_position_embeddings"]):
            problems.append(f"max_seq_length {length} exceeds max_position_embeddings")
    new_cfg_path = folder / "config_sentence_transformers.json"
    if new_cfg_path.is_file():
        new_cfg = _load(new_cfg_path, problems)
        prompts = new_cfg.get("prompts") if isinstance(new_cfg, dict) else None
        if prompts is not None and not (isinstance(prompts, dict)
                                        and all(isinstance(v, str) for v in prompts.values())):
            problems.append("config_sentence_transformers.json prompts must map names to strings")


def _check_dense(path: Path, problems: list[str]) -> None:
    """A Dense folder as TEI loads it: ``config.json`` (``DenseConfig``) and ``linear.weight``."""
    if not path.is_dir():
        problems.append(f"Dense module folder {path.name!r} missing")
        return
    cfg = _load(path / "config.json", problems)
    if not isinstance(cfg, dict):
        return
    if not all(isinstance(cfg.get(k), int) for k in ("in_features", "out_features")) or not isinstance(
            cfg.get("bias"), bool):
        problems.append(f"{path.name}/config.json needs integer in_features/out_features and boolean bias")
    if cfg.get("activation_function") is not None and cfg["activation_function"] not in TEI_DENSE_ACTIVATIONS:
        problems.append(f"{path.name}: TEI's Dense runs Tanh or Identity only, "
                        f"not {cfg['activation_function']}")
    weights = path / "model.safetensors"
    if not weights.is_file():
        problems.append(f"{path.name}/model.safetensors missing")
        return
    from safetensors import safe_open

    with safe_open(str(weights), "np") as fh:
        keys = set(fh.keys())
    if "linear.weight" not in keys or cfg.get("bias") is True and "linear.bias" not in keys:
        problems.append(f"{path.name}/model.safetensors lacks linear.weight/linear.bias")


def validate_tei_folder(folder: str | os.PathLike, *, reranker: bool = False) -> None:
    """Check that TEI (text-embeddings-router --model-id FOLDER) would load and serve ``folder``.

    Input: a model folder; ``reranker`` checks it is served as a reranker (``/rerank``) instead of an
    embedder. Returns None when every rule holds; otherwise raises ExportError whose message lists
    every problem found. Rules and their sources (TEI @ 0d124dc9):

    * ``config.json`` is required and parses as ``ModelConfig`` (``architectures`` list and
      ``model_type`` required; an architecture ending in ``Classification`` switches to classifier
      mode) — router/src/lib.rs. ``model_type`` must be one the candle backend serves, with the
      fields its config struct requires (BERT-likes, Qwen3), absolute positions for BERT and an
      integer ``eos_token_id`` for Qwen3 — backends/candle/src/lib.rs.
    * ``tokenizer.json`` is required and must load with ``tokenizers`` ("only supports fast
      tokenizers") — router/src/lib.rs; TEI issues #122, #169, #511.
    * Weights: ``model.safetensors``, ``pytorch_model.bin`` or a safetensors index; adapters are never
      loaded (TEI issue #788), so no ``lora_`` weights — core/src/download.rs.
    * ``1_Pooling/config.json`` at that fixed path with boolean ``pooling_mode_cls_token`` and
      ``pooling_mode_mean_tokens`` (``PoolConfig``; ST 6's compact form fails to parse), exactly one
      mode on, no last-token for BERT/RoBERTa-likes — router/src/lib.rs, backends/candle/src/lib.rs.
    * ``modules.json`` types among the four legacy ``sentence_transformers.models.*`` names
      (``ModuleConfig``), Dense folders present with a ``DenseConfig`` (``in_features``,
      ``out_features``, ``bias``, Tanh/Identity activation) and ``linear.weight`` — backends/src/lib.rs,
      backends/candle/src/models/dense.rs.
    * Gemma3 (``gemma3_text``): the ``Gemma3Config`` fields, a flat ``rope_parameters`` or
      ``rope_theta`` — backends/candle/src/models/gemma3.rs.
    * ``sentence_bert_config.json``, if present, has an integer ``max_seq_length`` (``STConfig``);
      ``config_sentence_transformers.json`` prompts map names to strings (``NewSTConfig``).
    * Rerankers (``reranker=True``) instead: an architecture ending in ``Classification`` with one
      label in ``id2label`` and a ``label2id`` (router/src/lib.rs: one label = ``/rerank``), a
      ``model_type`` whose candle model has a classifier head and the head's weights under the names
      it loads (`TEI_RERANKER_HEADS`); no pooling file (classifiers pool as their head does).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError("not a folder", path=folder)
    problems: list[str] = []
    config = _check_config(folder, problems, reranker)
    _check_tokenizer(folder, problems)
    _check_weights(folder, problems)
    if reranker:
        _check_reranker_head(folder, str(config.get("model_type", "")), problems)
    else:
        _check_pooling(folder, str(config.get("model_type", "")), problems)
    _check_st_files(folder, config, problems)
    if problems:
        raise ExportError("TEI would not serve this folder: " + "; ".join(problems), path=folder)
