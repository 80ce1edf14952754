"""Training rows for a reranker from the embedder's data: the same pairs, hard negatives included.

Listwise losses take the rows as they are: (query, positive, negative_1, ...). Pointwise losses
(binary cross-entropy) need one labelled pair per row, so each (query, positive, negatives...) row
becomes ``(query, positive, 1.0)`` and one ``(query, negative_i, 0.0)`` per negative. Data that
already has a ``label`` column is used unchanged.
"""
from __future__ import annotations

from typing import Any

from embtune.data.pairs import PairsData, as_pairs_data

LABEL = "label"


def pointwise_pairs(data: PairsData) -> PairsData:
    """Expand rows of (anchor, positive, negatives...) into labelled (query, document, label) pairs.

    In: PairsData without a label column. Out: PairsData with columns ``query``, ``document``,
    ``label`` (1.0 for the positive, 0.0 for each negative), rows in the input's order.
    """
    anchor, positive, *negatives = data.columns
    rows = []
    for row in data.rows:
        rows.append({"query": row[anchor], "document": row[positive], LABEL: 1.0})
        rows.extend({"query": row[anchor], "document": row[column], LABEL: 0.0} for column in negatives)
    return PairsData(["query", "document", LABEL], rows, "labelled", data.source)


def reranker_training_data(data: Any, pointwise: bool) -> PairsData:
    """The rows a reranker trains on. In: anything ``as_pairs_data`` accepts; whether the loss is
    pointwise. Out: PairsData (expanded by `pointwise_pairs` when pointwise and unlabelled)."""
    pairs = as_pairs_data(data)
    if pointwise and LABEL not in pairs.columns:
        return pointwise_pairs(pairs)
    return pairs
