"""Answers of ``embtune label``: the append-only log, the CSV round trip, and the qrels they become.

Files in ``RUN/labels/``:

* ``answers.jsonl``: one line per answer, ``{"question_id", "question", "doc_id", "relevant"}`` with
  ``relevant`` 1 (relevant), 0 (judged not relevant), a higher integer (graded, from a CSV) or null
  (skipped: not judged). Appended, flushed and fsync'ed after every answer, so a session killed at any
  moment keeps every answer given; a line torn by the kill is dropped (and that candidate asked
  again). The last answer for a (question, document) wins.
* ``queries.jsonl`` + ``qrels.tsv``: the judged questions (BEIR queries format) and their judgements
  (BEIR qrels, ``query-id <TAB> corpus-id <TAB> score`` with a header; judged-not-relevant kept as 0,
  skipped left out), rewritten atomically from the log at the end of every session. They are what
  ``from-corpus --eval-labels qrels.tsv --queries queries.jsonl`` reads (doc ids are the documents'
  ids of chunks.jsonl).
* ``beir/`` (``write_beir_folder``): ``corpus.jsonl`` (every document of the run's corpus),
  ``queries.jsonl`` and ``qrels/test.tsv``, the folder ``embtune eval MODEL --data`` reads.

A CSV to fill in (``write_answers_csv``) has the columns ``CSV_COLUMNS``; ``read_answers_csv`` reads
it back (``relevant``: 1/0, y/n, yes/no, true/false, a graded integer >= 0, or blank / s / skip for
not judged) with one-line errors naming the file and line.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from embtune.data._io import require_file
from embtune.errors import DataFormatError, EmbtuneError
from embtune.labeling.pool import Candidate, Question, check_question_id
from embtune.utils.atomic import atomic_dir, atomic_file, atomic_write_text, write_failure

ANSWERS_FILE = "answers.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_FILE = "qrels.tsv"
BEIR_DIR = "beir"
BEIR_SPLIT = "test"
QRELS_HEADER = "query-id\tcorpus-id\tscore"
CSV_COLUMNS = ("question_id", "question", "doc_id", "text", "relevant")
_YES = {"1", "y", "yes", "true", "relevant"}
_NO = {"0", "n", "no", "false", "not relevant"}
_SKIP = {"", "s", "skip"}


@dataclass
class Answer:
    """One judgement: question id and text, document id, and ``relevant`` (an integer score >= 0, or
    None for a skipped candidate)."""

    question_id: str
    question: str
    doc_id: str
    relevant: int | None

    def to_dict(self) -> dict[str, Any]:
        """The answers.jsonl record."""
        return {"question_id": self.question_id, "question": self.question, "doc_id": self.doc_id,
                "relevant": self.relevant}


def _answer_from(obj: dict[str, Any], path: Path, line: int) -> Answer:
    """An Answer from an answers.jsonl record; DataFormatError (file:line) for a malformed one."""
    qid, question, doc = obj.get("question_id"), obj.get("question"), obj.get("doc_id")
    relevant = obj.get("relevant", "missing")
    if not all(isinstance(v, str) and v for v in (qid, question, doc)):
        raise DataFormatError('an answer needs "question_id", "question" and "doc_id" strings',
                              path=path, line=line)
    if relevant is not None and (isinstance(relevant, bool) or not isinstance(relevant, int) or relevant < 0):
        raise DataFormatError(f'"relevant" must be an integer >= 0 or null, got {relevant!r}',
                              path=path, line=line)
    return Answer(qid, question, doc, relevant)


class AnswerLog:
    """``RUN/labels/answers.jsonl``: every answer appended durably as it is given (module docstring)."""

    def __init__(self, path: str | os.PathLike):
        """The log at ``path`` (created on the first append)."""
        self.path = Path(path)

    def read(self) -> dict[tuple[str, str], Answer]:
        """``{(question id, doc id): last Answer}`` in first-answered order ({} when there is no log).

        A last line without its newline (the session was killed while writing it) is cut off the
        file. DataFormatError naming the file and line for any other line that is not an answer.
        """
        if not self.path.is_file():
            return {}
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            self._truncate(end)
        answers: dict[tuple[str, str], Answer] = {}
        for number, line in enumerate(raw[:end].split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise DataFormatError("not a JSON answer line", path=self.path, line=number) from None
            if not isinstance(obj, dict):
                raise DataFormatError("not a JSON answer line", path=self.path, line=number)
            answer = _answer_from(obj, self.path, number)
            answers[(answer.question_id, answer.doc_id)] = answer
        return answers

    def _truncate(self, size: int) -> None:
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise EmbtuneError(f"cannot repair the answer log ({exc.strerror})", path=self.path) from None

    def append(self, answers: Iterable[Answer]) -> int:
        """Append ``answers`` (one line each) in one write, then flush and fsync; returns how many.

        EmbtuneError naming the file when it cannot be written (no space, no permission).
        """
        data = "".join(json.dumps(a.to_dict(), ensure_ascii=False) + "\n" for a in answers).encode("utf-8")
        if not data:
            return 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise EmbtuneError(f"cannot save the answer ({write_failure(exc)})", path=self.path) from None
        return data.count(b"\n")


def judged_qrels(answers: Iterable[Answer]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``(queries {id: text}, qrels {id: {doc id: score}})`` of the judged answers (skips left out),
    in first-answered order."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for a in answers:
        if a.relevant is None:
            continue
        queries[a.question_id] = a.question
        qrels.setdefault(a.question_id, {})[a.doc_id] = a.relevant
    return queries, qrels


def _queries_text(queries: Mapping[str, str]) -> str:
    return "".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items())


def _qrels_text(qrels: Mapping[str, Mapping[str, int]]) -> str:
    lines = [QRELS_HEADER] + [f"{q}\t{d}\t{s}" for q, docs in qrels.items() for d, s in docs.items()]
    return "\n".join(lines) + "\n"


def write_label_files(labels_dir: str | os.PathLike, answers: Iterable[Answer]) -> dict[str, Any]:
    """Write ``queries.jsonl`` and ``qrels.tsv`` of the judged answers into ``labels_dir`` (atomically).

    Out: ``{"questions", "judgements", "relevant", "queries": path, "qrels": path}`` (paths None and
    nothing written when no answer is judged yet). EmbtuneError naming a file that cannot be written.
    """
    labels_dir = Path(labels_dir)
    queries, qrels = judged_qrels(answers)
    judgements = sum(len(d) for d in qrels.values())
    relevant = sum(s > 0 for d in qrels.values() for s in d.values())
    info: dict[str, Any] = {"questions": len(qrels), "judgements": judgements, "relevant": relevant,
                            "queries": None, "qrels": None}
    if not qrels:
        return info
    info["queries"] = atomic_write_text(labels_dir / QUERIES_FILE, _queries_text(queries))
    info["qrels"] = atomic_write_text(labels_dir / QRELS_FILE, _qrels_text(qrels))
    return info


def write_beir_folder(folder: str | os.PathLike, documents: Iterable[Any], answers: Iterable[Answer]) -> Path:
    """Write a BEIR folder for ``embtune eval``: ``corpus.jsonl`` (every document: ``_id``, ``title``,
    ``text``), ``queries.jsonl`` and ``qrels/test.tsv`` of the judged answers; built under a
    temporary name and renamed into place. Out: the folder.

    In: ``documents`` with ``doc_id``, ``title``, ``text`` (``embtune.corpus.Document``). Raises
    EmbtuneError when nothing is judged yet, or when a judged document is not among ``documents``
    (the corpus changed since the run).
    """
    folder = Path(folder)
    queries, qrels = judged_qrels(answers)
    if not qrels:
        raise EmbtuneError("nothing judged yet: no BEIR folder to write", path=folder)
    with atomic_dir(folder) as tmp:
        ids = set()
        with atomic_file(tmp / "corpus.jsonl", "w") as fh:
            for doc in documents:
                ids.add(doc.doc_id)
                fh.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text},
                                    ensure_ascii=False) + "\n")
        missing = [d for docs in qrels.values() for d in docs if d not in ids]
        if missing:
            raise EmbtuneError(f"judged document {missing[0]!r} is not in the corpus any more (it changed "
                               "since the run); pass --corpus with the run's documents", path=folder)
        atomic_write_text(tmp / QUERIES_FILE, _queries_text(queries))
        atomic_write_text(tmp / "qrels" / f"{BEIR_SPLIT}.tsv", _qrels_text(qrels))
    return folder


def passage(chunk: Mapping[str, Any]) -> str:
    """The text shown for a candidate: its chunk's title (when any) and text."""
    return f"{chunk['title']} — {chunk['text']}" if chunk.get("title") else chunk["text"]


