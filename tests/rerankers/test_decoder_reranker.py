"""Decoder rerankers (Qwen3-Reranker style): the score is the softmax of the "yes"/"no" logits at the
last position of the model card's prompt, and the model trains with LoRA and QLoRA.

The reference is computed from the Hugging Face causal LM directly, one pair at a time without
padding, on the prompt text written out in `embtune.rerankers.templates.reference_prompt`.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from tiny_rerankers import TRAIN_ROWS
from sentence_transformers import CrossEncoder

from embtune.rerankers import add_lora, load_reranker
from embtune.rerankers.scoring import score_pairs
from embtune.rerankers.templates import reference_prompt
from embtune.training import TrainConfig, train

# Short texts: the tiny tokenizer (600 tokens) spends ~200 of its 256 positions on the template.
PAIRS = [("what does vacuum do", "VACUUM rebuilds the file."),
         ("is sqlite serverless", "No server."),
         ("how big is it", "281 terabytes.")]


def _reference_p_yes(folder, query, document, instruction=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(reference_prompt(query, document, instruction), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        last = lm(input_ids=ids).logits[0, -1]
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    return torch.softmax(torch.stack([last[yes], last[no]]), dim=0)[0].item()


@pytest.mark.parametrize("instruction", [None, "Find the passage that settles the claim"])
def test_score_is_softmax_of_yes_no_logits_on_the_model_card_prompt(tiny_decoder_backbone, instruction):
    model = load_reranker(tiny_decoder_backbone, device="cpu", dtype="fp32", instruction=instruction,
                          for_inference=True)
    assert isinstance(model, CrossEncoder)
    # the rendered input is the model card's prompt, token for token (left padding removed)
    features = model.preprocess(PAIRS[:1], prompt=model.prompts[model.default_prompt_name])
    ids = features["input_ids"][0][features["attention_mask"][0].bool()]
    assert model.tokenizer.decode(ids) == reference_prompt(*PAIRS[0], instruction)
    p_yes = torch.sigmoid(torch.from_numpy(score_pairs(model, PAIRS, batch_size=3))).tolist()
    expected = [_reference_p_yes(tiny_decoder_backbone, q, d, instruction) for q, d in PAIRS]
    assert p_yes == pytest.approx(expected, abs=1e-5)
    assert len(set(round(p, 6) for p in expected)) == len(expected)  # the pairs differ: a real check


def _train_and_check(model, tmp_path):
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n for n in before)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=3, learning_rate=1e-2,
                         logging_steps=1, show_progress=False)
    result = train(model, TRAIN_ROWS, loss="listwise", config=config)
    assert len(result.loss_history) == 3 and all(torch.isfinite(torch.tensor(v)) for _, v in result.loss_history)
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved, "no LoRA weight changed"
    return result


def test_decoder_reranker_trains_with_lora(tmp_path, tiny_decoder_backbone):
    model = load_reranker(tiny_decoder_backbone, device="cpu", dtype="fp32")
    add_lora(model, r=4, lora_alpha=8)
    lm_head = model[0].model.lm_head.weight.detach().clone()
    _train_and_check(model, tmp_path)
    assert torch.equal(model[0].model.lm_head.weight, lm_head)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_decoder_reranker_trains_with_qlora(tmp_path, tiny_decoder_backbone):
    model = load_reranker(tiny_decoder_backbone, device="cpu", dtype="fp32", load_in_4bit=True)
    assert type(model[0].model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    add_lora(model, r=4, lora_alpha=8)
    _train_and_check(model, tmp_path)
