"""The kernels' callers: InfoNCE loss, FastPooling, KernelLayerNorm in FastTransformer.

For each caller: (a) with the Triton backend forced (``use_backend("triton")``; on a CPU-only machine the
kernels run in Triton's interpreter, see conftest.py) it gives the loss / embeddings and gradients of
the PyTorch path (``use_backend("torch")``) within ``tolerances.py``, and the kernel was really called;
(b) in mode "auto" on CPU it never calls the kernel and equals the pre-kernel code bit for bit;
(c) on CUDA (``gpu``), mode "auto" calls the kernel.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_harness import DEVICE, check_triton_vs_reference, randn
from sentence_transformers.sentence_transformer.modules import Pooling
from tiny_models import build_tiny_hf
from tolerances import assert_close

import embtune_kernels
from embtune_kernels import dispatch, use_backend


class Spy:
    """Wraps an ``embtune_kernels`` function (patched on the module) and counts calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        inner = getattr(embtune_kernels, name)

        def wrapped(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        monkeypatch.setattr(embtune_kernels, name, wrapped)


# ---------------------------------------------------------------- InfoNCE loss


def _embeddings(batch, hard, dim, seed=0):
    anchors = randn(batch, dim, seed=seed)
    columns = [0.3 * anchors + randn(batch, dim, seed=seed + 1)]  # positives resemble anchors: loss O(1)
    columns += [randn(batch, dim, seed=seed + 2 + i) for i in range(hard)]
    return anchors, columns


def _loss_fn(loss):
    def run(anchors, positives, *negatives):
        return loss.compute_loss_from_embeddings([anchors, positives, *negatives])

    return run


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("symmetric", [False, True], ids=["one_way", "symmetric"])
@pytest.mark.parametrize("hard", [0, 2])
def test_infonce_loss_triton_matches_torch(monkeypatch, hard, symmetric):
    from embtune.losses import CachedInfoNCELoss, InfoNCELoss

    anchors, columns = _embeddings(5, hard, 24, seed=hard)
    names = ["anchors", "positives"] + [f"neg{i}" for i in range(hard)]
    inputs = dict(zip(names, [anchors, *columns]))
    for loss in (InfoNCELoss(torch.nn.Identity(), scale=20.0, symmetric=symmetric),
                 CachedInfoNCELoss(torch.nn.Identity(), scale=30.0, symmetric=symmetric)):
        spy = Spy(monkeypatch, "info_nce")
        run = _loss_fn(loss)
        check_triton_vs_reference(lambda **kw: run(*kw.values()), inputs, names, torch.float32, seed=3)
        assert spy.calls == 1  # the Triton run took the kernel, the torch run did not


def test_infonce_uses_torch_for_row_chunks_and_on_cpu(monkeypatch):
    from embtune.losses.infonce import infonce_from_embeddings, uses_infonce_kernel

    anchors, (positives,) = _embeddings(4, 0, 16)
    assert not uses_infonce_kernel(anchors, positives, rows=(0, 2))
    if DEVICE == "cpu":
        assert dispatch.choose(anchors, positives) == "torch"
        assert not uses_infonce_kernel(anchors, positives)
        spy = Spy(monkeypatch, "info_nce")
        got = infonce_from_embeddings(anchors, positives, 20.0, symmetric=True)
        a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
        target = torch.arange(4)
        want = (F.cross_entropy(a @ p.T * 20.0, target, reduction="none")
                + F.cross_entropy(p @ a.T * 20.0, target, reduction="none")) / 2
        assert torch.equal(got, want.sum() / 4) and spy.calls == 0


# ---------------------------------------------------------------- tiny model: pooling + LayerNorm


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_hf(tmp_path_factory.mktemp("tiny-kernels") / "bert", "bert")


def _model(folder, pooling, packing=True):
    from embtune import FastSentenceTransformer
    from embtune.models.pooling import use_fast_pooling

    model = FastSentenceTransformer.from_pretrained(folder, dtype=torch.float32, packing=packing,
                                                    full_finetuning=True, pooling=pooling, device=DEVICE)
    assert use_fast_pooling(model) == 1
    return model


TEXTS = ["x", "Protein folding is driven by hydrophobic collapse.", "Is coffee bad for the heart?"]


def _forward_backward(model, texts, seed=5):
    """Sentence embeddings and the gradients of every parameter for a seeded cotangent."""
    model.zero_grad(set_to_none=True)
    features = model.preprocess(texts)
    features = {k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
    emb = model(features)["sentence_embedding"]
    cot = randn(*emb.shape, seed=seed)
    (emb * cot).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return emb.detach(), grads


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "lasttoken"])
def test_model_forward_triton_matches_torch(monkeypatch, tiny_bert, pooling, packing):
    """Embeddings and every parameter gradient of a tiny BERT (LayerNorm + pooling kernels when Triton)."""
    model = _model(tiny_bert, pooling, packing)
    model.eval()  # no dropout: both runs must see the same function
    pool_spy, norm_spy = Spy(monkeypatch, "pool_spans"), Spy(monkeypatch, "layer_norm")
    with use_backend("torch"):
        ref_emb, ref_grads = _forward_backward(model, TEXTS)
    assert pool_spy.calls == norm_spy.calls == 0
    with use_backend("triton"):
        emb, grads = _forward_backward(model, TEXTS)
    assert pool_spy.calls == 1
    assert norm_spy.calls == 5  # embeddings LN + 2 per layer, 2 layers
    assert_close(emb, ref_emb, "triton_vs_reference", torch.float32, "sentence_embedding")
    assert grads.keys() == ref_grads.keys()
    largest = max(g.abs().max().item() for g in ref_grads.values())
    for name in ref_grads:
        if name.endswith("attention.self.key.bias"):  # softmax ignores a key bias: the true gradient is 0
            assert grads[name].abs().max() <= 1e-6 * largest, name
            continue
        assert_close(grads[name], ref_grads[name], "triton_vs_reference", torch.float32, f"grad[{name}]")


