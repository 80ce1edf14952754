"""Atomic writes: a reader (or a rerun after kill -9) sees either the old output or the new one.

Files are written to a temporary name in the same folder, flushed and fsync'ed, then renamed over
the target (``os.replace`` is atomic on POSIX). Folders are built under a temporary sibling and
swapped in with renames, so a half-written model folder never exists under its final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from embtune.errors import EmbtuneError


def _check_writable(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbtuneError(f"cannot create folder ({exc.strerror})", path=parent) from None
    if not os.access(parent, os.W_OK):
        raise EmbtuneError("folder is not writable", path=parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Raises EmbtuneError if unwritable."""
    path = Path(path)
    _check_writable(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise EmbtuneError(f"cannot write file ({exc.strerror})", path=path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``path`` in one rename.

    On an exception the temporary folder is removed and ``path`` is left as it was. With
    ``overwrite=False`` an existing ``path`` raises EmbtuneError before anything is written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise EmbtuneError("already exists (pass overwrite=True / --force)", path=path)
    _check_writable(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EmbtuneError(f"cannot write folder ({exc.strerror})", path=path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
