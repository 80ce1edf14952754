"""Checkpoints for exact resume: written atomically, no pickle, refused when they belong to another run.

A checkpoint is the folder ``output_dir/checkpoints/step-N`` (built under a temporary name and
renamed into place, so a folder with that name is always complete) holding:

- ``trainable.safetensors``: the trainable parameters only (a LoRA adapter's A/B matrices, or every
  weight of a fully trained model), keyed by parameter name;
- ``optimizer.safetensors``: AdamW's per-parameter tensors, keyed ``"<param name>/<key>"``;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states and NumPy's key array (of every
  process of a multi-process run: process r > 0 under keys prefixed ``rank<r>/``);
- ``state.json``: everything else: progress (global step, epoch, micro-batch within the epoch, loss
  and eval history, the open logging window), optimizer param groups and scalars, the schedule,
  Python's and the rest of NumPy's RNG state, the config, and the run's fingerprint.

The fingerprint (model name and class, trainable parameter names/shapes/dtypes, loss, the settings
that shape the trajectory, a digest of the data) is compared on resume; any difference raises
TrainingError listing what differs, because continuing someone else's optimizer state silently
trains a different model than the one asked for.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from embtune.errors import TrainingError
from embtune.utils.atomic import atomic_dir, atomic_write_json

FORMAT = "embtune-checkpoint/1"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_PARTIAL = re.compile(r"^\.step-\d+\.")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class Progress:
    """Where a run stands; everything here goes into ``state.json``."""

    global_step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Current epoch (0-based), which is also the number of epochs completed."""
    batch_in_epoch: int = 0
    """Micro-batches of the current epoch already consumed."""
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    eval_history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    window_loss_sum: float = 0.0
    """Sum of step losses since the last ``loss_history`` entry (kept so resume logs the same values)."""
    window_steps: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        """Rebuild from ``asdict`` output that went through JSON (lists back to tuples)."""
        data = dict(data)
        data["loss_history"] = [(int(s), float(v)) for s, v in data["loss_history"]]
        data["eval_history"] = [(int(s), dict(m)) for s, m in data["eval_history"]]
        return cls(**data)


