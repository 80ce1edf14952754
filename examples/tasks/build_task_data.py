"""Write the task files of `embtune eval --task` from data already on disk (nothing is downloaded).

    python examples/tasks/build_task_data.py runs/task-data

writes three JSONL files into the folder given:

* ``clustering.jsonl`` and ``classification.jsonl`` (the same rows, ``{"text", "label"}``): paragraphs
  of the bundled SQLite documentation (``examples/sample_corpus``, public domain, see its LICENSE.md),
  labelled with the page they come from. Code blocks and headings are dropped, list items count as
  paragraphs, paragraphs under ``--min-words`` words are skipped; pages with fewer than
  ``--min-per-label`` paragraphs are left out and at most ``--per-label`` paragraphs (spread evenly
  over the page) are kept per page. With the defaults: 21 pages, 248 paragraphs. Pages overlap in
  topic (transactions, isolation, savepoints...), so the task is not trivial.
* ``pair_similarity.jsonl`` (``{"text1", "text2", "score"}``): SciFact test queries (the BEIR folder,
  default ``../shared/data/scifact``) paired with each document judged relevant (score 1.0) and with the
  best-ranked BM25 document that is not judged relevant (score 0.0): a hard negative that shares words
  with the query. Without bm25s installed the negative is a random unjudged document instead (the script
  says so). Documents are ``title + " " + text``.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CORPUS = ROOT / "examples" / "sample_corpus"
SCIFACT = ROOT / ".." / "shared" / "data" / "scifact"


def page_paragraphs(path: Path, min_words: int) -> list[str]:
    """The prose paragraphs of one Markdown page: no code blocks, no headings, list markers removed."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    blocks = [re.sub(r"^\s*[-*]\s+", "", block).strip() for block in re.split(r"\n\s*\n", text)]
    return [" ".join(b.split()) for b in blocks if b and not b.startswith("#") and len(b.split()) >= min_words]


def labelled_rows(corpus: Path, min_words: int, min_per_label: int, per_label: int) -> list[dict]:
    """``{"text", "label"}`` rows: paragraphs labelled with their page's file name (without .md)."""
    rows = []
    for path in sorted(corpus.glob("*.md")):
        if path.name == "LICENSE.md":
            continue
        paras = page_paragraphs(path, min_words)
        if len(paras) < min_per_label:
            continue
        step = len(paras) / min(per_label, len(paras))
        rows += [{"text": paras[int(i * step)], "label": path.stem} for i in range(min(per_label, len(paras)))]
    return rows


def read_jsonl(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8") as fh:
        return {obj["_id"]: obj for obj in map(json.loads, fh)}


def pair_rows(scifact: Path, split: str = "test", seed: int = 0) -> tuple[list[dict], str]:
    """``{"text1", "text2", "score"}`` rows from the SciFact qrels, and how the negatives were picked."""
    corpus = read_jsonl(scifact / "corpus.jsonl")
    queries = read_jsonl(scifact / "queries.jsonl")
    relevant: dict[str, set[str]] = {}
    with open(scifact / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            qid, doc_id, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                relevant.setdefault(qid, set()).add(doc_id)
    qids = list(relevant)
    doc_ids = list(corpus)
    doc_text = {d: (corpus[d].get("title", "") + " " + corpus[d]["text"]).strip() for d in doc_ids}
    from embtune.eval import bm25

    if bm25.available():
        ranked = bm25.bm25_rankings([doc_text[d] for d in doc_ids], doc_ids, [queries[q]["text"] for q in qids], k=20)
        how = "BM25's best-ranked unjudged document"
    else:
        rng = random.Random(seed)
        ranked = [rng.sample(doc_ids, 20) for _ in qids]
        how = "a random unjudged document (bm25s is not installed)"
    rows = []
    for qid, ranking in zip(qids, ranked):
        query = queries[qid]["text"]
        rows += [{"text1": query, "text2": doc_text[d], "score": 1.0} for d in sorted(relevant[qid])]
        negative = next((d for d in ranking if d not in relevant[qid]), None)
        if negative is not None:
            rows.append({"text1": query, "text2": doc_text[negative], "score": 0.0})
    return rows, how


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def build(out: Path, corpus: Path = SAMPLE_CORPUS, scifact: Path = SCIFACT, min_words: int = 12,
          min_per_label: int = 10, per_label: int = 12) -> dict[str, Path]:
    """Write the three task files into ``out``; return {task: file}."""
    out.mkdir(parents=True, exist_ok=True)
    labelled = labelled_rows(corpus, min_words, min_per_label, per_label)
    pairs, how = pair_rows(scifact)
    files = {"clustering": out / "clustering.jsonl", "classification": out / "classification.jsonl",
             "pair-similarity": out / "pair_similarity.jsonl"}
    write_jsonl(files["clustering"], labelled)
    write_jsonl(files["classification"], labelled)
    write_jsonl(files["pair-similarity"], pairs)
    labels = len({row["label"] for row in labelled})
    positives = sum(row["score"] == 1.0 for row in pairs)
    print(f"{files['clustering']}, {files['classification']}: {len(labelled)} paragraphs of {labels} SQLite pages")
    print(f"{files['pair-similarity']}: {len(pairs)} SciFact pairs ({positives} relevant, "
          f"{len(pairs) - positives} negatives: {how})")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the JSONL files into")
    parser.add_argument("--corpus", type=Path, default=SAMPLE_CORPUS, help="folder of Markdown pages")
    parser.add_argument("--scifact", type=Path, default=SCIFACT, help="SciFact BEIR folder")
    parser.add_argument("--min-words", type=int, default=12)
    parser.add_argument("--min-per-label", type=int, default=10)
    parser.add_argument("--per-label", type=int, default=12)
    args = parser.parse_args()
    build(args.out, args.corpus, args.scifact.resolve(), args.min_words, args.min_per_label, args.per_label)


if __name__ == "__main__":
    main()
