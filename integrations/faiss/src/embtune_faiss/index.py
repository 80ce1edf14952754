"""`EmbtuneFaissIndex`: a FAISS index of a model's document embeddings, with its id map; no pickle.

Choices:

* any ``faiss.index_factory`` string (``Flat``, ``HNSW32``, ``IVF64,Flat``, ``IVF64,PQ48``,
  ``OPQ16,IVF64,PQ16``...) with ``METRIC_INNER_PRODUCT`` on L2-normalised vectors, i.e. cosine;
* indexes that need training (IVF, PQ, OPQ) are trained on the vectors being indexed (without
  FAISS' polysemous code training, useless for plain search and slow); fewer
  vectors than the clustering needs (``nlist`` for IVF, ``2**nbits`` for PQ) is a ConfigError that
  says how many are needed, fewer than FAISS recommends (39 per centroid) a logged warning;
* all vectors go in with ONE batched ``index.add``;
* search parameters: ``nprobe=16`` (capped at ``nlist``) for IVF and ``efSearch=64`` for HNSW
  unless ``search_params`` (a FAISS ParameterSpace string such as ``"nprobe=32,efSearch=128"``)
  says otherwise; HNSW explores at least ``k`` candidates whatever ``efSearch`` is;
* results are sorted by (score descending, id ascending), the tie order of
  ``embtune.eval.exact_search``; slots FAISS cannot fill (``-1``) are dropped;
* ``save(folder)`` writes ``index.faiss`` (``faiss.write_index``) and ``index.json`` (factory, dim,
  model reference, search parameters, the row → id list) into a folder swapped in atomically;
  ``load`` reads them back and checks they agree. No pickle anywhere.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

try:
    import faiss
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_faiss needs faiss: pip install faiss-cpu") from exc

from embtune.errors import ConfigError, DataFormatError, EmbtuneError
from embtune.models.inference import (ModelLike, encode_texts, load_inference_model, model_reference,
                                      truncate_normalize)
from embtune.utils.atomic import atomic_dir

logger = logging.getLogger(__name__)

FORMAT = "embtune-faiss"
VERSION = 1
INDEX_FILE = "index.faiss"
META_FILE = "index.json"
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
POINTS_PER_CENTROID = 39  # FAISS warns below this many training points per centroid


def _inner(index: Any) -> Any:
    """The downcast index, looking through an IndexPreTransform (OPQ, PCA...)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _ivf(index: Any) -> Any | None:
    """The IVF layer of ``index``, or None when it has none."""
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError):
        return None


def _is_hnsw(index: Any) -> bool:
    return isinstance(_inner(index), faiss.IndexHNSW)


def _prepare_training(index: Any) -> None:
    """Turn off polysemous code training on PQ layers (FAISS' factory turns it on: it only serves
    Hamming-filtered search, which embtune never enables, and it is most of a PQ index's training
    time), and FAISS' per-clustering "provide at least N training points" prints (``build`` logs
    one warning instead)."""
    for layer in (_inner(index), _ivf(index)):
        if layer is None:
            continue
        if hasattr(layer, "do_polysemous_training"):
            layer.do_polysemous_training = False
        if hasattr(layer, "cp"):
            layer.cp.min_points_per_centroid = 1
        pq = getattr(layer, "pq", None)
        if pq is not None:
            pq.cp.min_points_per_centroid = 1


def training_requirements(index: Any) -> tuple[int, int]:
    """``(minimum, recommended)`` number of training vectors for a FAISS ``index``; (0, 0) if it
    needs no training. Minimum = the largest clustering (IVF ``nlist``, PQ ``2**nbits`` centroids
    per sub-quantizer); recommended = 39 times that, below which FAISS warns."""
    if index.is_trained:
        return 0, 0
    centroids = 1
    ivf = _ivf(index)
    if ivf is not None:
        centroids = max(centroids, int(ivf.nlist))
    pq = getattr(_inner(index), "pq", None)
    if pq is not None:
        centroids = max(centroids, int(pq.ksub))
    return centroids, POINTS_PER_CENTROID * centroids


def make_index(dim: int, factory: str) -> Any:
    """An empty inner-product FAISS index of dimension ``dim`` from a factory string; ConfigError
    (naming the string) when FAISS rejects it, e.g. PQ{m} with ``dim % m != 0``."""
    if not isinstance(factory, str) or not factory.strip():
        raise ConfigError(f"index factory must be a non-empty string such as 'Flat' or 'HNSW32', "
                          f"got {factory!r}")
    try:
        return faiss.index_factory(int(dim), factory.strip(), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "rejected"
        if "d % M" in str(exc):
            reason = f"the PQ sub-quantizer count must divide the dimension {dim}"
        raise ConfigError(f"FAISS cannot build index {factory!r} for {dim}-dim vectors: {reason}") from None


def default_search_params(index: Any) -> str:
    """The ParameterSpace string embtune applies when none is given: ``nprobe`` for IVF indexes,
    ``efSearch`` for HNSW ones ("" for Flat/PQ)."""
    parts = []
    ivf = _ivf(index)
    if ivf is not None:
        parts.append(f"nprobe={min(DEFAULT_NPROBE, int(ivf.nlist))}")
    if _is_hnsw(index):
        parts.append(f"efSearch={DEFAULT_EF_SEARCH}")
    return ",".join(parts)


def apply_search_params(index: Any, params: str) -> None:
    """Set FAISS search parameters from a ``"name=value,..."`` string; ConfigError for a name this
    index does not have or a malformed string."""
    if not params:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot set search parameters {params!r} on this index: "
                          f"{str(exc).strip().splitlines()[-1]}") from None


