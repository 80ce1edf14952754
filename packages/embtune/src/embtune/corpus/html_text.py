"""HTML to plain text with the stdlib ``html.parser``: tags, scripts and styles go, headings stay.

Headings ``<h1>``..``<h6>`` become Markdown heading lines (``## Heading``) so the chunker can split on
them; block elements (paragraphs, list items, table rows, ``<br>``...) become line or paragraph
breaks; ``<pre>`` keeps its whitespace; everything inside ``<script>``, ``<style>``, ``<noscript>``,
``<template>``, ``<svg>``, ``<nav>`` and ``<head>`` (except ``<title>``) is dropped.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "head", "iframe", "object", "canvas"}
_PARAGRAPH = {"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote", "pre",
              "figure", "figcaption", "table", "ul", "ol", "dl", "form", "address", "details", "summary",
              "fieldset", "hr", "body"}
_LINE = {"br", "li", "tr", "dt", "dd", "caption"}
_CELL = {"td", "th"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_SPACES = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Collects the visible text of one HTML page as a list of string parts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.first_h1 = ""
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._heading: list[str] | None = None
        self._heading_level = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        """Open a skipped region, a heading, a <pre> block, or emit the break a block tag implies."""
        if tag == "title":
            self._in_title = True
            return
        if tag in _SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        if tag in _HEADINGS:
            self.parts.append("\n\n")
            self._heading, self._heading_level = [], _HEADINGS[tag]
        elif tag == "pre":
            self.parts.append("\n\n")
            self._pre += 1
        elif tag in _PARAGRAPH:
            self.parts.append("\n\n")
        elif tag in _LINE:
            self.parts.append("\n")
        elif tag in _CELL:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs) -> None:
        """``<br/>`` is a line break, ``<hr/>`` a paragraph break."""
        if not self._skip and tag in ("br", "hr"):
            self.parts.append("\n" if tag == "br" else "\n\n")

    def handle_endtag(self, tag: str) -> None:
        """Close what ``handle_starttag`` opened; a finished heading is written as a Markdown line."""
        if tag == "title":
            self._in_title = False
            return
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag in _HEADINGS and self._heading is not None:
            text = _SPACES.sub(" ", "".join(self._heading)).strip()
            if text:
                self.parts.append("#" * self._heading_level + " " + text + "\n\n")
                if self._heading_level == 1 and not self.first_h1:
                    self.first_h1 = text
            self._heading = None
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self.parts.append("\n\n")
        elif tag in _PARAGRAPH:
            self.parts.append("\n\n")
        elif tag in _LINE:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        """Keep visible text (whitespace collapsed outside <pre>), the title and heading text apart."""
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        elif self._pre:
            self.parts.append(data)
        else:
            self.parts.append(_SPACES.sub(" ", data))


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text of an HTML page and its title.

    In: the page source. Out: ``(text, title)``: text with Markdown heading lines for h1-h6 and
    blank lines between blocks; title from ``<title>``, else the first ``<h1>``, else "".
    """
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [line.rstrip() for line in text.split("\n")]
    # A single leading space is what a collapsed whitespace run leaves after a block break; deeper
    # indentation can only come from <pre> and is kept.
    text = "\n".join(line[1:] if line.startswith(" ") and not line.startswith("  ") else line
                     for line in lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = _SPACES.sub(" ", "".join(parser.title_parts)).strip() or parser.first_h1
    return text, title
