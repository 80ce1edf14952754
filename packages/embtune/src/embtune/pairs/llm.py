"""Synthetic queries per chunk from any OpenAI-compatible chat-completions endpoint, or a local GGUF model.

Works with Ollama (``http://localhost:11434``), vLLM, llama.cpp's server, LM Studio and hosted APIs:
``url`` may be the server root, its ``/v1`` base, or the full ``/v1/chat/completions`` address.
Or, with no server: ``gguf="model.gguf"`` runs a local GGUF instruct model in-process through
llama-cpp-python (``embtune.pairs.llm_local``), with the same prompt, request body and cache; its
``model`` is the file's fingerprint, and ``url``, key, concurrency and retries do not apply.

* Key: read from the environment variable ``api_key_env`` at request time and sent as a Bearer
  token (no variable, no header: local servers need none). It is never logged, never cached, never
  part of an error message (any echo of it in a server reply is masked).
* Concurrency: ``concurrency`` requests in flight (threads); results come back in chunk order.
* Retries: HTTP 408/409/429/5xx, timeouts and connection errors are retried ``max_retries`` times with
  exponential backoff (``backoff * 2**attempt`` seconds plus jitter, or the server's Retry-After
  when it sends one, capped at 60 s); other HTTP errors fail at once with the status and reply.
* Cache: each reply is stored as ``cache_dir/<sha256 of the request>.json`` (model, messages and
  sampling settings; not the URL or key), written atomically, so a rerun, or a run that died
  half-way, asks the server only what it has not answered yet.
* Prompt: ``prompt`` is a template with ``{text}`` and optionally ``{title}``, ``{headings}``,
  ``{context}`` (title and heading lines, or nothing) and ``{n}`` (queries wanted); other braces
  are left as they are. The reply is read as one query per line (numbering, bullets, quotes and
  ``<think>`` blocks removed) or as a JSON list of strings.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from embtune.corpus.types import Chunk
from embtune.errors import ConfigError, EmbtuneError
from embtune.pairs.types import Pair
from embtune.utils.atomic import atomic_write_json

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = """You write search queries for a search engine over a document collection.

{context}Passage:
\"\"\"
{text}
\"\"\"

Write {n} search query (or queries) that a user could type and that this passage answers well. \
Vary them: a question, a short keyword query, a statement to verify. Do not copy whole sentences \
from the passage. Output only the queries, one per line, without numbering or quotes."""
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_PREFIX = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.):]|query\s*\d*\s*:|q\d*\s*:)\s*", re.I)


def default_cache_dir() -> Path:
    """The ``llm`` folder of embtune's cache (``embtune.utils.tuning.cache_dir``: ``~/.cache/embtune/llm``
    unless ``$EMBTUNE_CACHE_DIR`` or ``$XDG_CACHE_HOME`` say otherwise)."""
    from embtune.utils.tuning import cache_dir

    return cache_dir() / "llm"


def chat_url(url: str) -> str:
    """The chat-completions address for a server root, a ``/v1`` base, or the full address."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if re.search(r"/v\d+$", url):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def parse_queries(content: str, n: int) -> list[str]:
    """Up to ``n`` queries from a model reply (one per line, or a JSON list of strings)."""
    content = _THINK.sub("", content).strip()
    lines: list[str] = []
    if content.startswith("["):
        try:
            items = json.loads(content)
            if isinstance(items, list):
                lines = [str(x) for x in items]
        except json.JSONDecodeError:
            lines = []
    if not lines:
        lines = content.splitlines()
    out = []
    for line in lines:
        line = _PREFIX.sub("", line).strip().strip("\"'`“”").strip()
        if line and len(line) <= 500 and line not in out:
            out.append(line)
    return out[:n]


class LLMError(EmbtuneError):
    """The LLM endpoint failed for good (after retries, or with a non-retryable status)."""


