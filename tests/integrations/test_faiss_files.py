"""An `EmbtuneFaissIndex` folder is read without pickle and written atomically: a tampered ``index.faiss``
(garbage, or a pickle payload) is refused with DataFormatError naming it and the payload never runs;
a save that runs out of room raises EmbtuneError naming the file and leaves the old folder as it was."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from embtune_faiss import EmbtuneFaissIndex  # noqa: E402

from embtune.errors import DataFormatError  # noqa: E402


class Payload:
    """Unpickling this object creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _saved(folder: Path) -> Path:
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    return EmbtuneFaissIndex.build(x, [f"d{i}" for i in range(50)], "Flat").save(folder)


@pytest.mark.parametrize("content", ["garbage", "pickle"])
def test_tampered_index_file_is_refused(content, tmp_path):
    folder, marker = _saved(tmp_path / "idx"), tmp_path / "ran"
    data = pickle.dumps(Payload(marker)) if content == "pickle" else b"\x00not a faiss index" * 10
    (folder / "index.faiss").write_bytes(data)
    with pytest.raises(DataFormatError, match="FAISS cannot read it") as err:
        EmbtuneFaissIndex.load(folder)
    assert err.value.path == str(folder / "index.faiss") and not marker.exists()


_SAVE_WITH_LIMIT = """
import resource, signal, sys
from pathlib import Path
import numpy as np
from embtune_faiss import EmbtuneFaissIndex
from embtune.errors import EmbtuneError
x = np.random.default_rng(1).normal(size=(400, 64)).astype(np.float32)
index = EmbtuneFaissIndex.build(x, [f"n{i}" for i in range(400)], "Flat")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    index.save(Path(sys.argv[1]))
except EmbtuneError as exc:
    print(exc)
"""


def test_save_out_of_room_keeps_the_old_index(tmp_path):
    folder = _saved(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    done = subprocess.run([sys.executable, "-c", _SAVE_WITH_LIMIT, str(folder)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{folder / 'index.faiss'}: cannot write the index (File too large)"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert json.loads(before["index.json"])["ntotal"] == 50
