"""LLMPairs against a real HTTP server on 127.0.0.1 that speaks /v1/chat/completions.

The server runs in a thread on an ephemeral port, counts requests and the largest number in flight
at once, records the Authorization headers, and can fail requests (503, 500, 401, slow replies) to
exercise retries. Nothing is patched: the builder talks to it over real sockets.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from embtune.corpus.types import Chunk
from embtune.errors import ConfigError, EmbtuneError
from embtune.pairs.llm import LLMError, LLMPairs, chat_url, parse_queries

KEY_ENV = "EMBTUNE_TEST_LLM_KEY"
SECRET = "sk-test-very-secret-4242"


@dataclass
class ServerState:
    fail: list[int] = field(default_factory=list)
    """HTTP status to answer for the 1st, 2nd, ... request (then 200)."""
    slow_first: float = 0.0
    """Seconds the first request waits before answering (to trigger client timeouts)."""
    delay: float = 0.05
    always: int | None = None
    count: int = 0
    active: int = 0
    max_active: int = 0
    auth: list[str | None] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        state: ServerState = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with state.lock:
            state.count += 1
            number = state.count
            state.active += 1
            state.max_active = max(state.max_active, state.active)
            state.auth.append(self.headers.get("Authorization"))
            state.bodies.append(body)
        try:
            time.sleep(state.delay)
            if number == 1 and state.slow_first:
                time.sleep(state.slow_first)
            status = state.always or (state.fail[number - 1] if number <= len(state.fail) else 200)
            if self.path != "/v1/chat/completions":
                status = 404
            if status != 200:
                # a careless server that echoes the credentials it got
                self._send(status, {"error": f"failed; you sent {self.headers.get('Authorization')}"})
                return
            prompt = body["messages"][0]["content"]
            passage = prompt.split('"""\n', 1)[1].split('\n"""', 1)[0] if '"""' in prompt else prompt
            words = passage.split()
            content = (f"<think>ignore me</think>1. What is said about {' '.join(words[:3])}?\n"
                       f"2. \"{words[-1]} keyword\"")
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
        finally:
            with state.lock:
                state.active -= 1

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def api_key():
    old = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = SECRET
    yield SECRET
    if old is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = old


def url_of(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


CHUNKS = [Chunk(f"c{i}", f"d{i // 2}", f"Passage number {i} talks about topic {i} in detail.",
                f"Doc {i // 2}", ["Section"], f"f{i}.md") for i in range(8)]


def builder(httpd, tmp_path, **kwargs) -> LLMPairs:
    kwargs.setdefault("concurrency", 4)
    kwargs.setdefault("queries_per_chunk", 2)
    return LLMPairs(url_of(httpd), "test-model", api_key_env=KEY_ENV, cache_dir=tmp_path / "cache",
                    backoff=0.01, show_progress=False, **kwargs)


def test_retries_concurrency_and_cache(server, tmp_path, api_key) -> None:
    state = server.state
    state.fail = [503]
    pairs = builder(server, tmp_path).build(CHUNKS)
    assert [(p.positive_id, p.builder) for p in pairs] == [(c.id, "llm") for c in CHUNKS for _ in range(2)]
    assert pairs[0].query == "What is said about Passage number 0?" and pairs[1].query == "detail. keyword"
    assert pairs[0].positive == CHUNKS[0].text and pairs[0].doc_id == "d0"
    assert state.count == len(CHUNKS) + 1  # one 503, retried
    assert state.max_active >= 2  # requests really overlapped
    assert set(state.auth) == {f"Bearer {SECRET}"}
    body = state.bodies[-1]
    assert body["model"] == "test-model" and "Title: Doc" in body["messages"][0]["content"]
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(CHUNKS)

    again = builder(server, tmp_path).build(CHUNKS)  # a rerun: everything from the cache
    assert state.count == len(CHUNKS) + 1
    assert [p.to_dict() for p in again] == [p.to_dict() for p in pairs]
    assert not any(SECRET in f.read_text() for f in (tmp_path / "cache").glob("*.json"))

    builder(server, tmp_path, prompt="Other template: {text}").build(CHUNKS[:2])  # a new prompt asks again
    assert state.count == len(CHUNKS) + 3


def test_a_damaged_cache_file_is_asked_again(server, tmp_path) -> None:
    llm = builder(server, tmp_path)
    llm.build(CHUNKS[:1])
    [cached] = list((tmp_path / "cache").glob("*.json"))
    cached.write_text("{not json")
    assert len(llm.build(CHUNKS[:1])) == 2 and server.state.count == 2
    assert json.loads(cached.read_text())["content"]


def test_timeouts_are_retried(server, tmp_path) -> None:
    server.state.slow_first = 1.5
    pairs = builder(server, tmp_path, timeout=0.5, concurrency=1).build(CHUNKS[:2])
    assert len(pairs) == 4 and server.state.count == 3


def test_gives_up_after_max_retries(server, tmp_path, api_key) -> None:
    server.state.always = 500
    with pytest.raises(LLMError, match=r"failed after 3 attempts .*HTTP 500") as info:
        builder(server, tmp_path, max_retries=2, concurrency=1).build(CHUNKS[:1])
    assert server.state.count == 3
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_key_never_in_errors_or_logs(server, tmp_path, api_key, caplog) -> None:
    server.state.fail = [503, 401]
    caplog.set_level(logging.DEBUG)
    llm = builder(server, tmp_path, concurrency=1)
    with pytest.raises(LLMError, match="HTTP 401") as info:
        llm.build(CHUNKS[:1])
    assert server.state.count == 2  # 503 retried, 401 not
    assert isinstance(info.value, EmbtuneError)
    assert SECRET not in str(info.value) and SECRET not in repr(llm)
    assert caplog.records and not any(SECRET in r.getMessage() for r in caplog.records)


def test_unreachable_server(tmp_path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = LLMPairs(f"http://127.0.0.1:{port}/v1", "m", cache_dir=tmp_path, max_retries=1, backoff=0.01,
                   show_progress=False)
    with pytest.raises(LLMError, match="failed after 2 attempts"):
        llm.build(CHUNKS[:1])
    assert llm.requests_sent == 2


def test_prompt_template(tmp_path) -> None:
    llm = LLMPairs("http://localhost:11434", "m", prompt='Title {title} / {headings}: {text} {"json": {n}}',
                   queries_per_chunk=3, cache_dir=tmp_path)
    assert llm.render(CHUNKS[0]) == f'Title Doc 0 / Section: {CHUNKS[0].text} {{"json": 3}}'
    with pytest.raises(ConfigError, match="must contain {text}"):
        LLMPairs("http://localhost:11434", "m", prompt="no placeholder")
    with pytest.raises(ConfigError):
        LLMPairs("localhost:11434", "m")


def test_chat_url_and_reply_parsing() -> None:
    assert chat_url("http://localhost:11434") == "http://localhost:11434/v1/chat/completions"
    assert chat_url("https://api.example.com/v1/") == "https://api.example.com/v1/chat/completions"
    assert chat_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1/chat/completions"
    assert parse_queries("<think>hmm\nlong</think>\n1. first?\n2) second\n- third\n\n", 5) == \
        ["first?", "second", "third"]
    assert parse_queries('["a b", "c d", "a b"]', 5) == ["a b", "c d"]
    assert parse_queries("Query 1: one\nQuery 2: two\nthree", 2) == ["one", "two"]
