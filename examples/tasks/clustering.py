"""Clustering of the embedded all-MiniLM-L6-v2 vs a tuned model, one table (`embtune eval --task clustering`).

    python examples/tasks/clustering.py runs/sqlite/merged            # TUNED is required

Data: paragraphs of 21 pages of the bundled SQLite documentation, labelled with their page
(build_task_data.py). k-means with one cluster per page on the normalised embeddings; NMI, adjusted Rand
and V-measure against the pages, and the cosine silhouette of the true pages.

The same table from the command line:
    embtune eval TUNED --base default --task clustering --task-data runs/task-data/clustering.jsonl
"""
from __future__ import annotations

from _compare import compare

if __name__ == "__main__":
    compare("clustering", __doc__.splitlines()[0])
