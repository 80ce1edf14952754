"""embtune_faiss: FAISS indexes over an embtune model's embeddings, and retrieval evaluation through them.

``EmbtuneFaissIndex`` builds any FAISS factory index (inner product on normalised vectors, trained
when needed, one batched add), searches it and saves it with its id map and model reference as
``index.faiss`` + ``index.json`` (no pickle). ``evaluate`` reports recall/precision/MRR/nDCG/MAP/hit
rate through an index, what the index loses against exact search (``recall_vs_exact@k``), a
Matryoshka dims sweep and BM25 + dense hybrid rows. Needs ``pip install embtune-faiss``.
"""
from embtune_faiss.evaluation import evaluate, evaluate_embeddings, recall_vs_exact, rows_table
from embtune_faiss.hybrid import bm25_rankings, reciprocal_rank_fusion
from embtune_faiss.index import EmbtuneFaissIndex, training_requirements

__all__ = [
    "EmbtuneFaissIndex",
    "bm25_rankings",
    "evaluate",
    "evaluate_embeddings",
    "recall_vs_exact",
    "reciprocal_rank_fusion",
    "rows_table",
    "training_requirements",
]
