"""Read a folder (recursively), a single file, or a BEIR folder into a list of Documents.

Supported files: ``.txt`` ``.md``/``.markdown`` ``.rst`` ``.html``/``.htm`` ``.pdf`` ``.jsonl`` ``.json``
``.csv``; a folder holding ``corpus.jsonl`` is read as a BEIR corpus (one Document per line,
``doc_id`` = its ``_id``; queries and qrels are not read here), with the line rules of
``embtune.data.beir.iter_corpus``, the one BEIR corpus reader (UTF-8, ``_id`` and ``text`` required,
ids unique; each error names the file and line). Folders are walked in sorted order,
hidden files and folders (``.git``...) are ignored, and document ids are paths relative to the
folder (``guide/install.md``), so a rerun reads the same documents with the same ids.

What is skipped, with a ``warn(message)`` call that names the file: files that are not UTF-8
(UTF-8/UTF-16 with a byte-order mark are fine), binary files, unreadable PDFs, files that hold no
text, and (one summary message) files with other extensions. What raises DataFormatError naming
the path (and line): a missing path, a malformed JSONL/JSON/CSV record, a duplicate document id,
and a corpus with no usable text at all.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from embtune.corpus import readers
from embtune.corpus.types import Document
from embtune.errors import DataFormatError

TEXT_READERS = {
    ".txt": readers.read_plain,
    ".md": readers.read_markdown,
    ".markdown": readers.read_markdown,
    ".rst": readers.read_rst,
    ".html": readers.read_html,
    ".htm": readers.read_html,
    ".jsonl": readers.read_jsonl,
    ".json": readers.read_json,
    ".csv": readers.read_csv,
}
SUPPORTED_SUFFIXES = (*TEXT_READERS, ".pdf")
_SNIFF_BYTES = 8192


def _default_warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def decode_bytes(raw: bytes) -> tuple[str | None, str]:
    """Decode a text file's bytes.

    Out: ``(text, "")`` on success, ``(None, reason)`` for a binary or non-UTF-8 file. A UTF-8 BOM is
    dropped; a UTF-16 BOM selects UTF-16. A NUL byte in the first 8 KiB means binary.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), ""
        except UnicodeDecodeError:
            return None, "not valid UTF-16 despite its byte-order mark"
    if b"\x00" in raw[:_SNIFF_BYTES]:
        return None, "binary file (contains NUL bytes)"
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as exc:
        return None, (f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                      "convert it to UTF-8 to include it")


def _walk(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, sorted by relative path."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in names if not n.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_file(path: Path, rel: str, warn: Callable[[str], None], empty: list[str] | None = None) -> list[Document]:
    """Documents of one supported file (see the module docstring); ``[]`` when it is skipped. A file
    that reads fine but holds no text has its path ``rel`` appended to ``empty`` when given."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        said_skipped = []

        def warn_pdf(message: str) -> None:
            said_skipped.append(message.startswith(f"skipped {rel}:"))
            warn(message)

        docs = readers.read_pdf(path, rel, warn_pdf)
        if any(said_skipped):  # the reader said why the whole file was skipped; once is enough
            return []
    else:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            warn(f"skipped {rel}: cannot read it ({exc.strerror})")
            return []
        text, reason = decode_bytes(raw)
        if text is None:
            warn(f"skipped {rel}: {reason}")
            return []
        docs = TEXT_READERS[suffix](path, rel, readers.normalise_text(text))
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        warn(f"skipped {rel}: no text")
        if empty is not None:
            empty.append(rel)
    return docs


def _summarise_unsupported(paths: list[str], warn: Callable[[str], None]) -> None:
    if not paths:
        return
    counts = Counter(Path(p).suffix.lower() or "(none)" for p in paths)
    kinds = ", ".join(f"{suffix} x{n}" for suffix, n in sorted(counts.items()))
    shown = ", ".join(paths[:10]) + (f", ... ({len(paths) - 10} more)" if len(paths) > 10 else "")
    warn(f"skipped {len(paths)} file(s) with unsupported extensions ({kinds}): {shown}; "
         f"supported: {' '.join(SUPPORTED_SUFFIXES)}")


def _check_unique(docs: list[Document], root: Path) -> None:
    seen: dict[str, str] = {}
    for doc in docs:
        if doc.doc_id in seen:
            where, _, line = doc.source.rpartition(":")
            path = root / where if where and line.isdigit() else root / doc.source
            raise DataFormatError(
                f"duplicate document id {doc.doc_id!r} (first seen in {seen[doc.doc_id]})",
                path=path, line=int(line) if where and line.isdigit() else None)
        seen[doc.doc_id] = doc.source


def read_documents(path: str | os.PathLike, warn: Callable[[str], None] | None = None,
                   show_progress: bool = True, *, empty: list[str] | None = None) -> list[Document]:
    """Read every document under ``path``.

    In: ``path`` a folder (walked recursively), a single supported file, or a BEIR folder (holding
    ``corpus.jsonl``); ``warn`` called with one message per skipped file (default:
    ``warnings.warn``); ``show_progress`` a tqdm bar over files; ``empty`` (optional) a list that
    receives the ids of documents that exist but hold no text (a BEIR line with a blank text, a file
    with no text: its path), so labels naming them can be told from typos. Out: the Documents in a stable order
    (sorted paths, file order within a file). Raises DataFormatError naming the path for a missing
    path, an unsupported single file, a malformed record (with its line), a duplicate id, or when no
    document has any text.
    """
    warn = warn or _default_warn
    root = Path(path)
    if not root.exists():
        raise DataFormatError("does not exist", path=root)
    if root.is_dir() and (root / "corpus.jsonl").is_file():
        docs = readers.read_beir(root / "corpus.jsonl", "corpus.jsonl", empty)
        _check_unique(docs, root)
    elif root.is_dir():
        docs, unsupported = [], []
        files = _walk(root)
        bar_off = not show_progress or len(files) < 2
        for file in tqdm(files, desc="Reading files", unit="file", disable=bar_off):
            rel = file.relative_to(root).as_posix()
            if file.suffix.lower() not in SUPPORTED_SUFFIXES:
                unsupported.append(rel)
                continue
            docs.extend(read_file(file, rel, warn, empty))
        _summarise_unsupported(unsupported, warn)
        _check_unique(docs, root)
    else:
        if root.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DataFormatError(f"unsupported file type {root.suffix or '(no extension)'!r}; supported: "
                                  f"{' '.join(SUPPORTED_SUFFIXES)}", path=root)
        docs = read_file(root, root.name, warn, empty)
        _check_unique(docs, root.parent)
    if not docs:
        raise DataFormatError("no usable text found (every file was empty, skipped or unsupported)",
                              path=root)
    return docs
