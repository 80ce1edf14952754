"""Block-diagonal ("varlen") attention over a packed token stream, registered with transformers.

A packed batch holds ``B`` texts back to back in one row of ``T`` tokens; ``cu_seqlens`` (``[B+1]``,
``cu[0] = 0``) marks where each text starts. Tokens attend only within their own text (causally for
decoders, within a window for sliding-window layers). transformers 5 lets a model route its attention
through a function registered in ``AttentionInterface``; ``register()`` adds :func:`varlen_attention`
under the name ``"embtune_varlen"`` (and a matching entry in ``AttentionMaskInterface`` that builds
no mask for packed input), and ``model.set_attn_implementation("embtune_varlen")`` selects it. The
model is called with the standard flash-attention keyword arguments (``cu_seq_lens_q`` ...) plus an
optional precomputed :class:`VarlenPlan` (``embtune_plan=``) so the bucketing is done once per
forward instead of once per layer.

On CPU there is no varlen kernel, so the block-diagonal attention is computed per group. How, is an
`embtune.models.attention_choice` name (``plan.variant``, default ``"auto"``: measured once per
machine and cached):

* ``"bucket"``: texts of similar length are gathered into a padded ``[n, H, L, D]`` block (at most
  ``BUCKET_SLACK`` padding overhead per bucket) and run through one SDPA call with a key padding
  mask. Few, large calls; the padding is confined to attention.
* ``"sequence"``: one SDPA call per text, no padding at all (many small calls).
* ``"eager"``: the bucketed layout with explicit ``softmax(q kᵀ) v`` (fp32 softmax) under autograd.
* ``"matmul"`` / ``"matmul-recompute"``: the bucketed layout through
  `embtune.models.matmul_attention` (two batched matmuls, fp32 softmax, hand-written backward that
  saves or recomputes the probabilities): the form that runs at matmul speed on AMX CPUs.

Each may carry ``@fp32`` / ``@bf16`` / ``@fp16``: the dtype attention runs in.

Without ``cu_seq_lens_q`` the function behaves like transformers' SDPA attention (padded batches),
so a model switched to ``"embtune_varlen"`` still runs ordinary padded input correctly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from embtune.models import attention_choice
from embtune.models.attention_choice import AttentionImpl
from embtune.models.matmul_attention import matmul_attention

ATTENTION_NAME = "embtune_varlen"
VARIANTS = attention_choice.VARIANTS
MATMUL_SAVE_LIMIT = 128 * 2 ** 20
"""Bytes of attention probabilities ``"matmul"`` may keep for the backward per call (one bucket of one
layer); above it (long texts: 2 x 2,048 tokens x 16 heads is 512 MiB a layer in fp32) the probabilities
are recomputed instead, as ``"matmul-recompute"`` does, so memory stays linear in the text length."""
BUCKET_SLACK = 1.25
"""A bucket's padded size is at most this multiple of its real tokens (the first text of each bucket
sets its width; texts are taken longest first)."""


@dataclass
class _Bucket:
    width: int
    seqs: list[int]
    key_mask: torch.Tensor | None  # [n, width] True on real tokens, None when nothing is padded


@dataclass
class VarlenPlan:
    """Where each text sits in a packed stream and how attention groups the texts.

    ``lengths``: tokens per text; ``cu_seqlens``: int32 ``[B+1]`` cumulative lengths; ``variant``: an
    `embtune.models.attention_choice` name (``"auto"``, ``"bucket"``, ``"matmul@bf16"`` ...);
    ``dropout``: attention-probability dropout to use in training instead of the model's own (None
    keeps the model's). Buckets, the index that restores packed order and the resolved
    implementation are built on first use.
    """

    lengths: list[int]
    cu_seqlens: torch.Tensor
    variant: str = attention_choice.AUTO
    dropout: float | None = None
    _buckets: list[_Bucket] | None = field(default=None, repr=False)
    _restore: torch.Tensor | None = field(default=None, repr=False)
    _impls: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, variant: str = attention_choice.AUTO) -> VarlenPlan:
        """A plan for the packed stream described by ``cu_seqlens`` (int ``[B+1]``, starts at 0)."""
        attention_choice.check(variant)
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        return cls([int(n) for n in lengths], cu_seqlens, variant)

    def implementation(self, query: torch.Tensor, key: torch.Tensor, causal: bool, training: bool) -> AttentionImpl:
        """The AttentionImpl this plan's ``variant`` resolves to for these tensors and the module's training
        mode (resolved once per shape)."""
        key_ = (query.shape[1], key.shape[1], query.shape[-1], query.dtype, causal, training)
        if key_ not in self._impls:
            self._impls[key_] = attention_choice.resolve(self.variant, query, key, causal=causal, training=training,
                                                         run=run_packed)
        return self._impls[key_]

    @property
    def total(self) -> int:
        """Number of tokens in the packed stream."""
        return sum(self.lengths)

    def buckets(self, device: torch.device) -> tuple[list[_Bucket], torch.Tensor]:
        """The length buckets and the index mapping bucket-major padded rows back to packed order."""
        if self._buckets is None:
            self._buckets, self._restore = _make_buckets(self.lengths, device)
        return self._buckets, self._restore


def _make_buckets(lengths: list[int], device: torch.device) -> tuple[list[_Bucket], torch.Tensor]:
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    total = starts[-1] + lengths[-1] if lengths else 0
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= BUCKET_SLACK * (
                sum(lengths[j] for j in groups[-1]) + lengths[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    buckets, restore = [], torch.empty(total, dtype=torch.long)
    offset = 0
    for seqs in groups:
        width = lengths[seqs[0]]
        gather = torch.full((len(seqs), width), total, dtype=torch.long)
        for row, i in enumerate(seqs):
            n = lengths[i]
            gather[row, :n] = torch.arange(starts[i], starts[i] + n)
            restore[starts[i]:starts[i] + n] = torch.arange(offset + row * width, offset + row * width + n)
        padded = any(lengths[i] < width for i in seqs)
        key_mask = (gather < total).to(device) if padded else None
        buckets.append(_Bucket(width, seqs, key_mask))
        offset += len(seqs) * width
    return buckets, restore.to(device)


def _window_mask(length: int, window: int | None, causal: bool, device: torch.device) -> torch.Tensor | None:
    """Bool ``[L, L]`` mask (True = may attend) for causal and/or sliding-window attention, or None."""
    if not causal and (window is None or length <= window):
        return None
    i = torch.arange(length, device=device)
    diff = i[:, None] - i[None, :]
    allowed = diff >= 0 if causal else torch.ones(length, length, dtype=torch.bool, device=device)
    if window is not None:
        allowed &= diff.abs() < window
    return allowed


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None,
           *, causal: bool, window: int | None, scaling: float, dropout: float,
           impl: AttentionImpl = AttentionImpl("bucket")) -> torch.Tensor:
    """Attention over a padded block.

    In: ``query [n, H, L, D]``, ``key``/``value [n, Hkv, L, D]`` (``H`` a multiple of ``Hkv``),
    ``key_mask [n, L]`` bool (True on real tokens, padding on the right) or None, ``causal``,
    ``window`` (attend only to keys closer than this, or None), ``scaling``, ``dropout`` probability,
    ``impl`` (how: SDPA for "bucket"/"sequence", explicit matmul/softmax under autograd for "eager",
    `embtune.models.matmul_attention` for "matmul"/"matmul-recompute"; and in which dtype).
    Out: ``[n, H, L, D]`` in ``query.dtype``.
    """
    heads, length, in_dtype = query.shape[1], query.shape[2], query.dtype
    gqa = key.shape[1] != heads
    structure = _window_mask(length, window, causal, query.device)
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :]
        if structure is not None:
            mask = mask & structure
    elif structure is not None:
        mask = structure
    compute = impl.compute_dtype(query.dtype)
    if impl.variant.startswith("matmul"):
        saved_bytes = query.shape[0] * heads * length * length * torch.finfo(compute).bits // 8
        recompute = impl.variant == "matmul-recompute" or saved_bytes > MATMUL_SAVE_LIMIT
        return matmul_attention(query, key, value, mask, scaling=scaling, dropout=dropout, compute=compute,
                                recompute=recompute)
    if impl.variant == "eager":
        query, key, value = query.to(compute), key.to(compute), value.to(compute)
        if gqa:
            key = key.repeat_interleave(heads // key.shape[1], dim=1)
            value = value.repeat_interleave(heads // value.shape[1], dim=1)
        acc = torch.promote_types(query.dtype, torch.float32)
        scores = torch.matmul(query, key.transpose(-1, -2)).to(acc) * scaling
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(-1)
        if dropout > 0:
            probs = F.dropout(probs, dropout)
        return torch.matmul(probs.to(value.dtype), value).to(in_dtype)
    is_causal = causal and mask is None
    if mask is not None:
        # an additive float mask is faster than a bool one in the CPU SDPA kernel
        mask = torch.zeros(mask.shape, dtype=compute, device=query.device).masked_fill(~mask, float("-inf"))
    out = F.scaled_dot_product_attention(query.to(compute), key.to(compute), value.to(compute), attn_mask=mask,
                                         dropout_p=dropout, is_causal=is_causal, scale=scaling, enable_gqa=gqa)
    return out.to(in_dtype)


def packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, plan: VarlenPlan,
                     impl: AttentionImpl, *, causal: bool, window: int | None, scaling: float,
                     dropout: float) -> torch.Tensor:
    """Block-diagonal attention over one packed row.

    In: ``query [1, H, T, D]``, ``key``/``value [1, Hkv, T, D]`` (as the attention modules hand them
    over), the plan, the implementation (see `attend`; "sequence" runs one call per text, the others
    one per length bucket), ``causal``, ``window``, ``scaling``, ``dropout``.
    Out: ``[1, T, H, D]`` (the layout transformers' attention functions return).
    """
    heads, head_dim = query.shape[1], query.shape[3]
    if impl.variant == "sequence":
        outs = []
        for q, k, v in zip(query.split(plan.lengths, 2), key.split(plan.lengths, 2), value.split(plan.lengths, 2)):
            outs.append(attend(q, k, v, None, causal=causal, window=window, scaling=scaling, dropout=dropout,
                               impl=impl).transpose(1, 2))
        return torch.cat(outs, dim=1)
    if len(set(plan.lengths)) == 1:  # equal lengths: the packed row already is an [n, L] block
        n, width = len(plan.lengths), plan.lengths[0]
        q, k, v = (x[0].transpose(0, 1).reshape(n, width, x.shape[1], head_dim).transpose(1, 2)
                   for x in (query, key, value))
        out = attend(q, k, v, None, causal=causal, window=window, scaling=scaling, dropout=dropout, impl=impl)
        return out.transpose(1, 2).reshape(1, n * width, heads, head_dim)
    buckets, restore = plan.buckets(query.device)
    rows = sum(len(bucket.seqs) * bucket.width for bucket in buckets)
    # [1, h, T, D] -> [rows, h, D]: every bucket's padded block, back to back (padding rows are zeros)
    # (split, not slicing: its backward is one concatenation instead of a zero-filled buffer per bucket)
    sizes = [len(bucket.seqs) * bucket.width for bucket in buckets]
    tokens = [_ToBuckets.apply(x[0].transpose(0, 1), restore, rows).split(sizes) for x in (query, key, value)]
    outs = []
    for bucket, size, *qkv in zip(buckets, sizes, *tokens):
        n = len(bucket.seqs)
        q, k, v = (t.view(n, bucket.width, *t.shape[1:]).transpose(1, 2) for t in qkv)
        out = attend(q, k, v, bucket.key_mask, causal=causal, window=window, scaling=scaling, dropout=dropout,
                     impl=impl)
        outs.append(out.transpose(1, 2).reshape(size, heads, head_dim))
    flat = outs[0] if len(outs) == 1 else torch.cat(outs)
    return _FromBuckets.apply(flat, restore).unsqueeze(0)


def run_packed(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
               impl: AttentionImpl, *, causal: bool, scaling: float) -> torch.Tensor:
    """`packed_attention` of one implementation without a window or dropout (what `attention_choice` times).

    In: ``query [1, H, T, D]``, ``key``/``value [1, Hkv, T, D]``, ``cu_seqlens`` int ``[B+1]``, the
    implementation, ``causal``, ``scaling``. Out: ``[1, T, H, D]``.
    """
    return packed_attention(query, key, value, VarlenPlan.from_cu_seqlens(cu_seqlens), impl, causal=causal,
                            window=None, scaling=scaling, dropout=0.0)


def choose_attention(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device, *,
                     causal: bool, training: bool) -> AttentionImpl:
    """``attention_choice.choose`` with this module's runner: the measured (or cached) fastest implementation
    for these head shapes. In: heads, key/value heads, head size, dtype, device, ``causal``, ``training``."""
    return attention_choice.choose(heads, kv_heads, head_dim, dtype, device, causal=causal, training=training,
                                   run=run_packed)


class _ToBuckets(torch.autograd.Function):
    """Packed rows ``[T, ...]`` → bucket-major padded rows ``[rows, ...]`` (``restore[i]`` is where packed
    row ``i`` goes; the other rows are zero). Every packed row lands exactly once, so the backward is a
    gather (``index_select``), not autograd's scatter-add of ``index_select``'s backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, restore: torch.Tensor, rows: int) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(restore)
        return x.new_zeros((rows, *x.shape[1:])).index_copy_(0, restore, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (restore,) = ctx.saved_tensors
        return grad.index_select(0, restore), None, None


class _FromBuckets(torch.autograd.Function):
    """Bucket-major padded rows → packed rows (the inverse of `_ToBuckets`); the backward writes the
    gradient back to each row's bucket position and zeros on padding rows."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(restore)
        ctx.rows = y.shape[0]
        return y.index_select(0, restore)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (restore,) = ctx.saved_tensors
        return grad.new_zeros((ctx.rows, *grad.shape[1:])).index_copy_(0, restore, grad), None


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     sliding_window: int | None = None, is_causal: bool | None = None, **kwargs):
    """The ``"embtune_varlen"`` attention function (transformers' AttentionInterface signature).

    In: the attention module (its ``is_causal`` is used unless ``is_causal`` is given), ``query
    [B, H, L, D]``, ``key``/``value [B, Hkv, L, D]``, the model's attention mask (None for packed
    input), ``scaling`` (default ``D ** -0.5``), ``dropout``, ``sliding_window`` (flash-attention
    convention: keys closer than this many positions), and either ``cu_seq_lens_q`` (packed input,
    ``B = 1``) or nothing (padded input); ``embtune_plan`` may carry a precomputed VarlenPlan.
    Out: ``(attn_output [B, L, H, D], None)``.
    """
    causal = bool(getattr(module, "is_causal", False) if is_causal is None else is_causal)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    plan = kwargs.get("embtune_plan")
    cu = kwargs.get("cu_seq_lens_q")
    if plan is None and cu is not None:
        plan = VarlenPlan.from_cu_seqlens(cu)
    if plan is not None:
        if plan.dropout is not None and module.training:
            dropout = plan.dropout
        if query.shape[0] != 1 or query.shape[2] != plan.total:
            raise ValueError(f"packed attention expects query [1, H, {plan.total}, D], got {tuple(query.shape)}")
        impl = plan.implementation(query, key, causal, module.training)
        with torch.profiler.record_function("embtune::attention"):  # lets profiles group attention's ops
            out = packed_attention(query, key, value, plan, impl, causal=causal, window=sliding_window,
                                   scaling=scaling, dropout=dropout)
        return out, None
    if attention_mask is not None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      is_causal=is_causal, **{k: v for k, v in kwargs.items()
                                                              if not k.startswith(("embtune_", "cu_seq_lens",
                                                                                   "max_length_"))})
    # No mask and no packing: every row is one whole sequence.
    impl = attention_choice.resolve(attention_choice.AUTO, query, key, causal=causal, training=module.training,
                                    run=run_packed)
    if impl.variant == "sequence":
        impl = AttentionImpl("bucket", impl.dtype)
    out = attend(query, key, value, None, causal=causal, window=sliding_window, scaling=scaling, dropout=dropout,
                 impl=impl)
    return out.transpose(1, 2).contiguous(), None


def _mask_for_varlen(*args, attention_mask: torch.Tensor | None = None, **kwargs):
    """Mask builder for ``"embtune_varlen"``: none for packed/unmasked input, SDPA's mask otherwise."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Register the ``"embtune_varlen"`` attention (and mask) function with transformers; returns the name.

    Idempotent. Uses transformers' public ``AttentionInterface.register`` /
    ``AttentionMaskInterface.register``; no transformers class is modified.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, varlen_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _mask_for_varlen)
    return ATTENTION_NAME


def flops(lengths: list[int], hidden: int, layers: int, causal: bool = False) -> float:
    """Forward FLOPs of attention scores and weighted sum: ``4 * sum(L^2) * hidden`` per layer (halved if causal)."""
    per_layer = 4.0 * sum(n * n for n in lengths) * hidden
    return per_layer * layers * (0.5 if causal else 1.0)


__all__ = ["ATTENTION_NAME", "VARIANTS", "VarlenPlan", "attend", "choose_attention", "flops", "packed_attention",
           "register", "run_packed", "varlen_attention"]
