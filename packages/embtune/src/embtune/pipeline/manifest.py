"""The run folder's memory: which stages finished, from which inputs, and content hashes to tell.

``DIR/manifest.json`` (written atomically after every change) holds one entry per finished stage::

    {"version": 1, "command": "from-corpus", "stages": {
        "chunks": {"key": "<sha256 of inputs+settings>", "outputs": ["chunks.jsonl"],
                   "seconds": 3.2, "finished_at": "2025-01-01T12:00:00.123456Z", "info": {"chunks": 412}}}}

A stage's key is the sha256 of its name, the settings that change its output, and the content
hashes of its input files and folders. A rerun skips a stage whose key is unchanged and whose outputs
all exist; anything else runs again (and, since its output's content changes, so does every stage
downstream of it). A stage is recorded only after its outputs were renamed into place, so a run
killed at any point leaves either a finished stage or one that will run again.
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from embtune.errors import EmbtuneError
from embtune.utils.atomic import atomic_write_json

MANIFEST = "manifest.json"
VERSION = 1
_BLOCK = 1 << 20


def _utc_now() -> str:
    """The current UTC time in ISO 8601 with microseconds (two stages a few ms apart differ)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_file(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            sha.update(block)
    return sha.hexdigest()


def hash_path(path: str | os.PathLike) -> str:
    """Content hash of a file, or of a folder (every file's relative path and bytes, sorted).

    Hidden files and folders (names starting with ".") are left out, so temporary files of an
    interrupted atomic write never change the hash. A missing path raises EmbtuneError.
    """
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    if not path.is_dir():
        raise EmbtuneError("does not exist", path=path)
    sha = hashlib.sha256()
    for child in sorted(_visible_files(path)):
        sha.update(str(child.relative_to(path)).encode("utf-8") + b"\0")
        sha.update(hash_file(child).encode("ascii"))
    return sha.hexdigest()


def _visible_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / n for n in names if not n.startswith("."))
    return files


def model_fingerprint(path: str | os.PathLike, content_limit: int = 16 << 20) -> str:
    """Cheap identity of a model folder (or file): every file's relative path plus its content hash,
    or for files over ``content_limit`` bytes (weights of many GB) its size and modification time,
    so a multi-GB model is not re-read on every run yet any replaced file changes the result."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(_visible_files(path))
    sha = hashlib.sha256()
    for child in files:
        stat = child.stat()
        rel = child.name if child == path else str(child.relative_to(path))
        sha.update(rel.encode("utf-8") + b"\0")
        if stat.st_size > content_limit:
            sha.update(f"size={stat.st_size};mtime={stat.st_mtime_ns}".encode("ascii"))
        else:
            sha.update(hash_file(child).encode("ascii"))
    return sha.hexdigest()


def stage_key(name: str, settings: dict[str, Any], inputs: dict[str, str]) -> str:
    """sha256 of a stage's name, its settings (JSON, sorted keys) and ``{input name: content hash}``."""
    blob = json.dumps({"stage": name, "settings": settings, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Manifest:
    """``DIR/manifest.json``: finished stages with their keys; saved atomically on every change."""

    def __init__(self, run_dir: str | os.PathLike, data: dict[str, Any]):
        """Wrap already-parsed manifest ``data`` of ``run_dir``; use ``Manifest.open`` to read one."""
        self.run_dir = Path(run_dir)
        self.data = data

    @property
    def path(self) -> Path:
        """``run_dir/manifest.json``."""
        return self.run_dir / MANIFEST

    @classmethod
    def open(cls, run_dir: str | os.PathLike, command: str) -> "Manifest":
        """Read ``run_dir/manifest.json`` or start an empty one (not yet written).

        Raises EmbtuneError naming the file when it is not valid JSON or not an embtune manifest.
        """
        path = Path(run_dir) / MANIFEST
        if not path.exists():
            return cls(run_dir, {"version": VERSION, "command": command, "stages": {}})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EmbtuneError(f"cannot read the run manifest ({exc}); pass --force to start over",
                               path=path) from None
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("stages"), dict):
            raise EmbtuneError("is not an embtune run manifest of this version; pass --force to start over",
                               path=path)
        return cls(run_dir, data)

    def save(self) -> None:
        """Write the manifest atomically."""
        atomic_write_json(self.path, self.data)

    def is_done(self, name: str, key: str) -> bool:
        """True when stage ``name`` finished with this ``key`` and all its recorded outputs exist."""
        entry = self.data["stages"].get(name)
        if not entry or entry.get("key") != key:
            return False
        return all((self.run_dir / out).exists() for out in entry.get("outputs", []))

    def entry(self, name: str) -> dict[str, Any] | None:
        """The recorded entry of stage ``name`` (key, outputs, seconds, info), or None."""
        return self.data["stages"].get(name)

    def finish(self, name: str, key: str, outputs: list[str], seconds: float,
               info: dict[str, Any] | None = None) -> None:
        """Record stage ``name`` as finished (after its outputs were renamed into place) and save."""
        self.data["stages"][name] = {
            "key": key, "outputs": outputs, "seconds": round(seconds, 3),
            "finished_at": _utc_now(), "info": info or {}}
        self.save()

    def forget(self, name: str) -> None:
        """Drop stage ``name`` (it will run again) and save."""
        if self.data["stages"].pop(name, None) is not None:
            self.save()

    def note(self, name: str, value: Any) -> None:
        """Store a run-level value (e.g. the key a training run started with) and save."""
        self.data.setdefault("notes", {})[name] = value
        self.save()

    def noted(self, name: str) -> Any:
        """A value stored with ``note``, or None."""
        return self.data.get("notes", {}).get(name)
