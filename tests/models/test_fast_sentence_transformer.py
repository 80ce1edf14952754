"""The padding-free fast path (FastTransformer + varlen attention) against ST's padded forward.

For every family that packs, the packed forward must give the padded forward's sentence embeddings
and LoRA gradients; saved folders must be plain ST folders; ST's own trainer must run on it.
"""
from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from embtune import FastSentenceTransformer
from embtune.losses import InfoNCELoss
from embtune.models import varlen_attention
from embtune.models.fast_transformer import ST_TRANSFORMER_TYPE, FastTransformer
from embtune.models.packing import contiguous_lengths, pack, unpack
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Transformer
from tiny_models import build_tiny_hf, randomize_lora_b

PACKED_FAMILIES = ("bert", "distilbert", "xlm-roberta", "modernbert", "qwen3")
# Lengths from 1 word to past the tiny models' 64-token limit, so batches mix heavy padding and
# truncation, and ModernBERT's sliding window (8 tokens each side here) cuts through long texts.
TEXTS = ["x", "Protein folding is driven by hydrophobic collapse.",
         "Mitosis splits one cell into two daughter cells, each with a full set of chromosomes. " * 4,
         "Is coffee bad for the heart?", "OCA2 variants largely set eye colour in humans " * 2]
QUERIES = ["what makes proteins fold", "how do cells divide", "is coffee bad for the heart",
           "which gene controls eye colour"]
DOCS = ["Protein folding is driven by hydrophobic collapse of nonpolar residues in water. " * 2,
        "Mitosis splits one cell into two.", "Moderate coffee intake shows no cardiac harm.",
        "OCA2 variants largely set eye colour."]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-fast")
    return {fam: build_tiny_hf(root / fam, fam) for fam in (*PACKED_FAMILIES, "mpnet")}


def _load(folder, packing: bool, dtype=torch.float32, lora: bool = False, attention: str = "auto"):
    model = FastSentenceTransformer.from_pretrained(folder, dtype=dtype, packing=packing, attention=attention,
                                                    max_seq_length=64)
    if lora:
        model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8, random_state=1)
        randomize_lora_b(model)
    return model


def _record_packed_calls(model) -> list[bool]:
    """Record, for every forward of the HF model, whether its token embeddings got one packed row.

    (The tests only use batches of several texts, so one row means the batch was packed.)
    """
    calls: list[bool] = []
    embeddings = model[0].auto_model.get_input_embeddings()
    embeddings.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0] == 1))
    return calls


def _features(model, texts):
    return model.preprocess(texts)


def _embed(model, texts):
    """Sentence embeddings and token embeddings of one batch, through the full ST module stack."""
    model.eval()
    with torch.no_grad():
        out = model(_features(model, texts))
    return out["sentence_embedding"], out["token_embeddings"], out["attention_mask"]


