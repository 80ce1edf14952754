"""What embtune knows about each model family: encoder or decoder, pooling, LoRA targets.

Families are keyed by ``config.model_type``. Encoders (BERT, DistilBERT, MPNet, RoBERTa/XLM-R,
ModernBERT, ...) pool with a masked mean and L2-normalise; decoder embedders (Qwen3-Embedding
style) pool the last token, pad on the left, append EOS and put an instruction before queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

ENCODER_TYPES = frozenset({
    "bert", "distilbert", "mpnet", "roberta", "xlm-roberta", "camembert", "modernbert", "electra",
    "albert", "deberta", "deberta-v2", "nomic_bert", "new", "jina_bert", "ernie",
})
DECODER_TYPES = frozenset({
    "qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2",
})

#: Linear layers that never take a LoRA adapter: heads unused by an embedding model.
EXCLUDED_LINEAR_PARTS = ("pooler", "lm_head", "classifier", "score", "qa_outputs", "cls.predictions")

#: Query instruction used for decoder embedders that ship no prompts of their own.
DEFAULT_QUERY_TASK = "Given a question, retrieve passages that answer the question"


@dataclass(frozen=True)
class Family:
    """How one model type embeds text: ``kind`` is "encoder" or "decoder"; ``pooling`` an ST mode."""

    kind: str
    pooling: str
    padding_side: str
    append_eos: bool


def family_of(model_type: str) -> Family:
    """Map ``config.model_type`` to its Family; unknown types are treated as encoders (mean pooling)."""
    if model_type in DECODER_TYPES:
        return Family(kind="decoder", pooling="lasttoken", padding_side="left", append_eos=True)
    return Family(kind="encoder", pooling="mean", padding_side="right", append_eos=False)


def instruction_prompt(task: str) -> str:
    """The Qwen3-Embedding query prompt for a task description: ``"Instruct: {task}\\nQuery: "``."""
    return f"Instruct: {task}\nQuery: "


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    # bitsandbytes Linear4bit / Linear8bitLt subclass nn.Linear, but be explicit for wrappers.
    return type(module).__name__ in {"Linear4bit", "Linear8bitLt"}


def lora_target_modules(hf_model: nn.Module, target_modules: str | list[str] = "all-linear") -> list[str]:
    """Resolve ``target_modules`` into the sorted list of leaf names PEFT will wrap.

    ``"all-linear"`` means every linear layer of the transformer body: attention projections and
    MLP layers, whatever the architecture calls them (``query``/``key``/``value``/``dense`` in BERT,
    ``q_lin``/``ffn.lin1`` in DistilBERT, ``Wqkv``/``Wi``/``Wo`` in ModernBERT, ``q_proj``/``gate_proj``
    in Qwen3), excluding heads that an embedding model never uses (pooler, LM head). A list is
    returned unchanged after checking that each name matches at least one linear layer.
    """
    names = [name for name, mod in hf_model.named_modules() if name and _is_linear(mod)]
    body = [n for n in names if not any(part in n for part in EXCLUDED_LINEAR_PARTS)]
    if target_modules == "all-linear":
        return sorted(body)
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    for target in target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            from embtune.errors import ConfigError

            leaves = sorted({n.rsplit(".", 1)[-1] for n in body})
            raise ConfigError(f"target module {target!r} matches no linear layer; this model has {leaves}")
    return list(target_modules)
