"""The terminal judging session of ``embtune label``: one question and one pooled candidate at a time.

Keys: ``y`` relevant, ``n`` not relevant, ``s`` skip (not judged; asked again only with
``ask_skipped``), ``q`` quit. Every answer is appended to the answer log (flushed and fsync'ed)
before the next candidate shows, so quitting, Ctrl-C or a killed terminal loses nothing and the next
session starts at the first candidate without an answer. Keys are read one keypress at a time when
stdin is a terminal (``click.getchar``) and one line at a time otherwise (``y``/``yes``, ``n``/``no``,
...), so answers can be scripted through a pipe; end of input quits. The passage is the candidate's
best-ranked chunk, cut at a word boundary after ``max_chars`` characters; which system found it is
never shown.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import click

from embtune.errors import EmbtuneError
from embtune.labeling.judgements import Answer, AnswerLog, passage
from embtune.labeling.pool import Candidate, Question

KEYS = {"y": 1, "n": 0, "s": None}
QUIT = "q"
PROMPT = "relevant? [bold]y[/]es / [bold]n[/]o / [bold]s[/]kip / [bold]q[/]uit"


def shorten(text: str, max_chars: int) -> str:
    """``text`` with its whitespace collapsed, cut at the last word boundary before ``max_chars``
    characters and ended with `` …`` when longer (``max_chars`` < 1: never cut)."""
    text = " ".join(text.split())
    if max_chars < 1 or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + " …"


def key_reader(interactive: bool | None = None) -> Callable[[], str]:
    """A function returning the next answer key (``y``, ``n``, ``s`` or ``q``; ``q`` at end of input
    or Ctrl-C), or ``""`` for an unrecognised key. ``interactive`` (default: stdin is a terminal)
    reads single keypresses, else whole lines whose first letter counts."""
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()

    def from_keypress() -> str:
        """One keypress (echoed); ``q`` on Ctrl-C / Ctrl-D."""
        try:
            key = click.getchar().lower()
        except (KeyboardInterrupt, EOFError):
            return QUIT
        click.echo(key if key.isprintable() else "", err=True)
        return key if key in (*KEYS, QUIT) else ""

    def from_line() -> str:
        """One line's word (echoed); ``q`` at end of input."""
        try:
            line = sys.stdin.readline() if sys.stdin is not None else ""
        except KeyboardInterrupt:
            return QUIT
        if not line:
            return QUIT  # end of input
        word = line.strip().lower()
        click.echo(word, err=True)  # a piped answer is not echoed by a terminal
        return word[0] if word and word[0] in (*KEYS, QUIT) and word in _WORDS[word[0]] else ""

    return from_keypress if interactive else from_line


_WORDS = {"y": {"y", "yes"}, "n": {"n", "no"}, "s": {"s", "skip"}, "q": {"q", "quit"}}


def pending(questions: list[Question], pool: Mapping[str, list[Candidate]],
            answers: Mapping[tuple[str, str], Answer], ask_skipped: bool = False
            ) -> list[tuple[Question, Candidate]]:
    """The (question, candidate) pairs still to judge, in question then pool order: those with no
    answer, and skipped ones when ``ask_skipped``."""
    out = []
    for q in questions:
        for c in pool[q.id]:
            given = answers.get((q.id, c.doc_id))
            if given is None or (ask_skipped and given.relevant is None):
                out.append((q, c))
    return out


def judge(console: Any, questions: list[Question], pool: Mapping[str, list[Candidate]],
          chunks: Mapping[str, Mapping[str, Any]], log: AnswerLog, read_key: Callable[[], str],
          max_chars: int = 800, ask_skipped: bool = False) -> dict[str, Any]:
    """Ask for every pending candidate (``pending``) until all are answered or the judge quits.

    In: a rich Console for the display, the questions and their pools, ``{chunk id: chunk record}``
    (``title``, ``text``), the answer log (read for what is done, appended after every answer), the
    key source (``key_reader``), the passage length, whether skipped candidates are asked again.
    Out: ``{"answered": this session's answers, "left": candidates still pending, "quit": bool}``.
    EmbtuneError naming the log when an answer cannot be saved.
    """
    from rich.markup import escape
    from rich.rule import Rule

    answers = log.read()
    todo = pending(questions, pool, answers, ask_skipped)
    total = sum(len(pool[q.id]) for q in questions)
    index = {q.id: i for i, q in enumerate(questions, start=1)}
    answered, shown_question = 0, None
    if todo:
        console.print("[dim]each question's documents come in a shuffled order; which system found one is not "
                      "shown. Judge the document from the passage shown (its best-matching part).[/]")
    for n, (q, c) in enumerate(todo):
        if q.id != shown_question:
            console.print(Rule(f"question {index[q.id]}/{len(questions)}  ({escape(q.id)})"))
            console.print(f"[bold]{escape(q.text)}[/]")
            shown_question = q.id
        position = [x.doc_id for x in pool[q.id]].index(c.doc_id) + 1
        console.print(f"\n[dim]candidate {position}/{len(pool[q.id])} · document[/] {escape(c.doc_id)}  "
                      f"[dim]({total - len(todo) + n} of {total} judged)[/]")
        console.print(escape(shorten(passage(chunks[c.chunk_id]), max_chars)))
        key = ""
        while not key:
            console.print(PROMPT + " ", end="")
            key = read_key()
            if not key:
                console.print("[yellow]press y, n, s or q[/]")
        if key == QUIT:
            return {"answered": answered, "left": len(todo) - n, "quit": True}
        log.append([Answer(q.id, q.text, c.doc_id, KEYS[key])])
        answered += 1
    return {"answered": answered, "left": 0, "quit": False}


def found_by_counts(pool: Mapping[str, list[Candidate]], answers: Mapping[tuple[str, str], Answer]
                    ) -> dict[str, int]:
    """For each system, how many of the documents judged relevant (score > 0) it had found."""
    counts: dict[str, int] = {}
    for qid, candidates in pool.items():
        for c in candidates:
            given = answers.get((qid, c.doc_id))
            if given is not None and given.relevant:
                for name in c.found_by:
                    counts[name] = counts.get(name, 0) + 1
    return counts


def corpus_documents(run_dir: Path, corpus: str | os.PathLike | None = None) -> list[Any]:
    """The documents of the run's corpus (``corpus``, else the ``corpus`` of RUN/run_config.toml), read
    as from-corpus reads them. EmbtuneError when no corpus is known or it does not exist."""
    from embtune.corpus.ingest import read_documents
    from embtune.pipeline.run_config import RUN_CONFIG, read_config_file

    if corpus is None:
        config = run_dir / RUN_CONFIG
        corpus = read_config_file(config)[0].get("corpus") if config.is_file() else None
        if not corpus:
            raise EmbtuneError("the run does not record its corpus: pass --corpus DOCS", path=config)
    if not Path(corpus).exists():
        raise EmbtuneError("the run's corpus folder is not there (moved?): pass --corpus DOCS", path=corpus)
    return read_documents(corpus, show_progress=False)
