"""Training pairs from chunks: builders (labels, heuristics, an LLM), filtering, hard negatives, split.

Each builder has ``.build(chunks, ...) -> list[Pair]``; ``filtering.filter_pairs``,
``negatives.mine_hard_negatives`` and ``split.split_by_document`` take and return Pairs. The
builders' modules are imported on use, so ``import embtune.pairs`` stays light.
"""
from embtune.pairs.types import EvalQuery, Pair

__all__ = ["EvalQuery", "Pair"]
