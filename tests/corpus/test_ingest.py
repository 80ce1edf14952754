"""read_documents: every format from real files, skips with named warnings, errors with file:line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from embtune.corpus.html_text import html_to_text
from embtune.corpus.ingest import decode_bytes, read_documents
from embtune.errors import DataFormatError
from tiny_models import scifact_dir


def minimal_pdf(lines: list[str], title: str | None = None) -> bytes:
    """A valid one-page PDF (Helvetica text, one line per item) with a correct xref table."""
    text_ops = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(
        f"({line.replace('(', '[').replace(')', ']')}) Tj T*" for line in lines) + " ET"
    stream = text_ops.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title is not None:
        objects.append(b"<< /Title (" + title.encode("latin-1") + b") >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    info = b" /Info %d 0 R" % len(objects) if title is not None else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return bytes(out)


MARKDOWN = """---
title: Install guide
author: someone
---
# Installing embtune

Install it with pip. It needs Python 3.10.

## On Linux

Use a virtual environment.
"""
RST = """Release notes
=============

Version one fixes things.

Bug fixes
---------

The parser no longer crashes.
"""
HTML = """<!doctype html><html><head><title>Page title</title>
<style>body { color: red; }</style><script>var secret = "do not index";</script></head>
<body><nav>Home | About</nav><h1>Main heading</h1><p>First   paragraph
with <b>bold</b> text &amp; an entity.</p><h2>Sub heading</h2><ul><li>one</li><li>two</li></ul>
<script>console.log("nope")</script><pre>  code   kept</pre></body></html>"""


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.fixture
def corpus_folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "a.txt", "Plain text document.\n\nSecond paragraph.")
    write(root / "guide.md", MARKDOWN)
    write(root / "notes.rst", RST)
    write(root / "page.html", HTML)
    write(root / "paper.pdf", minimal_pdf(["PDF line one about proteins.", "PDF line two."],
                                          title="PDF Title"))
    records = [{"id": "r1", "title": "Rec one", "text": "Record one text."}, None,
               {"content": "Record two content."}, {"body": "   "}]
    write(root / "records.jsonl", "".join(json.dumps(r) + "\n" if r else "\n" for r in records))
    write(root / "list.json", json.dumps([{"_id": "j1", "body": "Json body one."}, {"text": "Json two."}]))
    write(root / "table.csv", 'ID,Title,Content\nc1,Row title,"Cell text, with a comma\nand a newline."\n')
    write(root / "sub" / "deep" / "nested.txt", "Nested file text.")
    write(root / "latin1.txt", "caf\xe9 au lait".encode("latin-1"))
    write(root / "fake.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    write(root / "empty.md", "   \n\n")
    write(root / ".hidden.txt", "never read")
    write(root / ".git" / "config.txt", "never read either")
    return root


def test_folder_reads_every_format(corpus_folder: Path) -> None:
    warnings: list[str] = []
    docs = read_documents(corpus_folder, warn=warnings.append, show_progress=False)
    by_id = {d.doc_id: d for d in docs}
    assert list(by_id) == ["a.txt", "guide.md", "j1", "list.json#2", "notes.rst", "page.html", "paper.pdf",
                           "r1", "records.jsonl#3", "sub/deep/nested.txt", "c1"]  # sorted paths, file order
    assert by_id["a.txt"].kind == "text" and by_id["a.txt"].text.startswith("Plain text document.")

    md = by_id["guide.md"]
    assert md.kind == "markdown" and md.title == "Install guide"
    assert "author:" not in md.text and "## On Linux" in md.text

    rst = by_id["notes.rst"]
    assert rst.kind == "rst" and rst.title == "Release notes"

    html = by_id["page.html"]
    assert html.kind == "html" and html.title == "Page title"
    assert "# Main heading" in html.text and "## Sub heading" in html.text
    assert "First paragraph with bold text & an entity." in html.text
    for hidden in ("do not index", "console.log", "color: red", "Home | About"):
        assert hidden not in html.text
    assert "  code   kept" in html.text

    pdf = by_id["paper.pdf"]
    assert pdf.kind == "pdf" and pdf.title == "PDF Title"
    assert "PDF line one about proteins." in pdf.text and "PDF line two." in pdf.text

    assert by_id["r1"].title == "Rec one" and by_id["r1"].text == "Record one text."
    assert by_id["r1"].source == "records.jsonl:1"
    assert by_id["records.jsonl#3"].text == "Record two content."  # blank line 2 skipped, blank body dropped
    assert by_id["j1"].text == "Json body one." and by_id["list.json#2"].text == "Json two."
    assert by_id["c1"].title == "Row title" and by_id["c1"].text == "Cell text, with a comma\nand a newline."
    assert by_id["sub/deep/nested.txt"].text == "Nested file text."

    joined = "\n".join(warnings)
    assert "latin1.txt" in joined and "not UTF-8" in joined
    assert "fake.txt" in joined and "binary" in joined
    assert "image.png" in joined and "unsupported" in joined
    assert "empty.md" in joined and "no text" in joined
    assert "hidden" not in joined and "never read" not in " ".join(d.text for d in docs)


def test_reading_is_deterministic(corpus_folder: Path) -> None:
    first = read_documents(corpus_folder, warn=lambda m: None, show_progress=False)
    second = read_documents(corpus_folder, warn=lambda m: None, show_progress=False)
    assert [d.to_dict() for d in first] == [d.to_dict() for d in second]


def test_single_files(tmp_path: Path) -> None:
    md = write(tmp_path / "one.md", MARKDOWN)
    docs = read_documents(md, warn=pytest.fail, show_progress=False)
    assert [d.doc_id for d in docs] == ["one.md"]
    utf16 = write(tmp_path / "wide.txt", "Wide text \u00e9".encode("utf-16"))
    assert read_documents(utf16, show_progress=False)[0].text == "Wide text \u00e9"
    bom = write(tmp_path / "bom.txt", b"\xef\xbb\xbfWith BOM")
    assert read_documents(bom, show_progress=False)[0].text == "With BOM"
    crlf = write(tmp_path / "crlf.txt", b"line one\r\n\r\nline two\r\n")
    assert read_documents(crlf, show_progress=False)[0].text == "line one\n\nline two\n"


def test_beir_folder_gives_one_document_per_corpus_line(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    write(folder / "corpus.jsonl", json.dumps({"_id": "d1", "title": "T1", "text": "Body one."}) + "\n"
          + json.dumps({"_id": 7, "title": "", "text": "Body seven."}) + "\n"
          + json.dumps({"_id": "d3", "title": "Only title", "text": ""}) + "\n")
    write(folder / "queries.jsonl", json.dumps({"_id": "q", "text": "not a document"}) + "\n")
    docs = read_documents(folder, show_progress=False)
    assert [(d.doc_id, d.title, d.text, d.kind) for d in docs] == [
        ("d1", "T1", "Body one.", "beir"), ("7", "", "Body seven.", "beir")]


@pytest.mark.parametrize("line, message", [
    ('{"_id": "d2", "title": "T"}', 'missing "text"'),
    ('{"_id": "d2", "text": 42}', '"text" must be a string'),
    ('{"_id": "", "text": "x"}', '"_id" is empty'),
    ('{"_id": "d1", "text": "again"}', "duplicate document id 'd1'"),
])
def test_beir_corpus_lines_follow_the_one_reader(tmp_path: Path, line: str, message: str) -> None:
    """Chunking (read_documents) and evaluation (load_beir) read corpus.jsonl with the same rules
    (embtune.data.beir.iter_corpus): the same bad line is refused by both, naming the file and line 2."""
    from embtune.data import load_beir

    folder = tmp_path / "beir"
    write(folder / "corpus.jsonl", '{"_id": "d1", "text": "Body one."}\n' + line + "\n")
    write(folder / "queries.jsonl", '{"_id": "q", "text": "a question"}\n')
    write(folder / "qrels" / "test.tsv", "q\td1\t1\n")
    for read in (lambda: read_documents(folder, show_progress=False), lambda: load_beir(folder)):
        with pytest.raises(DataFormatError) as info:
            read()
        assert f"{folder / 'corpus.jsonl'}:2:" in str(info.value) and message in str(info.value)


def test_real_scifact_corpus() -> None:
    docs = read_documents(scifact_dir(), show_progress=False)
    assert len(docs) == 5183
    assert docs[0].doc_id == "4983" and docs[0].title.startswith("Microstructural development")
    assert not docs[0].text.startswith("Microstructural")  # the title is not part of the text


@pytest.mark.parametrize("contents", [
    {"empty.txt": ""},
    {"blank.md": "  \n \n", "binary.txt": b"\x00\x01\x02"},
    {"picture.png": b"\x89PNG"},
])
def test_empty_corpus_names_the_path(tmp_path: Path, contents: dict) -> None:
    root = tmp_path / "nothing"
    root.mkdir()
    for name, content in contents.items():
        write(root / name, content)
    with pytest.raises(DataFormatError, match="no usable text") as info:
        read_documents(root, warn=lambda m: None, show_progress=False)
    assert str(root) in str(info.value)


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no usable text"):
        read_documents(tmp_path / "empty", show_progress=False)
    with pytest.raises(DataFormatError, match="does not exist"):
        read_documents(tmp_path / "missing", show_progress=False)


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "docs" / "bad.jsonl",
                 '{"text": "fine"}\n\n{"text": "broken",\n{"text": "never reached"}\n')
    with pytest.raises(DataFormatError) as info:
        read_documents(tmp_path / "docs", show_progress=False)
    assert str(info.value).startswith(f"{path}:3: invalid JSON")
    assert info.value.line == 3


def test_record_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "no_text.jsonl", '{"text": "ok"}\n{"summary": "wrong field"}\n')
    with pytest.raises(DataFormatError, match=r"no_text.jsonl:2: record has no text field") as info:
        read_documents(path, show_progress=False)
    assert "summary" in str(info.value)
    path = write(tmp_path / "list.jsonl", '["not", "an", "object"]\n')
    with pytest.raises(DataFormatError, match=r"list.jsonl:1: expected a JSON object"):
        read_documents(path, show_progress=False)
    path = write(tmp_path / "bad.json", '[{"text": "a"},\n {"text": }]')
    with pytest.raises(DataFormatError, match=r"bad.json:2: invalid JSON"):
        read_documents(path, show_progress=False)
    path = write(tmp_path / "nocol.csv", "title,summary\nx,y\n")
    with pytest.raises(DataFormatError, match=r"nocol.csv:1: no text column"):
        read_documents(path, show_progress=False)
    path = write(tmp_path / "ragged.csv", "text,title\nfine,t\nmissing\n")
    with pytest.raises(DataFormatError, match=r"ragged.csv:3: expected 2 columns"):
        read_documents(path, show_progress=False)


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.jsonl", '{"id": "x", "text": "one"}\n')
    path = write(tmp_path / "d" / "b.jsonl", '{"text": "filler"}\n{"id": "x", "text": "two"}\n')
    with pytest.raises(DataFormatError, match="duplicate document id 'x'") as info:
        read_documents(tmp_path / "d", show_progress=False)
    assert str(info.value).startswith(f"{path}:2:")


def test_unsupported_single_file(tmp_path: Path) -> None:
    path = write(tmp_path / "data.xml", "<a>text</a>")
    with pytest.raises(DataFormatError, match="unsupported file type '.xml'"):
        read_documents(path, show_progress=False)


def test_unreadable_pdf_is_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path / "d" / "broken.pdf", b"%PDF-1.4\nthis is not really a pdf")
    write(tmp_path / "d" / "ok.txt", "fine")
    warnings: list[str] = []
    docs = read_documents(tmp_path / "d", warn=warnings.append, show_progress=False)
    assert [d.doc_id for d in docs] == ["ok.txt"]
    assert any("broken.pdf" in w for w in warnings)


def test_decode_bytes() -> None:
    assert decode_bytes("héllo".encode()) == ("héllo", "")
    text, reason = decode_bytes(b"abc\xff")
    assert text is None and "0xff" in reason
    assert decode_bytes(b"a\x00b")[0] is None


def test_html_to_text_keeps_headings_and_drops_code() -> None:
    text, title = html_to_text("<h1>T</h1><p>a</p><h3>Deep <i>one</i></h3><p>b<br>c</p><style>x{}</style>")
    assert title == "T"
    assert text == "# T\n\na\n\n### Deep one\n\nb\nc"
