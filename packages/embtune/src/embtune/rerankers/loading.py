"""Load a reranker: a sentence-transformers ``CrossEncoder`` from any encoder or decoder folder.

What the folder holds decides the model built (the object is always an ST ``CrossEncoder``, so ST
code, ``predict`` / ``rank`` and ST's cross-encoder losses accept it):

- a saved CrossEncoder (``config_sentence_transformers.json`` says ``"model_type": "CrossEncoder"``),
  or a Hugging Face ``*ForSequenceClassification`` folder (bge-reranker, ms-marco-MiniLM): loaded
  as it is, head included;
- an encoder backbone or a sentence-transformers embedder (the embedded MiniLM): the encoder with a
  fresh one-logit classification head (``transformer_task="sequence-classification"``);
- a decoder (Qwen3, Llama, ...): Qwen3-Reranker style, the causal LM with ST's ``LogitScore``
  (score = logit("yes") - logit("no") at the last position, so ``sigmoid(score)`` is the softmax of
  the two logits: p(yes)) and, unless the tokenizer already renders query/document pairs, the
  Qwen3-Reranker prompt as its chat template (`embtune.rerankers.templates`); the instruction is
  the model's default prompt (named ``"instruction"``), rendered as the template's ``<Instruct>``.

The file checks are the embedder loader's (`embtune.models.loading`): safetensors only unless
``allow_pickle``, ``trust_remote_code`` off unless asked, 4-bit through bitsandbytes.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from embtune.device import default_device, resolve_dtype
from embtune.errors import ConfigError, ModelLoadError
from embtune.models import loading
from embtune.models.architectures import family_of_config
from embtune.rerankers.templates import DEFAULT_INSTRUCTION, QWEN3_RERANKER_TEMPLATE

logger = logging.getLogger(__name__)

INSTRUCTION_PROMPT = "instruction"
"""Name of the prompt that holds a decoder reranker's instruction (its default prompt)."""


def is_reranker(model: Any) -> bool:
    """True when ``model`` is a sentence-transformers ``CrossEncoder`` (the reranker type)."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, CrossEncoder)


def as_reranker(value: Any, **options: Any) -> Any:
    """A reranker ready to score: ``value`` itself when it scores pairs (a CrossEncoder, or any object
    with ``predict``), else `load_reranker(value, for_inference=True, **options)` for a folder, a hub id
    or None (the embedded MiniLM with a fresh head). TypeError for anything else."""
    if is_reranker(value) or callable(getattr(value, "predict", None)):
        return value
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError("a reranker is a sentence-transformers CrossEncoder, a folder or a hub id, "
                        f"got {type(value).__name__}")
    return load_reranker(value, for_inference=True, **options)


def saved_as_cross_encoder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is a saved sentence-transformers CrossEncoder or a HF sequence-classification
    model (a reranker whose head is kept). In: a local folder. Out: bool."""
    folder = Path(folder)
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        try:
            if json.loads(st_config.read_text(encoding="utf-8")).get("model_type") == "CrossEncoder":
                return True
        except ValueError:
            raise ModelLoadError("unreadable JSON", path=st_config) from None
    if (folder / "modules.json").is_file():
        return False  # an embedder folder: its head (pooling) is not a reranker's
    return _architecture(folder).endswith("ForSequenceClassification")


