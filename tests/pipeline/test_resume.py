"""A from-corpus run killed with SIGKILL during training continues when the same command runs again,
and ends with the metrics of an uninterrupted run; no half-written stage output ever exists."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from fault_helpers import assert_whole
from pipeline_helpers import SUBPROCESS_ENV, TINY_ARGS

from embtune.cli import main

STEPS = 60


def command(corpus: Path, out: Path, model: str) -> list[str]:
    return ["from-corpus", str(corpus), "--out", str(out), "--model", model, *TINY_ARGS, "--max-steps", str(STEPS),
            "--batch-size", "8", "--save-steps", "1", "--quiet"]


def test_sigkill_during_training_then_resume(tmp_path, small_corpus, tiny_model):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    script = Path(sys.executable).with_name("embtune")
    proc = subprocess.Popen([str(script), *command(small_corpus, killed, tiny_model)], env=SUBPROCESS_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while not list((killed / "checkpoints").glob("step-*/state.json")):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            if killed.exists():
                assert_whole(killed)
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = [int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("step-*")]
    assert max(saved) < STEPS and not (killed / "adapter").exists(), "training ended before the kill"
    manifest = json.loads((killed / "manifest.json").read_text())
    assert "train" not in manifest["stages"] and "negatives" in manifest["stages"]
    assert_whole(killed)
    stamps = {k: v["finished_at"] for k, v in manifest["stages"].items()}

    resumed = subprocess.run([str(script), *command(small_corpus, killed, tiny_model)], env=SUBPROCESS_ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_whole(killed)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert all(manifest["stages"][k]["finished_at"] == v for k, v in stamps.items()), "finished stages re-ran"
    assert manifest["stages"]["train"]["info"]["resumed_from"], "training did not resume from a checkpoint"

    # the same command, never interrupted (in-process: same single-threaded CPU kernels)
    result = CliRunner().invoke(main, command(small_corpus, reference, tiny_model))
    assert result.exit_code == 0, result.output
    got = json.loads((killed / "report.json").read_text())
    want = json.loads((reference / "report.json").read_text())
    assert got["before"] == want["before"]
    for key, value in want["after"].items():
        assert abs(got["after"][key] - value) < 1e-6, key
    assert [s for s, _ in got["loss_history"]] == [s for s, _ in want["loss_history"]]
    for (_, a), (_, b) in zip(got["loss_history"], want["loss_history"]):
        assert abs(a - b) < 1e-5
    assert not [p for p in killed.rglob(".*.tmp")], "temporary files left behind"
    assert os.listdir(killed / "checkpoints")
