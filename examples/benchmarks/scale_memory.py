"""Peak memory of encoding and evaluating a large chunk corpus, and how it grows with the corpus.

    python examples/benchmarks/scale_memory.py                          # 25k, 50k, 100k, 200k chunks
    python examples/benchmarks/scale_memory.py --sizes 10000,20000 --phases embed
    python examples/benchmarks/scale_memory.py --model minilm           # the embedded all-MiniLM-L6-v2
    python examples/benchmarks/scale_memory.py --json out.json

What one run does, for every N in ``--sizes``:

1. Writes a synthetic corpus to a temporary folder: N chunks (chunks.jsonl records) of 60-120 words
   drawn (Zipf-like, seeded, so every run is identical) from the whole words of MiniLM's WordPiece
   vocabulary, ``--queries`` queries of 8 words taken from a random target chunk each, with the
   target as their one relevant chunk (qrels for ``evaluate_retrieval``, eval.jsonl for the pipeline).
2. Runs each phase in a fresh subprocess, so the peak is that phase's alone:

   * ``embed``: ``embtune.pipeline.stages.embed_stage`` (what ``embtune from-corpus`` runs to write
     work/chunk_embeddings.npy: read chunks.jsonl, encode every chunk, save the matrix);
   * ``evaluate``: ``embtune.evaluate_retrieval`` (exact chunked search) with the corpus as an
     in-memory ``{id: text}`` dict, the queries and the qrels;
   * ``pipeline-eval``: ``embtune.pipeline.stages_model.eval_stage`` (the baseline/after stages:
     read chunks.jsonl and eval.jsonl, load the saved matrix, search it); needs ``embed`` first.

   The child loads the model, then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``)
   so the peak is that of the measured call plus what was resident before it (the model, and for
   ``evaluate`` the corpus dict the caller holds). RSS is read from ``/proc/self/status``
   (VmRSS before the call, VmHWM after it).

The model is by default a tiny random-init BERT (hidden 64, 2 layers, MiniLM's tokenizer, no
download) loaded like the pipeline loads models (``FastSentenceTransformer.from_pretrained(...,
for_inference=True)``), so the run measures memory, not compute. ``--model minilm`` uses the real
all-MiniLM-L6-v2 (384 dims; slow on CPU). The table gives, per phase and N: RSS before the call,
peak RSS, peak minus the N x dim float32 embedding matrix, peak minus the RSS before the call, and
seconds; the footer gives the least-squares growth per 100k chunks and the peak extrapolated to 1M
chunks. The machine may be shared, so seconds are indicative; RSS is not affected by load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PHASES = ("embed", "evaluate", "pipeline-eval")
MB = 1024 * 1024


# -- corpus ----------------------------------------------------------------------------------------


def minilm_path() -> str:
    """Folder of the embedded all-MiniLM-L6-v2."""
    from embtune.models.names import default_model_path

    return default_model_path()


def word_list() -> list[str]:
    """Whole lower-case words (3+ letters) of MiniLM's WordPiece vocabulary, in vocabulary order."""
    vocab = Path(minilm_path()) / "vocab.txt"
    return [w for w in vocab.read_text(encoding="utf-8").split("\n") if len(w) >= 3 and w.isalpha() and w.isascii()]


