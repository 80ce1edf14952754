"""FastDropout (numpy SFC64 masks) against nn.Dropout's contract."""
from __future__ import annotations

import math

import pytest
import torch
from embtune import FastSentenceTransformer
from embtune.models.fast_dropout import FastDropout, fast_dropout, keep_mask, use_fast_dropout
from tiny_models import build_tiny_hf, randomize_lora_b


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_independence(p):
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([1000, 1000]), p).float()
    n, q = keep.numel(), 1 - p
    sigma = math.sqrt(q * (1 - q) / n)
    assert abs(keep.mean().item() - q) < 5 * sigma
    # neighbours (same 64-bit draw and across draws) are independent: P(both kept) = q^2
    for shift in (1, 4):
        both = (keep.view(-1)[:-shift] * keep.view(-1)[shift:]).mean().item()
        assert abs(both - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / n)
    # rows are not copies of each other
    assert not torch.equal(keep[0], keep[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_and_gradient_follow_the_mask(dtype):
    p = 0.25
    x = torch.randn(37, 19, dtype=dtype, requires_grad=True)
    torch.manual_seed(3)
    y = fast_dropout(x, p)
    torch.manual_seed(3)
    keep = keep_mask(x.shape, p)
    assert y.dtype == dtype and y.shape == x.shape
    expected = torch.where(keep, x.detach(), 0) * (1 / (1 - p))
    torch.testing.assert_close(y.detach(), expected.to(dtype))
    grad = torch.randn_like(y)
    y.backward(grad)
    torch.testing.assert_close(x.grad, (torch.where(keep, grad, 0) * (1 / (1 - p))).to(dtype))
    # unbiased: the mean of a large dropped-out tensor of ones stays ~1
    ones = fast_dropout(torch.ones(500_000), 0.3)
    assert abs(ones.mean().item() - 1.0) < 0.01


def test_reproducible_from_torch_seed_and_rng_state():
    torch.manual_seed(11)
    first = keep_mask(torch.Size([4096]), 0.1)
    state = torch.get_rng_state()
    second = keep_mask(torch.Size([4096]), 0.1)
    torch.manual_seed(11)
    assert torch.equal(keep_mask(torch.Size([4096]), 0.1), first)
    torch.set_rng_state(state)
    assert torch.equal(keep_mask(torch.Size([4096]), 0.1), second)
    assert not torch.equal(first, second)


def test_module_eval_mode_and_edge_probabilities():
    x = torch.randn(8, 16)
    module = FastDropout(0.5)
    module.eval()
    assert torch.equal(module(x), x)
    module.train()
    assert not torch.equal(module(x), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.count_nonzero(fast_dropout(x, 1.0)) == 0
    assert torch.equal(fast_dropout(x, 0.5, training=False), x)


def test_use_fast_dropout_swaps_every_dropout_and_back(tmp_path):
    folder = build_tiny_hf(tmp_path / "bert", "bert")
    model = FastSentenceTransformer.from_pretrained(folder, dtype=torch.float32)
    hf = model.hf_model
    plain = [m for m in hf.modules() if type(m) is torch.nn.Dropout]
    fast = [m for m in hf.modules() if type(m) is FastDropout]
    assert not plain and fast  # FastSentenceTransformer swapped them at load
    probabilities = sorted(m.p for m in fast)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    assert use_fast_dropout(hf, enabled=False) == len(fast)
    assert sorted(m.p for m in hf.modules() if type(m) is torch.nn.Dropout) == probabilities
    assert use_fast_dropout(hf) == len(fast)
    assert hf.state_dict().keys() == state.keys()
    # training with it runs and reaches the LoRA weights
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    model.train()
    out = model(model.preprocess(["a short text", "another, somewhat longer, text"]))["sentence_embedding"]
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_gradcache_replays_fast_dropout_masks(tmp_path):
    """In training mode with dropout 0.1, GradCache's replay (RNG snapshot per mini-batch) must draw the
    same FastDropout masks as its first pass: with one mini-batch it then equals plain InfoNCE exactly,
    and differs once the masks differ (another seed)."""
    from embtune.losses import CachedInfoNCELoss, InfoNCELoss

    model = FastSentenceTransformer.from_pretrained(build_tiny_hf(tmp_path / "bert", "bert", dropout=0.1),
                                                    dtype=torch.float32)
    assert {m.p for m in model.modules() if isinstance(m, FastDropout)} == {0.1}
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    randomize_lora_b(model)
    model.train()
    queries = ["what makes proteins fold", "how do cells divide", "is coffee bad", "eye colour gene"]
    docs = ["Protein folding is driven by hydrophobic collapse.", "Mitosis splits one cell into two.",
            "Moderate coffee intake shows no harm.", "OCA2 variants set eye colour."]

    def step(loss, seed):
        torch.manual_seed(seed)
        value = loss([model.preprocess(queries), model.preprocess(docs)])
        value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return value.item(), grads

    plain_loss, plain = step(InfoNCELoss(model, scale=20.0), 5)
    cached_loss, cached = step(CachedInfoNCELoss(model, scale=20.0, mini_batch_size=4), 5)
    other_loss, _ = step(InfoNCELoss(model, scale=20.0), 6)
    assert cached_loss == plain_loss and other_loss != plain_loss
    assert plain.keys() == cached.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], cached[name]), name
