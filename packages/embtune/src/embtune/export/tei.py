"""Export for Hugging Face Text Embeddings Inference (TEI): a folder it serves as is.

Input: a merged sentence-transformers folder. Output (reference/export-formats.md §4.8): the merged
weights (``model.safetensors``), ``config.json``, the fast ``tokenizer.json`` (+ its companions),
and the ST files in the *legacy* spelling that TEI's parser accepts and every ST version still
reads (§4.7): boolean-key ``1_Pooling/config.json``, ``sentence_transformers.models.*`` types in
``modules.json``, ``sentence_bert_config.json`` with ``max_seq_length``, and
``config_sentence_transformers.json`` with the prompts. The folder is built in a temporary
sibling, checked with `validate_tei_folder`, and only then swapped in.
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
                                      validate_tei_folder)

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
    if st.extra_modules:
        raise ExportError(f"the {st.extra_modules[0].kind} module after pooling is not exported to TEI "
                          "(only Transformer + Pooling + Normalize)", path=st.path / "modules.json")
    if any(a.endswith("Classification") for a in st.config.get("architectures") or []):
        raise ExportError(f"config.json names {st.architecture}: TEI would serve a classifier", path=where)


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
    """``modules.json`` with the ``sentence_transformers.models.*`` type names TEI parses."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if st.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    return modules


def _weight_files(st: StFolder) -> list[str]:
    index = st.path / "model.safetensors.index.json"
    if not index.is_file():
        return ["model.safetensors"]
    return ["model.safetensors.index.json", *sorted(set(read_json(index)["weight_map"].values()))]


def _max_seq_length(st: StFolder) -> int:
    limit = int(st.config.get("max_position_embeddings") or 512)
    if st.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(st.config.get("pad_token_id", 1)) + 1
    return min(st.max_seq_length or limit, limit)


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
    `validate_tei_folder`, then renamed). Raises ExportError for architectures or pooling TEI does not
    serve, Dense heads, a missing tokenizer.json, or an unwritable path.
    """
    st = read_st_folder(model_dir)
    check_tei_support(st)
    with output_folder(out) as tmp:
        for name in _weight_files(st):
            copy_file(model_file(st.path, name, st.path / "model.safetensors.index.json"), tmp, name)
        for name in TOKENIZER_FILES:
            if (st.path / name).is_file():
                copy_file(st.path / name, tmp, name)
        write_json(tmp, "config.json", st.config)
        write_json(tmp, "modules.json", legacy_modules(st))
        write_json(tmp, "1_Pooling/config.json", legacy_pooling_config(st))
        if st.normalize:
            inside(tmp, "2_Normalize").mkdir()
        write_json(tmp, "sentence_bert_config.json",
                   {"max_seq_length": _max_seq_length(st), "do_lower_case": False})
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
