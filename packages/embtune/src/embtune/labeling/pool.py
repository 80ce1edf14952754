"""Questions in, pooled candidate documents out: the judging pool of ``embtune label``.

Pooling is how TREC builds its qrels: several systems each retrieve their top k, the union is
judged, and a document no system found counts as not relevant. Here the systems are the run's base
model, its tuned model (``RUN/merged``, when the run trained one) and BM25 (when ``bm25s`` is
installed). Each ranks the run's chunks (chunks.jsonl); a chunk ranking becomes a document ranking
with each document at the rank of its best chunk (MaxP, as ``from-corpus --eval-labels`` scores),
and the first ``k`` documents of each system are pooled. The pool of a question is deduplicated and
shuffled with a seed derived from ``seed`` and the question id (the same order on every run, and
adding a question reorders no other), so the judge cannot tell which system found a document or how
high it ranked. The passage shown for a document is its best-ranked chunk over the systems.

The dense systems reuse the run's chunk embeddings (``work/chunk_embeddings.npy`` and
``work/chunk_embeddings.merged.npy``) when they match chunks.jsonl, and encode the chunks otherwise;
the models load with the options recorded in ``RUN/run_config.toml`` (model, max_seq_length, dtype,
prompts). The pool is cached in ``RUN/labels/pool.json`` under a key of k, seed, systems, chunks.jsonl
and the models, so a resumed session loads no model unless a question is new.

Question ids: a JSONL questions file gives them (``_id``), a text file's questions get ``q-`` + 10
hex digits of the sha256 of their text, so editing, adding or reordering lines keeps the ids of the
others (and their answers).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from embtune.data._io import iter_jsonl, iter_lines, require_file
from embtune.errors import DataFormatError, EmbtuneError
from embtune.utils.atomic import atomic_write_json

LABELS_DIR = "labels"
POOL_FILE = "pool.json"
SYSTEMS = ("base", "tuned", "bm25")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_POOL_VERSION = 1


@dataclass(frozen=True)
class Question:
    """One question to judge: ``id`` (a qrels query id) and its ``text``."""

    id: str
    text: str


@dataclass
class Candidate:
    """A pooled document of one question: ``doc_id`` (chunks.jsonl ``doc_id``), ``chunk_id`` (its
    best-ranked chunk, the passage shown) and ``found_by`` (the systems that retrieved it, never shown
    to the judge)."""

    doc_id: str
    chunk_id: str
    found_by: list[str] = field(default_factory=list)


def question_id(text: str) -> str:
    """Id of a question of a text file: ``q-`` + the first 10 hex digits of sha256(text)."""
    return "q-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def check_question_id(value: Any, path: Path, line: int) -> str:
    """A question id as a string; DataFormatError (file:line) unless a non-empty string or integer
    without tabs or line breaks (it becomes a column of qrels.tsv)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(f'"_id" must be a string, got {type(value).__name__}', path=path, line=line)
    value = str(value).strip()
    if not value or any(ch in value for ch in "\t\r\n"):
        raise DataFormatError(f"question id {value!r} is empty or holds a tab or line break",
                              path=path, line=line)
    return value


def read_questions(path: str | os.PathLike) -> list[Question]:
    """The questions of a file, in file order.

    In: a ``.jsonl``/``.ndjson`` file with ``{"text": ..., "_id": optional}`` per line (no ``_id``:
    the text's ``question_id``), or any other file with one question per line (blank lines skipped).
    Out: the Questions. Raises DataFormatError naming the file and line for bad JSON, a missing or
    blank text, a bad id or a repeated id or question; naming the file when it is missing, empty or
    holds no question.
    """
    path = require_file(path)
    questions: list[Question] = []
    seen_ids: dict[str, int] = {}
    seen_texts: dict[str, int] = {}

    def add(qid: str, text: str, line: int) -> None:
        """Keep one question; DataFormatError for a repeated text or id."""
        if text in seen_texts:
            raise DataFormatError(f"same question as line {seen_texts[text]}", path=path, line=line)
        if qid in seen_ids:
            raise DataFormatError(f"question id {qid!r} repeats line {seen_ids[qid]}", path=path, line=line)
        seen_ids[qid], seen_texts[text] = line, line
        questions.append(Question(qid, text))

    if path.suffix.lower() in JSONL_SUFFIXES:
        for line, obj in iter_jsonl(path):
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                raise DataFormatError('each line needs a non-empty "text" string', path=path, line=line)
            text = " ".join(text.split())
            qid = check_question_id(obj["_id"], path, line) if "_id" in obj else question_id(text)
            add(qid, text, line)
    else:
        for line, raw in iter_lines(path):
            text = " ".join(raw.split())
            if text:
                add(question_id(text), text, line)
    if not questions:
        raise DataFormatError('no question in the file (one question per line, or JSONL with "text")',
                              path=path)
    return questions


