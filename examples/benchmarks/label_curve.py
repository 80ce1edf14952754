"""How many labels pay: SciFact test nDCG@10 after LoRA on N labelled train pairs, N = 0 … all.

    python examples/benchmarks/label_curve.py --sizes 25,50,100,200,400,919 --out runs/label-curve

For each N, N (query, relevant document) pairs are drawn from SciFact's train qrels (seeded, whole
queries first so no query is split), the embedded all-MiniLM-L6-v2 gets LoRA r16 trained with
InfoNCE for about the same number of optimizer steps as one epoch of all 919 pairs (epochs =
ceil(919 / N), at most 10), and the merged model is evaluated on the 300 real test queries against
the full 5,183-document corpus. N = 0 is the base model. Each size's metrics are cached under
OUT/<N>/metrics.json, so a rerun only computes what is missing. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scifact_finetune import DEFAULT_DATA, load_model  # noqa: E402  (the same model set-up as the quality table)


def sample_pairs(data, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (query text, document text) train pairs, whole queries drawn in a seeded order."""
    qrels = data.split_qrels("train")
    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    pairs: list[tuple[str, str]] = []
    for qid in qids:
        for doc_id, score in qrels[qid].items():
            if score > 0 and len(pairs) < n:
                pairs.append((data.queries[qid], data.corpus[doc_id]))
        if len(pairs) >= n:
            break
    return pairs


def run_size(n: int, data, out: Path, args) -> dict:
    """Train on ``n`` pairs (0: base model) and evaluate; the metrics, cached in OUT/<n>/metrics.json."""
    from embtune import FastSentenceTransformer, TrainConfig, evaluate_retrieval, train
    from embtune.utils import atomic_write_json

    done = out / str(n) / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    model = load_model("base" if n == 0 else "lora", args.max_seq_length)
    epochs = 0
    if n:
        pairs = sample_pairs(data, n, args.seed)
        epochs = min(10, math.ceil(args.full_size / len(pairs)))
        config = TrainConfig(output_dir=str(out / str(n)), epochs=epochs, batch_size=args.batch_size,
                             learning_rate=args.lr, seed=args.seed)
        train(model, pairs, loss="infonce", config=config)
        model.save_pretrained_merged(out / str(n) / "merged")
        del model
        model = FastSentenceTransformer.from_pretrained(out / str(n) / "merged", for_inference=True)
    metrics = evaluate_retrieval(model, data.corpus, data.queries, data.qrels["test"], ks=(10, 100))
    result = {"pairs": n, "epochs": epochs, "metrics": metrics, "minutes": (time.perf_counter() - start) / 60}
    atomic_write_json(done, result)
    return result


def main() -> None:
    """Parse arguments, run every size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact BEIR folder")
    parser.add_argument("--out", default="runs/label-curve")
    parser.add_argument("--sizes", default="25,50,100,200,400,919", help="numbers of labelled pairs (0 = base)")
    parser.add_argument("--full-size", type=int, default=919, help="pairs in one epoch of the full set")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from embtune import load_beir

    data = load_beir(args.data)
    out = Path(args.out)
    sizes = [0, *sorted({int(s) for s in args.sizes.split(",") if s.strip() and int(s) > 0})]
    rows = []
    for n in sizes:
        result = run_size(n, data, out, args)
        rows.append(result)
        print(f"N={n}: ndcg@10={result['metrics']['ndcg@10']:.4f} ({result['minutes']:.1f} min)", flush=True)
    base = rows[0]["metrics"]["ndcg@10"]
    print("\nSciFact test (300 real queries, 5,183 documents), all-MiniLM-L6-v2 + LoRA r16, N labelled train pairs\n")
    print("| labelled pairs | epochs | ndcg@10 | Δ vs base | recall@10 | recall@100 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        m = row["metrics"]
        label = "0 (base)" if row["pairs"] == 0 else str(row["pairs"])
        print(f"| {label} | {row['epochs'] or '—'} | {m['ndcg@10']:.4f} | {m['ndcg@10'] - base:+.4f} | "
              f"{m['recall@10']:.4f} | {m['recall@100']:.4f} |")


if __name__ == "__main__":
    main()
