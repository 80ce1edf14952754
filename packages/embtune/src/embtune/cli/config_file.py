"""``--config FILE`` for train / from-corpus / pairs, and the resolved options a command ran with.

``--config`` is an eager option: before any other option is parsed, ``apply_config`` reads the file
(`embtune.pipeline.run_config.read_config_file`), checks every key against the command's flags
(`embtune.cli.flags`) and every value with that flag's own click type, and hands the values to
click as the context's ``default_map``. So a flag given on the command line wins over the file,
the file wins over the defaults, and required inputs (``--out``, ``--data``, CORPUS) may come from
either. A mistake in the file is one ConfigError naming the file, the line and the key; a bad value
is reported only when no flag on the command line replaces it (``click.core.ParameterSource``).

``resolved_options`` gives the effective value of every flag (paths made absolute), as written to
``DIR/run_config.toml``.
"""
from __future__ import annotations

import difflib
import logging
import os
from typing import Any

import click
from click.core import ParameterSource

from embtune.cli.flags import Flag, flags_of
from embtune.errors import ConfigError
from embtune.pipeline.run_config import key_line, read_config_file

logger = logging.getLogger("embtune")
_META = "embtune.config_keys"


def _hint(key: str, flags: list[Flag]) -> str:
    names = [f.key for f in flags] + [f.param for f in flags]
    close = difflib.get_close_matches(key, names, n=1)
    if not close:
        return ""
    match = next((f.key for f in flags if close[0] in (f.key, f.param)), close[0])
    return f" (did you mean {match!r}?)"


def load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The click callback of ``--config`` (``flags.command_options``): ``apply_config(ctx, value)``."""
    return apply_config(ctx, value)


def apply_config(ctx: click.Context, path: str | None) -> str | None:
    """Load config file ``path`` into ``ctx.default_map`` for the command of ``ctx``; returns ``path``.

    Raises ConfigError naming the file and line for a key that is not an option of the command (or
    is ``config``) or a ``command`` key naming another command; DataFormatError for a missing or
    malformed file (see ``read_config_file``). A value the flag's type refuses is kept out of the
    defaults and reported by ``check_config_values`` unless the command line gives that flag.
    """
    if path is None:
        return None
    command = ctx.command.name
    flags = [f for f in flags_of(command) if f.key != "config"]
    by_key = {f.key: f for f in flags}
    params = {p.name: p for p in ctx.command.params}
    data, text = read_config_file(path)
    values: dict[str, Any] = {}
    bad: dict[str, ConfigError] = {}
    for raw_key, raw in data.items():
        key = raw_key.replace("-", "_")
        line = key_line(text, raw_key)
        if key == "command":
            if raw != command:
                raise ConfigError(f"describes an `embtune {raw}` run (command = {raw!r}), not `embtune {command}`",
                                  path=path, line=line)
            continue
        flag = by_key.get(key)
        if flag is None:
            raise ConfigError(f"unknown key {raw_key!r}: not an option of `embtune {command}`{_hint(key, flags)}",
                              path=path, line=line)
        if raw is None:
            continue
        try:
            values[flag.param] = params[flag.param].type_cast_value(ctx, raw)
        except click.BadParameter as exc:  # raised later unless the command line gives this flag
            bad[flag.param] = ConfigError(f"{raw_key}: {' '.join(str(exc.message).split())}", path=path, line=line)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta[_META] = (str(path), sorted(values), bad)
    return path


def check_config_values(ctx: click.Context) -> None:
    """Raise the ConfigError of the first bad value in the ``--config`` file whose flag was not given on
    the command line (a flag given there replaces the file's value, so its mistake does not matter)."""
    config = ctx.meta.get(_META)
    for param, error in (config[2] if config else {}).items():
        if ctx.get_parameter_source(param) is not ParameterSource.COMMANDLINE:
            raise error


def resolved_options(ctx: click.Context) -> dict[str, Any]:
    """The effective value of every saved flag of ``ctx``'s command, keyed like a config file.

    Paths (click.Path values) are made absolute, so the result read back with ``--config`` from
    any folder repeats the run. Logs (verbose) each key of the config file a flag overrode.
    """
    config = ctx.meta.get(_META)
    out: dict[str, Any] = {}
    for flag in flags_of(ctx.command.name):
        if config and flag.param in config[1] and ctx.get_parameter_source(flag.param) is ParameterSource.COMMANDLINE:
            logger.info("%s on the command line overrides %s in %s", flag.name, flag.key, config[0])
        if not flag.saved:
            continue
        value = ctx.params.get(flag.param)
        if isinstance(flag.type, click.Path) and value is not None:
            value = os.path.abspath(value)
        out[flag.key] = value
    return out


def settings_kwargs(ctx: click.Context) -> dict[str, Any]:
    """The parsed options of ``ctx`` by settings field (``--quiet`` becomes ``show_progress``; ``--config``,
    ``--data`` and ``--export`` are left to the command), after ``check_config_values``."""
    check_config_values(ctx)
    options = {k: v for k, v in ctx.params.items() if k not in ("config", "data", "export", "quiet")}
    if "quiet" in ctx.params:
        options["show_progress"] = not ctx.params["quiet"]
    return options

