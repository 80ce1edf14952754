"""What the ``embtune`` command prints on stderr: embtune's own lines, and nothing from libraries.

Without ``--debug`` the command owns its stderr: a user error is exactly one line, and the
notices that libraries print while loading (bitsandbytes / ``kernels`` hub notices, transformers
FutureWarnings and advisory logs, pypdf's complaints about a damaged PDF, their progress bars) never
reach the terminal. Only records of embtune's own loggers (``embtune``, ``embtune.*``,
``embtune_*``) and embtune's own warnings are shown, one line each. ``--debug`` leaves every
library's output as it is and shows tracebacks. This module sets it up once per command; it imports
no library (the quiet settings of libraries not yet imported go through their environment
variables, which they read at import).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

#: Environment settings that libraries read when they are imported: no progress bars, no advisory
#: logs. Set only where the user has not set them already.
QUIET_LIBRARY_ENV = {
    "TRANSFORMERS_VERBOSITY": "critical",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_VERBOSITY": "critical",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "DATASETS_VERBOSITY": "critical",
    "BITSANDBYTES_NOWELCOME": "1",
}

#: Libraries that give their root logger a handler of its own (so the root filter does not see
#: their records): their handlers are removed and their records routed through the root logger.
_SELF_HANDLED_LOGGERS = ("transformers", "huggingface_hub", "datasets", "sentence_transformers", "accelerate")


def is_embtune_record(name: str) -> bool:
    """True when a logger or module ``name`` belongs to embtune (``embtune``, ``embtune.x``,
    ``embtune_kernels.x``, ``embtune_faiss``, ...)."""
    return name == "embtune" or name.startswith(("embtune.", "embtune_"))


class EmbtuneOnlyFilter(logging.Filter):
    """A logging filter that passes embtune's own records and drops every other library's."""

    def filter(self, record: logging.LogRecord) -> bool:
        """In: a log record. Out: True when it comes from an embtune logger."""
        return is_embtune_record(record.name)


def _show_embtune_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the CLI: embtune's warnings as one ``embtune: warning:`` line."""
    text = " ".join(str(message).split())
    print(f"embtune: warning: {text}", file=file or sys.stderr, flush=True)


def configure_cli_output(debug: bool = False, verbose: bool = False) -> None:
    """Set up logging and warnings for one ``embtune`` command.

    In: ``debug`` (show everything: library logs and warnings as they are, tracebacks) and
    ``verbose`` (embtune's INFO records too, e.g. the dtype and pooling chosen). Out: nothing;
    without ``debug`` only embtune's own records and warnings reach stderr, one line each.
    """
    level = logging.INFO if verbose or debug else logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_embtune_cli", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._embtune_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    if debug:
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(handler)
        return
    handler.addFilter(EmbtuneOnlyFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for key, value in QUIET_LIBRARY_ENV.items():
        os.environ.setdefault(key, value)
    _quiet_imported_libraries()
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", module=r"embtune")
    warnings.showwarning = _show_embtune_warning


def _quiet_imported_libraries() -> None:
    """Route the records of libraries already imported in this process (an embedding program or a
    test calling the CLI in-process) through the root logger, and turn their progress bars off."""
    for name in _SELF_HANDLED_LOGGERS:
        if name not in sys.modules:
            continue
        lib_logger = logging.getLogger(name)
        for handler in list(lib_logger.handlers):
            lib_logger.removeHandler(handler)
        lib_logger.propagate = True
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        transformers_logging.disable_progress_bar()
    hub_utils = sys.modules.get("huggingface_hub.utils")
    if hub_utils is not None and hasattr(hub_utils, "disable_progress_bars"):
        hub_utils.disable_progress_bars()
