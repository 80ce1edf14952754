"""A full disk or an unwritable run folder: `embtune from-corpus` prints one line naming the path, exits
with code 2, shows no traceback, and leaves no half-written stage output and no temporary file; once
there is room again, the same command finishes from where it stopped.

Three ways to run out of room, all real (nothing in embtune is patched):

* a tmpfs of a few MB (`unshare -rm`: a private user + mount namespace, so no root is needed where
  the kernel allows unprivileged namespaces; skipped elsewhere): a true ENOSPC while the merged
  model (8 MB) is written, then the tmpfs is enlarged and the run continues;
* RLIMIT_FSIZE on the subprocess (with SIGXFSZ ignored, a write past the limit fails with EFBIG
  "File too large"), available to any user: the Python writers (chunks.jsonl) and, under
  ``-m slow``, safetensors' Rust writer (a checkpoint);
* a run folder whose parent is read-only (skipped as root, whom permissions do not stop; the
  --out-under-a-file case is in test_bad_input.py).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fault_helpers import assert_whole, leftovers
from pipeline_helpers import SUBPROCESS_ENV, TINY_ARGS

from embtune.cli import main

HERE = Path(__file__).resolve().parent
EMBTUNE = str(Path(sys.executable).with_name("embtune"))


def command(corpus: Path, out: Path, model: str) -> list[str]:
    return ["from-corpus", str(corpus), "--out", str(out), "--model", model, *TINY_ARGS, "--max-steps", "6",
            "--batch-size", "8", "--save-steps", "3", "--quiet"]


def assert_one_line_error(returncode: int, stderr: str, path_prefix: Path, reason: str) -> str:
    """The CLI's failure: exit 2, a single ``embtune: error: PATH...: ...`` line naming a path under
    ``path_prefix`` and ``reason``, no traceback. Returns the path the message names."""
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"embtune: error: {path_prefix}"), lines[0]
    assert reason in lines[0], lines[0]
    return lines[0][len("embtune: error: "):].split(": ")[0]


def assert_nothing_partial(run: Path) -> None:
    """No temporary file, every output whole, and every stage the manifest records has its outputs."""
    assert leftovers(run) == []
    assert_whole(run)
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    for name, entry in stages.items():
        assert all((run / out).exists() for out in entry["outputs"]), name


# -- a real ENOSPC on a tiny tmpfs ---------------------------------------------------------------


def test_disk_full_on_tmpfs_then_rerun(tmp_path, small_corpus, tiny_model):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1)")
    mountpoint, copies = tmp_path / "mnt", tmp_path / "copies"
    mountpoint.mkdir()
    copies.mkdir()
    run = mountpoint / "run"
    done = subprocess.run([unshare, "-rm", sys.executable, str(HERE / "tmpfs_driver.py"), str(mountpoint), "3m",
                           str(copies), "--", EMBTUNE, *command(small_corpus, run, tiny_model)],
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not (copies / "results.json").exists():
        pytest.skip(f"cannot mount a tmpfs in a user namespace here ({done.stderr.strip()[-200:]})")
    first, second = json.loads((copies / "results.json").read_text())

    named = assert_one_line_error(first["returncode"], first["stderr"], run, "No space left on device")
    assert Path(named).name in ("merged", "adapter", "model.safetensors"), named
    full = copies / "first" / "run"
    assert_nothing_partial(full)
    stages = json.loads((full / "manifest.json").read_text())["stages"]
    assert "train" in stages and "merge" not in stages and not (full / "merged").exists()

    assert second["returncode"] == 0, second["stderr"]
    done_run = copies / "second" / "run"
    assert_nothing_partial(done_run)
    assert_whole(done_run, load_models=True)
    after = json.loads((done_run / "manifest.json").read_text())["stages"]
    assert {k: v["finished_at"] for k, v in stages.items()} == {k: after[k]["finished_at"] for k in stages}
    assert json.loads((done_run / "report.json").read_text())["after"]


# -- EFBIG from RLIMIT_FSIZE: any user --------------------------------------------------------------


def _run_with_file_limit(cmd: list[str], limit: int) -> subprocess.CompletedProcess:
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_files)


def test_file_size_limit_while_writing_chunks(tmp_path, small_corpus, tiny_model):
    run = tmp_path / "run"
    done = _run_with_file_limit([EMBTUNE, *command(small_corpus, run, tiny_model)], 20_000)
    named = assert_one_line_error(done.returncode, done.stderr, run, "File too large")
    assert named == str(run / "chunks.jsonl")
    assert_nothing_partial(run)
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json", "run_config.toml"]


@pytest.mark.slow
def test_file_size_limit_while_writing_a_checkpoint_then_rerun(tmp_path, small_corpus, tiny_model):
    run = tmp_path / "run"
    cmd = [EMBTUNE, *command(small_corpus, run, tiny_model)]
    done = _run_with_file_limit(cmd, 150_000)  # chunks (60 kB) fit, optimizer.safetensors (240 kB) not
    named = assert_one_line_error(done.returncode, done.stderr, run / "checkpoints", "File too large")
    assert Path(named).name == "step-3", named
    assert_nothing_partial(run)
    assert not list((run / "checkpoints").iterdir())
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert "baseline" in stages and "train" not in stages
    again = subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert_nothing_partial(run)
    after = json.loads((run / "manifest.json").read_text())["stages"]
    assert {k: v["finished_at"] for k, v in stages.items()} == {k: after[k]["finished_at"] for k in stages}


# -- permissions ---------------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.parametrize("where, reason", [("new run folder", "Permission denied"),
                                           ("existing run folder", "not writable")])
def test_read_only_folder(where, reason, tmp_path, small_corpus, tiny_model):
    parent = tmp_path / "ro"
    run = parent / "run"
    if where == "existing run folder":
        run.mkdir(parents=True)
        (run / "manifest.json").write_text('{"version": 1, "command": "from-corpus", "stages": {}}\n')
        locked = run
    else:
        parent.mkdir()
        locked = parent
    locked.chmod(0o500)
    try:
        result = CliRunner().invoke(main, command(small_corpus, run, tiny_model))
    finally:
        locked.chmod(0o700)
    assert_one_line_error(result.exit_code, result.stderr, locked, reason)
    assert leftovers(parent) == []
