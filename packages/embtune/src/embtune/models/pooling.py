"""`FastPooling`: sentence-transformers' ``Pooling`` whose mean / cls / last-token pooling runs the
``embtune_kernels.pool_spans`` Triton kernel on CUDA.

It *is* an ST ``Pooling`` (a subclass holding the same settings), so saving, loading and everything that
inspects the module keep working. Its forward takes the kernel only where the kernel dispatcher picks
Triton for the token embeddings (``embtune_kernels.dispatch``: CUDA tensors in mode "auto"); everywhere
else, CPU included, it is ST's forward, untouched. On the kernel path each text's real tokens are one
run of rows of the ``[B * L, H]`` view of ``token_embeddings`` (right or left padding; `FastTransformer`'s
packed path scatters its tokens back to exactly that layout), so the kernel reads only real tokens and
computes in fp32 like ST. Cases the kernel does not cover take ST's forward: several or other pooling
modes, ``include_prompt=False`` with a prompt length, ``token_weights_sum``, ``cls_token_embeddings``,
flattened (``cu_seq_lens_q``) features and masks whose real tokens are not one run per row.

`use_fast_pooling` swaps the ``Pooling`` modules of one model instance (no class is patched).
`plain_pooling` swaps them back while a model is saved: ST names a module's folder and modules.json
type after its class, and a saved folder must be ST's own ``1_Pooling`` so that it loads without
embtune (TEI and the exporters read that folder).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import embtune_kernels
import torch
from embtune_kernels import dispatch
from sentence_transformers.sentence_transformer.modules import Pooling

from embtune.models.packing import contiguous_lengths

ST_POOLING_TYPE = f"{Pooling.__module__}.{Pooling.__name__}"
"""How a plain sentence-transformers save names its Pooling module in modules.json."""

KERNEL_MODES = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
"""ST pooling mode -> ``embtune_kernels.pool`` mode, for the modes the kernel computes."""

_ST_ONLY_KEYS = ("cu_seq_lens_q", "token_weights_sum", "cls_token_embeddings")


def padded_spans(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Row runs of the real tokens of a padded batch, for ``embtune_kernels.pool_spans``.

    In: ``attention_mask [B, L]`` (0/1). Out: ``(starts, ends)`` int64 ``[B]`` indexing the ``[B * L]``
    flattened rows (text ``b`` is rows ``starts[b]:ends[b]``), or None when some row is empty or its ones
    are not one run touching an end of the row (then ST's masked pooling must run).
    """
    lengths = contiguous_lengths(attention_mask)
    if lengths is None:
        return None
    width = attention_mask.shape[1]
    first = attention_mask.to(torch.int32).argmax(dim=1)  # index of the first real token of every row
    starts = torch.arange(attention_mask.shape[0], device=attention_mask.device) * width + first
    return starts, starts + lengths


class FastPooling(Pooling):
    """ST's ``Pooling`` with the Triton pooling kernel on CUDA (see the module docstring)."""

    @classmethod
    def from_pooling(cls, pooling: Pooling) -> FastPooling:
        """Return a FastPooling sharing ``pooling``'s settings (``pooling`` is not used afterwards)."""
        if not isinstance(pooling, Pooling):
            raise TypeError(f"expected a sentence_transformers Pooling, got {type(pooling).__name__}")
        fast = cls.__new__(cls)
        fast.__dict__.update(pooling.__dict__)
        return fast

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """In: features with ``token_embeddings [B, L, H]`` and ``attention_mask [B, L]``. Out: the same
        dict with ``sentence_embedding [B, H]`` (ST's forward wherever the kernel does not apply)."""
        spans = self._kernel_spans(features, kwargs)
        if spans is None:
            return super().forward(features, **kwargs)
        tokens = features["token_embeddings"]
        batch, width, hidden = tokens.shape
        features["sentence_embedding"] = embtune_kernels.pool_spans(
            tokens.reshape(batch * width, hidden), *spans, mode=KERNEL_MODES[self.pooling_mode])
        return features

    def _kernel_spans(self, features: dict[str, Any], kwargs: dict[str, Any]) -> tuple | None:
        """``padded_spans`` of the batch when the kernel computes this forward, else None."""
        tokens = features.get("token_embeddings")
        if not isinstance(tokens, torch.Tensor) or dispatch.choose(tokens) != "triton":
            return None  # the CPU path stops here: ST's forward, unchanged
        if kwargs or not isinstance(self.pooling_mode, str) or self.pooling_mode not in KERNEL_MODES:
            return None
        if any(key in features for key in _ST_ONLY_KEYS):
            return None
        if not self.include_prompt and "prompt_length" in features:
            return None
        mask = features.get("attention_mask")
        if tokens.dim() != 3 or not isinstance(mask, torch.Tensor) or mask.shape != tokens.shape[:2]:
            return None
        return padded_spans(mask)


def use_fast_pooling(model: torch.nn.Module) -> int:
    """Swap every plain ST ``Pooling`` among ``model``'s direct children for `FastPooling`.

    In: a SentenceTransformer (changed in place). Out: how many modules were swapped.
    """
    count = 0
    for name, child in list(model.named_children()):
        if type(child) is Pooling:
            setattr(model, name, FastPooling.from_pooling(child))
            count += 1
    return count


@contextlib.contextmanager
def plain_pooling(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, every `FastPooling` among ``model``'s direct children is ST's own ``Pooling``
    with the same settings (for saving); the FastPooling modules are put back afterwards."""
    swapped = {}
    for name, child in list(model.named_children()):
        if isinstance(child, FastPooling):
            plain = Pooling.__new__(Pooling)
            plain.__dict__.update(child.__dict__)
            swapped[name] = child
            setattr(model, name, plain)
    try:
        yield
    finally:
        for name, child in swapped.items():
            setattr(model, name, child)


__all__ = ["FastPooling", "KERNEL_MODES", "ST_POOLING_TYPE", "padded_spans", "plain_pooling", "use_fast_pooling"]