def read_run_config(run_dir: Path) -> "LoadSettings":
    """The model-loading options a run used (``RUN/run_config.toml``; defaults where it is missing or
    silent): ``model``, ``max_seq_length``, ``dtype``, prompts, ``instruction``, ``allow_pickle``,
    ``trust_remote_code``. DataFormatError naming the file when it cannot be parsed."""
    from dataclasses import fields

    from embtune.pipeline.run_config import RUN_CONFIG, read_config_file
    from embtune.pipeline.settings import LoadSettings

    path = run_dir / RUN_CONFIG
    config = read_config_file(path)[0] if path.is_file() else {}
    return LoadSettings(**{f.name: config[f.name] for f in fields(LoadSettings) if f.name in config})


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path; EmbtuneError naming it unless it is a folder holding chunks.jsonl."""
    run = Path(run_dir)
    if not run.is_dir():
        raise EmbtuneError("run folder does not exist (make one with `embtune from-corpus DOCS --out RUN`)",
                           path=run)
    if not (run / "chunks.jsonl").is_file():
        raise EmbtuneError("has no chunks.jsonl: not an embtune run folder (make one with `embtune "
                           "from-corpus` or `embtune pairs`)", path=run)
    return run


def _top_documents(ranking: list[str], doc_of: dict[str, str], k: int) -> list[tuple[str, str]]:
    """The first ``k`` documents of a chunk ranking as ``(doc id, its best chunk id)``."""
    out: dict[str, str] = {}
    for chunk in ranking:
        out.setdefault(doc_of[chunk], chunk)
        if len(out) == k:
            break
    return list(out.items())


def merge_pool(qid: str, rankings: dict[str, list[tuple[str, str]]], seed: int) -> list[Candidate]:
    """One question's pool from each system's ``[(doc id, best chunk id)]`` (best first).

    Out: every document once, ``found_by`` in system order, the chunk shown being the one of the
    system that ranked the document highest (earlier system on a tie), in an order shuffled with
    ``random.Random(f"{seed}:{qid}")`` from the sorted doc ids (independent of which system found what).
    """
    best: dict[str, tuple[int, int, str]] = {}
    found: dict[str, list[str]] = {}
    for s, (name, ranked) in enumerate(rankings.items()):
        for rank, (doc, chunk) in enumerate(ranked):
            found.setdefault(doc, []).append(name)
            if doc not in best or (rank, s) < best[doc][:2]:
                best[doc] = (rank, s, chunk)
    docs = sorted(best)
    random.Random(f"{seed}:{qid}").shuffle(docs)
    return [Candidate(doc, best[doc][2], found[doc]) for doc in docs]


class _Systems:
    """The retrieval systems of one run, loaded on first use."""

    def __init__(self, run: Path, chunks: list[dict[str, Any]], config: SimpleNamespace, model: str | None,
                 use_bm25: bool, batch_size: int, show_progress: bool):
        self.run, self.chunks, self.config = run, chunks, config
        self.base_override = model
        self.batch_size, self.show_progress = batch_size, show_progress
        self.tuned = run / "merged" if (run / "merged" / "modules.json").is_file() else None
        from embtune.eval import bm25

        self.bm25 = use_bm25 and bm25.available()
        self.bm25_missing = use_bm25 and not self.bm25

    def base_source(self) -> str:
        """The base model to load: ``--model``, else the run's model, else the embedded default."""
        from embtune.models.names import resolve_model

        return resolve_model(self.base_override or self.config.model)

    def names(self) -> list[str]:
        """The systems pooled, in ``SYSTEMS`` order."""
        return [n for n, on in zip(SYSTEMS, (True, self.tuned is not None, self.bm25)) if on]

    def key(self, k: int, seed: int) -> str:
        """Identity of the pool: k, seed, systems, chunks.jsonl and the models' contents and options."""
        from embtune.pipeline.manifest import hash_file, model_fingerprint

        base = self.base_source()
        opts = {k: v for k, v in asdict(self.config).items() if k != "model"}
        parts = {"k": k, "seed": seed, "systems": self.names(),
                 "chunks": hash_file(self.run / "chunks.jsonl"),
                 "base": model_fingerprint(base) if Path(base).exists() else base, "options": opts,
                 "tuned": model_fingerprint(self.tuned) if self.tuned else None}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def _embeddings(self, model: Any, cached: Path | None) -> Any:
        """The model's chunk embeddings: the run's cached matrix when it matches, else encoded now."""
        from embtune.models.inference import embedding_dim
        from embtune.pairs.embeddings import encode_chunk_texts
        from embtune.pipeline.records import ChunkTexts
        from embtune.pipeline.stages import load_embeddings

        if cached is not None and cached.is_file():
            emb = load_embeddings(cached)
            if emb.shape == (len(self.chunks), embedding_dim(model)):
                return emb
        with ChunkTexts(self.run / "chunks.jsonl") as texts:
            return encode_chunk_texts(model, texts, texts.lengths, self.show_progress)

    def rank(self, name: str, queries: list[str], depth: int) -> list[list[str]]:
        """Chunk ids ranked by system ``name`` for each query, ``depth`` deep."""
        ids = [c["id"] for c in self.chunks]
        if name == "bm25":
            from embtune.eval.bm25 import bm25_rankings

            texts = [f"{c['title']}\n{c['text']}" if c["title"] else c["text"] for c in self.chunks]
            return bm25_rankings(texts, ids, queries, depth)
        from embtune.pipeline.evaluation import rank_chunks
        from embtune.models.inference import load_inference_model
        from embtune.pipeline.stages import EMBEDDINGS
        from embtune.pipeline.stages_model import MERGED_EMBEDDINGS

        if name == "base":
            model = load_inference_model(self.base_source(), **self.config.load_options())
            cached = None if self.base_override else self.run / EMBEDDINGS
        else:
            model = load_inference_model(str(self.tuned), **self.config.load_options(base=False))
            cached = self.run / MERGED_EMBEDDINGS
        emb = self._embeddings(model, cached)
        return rank_chunks(model, queries, ids, emb, depth, self.batch_size, show_progress=False)