def checkpoints_dir(output_dir: Path) -> Path:
    """``output_dir/checkpoints``."""
    return Path(output_dir) / CHECKPOINTS


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir`` as ``(step, folder)``, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def remove_partial_checkpoints(output_dir: Path) -> None:
    """Delete temporary folders left by a checkpoint write that was killed midway."""
    root = checkpoints_dir(output_dir)
    if root.is_dir():
        for child in root.iterdir():
            if _PARTIAL.match(child.name) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def prune_checkpoints(output_dir: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (None keeps all); returns the deleted folders.

    Each folder is first renamed to a partial name (``.step-N.deleted.tmp``) and then removed, so a
    kill midway leaves no half-deleted ``step-N`` but a leftover ``remove_partial_checkpoints`` clears.
    """
    found = list_checkpoints(output_dir)
    if keep is None or len(found) <= keep:
        return []
    doomed = [path for _, path in found[:-keep]]
    for path in doomed:
        trash = path.with_name(f".{path.name}.deleted.tmp")
        shutil.rmtree(trash, ignore_errors=True)
        path.rename(trash)
        shutil.rmtree(trash)
    return doomed


# ---------------------------------------------------------------------------------------------------
# fingerprint


def _stable_repr(obj: Any) -> str:
    """A JSON stand-in for ``obj`` that is the same in every process (no memory addresses)."""
    name = getattr(obj, "__qualname__", None)
    if name is not None and hasattr(obj, "__module__"):
        return f"{obj.__module__}.{name}"
    return _ADDRESS.sub("", repr(obj))


def jsonable(obj: Any) -> Any:
    """``obj`` as it comes back from a JSON round trip: tuples become lists, other non-JSON values a
    stable repr (functions and classes by dotted name), so fingerprints compare across processes."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_stable_repr))


def fingerprint_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    now = jsonable(now)
    diffs = []
    for key in sorted(set(saved) | set(now)):
        before, after = saved.get(key), now.get(key)
        if before == after:
            continue
        if key == "trainable" and isinstance(before, dict) and isinstance(after, dict):
            missing = sorted(set(before) - set(after))
            extra = sorted(set(after) - set(before))
            changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
            detail = [f"{len(before)} trainable parameters in the checkpoint, {len(after)} now"]
            if missing:
                detail.append(f"{missing[0]!r} is not trainable now")
            if extra:
                detail.append(f"{extra[0]!r} was not trainable in the checkpoint")
            if changed:
                name = changed[0]
                detail.append(f"{name!r} is {after[name]} now but {before[name]} in the checkpoint")
            diffs.append("trainable parameters differ (" + "; ".join(detail) + ")")
        elif key == "data":
            diffs.append("the training data differs (rows, columns or texts changed)")
        else:
            diffs.append(f"{key}: checkpoint {before!r}, now {after!r}")
    return diffs


# ---------------------------------------------------------------------------------------------------
# optimizer and RNG state without pickle


def _optimizer_names(optimizer: torch.optim.Optimizer, names: Mapping[int, str]) -> list[str]:
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(optimizer: torch.optim.Optimizer, names: Mapping[int, str]) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors (by param name) and JSON (groups, scalars).

    ``names`` maps ``id(parameter)`` to its name. Returns ``(tensors, json_part)``.
    """
    order = _optimizer_names(optimizer, names)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{order[index]}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(order[index], {})[key] = value
    groups = []
    for group in sd["param_groups"]:
        group = dict(group)
        group["params"] = [order[i] for i in group["params"]]
        groups.append(group)
    return tensors, {"param_groups": jsonable(groups), "scalars": jsonable(scalars)}


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: Mapping[int, str],
                         tensors: Mapping[str, torch.Tensor], json_part: Mapping[str, Any]) -> None:
    """Inverse of ``optimizer_state``: load the saved state into ``optimizer`` (matched by name)."""
    index = {name: i for i, name in enumerate(_optimizer_names(optimizer, names))}
    current = optimizer.state_dict()["param_groups"]
    groups = []
    for saved, now in zip(json_part["param_groups"], current):
        group = {key: (tuple(value) if isinstance(now.get(key), tuple) else value)
                 for key, value in saved.items()}
        group["params"] = [index[name] for name in saved["params"]]
        groups.append(group)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, _, entry = key.rpartition("/")
        state.setdefault(index[name], {})[entry] = value
    for name, entries in json_part["scalars"].items():
        state.setdefault(index[name], {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, NumPy and torch (CPU and, when initialised, CUDA) generator states: ``(tensors, json)``."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    return tensors, {"python": [version, list(internal), gauss], "numpy": [name, pos, has_gauss, cached]}


def set_rng_state(tensors: Mapping[str, torch.Tensor], json_part: Mapping[str, Any]) -> None:
    """Inverse of ``rng_state``. CUDA states are restored only when the same GPUs are present."""
    version, internal, gauss = json_part["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = json_part["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[f"cuda_{i}"] for i in range(len(tensors)) if f"cuda_{i}" in tensors]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(output_dir: Path, params: Mapping[str, torch.nn.Parameter],
                    optimizer: torch.optim.Optimizer, progress: Progress, extra: Mapping[str, Any],
                    rng_states: Sequence[tuple[dict, dict]] | None = None) -> Path:
    """Write ``output_dir/checkpoints/step-<global_step>`` atomically; returns the folder.

    In: the trainable parameters by name, the optimizer, the progress and ``extra`` JSON entries
    (fingerprint, schedule, config); ``rng_states``: ``rng_state()`` of every process of a
    multi-process run in rank order (None: this process's only). The folder appears only once every
    file is written.
    """
    names = {id(p): name for name, p in params.items()}
    opt_tensors, opt_json = optimizer_state(optimizer, names)
    rng_states = list(rng_states) if rng_states is not None else [rng_state()]
    rng_tensors, rng_json = dict(rng_states[0][0]), rng_states[0][1]
    for rank, (tensors, _) in enumerate(rng_states[1:], start=1):
        rng_tensors.update({f"rank{rank}/{key}": value for key, value in tensors.items()})
    state = {"format": FORMAT, "progress": jsonable(asdict(progress)), "optimizer": opt_json,
             "rng": rng_json, **jsonable(dict(extra))}
    if len(rng_states) > 1:
        state["rng_other_processes"] = jsonable([json_part for _, json_part in rng_states[1:]])
    target = checkpoints_dir(output_dir) / f"step-{progress.global_step}"
    with atomic_dir(target) as tmp:
        save_file({name: p.detach().cpu().contiguous() for name, p in params.items()},
                  str(tmp / "trainable.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "state.json", state)
    return target


def read_state(folder: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint; TrainingError when it is unreadable or of another format."""
    try:
        state = json.loads((Path(folder) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read checkpoint state ({exc})", path=folder) from None
    if state.get("format") != FORMAT:
        raise TrainingError(f"not an {FORMAT} checkpoint (format {state.get('format')!r})", path=folder)
    return state


def check_fingerprint(folder: Path, state: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> None:
    """Raise TrainingError naming every difference between the checkpoint's run and this one."""
    diffs = fingerprint_differences(state.get("fingerprint", {}), fingerprint)
    if diffs:
        raise TrainingError(
            "cannot resume: this checkpoint was written by a different run: " + "; ".join(diffs)
            + ". Use the same model, data, loss and settings, or set resume=False with a new output_dir.",
            path=folder)


def rng_processes(state: Mapping[str, Any]) -> int:
    """Number of processes whose RNG state the checkpoint with ``state`` (``read_state``) holds."""
    return 1 + len(state.get("rng_other_processes", []))


def load_checkpoint(folder: Path, params: Mapping[str, torch.nn.Parameter],
                    optimizer: torch.optim.Optimizer, state: Mapping[str, Any], rank: int = 0) -> Progress:
    """Restore parameters, optimizer and RNG states from ``folder``; returns the saved progress.

    ``state`` is ``read_state(folder)`` (checked with ``check_fingerprint`` first); ``rank`` picks
    which process's RNG state to restore. When the checkpoint holds none for ``rank`` (it was
    written by fewer processes, see ``rng_processes``) the RNG is left alone.
    """
    folder = Path(folder)
    try:
        weights = load_file(str(folder / "trainable.safetensors"))
        opt_tensors = load_file(str(folder / "optimizer.safetensors"))
        rng_tensors = load_file(str(folder / "rng.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise TrainingError(f"cannot read checkpoint tensors ({exc})", path=folder) from None
    if set(weights) != set(params):
        raise TrainingError("checkpoint parameters do not match the trainable parameters", path=folder)
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    load_optimizer_state(optimizer, {id(p): n for n, p in params.items()}, opt_tensors, state["optimizer"])
    if rank == 0:
        set_rng_state({k: v for k, v in rng_tensors.items() if not k.startswith("rank")}, state["rng"])
    elif rank < rng_processes(state):
        prefix = f"rank{rank}/"
        set_rng_state({k[len(prefix):]: v for k, v in rng_tensors.items() if k.startswith(prefix)},
                      state["rng_other_processes"][rank - 1])
    return Progress.from_json(state["progress"])


def write_trainer_state(output_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write the run summary ``output_dir/trainer_state.json`` atomically; returns its path."""
    return atomic_write_json(Path(output_dir) / "trainer_state.json", jsonable(dict(summary)))
