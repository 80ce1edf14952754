"""A Hub token is never printed or logged by ``push_to_hub`` / ``push_to_hub_merged``.

The Hub cannot exist offline, so ``HfApi`` is replaced by a stand-in that behaves like a careless
server client: it logs the request headers with the token (at DEBUG and WARNING) and fails with a
real ``huggingface_hub`` HTTP error whose message echoes the token. Everything a user could see is
captured (all log records at DEBUG, stdout, stderr, the formatted traceback of the error raised) and
must hold the token nowhere, while still saying what went wrong.
"""
from __future__ import annotations

import logging
import traceback

import pytest
import torch
from tiny_models import build_tiny_hf

from embtune import FastSentenceTransformer
from embtune.errors import EmbtuneError

TOKEN = "hf_SECRETsecretSECRETsecret0123456789"


def _careless_api(calls: list[str]):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    log = logging.getLogger("careless_client")

    class RepoUrl(str):
        repo_id = "me/tuned"

    class CarelessApi:
        def __init__(self, token=None, **_):
            self.token = token

        def create_repo(self, repo_id, **_):
            calls.append("create_repo")
            log.debug("POST /api/repos/create headers={'authorization': 'Bearer %s'}", self.token)
            return RepoUrl(f"https://hub.example/{repo_id}")

        def upload_folder(self, repo_id, folder_path, **_):
            calls.append("upload_folder")
            log.warning("retrying upload with token %s", self.token)
            try:
                raise RuntimeError(f"connection reset (token={self.token})")
            except RuntimeError:
                log.exception("upload attempt failed")
            url = f"https://huggingface.co/api/{repo_id}/upload?token={self.token}"
            raise HfHubHTTPError(f"401 Client Error: Unauthorized for url: {url}",
                                 response=httpx2.Response(401, request=httpx2.Request("POST", url)))

    return CarelessApi


@pytest.fixture(scope="module")
def adapter_model(tmp_path_factory):
    folder = build_tiny_hf(tmp_path_factory.mktemp("hub") / "bert", "bert", hidden_size=32)
    model = FastSentenceTransformer.from_pretrained(folder, dtype=torch.float32)
    return FastSentenceTransformer.get_peft_model(model, r=4)


@pytest.mark.parametrize("method", ["push_to_hub_merged", "push_to_hub"])
def test_token_is_never_printed_or_logged(method, adapter_model, monkeypatch, caplog, capsys):
    import huggingface_hub
    import sentence_transformers.base.model as st_model

    calls: list[str] = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _careless_api(calls))  # the network client only
    monkeypatch.setattr(st_model, "HfApi", _careless_api(calls))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EmbtuneError) as err:
        getattr(adapter_model, method)("me/tuned", token=TOKEN)
    assert calls == ["create_repo", "upload_folder"]
    message = str(err.value)
    assert "401 Client Error" in message and "[token redacted]" in message and "\n" not in message
    shown = "".join(traceback.format_exception(err.value))
    out = capsys.readouterr()
    logged = "\n".join(caplog.text.splitlines() + [r.getMessage() for r in caplog.records])
    assert "Bearer [token redacted]" in logged and "connection reset (token=[token redacted])" in logged
    for where, text in {"error": message, "traceback": shown, "stdout": out.out, "stderr": out.err,
                        "logs": logged}.items():
        assert TOKEN not in text, where
    assert logging.getLogRecordFactory() is logging.LogRecord  # the redaction ends with the call


def test_token_from_the_environment_is_hidden_too(adapter_model, monkeypatch, caplog):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub, "HfApi", _careless_api([]))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EmbtuneError) as err:
        adapter_model.push_to_hub_merged("me/tuned")  # no token given: huggingface_hub finds HF_TOKEN
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text


def test_other_errors_pass_through_unchanged(adapter_model, monkeypatch):
    import huggingface_hub

    class BrokenApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **_):
            raise KeyError("a programming error, no secret in it")

    monkeypatch.setattr(huggingface_hub, "HfApi", BrokenApi)
    with pytest.raises(KeyError):
        adapter_model.push_to_hub_merged("me/tuned", token=TOKEN)
