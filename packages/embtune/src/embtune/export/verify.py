"""Run an export in the tool it was written for and compare with sentence-transformers.

Used by the tests and by ``examples/benchmarks/export_parity.py``; handy for users who want to
check an export before shipping it. Each function takes a path and texts and returns numpy arrays
(one L2-normalised row per text) or token id lists; the reranker ones take (query, document) pairs
and return one raw score per pair.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Probe texts for parity checks: short ASCII, punctuation, numbers, accents, a long passage.
TEXTS = [
    "hello world",
    "What is the capital of France?",
    "Protein folding is driven by hydrophobic collapse; chaperones (e.g. HSP70) help!",
    "In 2023, 42 patients received 3.5 mg/kg doses over 12 weeks.",
    "Café crème brûlée à São Paulo: a naïve façade.",
    "Vitamin D supplementation and bone mineral density in elderly women. " * 4,
]
LONG_TEXT = (
    "Aerobic exercise improves cardiovascular health by lowering resting heart rate and blood pressure. "
    "In a randomised trial of 1,204 adults aged 40 to 65, participants who walked briskly for thirty "
    "minutes on five days a week showed a mean reduction of 6 mmHg in systolic pressure after six months, "
    "compared with 1 mmHg in the control group. Secondary outcomes included fasting glucose, body mass "
    "index and self-reported quality of life; all improved modestly. The authors caution that adherence "
    "fell over time and that the population was predominantly of European ancestry, which limits how far "
    "the results generalise. Further work should examine high-intensity interval training."
)
#: Plain and accented texts for tokenizer parity.
TOKENIZER_TEXTS = ["hello world, how are you?", "The 3 quick brown foxes jumped!", "Café crème brûlée",
                   "naïve façade à São Paulo", "Ångström über résumé"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, dim)`` arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def reference_embeddings(folder: str | os.PathLike, texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` from sentence-transformers loading ``folder`` (fp32, CPU, L2-normalised)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": "float32"})
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def load_llama(gguf_path: str | os.PathLike, vocab_only: bool = False, n_threads: int | None = 1):
    """A ``llama_cpp.Llama`` for an embedding GGUF, with n_ctx = n_batch = n_ubatch = the model's context.

    Non-causal encoders need a whole sequence in one micro-batch (reference P10), hence equal sizes
    (capped at 512). ``n_threads`` defaults to 1: parity checks embed a few texts, and llama.cpp's
    spinning thread pool slows down by ~50x on a machine whose cores are busy; None = llama.cpp's
    default. Raises ImportError when llama-cpp-python is not installed.
    """
    import gguf
    import llama_cpp

    reader = gguf.GGUFReader(str(gguf_path))
    arch = reader.get_field("general.architecture").contents()
    ctx = int(reader.get_field(f"{arch}.context_length").contents())
    ctx = min(ctx, 512)
    threads = {} if n_threads is None else {"n_threads": n_threads, "n_threads_batch": n_threads}
    return llama_cpp.Llama(model_path=str(gguf_path), embedding=True, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx,
                           vocab_only=vocab_only, verbose=False, **threads)


def llama_embeddings(gguf_path: str | os.PathLike, texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` computed by llama.cpp (llama-cpp-python) from ``gguf_path``, L2-normalised."""
    llm = load_llama(gguf_path)
    try:
        return np.asarray(llm.embed(texts, normalize=True), dtype=np.float32)
    finally:
        llm.close()


def llama_tokenize(gguf_path: str | os.PathLike, texts: list[str]) -> list[list[int]]:
    """Token ids llama.cpp produces for each text (special tokens added as the model does)."""
    llm = load_llama(gguf_path, vocab_only=True)
    try:
        return [llm.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in texts]
    finally:
        llm.close()


def onnx_embeddings(folder: str | os.PathLike, texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` from ``folder/model.onnx`` in onnxruntime, with the folder's tokenizer."""
    import json

    import onnxruntime as ort
    from transformers import AutoTokenizer

    folder = Path(folder)
    info = json.loads((folder / "onnx_export.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=info["max_seq_length"],
                      return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run([info["output"]], {name: batch[name].astype(np.int64) for name in info["inputs"]})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


#: Probe (query, document) pairs for reranker parity checks: relevant and not, punctuation, numbers,
#: accents, a document long enough to be truncated by short ``max_length`` settings.
RERANK_PAIRS = [
    ("what makes proteins fold", "Protein folding is driven by hydrophobic collapse."),
    ("what makes proteins fold", "Mitosis splits one cell into two."),
    ("is coffee bad for the heart?", "Moderate coffee intake (3-4 cups/day) shows no cardiac harm."),
    ("Café crème brûlée", "A naïve façade à São Paulo."),
    ("aerobic exercise and blood pressure", LONG_TEXT),
]


def reference_scores(folder: str | os.PathLike, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Raw scores (logits) of ``pairs`` from the reranker ``folder`` loaded as a sentence-transformers
    CrossEncoder (`embtune.rerankers.load_reranker`, fp32, CPU) and scored with `score_pairs`."""
    import torch

    from embtune.rerankers import load_reranker, score_pairs

    model = load_reranker(folder, device="cpu", dtype=torch.float32, for_inference=True)
    return score_pairs(model, pairs, batch_size=len(pairs) or 1)


def onnx_scores(folder: str | os.PathLike, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Raw scores of ``pairs`` from a reranker ONNX export (``folder/model.onnx`` in onnxruntime, the
    folder's tokenizer given each pair as a text pair, truncated as ``onnx_export.json`` says).
    Out: float32 array, one score per pair."""
    import json

    import onnxruntime as ort
    from transformers import AutoTokenizer

    folder = Path(folder)
    info = json.loads((folder / "onnx_export.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True,
                      max_length=info["max_seq_length"], return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run([info["output"]], {name: batch[name].astype(np.int64) for name in info["inputs"]})[0]
    return np.asarray(out, dtype=np.float32).reshape(len(pairs))
