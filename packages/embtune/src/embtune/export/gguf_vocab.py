"""The tokenizer part of a GGUF, built from the folder's ``tokenizer.json``.

llama.cpp re-implements tokenizers in C++, so the GGUF must hold the vocabulary in the form its
tokenizer expects (facts from llama.cpp's ``convert_hf_to_gguf.py`` and
``llama-vocab.cpp``):

* WordPiece ("bert", llama.cpp WPM): word-initial pieces get a leading U+2581 "▁", ``##``
  continuation pieces lose the ``##``, control tokens stay as they are. The runtime always wraps
  a text as ``[CLS] ... [SEP]`` (BOS, SEP). Newer llama.cpp reads
  ``tokenizer.ggml.normalizer.lowercase`` / ``.strip_accents`` (default: both on); they are
  written from the ``BertNormalizer`` so cased models tokenize right where supported.
* Byte-level BPE ("gpt2"): tokens as in ``tokenizer.json``, the merges as "a b" strings, and a
  pre-tokenizer *name* that llama.cpp maps to its own regex; only names whose regex is known to
  equal the tokenizer's are written ("gpt-2" for GPT-2's ByteLevel regex, "qwen2" for Qwen's).
  The special tokens appended by the post-processor become EOS with ``add_eos_token`` (Qwen3
  embedders pool the appended ``<|endoftext|>``; reference P4).
* SentencePiece Unigram ("t5", llama.cpp UGM; XLM-R, multilingual-e5): pieces with their scores,
  the unknown piece typed UNKNOWN, the normaliser's precompiled charsmap (base64 in tokenizer.json,
  raw bytes in the GGUF), ``add_space_prefix`` from the Metaspace pre-tokenizer and
  ``remove_extra_whitespaces`` when the normaliser squeezes runs of spaces.

The ``gguf`` package only offers a full converter for whole HF folders (llama.cpp's script, not
shipped in the wheel), so the mapping is written here from the facts above using
``gguf.GGUFWriter``'s typed adders; the two normaliser keys have no adder in gguf 0.19 and are
written with ``add_bool``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import gguf

from embtune.errors import ExportError
from embtune.export.source import StFolder, read_json

logger = logging.getLogger("embtune")

PHANTOM_SPACE = "\u2581"
#: Keys read by llama.cpp's WPM tokenizer (``llama-arch.cpp``), not yet in gguf 0.19's Keys.
KEY_NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
KEY_NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"
#: The pre-tokenizer regex of Qwen2/Qwen3 tokenizers (their tokenizer.json Split pattern), which
#: llama.cpp implements under the pre-tokenizer name "qwen2".
QWEN2_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass
class VocabInfo:
    """What was written: ``model`` ("bert", "gpt2" or "t5"), vocabulary size and the special ids."""

    model: str
    size: int
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool


def _id_to_token(tok: dict[str, Any]) -> tuple[dict[int, str], dict[int, bool]]:
    """Map id → token string from ``model.vocab`` plus ``added_tokens``; second dict: id → special."""
    vocab = tok["model"].get("vocab")
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...] in id order
        tokens = {i: entry[0] for i, entry in enumerate(vocab)}
    elif isinstance(vocab, dict):
        tokens = {int(i): t for t, i in vocab.items()}
    else:
        raise ExportError(f"tokenizer.json model {tok['model'].get('type')} has no vocabulary")
    added: dict[int, bool] = {}
    for entry in tok.get("added_tokens") or []:
        tokens[int(entry["id"])] = entry["content"]
        added[int(entry["id"])] = bool(entry.get("special"))
    return tokens, added


def _token_table(st: StFolder) -> tuple[list[str], list[int]]:
    """Tokens (id order, gaps filled with "[PAD{i}]") and their gguf.TokenType values."""
    tokens, added = _id_to_token(st.tokenizer)
    size = max(int(st.config.get("vocab_size") or 0), max(tokens) + 1)
    texts, types = [], []
    for i in range(size):
        if i not in tokens:
            texts.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif i in added:
            texts.append(tokens[i])
            types.append(int(gguf.TokenType.CONTROL if added[i] else gguf.TokenType.USER_DEFINED))
        else:
            texts.append(tokens[i])
            types.append(int(gguf.TokenType.NORMAL))
    return texts, types


def template_special_ids(tok: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Ids the post-processor puts before and after a single text (e.g. ``[101]``, ``[102]``).

    Understands ``TemplateProcessing``, ``BertProcessing``, ``RobertaProcessing`` and a
    ``Sequence`` of them; other processors (ByteLevel) add nothing.
    """
    proc = tok.get("post_processor")
    if not proc:
        return [], []
    kind = proc.get("type")
    if kind == "Sequence":
        before, after = [], []
        for sub in proc.get("processors", []):
            b, a = template_special_ids({"post_processor": sub})
            before, after = before + b, after + a
        return before, after
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [int(proc["cls"][1])], [int(proc["sep"][1])]
    if kind != "TemplateProcessing":
        return [], []
    specials = proc.get("special_tokens", {})
    before: list[int] = []
    after: list[int] = []
    seen_sequence = False
    for piece in proc.get("single", []):
        if "Sequence" in piece:
            seen_sequence = True
        elif "SpecialToken" in piece:
            ids = [int(i) for i in specials[piece["SpecialToken"]["id"]]["ids"]]
            (after if seen_sequence else before).extend(ids)
    return before, after


