"""Train a reranker from the SciFact train pairs and measure dense vs dense + rerank on real test queries.

    python examples/scifact_finetune.py --out runs/scifact            # the tuned dense MiniLM (LoRA)
    python examples/rerankers/scifact_reranker.py --dense runs/scifact/lora/merged --out runs/scifact-rerank

Steps (each leaves its result in OUT, so a rerun skips what is done):
1. hard negatives: for each SciFact train pair (809 queries, 919 pairs), ``--negatives`` documents
   mined with the dense model (`embtune.pairs.mine_hard_negatives`: the top ranks skipped, a margin
   against false negatives), the same miner the embedder's pipeline uses;
2. the reranker: the embedded all-MiniLM-L6-v2 with a fresh one-logit head (`load_reranker()`),
   trained by ``embtune.train`` with ``--loss`` (binary cross-entropy on 1 positive + N negatives,
   or listwise), full fine-tuning or LoRA, saved merged to OUT/reranker;
3. evaluation on the 300 real SciFact test queries over the full 5,183-document corpus
   (`embtune.eval.two_stage.two_stage_eval`): dense, hybrid (BM25 + dense) and dense + rerank of the
   top ``--top`` candidates, with ms per query. Prints a Markdown table and writes OUT/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"


def mined_pairs(data, dense, out: Path, negatives: int) -> Path:
    """Write OUT/train_pairs.jsonl: train (query, positive, negatives...) rows mined with ``dense``."""
    from embtune.corpus.types import Chunk
    from embtune.pairs import Pair
    from embtune.pairs.negatives import mine_hard_negatives

    path = out / "train_pairs.jsonl"
    if path.is_file():
        return path
    qrels = data.split_qrels("train")
    pairs = [Pair(query=data.queries[q], positive=data.corpus[d], positive_id=d, doc_id=d, builder="qrels")
             for q, docs in qrels.items() for d, score in docs.items() if score > 0]
    chunks = [Chunk(id=d, doc_id=d, text=text) for d, text in data.corpus.items()]
    mined = mine_hard_negatives(pairs, dense, chunks, n=negatives)
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for pair in mined:
            row = {"anchor": pair.query, "positive": pair.positive}
            row.update({f"negative_{i + 1}": text for i, text in enumerate(pair.negatives)})
            if len(pair.negatives) == negatives:  # equal columns in every row
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def train_reranker(pairs: Path, out: Path, args) -> tuple[Path, float]:
    """Train the fresh-head MiniLM reranker on ``pairs``; return (merged folder, minutes)."""
    from embtune.rerankers import train_reranker

    folder = out / "reranker"
    info = out / "reranker_train.json"
    if folder.is_dir() and info.is_file():
        return folder, json.loads(info.read_text())["minutes"]
    start = time.perf_counter()
    _, result, _ = train_reranker(str(pairs), out / "train", save_to=folder, loss=args.loss, full=args.mode == "full",
                                  learning_rate=args.lr, max_length=args.max_length, dtype="fp32",
                                  epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, save_steps=50)
    minutes = (time.perf_counter() - start) / 60
    info.write_text(json.dumps({"minutes": minutes, "steps": result.global_step,
                                "loss_history": result.loss_history, "settings": vars(args)}, indent=2))
    return folder, minutes


def main() -> None:
    """Parse arguments, run the three steps, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact BEIR folder")
    parser.add_argument("--dense", default="runs/scifact/lora/merged", help="the (tuned) dense embedder")
    parser.add_argument("--out", default="runs/scifact-rerank")
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--loss", default="bce", choices=("bce", "listwise"))
    parser.add_argument("--mode", default="full", choices=("full", "lora"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--top", type=int, default=100, help="candidates reranked per query")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-only", action="store_true", help="stop after training the reranker")
    args = parser.parse_args()

    from embtune import load_beir
    from embtune.models.inference import load_inference_model

    data = load_beir(args.data)
    out = Path(args.out)
    dense = load_inference_model(args.dense, dtype="fp32")
    pairs = mined_pairs(data, dense, out, args.negatives)
    print(f"pairs: {pairs}", flush=True)
    folder, minutes = train_reranker(pairs, out, args)
    print(f"reranker: {folder} ({minutes:.1f} min of training)", flush=True)
    if args.train_only:
        return
    from embtune.eval.two_stage import two_stage_eval
    from embtune.rerankers import load_reranker
    from embtune.tables import markdown_table

    reranker = load_reranker(folder, max_length=args.max_length, dtype="fp32", for_inference=True)
    rows = two_stage_eval(dense, {"MiniLM + fresh head, tuned on SciFact train": reranker}, data.corpus,
                          data.queries, data.split_qrels("test"), top=args.top)
    keys = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
    table = markdown_table(["pipeline", *keys, "ms/query"],
                           [[row["method"], *(f"{row[k]:.4f}" for k in keys), f"{row['ms_per_query']:.0f}"]
                            for row in rows])
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    (out / "results.md").write_text(table + "\n")
    print(f"\nSciFact test (300 real queries, 5,183 documents), dense = {args.dense}, rerank top {args.top}\n")
    print(table)


if __name__ == "__main__":
    main()
