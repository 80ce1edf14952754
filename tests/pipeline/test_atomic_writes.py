"""The atomic writers under failure: a write past the disk's end (a file-size limit) from Python and from
the Rust writers of safetensors and tokenizers, an exception midway, a target that is a symbolic link,
an interrupted checkpoint deletion. The target is either the old content or the new, never half,
no temporary name is left behind, and errors name the final path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import leftovers

from embtune.errors import DataFormatError, EmbtuneError
from embtune.training.checkpoint import latest_checkpoint, list_checkpoints, remove_partial_checkpoints
from embtune.utils.atomic import (atomic_dir, atomic_file, atomic_write_text, remove_partial_writes,
                                  write_failure)

# Runs in a subprocess whose file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes every write past
# 1000 bytes fail with EFBIG, reported as OSError by Python and as "... (os error 27)" by the Rust
# writers of safetensors and tokenizers. (Not /dev/full: safetensors replaces the file it saves to.)
_FULL_DISK_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from embtune.errors import EmbtuneError
from embtune.utils.atomic import atomic_dir, atomic_write_text

vocab = {f"w{i}": i for i in range(500)}
vocab["[UNK]"] = 500
writers = {
    "safetensors": lambda tmp: save_file({"w": np.zeros(4096, dtype=np.float32)}, str(tmp / "m.safetensors")),
    "tokenizers": lambda tmp: Tokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(tmp / "tokenizer.json")),
    "python": lambda tmp: (tmp / "big.txt").write_text("x" * 5000),
}
root, out = Path(sys.argv[1]), {}
for name, write in writers.items():
    (root / name).mkdir()
    (root / name / "old.txt").write_text("old")
    try:
        with atomic_dir(root / name) as tmp:
            (tmp / "small.json").write_text("{}")
            write(tmp)
        out[name] = "no error"
    except EmbtuneError as exc:
        out[name] = str(exc)
try:
    atomic_write_text(root / "file.txt", "x" * 5000)
    out["file"] = "no error"
except EmbtuneError as exc:
    out["file"] = str(exc)
print(json.dumps(out))
"""


def test_disk_full_inside_atomic_writes(tmp_path):
    done = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout)
    for name in ("safetensors", "tokenizers", "python"):
        assert errors[name] == f"{tmp_path / name}: cannot write folder (File too large)", errors
        assert sorted(os.listdir(tmp_path / name)) == ["old.txt"]
    assert errors["file"] == f"{tmp_path / 'file.txt'}: cannot write file (File too large)"
    assert not (tmp_path / "file.txt").exists()
    assert leftovers(tmp_path) == []


def _old_folder(path: Path) -> Path:
    path.mkdir()
    (path / "weights.txt").write_text("old")
    return path


def test_failure_reasons():
    assert write_failure(OSError(28, "No space left on device")) == "No space left on device"
    assert write_failure(RuntimeError("I/O error: File too large (os error 27)")) == os.strerror(27)
    assert write_failure(ValueError("shape mismatch")) is None
    assert write_failure(EmbtuneError("cannot write file (os error 28)")) is None
    assert write_failure(KeyboardInterrupt()) is None


def test_exception_midway_keeps_the_old_file_and_folder(tmp_path):
    path = tmp_path / "pairs.jsonl"
    atomic_write_text(path, "old\n")
    with pytest.raises(ValueError, match="boom"):
        with atomic_file(path, "w") as fh:
            fh.write("new, half")
            raise ValueError("boom")
    assert path.read_text() == "old\n"
    folder = _old_folder(tmp_path / "merged")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(folder) as tmp:
            (tmp / "weights.txt").write_text("new")
            raise KeyboardInterrupt
    assert (folder / "weights.txt").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_error_inside_names_the_final_path(tmp_path):
    target = tmp_path / "exports"
    with pytest.raises(DataFormatError) as err:
        with atomic_dir(target) as tmp:
            raise DataFormatError("bad line", path=tmp / "onnx" / "x.json", line=3)
    assert str(err.value) == f"{target / 'onnx' / 'x.json'}:3: bad line"
    assert leftovers(tmp_path) == [] and not target.exists()


def test_symlinked_target_is_replaced_not_written_through(tmp_path):
    elsewhere = _old_folder(tmp_path / "elsewhere")
    link = tmp_path / "merged"
    link.symlink_to(elsewhere, target_is_directory=True)
    with atomic_dir(link) as tmp:
        (tmp / "weights.txt").write_text("new")
    assert not link.is_symlink() and (link / "weights.txt").read_text() == "new"
    assert sorted(os.listdir(elsewhere)) == ["weights.txt"] and (elsewhere / "weights.txt").read_text() == "old"
    file_link = tmp_path / "report.json"
    file_link.symlink_to(elsewhere / "weights.txt")
    atomic_write_text(file_link, "{}\n")
    assert not file_link.is_symlink() and (elsewhere / "weights.txt").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}\n")
        with atomic_dir(tmp_path / "merged") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "merged").stat().st_mode & 0o777 == 0o755


def test_interrupted_checkpoint_writes_and_deletions_are_cleared(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (4, 5):
        (root / f"step-{step}").mkdir(parents=True)
        (root / f"step-{step}" / "state.json").write_text("{}")
    (root / ".step-6.abc123.tmp").mkdir()          # a save killed midway
    (root / ".step-3.deleted.tmp").mkdir()         # a prune killed midway
    (root / ".step-3.deleted.tmp" / "trainable.safetensors").write_text("x")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    remove_partial_checkpoints(tmp_path)
    assert sorted(os.listdir(root)) == ["step-4", "step-5"]
    assert latest_checkpoint(tmp_path) == root / "step-5"


def test_partial_writes_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".merged.k3j2.tmp").mkdir()
    (tmp_path / ".merged.k3j2.tmp" / "model.safetensors").write_text("half")
    (tmp_path / ".adapter.old-123.tmp").mkdir()
    (tmp_path / ".report.json.x8a.tmp").write_text("{")
    (tmp_path / ".hidden-but-not-ours").write_text("keep")
    (tmp_path / "merged").mkdir()
    removed = remove_partial_writes(tmp_path, ("merged", "adapter"))
    assert [p.name for p in removed] == [".adapter.old-123.tmp", ".merged.k3j2.tmp"]
    assert sorted(p.name for p in remove_partial_writes(tmp_path)) == [".report.json.x8a.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".hidden-but-not-ours", "merged"]
