"""Turning a name or folder into a ready `FastSentenceTransformer`.

Three kinds of source are accepted: a sentence-transformers folder (``modules.json``), a plain
Hugging Face model folder or hub id (no ``modules.json``: pooling is chosen from the architecture
and said in a log line), and an adapter folder written by ``save_pretrained`` (its base is read
from ``adapter_config.json``). Only safetensors weights are loaded unless ``allow_pickle=True``;
``trust_remote_code`` stays off unless asked.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from embtune.errors import ConfigError, ModelLoadError
from embtune.models.architectures import DEFAULT_QUERY_TASK, Family, instruction_prompt

logger = logging.getLogger("embtune")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: Files any one of which gives a tokenizer (fast ``tokenizer.json``, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "sentencepiece.model", "source.spm")


@dataclass
class ModelSource:
    """Where a model comes from: ``path`` (folder or hub id), and what kind of folder it is."""

    path: str
    is_local: bool
    is_sentence_transformer: bool
    is_adapter: bool


def inspect_source(name_or_path: str | os.PathLike) -> ModelSource:
    """Classify ``name_or_path``; raise ModelLoadError for a local path that is not a model folder."""
    path = os.fspath(name_or_path)
    local = Path(path)
    if local.exists() or path.startswith((".", "/", "~")) or os.sep in path and not _looks_like_hub_id(path):
        local = local.expanduser()
        if not local.is_dir():
            raise ModelLoadError("model folder not found", path=local)
        has_modules = (local / "modules.json").is_file()
        is_adapter = (local / "adapter_config.json").is_file()
        if not has_modules and not is_adapter and not (local / "config.json").is_file():
            raise ModelLoadError("not a model folder (no modules.json, config.json or adapter_config.json)",
                                 path=local)
        return ModelSource(str(local), True, has_modules, is_adapter)
    return ModelSource(path, False, False, False)


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not Path(path).exists()


def check_safe_weights(folder: str | os.PathLike, allow_pickle: bool = False) -> None:
    """Refuse a local folder whose weights exist only as pickle files (``.bin``/``.pt``).

    Pickle files can run arbitrary code when loaded, so they are loaded only with
    ``allow_pickle=True``. Raises ModelLoadError naming the file.
    """
    if allow_pickle:
        return
    folder = Path(folder)
    for sub in [folder, *[p for p in folder.iterdir() if p.is_dir()]]:
        pickles = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES
                         and not p.name.startswith("training_args"))
        safes = list(sub.glob("*.safetensors"))
        if pickles and not safes:
            raise ModelLoadError("weights are only in pickle format, which can run code when loaded; "
                                 "convert to safetensors or pass allow_pickle=True (--allow-pickle)",
                                 path=pickles[0])


def check_training_mode(full_finetuning: bool, load_in_4bit: bool) -> None:
    """ConfigError when full fine-tuning is asked of a 4-bit model (its nf4 weights cannot be trained)."""
    if full_finetuning and load_in_4bit:
        raise ConfigError("full_finetuning and load_in_4bit exclude each other (4-bit weights cannot be trained); "
                          "use QLoRA (load_in_4bit + a LoRA adapter) or full fine-tuning")


def check_load_arguments(max_seq_length: Any, pooling: Any) -> None:
    """ConfigError for a ``max_seq_length`` below 1 or an unknown ``pooling`` mode, before any loading."""
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int)
                                       or max_seq_length < 1):
        raise ConfigError(f"max_seq_length must be a positive integer or None, got {max_seq_length!r}")
    if pooling is not None:
        from sentence_transformers.sentence_transformer.modules import Pooling

        modes = list(pooling) if isinstance(pooling, (list, tuple)) else [pooling]
        if not modes or any(mode not in Pooling.POOLING_MODES for mode in modes):
            raise ConfigError(f"unknown pooling {pooling!r}; use one of {', '.join(Pooling.POOLING_MODES)}")


def _folder_and_subfolders(folder: Path) -> list[Path]:
    return [folder, *[p for p in folder.iterdir() if p.is_dir()]]


def check_model_files(source: ModelSource, allow_pickle: bool = False) -> None:
    """Refuse a local model folder that lacks weights or tokenizer files, before transformers is asked.

    A folder (or its module subfolders) with no ``*.safetensors`` (and, with ``allow_pickle``, no
    pickle weights either) or with none of `TOKENIZER_FILES` raises ModelLoadError naming the folder;
    without this, a folder with no vocabulary loads an empty tokenizer and embeds every text as
    ``[UNK]``. An adapter folder whose base is a local path that does not exist raises ModelLoadError
    naming its ``adapter_config.json``. Hub ids are not checked.
    """
    if not source.is_local:
        return
    folder = Path(source.path)
    if source.is_adapter:
        base = adapter_base_path(source)
        if base.startswith((".", "/", "~")) and not Path(base).expanduser().is_dir():
            raise ModelLoadError(f"the base model folder {base} named in it does not exist",
                                 path=folder / "adapter_config.json")
        return
    files = [p.name for sub in _folder_and_subfolders(folder) for p in sub.iterdir() if p.is_file()]
    has_weights = any(name.endswith(".safetensors") or name == "model.safetensors.index.json" for name in files)
    if allow_pickle:
        has_weights = has_weights or any(name.endswith(PICKLE_SUFFIXES) for name in files)
    if not has_weights:
        raise ModelLoadError("no model weights (model.safetensors) in the model folder", path=folder)
    if not any(name in TOKENIZER_FILES for name in files):
        raise ModelLoadError(f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...) in the model folder",
                             path=folder)


@contextlib.contextmanager
def load_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn what transformers / sentence-transformers / safetensors raise on a broken model folder
    (OSError, ValueError, a safetensors error) into one-line ModelLoadError naming ``path``."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise ModelLoadError(f"cannot load the model ({lines[0]})", path=path) from None


def read_config(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The transformers config behind ``source`` (the base model's for an adapter).

    Raises ModelLoadError when it cannot be read."""
    from transformers import AutoConfig

    path = adapter_base_path(source) if source.is_adapter else source.path
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the model config ({str(exc).splitlines()[0]})", path=path) from None