def _special_id(st: StFolder, name: str, vocab: dict[str, int]) -> int | None:
    """Id of the ``{name}_token`` named in tokenizer_config.json (None when absent)."""
    cfg_file = st.path / "tokenizer_config.json"
    cfg = read_json(cfg_file) if cfg_file.is_file() else {}
    value = cfg.get(f"{name}_token")
    if isinstance(value, dict):
        value = value.get("content")
    return vocab.get(value) if isinstance(value, str) else None


def _token_ids(tok: dict[str, Any]) -> dict[str, int]:
    tokens, _ = _id_to_token(tok)
    return {t: i for i, t in tokens.items()}


def _add_wordpiece(writer: gguf.GGUFWriter, st: StFolder) -> VocabInfo:
    tok = st.tokenizer
    norm = tok.get("normalizer") or {}
    if norm and norm.get("type") != "BertNormalizer":
        raise ExportError(f"WordPiece tokenizer with a {norm.get('type')} normalizer cannot be reproduced by "
                          "llama.cpp (it implements BertNormalizer only)", path=st.path / "tokenizer.json")
    pre = (tok.get("pre_tokenizer") or {}).get("type")
    if pre != "BertPreTokenizer":
        raise ExportError(f"WordPiece tokenizer with pre-tokenizer {pre} cannot be reproduced by llama.cpp "
                          "(it splits like BertPreTokenizer)", path=st.path / "tokenizer.json")
    before, after = template_special_ids(tok)
    if len(before) != 1 or len(after) != 1:
        raise ExportError("llama.cpp wraps WordPiece input as [CLS] text [SEP]; this tokenizer adds "
                          f"{before} before and {after} after", path=st.path / "tokenizer.json")
    prefix = tok["model"].get("continuing_subword_prefix") or "##"
    texts, types = _token_table(st)
    phantom = [t if ty == gguf.TokenType.CONTROL else t[len(prefix):] if t.startswith(prefix)
               else PHANTOM_SPACE + t for t, ty in zip(texts, types)]
    if len(set(phantom)) != len(phantom):
        raise ExportError("WordPiece vocabulary has pieces that collide once written for llama.cpp",
                          path=st.path / "tokenizer.json")
    lowercase = bool(norm.get("lowercase", False)) if norm else False
    strip = norm.get("strip_accents") if norm else False
    strip_accents = lowercase if strip is None else bool(strip)
    if not lowercase:
        logger.warning("embtune: cased WordPiece tokenizer: llama.cpp builds that predate the "
                       "tokenizer.ggml.normalizer.* keys lower-case every text anyway")
    vocab = _token_ids(tok)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")  # ignored for WPM by llama.cpp (pre is read for BPE only)
    writer.add_token_list(phantom)
    writer.add_token_types(types)
    writer.add_token_type_count(max(1, int(st.config.get("type_vocab_size") or 1)))
    writer.add_bool(KEY_NORMALIZER_LOWERCASE, lowercase)
    writer.add_bool(KEY_NORMALIZER_STRIP_ACCENTS, strip_accents)
    writer.add_bos_token_id(before[0])
    writer.add_eos_token_id(after[0])
    writer.add_sep_token_id(after[0])
    unk = vocab.get(tok["model"].get("unk_token", "[UNK]"))
    for adder, value in ((writer.add_unk_token_id, unk),
                         (writer.add_pad_token_id, _special_id(st, "pad", vocab)),
                         (writer.add_mask_token_id, _special_id(st, "mask", vocab))):
        if value is not None:
            adder(value)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    return VocabInfo("bert", len(phantom), before[0], after[0], True, True)


