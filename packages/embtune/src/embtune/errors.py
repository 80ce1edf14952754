"""User-facing errors.

Every mistake a user can make (a malformed file, a missing folder, a bad flag) raises a subclass of
`EmbtuneError` whose message names the file and, where there is one, the line. The CLI prints the
message on one line and exits 2; a traceback is shown only with ``--debug``. Programming errors are
never wrapped: they surface as ordinary exceptions.
"""
from __future__ import annotations

import os


class EmbtuneError(Exception):
    """Base class of the errors a user can fix. ``str(err)`` is a one-line message."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        """Build the message ``"{path}:{line}: {message}"`` (path and line only when given)."""
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + " ".join(str(message).split()))


class DataFormatError(EmbtuneError):
    """A data file (JSONL, CSV, TSV, BEIR folder) is missing, empty or malformed."""


class ModelLoadError(EmbtuneError):
    """A model folder or name cannot be loaded (missing files, unsafe weights, unknown architecture)."""


class ConfigError(EmbtuneError):
    """Settings that contradict each other or are out of range."""


class TrainingError(EmbtuneError):
    """Training cannot go on (non-finite loss, incompatible checkpoint)."""


class ExportError(EmbtuneError):
    """An export cannot be written (unsupported architecture, missing tokenizer, unwritable path)."""