@pytest.mark.parametrize("family", PACKED_FAMILIES)
def test_packed_embeddings_equal_padded_fp32(family, tiny_dirs):
    fast = _load(tiny_dirs[family], packing=True)
    padded = _load(tiny_dirs[family], packing=False)
    assert isinstance(fast[0], FastTransformer) and fast[0].packing
    assert not padded[0].packing
    calls, ref_calls = _record_packed_calls(fast), _record_packed_calls(padded)
    emb, tokens, mask = _embed(fast, TEXTS)
    ref, ref_tokens, _ = _embed(padded, TEXTS)
    assert calls == [True] and ref_calls == [False]
    assert (mask == 0).any(), "the batch must contain padding"
    assert torch.count_nonzero(tokens[mask == 0]) == 0  # padding positions are never computed
    torch.testing.assert_close(tokens[mask == 1], ref_tokens[mask == 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb, ref, rtol=1e-5, atol=1e-5)
    assert F.cosine_similarity(emb, ref).min() >= 0.99999


@pytest.mark.parametrize("family", ["bert", "qwen3"])
def test_packed_embeddings_bf16_within_tolerance(family, tiny_dirs):
    # bf16 has 8 mantissa bits: the packed and padded paths round differently (other matmul shapes),
    # so they agree to bf16 precision, not bit for bit. Tolerance: cosine >= 0.999 per text.
    fast = _load(tiny_dirs[family], packing=True, dtype=torch.bfloat16)
    padded = _load(tiny_dirs[family], packing=False, dtype=torch.bfloat16)
    reference = _load(tiny_dirs[family], packing=False)  # fp32
    emb, ref, exact = _embed(fast, TEXTS)[0], _embed(padded, TEXTS)[0], _embed(reference, TEXTS)[0]
    assert emb.dtype == torch.bfloat16
    assert F.cosine_similarity(emb.float(), ref.float()).min() >= 0.999
    assert F.cosine_similarity(emb.float(), exact).min() >= 0.999


@pytest.mark.parametrize("attention", varlen_attention.VARIANTS)
@pytest.mark.parametrize("family", ["bert", "modernbert", "qwen3"])
def test_attention_variants_equal_padded(attention, family, tiny_dirs):
    fast = _load(tiny_dirs[family], packing=True, attention=attention)
    padded = _load(tiny_dirs[family], packing=False)
    assert fast[0].attention == attention
    torch.testing.assert_close(_embed(fast, TEXTS)[0], _embed(padded, TEXTS)[0], rtol=1e-5, atol=1e-5)
    # every text cut at max_seq_length: equal lengths, the packed row is attended as one [n, L] block
    long_texts = [f"{word} " * 80 for word in ("cell", "gene", "protein")]
    emb, _, mask = _embed(fast, long_texts)
    assert bool(mask.all())
    torch.testing.assert_close(emb, _embed(padded, long_texts)[0], rtol=1e-5, atol=1e-5)


def _lora_grads(model):
    model.eval()  # dropout off (the tiny BERTs have 0.1), so both paths compute the same function
    loss = InfoNCELoss(model, scale=20.0)([_features(model, QUERIES), _features(model, DOCS)])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("family", PACKED_FAMILIES)
def test_lora_gradients_equal_padded(family, tiny_dirs):
    fast = _load(tiny_dirs[family], packing=True, lora=True)
    padded = _load(tiny_dirs[family], packing=False, lora=True)
    calls = _record_packed_calls(fast)
    loss, grads = _lora_grads(fast)
    ref_loss, ref_grads = _lora_grads(padded)
    assert calls == [True, True]
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    assert all("lora_" in name for name in grads)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        assert grad.abs().max() > 0, name
        # fp32 sums over packed vs padded rows differ in order: tolerance relative to the gradient's scale
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_gradcache_and_reused_features_stay_packed(tiny_dirs):
    from embtune.losses import CachedInfoNCELoss

    fast = _load(tiny_dirs["bert"], packing=True, lora=True)
    loss, grads = _lora_grads(fast)
    calls = _record_packed_calls(fast)
    features = [_features(fast, QUERIES), _features(fast, DOCS)]
    fast.eval()
    cached = CachedInfoNCELoss(fast, scale=20.0, mini_batch_size=2)(features)
    cached.backward()
    # GradCache embeds every mini-batch twice from the same feature dicts, which by then also hold
    # the outputs of the first pass: both passes must still be packed.
    assert len(calls) == 8 and all(calls)
    torch.testing.assert_close(cached.detach(), loss, rtol=1e-5, atol=1e-6)
    for name, param in fast.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packing_stops_when_the_attention_is_switched_away(tiny_dirs):
    fast = _load(tiny_dirs["bert"], packing=True)
    padded = _load(tiny_dirs["bert"], packing=False)
    fast[0].auto_model.set_attn_implementation("sdpa")  # e.g. a user's own choice after loading
    calls = _record_packed_calls(fast)
    torch.testing.assert_close(_embed(fast, TEXTS)[0], _embed(padded, TEXTS)[0], rtol=1e-5, atol=1e-5)
    assert calls == [False]


def test_mpnet_falls_back_to_padded_with_a_log_line(tiny_dirs, caplog):
    with caplog.at_level(logging.INFO, logger="embtune"):
        model = _load(tiny_dirs["mpnet"], packing=True)
    assert isinstance(model[0], FastTransformer) and not model[0].packing
    assert "packing is off" in caplog.text and "MPNet" in caplog.text
    plain = SentenceTransformer(str(tiny_dirs["mpnet"]), device="cpu")  # mean pooling, no Normalize
    plain.max_seq_length = 64
    expected = torch.as_tensor(plain.encode(TEXTS, normalize_embeddings=True))
    torch.testing.assert_close(torch.as_tensor(model.encode(TEXTS)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "xlm-roberta", "qwen3"])
def test_saved_folders_are_plain_st_folders(family, tiny_dirs, tmp_path):
    model = _load(tiny_dirs[family], packing=True, lora=True)
    live = torch.as_tensor(model.encode(TEXTS))
    model.save_pretrained(tmp_path / "adapter")
    model.save_pretrained_merged(tmp_path / "merged")
    for folder in ("adapter", "merged"):
        modules = json.loads((tmp_path / folder / "modules.json").read_text())
        assert modules[0]["type"] == ST_TRANSFORMER_TYPE
        assert "embtune" not in (tmp_path / folder / "modules.json").read_text()
    plain = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    assert type(plain[0]) is Transformer and type(plain[1]).__name__ == "Pooling"
    torch.testing.assert_close(torch.as_tensor(plain.encode(TEXTS)), live, rtol=1e-5, atol=1e-5)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert varlen_attention.ATTENTION_NAME not in json.dumps(config)
    reloaded = FastSentenceTransformer.from_pretrained(tmp_path / "adapter", dtype=torch.float32,
                                                       for_inference=True)
    assert isinstance(reloaded[0], FastTransformer) and reloaded[0].packing
    torch.testing.assert_close(torch.as_tensor(reloaded.encode(TEXTS)), live, rtol=1e-5, atol=1e-5)


def test_st_trainer_runs_on_a_fast_model(tiny_dirs, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = _load(tiny_dirs["bert"], packing=True, lora=True)
    packed_calls = _record_packed_calls(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    data = Dataset.from_dict({"anchor": QUERIES * 4, "positive": DOCS * 4})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "st-run"), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-3,
        use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model))
    trainer.train()
    assert packed_calls and all(packed_calls)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert len(changed) == len(before)
    model.save_pretrained(tmp_path / "after-trainer")
    modules = json.loads((tmp_path / "after-trainer" / "modules.json").read_text())
    assert modules[0]["type"] == ST_TRANSFORMER_TYPE


