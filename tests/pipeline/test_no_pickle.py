"""A run folder's caches are never unpickled: the chunk embedding matrix (work/*.npy) is read with
``allow_pickle=False``, so a tampered file holding a pickle payload is refused with one line naming
it (exit 2) and the payload never runs; deleting the file makes the next run recompute it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pipeline_helpers import TINY_ARGS

from embtune.cli import main
from embtune.errors import DataFormatError
from embtune.pipeline.stages import EMBEDDINGS, load_embeddings


class Payload:
    """Unpickling this object creates the file ``marker``: proof that the payload ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _tamper(path: Path, marker: Path) -> None:
    """Replace the .npy at ``path`` by an object array that holds a pickle payload."""
    array = np.empty(1, dtype=object)
    array[0] = Payload(marker)
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=True)
    assert b"touch" in path.read_bytes()  # a pickle of Path.touch is inside


def test_payload_is_a_real_pickle(tmp_path):
    path, marker = tmp_path / "x.npy", tmp_path / "ran"
    _tamper(path, marker)
    np.load(path, allow_pickle=True)  # what an unsafe reader would do
    assert marker.exists()


def test_tampered_embeddings_refused(tmp_path):
    path, marker = tmp_path / "emb.npy", tmp_path / "ran"
    _tamper(path, marker)
    with pytest.raises(DataFormatError, match="not a chunk embedding matrix") as err:
        load_embeddings(path)
    assert err.value.path == str(path) and not marker.exists()
    path.write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(DataFormatError):
        load_embeddings(path)
    np.save(path, np.arange(4))
    with pytest.raises(DataFormatError, match="2-D float"):
        load_embeddings(path)


def test_run_with_a_tampered_cache_stops_with_one_line(tmp_path, small_corpus, tiny_model):
    run, marker = tmp_path / "run", tmp_path / "ran"
    args = ["pairs", str(small_corpus), "--out", str(run), "--model", tiny_model, *TINY_ARGS, "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    _tamper(run / EMBEDDINGS, marker)
    tampered = CliRunner().invoke(main, args)
    assert tampered.exit_code == 2, tampered.output
    lines = [line for line in tampered.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in tampered.output, tampered.output
    assert lines[0].startswith(f"embtune: error: {run / EMBEDDINGS}: not a chunk embedding matrix"), lines[0]
    assert not marker.exists()
    (run / EMBEDDINGS).unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert np.load(run / EMBEDDINGS, allow_pickle=False).dtype == np.float32
    assert json.loads((run / "manifest.json").read_text())["stages"]["negatives"]