def _read_cache(path: Path, key: str) -> dict[tuple[str, str], list[Candidate]]:
    """``{(question id, text): pool}`` of the cached pool with this key ({} when absent or stale)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != _POOL_VERSION or data.get("key") != key:
            return {}
        return {(q["id"], q["text"]): [Candidate(**c) for c in q["candidates"]] for q in data["questions"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a cache only: anything unreadable is recomputed


def read_pooled_questions(run_dir: str | os.PathLike) -> list[Question]:
    """The questions of the last pool of a run (``RUN/labels/pool.json``), in their order; EmbtuneError
    naming the file when there is none (so ``--questions`` is needed)."""
    path = Path(run_dir) / LABELS_DIR / POOL_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Question(q["id"], q["text"]) for q in data["questions"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise EmbtuneError("no pool to resume yet: give --questions FILE", path=path) from None


def build_pool(run_dir: str | os.PathLike, questions: list[Question], k: int = 10, seed: int = 42,
               bm25: bool = True, model: str | None = None, batch_size: int = 64, show_progress: bool = True,
               say: Callable[[str], None] = lambda message: None) -> dict[str, list[Candidate]]:
    """Pool the top-``k`` documents of each system for every question (see the module docstring).

    In: a run folder (chunks.jsonl; run_config.toml, merged/ and work/*.npy when present), the
    questions, ``k`` >= 1, the shuffle ``seed``, whether to pool BM25, a base model overriding the
    run's, the encoding batch size, and ``say`` for one-line notes (systems used, BM25 missing).
    Out: ``{question id: [Candidate]}`` in question order; the pool is saved to
    ``RUN/labels/pool.json``. Raises EmbtuneError for a folder that is not a run, DataFormatError for
    a bad chunks.jsonl or run_config.toml, ModelLoadError when a model cannot load.
    """
    from embtune.pipeline.records import read_chunks

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    run = check_run_dir(run_dir)
    chunks = read_chunks(run / "chunks.jsonl", fields=("id", "doc_id", "title", "text"))
    systems = _Systems(run, chunks, read_run_config(run), model, bm25, batch_size, show_progress)
    if systems.bm25_missing:
        say("BM25 is left out of the pool: bm25s is not installed (pip install bm25s)")
    if systems.tuned is None:
        also = " and BM25" if systems.bm25 else ""
        say(f"no tuned model in {run / 'merged'}: pooling the base model{also}")
    cache_path = run / LABELS_DIR / POOL_FILE
    key = systems.key(k, seed)
    cached = _read_cache(cache_path, key)
    todo = [q for q in questions if (q.id, q.text) not in cached]
    if todo:
        say(f"pooling the top {k} documents of {', '.join(systems.names())} for {len(todo)} question(s)")
        doc_of = {c["id"]: c["doc_id"] for c in chunks}
        per_doc: dict[str, int] = {}
        for c in chunks:
            per_doc[c["doc_id"]] = per_doc.get(c["doc_id"], 0) + 1
        depth = min(len(chunks), k * max(per_doc.values()))  # always reaches k distinct documents
        texts = [q.text for q in todo]
        rankings = {name: systems.rank(name, texts, depth) for name in systems.names()}
        for i, q in enumerate(todo):
            per_system = {name: _top_documents(rankings[name][i], doc_of, k) for name in rankings}
            cached[(q.id, q.text)] = merge_pool(q.id, per_system, seed)
    pool = {q.id: cached[(q.id, q.text)] for q in questions}
    atomic_write_json(cache_path, {"version": _POOL_VERSION, "key": key, "questions": [
        {"id": q.id, "text": q.text, "candidates": [asdict(c) for c in pool[q.id]]} for q in questions]})
    return pool
