"""A local GGUF instruct model (llama.cpp through llama-cpp-python) as the LLM of ``LLMPairs``.

``LLMPairs(gguf="model.gguf")`` sends the same chat request it would send to an OpenAI-compatible
server (same prompt, same sampling settings) to ``LocalGGUF.complete`` instead, and caches the reply
under the same key scheme, with ``LocalGGUF.model_id`` (a fingerprint of the file) as the model name.
The model's own chat template (GGUF metadata) formats the messages; llama-cpp-python's default is
used when the file has none.

llama-cpp-python is imported only when the first uncached chunk needs generating, so a run whose
replies are all cached never loads it; a missing package is a one-line ConfigError.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError, DataFormatError, EmbtuneError

FINGERPRINT_BYTES = 4 << 20
"""Bytes hashed at each end of the file for its fingerprint (header, metadata and the last tensors)."""
MISSING = ("--llm-gguf needs llama-cpp-python: pip install llama-cpp-python (the embtune[export-verify] extra; "
           "a source build, see `make llama-cpp`)")


def gguf_fingerprint(path: str | os.PathLike) -> str:
    """``gguf-`` + 16 hex digits of sha256 over the file's size, first and last ``FINGERPRINT_BYTES``.

    Cheap even for a many-GB model, and independent of the file's name, folder and mtime, so a copied
    or renamed model keeps its cached replies while another model (or quantisation) gets its own.
    Raises DataFormatError naming the path when it is not a readable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("--llm-gguf file does not exist" if not path.exists() else "--llm-gguf is not a file",
                              path=path)
    digest = hashlib.sha256()
    try:
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as fh:
            digest.update(fh.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                fh.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                digest.update(fh.read())
    except OSError as exc:
        raise DataFormatError(f"cannot read the GGUF file ({exc.strerror})", path=path) from None
    return "gguf-" + digest.hexdigest()[:16]


class LocalGGUF:
    """Chat completions from a local GGUF file, loaded once on first use (thread-safe, one at a time)."""

    def __init__(self, path: str | os.PathLike, n_ctx: int = 4096, n_threads: int | None = None, seed: int = 0):
        """Check the file and fingerprint it; nothing is loaded yet.

        In: the GGUF path, the context size in tokens (prompt + reply), llama.cpp's CPU threads
        (None: its default), the sampling seed. Raises DataFormatError for a missing file,
        ConfigError for a bad ``n_ctx``.
        """
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 64:
            raise ConfigError(f"LocalGGUF n_ctx must be an integer >= 64, got {n_ctx!r}")
        self.path = Path(path)
        self.model_id = gguf_fingerprint(self.path)
        """The ``model`` of the cached request bodies: the file's fingerprint (``gguf_fingerprint``)."""
        self.n_ctx, self.n_threads, self.seed = n_ctx, n_threads, seed
        self.generations = 0
        self._llm: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalGGUF({str(self.path)!r}, model_id={self.model_id!r})"

    def _load(self) -> Any:
        try:
            import llama_cpp
        except ImportError:
            raise ConfigError(MISSING) from None
        try:
            return llama_cpp.Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                   seed=self.seed, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EmbtuneError(f"llama.cpp cannot load this GGUF model ({exc})", path=self.path) from None

    def complete(self, body: dict[str, Any]) -> str:
        """The reply text to an OpenAI-style chat body (``messages``, ``temperature``, ``max_tokens``).

        Loads the model on the first call. Raises ConfigError when llama-cpp-python is missing,
        EmbtuneError when the file does not load or the prompt does not fit ``n_ctx``.
        """
        with self._lock:
            if self._llm is None:
                self._llm = self._load()
            try:
                reply = self._llm.create_chat_completion(messages=body["messages"],
                                                         temperature=body.get("temperature", 0.0),
                                                         max_tokens=body.get("max_tokens", 256))
            except ValueError as exc:  # e.g. "Requested tokens (5000) exceed context window of 4096"
                raise EmbtuneError(f"the local LLM refused a chunk ({exc})", path=self.path) from None
            self.generations += 1
        return reply["choices"][0]["message"]["content"] or ""

    def close(self) -> None:
        """Free the model (a later ``complete`` loads it again)."""
        with self._lock:
            if self._llm is not None and hasattr(self._llm, "close"):
                self._llm.close()
            self._llm = None
