"""Pair similarity of the embedded all-MiniLM-L6-v2 vs a tuned model, one table (`embtune eval --task pair-similarity`).

    python examples/tasks/pair_similarity.py runs/sqlite/merged            # TUNED is required

Data: SciFact test queries with each relevant abstract (score 1) and BM25's best-ranked unjudged
abstract (score 0, a hard negative). Spearman and Pearson of the pairs' cosines against those scores.

The same table from the command line:
    embtune eval TUNED --base default --task pair-similarity --task-data runs/task-data/pair_similarity.jsonl
"""
from __future__ import annotations

from _compare import compare

if __name__ == "__main__":
    compare("pair-similarity", __doc__.splitlines()[0])