def bpe_pre_name(tok: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json; ExportError when unknown."""
    pre = tok.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        if (len(parts) == 2 and parts[0].get("type") == "Split" and parts[1].get("type") == "ByteLevel"
                and not parts[1].get("use_regex", True) and not parts[1].get("add_prefix_space")
                and (parts[0].get("pattern") or {}).get("Regex") == QWEN2_SPLIT_REGEX):
            return "qwen2"
    raise ExportError("byte-level BPE pre-tokenizer not known to llama.cpp under a name this exporter can "
                      f"vouch for: {json.dumps(pre)[:200]}")


def _add_bpe(writer: gguf.GGUFWriter, st: StFolder) -> VocabInfo:
    tok = st.tokenizer
    if tok["model"].get("byte_fallback"):
        raise ExportError("SentencePiece-style BPE (byte_fallback) is not exported to GGUF yet",
                          path=st.path / "tokenizer.json")
    try:
        pre = bpe_pre_name(tok)
    except ExportError as exc:
        raise ExportError(exc.reason, path=st.path / "tokenizer.json") from None
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    if not merges:
        raise ExportError("BPE tokenizer without merges", path=st.path / "tokenizer.json")
    texts, types = _token_table(st)
    before, after = template_special_ids(tok)
    vocab = _token_ids(tok)
    bos = before[0] if before else _special_id(st, "bos", vocab)
    eos = after[-1] if after else _special_id(st, "eos", vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(texts)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for adder, value in ((writer.add_bos_token_id, bos), (writer.add_eos_token_id, eos),
                         (writer.add_pad_token_id, _special_id(st, "pad", vocab))):
        if value is not None:
            adder(value)
    writer.add_add_bos_token(bool(before))
    writer.add_add_eos_token(bool(after))
    return VocabInfo("gpt2", len(texts), bos, eos, bool(before), bool(after))


UNIGRAM_NORMALIZERS = {"Precompiled", "Replace", "Strip"}


def _normalizer_steps(tok: dict[str, Any]) -> list[dict[str, Any]]:
    norm = tok.get("normalizer")
    if not norm:
        return []
    return list(norm.get("normalizers", [])) if norm.get("type") == "Sequence" else [norm]


def _add_unigram(writer: gguf.GGUFWriter, st: StFolder) -> VocabInfo:
    """SentencePiece Unigram (XLM-R, multilingual-e5) → llama.cpp "t5" (UGM) with scores and charsmap."""
    import base64

    tok = st.tokenizer
    where = st.path / "tokenizer.json"
    steps = _normalizer_steps(tok)
    unknown = [n.get("type") for n in steps if n.get("type") not in UNIGRAM_NORMALIZERS]
    if unknown:
        raise ExportError(f"Unigram tokenizer normalizer {unknown[0]} cannot be reproduced by llama.cpp",
                          path=where)
    pre = tok.get("pre_tokenizer") or {}
    if pre.get("type") != "Metaspace":
        raise ExportError(f"Unigram tokenizer with pre-tokenizer {pre.get('type')} is not exported "
                          "(llama.cpp splits like SentencePiece's Metaspace)", path=where)
    model = tok["model"]
    scores = {i: float(entry[1]) for i, entry in enumerate(model["vocab"])}
    texts, types = _token_table(st)
    unk_id = model.get("unk_id")
    if unk_id is not None:
        types[int(unk_id)] = int(gguf.TokenType.UNKNOWN)
    before, after = template_special_ids(tok)
    vocab = _token_ids(tok)
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(texts)
    writer.add_token_scores([scores.get(i, 0.0) for i in range(len(texts))])
    writer.add_token_types(types)
    writer.add_token_type_count(max(1, int(st.config.get("type_vocab_size") or 1)))
    prepend = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
    writer.add_add_space_prefix(prepend != "never")
    squeeze = any(n.get("type") == "Replace" and (n.get("pattern") or {}).get("Regex") == " {2,}"
                  for n in steps)
    writer.add_remove_extra_whitespaces(squeeze)
    charsmaps = [n["precompiled_charsmap"] for n in steps
                 if n.get("type") == "Precompiled" and n.get("precompiled_charsmap")]
    if charsmaps:
        writer.add_precompiled_charsmap(base64.b64decode(charsmaps[0]))
    bos = before[0] if before else _special_id(st, "bos", vocab)
    eos = after[-1] if after else _special_id(st, "eos", vocab)
    for adder, value in ((writer.add_bos_token_id, bos), (writer.add_eos_token_id, eos),
                         (writer.add_unk_token_id, unk_id),
                         (writer.add_pad_token_id, _special_id(st, "pad", vocab)),
                         (writer.add_mask_token_id, _special_id(st, "mask", vocab))):
        if value is not None:
            adder(int(value))
    writer.add_add_bos_token(bool(before))
    writer.add_add_eos_token(bool(after))
    return VocabInfo("t5", len(texts), bos, eos, bool(before), bool(after))


def add_vocab(writer: gguf.GGUFWriter, st: StFolder) -> VocabInfo:
    """Write the tokenizer keys for ``st``'s tokenizer.json into ``writer``; returns what was written.

    WordPiece → llama.cpp "bert" (WPM); byte-level BPE → "gpt2" with a known pre-tokenizer;
    SentencePiece Unigram → "t5" (UGM). Anything else raises ExportError.
    """
    model_type = st.tokenizer.get("model", {}).get("type")
    if model_type == "WordPiece":
        return _add_wordpiece(writer, st)
    if model_type == "BPE":
        return _add_bpe(writer, st)
    if model_type == "Unigram":
        return _add_unigram(writer, st)
    raise ExportError(f"{model_type} tokenizers are not exported to GGUF", path=st.path / "tokenizer.json")