def read_model_type(source: ModelSource, trust_remote_code: bool = False) -> str:
    """``config.model_type`` of the transformer behind ``source`` (the base model for an adapter)."""
    return read_config(source, trust_remote_code).model_type


def adapter_base_path(source: ModelSource) -> str:
    """The base model an adapter folder was trained on (``base_model_name_or_path``)."""
    config_file = Path(source.path) / "adapter_config.json"
    try:
        base = json.loads(config_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"unreadable adapter config ({exc})", path=config_file) from None
    if not base:
        raise ModelLoadError("adapter config names no base model", path=config_file)
    return base


def quantization_config(compute_dtype: torch.dtype) -> Any:
    """bitsandbytes nf4 settings used for QLoRA (double quantisation, ``compute_dtype`` matmuls)."""
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError("load_in_4bit needs bitsandbytes: pip install 'embtune[qlora]'") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def model_kwargs_for(dtype: torch.dtype, device: torch.device, load_in_4bit: bool,
                     allow_pickle: bool) -> dict[str, Any]:
    """Keyword arguments for ``AutoModel.from_pretrained`` (dtype, safety, 4-bit).

    The attention implementation is left to transformers, which picks SDPA wherever the
    architecture supports it (MPNet, for one, does not).
    """
    kwargs: dict[str, Any] = {"dtype": dtype}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": str(device) if device.type == "cpu" else device.index or 0}
    return kwargs


