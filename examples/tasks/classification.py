"""Classification of the embedded all-MiniLM-L6-v2 vs a tuned model, one table (`embtune eval --task classification`).

    python examples/tasks/classification.py runs/sqlite/merged            # TUNED is required

Data: the same SQLite paragraphs, labelled with their page. Logistic regression on the frozen
embeddings, 5-fold stratified cross-validated predictions; accuracy and macro precision / recall / F1.

The same table from the command line:
    embtune eval TUNED --base default --task classification --task-data runs/task-data/classification.jsonl
"""
from __future__ import annotations

from _compare import compare

if __name__ == "__main__":
    compare("classification", __doc__.splitlines()[0])
