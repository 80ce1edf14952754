"""Where exports are written: atomic, inside the chosen output, errors as one-line ExportError.

Folder exports (TEI, ONNX) are built in a temporary sibling folder and swapped in with one rename
(`embtune.utils.atomic.atomic_dir`); the GGUF file is written to a temporary name next to its
target and renamed. Every file an exporter writes goes through `inside`, so no name taken from a
model folder (a ``modules.json`` path, say) can place a file outside the output.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from embtune.errors import EmbtuneError, ExportError
from embtune.utils.atomic import atomic_dir, atomic_write_json, atomic_write_text


def inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, refusing (ExportError) a result that leaves ``root`` (``..``, absolute, links)."""
    root_path = Path(root).resolve()
    target = (root_path / relative).resolve()
    if target != root_path and root_path not in target.parents:
        raise ExportError(f"refusing to write outside the output folder: {relative}", path=root)
    return target


@contextlib.contextmanager
def export_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn write failures (OSError, EmbtuneError from the atomic helpers) into ExportError."""
    try:
        yield
    except ExportError:
        raise
    except EmbtuneError as exc:
        raise ExportError(exc.reason, path=exc.path or path) from None
    except OSError as exc:
        raise ExportError(f"cannot write ({exc.strerror or exc})", path=exc.filename or path) from None


def check_output_parent(path: str | os.PathLike) -> Path:
    """Create the parent folder of ``path`` if needed and check it is writable; returns ``Path(path)``."""
    path = Path(path).expanduser()
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create folder ({exc.strerror or exc})", path=parent) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError("folder is not writable", path=parent)
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise ExportError("file is not writable", path=path)
    return path


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it atomically replaces ``path`` (else ExportError)."""
    path = check_output_parent(path)
    if path.exists() and not path.is_dir():
        raise ExportError("output exists and is not a folder", path=path)
    with export_errors(path), atomic_dir(path) as tmp:
        yield tmp


def write_json(root: Path, relative: str, obj: object) -> Path:
    """Write ``obj`` as JSON at ``root/relative`` (atomically, inside ``root``); returns the path."""
    target = inside(root, relative)
    with export_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(target, obj)


def write_text(root: Path, relative: str, text: str) -> Path:
    """Write UTF-8 ``text`` at ``root/relative`` (atomically, inside ``root``); returns the path."""
    target = inside(root, relative)
    with export_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(target, text)


def copy_file(source: Path, root: Path, relative: str) -> Path:
    """Copy the regular file ``source`` to ``root/relative`` (inside ``root``); returns the target."""
    target = inside(root, relative)
    with export_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return target


def make_readable(root: str | os.PathLike) -> None:
    """Give ``root`` and everything under it the usual permissions (dirs 0755, files 0644, minus umask).

    The atomic helpers create files with ``mkstemp``/``mkdtemp`` (0600/0700); an export is meant to be
    read by other users and containers (a TEI or Ollama server), so it is opened up before the swap.
    """
    umask = os.umask(0)
    os.umask(umask)
    root = Path(root)
    with export_errors(root):
        targets = [root, *root.rglob("*")] if root.is_dir() else [root]
        for path in targets:
            if not path.is_symlink():
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
