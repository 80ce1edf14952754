"""Hub uploads that never show the access token: not in an error message, not in a log line.

``hidden_token(token)`` wraps the Hub calls of ``push_to_hub`` / ``push_to_hub_merged`` and
``push_folder`` (which uploads an adapter or merged folder as it is, for ``embtune push``). While it is
active, every log record created anywhere (ours, huggingface_hub's, sentence-transformers') has the
token replaced by ``[token redacted]`` in its message and in its exception text; when the block
fails, a Hub or network error, or any error whose text holds the token, is raised as a one-line
EmbtuneError with the token redacted and without the original exception attached (its traceback
could repeat it). Other errors propagate unchanged. The token is the one passed, or, when none is
passed, the one huggingface_hub would use (``HF_TOKEN`` or the saved login).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from embtune.errors import EmbtuneError

REDACTED = "[token redacted]"
_NETWORK_MODULES = {"huggingface_hub", "requests", "httpx", "httpx2", "urllib3", "httpcore"}
_MIN_SECRET = 8  # shorter strings are not treated as secrets (they would redact ordinary words)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``[token redacted]``."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _secrets(token: object) -> list[str]:
    if not isinstance(token, str):
        try:
            from huggingface_hub import get_token

            token = get_token()
        except Exception:  # noqa: BLE001 - no saved token is as good as none
            token = None
    return [token] if isinstance(token, str) and len(token) >= _MIN_SECRET else []


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(
        cls.__module__.split(".")[0] in _NETWORK_MODULES for cls in type(exc).__mro__)


@contextlib.contextmanager
def hidden_token(token: object, action: str = "upload to the Hugging Face Hub") -> Iterator[None]:
    """Run the block with ``token`` kept out of log records and error messages (see the module doc).

    In: the token given to the Hub call (None: the one huggingface_hub finds), and what the block
    does, for the error message ("cannot {action}: ..."). Raises EmbtuneError for Hub/network
    failures and for any failure whose message contains the token.
    """
    secrets = _secrets(token)
    if not secrets:
        yield
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        if any(s in message for s in secrets):
            record.msg, record.args = redact(message, secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not (_is_network_error(exc) or any(s in text for s in secrets)):
            raise
        raise EmbtuneError(f"cannot {action}: {type(exc).__name__}: {redact(text, secrets)}") from None
    finally:
        logging.setLogRecordFactory(previous)


#: Files never uploaded by ``push_folder``: unfinished atomic writes, run locks, checkpoints.
UPLOAD_IGNORE = [".*.tmp", "**/.*.tmp", ".embtune.lock", "checkpoints/**"]


def folder_kind(folder: str | os.PathLike) -> str:
    """What a local folder holds: ``"adapter"`` (adapter_config.json) or ``"model"`` (a full ST or HF model).

    Raises ModelLoadError naming the folder when it does not exist or holds no model, with a hint
    for an embtune run folder (push its ``merged/`` or ``adapter/``).
    """
    from embtune.errors import ModelLoadError
    from embtune.models.loading import inspect_source

    path = Path(folder)
    if not path.is_dir():
        raise ModelLoadError("folder does not exist" if not path.exists() else "not a folder", path=path)
    if (path / "manifest.json").is_file() and not (path / "config.json").is_file() \
            and not (path / "adapter_config.json").is_file():
        raise ModelLoadError("is an embtune run folder, not a model; push its merged/ or adapter/ folder", path=path)
    source = inspect_source(path)
    return "adapter" if source.is_adapter else "model"


def push_folder(folder: str | os.PathLike, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload embtune model") -> str:
    """Upload an adapter or model folder as it is to the Hub repo ``repo_id`` (created if missing).

    In: the folder (see ``folder_kind``), ``"org/name"``, an access token (None: the one
    huggingface_hub finds), whether a new repo is private. Temporary files, locks and checkpoints
    (``UPLOAD_IGNORE``) are left out. Out: the repo URL. Raises ConfigError for a malformed repo id,
    ModelLoadError for a folder without a model, and EmbtuneError (token redacted, see
    ``hidden_token``) when the Hub refuses or cannot be reached.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from embtune.errors import ConfigError

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"--repo-id {repo_id!r} is not a Hub repo id (ORG/NAME): "
                          f"{' '.join(str(exc).split())}") from None
    folder_kind(folder)
    with hidden_token(token):
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), commit_message=commit_message,
                          ignore_patterns=UPLOAD_IGNORE)
    return str(url)
