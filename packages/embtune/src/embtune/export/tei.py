"""Export for Hugging Face Text Embeddings Inference (TEI): a folder it serves as is.

Input: a merged sentence-transformers folder. Output (what TEI loads from a local folder): the merged
weights (``model.safetensors``), ``config.json``, the fast ``tokenizer.json`` (+ its companions),
and the ST files in the *legacy* spelling that TEI's parser accepts and every ST version still
reads (§4.7): boolean-key ``1_Pooling/config.json``, ``sentence_transformers.models.*`` types in
``modules.json``, ``sentence_bert_config.json`` with ``max_seq_length``, and
``config_sentence_transformers.json`` with the prompts. Dense heads after pooling (EmbeddingGemma's
768→3072→768) are carried: TEI's candle backend applies every Dense folder listed in ``modules.json``,
in order, before normalising (``{n}_Dense/config.json`` with ``in_features``/``out_features``/``bias``/
``activation_function`` Tanh or Identity, ``linear.weight`` in ``model.safetensors``). EmbeddingGemma's
``config.json`` is rewritten in the spelling TEI's Gemma3 config parses (`tei_gemma3_config`).
The folder is built in a temporary sibling, checked with `validate_tei_folder`, and only then swapped in.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from embtune import __version__
from embtune.errors import ExportError
from embtune.export.output import copy_file, inside, make_readable, output_folder, write_json, write_text
from embtune.export.source import StFolder, model_file, read_json, read_st_folder
from embtune.export.tei_rules import (NO_LAST_TOKEN_TYPES, TEI_CPU_MODEL_TYPES, TEI_CUDA_ONLY_MODEL_TYPES,
                                      TEI_DENSE_ACTIVATIONS, validate_tei_folder)

logger = logging.getLogger("embtune")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "merges.txt", "vocab.json", "added_tokens.json", "sentencepiece.bpe.model", "spiece.model")
TEI_POOLING = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
               "lasttoken": "pooling_mode_lasttoken"}


def check_tei_support(st: StFolder) -> None:
    """Raise ExportError when TEI cannot serve ``st`` the way sentence-transformers runs it."""
    where = st.path / "config.json"
    if st.model_type not in TEI_CPU_MODEL_TYPES | TEI_CUDA_ONLY_MODEL_TYPES:
        raise ExportError(f"TEI does not serve {st.model_type or 'this'} models ({st.architecture})",
                          path=where)
    if st.model_type in TEI_CUDA_ONLY_MODEL_TYPES:
        logger.warning("embtune: TEI serves %s models only on CUDA with fp16 + flash-attention",
                       st.model_type)
    if st.pooling not in TEI_POOLING:
        raise ExportError(f"TEI pools with cls, mean or last token only; this model uses {st.pooling!r}",
                          path=st.path)
    if st.pooling == "lasttoken" and st.model_type in NO_LAST_TOKEN_TYPES:
        raise ExportError(f"TEI has no last-token pooling for {st.model_type}", path=st.path)
    if not st.include_prompt and any(st.prompts.values()):
        raise ExportError("pooling excludes the prompt tokens (include_prompt=false), which TEI cannot do",
                          path=st.path)
    modules = st.path / "modules.json"
    for module in st.extra_modules:
        if module.kind != "Dense":
            raise ExportError(f"the {module.kind} module after pooling is not exported to TEI "
                              "(only Transformer + Pooling + Dense + Normalize)", path=modules)
        dense_config(st, module)
    kinds = [m.kind for m in st.modules]
    if "Normalize" in kinds and kinds.index("Normalize") != len(kinds) - 1:
        raise ExportError("a module follows Normalize; TEI normalises last", path=modules)
    if any(a.endswith("Classification") for a in st.config.get("architectures") or []):
        raise ExportError(f"config.json names {st.architecture}: TEI would serve a classifier", path=where)
    if st.model_type == "gemma3_text":
        tei_gemma3_config(st)


def dense_config(st: StFolder, module) -> dict[str, Any]:
    """The legacy ``config.json`` TEI's ``DenseConfig`` parses for the Dense ``module`` of ``st``.

    In: the folder and one of its Dense `StModule` entries. Out: ``{"in_features", "out_features",
    "bias", "activation_function"}``. Raises ExportError for what TEI's Dense cannot run: an
    activation other than Tanh/Identity, a residual connection, weights not in ``model.safetensors``.
    """
    folder = model_file(st.path, module.path, st.path / "modules.json")
    cfg = read_json(folder / "config.json")
    activation = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in TEI_DENSE_ACTIVATIONS:
        raise ExportError(f"TEI's Dense runs Tanh or Identity only, not {activation}",
                          path=folder / "config.json")
    if cfg.get("use_residual"):
        raise ExportError("TEI's Dense has no residual connection (use_residual=true)",
                          path=folder / "config.json")
    if not (folder / "model.safetensors").is_file():
        raise ExportError("Dense weights are not in model.safetensors", path=folder)
    return {"in_features": int(cfg["in_features"]), "out_features": int(cfg["out_features"]),
            "bias": bool(cfg.get("bias", True)), "activation_function": activation}


def tei_gemma3_config(st: StFolder) -> dict[str, Any]:
    """EmbeddingGemma's ``config.json`` as TEI's ``Gemma3Config`` parses it (transformers still loads it).

    transformers 5 writes ``rope_parameters`` per layer type and no ``rope_local_base_freq``; TEI
    needs ``rope_theta`` (global layers) and ``rope_local_base_freq`` (sliding layers), fails to parse
    the nested ``rope_parameters``, and places sliding layers by ``_sliding_window_pattern`` alone
    (every n-th layer global). Out: the config with those keys rewritten. Raises ExportError when
    ``layer_types`` follow no such pattern or RoPE is scaled.
    """
    config = dict(st.config)
    where = st.path / "config.json"
    rope = config.pop("rope_parameters", None) or {}
    for kind, key, default in (("full_attention", "rope_theta", 1_000_000.0),
                               ("sliding_attention", "rope_local_base_freq", 10_000.0)):
        params = rope.get(kind) or {}
        if params.get("rope_type", "default") != "default":
            raise ExportError(f"TEI's Gemma3 has no {params['rope_type']} RoPE scaling", path=where)
        config[key] = float(params.get("rope_theta", config.get(key, default)))
    layers = config.get("layer_types") or []
    pattern = next((i + 1 for i, kind in enumerate(layers) if kind == "full_attention"), len(layers) + 1)
    if any((kind == "full_attention") != ((i + 1) % pattern == 0) for i, kind in enumerate(layers)):
        raise ExportError(f"TEI places Gemma3's global layers every n-th layer; layer_types {layers} do not",
                          path=where)
    config["_sliding_window_pattern"] = pattern
    return config


def legacy_pooling_config(st: StFolder) -> dict[str, Any]:
    """``1_Pooling/config.json`` with one boolean per mode (the form TEI's PoolConfig requires)."""
    cfg: dict[str, Any] = {"word_embedding_dimension": st.embedding_dimension
                           or int(st.config.get("hidden_size") or st.config.get("dim"))}
    for key in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                "pooling_mode_lasttoken"):
        cfg[key] = key == TEI_POOLING[st.pooling]
    cfg["include_prompt"] = st.include_prompt
    return cfg


