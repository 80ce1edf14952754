"""Matmul attention (the AMX path): forward and hand-written backward against a float64 reference.

fp32 runs must match to fp32 rounding; bf16 runs (the dtype the AMX path uses) to bf16 tolerance,
with the softmax in fp32. Masks cover key padding, causal and sliding-window attention, grouped-query
heads share key heads, and dropout is checked with the keep-mask handed in.
"""
from __future__ import annotations

import pytest
import torch
from embtune import FastSentenceTransformer
from embtune.losses import InfoNCELoss
from embtune.models import varlen_attention
from embtune.models.attention_choice import AttentionImpl
from embtune.models.matmul_attention import MatmulAttention, matmul_attention
from tiny_models import build_tiny_hf, randomize_lora_b


def _reference(q, k, v, mask, scaling, keep=None, dropout=0.0):
    """Plain float64 attention with repeated key heads."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = q @ k.transpose(-1, -2) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1)
    if keep is not None:
        probs = probs * keep / (1 - dropout)
    return probs @ v


def _mask(kind, n, length):
    if kind == "keys":
        keys = torch.ones(n, length, dtype=torch.bool)
        keys[0, 5:], keys[2, 2:] = False, False
        return keys[:, None, None, :]
    if kind == "causal-window":
        i = torch.arange(length)
        return (i[:, None] >= i[None, :]) & ((i[:, None] - i[None, :]) < 3)
    return None


def _relative_errors(dtype, compute, recompute, mask_kind, dropout):
    gen = torch.Generator().manual_seed(0)
    n, heads, kv_heads, length, dim = 3, 4, 2, 9, 8
    q = torch.randn(n, heads, length, dim, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(n, kv_heads, length, dim, generator=gen, dtype=torch.float64) for _ in range(2))
    grad = torch.randn(n, heads, length, dim, generator=gen, dtype=torch.float64)
    mask = _mask(mask_kind, n, length)
    keep = torch.rand(n, heads, length, length, generator=gen) >= dropout if dropout else None
    ours = [x.to(dtype).requires_grad_() for x in (q, k, v)]
    out = matmul_attention(*ours, mask, scaling=dim ** -0.5, dropout=dropout, compute=compute, recompute=recompute,
                           keep=keep)
    out.backward(grad.to(dtype))
    ref_in = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = _reference(*ref_in, mask, dim ** -0.5, keep, dropout)
    ref.backward(grad)
    assert out.dtype == dtype and all(x.grad.dtype == dtype for x in ours)
    pairs = [(out, ref)] + [(a.grad, b.grad) for a, b in zip(ours, ref_in)]
    return [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in pairs]


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "keys", "causal-window"])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("dtype,compute,tolerance", [
    (torch.float32, torch.float32, 2e-6),     # fp32 model, fp32 attention
    (torch.float32, torch.bfloat16, 3e-2),    # fp32 model, attention cast to bf16 (matmul@bf16)
    (torch.bfloat16, torch.bfloat16, 3e-2),   # bf16 model (the AMX default)
])
def test_outputs_and_gradients_match_float64(dtype, compute, tolerance, recompute, mask_kind, dropout):
    errors = _relative_errors(dtype, compute, recompute, mask_kind, dropout)
    assert max(errors) < tolerance, errors


@pytest.mark.parametrize("recompute", [False, True])
def test_hand_written_backward_passes_gradcheck(recompute):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    causal = torch.zeros(6, 6, dtype=torch.float64).masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(),
                                                                  float("-inf"))
    assert torch.autograd.gradcheck(
        lambda q, k, v: MatmulAttention.apply(q, k, v, causal, 0.7, None, 0.0, torch.float64, recompute), (q, k, v))


def test_recompute_saves_less_than_saving_probabilities():
    q, k, v = (torch.randn(4, 2, 64, 8, requires_grad=True) for _ in range(3))
    sizes = {}
    for recompute in (False, True):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            matmul_attention(q, k, v, None, scaling=0.3, recompute=recompute).sum().backward()
        sizes[recompute] = sum(saved)
    assert sizes[True] < sizes[False] - 4 * 2 * 64 * 64 // 2  # the [n, H, L, L] probabilities are not kept


@pytest.mark.parametrize("variant", ["matmul", "matmul-recompute"])
@pytest.mark.parametrize("compute", [None, torch.bfloat16])
@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 3)])
def test_packed_matmul_attention_matches_per_text_float64(variant, compute, causal, window):
    """Texts packed in one row (lengths 5, 1, 7, 6; GQA 4/2 heads) against per-text float64 attention."""
    gen = torch.Generator().manual_seed(2)
    lengths, heads, kv_heads, dim = [5, 1, 7, 6], 4, 2, 8
    total = sum(lengths)
    q = torch.randn(1, heads, total, dim, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(1, kv_heads, total, dim, generator=gen, dtype=torch.float64) for _ in range(2))
    grad = torch.randn(1, total, heads, dim, generator=gen, dtype=torch.float64)
    cu = torch.tensor([0, 5, 6, 13, 19], dtype=torch.int32)
    ours = [x.float().requires_grad_() for x in (q, k, v)]
    plan = varlen_attention.VarlenPlan.from_cu_seqlens(cu, variant)
    out = varlen_attention.packed_attention(*ours, plan, AttentionImpl(variant, compute), causal=causal,
                                            window=window, scaling=dim ** -0.5, dropout=0.0)
    out.backward(grad.float())
    ref_in = [x.clone().requires_grad_() for x in (q, k, v)]
    pieces = []
    for qs, ks, vs in zip(*(x.split(lengths, 2) for x in ref_in)):
        i = torch.arange(qs.shape[2])
        allowed = torch.ones(len(i), len(i), dtype=torch.bool)
        if causal:
            allowed &= i[:, None] >= i[None, :]
        if window is not None:
            allowed &= (i[:, None] - i[None, :]).abs() < window
        pieces.append(_reference(qs, ks, vs, allowed, dim ** -0.5).transpose(1, 2))
    ref = torch.cat(pieces, 1)
    ref.backward(grad)
    tolerance = 3e-2 if compute is torch.bfloat16 else 1e-5
    for mine, theirs in [(out, ref)] + [(a.grad, b.grad) for a, b in zip(ours, ref_in)]:
        assert ((mine.double() - theirs).abs().max() / theirs.abs().max()).item() < tolerance


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-matmul")
    return {fam: build_tiny_hf(root / fam, fam) for fam in ("bert", "qwen3")}


def _loss_and_grads(folder, attention, packing=True, dtype=torch.float32):
    model = FastSentenceTransformer.from_pretrained(folder, dtype=dtype, packing=packing, attention=attention,
                                                    max_seq_length=64)
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8, random_state=1)
    randomize_lora_b(model)
    model.eval()  # no dropout: every path computes the same function
    queries = ["what makes proteins fold", "how do cells divide", "is coffee bad for the heart"]
    docs = ["Protein folding is driven by hydrophobic collapse of nonpolar residues in water. " * 2,
            "Mitosis splits one cell into two.", "Moderate coffee intake shows no cardiac harm."]
    loss = InfoNCELoss(model, scale=20.0)([model.preprocess(queries), model.preprocess(docs)])
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach().float(), grads


@pytest.mark.parametrize("family", ["bert", "qwen3"])
@pytest.mark.parametrize("attention,dtype,tolerance", [
    ("matmul", torch.float32, 1e-4), ("matmul-recompute", torch.float32, 1e-4),
    ("matmul@bf16", torch.float32, 5e-2), ("matmul", torch.bfloat16, 8e-2),
])
def test_model_lora_gradients_match_padded_fp32(family, attention, dtype, tolerance, tiny_dirs):
    """A LoRA step through the whole model: loss and every LoRA gradient against the padded fp32 model."""
    loss, grads = _loss_and_grads(tiny_dirs[family], attention, dtype=dtype)
    ref_loss, ref_grads = _loss_and_grads(tiny_dirs[family], "bucket", packing=False)
    assert grads.keys() == ref_grads.keys() and grads
    assert abs(loss.item() - ref_loss.item()) <= tolerance * abs(ref_loss.item())
    for name, grad in grads.items():
        scale = ref_grads[name].abs().max().item()
        assert scale > 0, name
        assert (grad - ref_grads[name]).abs().max().item() <= tolerance * scale, name


def test_matmul_recomputes_above_the_save_limit(monkeypatch):
    """"matmul" keeps the probabilities only while they fit MATMUL_SAVE_LIMIT (long texts recompute)."""
    q, k, v = (torch.randn(2, 2, 16, 4, requires_grad=True) for _ in range(3))
    probs_bytes = 2 * 2 * 16 * 16 * 4

    def saved_numel():
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            varlen_attention.attend(q, k, v, None, causal=False, window=None, scaling=0.5, dropout=0.0,
                                    impl=AttentionImpl("matmul")).sum().backward()
        return sum(sizes)

    monkeypatch.setattr(varlen_attention, "MATMUL_SAVE_LIMIT", probs_bytes)
    keeps = saved_numel()
    monkeypatch.setattr(varlen_attention, "MATMUL_SAVE_LIMIT", probs_bytes - 1)
    assert saved_numel() <= keeps - 2 * 2 * 16 * 16 + 2 * 2 * 16  # P [n,H,L,L] gone, lse [n,H,L,1] kept