def _check_ids(ids: Sequence[Any], n: int) -> list[str]:
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{n} embeddings but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate id {dup!r}")
    return ids


class EmbtuneFaissIndex:
    """A FAISS inner-product index plus the corpus ids of its rows and the model that embedded them.

    Attributes: ``index`` (the ``faiss.Index``), ``ids`` (row → document id), ``factory`` (the
    factory string), ``dim`` (vector size), ``truncate_dim`` (Matryoshka cut applied to the model's
    vectors, None for none), ``model`` (folder / hub id that reloads the model, or None),
    ``search_params`` (the ParameterSpace string in force).
    """

    def __init__(self, index: Any, ids: Sequence[str], *, factory: str, model: str | None = None,
                 truncate_dim: int | None = None, search_params: str | None = None):
        """Wrap an already filled FAISS ``index`` whose row i holds document ``ids[i]``; applies
        ``search_params`` (None: embtune's defaults). ValueError when the sizes disagree."""
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index = index
        self.ids = _check_ids(ids, index.ntotal)
        self.factory = factory
        self.model = model
        self.truncate_dim = truncate_dim
        self.search_params = default_search_params(index) if search_params is None else search_params
        apply_search_params(index, self.search_params)

    @property
    def dim(self) -> int:
        """Dimension of the indexed vectors."""
        return int(self.index.d)

    def __len__(self) -> int:
        """Number of indexed vectors."""
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        """One line: factory, size, dimension, model."""
        return (f"EmbtuneFaissIndex(factory={self.factory!r}, n={len(self)}, dim={self.dim}, "
                f"model={self.model!r})")

    @classmethod
    def build(cls, embeddings: Any, ids: Sequence[Any], factory: str = "Flat", *, model: str | None = None,
              truncate_dim: int | None = None, search_params: str | None = None) -> "EmbtuneFaissIndex":
        """Index ``embeddings`` [n, d] (array or tensor) whose row i is document ``ids[i]``.

        Vectors are cut to ``truncate_dim`` (if given) and L2-normalised; indexes that need it are
        trained on them; then one batched ``add``. ``model`` is only recorded (for ``save`` and
        ``search_texts``). ConfigError for a factory FAISS rejects or too few vectors to train;
        ValueError for empty input, mismatched or duplicate ids.
        """
        x = truncate_normalize(embeddings, truncate_dim, normalize=True)
        if x.shape[0] == 0:
            raise ValueError("no embeddings to index")
        ids = _check_ids(ids, x.shape[0])
        index = make_index(x.shape[1], factory)
        minimum, recommended = training_requirements(index)
        if not index.is_trained:
            if x.shape[0] < minimum:
                raise ConfigError(
                    f"index {factory!r} needs at least {minimum} vectors to train (its largest clustering "
                    f"has {minimum} centroids) but only {x.shape[0]} were given; use fewer IVF lists or "
                    f"PQ bits (e.g. IVF{max(1, x.shape[0] // POINTS_PER_CENTROID)},Flat), or 'Flat'/'HNSW32'")
            if x.shape[0] < recommended:
                logger.warning("index %r: training on %d vectors, FAISS recommends >= %d", factory,
                               x.shape[0], recommended)
            _prepare_training(index)
            index.train(x)
        index.add(x)
        return cls(index, ids, factory=factory, model=model, truncate_dim=truncate_dim,
                   search_params=search_params)

    @classmethod
    def from_corpus(cls, model: ModelLike, corpus: dict[str, str], factory: str = "Flat", *,
                    truncate_dim: int | None = None, batch_size: int = 64, prompt: str | None = None,
                    search_params: str | None = None, show_progress: bool = False) -> "EmbtuneFaissIndex":
        """Embed ``corpus`` (doc id → text) with ``model`` (folder, hub id, None for the default
        model, or an in-memory SentenceTransformer) through ``encode_document`` and index it; the
        model reference is kept when the model was given by name."""
        st = load_inference_model(model)
        ids = list(corpus)
        emb = encode_texts(st, [corpus[i] for i in ids], "document", batch_size=batch_size, normalize=False,
                           prompt=prompt, show_progress=show_progress)
        return cls.build(emb, ids, factory, model=model_reference(model), truncate_dim=truncate_dim,
                         search_params=search_params)

    def add(self, embeddings: Any, ids: Sequence[Any]) -> None:
        """Append ``embeddings`` [n, full or index dim] for new ``ids`` in one batched ``add`` (the
        same truncation and normalisation as ``build``); ValueError for an id already indexed."""
        cut = self.truncate_dim if np.shape(embeddings)[1] != self.dim else None
        x = truncate_normalize(embeddings, cut, normalize=True)
        new = _check_ids(ids, x.shape[0])
        clash = set(new) & set(self.ids)
        if clash:
            raise ValueError(f"id {sorted(clash)[0]!r} is already in the index")
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have {x.shape[1]} dims, the index {self.dim}")
        self.index.add(x)
        self.ids.extend(new)

    def search(self, query_emb: Any, k: int) -> tuple[list[list[float]], list[list[str]]]:
        """Top-``k`` documents of each query vector [q, dim] (normalised here).

        Returns ``(scores, ids)``: per query, inner products (cosines) best first and the matching
        document ids, ties by ascending id; fewer than k when the index holds fewer or FAISS could
        not fill every slot. ValueError for a dimension mismatch or k < 1.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = truncate_normalize(query_emb, None, normalize=True)
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have {q.shape[1]} dims, the index {self.dim}")
        if q.shape[0] == 0 or len(self) == 0:
            return [[] for _ in range(q.shape[0])], [[] for _ in range(q.shape[0])]
        dist, rows = self.index.search(q, int(min(k, len(self))))
        scores, ranked = [], []
        for d_row, i_row in zip(dist.tolist(), rows.tolist()):
            hits = sorted(((-s, self.ids[i]) for s, i in zip(d_row, i_row) if i >= 0))
            scores.append([-s for s, _ in hits])
            ranked.append([doc for _, doc in hits])
        return scores, ranked

    def load_model(self, **kwargs: Any) -> Any:
        """Load the model recorded with the index (``load_inference_model`` keyword arguments pass
        through); EmbtuneError when the index was built from an in-memory model."""
        if not self.model:
            raise EmbtuneError("this index records no model (it was built from an in-memory model); "
                               "pass model= to search_texts")
        return load_inference_model(self.model, **kwargs)

    def search_texts(self, queries: Sequence[str], k: int = 10, model: ModelLike = None, *,
                     batch_size: int = 64,
                     prompt: str | None = None) -> tuple[list[list[float]], list[list[str]]]:
        """Embed ``queries`` with ``encode_query`` (``model``, or the recorded one when None) and
        ``search`` them; same return value as ``search``."""
        st = self.load_model() if model is None else load_inference_model(model)
        emb = encode_texts(st, list(queries), "query", batch_size=batch_size, normalize=True, prompt=prompt,
                           truncate_dim=self.truncate_dim)
        return self.search(emb, k)

    def metadata(self) -> dict[str, Any]:
        """The ``index.json`` content (everything but the FAISS vectors)."""
        return {"format": FORMAT, "version": VERSION, "factory": self.factory, "metric": "inner_product",
                "normalized": True, "dim": self.dim, "truncate_dim": self.truncate_dim, "model": self.model,
                "search_params": self.search_params, "ntotal": len(self), "ids": list(self.ids)}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``index.faiss`` and ``index.json`` into ``folder`` (replaced atomically); returns it.

        EmbtuneError naming the file when it cannot be written (a full disk, say); ``folder`` is then
        left as it was."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            try:
                faiss.write_index(self.index, str(tmp / INDEX_FILE))
            except RuntimeError as exc:  # FAISS reports I/O failures as "... (No space left on device)"
                reason = re.search(r"write error in .*\(([^()]+)\)\s*$", str(exc))
                if reason is None:
                    raise
                raise EmbtuneError(f"cannot write the index ({reason.group(1)})",
                                   path=folder / INDEX_FILE) from None
            (tmp / META_FILE).write_text(json.dumps(self.metadata(), ensure_ascii=False) + "\n",
                                         encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "EmbtuneFaissIndex":
        """Read an index written by ``save``; DataFormatError (naming the file) when a file is
        missing, of another format, or when ids, size and dimension disagree."""
        folder = Path(folder)
        meta_path, index_path = folder / META_FILE, folder / INDEX_FILE
        for path in (meta_path, index_path):
            if not path.is_file():
                raise DataFormatError("missing file (not an embtune FAISS index folder)", path=path)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(f"not valid JSON ({exc})", path=meta_path) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataFormatError(f'"format" is not {FORMAT!r}', path=meta_path)
        if meta.get("version") != VERSION:
            raise DataFormatError(f"unsupported version {meta.get('version')!r} (this embtune reads "
                                  f"{VERSION})", path=meta_path)
        ids = meta.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataFormatError('"ids" must be a list of strings', path=meta_path)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise DataFormatError(f"FAISS cannot read it: {str(exc).strip().splitlines()[-1]}",
                                  path=index_path) from None
        if index.ntotal != len(ids) or index.ntotal != meta.get("ntotal") or index.d != meta.get("dim"):
            raise DataFormatError(f"index.faiss holds {index.ntotal} vectors of dim {index.d} but index.json "
                                  f"lists {len(ids)} ids, ntotal={meta.get('ntotal')}, dim={meta.get('dim')}",
                                  path=folder)
        return cls(index, ids, factory=meta["factory"], model=meta.get("model"),
                   truncate_dim=meta.get("truncate_dim"), search_params=meta.get("search_params", ""))