def write_answers_csv(path: str | os.PathLike, questions: list[Question], pool: Mapping[str, list[Candidate]],
                      chunks: Mapping[str, Mapping[str, Any]],
                      answers: Mapping[tuple[str, str], Answer]) -> int:
    """Write the pool as a CSV to fill in (``CSV_COLUMNS``; ``relevant`` pre-filled from earlier
    answers, blank otherwise), in question order and each question's shuffled pool order; atomically.

    In: questions, ``{question id: candidates}``, ``{chunk id: chunk record}``, the answers so far.
    Out: the number of rows.
    """
    rows = 0
    with atomic_file(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for q in questions:
            for c in pool[q.id]:
                given = answers.get((q.id, c.doc_id))
                relevant = "" if given is None or given.relevant is None else str(given.relevant)
                writer.writerow([q.id, q.text, c.doc_id, passage(chunks[c.chunk_id]), relevant])
                rows += 1
    return rows


def _parse_relevant(value: str, path: Path, line: int) -> int | None:
    text = " ".join(value.split()).lower()
    if text in _SKIP:
        return None
    if text in _YES:
        return 1
    if text in _NO:
        return 0
    if text.isdigit():
        return int(text)
    raise DataFormatError(f"relevant must be 1/0, y/n, a grade >= 0, or blank to leave it unjudged; "
                          f"got {value!r}", path=path, line=line)


def _delimiter(header: str) -> str:
    """The CSV delimiter: the one of ``,``, ``;`` and tab that splits out the column names (spreadsheets
    in some locales save with ``;``)."""
    for delim in (",", ";", "\t"):
        if "question_id" in [c.strip() for c in header.split(delim)]:
            return delim
    return ","


def read_answers_csv(path: str | os.PathLike, doc_ids: set[str]) -> list[Answer]:
    """The filled-in rows of a CSV written by ``write_answers_csv`` (blank ``relevant`` cells left out).

    In: the CSV (UTF-8, a BOM allowed; ``,``, ``;`` or tab separated; columns ``question_id``,
    ``question``, ``doc_id`` and ``relevant`` required, others ignored) and the run's document ids.
    Out: the Answers in file order. DataFormatError naming the file and line for a missing column, a
    blank or bad id, a document not in the run, a question id with two texts, a repeated
    (question, document) row or a bad ``relevant`` value.
    """
    path = require_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not valid UTF-8 ({exc.reason})", path=path) from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n", 1)[0]))
    header = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("question_id", "question", "doc_id", "relevant") if c not in header]
    if missing:
        raise DataFormatError(f"missing column(s) {', '.join(missing)} (expected {', '.join(CSV_COLUMNS)})",
                              path=path, line=1)
    reader.fieldnames = header
    out: list[Answer] = []
    texts: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    line = reader.line_num + 1
    for row in reader:
        start, line = line, reader.line_num + 1
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        qid = check_question_id(row.get("question_id") or "", path, start)
        question = " ".join((row.get("question") or "").split())
        doc = (row.get("doc_id") or "").strip()
        if not question:
            raise DataFormatError(f"question {qid!r} has no text", path=path, line=start)
        if texts.setdefault(qid, question) != question:
            raise DataFormatError(f"question id {qid!r} has another text on an earlier row",
                                  path=path, line=start)
        if doc not in doc_ids:
            example = ", ".join(repr(d) for d in sorted(doc_ids)[:3])
            raise DataFormatError(f"document id {doc!r} is not in the run's chunks.jsonl (ids look like "
                                  f"{example})", path=path, line=start)
        if (qid, doc) in seen:
            raise DataFormatError(f"({qid!r}, {doc!r}) is on an earlier row too", path=path, line=start)
        seen.add((qid, doc))
        relevant = _parse_relevant(row.get("relevant") or "", path, start)
        if relevant is not None:
            out.append(Answer(qid, question, doc, relevant))
    return out
