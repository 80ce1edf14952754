"""Reading the input of every exporter: a merged sentence-transformers folder.

DESIGN §1: exporters never look at a live model. They read one folder layout (``modules.json``,
``1_Pooling/config.json``, ``config.json``, ``model.safetensors``, ``tokenizer.json``, the ST
config files) in either the legacy (ST < 5.4) or the current (ST 6) spelling, and refuse folders
that are not a merged model (an adapter folder, leftover ``lora_`` weights, no fast tokenizer).
Nothing here loads a model (`embtune.export.api.prepared_folder` merges other folders first).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embtune.errors import ExportError

#: Pooling modes as ST 6 names them, from the legacy boolean keys of ``1_Pooling/config.json``.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: The module kinds an exporter understands, keyed by the last part of a modules.json type.
MODULE_KINDS = ("Transformer", "Pooling", "Normalize", "Dense")


@dataclass
class StModule:
    """One ``modules.json`` entry; ``kind`` is Transformer/Pooling/Normalize/Dense or the raw type name."""

    idx: int
    name: str
    path: str
    kind: str


@dataclass
class StFolder:
    """What the exporters need to know about a merged ST folder (all read from files, nothing loaded)."""

    path: Path
    config: dict[str, Any]
    modules: list[StModule]
    pooling: str
    include_prompt: bool
    embedding_dimension: int | None
    normalize: bool
    max_seq_length: int | None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    tokenizer: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        """``config.json`` ``model_type`` (e.g. "bert", "qwen3")."""
        return str(self.config.get("model_type", ""))

    @property
    def architecture(self) -> str:
        """``config.json`` ``architectures[0]``, or "" when the list is missing."""
        archs = self.config.get("architectures") or [""]
        return str(archs[0])

    @property
    def extra_modules(self) -> list[StModule]:
        """Modules after pooling that change the embedding (Dense and unknown kinds)."""
        return [m for m in self.modules if m.kind not in ("Transformer", "Pooling", "Normalize")]


def read_json(path: Path) -> Any:
    """Parse the JSON file ``path``; a missing or malformed file raises ExportError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError("file not found", path=path) from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"unreadable JSON ({exc})", path=path) from None


def model_file(folder: Path, name: str, listed_in: Path) -> Path:
    """``folder / name`` for a file or folder name read from the model folder's own JSON (a weight
    shard of the safetensors index, a module path of ``modules.json``).

    Raises ExportError naming ``listed_in`` when ``name`` is absolute or climbs out of ``folder``
    with "..": an export must never copy a file from outside the model into its output. Symbolic
    links inside the folder are followed (a Hugging Face cache snapshot links every file to a blob).
    """
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ExportError(f"names a file outside the model folder: {name!r}", path=listed_in)
    return folder / relative


def _module_kind(type_name: str) -> str:
    last = type_name.rsplit(".", 1)[-1]
    return last if last in MODULE_KINDS else type_name


def parse_pooling_config(cfg: dict[str, Any], path: Path) -> tuple[str, bool, int | None]:
    """Pooling mode, include_prompt and dimension from a ``1_Pooling/config.json`` in either spelling.

    ST 6 writes ``{"pooling_mode": "mean", "embedding_dimension": 384, "include_prompt": true}``;
    older ST writes one boolean per mode (``pooling_mode_mean_tokens`` ...) and
    ``word_embedding_dimension``. Exactly one mode must be on; otherwise ExportError.
    """
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    include_prompt = bool(cfg.get("include_prompt", True))
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        return mode, include_prompt, dim
    modes = [name for key, name in LEGACY_POOLING_KEYS.items() if cfg.get(key)]
    if len(modes) != 1:
        raise ExportError(f"expected exactly one pooling mode, found {modes or 'none'}", path=path)
    return modes[0], include_prompt, dim


def max_seq_length_of(folder: Path, config: dict[str, Any]) -> int | None:
    """Token limit of a model folder: ``sentence_bert_config.json`` ``max_seq_length``, else the
    tokenizer's ``model_max_length``, else ``max_position_embeddings`` (None when none is set)."""
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        value = read_json(st_cfg).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        value = read_json(tok_cfg).get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


def read_st_folder(folder: str | os.PathLike) -> StFolder:
    """Read a merged sentence-transformers folder; raise ExportError if it is not one.

    Input: a folder with ``modules.json`` (one Transformer at path "" and one Pooling module),
    ``config.json``, ``model.safetensors`` (or a safetensors index) and a fast ``tokenizer.json``.
    Output: an `StFolder` with the config, pooling, normalisation, max length, prompts and the parsed
    tokenizer.json. Adapter folders and folders without a fast tokenizer are refused.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ExportError("model folder not found", path=path)
    if (path / "adapter_config.json").is_file():
        raise ExportError("this is a LoRA adapter folder; exporters need a merged model "
                          "(use embtune.export.export_model, or `embtune merge` first)", path=path)
    if not (path / "modules.json").is_file():
        raise ExportError("not a sentence-transformers folder (no modules.json)", path=path)
    if not (path / "tokenizer.json").is_file():
        raise ExportError("no tokenizer.json: exports need a fast (Rust) tokenizer; re-save the model with "
                          "a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))", path=path)
    if not ((path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()):
        raise ExportError("no model.safetensors (pickle weights are not exported)", path=path)
    config = read_json(path / "config.json")
    modules = [StModule(int(m.get("idx", i)), str(m.get("name", i)), str(m.get("path", "")),
                        _module_kind(str(m.get("type", ""))))
               for i, m in enumerate(read_json(path / "modules.json"))]
    for module in modules:
        model_file(path, module.path, path / "modules.json")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        for shard in set(read_json(index).get("weight_map", {}).values()):
            model_file(path, str(shard), index)
    transformers_ = [m for m in modules if m.kind == "Transformer"]
    poolings = [m for m in modules if m.kind == "Pooling"]
    if len(transformers_) != 1 or transformers_[0].path not in ("", "."):
        raise ExportError("expected one Transformer module stored at the folder root",
                          path=path / "modules.json")
    if len(poolings) != 1:
        raise ExportError(f"expected one Pooling module, found {len(poolings)}", path=path / "modules.json")
    pool_file = path / poolings[0].path / "config.json"
    pooling, include_prompt, dim = parse_pooling_config(read_json(pool_file), pool_file)
    st_config: dict[str, Any] = {}
    if (path / "config_sentence_transformers.json").is_file():
        st_config = read_json(path / "config_sentence_transformers.json")
    return StFolder(
        path=path, config=config, modules=modules, pooling=pooling, include_prompt=include_prompt,
        embedding_dimension=dim, normalize=any(m.kind == "Normalize" for m in modules),
        max_seq_length=max_seq_length_of(path, config), prompts=dict(st_config.get("prompts") or {}),
        default_prompt_name=st_config.get("default_prompt_name"),
        similarity_fn_name=st_config.get("similarity_fn_name"),
        tokenizer=read_json(path / "tokenizer.json"),
    )


def load_state_dict(folder: str | os.PathLike) -> dict[str, Any]:
    """All tensors of the folder's safetensors weights (single file or index + shards), as torch tensors.

    Raises ExportError when a key still holds LoRA weights (``lora_``): such a folder is not merged.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = ([folder / "model.safetensors"] if not index.is_file()
             else sorted({model_file(folder, f, index) for f in read_json(index)["weight_map"].values()}))
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file)))
    lora = [k for k in state if "lora_" in k]
    if lora:
        raise ExportError(f"weights still hold LoRA tensors ({lora[0]}); export a merged model", path=folder)
    return state

