"""The model families users bring, as tiny random-init sentence-transformers folders, against plain ST.

For each family (`tiny_models.ST_FAMILIES`: all-MiniLM, e5, bge, mxbai, bge-m3, gte-modernbert,
Qwen3-Embedding, EmbeddingGemma): embtune loads the folder with its pooling, prompts, modules,
padding and attention; its embeddings equal plain `SentenceTransformer(folder)`'s, which runs
transformers' own masks; LoRA training changes them; the merged save reloads in plain ST equal to
the live tuned model, with the frozen Dense heads written exactly as loaded.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tiny_models import ST_FAMILIES, build_family_st, build_tiny_hf, train_steps

from embtune import FastSentenceTransformer
from embtune.models.loading import pooling_mode_of

# Long enough to cross EmbeddingGemma's tiny sliding window (4 tokens each side) and ModernBERT's.
TEXTS = ["x", "Protein folding is driven by hydrophobic collapse of nonpolar residues in water.",
         "Mitosis splits one cell into two daughter cells, each with a full set of chromosomes. " * 2]
TOL = 2e-5


@pytest.fixture(scope="module")
def st_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: build_family_st(root / name, name) for name in ST_FAMILIES}


def _max_diff(a, b) -> float:
    return (torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max().item()


def _cos(a, b) -> float:
    return F.cosine_similarity(torch.as_tensor(a).float(), torch.as_tensor(b).float()).min().item()


def _causal_flags(model) -> set[bool]:
    return {bool(m.is_causal) for name, m in model[0].auto_model.named_modules()
            if name.endswith(("self_attn", "attention.self", "attn")) and hasattr(m, "is_causal")}


def _load(folder, **kwargs):
    return FastSentenceTransformer.from_pretrained(folder, dtype=torch.float32, device="cpu", **kwargs)


@pytest.mark.parametrize("name", list(ST_FAMILIES))
def test_loads_with_the_folders_settings_and_equals_plain_st(name, st_dirs):
    spec = ST_FAMILIES[name]
    ref = SentenceTransformer(str(st_dirs[name]), device="cpu")
    fast = _load(st_dirs[name])
    family = fast.family
    causal = name == "qwen3-embedding"
    assert family.pooling == pooling_mode_of(fast) == spec["pooling"]
    assert family.attention == ("causal" if causal else "bidirectional")
    assert _causal_flags(fast) == {causal}
    assert fast.tokenizer.padding_side == spec.get("padding_side", "right")
    assert family.append_eos == bool(spec.get("append_eos"))
    assert [type(m).__name__ for m in fast][1:] == [type(m).__name__ for m in ref][1:]
    assert fast.prompts == ref.prompts and {k: v for k, v in fast.prompts.items() if v} == {
        k: v for k, v in (spec.get("prompts") or {}).items() if v}
    assert fast[0].packing, "every family here runs the packed path"
    assert fast.tokenizer(TEXTS[1])["input_ids"] == ref.tokenizer(TEXTS[1])["input_ids"]
    padded = _load(st_dirs[name], packing=False)
    for encode in ("encode_query", "encode_document", "encode"):
        want = getattr(ref, encode)(TEXTS)
        assert _max_diff(getattr(fast, encode)(TEXTS), want) < TOL, (encode, "packed")
        assert _max_diff(getattr(padded, encode)(TEXTS), want) < TOL, (encode, "padded")
    query_prompt = (spec.get("prompts") or {}).get("query")
    if query_prompt:  # the folder's query prompt is what encode_query puts before the text
        assert _max_diff(fast.encode_query(TEXTS), fast.encode([query_prompt + t for t in TEXTS])) < TOL


@pytest.mark.parametrize("name", list(ST_FAMILIES))
def test_lora_trains_and_merged_folder_reloads_in_plain_st(name, st_dirs, tmp_path):
    fast = FastSentenceTransformer.get_peft_model(_load(st_dirs[name]), r=4, lora_alpha=8)
    trainable = [n for n, p in fast.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), "LoRA trains adapters only; Dense heads stay frozen"
    untuned = fast.encode_query(TEXTS)
    init = {n: p.detach().clone() for n, p in fast.named_parameters() if p.requires_grad}
    # Random tiny encoders pooling CLS start at the uniform InfoNCE loss (ln 4: their CLS vectors
    # nearly coincide), so a 3-step loss drop is not asserted; every adapter matrix must move
    # (A moves only once B is non-zero: gradients reach every layer through Pooling and Dense).
    before, after = train_steps(fast, steps=3)
    assert torch.isfinite(torch.tensor([before, after])).all() and after < before + 1e-3
    assert all(not torch.equal(init[n], p) for n, p in fast.named_parameters() if p.requires_grad)
    live = fast.encode_query(TEXTS)
    assert _max_diff(live, untuned) > 10 * TOL, "training must change the embeddings"

    fast.save_pretrained_merged(tmp_path / "merged")
    plain = SentenceTransformer(str(tmp_path / "merged"), device="cpu")
    assert [type(m).__name__ for m in plain] == ["Transformer"] + [type(m).__name__ for m in fast][1:]
    assert plain.prompts == fast.prompts
    assert _max_diff(plain.encode_query(TEXTS), live) < TOL and _cos(plain.encode_query(TEXTS), live) >= 0.9999
    for dense in (p for p in st_dirs[name].iterdir() if p.name.endswith("_Dense")):
        saved = load_file(str(tmp_path / "merged" / dense.name / "model.safetensors"))
        assert all(torch.equal(saved[k], v) for k, v in load_file(str(dense / "model.safetensors")).items())


def test_embeddinggemma_needs_bidirectional_windowed_attention(st_dirs):
    """The parity above is not luck: a causal or window-less attention gives other embeddings."""
    ref = SentenceTransformer(str(st_dirs["embeddinggemma"]), device="cpu").encode_query(TEXTS)
    for broken in ("causal", "no window"):
        fast = _load(st_dirs["embeddinggemma"])
        for module in fast[0].auto_model.modules():
            if type(module).__name__ == "Gemma3Attention":
                if broken == "causal":
                    module.is_causal = True
                else:
                    module.sliding_window = None
        assert _max_diff(fast.encode_query(TEXTS), ref) > 1e-3, broken


def test_plain_hf_embeddinggemma_folder_is_encoder_style(tmp_path):
    folder = build_tiny_hf(tmp_path / "gemma", "gemma3_text")
    fast = _load(folder)
    assert (fast.family.kind, fast.family.pooling, fast.family.append_eos) == ("encoder", "mean", False)
    assert fast.tokenizer.padding_side == "right" and not any(fast.prompts.values())
    assert [type(m).__name__ for m in fast][1:] == ["Pooling", "Normalize"]
    transformer = Transformer(str(folder))
    ref = SentenceTransformer(modules=[transformer, Pooling(64, "mean"), Normalize()], device="cpu")
    assert fast.tokenizer("a b")["input_ids"] == ref.tokenizer("a b")["input_ids"]  # no EOS added by embtune
    assert _max_diff(fast.encode(TEXTS), ref.encode(TEXTS)) < TOL


def test_plain_hf_causal_gemma3_stays_a_decoder(tmp_path):
    folder = tmp_path / "gemma-causal"
    shutil.copytree(build_tiny_hf(tmp_path / "gemma", "gemma3_text"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["use_bidirectional_attention"] = False
    (folder / "config.json").write_text(json.dumps(config))
    fast = _load(folder)
    assert (fast.family.kind, fast.family.pooling, fast.tokenizer.padding_side) == ("decoder", "lasttoken", "left")
    assert _causal_flags(fast) == {True}


def test_bf16_lora_merge_writes_the_fp32_dense_heads(st_dirs, tmp_path):
    folder = st_dirs["embeddinggemma"]
    fast = FastSentenceTransformer.from_pretrained(folder, dtype="bf16", device="cpu")
    assert fast[2].linear.weight.dtype == torch.bfloat16  # ST casts the heads to the transformer's dtype
    fast = FastSentenceTransformer.get_peft_model(fast, r=4, lora_alpha=8)
    train_steps(fast, steps=1)
    live = fast.encode_query(TEXTS)
    fast.save_pretrained_merged(tmp_path / "merged")
    fast.save_pretrained(tmp_path / "adapter")
    assert fast[2].linear.weight.dtype == torch.bfloat16
    for out in ("merged", "adapter"):
        for dense in ("2_Dense", "3_Dense"):
            original = load_file(str(folder / dense / "model.safetensors"))["linear.weight"]
            saved = load_file(str(tmp_path / out / dense / "model.safetensors"))["linear.weight"]
            assert saved.dtype == torch.float32 and torch.equal(saved, original), (out, dense)
    plain = SentenceTransformer(str(tmp_path / "merged"), device="cpu").encode_query(TEXTS)
    assert _cos(plain, live) >= 0.999  # live runs bf16, the merged folder fp32


def test_full_finetuning_trains_the_dense_heads(st_dirs, tmp_path):
    fast = FastSentenceTransformer.from_pretrained(st_dirs["embeddinggemma"], full_finetuning=True, device="cpu")
    head = fast[2].linear.weight.detach().clone()
    assert fast[2].linear.weight.requires_grad
    train_steps(fast, steps=2, lr=1e-3)
    assert not torch.equal(head, fast[2].linear.weight)
    fast.save(str(tmp_path / "full"))
    plain = SentenceTransformer(str(tmp_path / "full"), device="cpu")
    assert _max_diff(plain.encode_query(TEXTS), fast.encode_query(TEXTS)) < TOL
