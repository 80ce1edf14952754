"""`FastTransformer`: sentence-transformers' ``Transformer`` module with a padding-free forward.

`FastSentenceTransformer.from_pretrained` swaps it in for ST's own ``Transformer`` (the first module)
at load time; it *is* an ST ``Transformer`` (a subclass holding the very same HF model, tokenizer and
settings), so everything that inspects ``model[0]`` keeps working. Its forward:

1. packs the padded batch into one stream of real tokens (``embtune.models.packing``), positions
   restarting at every text;
2. runs the Hugging Face model on that ``[1, T]`` stream, so embeddings, linear layers (LoRA and
   QLoRA included), norms and activations see real tokens only, with attention kept inside each
   text by the ``"embtune_varlen"`` attention function (``embtune.models.varlen_attention``, registered
   through transformers' public ``AttentionInterface``) that it receives ``cu_seqlens`` for;
3. scatters the outputs back to ``[B, L, H]`` ``token_embeddings`` next to the unchanged
   ``attention_mask``, so ST's Pooling/Normalize, losses and evaluators run unchanged.

LayerNorm: `FastTransformer.from_transformer` swaps the model's ``nn.LayerNorm`` modules (instances only,
no class is patched; same parameters and state-dict names) for `KernelLayerNorm`, which runs
``embtune_kernels.layer_norm`` (Triton) where the kernel dispatcher picks Triton for the input (CUDA
tensors in mode "auto") and is ``nn.LayerNorm``'s own forward everywhere else, CPU included.

Inputs that do not fit (no mask, masks with holes, images, ``output_hidden_states``, architectures
without attention-interface support such as MPNet) take ST's padded forward. A saved model names
ST's own ``Transformer`` in modules.json (see `FastSentenceTransformer.save`), so folders load without
embtune.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any

import embtune_kernels
import torch
from embtune_kernels import dispatch
from sentence_transformers.sentence_transformer.modules import Transformer

from embtune.models import attention_choice, varlen_attention
from embtune.models.fast_dropout import use_fast_dropout
from embtune.models.packing import PackedBatch, pack, unpack

logger = logging.getLogger("embtune")

ST_TRANSFORMER_TYPE = f"{Transformer.__module__}.{Transformer.__name__}"
"""How a plain sentence-transformers save names its Transformer module in modules.json."""

# Registered on import: a FastTransformer unpickled in another process (multi-process encoding)
# finds "embtune_varlen" in transformers' registry there too.
varlen_attention.register()

_PACKABLE_KEYS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
# Outputs that ST modules write into the features dict; a reused dict carries them (ignored here).
_OUTPUT_KEYS = frozenset({"token_embeddings", "sentence_embedding", "all_layer_embeddings", "token_weights"})


class KernelLayerNorm(torch.nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension whose forward runs ``embtune_kernels.layer_norm`` when the
    kernel dispatcher picks Triton for ``x`` and its parameters (and no autocast is active on x's device);
    otherwise ``nn.LayerNorm.forward`` (the CPU path, unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In: ``x [..., H]``. Out: ``LayerNorm(x)`` shaped like ``x`` (in x's dtype on the kernel path)."""
        if (dispatch.choose(x, self.weight, self.bias) != "triton"
                or torch.is_autocast_enabled(x.device.type) or x.dtype != self.weight.dtype):
            return super().forward(x)
        return embtune_kernels.layer_norm(x, self.weight, self.bias, eps=self.eps)[0]


def use_kernel_layer_norm(model: torch.nn.Module, enabled: bool = True) -> int:
    """Swap every plain affine 1-D ``nn.LayerNorm`` in ``model`` for `KernelLayerNorm` (``enabled=False``
    swaps back). The new module shares the old one's parameters, buffers and hooks.

    In: a module (changed in place). Out: how many modules were swapped.
    """
    source, target = torch.nn.LayerNorm, KernelLayerNorm
    if not enabled:
        source, target = target, source
    count = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is source and len(child.normalized_shape) == 1 and child.weight is not None:
                swapped = target.__new__(target)
                swapped.__dict__.update(child.__dict__)
                setattr(parent, name, swapped)
                count += 1
    return count