def write_corpus(folder: Path, n: int, n_queries: int, seed: int = 0) -> dict[str, Path]:
    """Write a synthetic corpus of ``n`` chunks and ``n_queries`` queries under ``folder``.

    Out: paths ``chunks`` (chunks.jsonl records), ``queries`` ({id: text} JSON), ``qrels``
    ({query id: {chunk id: 1}} JSON) and ``eval`` (eval.jsonl records). Deterministic in ``seed``.
    """
    import numpy as np

    words = np.array(word_list())
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 0.9  # Zipf-like: frequent words repeat, as in text
    weights /= weights.sum()
    lengths = rng.integers(60, 121, size=n)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / name for k, name in
             (("chunks", "chunks.jsonl"), ("queries", "queries.json"), ("qrels", "qrels.json"), ("eval", "eval.jsonl"))}
    targets = sorted(rng.choice(n, size=min(n_queries, n), replace=False).tolist())
    target_set = set(targets)
    query_text: dict[int, str] = {}
    with open(paths["chunks"], "w", encoding="utf-8") as fh:
        block = 10000
        for b0 in range(0, n, block):
            b1 = min(n, b0 + block)
            ids = rng.choice(len(words), size=int(lengths[b0:b1].sum()), p=weights)
            pos = 0
            for i in range(b0, b1):
                tokens = words[ids[pos: pos + lengths[i]]]
                pos += lengths[i]
                text = " ".join(tokens.tolist())
                if i in target_set:
                    start = int(rng.integers(0, len(tokens) - 8))
                    query_text[i] = " ".join(tokens[start: start + 8].tolist())
                record = {"id": f"c{i:07d}", "doc_id": f"d{i // 4:07d}", "text": text, "title": "",
                          "headings": [], "source": f"synthetic/{i // 4}"}
                fh.write(json.dumps(record) + "\n")
    queries = {f"q{j}": query_text[t] for j, t in enumerate(targets)}
    qrels = {f"q{j}": {f"c{t:07d}": 1} for j, t in enumerate(targets)}
    paths["queries"].write_text(json.dumps(queries), encoding="utf-8")
    paths["qrels"].write_text(json.dumps(qrels), encoding="utf-8")
    with open(paths["eval"], "w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"query_id": qid, "query": text, "relevant": list(qrels[qid])}) + "\n")
    return paths


def build_tiny_model(folder: Path, hidden: int = 64, max_positions: int = 512) -> str:
    """A random-init BERT (``hidden`` wide, 2 layers, MiniLM's tokenizer) saved as a plain HF folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=max_positions)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


# -- the measured child ----------------------------------------------------------------------------


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(phase: str, folder: Path, model_path: str, max_seq_length: int, chunks_per_call: int | None,
          dtype: str = "auto") -> dict:
    """Run one phase on the corpus in ``folder``; out: rss_before, peak_rss (bytes), seconds, dim, dtype."""
    import numpy as np

    from embtune.models import FastSentenceTransformer

    # what the pipeline's load_inference_model does, with the dtype choosable
    model = FastSentenceTransformer.from_pretrained(model_path, max_seq_length=max_seq_length, for_inference=True,
                                                    dtype=None if dtype == "auto" else dtype)
    dim = int(model.get_sentence_embedding_dimension())
    emb_path = folder / "work" / "chunk_embeddings.npy"
    if phase == "evaluate":
        from embtune.eval import evaluate_retrieval
        from embtune.pipeline.records import read_chunks

        corpus = {c["id"]: c["text"] for c in read_chunks(folder / "chunks.jsonl")}
        queries = json.loads((folder / "queries.json").read_text(encoding="utf-8"))
        qrels = json.loads((folder / "qrels.json").read_text(encoding="utf-8"))
        extra = {} if chunks_per_call is None else {"corpus_chunk_size": chunks_per_call}
        run = lambda: evaluate_retrieval(model, corpus, queries, qrels, show_progress=False, **extra)  # noqa: E731
    elif phase == "embed":
        from embtune.pipeline.stages import embed_stage

        run = lambda: embed_stage(folder / "chunks.jsonl", emb_path, model, show_progress=False)  # noqa: E731
    elif phase == "pipeline-eval":
        from embtune.pipeline.stages_model import eval_stage

        run = lambda: eval_stage(model, folder / "chunks.jsonl", folder / "eval.jsonl", emb_path,  # noqa: E731
                                 folder / "work" / "before.json", "chunk", show_progress=False)
    else:
        raise ValueError(phase)
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    weights = str(next(model.parameters()).dtype).replace("torch.", "")
    result = {"rss_before": before, "peak_rss": peak, "seconds": seconds, "dim": dim, "dtype": weights}
    if phase == "embed":
        result["matrix_shape"] = list(np.load(emb_path, mmap_mode="r").shape)
    else:
        result["ndcg@10"] = float(out["ndcg@10"] if "ndcg@10" in out else out["metrics"]["ndcg@10"])
    return result


# -- table -----------------------------------------------------------------------------------------


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line through the points: (slope, intercept); slope 0 for a single point."""
    if len(xs) < 2:
        return 0.0, ys[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def table(rows: list[dict], label: str) -> str:
    """The Markdown table of the measured rows, with the growth and 1M extrapolation per phase below it."""
    dtypes = ", ".join(sorted({r["dtype"] for r in rows}))
    lines = [f"Peak RSS, {label}, weights {dtypes}", "",
             "| phase | chunks | RSS before call | peak RSS | peak - N x dim x 4 | peak - before | seconds | nDCG@10 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        matrix = r["n"] * r["dim"] * 4
        ndcg = f"{r['ndcg@10']:.4f}" if "ndcg@10" in r else ""
        lines.append(f"| {r['phase']} | {r['n']:,} | {r['rss_before'] / MB:,.0f} MB | {r['peak_rss'] / MB:,.0f} MB | "
                     f"{(r['peak_rss'] - matrix) / MB:,.0f} MB | {(r['peak_rss'] - r['rss_before']) / MB:,.0f} MB | "
                     f"{r['seconds']:,.1f} | {ndcg} |")
    lines.append("")
    for phase in dict.fromkeys(r["phase"] for r in rows):
        pr = sorted((r for r in rows if r["phase"] == phase), key=lambda r: r["n"])
        ns, dim = [r["n"] for r in pr], pr[0]["dim"]
        peaks = [r["peak_rss"] for r in pr]
        extra = [r["peak_rss"] - r["n"] * dim * 4 for r in pr]
        added = [r["peak_rss"] - r["rss_before"] for r in pr]
        slope_all = fit(ns, peaks)[0]
        last = fit(ns[-2:], peaks[-2:])[0]  # between the two largest sizes
        last_x = fit(ns[-2:], extra[-2:])[0]
        last_d = fit(ns[-2:], added[-2:])[0]
        at_1m = peaks[-1] + last * (1_000_000 - ns[-1])
        at_1m_x = extra[-1] + last_x * (1_000_000 - ns[-1])
        lines.append(
            f"- {phase}: between {ns[-2]:,} and {ns[-1]:,} chunks the peak grows {last * 1e5 / MB:,.1f} MB per 100k "
            f"chunks (peak minus the matrix {last_x * 1e5 / MB:,.1f} MB, peak minus RSS-before "
            f"{last_d * 1e5 / MB:,.1f} MB; the N x {dim} float32 matrix itself is {1e5 * dim * 4 / MB:,.1f} MB per "
            f"100k); least squares over all sizes: {slope_all * 1e5 / MB:,.1f} MB per 100k. Extrapolated to 1M "
            f"chunks: peak {at_1m / MB:,.0f} MB, of which {at_1m_x / MB:,.0f} MB besides the "
            f"{1e6 * dim * 4 / MB:,.0f} MB matrix." if len(ns) > 1 else f"- {phase}: one size only, no growth.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write corpora, run every (N, phase) child, print the table (and JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="25000,50000,100000,200000", help="chunk counts, comma-separated")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {PHASES}")
    parser.add_argument("--queries", type=int, default=300, help="number of queries (default 300)")
    parser.add_argument("--model", default="tiny", help="'tiny' (random-init, hidden 64), 'minilm', or a folder")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="weights dtype; auto = the pipeline's choice (bf16 where the CPU runs it fast)")
    parser.add_argument("--corpus-chunk-size", type=int, default=None,
                        help="evaluate_retrieval's corpus_chunk_size (default: its own)")
    parser.add_argument("--workdir", default=None, help="folder for corpora (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = child(args.child[0], Path(args.child[1]), args.model_path, args.max_seq_length,
                       args.corpus_chunk_size, args.dtype)
        print("RESULT " + json.dumps(result))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="scale_memory.", dir=args.workdir) as tmp:
        tmp = Path(tmp)
        if args.model == "tiny":
            model_path, label = build_tiny_model(tmp / "tiny-bert"), "tiny random-init BERT (hidden 64, 2 layers)"
        elif args.model == "minilm":
            model_path, label = minilm_path(), "all-MiniLM-L6-v2"
        else:
            model_path, label = args.model, args.model
        label += f", max_seq_length {args.max_seq_length}, {args.queries} queries"
        rows = []
        for n in sizes:
            t0 = time.perf_counter()
            folder = tmp / f"n{n}"
            write_corpus(folder, n, args.queries)
            print(f"[{n:,} chunks: corpus written in {time.perf_counter() - t0:.0f}s]", file=sys.stderr, flush=True)
            for phase in phases:
                cmd = [sys.executable, __file__, "--child", phase, str(folder), "--model-path", model_path,
                       "--max-seq-length", str(args.max_seq_length), "--dtype", args.dtype]
                if args.corpus_chunk_size is not None:
                    cmd += ["--corpus-chunk-size", str(args.corpus_chunk_size)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.stderr.write(proc.stdout + proc.stderr)
                    raise SystemExit(f"{phase} at {n} chunks failed (exit {proc.returncode})")
                row = {"phase": phase, "n": n, **json.loads(lines[-1][len("RESULT "):])}
                rows.append(row)
                print(f"[{phase} {n:,}: peak {row['peak_rss'] / MB:,.0f} MB, {row['seconds']:.1f}s]",
                      file=sys.stderr, flush=True)
            for p in folder.rglob("*"):
                if p.is_file() and p.suffix == ".npy":
                    p.unlink()  # keep disk use to one corpus's matrix at a time
    rows.sort(key=lambda r: (phases.index(r["phase"]), r["n"]))
    print(table(rows, label))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
