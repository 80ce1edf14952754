"""Text structure for chunking: sections under headings, paragraphs, sentences, as character spans.

Everything here works on spans ``(start, end)`` into one document's text and runs in time linear in
its length (one pass over lines, ``re.finditer`` for the rest), so a 50 MB document is fine.

Headings are recognised by document kind:

* ``markdown`` / ``html`` (HTML headings become Markdown lines at ingestion): ATX lines
  ``# Title`` .. ``###### Title`` outside fenced code blocks, and setext titles (a one-line
  paragraph underlined with ``===`` or ``---``).
* ``rst``: a title line underlined (optionally also overlined) with one repeated punctuation
  character, at least as long as the title; levels follow the order in which styles first appear,
  as in docutils.
* anything else: no headings, the whole text is one section.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

HEADING_KINDS = {"markdown": "markdown", "html": "markdown", "rst": "rst"}

_LINE = re.compile(r"[^\n]*\n|[^\n]+$")
_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_RST_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1+[ \t]*$")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(\s+)|[。！？]+")
_BULLET_LINE = re.compile(r"\n(?=[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t])")
_ABBREVIATIONS = {
    "e.g", "i.e", "al", "fig", "figs", "eq", "eqs", "ref", "refs", "dr", "mr", "mrs", "ms", "prof", "vs",
    "etc", "cf", "approx", "no", "nos", "vol", "pp", "st", "jr", "sr", "inc", "ltd", "co", "corp", "dept",
    "u.s", "u.k", "ca", "resp", "sec", "ch", "viz", "op", "ed", "eds", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mt", "gen", "col", "lt", "sgt", "rev", "est",
}


@dataclass
class Section:
    """Body text of one section: ``headings`` is the heading path, ``start``/``end`` the body span."""

    headings: tuple[str, ...]
    start: int
    end: int


def _lines(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, line without its newline)`` for every line of ``text``."""
    out = []
    for m in _LINE.finditer(text):
        line = m.group()
        out.append((m.start(), m.end(), line[:-1] if line.endswith("\n") else line))
    return out


def _markdown_headings(lines: list[tuple[int, int, str]]) -> list[tuple[int, int, int, str]]:
    """``(first line index, last line index, level, text)`` of every Markdown heading."""
    found = []
    fence = ""
    prev_blank = True
    i = 0
    while i < len(lines):
        line = lines[i][2]
        fence_match = _FENCE.match(line)
        if fence:
            marker = fence_match.group(1) if fence_match else ""
            if marker and marker[0] == fence[0] and len(marker) >= len(fence):
                fence = ""
            i += 1
            prev_blank = False
            continue
        if fence_match:
            fence = fence_match.group(1)
            i += 1
            prev_blank = False
            continue
        atx = _ATX.match(line)
        if atx:
            title = (atx.group(2) or "").strip()
            if title:
                found.append((i, i, len(atx.group(1)), title))
            i += 1
            prev_blank = not title
            continue
        if (line.strip() and prev_blank and i + 1 < len(lines) and _SETEXT.match(lines[i + 1][2])
                and not line.startswith("    ")):
            level = 1 if lines[i + 1][2].strip()[0] == "=" else 2
            found.append((i, i + 1, level, line.strip()))
            i += 2
            prev_blank = True
            continue
        prev_blank = not line.strip()
        i += 1
    return found


def _rst_headings(lines: list[tuple[int, int, str]]) -> list[tuple[int, int, int, str]]:
    """``(first line index, last line index, level, text)`` of every reStructuredText title."""
    found = []
    styles: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines) - 1:
        line = lines[i][2]
        title = line.strip()
        under = _RST_ADORNMENT.match(lines[i + 1][2])
        is_adornment_itself = _RST_ADORNMENT.match(line) is not None
        long_enough = under is not None and len(lines[i + 1][2].rstrip()) >= len(line.rstrip())
        if title and not is_adornment_itself and long_enough:
            char = under.group(1)
            over = i > 0 and _RST_ADORNMENT.match(lines[i - 1][2]) is not None \
                and lines[i - 1][2].strip()[0] == char
            prev_ok = i == 0 or not lines[i - 1][2].strip() or over
            if prev_ok and (over or not line.startswith((" ", "\t"))):
                style = (char, over)
                if style not in styles:
                    styles.append(style)
                first = i - 1 if over else i
                found.append((first, i + 1, styles.index(style) + 1, title))
                i += 2
                continue
        i += 1
    return found


