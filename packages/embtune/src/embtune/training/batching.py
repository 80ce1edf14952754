"""No-duplicate batches: no text appears in two rows of the same batch, in any column.

With in-batch negatives every other row's documents are negatives for an anchor, so a text that
sits in two rows of one batch is scored as both positive and negative (a false negative). The
planner shuffles the rows with a generator seeded by ``(seed, epoch)`` only, then fills batches
greedily in that order: a row whose texts clash with the batch being filled waits for a later
batch (the same rule as sentence-transformers' NoDuplicatesBatchSampler). Rows are never dropped;
the last batches of an epoch may be smaller. The plan of an epoch is a pure function of the data,
``batch_size``, ``seed`` and the epoch number, which is what makes exact resume possible.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def intern_rows(rows: Sequence[Sequence[str]]) -> tuple[list[str], list[tuple[int, ...]]]:
    """Give every distinct text an integer id.

    In: ``rows``, each the texts of one training row (anchor, positive, negatives...).
    Out: ``(texts, row_ids)`` where ``texts[i]`` is the text with id ``i`` and ``row_ids[r]`` holds
    the ids of row ``r``'s texts in column order. Equal strings share an id across columns.
    """
    index: dict[str, int] = {}
    texts: list[str] = []
    row_ids: list[tuple[int, ...]] = []
    for row in rows:
        ids = []
        for text in row:
            tid = index.get(text)
            if tid is None:
                tid = index[text] = len(texts)
                texts.append(text)
            ids.append(tid)
        row_ids.append(tuple(ids))
    return texts, row_ids


class BatchPlanner:
    """Deterministic no-duplicate batch plans, one per epoch."""

    def __init__(self, row_ids: Sequence[tuple[int, ...]], batch_size: int, seed: int):
        """``row_ids`` from ``intern_rows``; ``batch_size`` rows per batch; ``seed`` fixes the order."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.row_sets = [frozenset(ids) for ids in row_ids]
        self.batch_size = batch_size
        self.seed = seed
        seen: set[int] = set()
        self.has_shared_texts = False
        for ids in self.row_sets:
            if not seen.isdisjoint(ids):
                self.has_shared_texts = True
                break
            seen.update(ids)

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.row_sets)

    def order(self, epoch: int) -> list[int]:
        """The shuffled row order of ``epoch`` (a function of seed and epoch only)."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(len(self.row_sets)).tolist()

    def batches(self, epoch: int) -> list[list[int]]:
        """Row indices of every batch of ``epoch``, in training order; no two rows of a batch share a text."""
        order = self.order(epoch)
        size = self.batch_size
        if not self.has_shared_texts:
            return [order[i:i + size] for i in range(0, len(order), size)]
        remaining = dict.fromkeys(order)
        plan: list[list[int]] = []
        while remaining:
            batch: list[int] = []
            used: set[int] = set()
            for row in remaining:
                ids = self.row_sets[row]
                if used.isdisjoint(ids):
                    batch.append(row)
                    used.update(ids)
                    if len(batch) == size:
                        break
            for row in batch:
                del remaining[row]
            plan.append(batch)
        return plan

    def num_batches(self, epoch: int) -> int:
        """Number of batches in ``epoch`` (computed without building the plan when no text is shared)."""
        if not self.has_shared_texts:
            return -(-len(self.row_sets) // self.batch_size)
        return len(self.batches(epoch))


def steps_in_epoch(num_batches: int, accumulation: int) -> int:
    """Optimizer steps for an epoch of ``num_batches`` micro-batches; a short last group still steps."""
    return -(-num_batches // accumulation)