@pytest.mark.skipif(DEVICE != "cpu", reason="checks the CPU path")
def test_model_on_cpu_in_auto_mode_is_the_plain_torch_path(monkeypatch, tiny_bert):
    """Mode auto on CPU: no kernel call, and bit-identical to nn.LayerNorm + ST's Pooling."""
    from embtune.models.fast_transformer import KernelLayerNorm, use_kernel_layer_norm

    model = _model(tiny_bert, "mean")
    model.eval()
    assert sum(isinstance(m, KernelLayerNorm) for m in model.modules()) == 5
    pool_spy, norm_spy = Spy(monkeypatch, "pool_spans"), Spy(monkeypatch, "layer_norm")
    with use_backend("auto"):
        emb, grads = _forward_backward(model, TEXTS)
    assert pool_spy.calls == norm_spy.calls == 0
    plain = _model(tiny_bert, "mean")
    plain.eval()
    assert use_kernel_layer_norm(plain, enabled=False) == 5
    plain._modules["1"] = Pooling.__new__(Pooling)
    plain._modules["1"].__dict__.update(model[1].__dict__)
    assert type(plain[1]) is Pooling
    assert not any(isinstance(m, KernelLayerNorm) for m in plain.modules())
    ref_emb, ref_grads = _forward_backward(plain, TEXTS)
    assert torch.equal(emb, ref_emb)
    assert all(torch.equal(grads[n], ref_grads[n]) for n in ref_grads) and grads.keys() == ref_grads.keys()


def test_fast_pooling_falls_back_where_the_kernel_does_not_apply(monkeypatch, tiny_bert):
    """Masks with holes, or prompt exclusion, take ST's forward even when Triton is forced."""
    from embtune.models.pooling import padded_spans

    assert padded_spans(torch.tensor([[1, 0, 1]])) is None
    starts, ends = padded_spans(torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1]]))
    assert starts.tolist() == [0, 4, 6] and ends.tolist() == [2, 6, 9]
    if not dispatch.has_triton():
        pytest.skip("triton is not installed")
    model = _model(tiny_bert, "mean")
    spy = Spy(monkeypatch, "pool_spans")
    tokens = randn(2, 3, 64, seed=1)
    with use_backend("triton"):
        out = model[1]({"token_embeddings": tokens, "attention_mask": torch.tensor([[1, 0, 1], [1, 1, 1]],
                                                                                   device=DEVICE)})
    assert spy.calls == 0
    assert torch.allclose(out["sentence_embedding"][0], tokens[0, [0, 2]].mean(0))


# ---------------------------------------------------------------- CUDA, mode auto


@pytest.mark.gpu
def test_gpu_auto_mode_takes_the_kernels(monkeypatch, tiny_bert):
    from embtune.losses import InfoNCELoss

    model = _model(tiny_bert, "mean").to(torch.bfloat16)
    model.eval()
    spies = {name: Spy(monkeypatch, name) for name in ("pool_spans", "layer_norm", "info_nce")}
    with use_backend("auto"):
        emb, _ = _forward_backward(model, TEXTS)
        anchors, columns = _embeddings(8, 1, 64)
        loss = InfoNCELoss(model).compute_loss_from_embeddings([anchors.bfloat16(), *columns])
    assert all(spy.calls > 0 for spy in spies.values()), {k: s.calls for k, s in spies.items()}
    assert torch.isfinite(emb).all() and torch.isfinite(loss)
