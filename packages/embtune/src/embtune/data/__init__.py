"""Data loading: BEIR folders (corpus, queries, qrels) and training pairs (JSONL / CSV / TSV / in-memory).

Every malformed input raises ``embtune.errors.DataFormatError`` naming the file and line.
"""
from embtune.data.beir import BeirData, load_beir, read_qrels
from embtune.data.pairs import PairsData, as_pairs_data, load_pairs

__all__ = ["BeirData", "PairsData", "as_pairs_data", "load_beir", "load_pairs", "read_qrels"]