def legacy_modules(st: StFolder) -> list[dict[str, Any]]:
    """``modules.json`` with the ``sentence_transformers.models.*`` type names TEI parses:
    Transformer, Pooling, the Dense heads in order (``{idx}_Dense``), Normalize."""
    kinds = ["Transformer", "Pooling"] + ["Dense" for m in st.modules if m.kind == "Dense"]
    kinds += ["Normalize"] if st.normalize else []
    return [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{kind}",
             "type": f"sentence_transformers.models.{kind}"} for i, kind in enumerate(kinds)]


def weight_files(folder: Path) -> list[str]:
    """The weight files of a model folder to copy: ``model.safetensors``, or the index and its shards."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return ["model.safetensors"]
    return ["model.safetensors.index.json", *sorted(set(read_json(index)["weight_map"].values()))]


def tei_max_input_length(config: dict[str, Any], requested: int | None) -> int:
    """The ``max_seq_length`` to write for TEI: ``requested`` (None: no limit of its own) capped at the
    positions the model has (``max_position_embeddings``, less RoBERTa's ``pad_token_id + 1`` offset)."""
    limit = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(config.get("pad_token_id", 1)) + 1
    return min(requested or limit, limit)


def _readme(st: StFolder) -> str:
    prompts = {k: v for k, v in st.prompts.items() if v}
    lines = ["# Text Embeddings Inference model folder (written by embtune)", "",
             "```bash",
             "docker run -p 8080:80 -v $PWD:/data ghcr.io/huggingface/text-embeddings-inference:cpu-1.9 \\",
             "    --model-id /data/<this folder>", "```", "",
             f"Pooling: {st.pooling}. TEI normalises embeddings by default (`normalize: true`)."]
    if prompts:
        lines += ["", "Prompts (pass `prompt_name` per request, or `--default-prompt-name`):", ""]
        lines += [f"- `{name}`: `{text!r}`" for name, text in sorted(prompts.items())]
    return "\n".join(lines) + "\n"


def export_tei(model_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export the merged ST folder ``model_dir`` as a TEI model folder ``out``; returns ``out``.

    ``out`` is replaced atomically (built in a temporary sibling, validated with
    `validate_tei_folder`, then renamed). Dense heads are carried (`dense_config`). Raises ExportError
    for architectures or pooling TEI does not serve, Dense heads it cannot run (activation other than
    Tanh/Identity, residual), a missing tokenizer.json, or an unwritable path.
    """
    st = read_st_folder(model_dir)
    check_tei_support(st)
    with output_folder(out) as tmp:
        for name in weight_files(st.path):
            copy_file(model_file(st.path, name, st.path / "model.safetensors.index.json"), tmp, name)
        for name in TOKENIZER_FILES:
            if (st.path / name).is_file():
                copy_file(st.path / name, tmp, name)
        config = tei_gemma3_config(st) if st.model_type == "gemma3_text" else st.config
        write_json(tmp, "config.json", config)
        modules = legacy_modules(st)
        write_json(tmp, "modules.json", modules)
        write_json(tmp, "1_Pooling/config.json", legacy_pooling_config(st))
        dense_out = [m["path"] for m in modules if m["type"].endswith("Dense")]
        for module, out_path in zip([m for m in st.modules if m.kind == "Dense"], dense_out):
            write_json(tmp, f"{out_path}/config.json", dense_config(st, module))
            copy_file(model_file(st.path, module.path, st.path / "modules.json") / "model.safetensors",
                      tmp, f"{out_path}/model.safetensors")
        if st.normalize:
            inside(tmp, modules[-1]["path"]).mkdir()
        max_length = tei_max_input_length(st.config, st.max_seq_length)
        write_json(tmp, "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
        write_json(tmp, "config_sentence_transformers.json", {
            "__version__": {"embtune": __version__}, "prompts": st.prompts,
            "default_prompt_name": st.default_prompt_name,
            "similarity_fn_name": st.similarity_fn_name or "cosine",
        })
        write_text(tmp, "README.md", _readme(st))
        validate_tei_folder(tmp)
        make_readable(tmp)
    logger.info("embtune: wrote TEI folder %s (%s pooling)", out, st.pooling)
    return Path(out)
