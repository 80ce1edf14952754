"""Atomic writes: a reader (or a rerun after kill -9) sees either the old output or the new one.

Files are written to a temporary name in the same folder, flushed and fsync'ed, then renamed over
the target (``os.replace`` is atomic on POSIX). Folders are built under a temporary sibling and
swapped in with renames, so a half-written model folder never exists under its final name.

Every temporary name starts with "." and ends in ".tmp" (a folder being replaced is first renamed
to ``.name.old-PID.tmp``), so a run killed midway leaves only names a cleanup can recognise.
Finished files get the usual permissions (0666 / folders 0777, minus the umask), not ``mkstemp``'s
0600. A write that fails for lack of space or permission, whether the OS reports it as OSError or
a Rust-backed writer (safetensors, tokenizers) as ``... (os error 28)``, raises EmbtuneError naming
the final path, after the temporary file or folder is removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from embtune.errors import EmbtuneError

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_failure(exc: BaseException) -> str | None:
    """Why a file-system write failed, or None when ``exc`` is not a write failure.

    In: any exception. An OSError gives its ``strerror`` (e.g. "No space left on device"); an
    error of a Rust-backed writer (safetensors' SafetensorError, a tokenizers ``Exception``) whose
    message ends in ``(os error N)`` gives ``os.strerror(N)``. Anything else (EmbtuneError, a
    programming error) gives None and is left to propagate unchanged.
    """
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, EmbtuneError):
        return None
    match = _OS_ERROR.search(str(exc))
    return os.strerror(int(match.group(1))) if match else None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_writable(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbtuneError(f"cannot create folder ({exc.strerror})", path=parent) from None
    if not os.access(parent, os.W_OK):
        raise EmbtuneError("folder is not writable", path=parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a file opened with ``mode`` ("wb" or "w", UTF-8) under a temporary name beside ``path``;
    when the block ends it is flushed, fsync'ed and renamed over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was; a write failure
    (``write_failure``: no space, no permission) raises EmbtuneError naming ``path``.
    """
    path = Path(path)
    _check_writable(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise EmbtuneError(f"cannot write file ({exc.strerror})", path=path) from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        reason = write_failure(exc)
        if reason is not None:
            raise EmbtuneError(f"cannot write file ({reason})", path=path) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Raises EmbtuneError if unwritable."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``path`` in one rename.

    On an exception the temporary folder is removed and ``path`` is left as it was; a write failure
    (``write_failure``) becomes EmbtuneError naming ``path``, and an EmbtuneError naming a file in
    the temporary folder is raised again naming that file under ``path``. With ``overwrite=False``
    an existing ``path`` raises EmbtuneError before anything is written. A ``path`` that is a
    symbolic link is replaced itself; the folder it points to is never written.
    """
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise EmbtuneError("already exists (pass overwrite=True / --force)", path=path)
    _check_writable(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise EmbtuneError(f"cannot write folder ({exc.strerror})", path=path) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = write_failure(exc)
        if reason is not None:
            raise EmbtuneError(f"cannot write folder ({reason})", path=path) from None
        if isinstance(exc, EmbtuneError) and exc.path is not None and _is_within(Path(exc.path), tmp):
            raise type(exc)(exc.reason, path=path / Path(exc.path).relative_to(tmp), line=exc.line) from None
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``, moving an existing ``path`` aside first."""
    old = None
    if os.path.lexists(path):
        old = path.with_name(f".{path.name}.old-{os.getpid()}.tmp")
        _remove(old)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)  # put the previous folder back
        raise
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it exists (a link itself, never what it points to)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def remove_partial_writes(folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete what killed atomic writes left in ``folder``: ``.NAME.*.tmp`` files and folders for each
    of ``names`` (every ``.*.tmp`` when None). Returns the paths removed; a missing folder is fine."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [".*.tmp"] if names is None else [f".{name}.*.tmp" for name in names]
    removed = sorted({p for pattern in patterns for p in folder.glob(pattern)})
    for path in removed:
        _remove(path)
    return removed