def packing_support(hf_model: torch.nn.Module) -> tuple[bool, str]:
    """Whether ``hf_model`` can run packed input, and why not.

    In: a transformers ``PreTrainedModel`` (LoRA/QLoRA layers injected or not). Out: ``(ok, reason)``.
    Packing needs an architecture whose attention goes through transformers' ``AttentionInterface``
    and accepts packed sequences (``_supports_attention_backend``); MPNet and DeBERTa, for instance,
    do not, and attention soft-capping (Gemma 2) is not computed by the packed attention.
    Causal or bidirectional attention and sliding windows come from each attention module
    (``is_causal``, ``sliding_window``), so EmbeddingGemma (gemma3_text with bidirectional
    attention) packs with the same mask transformers builds.
    """
    config = getattr(hf_model, "config", None)
    if config is None:
        return False, "not a transformers model"
    if not getattr(hf_model, "_supports_attention_backend", False):
        return False, f"{type(hf_model).__name__} has no attention-interface support in transformers"
    if getattr(config, "is_encoder_decoder", False):
        return False, "encoder-decoder models are not packed"
    if getattr(config, "attn_logit_softcapping", None):
        return False, "attention logit soft-capping (Gemma 2) is not implemented by the packed attention"
    return True, ""


def position_offset(hf_model: torch.nn.Module) -> int:
    """Position id of a text's first token: ``padding_idx + 1`` for RoBERTa-family learned
    positions (an embeddings module with an int ``padding_idx`` and a ``position_embeddings``
    table), else 0."""
    for module in hf_model.modules():
        padding_idx = getattr(module, "padding_idx", None)
        if isinstance(padding_idx, int) and isinstance(getattr(module, "position_embeddings", None),
                                                       torch.nn.Embedding):
            return padding_idx + 1
    return 0


