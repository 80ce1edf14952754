"""Token-aware chunking: split documents at headings, then paragraphs, then sentences, then words.

How a document becomes chunks (all sizes are counted with the model's own tokenizer, special tokens
excluded, so pass ``max_tokens_for(model)`` to fill the model's window exactly):

1. Sections: the text is cut at its headings (Markdown ``#``/setext, reStructuredText underlines,
   HTML h1-h6 converted at ingestion); a chunk never spans two sections, and it carries the
   section's heading path. Heading lines are not part of chunk text.
2. Pieces: each section is cut into paragraphs (blank lines) and each paragraph into sentences;
   every sentence is tokenised once, in large batches. A sentence longer than the content budget is
   cut into token windows, at a line break or a word boundary where one is near the limit.
3. Packing: a section that fits in ``max_tokens`` is one chunk. Otherwise pieces are packed greedily
   into chunks of at most ``max_tokens - overlap_tokens`` tokens, starting a new chunk at a
   paragraph boundary whenever the next paragraph fits in a chunk of its own.
4. Overlap: each later chunk of a section starts with the last ``overlap_tokens`` tokens of the
   previous one (whole sentences where they fit, then the tail of one sentence from a word start).
5. Check: every chunk text is tokenised once more (one batched pass); a chunk the re-tokenisation
   finds too long (tokenisers are not always additive over pieces) is re-cut by token offsets.
6. Exact duplicate chunk texts are dropped (the first is kept: boilerplate repeated across pages),
   except in a document that would be left without any chunk of its own (a document whose whole text
   repeats another's, as in some BEIR corpora, keeps its chunks, so labels naming it still find it);
   ids are ``sha256(doc_id, text)``.

Cost is linear in the corpus size: each character is tokenised about twice (step 2 and step 5),
plus the overlap tails; no string is re-tokenised as it grows.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from embtune.corpus.structure import paragraph_spans, sentence_spans, split_sections
from embtune.corpus.types import Chunk, Document
from embtune.errors import ConfigError

logger = logging.getLogger(__name__)


def chunk_id(doc_id: str, text: str) -> str:
    """Stable id of a chunk: the first 16 hex digits of sha256(doc_id NUL text)."""
    return hashlib.sha256(f"{doc_id}\x00{text}".encode("utf-8")).hexdigest()[:16]


def _resolve_tokenizer(tokenizer: Any) -> Any:
    """Accept a Hugging Face tokenizer, or a model that has one (``model.tokenizer``)."""
    if hasattr(tokenizer, "tokenizer") and not callable(getattr(tokenizer, "convert_tokens_to_ids", None)):
        tokenizer = tokenizer.tokenizer
    if not callable(tokenizer):
        raise ConfigError(f"expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    return tokenizer


def max_tokens_for(model: Any) -> int:
    """Content tokens that fit one document in ``model``'s window.

    In: a SentenceTransformer. Out: ``model.max_seq_length`` minus the special tokens the tokenizer
    adds and minus the tokens of the model's ``"document"`` prompt, if it has one.
    """
    tokenizer = model.tokenizer
    budget = int(model.max_seq_length) - tokenizer.num_special_tokens_to_add(pair=False)
    prompt = (getattr(model, "prompts", None) or {}).get("document") or ""
    if prompt:
        budget -= len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return budget


class _Tokens:
    """Batched calls to one tokenizer: counts, and offsets where cuts are needed."""

    def __init__(self, tokenizer: Any, batch_size: int, show_progress: bool):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.show_progress = show_progress

    def _call(self, texts: list[str], offsets: bool) -> Any:
        kwargs = dict(add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False,
                      verbose=False)
        if offsets:
            try:
                return self.tokenizer(texts, return_offsets_mapping=True, **kwargs)["offset_mapping"]
            except NotImplementedError:
                raise ConfigError("chunking needs a fast tokenizer (one that returns offsets)") from None
        return self.tokenizer(texts, **kwargs)["input_ids"]

    def counts(self, texts: Sequence[str], desc: str) -> list[int]:
        """Number of tokens of each text (no special tokens)."""
        out: list[int] = []
        starts = range(0, len(texts), self.batch_size)
        bar = tqdm(total=len(texts), desc=desc, unit="text",
                   disable=not self.show_progress or len(starts) < 2)
        for start in starts:
            batch = list(texts[start : start + self.batch_size])
            out.extend(len(ids) for ids in self._call(batch, offsets=False))
            bar.update(len(batch))
        bar.close()
        return out

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character offsets of each text's tokens."""
        out: list[list[tuple[int, int]]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out.extend([tuple(o) for o in offs] for offs in self._call(batch, offsets=True))
        return out


def token_windows(text: str, offsets: list[tuple[int, int]], limit: int) -> list[tuple[int, int, int]]:
    """Cut one text into windows of at most ``limit`` tokens.

    In: the text, its token offsets, the limit. Out: ``(start char, end char, tokens)`` per window.
    A cut is placed at the last token that starts a line, else a word, in the second half of the
    window; only a text with no such place is cut inside a word.
    """
    spans: list[tuple[int, int, int]] = []
    n = len(offsets)
    i = 0
    while i < n:
        j = min(i + limit, n)
        if j < n:
            best = None
            for k in range(j, i + max(1, limit // 2) - 1, -1):
                gap = text[offsets[k - 1][1] : offsets[k][0]]
                if "\n" in gap:
                    best = k
                    break
                if best is None and (gap or text[offsets[k][0] : offsets[k][0] + 1].isspace()):
                    best = k
            j = best if best is not None and best > i else j
        start, end = offsets[i][0], offsets[j - 1][1]
        if end > start:
            spans.append((start, end, j - i))
        i = j
    return spans


@dataclass
class _Plan:
    """One chunk to build: pieces ``lo..hi`` of section ``section``, with an overlap prefix."""

    section: int
    lo: int
    hi: int
    tokens: int
    overlap_start: int | None = None


class _Chunker:
    """State of one ``chunk_documents`` call (see the module docstring for the steps)."""

    def __init__(self, docs: list[Document], tokens: _Tokens, max_tokens: int, overlap: int):
        self.docs, self.tok = docs, tokens
        self.max_tokens, self.overlap = max_tokens, overlap
        self.budget = max_tokens - overlap
        # pieces, parallel lists: document, section, paragraph, start, end, tokens
        self.p_doc: list[int] = []
        self.p_sec: list[int] = []
        self.p_para: list[int] = []
        self.p_start: list[int] = []
        self.p_end: list[int] = []
        self.p_tok: list[int] = []
        self.sections: list[tuple[int, tuple[str, ...]]] = []

    def segment(self) -> None:
        """Step 1-2: sections, paragraphs, sentences; count every sentence's tokens."""
        para = 0
        for d, doc in enumerate(tqdm(self.docs, desc="Splitting documents", unit="doc",
                                     disable=not self.tok.show_progress or len(self.docs) < 2)):
            for section in split_sections(doc.text, doc.kind):
                sec = len(self.sections)
                self.sections.append((d, section.headings))
                for a, b in paragraph_spans(doc.text, section.start, section.end):
                    for x, y in sentence_spans(doc.text, a, b):
                        self.p_doc.append(d)
                        self.p_sec.append(sec)
                        self.p_para.append(para)
                        self.p_start.append(x)
                        self.p_end.append(y)
                    para += 1
        texts = _Slices(self.docs, self.p_doc, self.p_start, self.p_end)
        self.p_tok = self.tok.counts(texts, "Tokenising sentences")

    def cut_long_pieces(self) -> None:
        """Step 2b: replace every piece longer than the content budget by token windows."""
        long = [i for i, t in enumerate(self.p_tok) if t > self.budget]
        if not long:
            return
        texts = [self.docs[self.p_doc[i]].text[self.p_start[i] : self.p_end[i]] for i in long]
        windows = {}
        for i, text, offs in zip(long, texts, self.tok.offsets(texts)):
            base = self.p_start[i]
            windows[i] = [(base + s, base + e, n) for s, e, n in token_windows(text, offs, self.budget)]
        cols = (self.p_doc, self.p_sec, self.p_para, self.p_start, self.p_end, self.p_tok)
        new: tuple[list[int], ...] = ([], [], [], [], [], [])
        for i in range(len(self.p_tok)):
            parts = windows.get(i, [(self.p_start[i], self.p_end[i], self.p_tok[i])])
            for s, e, n in parts:
                for col, value in zip(new, (self.p_doc[i], self.p_sec[i], self.p_para[i], s, e, n)):
                    col.append(value)
        for old, fresh in zip(cols, new):
            old[:] = fresh

    def _section_ranges(self) -> Iterable[tuple[int, int, int]]:
        lo = 0
        n = len(self.p_sec)
        while lo < n:
            hi = lo
            while hi < n and self.p_sec[hi] == self.p_sec[lo]:
                hi += 1
            yield self.p_sec[lo], lo, hi
            lo = hi

    def pack(self) -> list[_Plan]:
        """Step 3: group pieces into chunk plans (content only)."""
        plans: list[_Plan] = []
        for sec, lo, hi in self._section_ranges():
            total = sum(self.p_tok[lo:hi])
            if total <= self.max_tokens:
                plans.append(_Plan(sec, lo, hi, total))
                continue
            cur_lo, cur_tok = lo, 0
            i = lo
            while i < hi:
                p_hi = i
                while p_hi < hi and self.p_para[p_hi] == self.p_para[i]:
                    p_hi += 1
                para_tok = sum(self.p_tok[i:p_hi])
                if cur_tok + para_tok <= self.budget:
                    cur_tok += para_tok
                    i = p_hi
                    continue
                if para_tok <= self.budget:  # the paragraph fits alone: break at the paragraph boundary
                    if i > cur_lo:
                        plans.append(_Plan(sec, cur_lo, i, cur_tok))
                    cur_lo, cur_tok, i = i, para_tok, p_hi
                    continue
                for k in range(i, p_hi):  # split this paragraph at sentences
                    if cur_tok + self.p_tok[k] > self.budget and k > cur_lo:
                        plans.append(_Plan(sec, cur_lo, k, cur_tok))
                        cur_lo, cur_tok = k, 0
                    cur_tok += self.p_tok[k]
                i = p_hi
            if cur_lo < hi:
                plans.append(_Plan(sec, cur_lo, hi, cur_tok))
        return plans

    def add_overlap(self, plans: list[_Plan]) -> None:
        """Step 4: give each later chunk of a section the tail of the previous chunk."""
        if self.overlap <= 0:
            return
        partial: list[tuple[_Plan, int, int]] = []  # (plan, piece, tokens wanted from its end)
        for prev, plan in zip(plans, plans[1:]):
            if prev.section != plan.section:
                continue
            room, k = self.overlap, prev.hi
            while k > prev.lo and self.p_tok[k - 1] <= room:
                room -= self.p_tok[k - 1]
                k -= 1
            if k < prev.hi:
                plan.overlap_start = self.p_start[k]
            if room > 0 and k > prev.lo:
                partial.append((plan, k - 1, room))
            plan.tokens += self.overlap - room
        if not partial:
            return
        texts = [self.docs[self.p_doc[k]].text[self.p_start[k] : self.p_end[k]] for _, k, _ in partial]
        for (plan, k, room), text, offs in zip(partial, texts, self.tok.offsets(texts)):
            first = len(offs) - room
            # start the tail at a word start so it is not a fragment of a word
            while 0 < first < len(offs) and offs[first - 1][1] == offs[first][0] \
                    and not text[offs[first][0] : offs[first][0] + 1].isspace():
                first += 1
            if 0 < first < len(offs):
                plan.overlap_start = self.p_start[k] + offs[first][0]
                plan.tokens += len(offs) - first

    def texts(self, plans: list[_Plan]) -> list[tuple[int, tuple[str, ...], str]]:
        """Step 5 input: ``(document, headings, text)`` per plan."""
        out = []
        for plan in plans:
            d, headings = self.sections[plan.section]
            start = plan.overlap_start if plan.overlap_start is not None else self.p_start[plan.lo]
            out.append((d, headings, self.docs[d].text[start : self.p_end[plan.hi - 1]].strip()))
        return out


class _Slices(Sequence[str]):
    """Lazy ``doc.text[start:end]`` per piece, so the sentences are not all copied at once."""

    def __init__(self, docs, doc_idx, starts, ends):
        self.docs, self.doc_idx, self.starts, self.ends = docs, doc_idx, starts, ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.docs[self.doc_idx[index]].text[self.starts[index] : self.ends[index]]


def _fit(items: list[tuple[int, tuple[str, ...], str]], tok: _Tokens, limit: int
         ) -> list[tuple[int, tuple[str, ...], str]]:
    """Step 5: re-count every chunk text; re-cut (by token offsets) those over ``limit``."""
    counts = tok.counts([t for _, _, t in items], "Checking chunk sizes")
    over = [i for i, n in enumerate(counts) if n > limit]
    if not over:
        return items
    logger.debug("%d chunk(s) re-cut after re-tokenisation", len(over))
    replaced: dict[int, list[tuple[int, tuple[str, ...], str]]] = {}
    for i in over:
        d, headings, text = items[i]
        window = limit
        for _ in range(8):
            offs = tok.offsets([text])[0]
            parts = [text[s:e].strip() for s, e, _ in token_windows(text, offs, window)]
            worst = max(tok.counts(parts, "Re-cutting"), default=0)
            if worst <= limit:
                break
            window = max(1, window - (worst - limit))
        replaced[i] = [(d, headings, p) for p in parts if p]
    out = []
    for i, item in enumerate(items):
        out.extend(replaced.get(i, [item]))
    return out


def chunk_documents(docs: Sequence[Document], tokenizer: Any, max_tokens: int, overlap_tokens: int = 32, *,
                    batch_size: int = 1024, show_progress: bool = True) -> list[Chunk]:
    """Cut documents into chunks of at most ``max_tokens`` tokens of ``tokenizer``.

    In: Documents (``embtune.corpus.ingest.read_documents``); a Hugging Face fast tokenizer (or a
    model with ``.tokenizer``); ``max_tokens`` counted without special tokens (use
    ``max_tokens_for(model)``); ``overlap_tokens`` repeated from one chunk to the next within a
    section (0 for none, at most half of ``max_tokens``); ``batch_size`` texts per tokenizer call;
    ``show_progress`` tqdm bars. Out: Chunks in document order, each with a stable id, its document's
    title and source and its heading path; exact duplicate texts dropped unless that would leave a
    document without chunks. See the module docstring.
    Raises ConfigError for bad sizes or a tokenizer without offsets.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 8:
        raise ConfigError(f"max_tokens must be an integer >= 8, got {max_tokens!r}")
    if isinstance(overlap_tokens, bool) or not isinstance(overlap_tokens, int) or not \
            0 <= overlap_tokens <= max_tokens // 2:
        raise ConfigError(f"overlap_tokens must be an integer between 0 and max_tokens // 2 "
                          f"({max_tokens // 2}), got {overlap_tokens!r}")
    docs = list(docs)
    tok = _Tokens(_resolve_tokenizer(tokenizer), batch_size, show_progress)
    chunker = _Chunker(docs, tok, max_tokens, overlap_tokens)
    chunker.segment()
    chunker.cut_long_pieces()
    plans = chunker.pack()
    chunker.add_overlap(plans)
    items = _fit(chunker.texts(plans), tok, max_tokens)
    chunks: list[Chunk] = []
    items = [(d, headings, text) for d, headings, text in items if text]
    first_doc: dict[str, int] = {}
    for d, _, text in items:
        first_doc.setdefault(text, d)
    owns_a_chunk = set(first_doc.values())  # documents with at least one text seen nowhere before
    seen: set[str] = set()
    duplicates = 0
    for d, headings, text in items:
        if text in seen and d in owns_a_chunk:
            duplicates += 1
            continue
        seen.add(text)
        doc = docs[d]
        chunks.append(Chunk(id=chunk_id(doc.doc_id, text), doc_id=doc.doc_id, text=text, title=doc.title,
                            headings=list(headings), source=doc.source))
    if duplicates:
        logger.info("dropped %d duplicate chunk(s)", duplicates)
    return chunks
