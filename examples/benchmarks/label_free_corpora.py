"""Does the label-free default pay on real queries? `embtune from-corpus` on several BEIR corpora.

    python examples/benchmarks/label_free_corpora.py                       # scifact, nfcorpus, arguana
    python examples/benchmarks/label_free_corpora.py --corpora nfcorpus --extra --max-steps 60

For each corpus (a BEIR folder under ``--data-root``: corpus.jsonl, queries.jsonl, qrels/test.tsv;
see ``examples/benchmarks/CORPORA.md`` for where each came from and how to rebuild it) this runs the
command a team would run, with the corpus alone as training input:

    embtune from-corpus DATA/NAME --out OUT/NAME --eval-labels DATA/NAME/qrels/test.tsv \\
        --queries DATA/NAME/queries.jsonl [--extra flags]

``--eval-labels`` only judges: the real test queries are never trained on nor used to choose (the
run's selection validates on pseudo-queries of held-out documents). Each run folder resumes, so an
interrupted benchmark continues where it stopped. The script prints one Markdown table: base vs the
shipped model on the real test queries (nDCG@10, recall@10), BM25, and what the selection chose.
ArguAna's queries are themselves documents of its corpus; from-corpus has no BEIR-style
``ignore_identical_ids``, so there a query's own document ranks first for both models (absolute figures
lower than BEIR's, the difference comparable).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def run_corpus(name: str, data_root: Path, out_root: Path, extra: list[str]) -> dict:
    """Run (or resume) from-corpus on one corpus; return its report.json with the wall time added."""
    data, out = data_root / name, out_root / name
    command = [str(Path(sys.executable).parent / "embtune"), "from-corpus", str(data), "--out", str(out),
               "--eval-labels", str(data / "qrels" / "test.tsv"), "--queries", str(data / "queries.jsonl"), *extra]
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    report = json.loads((out / "report.json").read_text())
    report["wall_minutes"] = (time.perf_counter() - start) / 60
    return report


def table(reports: dict[str, dict]) -> str:
    """The Markdown table of the module docstring."""
    lines = ["| corpus | test queries | base nDCG@10 | shipped nDCG@10 | Δ | base R@10 | shipped R@10 | BM25 nDCG@10 "
             "| selection |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in reports.items():
        before, after = r["before"], r.get("after", r["before"])
        bm25 = (r.get("bm25") or {}).get("ndcg@10")
        choice = (r.get("selection") or {}).get("message", "off")
        lines.append(f"| {name} | {r['evaluation']['queries']} | {before['ndcg@10']:.4f} | {after['ndcg@10']:.4f} "
                     f"| {after['ndcg@10'] - before['ndcg@10']:+.4f} | {before['recall@10']:.4f} "
                     f"| {after['recall@10']:.4f} | {'—' if bm25 is None else f'{bm25:.4f}'} | {choice} |")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run every corpus in turn, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="folder holding the BEIR folders")
    parser.add_argument("--corpora", default="scifact,nfcorpus,arguana", help="comma-separated folder names")
    parser.add_argument("--out", type=Path, default=Path("runs/label-free"), help="run folders go here")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further from-corpus flags")
    args = parser.parse_args()
    reports = {name: run_corpus(name, args.data_root, args.out, args.extra)
               for name in [c.strip() for c in args.corpora.split(",") if c.strip()]}
    print("\nReal test queries, all-MiniLM-L6-v2, `embtune from-corpus` label-free defaults"
          + (f" + {' '.join(args.extra)}" if args.extra else "") + "\n")
    print(table(reports))


if __name__ == "__main__":
    main()
