"""Records of the pair stages: a training ``Pair`` and a held-out ``EvalQuery``.

``to_dict`` gives the JSONL lines of ``INTERFACE.md`` (``pairs.jsonl``, ``eval.jsonl``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pair:
    """One training example: a query and the chunk text it should retrieve.

    ``positive`` is the text trained on (usually the chunk text; the inverse-cloze builder removes
    the query sentence from it), ``positive_id`` the chunk id (or a text hash for positives that
    are not chunks), ``doc_id`` the source document, ``builder`` the name of the builder that made
    it, ``negatives``/``negative_ids`` hard-negative chunk texts and ids (filled by mining).
    """

    query: str
    positive: str
    positive_id: str
    doc_id: str
    builder: str
    negatives: list[str] = field(default_factory=list)
    negative_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The pairs.jsonl line."""
        return {"query": self.query, "positive": self.positive, "positive_id": self.positive_id,
                "doc_id": self.doc_id, "builder": self.builder, "negatives": list(self.negatives),
                "negative_ids": list(self.negative_ids)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Pair":
        """Inverse of ``to_dict``."""
        return cls(query=obj["query"], positive=obj["positive"], positive_id=str(obj["positive_id"]),
                   doc_id=str(obj["doc_id"]), builder=obj.get("builder", ""),
                   negatives=list(obj.get("negatives", [])), negative_ids=list(obj.get("negative_ids", [])))


@dataclass
class EvalQuery:
    """A held-out query: ``relevant`` lists the ids of the chunks that answer it."""

    query_id: str
    query: str
    relevant: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The eval.jsonl line."""
        return {"query_id": self.query_id, "query": self.query, "relevant": list(self.relevant)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "EvalQuery":
        """Inverse of ``to_dict``."""
        return cls(query_id=str(obj["query_id"]), query=obj["query"], relevant=list(obj["relevant"]))
