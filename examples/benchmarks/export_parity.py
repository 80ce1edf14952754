"""Parity of every export against sentence-transformers, as a markdown table (for the README).

For the real all-MiniLM-L6-v2 with a merged LoRA adapter (non-zero B, so the merge matters) and for
tiny random models of each family, each export is run in the tool it targets and compared with
``SentenceTransformer.encode`` on the same texts:

* GGUF (f32, f16, bf16, q8_0) in llama.cpp through llama-cpp-python (skipped if not installed),
  plus tokenizer parity (llama.cpp token ids == Hugging Face token ids);
* the TEI folder reloaded in sentence-transformers (TEI itself is a Rust server);
* the ONNX graph in onnxruntime.

    python examples/benchmarks/export_parity.py [--out runs/export-parity]

Columns: lowest and mean cosine similarity over the probe texts, file size, export time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: the tiny random configs the tests use

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embtune import FastSentenceTransformer  # noqa: E402
from embtune.errors import ExportError  # noqa: E402
from embtune.export import export_gguf, export_onnx, export_tei  # noqa: E402
from embtune.export.verify import (  # noqa: E402
    LONG_TEXT,
    TEXTS,
    TOKENIZER_TEXTS,
    cosines,
    llama_embeddings,
    llama_tokenize,
    onnx_embeddings,
    reference_embeddings,
)
from tiny_models import build_tiny_hf, build_tiny_unigram_xlmr, minilm_path  # noqa: E402

#: Tiny families; "xlm-roberta-unigram" is XLM-R with a SentencePiece-style Unigram tokenizer.
FAMILIES = ("bert", "distilbert", "xlm-roberta", "xlm-roberta-unigram", "qwen3", "mpnet", "modernbert")
QUANTS = ("f32", "f16", "bf16", "q8_0")


def merged_minilm(root: Path) -> Path:
    """MiniLM + a LoRA adapter (r=4, B ~ N(0, 0.02)), merged into a plain ST folder under ``root``."""
    model = FastSentenceTransformer.from_pretrained(minilm_path(), dtype=torch.float32, device="cpu")
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    model.save_pretrained_merged(root / "minilm-lora-merged")
    return root / "minilm-lora-merged"


def merged_tiny(root: Path, family: str) -> Path:
    """A tiny random ``family`` model saved as a merged ST folder under ``root``."""
    hf = (build_tiny_unigram_xlmr(root / f"{family}-hf") if family == "xlm-roberta-unigram"
          else build_tiny_hf(root / f"{family}-hf", family))
    model = FastSentenceTransformer.from_pretrained(hf, dtype=torch.float32, device="cpu")
    model.save_pretrained_merged(root / f"{family}-merged")
    return root / f"{family}-merged"


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _row(model: str, fmt: str, quant: str, cos=None, size=None, seconds=None, note: str = "") -> dict:
    return {"model": model, "format": fmt, "quant": quant, "cos": cos, "size": size, "seconds": seconds,
            "note": note}


def measure(name: str, folder: Path, out: Path, texts: list[str], has_llama: bool) -> list[dict]:
    """Export ``folder`` in every format and compare each with sentence-transformers on ``texts``."""
    reference = reference_embeddings(folder, texts)
    out = out / "".join(c if c.isalnum() else "-" for c in name.lower())
    rows = []
    for quant in QUANTS:
        start = time.perf_counter()
        try:
            path = export_gguf(folder, out / "gguf" / f"model-{quant}.gguf", quant)
        except ExportError as exc:
            rows.append(_row(name, "gguf", quant, note=f"refused: {exc.reason[:70]}"))
            break
        seconds = time.perf_counter() - start
        if not has_llama:
            rows.append(_row(name, "gguf", quant, None, _size_mb(path), seconds, "llama-cpp-python missing"))
            continue
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        ids = llama_tokenize(path, TOKENIZER_TEXTS)
        same = sum(a == tok(t)["input_ids"] for a, t in zip(ids, TOKENIZER_TEXTS))
        cos = cosines(reference, llama_embeddings(path, texts))
        rows.append(_row(name, "gguf", quant, cos, _size_mb(path), seconds,
                         f"llama.cpp tokens = HF tokens on {same}/{len(TOKENIZER_TEXTS)} texts"))
    for fmt, exporter, run in (("tei", export_tei, reference_embeddings),
                               ("onnx", export_onnx, onnx_embeddings)):
        start = time.perf_counter()
        try:
            path = exporter(folder, out / fmt)
        except ExportError as exc:
            rows.append(_row(name, fmt, "f32", note=f"refused: {exc.reason[:70]}"))
            continue
        seconds = time.perf_counter() - start
        note = "reloaded in sentence-transformers" if fmt == "tei" else "onnxruntime CPU"
        cos = cosines(reference, run(path, texts))
        rows.append(_row(name, fmt, "f32", cos, _size_mb(path), seconds, note))
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of ``rows``."""
    lines = ["| model | format | weights | min cos | mean cos | size MB | export s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cos = r["cos"]
        lo = f"{cos.min():.6f}" if cos is not None else "—"
        mean = f"{cos.mean():.6f}" if cos is not None else "—"
        size = f"{r['size']:.1f}" if r["size"] is not None else "—"
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "—"
        lines.append(f"| {r['model']} | {r['format']} | {r['quant']} | {lo} | {mean} | {size} | {secs} "
                     f"| {r['note']} |")
    return "\n".join(lines)


def main() -> None:
    """Build the models, export them, print the parity table (and write it to ``--out``/parity.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="Keep the exports here (default: a temporary folder).")
    parser.add_argument("--families", default=",".join(FAMILIES), help="Tiny families to include.")
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401

        has_llama = True
    except ImportError:
        has_llama = False
        print("llama-cpp-python not installed: GGUF rows show structure only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="export-parity-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        models = out / "models"
        rows = measure("MiniLM-L6 + LoRA (merged)", merged_minilm(models), out / "exports",
                       TEXTS + [LONG_TEXT], has_llama)
        for family in [f for f in args.families.split(",") if f]:
            rows += measure(f"tiny {family}", merged_tiny(models, family), out / "exports", TEXTS, has_llama)
        text = table(rows)
        print(text)
        if args.out:
            (out / "parity.md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
