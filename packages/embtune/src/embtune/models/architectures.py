"""What embtune knows about each model family: encoder or decoder, pooling, LoRA targets.

Families are keyed by ``config.model_type``. Encoders (BERT, DistilBERT, MPNet, RoBERTa/XLM-R,
ModernBERT, ...) pool with a masked mean and L2-normalise; decoder embedders (Qwen3-Embedding
style) pool the last token, pad on the left, append EOS and put an instruction before queries.
A decoder type whose config sets ``use_bidirectional_attention`` (EmbeddingGemma: ``gemma3_text``)
is run like an encoder: bidirectional attention, mean pooling, right padding, no EOS appended.

For a sentence-transformers folder the folder is the truth (`folder_family`): its pooling mode,
Dense/Normalize modules and prompts are what ST loads; the config only says causal or not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch.nn as nn

ENCODER_TYPES = frozenset({
    "bert", "distilbert", "mpnet", "roberta", "xlm-roberta", "camembert", "modernbert", "electra",
    "albert", "deberta", "deberta-v2", "nomic_bert", "new", "jina_bert", "ernie",
})
#: Causal decoder types. gemma3_text stays here: without ``use_bidirectional_attention`` it is the
#: causal Gemma 3 language model; with it (EmbeddingGemma), `family_of_config` makes it an encoder.
DECODER_TYPES = frozenset({
    "qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2",
})

#: Linear layers that never take a LoRA adapter: heads unused by an embedding model.
EXCLUDED_LINEAR_PARTS = ("pooler", "lm_head", "classifier", "score", "qa_outputs", "cls.predictions")

#: Query instruction used for decoder embedders that ship no prompts of their own.
DEFAULT_QUERY_TASK = "Given a question, retrieve passages that answer the question"


@dataclass(frozen=True)
class Family:
    """How one model embeds text.

    ``kind``: "encoder" (bidirectional attention, including decoder types run bidirectionally) or
    "decoder" (causal); ``pooling``: an ST pooling mode; ``padding_side``: "left"/"right";
    ``append_eos``: the tokenizer must end every text with EOS (last-token pooling of a causal
    decoder); ``model_type``: ``config.model_type`` ("" when unknown).
    """

    kind: str
    pooling: str
    padding_side: str
    append_eos: bool
    model_type: str = ""

    @property
    def attention(self) -> str:
        """"causal" for decoders, "bidirectional" otherwise."""
        return "causal" if self.kind == "decoder" else "bidirectional"


def family_of(model_type: str, bidirectional: bool = False) -> Family:
    """Map ``config.model_type`` to its Family; unknown types are treated as encoders (mean pooling).

    ``bidirectional``: the config turns a decoder type's causal mask off
    (``use_bidirectional_attention``, as in EmbeddingGemma); it is then run like an encoder.
    """
    if model_type in DECODER_TYPES and not bidirectional:
        return Family("decoder", "lasttoken", "left", True, model_type)
    return Family("encoder", "mean", "right", False, model_type)


def family_of_config(config: Any) -> Family:
    """The Family of a transformers config: ``model_type`` plus its ``use_bidirectional_attention`` flag.

    In: a ``PretrainedConfig`` (or anything with ``model_type``). ``is_causal`` is not read: the
    attention modules of Qwen/Llama-style models hard-code causal attention whatever the config
    says, and a family must describe what transformers (and so sentence-transformers) runs.
    """
    bidirectional = bool(getattr(config, "use_bidirectional_attention", False))
    return family_of(str(getattr(config, "model_type", "") or ""), bidirectional=bidirectional)


def folder_family(base: Family, pooling: str) -> Family:
    """The Family of a sentence-transformers folder whose Pooling module uses ``pooling``.

    In: ``base`` from the config (`family_of_config`) and the folder's pooling mode. Out: ``base``
    with the folder's pooling; EOS is appended only where a causal decoder pools its last token
    (Qwen3-Embedding), so an ST folder's tokenizer is otherwise left exactly as saved.
    """
    return replace(base, pooling=pooling, append_eos=base.append_eos and pooling == "lasttoken")


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