class LLMPairs:
    """Builder of synthetic (query, chunk) pairs from an LLM (see the module docstring)."""

    def __init__(self, url: str | None = None, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 prompt: str | None = None, concurrency: int = 4, cache_dir: str | os.PathLike | None = None, *,
                 gguf: str | os.PathLike | None = None, n_ctx: int = 4096,
                 queries_per_chunk: int = 1, temperature: float = 0.0, max_tokens: int = 256,
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0,
                 show_progress: bool = True):
        """Configure the endpoint (``url`` + ``model``) or the local model (``gguf``, its context
        ``n_ctx`` in tokens); nothing is sent or loaded until ``build``. ConfigError for bad settings,
        DataFormatError for a missing GGUF file."""
        self.local = None
        if gguf is not None:
            if url is not None or model is not None:
                raise ConfigError("LLMPairs takes either url + model (a server) or gguf (a local model), not both")
            from embtune.pairs.llm_local import LocalGGUF

            self.local = LocalGGUF(gguf, n_ctx=n_ctx)
            url, model = "local:" + self.local.path.name, self.local.model_id
        elif not url or not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"LLM url must start with http:// or https://, got {url!r}")
        if not model:
            raise ConfigError("LLM model name is required (e.g. 'qwen2.5:7b-instruct' for Ollama)")
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        if "{text}" not in prompt:
            raise ConfigError("the LLM prompt template must contain {text} (where the chunk goes)")
        for name, value, low in (("concurrency", concurrency, 1), ("queries_per_chunk", queries_per_chunk, 1),
                                 ("max_tokens", max_tokens, 1), ("max_retries", max_retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"LLMPairs {name} must be an integer >= {low}, got {value!r}")
        self.url, self.model, self.prompt = (url if self.local else chat_url(url)), model, prompt
        self.api_key_env = api_key_env
        self.concurrency, self.queries_per_chunk = concurrency, queries_per_chunk
        self.temperature, self.max_tokens = float(temperature), max_tokens
        self.timeout, self.max_retries, self.backoff = float(timeout), max_retries, float(backoff)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.show_progress = show_progress
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LLMPairs(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def render(self, chunk: Chunk) -> str:
        """The user message for one chunk (the template with its fields filled in)."""
        headings = " > ".join(chunk.headings)
        labelled = (("Title", chunk.title), ("Section", headings))
        context = "".join(f"{label}: {value}\n" for label, value in labelled if value)
        context = context + "\n" if context else ""
        fields = {"{text}": chunk.text, "{title}": chunk.title, "{headings}": headings, "{context}": context,
                  "{n}": str(self.queries_per_chunk)}
        return re.sub(r"\{(?:text|title|headings|context|n)\}", lambda m: fields[m.group()], self.prompt)

    def request_body(self, chunk: Chunk) -> dict[str, Any]:
        """The JSON body sent for ``chunk`` (and hashed for the cache key)."""
        return {"model": self.model, "messages": [{"role": "user", "content": self.render(chunk)}],
                "temperature": self.temperature, "max_tokens": self.max_tokens, "stream": False}

    def _cache_path(self, body: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
        return self.cache_dir / f"{key}.json"

    def _mask(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) or ""
        return text.replace(key, "***") if len(key) >= 4 else text

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` with retries; the parsed JSON reply. LLMError when it fails for good."""
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            retry_after = None
            with self._count_lock:
                self.requests_sent += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                try:
                    return json.loads(raw)
                except json.JSONDecodeError:
                    raise LLMError(f"{self.url} replied with something that is not JSON: "
                                   f"{self._mask(raw[:200].decode('utf-8', 'replace'))!r}") from None
            except urllib.error.HTTPError as exc:
                try:
                    body_bytes = exc.read()[:300]
                except (OSError, AttributeError, http.client.HTTPException):
                    body_bytes = b""
                detail = self._mask(body_bytes.decode("utf-8", "replace").strip())
                last = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
                if exc.code not in RETRY_STATUS:
                    raise LLMError(f"{self.url} refused the request ({last})") from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError,
                    http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(exc).__name__}: {self._mask(str(reason))}"
            if attempt == self.max_retries:
                break
            delay = self.backoff * (2 ** attempt) * (1 + 0.25 * random.random())
            if retry_after is not None:
                try:
                    delay = max(delay, float(retry_after))
                except ValueError:
                    pass
            delay = min(delay, 60.0)
            logger.info("LLM request failed (%s); retry %d/%d in %.1fs", last, attempt + 1, self.max_retries,
                        delay)
            time.sleep(delay)
        raise LLMError(f"{self.url} failed after {self.max_retries + 1} attempts (last: {last})")

    def queries_for(self, chunk: Chunk) -> list[str]:
        """The queries for one chunk: from the cache, else from the endpoint or local model (then cached)."""
        body = self.request_body(chunk)
        path = self._cache_path(body)
        content = None
        if path.is_file():
            try:
                content = json.loads(path.read_text(encoding="utf-8"))["content"]
            except (OSError, ValueError, KeyError, TypeError):
                content = None  # a damaged cache file is asked again and rewritten
        if content is None and self.local is not None:
            with self._count_lock:
                self.requests_sent += 1
            content = self.local.complete(body)
            atomic_write_json(path, {"model": self.model, "content": content, "gguf": self.local.path.name})
        elif content is None:
            reply = self._post(body)
            try:
                content = reply["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise LLMError(f"{self.url} replied without choices[0].message.content: "
                               f"{self._mask(json.dumps(reply)[:200])}") from None
            atomic_write_json(path, {"model": self.model, "content": content})
        return parse_queries(content, self.queries_per_chunk)

    def build(self, chunks: Sequence[Chunk]) -> list[Pair]:
        """One or more synthetic-query pairs per chunk (``builder="llm"``), in chunk order.

        In: chunks. Out: Pairs (query from the LLM, positive the chunk). Chunks whose reply holds no
        usable line give none. Raises LLMError when a request fails for good, or (local model)
        ConfigError / EmbtuneError when llama-cpp-python is missing or the model fails; replies
        received so far stay cached, so a rerun resumes.
        """
        chunks = [c for c in chunks if c.text.strip()]
        results: dict[int, list[str]] = {}
        workers = 1 if self.local is not None else self.concurrency  # one local model generates one at a time
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embtune-llm") as pool:
            futures = {pool.submit(self.queries_for, chunk): i for i, chunk in enumerate(chunks)}
            bar = tqdm(total=len(futures), desc="LLM queries", unit="chunk", disable=not self.show_progress)
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                bar.close()
        pairs = []
        for i, chunk in enumerate(chunks):
            for query in results.get(i, []):
                pairs.append(Pair(query=query, positive=chunk.text, positive_id=chunk.id, doc_id=chunk.doc_id,
                                  builder="llm"))
        return pairs