def test_pack_unpack_round_trip_and_positions():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]])
    mask = (ids != 0).long()
    mask[2] = 1
    packed = pack(ids, mask, token_type_ids=torch.zeros_like(ids), position_offset=2)
    assert packed.lengths == [3, 2, 4] and packed.cu_seqlens.tolist() == [0, 3, 5, 9]
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert packed.position_ids.tolist() == [[2, 3, 4, 2, 3, 2, 3, 4, 5]]
    hidden = torch.arange(9.0).view(1, 9, 1).repeat(1, 1, 2)
    padded = unpack(hidden, packed)
    assert padded.shape == (3, 4, 2)
    assert padded[:, :, 0].tolist() == [[0, 1, 2, 0], [3, 4, 0, 0], [5, 6, 7, 8]]


def test_pack_handles_left_padding_and_refuses_holes():
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert contiguous_lengths(left).tolist() == [2, 3]
    packed = pack(torch.tensor([[0, 4, 5], [6, 7, 8]]), left)
    assert packed.input_ids.tolist() == [[4, 5, 6, 7, 8]] and packed.position_ids.tolist() == [[0, 1, 0, 1, 2]]
    assert pack(torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 0, 1], [1, 1, 1]])) is None
    assert pack(torch.ones(2, 3, dtype=torch.long), torch.tensor([[0, 0, 0], [1, 1, 1]])) is None


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, 3), (True, 3)])
def test_varlen_attention_matches_masked_dense_attention(causal, window):
    torch.manual_seed(0)
    lengths, heads, kv_heads, dim = [5, 1, 7, 6], 4, 2, 8
    total = sum(lengths)
    q = torch.randn(1, heads, total, dim, dtype=torch.float64)
    k = torch.randn(1, kv_heads, total, dim, dtype=torch.float64)
    v = torch.randn(1, kv_heads, total, dim, dtype=torch.float64)
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    start = torch.cumsum(torch.tensor([0] + lengths[:-1]), 0)[seq]
    pos = torch.arange(total) - start
    allowed = seq[:, None] == seq[None, :]
    if causal:
        allowed &= pos[:, None] >= pos[None, :]
    if window is not None:
        allowed &= (pos[:, None] - pos[None, :]).abs() < window
    scores = q @ k.repeat_interleave(2, dim=1).transpose(-1, -2) * dim ** -0.5
    expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v.repeat_interleave(2, dim=1)
    cu = torch.tensor([0, 5, 6, 13, 19], dtype=torch.int32)

    class Attn(torch.nn.Module):
        is_causal = causal

    for variant in varlen_attention.VARIANTS:
        plan = varlen_attention.VarlenPlan.from_cu_seqlens(cu, variant)
        out, _ = varlen_attention.varlen_attention(Attn(), q, k, v, None, sliding_window=window,
                                                   cu_seq_lens_q=cu, embtune_plan=plan)
        torch.testing.assert_close(out, expected.transpose(1, 2), msg=variant)


def test_fast_pooling_saves_as_st_pooling(tiny_dirs, tmp_path):
    from embtune.models.pooling import ST_POOLING_TYPE, FastPooling, use_fast_pooling

    model = _load(tiny_dirs["bert"], packing=True, lora=True)
    assert use_fast_pooling(model) == 1
    live = torch.as_tensor(model.encode(TEXTS))
    model.save_pretrained_merged(tmp_path / "merged")
    assert type(model[1]) is FastPooling  # put back after the save
    modules = json.loads((tmp_path / "merged" / "modules.json").read_text())
    assert (modules[1]["path"], modules[1]["type"]) == ("1_Pooling", ST_POOLING_TYPE)
    plain = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    assert type(plain[1]).__name__ == "Pooling"
    torch.testing.assert_close(torch.as_tensor(plain.encode(TEXTS)), live, rtol=1e-5, atol=1e-5)
