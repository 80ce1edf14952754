"""Label-free training pairs read off the documents themselves.

Signals (pick with ``HeuristicPairs(signals=...)``; each pair's ``builder`` is ``heuristic:<signal>``):

* ``title``: the document title and heading path (``"Guide > Install > Linux"``) → the first chunk
  of that section. Titles and headings summarise the text under them, like a query would.
* ``cloze``: inverse cloze task (Lee et al., 2019): one sentence of a chunk → the rest of the chunk
  with that sentence removed, so the model must match meaning, not copied words.
* ``keywords``: the chunk's most distinctive words (TF-IDF over all chunks, words seen in at least
  two chunks, in text order) → the chunk; imitates short keyword searches.

Which signals pay was measured on the real test queries of SciFact, NFCorpus and ArguAna by
``examples/benchmarks/heuristic_pairs.py`` (see the README): titles helped on SciFact and ArguAna,
keywords and cloze lost on SciFact and NFCorpus, so ``DEFAULT_SIGNALS`` is titles alone (from-corpus adds ``keywords`` only when a corpus has too
few titles to train on, see ``embtune.pipeline.sources``). Every random choice is seeded by
``seed`` and the chunk id, so the same chunks always give the same pairs, whatever their order.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from embtune.corpus.structure import paragraph_spans, sentence_spans
from embtune.corpus.types import Chunk
from embtune.errors import ConfigError
from embtune.pairs.types import Pair

SIGNALS = ("title", "cloze", "keywords")
DEFAULT_SIGNALS = ("title",)
_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]|[^\W\d_]{2}", re.UNICODE)
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_STOPWORDS = frozenset("""
a about above after again against all also although am among an and any are as at be because been before
being below between both but by can could did do does doing down during each either et few for from
further had has have having he her here hers herself him himself his how however i if in into is it its
itself just may me might more most much must my myself no nor not of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them themselves then there
these they this those through thus to too under until up upon us very was we were what when where
whether which while who whom why will with within without would yet you your yours yourself yourselves
using used use based via per well one two three new among whereas results result study studies showed
show shows found find including include includes however therefore across many often
""".split())


def _rng(seed: int, chunk_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{chunk_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def heading_query(title: str, headings: Sequence[str]) -> str:
    """``"title > heading > subheading"``, skipping blanks and a heading that repeats the one before."""
    parts: list[str] = []
    for part in [title, *headings]:
        part = " ".join(part.split())
        if part and (not parts or part.casefold() != parts[-1].casefold()):
            parts.append(part)
    return " > ".join(parts)


def sentences_of(text: str) -> list[tuple[int, int]]:
    """Sentence spans of a chunk text (paragraph by paragraph)."""
    return [s for a, b in paragraph_spans(text, 0, len(text)) for s in sentence_spans(text, a, b)]


def remove_span(text: str, start: int, end: int) -> str:
    """``text`` without ``text[start:end]``; the whitespace around the cut becomes one separator
    (a blank line, a newline or a space, the strongest one that was there)."""
    before, after = text[:start].rstrip(), text[end:].lstrip()
    if not before or not after:
        return (before + after).strip()
    around = text[len(before):start] + text[end : len(text) - len(after)]
    return before + ("\n\n" if "\n\n" in around else "\n" if "\n" in around else " ") + after


class HeuristicPairs:
    """Builder of label-free pairs from chunks (see the module docstring for the signals)."""

    def __init__(self, signals: Iterable[str] = DEFAULT_SIGNALS, seed: int = 0, cloze_per_chunk: int = 1,
                 min_words: int = 5, max_words: int = 64, min_rest_words: int = 20, keywords: int = 5,
                 show_progress: bool = True):
        """Configure the builder.

        ``signals``: any of ``SIGNALS``. ``seed``: seeds the random choices. ``cloze_per_chunk``:
        sentences drawn per chunk for ``cloze``. ``min_words``/``max_words``: length bounds of a
        cloze sentence; ``min_rest_words``: words the chunk must keep once the sentence is removed.
        ``keywords``: words per ``keywords`` query. Raises ConfigError for an unknown signal or a bad
        number.
        """
        self.signals = tuple(dict.fromkeys(signals))
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown or not self.signals:
            raise ConfigError(f"unknown heuristic signal(s) {unknown or '(none given)'}; choose from "
                              f"{', '.join(SIGNALS)}")
        for name, value, low in (("cloze_per_chunk", cloze_per_chunk, 1), ("min_words", min_words, 1),
                                 ("max_words", max_words, 1), ("min_rest_words", min_rest_words, 0),
                                 ("keywords", keywords, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"HeuristicPairs {name} must be an integer >= {low}, got {value!r}")
        if max_words < min_words:
            raise ConfigError(f"HeuristicPairs max_words ({max_words}) < min_words ({min_words})")
        self.seed, self.cloze_per_chunk = seed, cloze_per_chunk
        self.min_words, self.max_words, self.min_rest_words = min_words, max_words, min_rest_words
        self.keywords, self.show_progress = keywords, show_progress

    def build(self, chunks: Sequence[Chunk]) -> list[Pair]:
        """Pairs of every configured signal, signal by signal, each in chunk order.

        In: the chunks of a corpus (all of them: ``keywords`` counts word rarity over them). Out:
        Pairs with ``builder`` ``heuristic:<signal>``. Chunks too short for a signal give no pair.
        """
        pairs: list[Pair] = []
        for signal in self.signals:
            pairs.extend(getattr(self, f"_{signal}")(chunks))
        return pairs

    def _title(self, chunks: Sequence[Chunk]) -> list[Pair]:
        out, seen = [], set()
        for chunk in chunks:
            key = (chunk.doc_id, tuple(chunk.headings))
            if key in seen:
                continue
            seen.add(key)
            query = heading_query(chunk.title, chunk.headings)
            if len(_LETTERS.findall(query)) < 3:
                continue
            out.append(Pair(query=query, positive=chunk.text, positive_id=chunk.id, doc_id=chunk.doc_id,
                            builder="heuristic:title"))
        return out

    def _cloze(self, chunks: Sequence[Chunk]) -> list[Pair]:
        out = []
        for chunk in tqdm(chunks, desc="Cloze pairs", unit="chunk", disable=not self.show_progress):
            text = chunk.text
            spans = sentences_of(text)
            if len(spans) < 2:
                continue
            total_words = len(text.split())
            candidates = [(a, b) for a, b in spans
                          if self.min_words <= len(text[a:b].split()) <= self.max_words
                          and total_words - len(text[a:b].split()) >= self.min_rest_words]
            if not candidates:
                continue
            rng = _rng(self.seed, chunk.id)
            for a, b in rng.sample(candidates, min(self.cloze_per_chunk, len(candidates))):
                rest = remove_span(text, a, b)
                out.append(Pair(query=text[a:b], positive=rest, positive_id=chunk.id, doc_id=chunk.doc_id,
                                builder="heuristic:cloze"))
        return out

    def _keywords(self, chunks: Sequence[Chunk]) -> list[Pair]:
        words_of = [[w.lower() for w in _WORD.findall(c.text)] for c in chunks]
        df = Counter(w for words in words_of for w in set(words))
        n = len(chunks)
        out = []
        for chunk, words in zip(chunks, words_of):
            tf = Counter(w for w in words if w not in _STOPWORDS and df[w] >= 2 and len(w) > 2)
            if len(tf) < self.keywords:
                continue
            score = {w: (1 + math.log(c)) * math.log(n / df[w]) for w, c in tf.items()}
            top = set(sorted(score, key=lambda w: (-score[w], w))[: self.keywords])
            ordered = list(dict.fromkeys(w for w in words if w in top))
            out.append(Pair(query=" ".join(ordered), positive=chunk.text, positive_id=chunk.id,
                            doc_id=chunk.doc_id, builder="heuristic:keywords"))
        return out
