"""Fixtures of the export tests (and `embtune export`'s CLI tests): merged model folders built once per session.

* ``merged_minilm``: the real all-MiniLM-L6-v2 with a LoRA adapter whose B matrices are non-zero,
  merged — so the merge changes the embeddings and an export that dropped it would be caught.
  ``minilm_adapter`` is the same adapter saved unmerged.
* ``tiny_merged(family)``: a tiny random model of ``family`` (tiny_models.FAMILIES) saved as a merged
  ST folder by FastSentenceTransformer (decoders: last-token pooling, EOS appended).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_hf, build_tiny_unigram_xlmr, minilm_path, randomize_lora_b

def _lora_merged(base: str, out: Path, adapter_out: Path | None = None, family_targets=None) -> Path:
    from embtune import FastSentenceTransformer

    model = FastSentenceTransformer.from_pretrained(base, dtype=torch.float32, device="cpu")
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8,
                                                   target_modules=family_targets or "all-linear")
    randomize_lora_b(model, std=0.02, seed=7)
    model.save_pretrained_merged(out)
    if adapter_out is not None:
        model.save_pretrained(adapter_out)
    return out


@pytest.fixture(scope="session")
def export_root(tmp_path_factory) -> Path:
    """A session folder for the models the export tests share."""
    return tmp_path_factory.mktemp("export-models")


@pytest.fixture(scope="session")
def minilm_folders(export_root) -> dict[str, Path]:
    """``{"merged": ..., "adapter": ...}`` for MiniLM + a non-zero LoRA adapter."""
    merged = _lora_merged(minilm_path(), export_root / "minilm-merged", export_root / "minilm-adapter")
    return {"merged": merged, "adapter": export_root / "minilm-adapter"}


@pytest.fixture(scope="session")
def merged_minilm(minilm_folders) -> Path:
    """The merged MiniLM folder (plain ST folder)."""
    return minilm_folders["merged"]


@pytest.fixture(scope="session")
def tiny_merged(export_root):
    """A function ``make(family) -> Path`` of a merged tiny ST folder, built on first use."""
    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            from embtune import FastSentenceTransformer

            hf = build_tiny_hf(export_root / f"{family}-hf", family)
            model = FastSentenceTransformer.from_pretrained(hf, dtype=torch.float32, device="cpu")
            cache[family] = export_root / f"{family}-merged"
            model.save_pretrained_merged(cache[family])
        return cache[family]

    return make


@pytest.fixture(scope="session")
def unigram_xlmr_merged(export_root) -> Path:
    """The tiny Unigram XLM-R as a merged ST folder (mean pooling)."""
    from embtune import FastSentenceTransformer

    hf = build_tiny_unigram_xlmr(export_root / "xlmr-unigram-hf")
    model = FastSentenceTransformer.from_pretrained(hf, dtype=torch.float32, device="cpu")
    model.save_pretrained_merged(export_root / "xlmr-unigram-merged")
    return export_root / "xlmr-unigram-merged"


@pytest.fixture(scope="session")
def qwen_pretokenizer_merged(tiny_merged, export_root) -> Path:
    """The tiny Qwen3 with Qwen's own pre-tokenizer (regex Split + ByteLevel), as Qwen3-Embedding ships.

    The tiny tokenizer's BPE merges stay valid under another pre-tokenizer; only how text is cut
    into words changes (digits one by one, for instance), which llama.cpp must then reproduce.
    """
    import json
    import shutil

    from embtune.export.gguf_vocab import QWEN2_SPLIT_REGEX

    folder = export_root / "qwen3-qwen-pre-merged"
    if not folder.exists():
        shutil.copytree(tiny_merged("qwen3"), folder)
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT_REGEX}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
        (folder / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    return folder
