"""Run config files: a run described in one TOML, YAML or JSON file, and the resolved one saved in DIR.

``read_config_file`` reads ``--config FILE`` into a flat ``{key: value}`` mapping (keys are the
command's flag names without the dashes, e.g. ``lora_r`` for ``--lora-r``); a syntax error is a
DataFormatError naming the file and line. ``write_run_config`` writes the options a command ran
with (flags over the file over the defaults) to ``DIR/run_config.toml`` atomically, in a form that
``--config`` reads back: ``embtune train --config DIR/run_config.toml`` repeats the run.

TOML is read with the standard library's ``tomllib`` (Python 3.11+; on 3.10 the ``tomli`` package
is used when installed), YAML with PyYAML (``yaml.safe_load``), JSON with ``json``.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError, DataFormatError
from embtune.utils.atomic import atomic_write_text

RUN_CONFIG = "run_config.toml"
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
_LINE = re.compile(r"line (\d+)")


def _toml_module():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading a TOML config needs Python 3.11+ or `pip install tomli`; or write the "
                              "config as YAML or JSON") from None
    return tomllib


def _parse(path: Path, text: str) -> Any:
    """Parse ``text`` by the suffix of ``path``; DataFormatError naming the file (and line) on a syntax error."""
    suffix = path.suffix.lower()
    if suffix == ".toml":
        tomllib = _toml_module()
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = _LINE.search(str(exc))
            raise DataFormatError(f"invalid TOML: {str(exc).split(' (at ')[0]}", path=path,
                                  line=int(line.group(1)) if line else None) from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("reading a YAML config needs PyYAML (pip install pyyaml); or write the config as "
                              "TOML or JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise DataFormatError(f"invalid YAML: {problem}", path=path,
                                  line=mark.line + 1 if mark is not None else None) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None


def read_config_file(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """Read a run config: ``(flat mapping of key -> value, the file's text)``.

    In: a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file. Raises DataFormatError naming the file
    (and line) when it is missing, unreadable, malformed, not a mapping at the top, or holds a table
    where a value belongs; ConfigError for another suffix.
    """
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ConfigError(f"--config {path}: use a .toml, .yaml/.yml or .json file")
    if not path.is_file():
        raise DataFormatError("config file does not exist" if not path.exists() else "config path is not a file",
                              path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataFormatError("config file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise DataFormatError(f"cannot read the config file ({exc.strerror})", path=path) from None
    data = _parse(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataFormatError(f"a config file holds `key = value` options at the top level, not a "
                              f"{type(data).__name__}", path=path)
    for key, value in data.items():
        if isinstance(value, dict):
            raise DataFormatError(f"{key!r} is a table; options are plain `key = value` lines at the top level",
                                  path=path, line=key_line(text, str(key)))
    return {str(k): v for k, v in data.items()}, text


def key_line(text: str, key: str) -> int | None:
    """1-based line of ``text`` where option ``key`` is set (``key = ...`` or a ``[key]`` table in TOML,
    ``key: ...`` in YAML, ``"key": ...`` in JSON; ``-`` and ``_`` in the key match each other), or None."""
    name = "".join("[-_]" if ch in "-_" else re.escape(ch) for ch in key)
    pattern = re.compile(r"^\s*(\[\s*" + name + r"\s*\]|[\"']?" + name + r"[\"']?\s*[=:])")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _toml_value(value: Any) -> str:
    """One TOML value for a str, bool, int, finite float, path, or a list/tuple of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to a run config")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (str, os.PathLike)):
        return json.dumps(os.fspath(value), ensure_ascii=False)  # JSON string escapes are valid TOML
    raise TypeError(f"cannot write a {type(value).__name__} to a run config")


def dump_run_config(values: dict[str, Any], command: str) -> str:
    """TOML text of a resolved run config: ``command`` first, then every key in order; keys whose
    value is None (not set: the library default applies) are written as comments."""
    lines = [f"# The options this `embtune {command}` run used (flags, then --config, then defaults).",
             f"# Repeat it with: embtune {command} --config {RUN_CONFIG}",
             f"command = {_toml_value(command)}"]
    for key, value in values.items():
        lines.append(f"# {key} = (not set)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_run_config(folder: str | os.PathLike, values: dict[str, Any], command: str) -> Path:
    """Write ``dump_run_config(values, command)`` to ``folder/run_config.toml`` atomically (creating
    the folder); returns the path. Raises EmbtuneError naming the path when it cannot be written."""
    return atomic_write_text(Path(folder) / RUN_CONFIG, dump_run_config(values, command))