def build_modules_for_plain_model(path: str, family: Family, model_kwargs: dict[str, Any],
                                  max_seq_length: int | None, trust_remote_code: bool) -> list[torch.nn.Module]:
    """ST modules for a Hugging Face model without ``modules.json``: transformer, pooling, normalize."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    config_kwargs = {"trust_remote_code": trust_remote_code}
    transformer = Transformer(path, model_kwargs={**model_kwargs, "trust_remote_code": trust_remote_code},
                              processor_kwargs={"trust_remote_code": trust_remote_code},
                              config_kwargs=config_kwargs, max_seq_length=max_seq_length)
    dim = transformer.get_embedding_dimension()
    logger.info("embtune: %s has no sentence-transformers config; using %s pooling + L2 normalisation",
                path, family.pooling)
    return [transformer, Pooling(dim, family.pooling), Normalize()]


def default_prompts(family: Family) -> dict[str, str] | None:
    """Prompts for a model without its own: decoders get the instruction on queries only."""
    if family.kind == "decoder":
        return {"query": instruction_prompt(DEFAULT_QUERY_TASK), "document": ""}
    return None


def ensure_eos_appended(tokenizer: Any) -> bool:
    """Make a fast tokenizer append its EOS token to every text (last-token pooling reads it).

    Returns True when the post-processor had to be changed. The change lives in the tokenizer
    object (and so in the saved ``tokenizer.json``), not in any class.
    """
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ModelLoadError("decoder embedder needs an eos_token in its tokenizer", path=tokenizer.name_or_path)
    if tokenizer("a")["input_ids"][-1] == eos_id:
        return False
    from tokenizers.processors import TemplateProcessing

    eos = tokenizer.eos_token
    bos = tokenizer.bos_token if tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id else None
    single = f"{bos} $A {eos}" if bos else f"$A {eos}"
    pair = f"{bos} $A {eos} $B {eos}" if bos else f"$A {eos} $B {eos}"
    special = [(eos, eos_id)] + ([(bos, tokenizer.bos_token_id)] if bos else [])
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single=single, pair=pair,
                                                                    special_tokens=special)
    return True


def set_pooling_mode(model: Any, mode: str) -> None:
    """Replace the model's Pooling module by one with ``mode`` ("mean", "cls", "lasttoken", "max")."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    for name, module in model._modules.items():
        if isinstance(module, Pooling):
            model._modules[name] = Pooling(module.get_embedding_dimension(), mode)
            return
    raise ModelLoadError(f"model has no pooling module to set to {mode!r}")


def pooling_mode_of(model: Any) -> str | None:
    """The pooling mode ("mean", "cls", "lasttoken", ...) of ``model``'s Pooling module; None without one."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    for module in model._modules.values():
        if isinstance(module, Pooling):
            return module.pooling_mode
    return None


def prepare_4bit_for_training(hf_model: torch.nn.Module) -> None:
    """Get a 4-bit (QLoRA) model ready for adapter training: freeze it, keep its nf4 layers trainable,
    and upcast fp16 non-quantised weights (embeddings, norms, biases) to fp32.

    PEFT's ``prepare_model_for_kbit_training`` upcasts bf16 weights too. That upcast guards fp16's
    narrow range; bf16 has fp32's range, and upcasting it makes the whole residual stream and every
    activation fp32: on the 2-core CPU a Qwen3-0.6B-shaped QLoRA step then needs about twice the
    memory of LoRA on a bf16 base (README, Speed). So bf16 weights stay bf16 here; fp16 ones are
    upcast as PEFT does.
    """
    for param in hf_model.parameters():
        param.requires_grad_(False)
        if param.dtype == torch.float16 and type(param).__name__ != "Params4bit":
            param.data = param.data.float()
    keep_4bit_layers_trainable(hf_model)


def keep_4bit_layers_trainable(hf_model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking nf4 weights into its CPU inference layout; undo it if done.

    On AVX512-bf16 CPUs a ``Linear4bit`` run in eval mode without gradients converts its weight,
    once and for good, to a layout whose matmul has no backward; training after an evaluation then
    fails. Setting the layer's own ``support_avx512bf16_for_cpu`` flag to False (an instance
    attribute, no class is patched) keeps the trainable layout. Returns the number of layers set.
    """
    count = 0
    for module in hf_model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, state)
        count += 1
    return count