class FastTransformer(Transformer):
    """ST's ``Transformer`` with a padding-free forward (see the module docstring).

    ``packing``: pack text batches (True) or always run ST's padded forward (False).
    ``attention``: how block-diagonal attention is computed: ``"auto"`` (measured once per machine and
    cached, see `embtune.models.attention_choice`) or an explicit name such as ``"bucket"``,
    ``"matmul@bf16"``, ``"sequence@fp32"``.
    ``attention_dropout``: dropout on attention probabilities while training on the packed path;
    0.0 by default, None keeps the model's own (e.g. 0.1 for BERT-family configs). That dropout costs
    a random draw per query-key pair and pushes SDPA off its fused kernel: on the 2-core benchmark
    machine it halved MiniLM's training speed (examples/benchmarks/train_speed.py), while SciFact
    quality after one epoch did not drop (README, Speed). Hidden-state dropout keeps the model's
    probability; its masks come from `embtune.models.fast_dropout` (a faster CPU random source).
    """

    packing: bool = False
    attention: str = "auto"
    attention_dropout: float | None = 0.0

    @classmethod
    def from_transformer(cls, transformer: Transformer, packing: bool = True,
                         attention: str = "auto") -> FastTransformer:
        """Return a FastTransformer that takes over ``transformer``'s model, tokenizer and settings.

        In: a loaded ST ``Transformer`` (not used afterwards: the new module shares its state),
        ``packing`` and ``attention`` as in the class docstring. Out: the new module, its model's
        ``nn.Dropout`` modules swapped for `embtune.models.fast_dropout.FastDropout` and its
        ``nn.LayerNorm`` modules for `KernelLayerNorm`. When packing
        is asked for but the architecture cannot be packed, a log line says why and the module runs
        ST's padded forward.
        """
        if not isinstance(transformer, Transformer):
            raise TypeError(f"expected a sentence_transformers Transformer, got {type(transformer).__name__}")
        fast = cls.__new__(cls)
        fast.__dict__.update(transformer.__dict__)
        use_fast_dropout(fast.model)
        use_kernel_layer_norm(fast.model)
        fast.set_packing(packing, attention)
        return fast

    def set_packing(self, packing: bool = True, attention: str | None = None) -> bool:
        """Turn packing on or off (and pick the attention variant); returns whether packing is on.

        Turning it on switches the HF model to the ``"embtune_varlen"`` attention (which also runs
        padded batches exactly like SDPA); off restores SDPA where the model had it.
        """
        if attention is not None:
            self.attention = attention_choice.check(attention)
        ok, reason = packing_support(self.model) if packing else (False, "")
        if packing and not ok:
            logger.info("embtune: padding-free packing is off for this model (%s); using the padded path", reason)
        if ok and self.backend != "torch":
            ok = False
        self.packing = ok
        current = getattr(self.model.config, "_attn_implementation", None)
        if ok and current != varlen_attention.ATTENTION_NAME:
            self._padded_attention = current
            self.model.set_attn_implementation(varlen_attention.register())
        elif not ok and current == varlen_attention.ATTENTION_NAME:
            self.model.set_attn_implementation(getattr(self, "_padded_attention", None) or "sdpa")
        self._position_offset = position_offset(self.model) if ok else 0
        self._takes_token_types = "token_type_ids" in inspect.signature(self.model.forward).parameters
        return ok

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """ST's Transformer forward, padding-free when the batch allows it.

        In: features from ``preprocess`` (``input_ids``, ``attention_mask``, optionally
        ``token_type_ids``, ...). Out: the same dict with ``token_embeddings [B, L, H]`` added (zeros at
        padding positions on the packed path).
        """
        packed = self._pack(features) if self.packing and not kwargs and self._varlen_active() else None
        if packed is None:
            return super().forward(features, **kwargs)
        inputs = {"input_ids": packed.input_ids, "position_ids": packed.position_ids}
        if packed.token_type_ids is not None and self._takes_token_types:
            inputs["token_type_ids"] = packed.token_type_ids
        plan = varlen_attention.VarlenPlan(packed.lengths, packed.cu_seqlens, self.attention, self.attention_dropout)
        output = self.model(**inputs, cu_seq_lens_q=packed.cu_seqlens, cu_seq_lens_k=packed.cu_seqlens,
                            max_length_q=packed.max_len, max_length_k=packed.max_len, embtune_plan=plan,
                            return_dict=True)
        features[self.module_output_name] = unpack(output.last_hidden_state, packed)
        return features

    def _varlen_active(self) -> bool:
        """True while the HF model still routes attention through ``"embtune_varlen"`` (packed input
        through any other attention would let texts attend to each other)."""
        return getattr(self.model.config, "_attn_implementation", None) == varlen_attention.ATTENTION_NAME

    def _pack(self, features: dict[str, Any]) -> PackedBatch | None:
        """Packed form of ``features``, or None when this batch must take the padded path."""
        if features.get("modality", "text") != "text" or self.module_output_name != "token_embeddings":
            return None
        params = self.modality_config.get("text", {})
        if params.get("method") != "forward" or params.get("method_output_name") not in (
                "last_hidden_state", ("last_hidden_state",), ["last_hidden_state"]):
            return None
        if getattr(self.model.config, "output_hidden_states", False):
            return None
        tensors = {k for k, v in features.items() if isinstance(v, torch.Tensor) and k not in _OUTPUT_KEYS}
        if not tensors <= _PACKABLE_KEYS or "input_ids" not in tensors or "attention_mask" not in tensors:
            return None
        input_ids, mask = features["input_ids"], features["attention_mask"]
        if input_ids.ndim != 2 or mask.shape != input_ids.shape:
            return None
        return pack(input_ids, mask, features.get("token_type_ids"), self._position_offset)

    def __repr__(self) -> str:
        """ST's repr with the packing state appended."""
        return f"Fast{super().__repr__()[:-1]}, packing={self.packing}, attention={self.attention!r})"
