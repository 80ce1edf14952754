"""FastLoraLinear against PEFT's LoRA Linear: "exact" is bit-identical, "bf16" within bf16 rounding."""
from __future__ import annotations

import importlib

import pytest
import torch
from embtune.models.fast_lora import FastLoraLinear, set_lora_compute, use_fast_lora
from peft import LoraConfig, inject_adapter_in_model


def _layers(base_dtype, fan_in=48, fan_out=40, dropout=0.0):
    """The same LoRA layer twice: PEFT's class and FastLoraLinear (fp32 adapters, random B)."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(fan_in, fan_out)).to(base_dtype)
    layers = []
    for fast in (False, True):
        config = LoraConfig(r=8, lora_alpha=24, lora_dropout=dropout, target_modules=["0"])  # scaling 3
        if fast:
            use_fast_lora(config)
        model = inject_adapter_in_model(config, torch.nn.Sequential(torch.nn.Linear(fan_in, fan_out)).to(base_dtype))
        model[0].base_layer.weight.data = base[0].weight.data.clone()
        model[0].base_layer.bias.data = base[0].bias.data.clone()
        layers.append(model[0])
    peft_layer, fast_layer = layers
    with torch.no_grad():
        for name in ("lora_A", "lora_B"):
            weight = torch.randn(getattr(peft_layer, name)["default"].weight.shape) * 0.1
            for layer in layers:
                getattr(layer, name)["default"].weight.data = weight.clone()
    for layer in layers:
        for name, param in layer.named_parameters():
            param.requires_grad_("lora_" in name)
    assert type(peft_layer).__name__ == "Linear" and isinstance(fast_layer, FastLoraLinear)
    return peft_layer, fast_layer


def _run(layer, x, grad):
    x = x.detach().requires_grad_()
    out = layer(x)
    out.backward(grad)
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
    layer.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("base_dtype", [torch.bfloat16, torch.float32])
def test_exact_mode_is_bit_identical_to_peft(base_dtype):
    peft_layer, fast_layer = _layers(base_dtype)
    assert fast_layer.embtune_compute == "bf16"  # the default; "exact" is asked for
    assert set_lora_compute(torch.nn.Sequential(fast_layer), "exact") == 1
    x = torch.randn(3, 7, 48).to(base_dtype)
    grad = torch.randn(3, 7, 40).to(base_dtype)
    out, gx, grads = _run(fast_layer, x, grad)
    ref_out, ref_gx, ref_grads = _run(peft_layer, x, grad)
    assert out.dtype == base_dtype and torch.equal(out, ref_out)
    assert torch.equal(gx, ref_gx)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2
    for name in grads:
        assert grads[name].dtype == torch.float32 and torch.equal(grads[name], ref_grads[name]), name


def test_bf16_mode_within_bf16_rounding_of_peft():
    peft_layer, fast_layer = _layers(torch.bfloat16)
    assert set_lora_compute(torch.nn.Sequential(fast_layer), "bf16") == 1
    x = torch.randn(64, 48).to(torch.bfloat16)
    grad = torch.randn(64, 40).to(torch.bfloat16)
    out, gx, grads = _run(fast_layer, x, grad)
    ref_out, ref_gx, ref_grads = _run(peft_layer, x, grad)
    assert not torch.equal(out, ref_out)  # really a different computation
    scale = ref_out.float().abs().max()
    assert (out.float() - ref_out.float()).abs().max() <= 2 ** -7 * scale
    assert (gx.float() - ref_gx.float()).abs().max() <= 2 ** -7 * ref_gx.float().abs().max()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=2e-2, atol=2e-2 * ref_grads[name].abs().max())


def test_non_plain_cases_use_peft_forward():
    peft_layer, fast_layer = _layers(torch.bfloat16, dropout=0.3)
    fast_layer.train()
    peft_layer.train()
    x = torch.randn(4, 48).to(torch.bfloat16)
    grad = torch.randn(4, 40).to(torch.bfloat16)
    torch.manual_seed(1)
    out = _run(fast_layer, x, grad)
    torch.manual_seed(1)
    ref = _run(peft_layer, x, grad)
    assert torch.equal(out[0], ref[0])  # same dropout draw: PEFT's own forward ran
    fast_layer.eval()
    peft_layer.eval()
    fast_layer.merge()
    peft_layer.merge()
    assert torch.equal(fast_layer(x), peft_layer(x))  # merged: the base layer alone


def _qlora_grads(model, compute: str):
    """Sentence embeddings and LoRA gradients of one InfoNCE step with every LoRA layer in ``compute``."""
    from embtune.losses import InfoNCELoss

    set_lora_compute(model.hf_model, compute)
    model.eval()  # no dropout: both computations see the same function
    texts = (["what makes proteins fold", "is coffee bad for the heart"],
             ["Hydrophobic collapse drives protein folding.", "Moderate coffee intake shows no cardiac harm."])
    loss = InfoNCELoss(model, scale=20.0)([model.preprocess(list(t)) for t in texts])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qlora_layers_take_the_fused_nf4_path_and_match_peft(dtype, tmp_path):
    from embtune import FastSentenceTransformer
    from embtune.models.fast_lora_4bit import FastLoraLinear4bit
    from tiny_models import build_tiny_hf, randomize_lora_b

    reference = importlib.import_module("embtune_kernels.lora_linear.reference")

    model = FastSentenceTransformer.from_pretrained(build_tiny_hf(tmp_path / "bert", "bert"), load_in_4bit=True,
                                                    dtype=dtype)
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8, random_state=1)
    layers = [m for m in model.hf_model.modules() if isinstance(m, FastLoraLinear4bit)]
    assert layers and all(m.embtune_compute == "bf16" for m in layers)
    randomize_lora_b(model)
    calls = []
    original = reference.dequantize
    reference.dequantize = lambda w: calls.append(1) or original(w)
    try:
        loss, grads = _qlora_grads(model, "bf16")
    finally:
        reference.dequantize = original
    assert len(calls) >= 2 * len(layers)  # every layer dequantized in forward and again in backward
    ref_loss, ref_grads = _qlora_grads(model, "peft")
    assert grads.keys() == ref_grads.keys() and all("lora_" in n for n in grads)
    # bf16: the fused path and PEFT's round at different points. Measured (seeds 1-3): loss within 0.0015,
    # the worst gradient element within 0.041 of the largest; the bounds leave 3x / 2.5x of that
    # (they were 3e-2 and 0.3, loose enough to pass a gradient off by a third).
    loss_tol, grad_tol = (1e-5, 1e-4) if dtype == torch.float32 else (5e-3, 0.1)
    torch.testing.assert_close(loss, ref_loss, rtol=loss_tol, atol=loss_tol)
    for name in grads:
        assert grads[name].dtype == torch.float32 and grads[name].abs().max() > 0, name
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=grad_tol,
                                   atol=grad_tol * ref_grads[name].abs().max().item(), msg=name)
