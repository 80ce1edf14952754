"""Tokenise every training text once, then build padded batches from the cached token ids.

Texts get the same treatment as at inference: the anchor column is preprocessed like
``model.encode_query`` (the ``"query"`` prompt, ``task="query"``) and every other text column like
``model.encode_document`` (the first of the ``"document"``, ``"passage"``, ``"corpus"`` prompts,
``task="document"``), with the model's ``max_seq_length``. So a decoder's instructions are applied
identically in training and evaluation.

Each distinct (text, role) is run through ``model.preprocess`` once, in length-sorted chunks. The
real tokens of every row are kept in flat per-key tensors (narrowed to the smallest integer dtype
that holds them); a batch is rebuilt by padding those rows to the longest one on the tokenizer's
padding side with the tokenizer's pad values. The result equals calling ``model.preprocess`` on the
batch's texts directly. The cache checks that it understands what the preprocessor returned (2-D
``input_ids``/``attention_mask``/``token_type_ids``, contiguous masks, pad values it can reproduce);
for anything else (flattened inputs for flash attention, query expansion, extra tensors) it falls
back to calling ``model.preprocess`` per batch, which is always correct, only slower.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

QUERY, DOCUMENT = "query", "document"
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_PADDABLE = ("input_ids", "attention_mask", "token_type_ids")
_NARROW = (torch.int8, torch.int16, torch.int32, torch.int64)


def role_prompt(model: Any, role: str) -> str | None:
    """The prompt ``encode_query`` (role "query") or ``encode_document`` (role "document") would use.

    In: an ST model and a role. Out: the prompt text, or None when no (or an empty) prompt applies.
    Falls back to the model's ``default_prompt_name`` like ST's encode does.
    """
    prompts = getattr(model, "prompts", None) or {}
    names = (QUERY,) if role == QUERY else _DOCUMENT_PROMPT_NAMES
    prompt = next((prompts[name] for name in names if name in prompts), None)
    if prompt is None:
        default = getattr(model, "default_prompt_name", None)
        prompt = prompts.get(default) if default is not None else None
    return prompt or None


def _has_router(model: Any) -> bool:
    try:
        from sentence_transformers.base.modules import Router
    except ImportError:  # pragma: no cover - older sentence-transformers
        return False
    return any(isinstance(module, Router) for module in model.modules())


def _narrow(values: torch.Tensor) -> torch.Tensor:
    if values.numel() == 0:
        return values.to(torch.int8)
    lo, hi = int(values.min()), int(values.max())
    for dtype in _NARROW:
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.to(dtype)
    return values


class _RoleCache:
    """Flat token storage of one role: row ``slot`` holds ``flat[k][offsets[slot]:+lengths[slot]]``."""

    def __init__(self, flat: dict[str, torch.Tensor], dtypes: dict[str, torch.dtype], lengths: torch.Tensor,
                 extras: dict[str, Any], pad_values: dict[str, int], left: bool, slots: dict[int, int]):
        self.flat, self.dtypes, self.extras, self.pad_values = flat, dtypes, extras, pad_values
        self.lengths = lengths.tolist()
        self.offsets = (torch.cumsum(lengths, 0) - lengths).tolist()
        self.left, self.slots = left, slots

    def collate(self, text_ids: Sequence[int]) -> dict[str, Any]:
        slots = [self.slots[t] for t in text_ids]
        width = max(self.lengths[s] for s in slots)
        out: dict[str, Any] = {}
        for key, flat in self.flat.items():
            batch = torch.full((len(slots), width), self.pad_values[key], dtype=self.dtypes[key])
            for row, slot in enumerate(slots):
                n, start = self.lengths[slot], self.offsets[slot]
                target = batch[row, width - n:] if self.left else batch[row, :n]
                target.copy_(flat[start:start + n])
            out[key] = batch
        out.update(self.extras)
        return out


class FeatureCache:
    """Model features for training batches, tokenised once per distinct text and role."""

    def __init__(self, model: Any, texts: Sequence[str], ids_by_role: dict[str, Sequence[int]],
                 show_progress: bool = False, chunk_size: int = 256):
        """Tokenise the texts now.

        In: the ST model; ``texts`` (all distinct texts, indexed by id); ``ids_by_role`` mapping
        ``"query"``/``"document"`` to the text ids used in that role; ``show_progress`` for a bar.
        """
        self.model = model
        self.texts = texts
        self.router = _has_router(model)
        self.prompts = {role: role_prompt(model, role) for role in (QUERY, DOCUMENT)}
        self._caches: dict[str, _RoleCache | None] = {}
        total = sum(len(ids) for ids in ids_by_role.values())
        with tqdm(total=total, desc="tokenize", unit="text", disable=not show_progress) as bar:
            for role, ids in ids_by_role.items():
                self._caches[role] = self._build(role, list(ids), chunk_size, bar)

    @property
    def cached_roles(self) -> list[str]:
        """Roles whose batches come from the cache (the others call ``model.preprocess`` per batch)."""
        return [role for role, cache in self._caches.items() if cache is not None]

    def preprocess(self, role: str, texts: Sequence[str]) -> dict[str, Any]:
        """``model.preprocess`` of ``texts`` in ``role`` (prompt and task as at inference)."""
        return self.model.preprocess(list(texts), prompt=self.prompts[role], task=role)

    def collate(self, role: str, text_ids: Sequence[int]) -> dict[str, Any]:
        """Features (on CPU) for the texts ``text_ids`` in ``role``, ready for ``model(features)``."""
        cache = self._caches.get(role)
        if cache is not None:
            features = cache.collate(text_ids)
        else:
            features = self.preprocess(role, [self.texts[i] for i in text_ids])
        if self.router:
            features["task"] = role
        return features

    def _build(self, role: str, ids: list[int], chunk_size: int, bar: tqdm) -> _RoleCache | None:
        tokenizer = getattr(self.model, "tokenizer", None)
        left = getattr(tokenizer, "padding_side", "right") == "left"
        pad_values = {"input_ids": getattr(tokenizer, "pad_token_id", None), "attention_mask": 0,
                      "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
        ids = sorted(ids, key=lambda i: len(self.texts[i]))
        parts: dict[str, list[torch.Tensor]] = {}
        dtypes: dict[str, torch.dtype] = {}
        lengths: list[torch.Tensor] = []
        extras: dict[str, Any] | None = None
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start:start + chunk_size]
            out = self.preprocess(role, [self.texts[i] for i in chunk])
            parsed = self._parse(out, pad_values, left)
            if parsed is None or (extras is not None and parsed[2] != extras):
                logger.info("training features for role %r are tokenised per batch (preprocessor output "
                            "not cacheable)", role)
                bar.update(len(ids) - start)
                return None
            tokens, chunk_lengths, extras = parsed
            for key, values in tokens.items():
                parts.setdefault(key, []).append(values)
                dtypes[key] = out[key].dtype
            lengths.append(chunk_lengths)
            bar.update(len(chunk))
        if not lengths:
            return None
        flat = {}
        for key, chunks in parts.items():
            widest = max((c.dtype for c in chunks), key=lambda d: torch.iinfo(d).bits)
            flat[key] = torch.cat([c.to(widest) for c in chunks])
        return _RoleCache(flat, dtypes, torch.cat(lengths), extras or {}, pad_values, left,
                          {tid: slot for slot, tid in enumerate(ids)})

    @staticmethod
    def _parse(out: dict[str, Any], pad_values: dict[str, int | None], left: bool):
        """Split one preprocess output into flat real tokens, lengths and constant extras, or None."""
        mask = out.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
            return None
        if not isinstance(out.get("input_ids"), torch.Tensor):
            return None
        if mask.numel() and (mask.min() < 0 or mask.max() > 1):
            return None
        # Real tokens must be one contiguous run on the padding side's opposite end.
        steps = mask[:, 1:] - mask[:, :-1]
        if (steps > 0).any() if not left else (steps < 0).any():
            return None
        keep = mask.bool()
        tokens, extras = {}, {}
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                if key not in _PADDABLE or value.shape != mask.shape or value.is_floating_point():
                    return None
                pad = pad_values[key]
                if pad is None or ((~keep).any() and not bool((value[~keep] == pad).all())):
                    return None
                tokens[key] = _narrow(value[keep])
            elif value is None or isinstance(value, (str, int, float, bool)):
                extras[key] = value
            else:
                return None
        return tokens, mask.sum(dim=1), extras
