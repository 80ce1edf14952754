"""``run_pipeline``: the from-corpus run, stage by stage, resumable, one code path for every command.

    ingest+chunk -> embed chunks -> pairs (+filter) -> held-out split -> hard negatives
    -> bm25 eval -> baseline eval -> train -> validation + select (checkpoint, adapter strength)
    -> merge -> after eval -> export -> report

(Negatives are mined after the split, so no chunk of a held-out document becomes a training
negative; see ``embtune.pipeline.stages``.)

Each stage maps input files to one output in DIR (written under a temporary name, then renamed),
and is recorded in DIR/manifest.json with the hash of its inputs and settings (see
``embtune.pipeline.manifest``). Running the same command again skips every finished stage whose
inputs are unchanged; a run killed at any point (even kill -9) continues from the last finished
stage, and training from its newest checkpoint. ``force=True`` removes DIR's stage outputs first.
``embtune pairs`` runs the same function with ``until="pairs"``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from embtune.errors import ConfigError, EmbtuneError
from embtune.pipeline import lexical, stages, stages_model
from embtune.pipeline.manifest import MANIFEST, Manifest, hash_path, model_fingerprint, stage_key
from embtune.pipeline.run_config import RUN_CONFIG, write_run_config
from embtune.pipeline.settings import RunSettings
from embtune.pipeline.console import stage_line
from embtune.utils.atomic import remove_partial_writes

STAGE_OUTPUTS = ("chunks.jsonl", "pairs.jsonl", "eval.jsonl", "work", "checkpoints", "trainer_state.json",
                 "adapter", "model", "selection.json", "merged", "reranker", "reranker-run", "exports", "report.json",
                 "report.md", "report.png", RUN_CONFIG, MANIFEST)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def prepare_run_dir(settings: RunSettings, command: str) -> Manifest:
    """Create DIR (or clear its stage outputs with ``force``) and open its manifest.

    Refuses (ConfigError) a DIR inside the corpus folder, and a non-empty DIR that is not an embtune
    run folder unless ``force`` (which removes only embtune's own outputs). EmbtuneError naming DIR
    when it cannot be created or written.
    """
    out = settings.out
    if settings.corpus.is_dir() and _inside(out, settings.corpus):
        raise ConfigError(f"--out {out} is inside the corpus folder {settings.corpus}; its files would be read "
                          "as documents. Choose a folder outside the corpus")
    if out.exists() and not out.is_dir():
        raise EmbtuneError("--out exists and is not a folder", path=out)
    if out.is_dir():
        check_lock(out)
        if settings.force:
            for name in STAGE_OUTPUTS:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif any(out.iterdir()) and not (out / MANIFEST).exists():
            raise ConfigError(f"--out {out} is not empty and is not an embtune run folder; choose an empty or new "
                              "folder, or pass --force to write into it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbtuneError(f"cannot create the run folder ({exc.strerror})", path=out) from None
    manifest = Manifest.open(out, command)
    manifest.save()  # also proves DIR is writable before any work starts
    return manifest


LOCK = ".embtune.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``DIR/.embtune.lock`` (our pid) for the run: a second live run on the same folder is refused
    with ConfigError; a lock left by a killed run (its pid no longer exists) is taken over. On entry,
    temporary files and folders left by a killed atomic write (``.name.*.tmp``) are removed."""
    check_lock(run_dir)
    lock = run_dir / LOCK
    try:
        lock.write_text(str(os.getpid()))
    except OSError as exc:
        lock.unlink(missing_ok=True)
        raise EmbtuneError(f"cannot write the run lock ({exc.strerror})", path=lock) from None
    for folder in (run_dir, run_dir / "work"):
        remove_partial_writes(folder)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def check_lock(run_dir: Path) -> None:
    """ConfigError when a live process other than this one holds ``run_dir``'s lock."""
    lock = run_dir / LOCK
    if not lock.exists():
        return
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and pid != os.getpid() and _alive(pid):
        raise ConfigError(f"another embtune run (pid {pid}) is using {run_dir}; wait for it to finish, or "
                          f"delete {lock} if that process is not embtune")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Pipeline:
    """One from-corpus run: settings, run folder, manifest, and the lazily loaded base model."""

    def __init__(self, settings: RunSettings, manifest: Manifest, console):
        """Hold the run's state; ``console`` is a rich Console for stage lines."""
        self.settings, self.manifest, self.console = settings, manifest, console
        self.dir = settings.out
        self._hashes: dict[Path, str] = {}
        self._model = None
        self._merged = None
        self._model_id: str | None = None
        self.ran: list[str] = []

    # -- helpers -------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """A path inside the run folder."""
        return self.dir / name

    def digest(self, path: Path) -> str:
        """Content hash of a file or folder (cached for this process; outputs are hashed after writing)."""
        path = Path(path)
        if path not in self._hashes:
            self._hashes[path] = hash_path(path)
        return self._hashes[path]

    def model_id(self) -> str:
        """Identity of the base model for stage keys: ``manifest.model_fingerprint`` of a local folder
        (content hashes; size and mtime for files over 16 MiB), else the hub name; followed by the
        load options that change its embeddings (dtype, prompts, instruction) when any is set."""
        if self._model_id is None:
            from embtune.models.names import resolve_model

            source = resolve_model(self.settings.model)
            self._model_id = model_fingerprint(source) if Path(source).exists() else source
            options = {k: getattr(self.settings, k)
                       for k in ("dtype", "query_prompt", "document_prompt", "instruction")}
            options = {k: v for k, v in options.items() if v not in (None, "auto")}
            if options:
                self._model_id += " " + json.dumps(options, sort_keys=True)
        return self._model_id

    def base_model(self):
        """The base model for inference (chunking tokenizer, filtering, mining, baseline), loaded once
        with the settings' dtype, prompts and instruction."""
        if self._model is None:
            from embtune.models.inference import load_inference_model

            self._model = load_inference_model(self.settings.model, **self.settings.load_options())
        return self._model

    def release_model(self) -> None:
        """Drop the inference copy of the base model (before training loads its own)."""
        self._model = None

    def merged_model(self):
        """The trained, merged model (DIR/merged) for inference, loaded once."""
        if self._merged is None:
            from embtune.models.inference import load_inference_model

            self._merged = load_inference_model(self.path("merged"), **self.settings.load_options(base=False))
        return self._merged

    def stage(self, name: str, inputs: dict[str, Path | str], settings: dict[str, Any], outputs: list[str],
              run: Callable[[], dict[str, Any]], before_run: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Run stage ``name`` unless the manifest has it finished with the same inputs and settings.

        ``inputs`` maps names to paths (content-hashed) or strings (used as they are); ``run`` writes
        the ``outputs`` (paths relative to DIR) atomically and returns an info dict. Returns the info
        of this run or of the recorded one.
        """
        hashed = {k: v if isinstance(v, str) else self.digest(v) for k, v in inputs.items()}
        key = stage_key(name, settings, hashed)
        if self.manifest.is_done(name, key):
            entry = self.manifest.entry(name)
            if self.settings.show_progress:
                stage_line(self.console, name, "skipped")
            return entry.get("info", {})
        if before_run is not None:
            before_run(key)
        self.manifest.forget(name)
        started = time.perf_counter()
        info = run() or {}
        seconds = time.perf_counter() - started
        for out in outputs:
            self._hashes.pop(self.path(out), None)
        self.manifest.finish(name, key, outputs, seconds, info)
        self.ran.append(name)
        if self.settings.show_progress:
            stage_line(self.console, name, "done", seconds, stages.describe(name, info))
        return info


def run_pipeline(settings: RunSettings, until: str | None = None, console=None, command: str = "from-corpus",
                 run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or continue) a from-corpus run; returns the report dict (also written to DIR/report.json).

    In: checked-or-unchecked RunSettings; ``until="pairs"`` stops after the data stages (``embtune
    pairs``), returning ``{"counts": ..., "files": ...}``; ``run_config``: the command's resolved
    options, written to DIR/run_config.toml once DIR is prepared (the CLI passes them). Raises
    EmbtuneError subclasses for every user mistake (naming the file and line where there is one).
    """
    from embtune.pipeline.exports import check_exports
    from embtune.pipeline.console import make_console

    if until not in (None, "pairs"):
        raise ValueError(f"until must be None or 'pairs', got {until!r}")
    settings.check(until=until)
    check_exports(settings.export)
    if settings.negatives and importlib.util.find_spec("faiss") is None:
        raise ConfigError("hard-negative mining needs FAISS: pip install 'embtune[faiss]', or pass --negatives 0")
    console = console or make_console()
    manifest = prepare_run_dir(settings, command)
    with run_lock(settings.out):
        if run_config is not None:
            write_run_config(settings.out, run_config, command)
        if settings.show_progress:
            console.print(f"[bold]embtune {command}[/] {settings.corpus} -> {settings.out}  "
                          f"[dim](model: {settings.model or 'all-MiniLM-L6-v2, embedded'}; "
                          f"pairs: {settings.builder})[/]",
                          highlight=False)
        pipe = Pipeline(settings, manifest, console)
        started = time.perf_counter()
        info = stages.data_stages(pipe)
        if until == "pairs":
            return stages.pairs_summary(pipe, info)
        info["bm25"] = lexical.run_bm25(pipe)  # the keyword baseline of the report
        info.update(stages_model.model_stages(pipe))
        return stages_model.finish_report(pipe, info, time.perf_counter() - started)