def _architecture(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return (config.get("architectures") or [""])[0]


def load_reranker(
    model_name_or_path: str | os.PathLike | None = None,
    *,
    max_length: int | None = None,
    dtype: torch.dtype | str | None = None,
    load_in_4bit: bool = False,
    full_finetuning: bool = False,
    for_inference: bool = False,
    instruction: str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Any:
    """Load (or build) a reranker as an ST ``CrossEncoder``.

    In: a folder or hub id (None: the embedded all-MiniLM-L6-v2, given a fresh head); ``max_length``
    truncates each (query, document) input; ``dtype`` of the weights (None: bf16 where the device runs
    it fast, fp32 otherwise; full fine-tuning defaults to fp32); ``load_in_4bit`` for QLoRA;
    ``full_finetuning`` makes every weight trainable (else all are frozen until `add_lora`);
    ``for_inference`` puts it in eval mode; ``instruction`` (decoders) is the Qwen3-Reranker
    ``<Instruct>`` text (default: the model card's). Out: a ``CrossEncoder`` with one score per pair.
    Raises ConfigError / ModelLoadError (naming the folder) for bad arguments or files.
    """
    from sentence_transformers import CrossEncoder

    from embtune.models.names import resolve_model

    loading.check_training_mode(full_finetuning, load_in_4bit)
    if max_length is not None and (not isinstance(max_length, int) or max_length < 8):
        raise ConfigError(f"max_length must be an integer >= 8, got {max_length!r}")
    device = torch.device(device) if device is not None else default_device()
    if dtype is None and full_finetuning:
        dtype = torch.float32
    torch_dtype = resolve_dtype(dtype, device)
    source = loading.inspect_source(resolve_model(model_name_or_path))
    if source.is_local:
        loading.check_safe_weights(source.path, allow_pickle)
        loading.check_model_files(source, allow_pickle)
    if source.is_adapter:
        raise ConfigError("load a reranker adapter with load_reranker(base) then model.load_adapter(folder), or "
                          "save rerankers merged (save_reranker's default)", path=source.path)
    config = loading.read_config(source, trust_remote_code)
    decoder = family_of_config(config).kind == "decoder"
    model_kwargs = {**loading.model_kwargs_for(torch_dtype, device, load_in_4bit, allow_pickle),
                    "trust_remote_code": trust_remote_code}
    with loading.load_errors(source.path):
        if source.is_local and saved_as_cross_encoder(source.path):
            model = CrossEncoder(source.path, device=str(device), trust_remote_code=trust_remote_code,
                                 model_kwargs=model_kwargs)
        else:
            model = CrossEncoder(modules=_fresh_modules(source.path, decoder, model_kwargs, trust_remote_code),
                                 device=str(device))
    if decoder:
        _prepare_decoder(model, instruction)
    elif instruction is not None:
        raise ConfigError("instruction applies to decoder rerankers (Qwen3-Reranker style) only")
    if max_length is not None:
        model.max_seq_length = max_length
    for param in model.parameters():
        param.requires_grad_(full_finetuning)
    if for_inference:
        model.eval()
    return model


def _fresh_modules(path: str, decoder: bool, model_kwargs: dict[str, Any], trust_remote_code: bool) -> list:
    """ST modules of a reranker built on a backbone: encoder + one-logit head, or causal LM + LogitScore."""
    from sentence_transformers.base.modules import Transformer

    shared = {"trust_remote_code": trust_remote_code}
    if not decoder:
        config_kwargs = {**shared}
        if not _architecture(Path(path)).endswith("ForSequenceClassification"):
            config_kwargs["num_labels"] = 1
        logger.info("embtune: %s gets a fresh reranker head (one logit)", path)
        return [Transformer(path, transformer_task="sequence-classification", model_kwargs=model_kwargs,
                            processor_kwargs=shared, config_kwargs=config_kwargs)]
    from sentence_transformers.cross_encoder.modules import LogitScore
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **shared)
    processor_kwargs = dict(shared)
    if not renders_pairs(getattr(tokenizer, "chat_template", None)):
        processor_kwargs["chat_template"] = QWEN3_RERANKER_TEMPLATE
    yes, no = (_single_token_id(tokenizer, word) for word in ("yes", "no"))
    transformer = Transformer(path, transformer_task="text-generation", model_kwargs=model_kwargs,
                              processor_kwargs=processor_kwargs, config_kwargs=shared)
    return [transformer, LogitScore(true_token_id=yes, false_token_id=no)]


def renders_pairs(template: Any) -> bool:
    """True when a chat template reads the ``query`` and ``document`` roles ST gives a text pair."""
    return isinstance(template, str) and ("'document'" in template or '"document"' in template)


def _single_token_id(tokenizer: Any, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ModelLoadError(f"a decoder reranker needs {word!r} as one token; this tokenizer splits it into "
                             f"{len(ids)}", path=getattr(tokenizer, "name_or_path", None))
    return ids[0]


def _prepare_decoder(model: Any, instruction: str | None) -> None:
    """Make the instruction a decoder reranker's default prompt (rendered as the template's ``<Instruct>``)."""
    if instruction is not None or INSTRUCTION_PROMPT not in model.prompts:
        model.prompts[INSTRUCTION_PROMPT] = instruction or DEFAULT_INSTRUCTION
    model.default_prompt_name = INSTRUCTION_PROMPT