def find_headings(text: str, kind: str) -> list[tuple[int, int, int, str]]:
    """Headings of ``text`` read with the rules of ``kind``.

    Out: ``(start offset, end offset, level, heading text)`` per heading, in order; the span covers
    the heading line(s) including adornments. Kinds without heading rules give ``[]``.
    """
    rules = HEADING_KINDS.get(kind)
    if rules is None:
        return []
    lines = _lines(text)
    raw = _markdown_headings(lines) if rules == "markdown" else _rst_headings(lines)
    return [(lines[a][0], lines[b][1], level, title) for a, b, level, title in raw]


def split_sections(text: str, kind: str) -> list[Section]:
    """Split ``text`` into sections at its headings (see the module docstring for the rules).

    Out: one Section per stretch of body text, with the heading path that governs it (a heading
    pops every open heading of the same or a deeper level). Sections whose body is blank are left
    out; text before the first heading has the empty path.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    pos = 0

    def add(end: int) -> None:
        """Record the body from ``pos`` to ``end`` under the current heading path, unless blank."""
        if text[pos:end].strip():
            sections.append(Section(tuple(t for _, t in stack), pos, end))

    for start, end, level, title in find_headings(text, kind):
        add(start)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        pos = end
    add(len(text))
    return sections


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Span shrunk to exclude surrounding whitespace; None when it is blank."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def paragraph_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Paragraphs (text between blank lines) of ``text[start:end]``, as trimmed spans."""
    out = []
    pos = start
    for m in _BLANK_LINES.finditer(text, start, end):
        span = _trimmed(text, pos, m.start())
        if span:
            out.append(span)
        pos = m.end()
    span = _trimmed(text, pos, end)
    if span:
        out.append(span)
    return out


def _is_abbreviation(text: str, dot: int, start: int) -> bool:
    """True when the period at ``dot`` ends an abbreviation or an initial rather than a sentence."""
    j = dot
    while j > start and dot - j <= 12 and not text[j - 1].isspace() and text[j - 1] not in "(\"'[":
        j -= 1
    word = text[j:dot].lower()
    if len(word) == 1 and word.isalpha():
        return True  # an initial ("J. Smith")
    return word in _ABBREVIATIONS


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentences of one paragraph ``text[start:end]`` as trimmed spans.

    A sentence ends at ``.``/``!``/``?`` (closing quotes/brackets included) followed by whitespace
    and a character that is not a lowercase letter, unless the word before a ``.`` is a known
    abbreviation or a single-letter initial; at CJK full stops; and before a line that starts a
    list item (``-``, ``*``, ``+``, ``•``, ``1.``, ``1)``).
    """
    cuts = []
    for m in _SENTENCE_END.finditer(text, start, end):
        cut = m.start(1) if m.group(1) is not None else m.end()
        nxt = m.end()
        if m.group(1) is not None:
            if nxt >= end or text[nxt].islower():
                continue
            if text[m.start()] == "." and m.end() - m.start() - len(m.group(1)) == 1 \
                    and _is_abbreviation(text, m.start(), start):
                continue
        cuts.append(cut)
    for m in _BULLET_LINE.finditer(text, start, end):
        cuts.append(m.start())
    cuts.sort()
    out = []
    pos = start
    for cut in cuts:
        if cut <= pos:
            continue
        span = _trimmed(text, pos, cut)
        if span:
            out.append(span)
        pos = cut
    span = _trimmed(text, pos, end)
    if span:
        out.append(span)
    return out
