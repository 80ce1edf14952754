"""The CLI owns its stderr: library notices never surround a user error; ``--debug`` shows them.

The library noise here is real, not simulated: the dev environment installs the ``kernels`` package,
so bitsandbytes (imported by PEFT) logs its hub notices ("Skipping publisher trust check ...") at
import, and pypdf logs "EOF marker not found" for a damaged PDF.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EMBTUNE = [str(Path(sys.executable).parent / "embtune")]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture()
def broken_pdf_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n\x00\x01 not really a pdf \x00\xff")
    return corpus


def test_broken_pdf_error_is_one_line_and_debug_shows_pypdf(broken_pdf_corpus: Path, tmp_path: Path) -> None:
    quiet = _run([*EMBTUNE, "from-corpus", str(broken_pdf_corpus), "--out", str(tmp_path / "o1"), "--quiet"],
                 tmp_path)
    assert quiet.returncode == 2, quiet.stderr
    assert _lines(quiet.stderr) == [f"embtune: error: {broken_pdf_corpus}: no usable text found "
                                    "(every file was empty, skipped or unsupported)"], quiet.stderr

    shown = _run([*EMBTUNE, "from-corpus", str(broken_pdf_corpus), "--out", str(tmp_path / "o2")], tmp_path)
    assert shown.returncode == 2
    lines = _lines(shown.stderr)
    # embtune's own lines only: the header, one skip notice for the file (said once), the error
    assert sum("broken.pdf" in line for line in lines) == 1, shown.stderr
    assert lines[-1].startswith("embtune: error: "), shown.stderr
    assert not any("EOF marker" in line for line in lines), shown.stderr

    debug = _run([*EMBTUNE, "--debug", "from-corpus", str(broken_pdf_corpus), "--out", str(tmp_path / "o3")],
                 tmp_path)
    assert "EOF marker not found" in debug.stderr, debug.stderr  # pypdf's own log line, shown on request


_PROGRAM = """
import logging, warnings
from embtune.cli.output import configure_cli_output
configure_cli_output(debug={debug})
import peft  # imports bitsandbytes, which asks the `kernels` package for a hub kernel (offline: a notice)
logging.getLogger("somelib.sub").warning("a library notice")
warnings.warn("a library warning", FutureWarning)
logging.getLogger("embtune.pipeline").warning("our own warning")
"""


@pytest.mark.parametrize("debug", [False, True])
def test_library_logs_and_warnings_hidden_unless_debug(tmp_path: Path, debug: bool) -> None:
    pytest.importorskip("bitsandbytes")
    kernels = pytest.importorskip("kernels")
    assert hasattr(kernels, "get_kernel"), "the hub `kernels` package (dev extra) must be installed"
    proc = _run([sys.executable, "-c", _PROGRAM.format(debug=debug)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    if debug:
        # bitsandbytes' real notice ("Skipping publisher trust check", from the `kernels` package) is
        # printed only on CPUs where bitsandbytes asks the hub for a kernel (seen on Intel, not on an
        # AMD EPYC without AVX512); the stand-in library notice and warning below are always there
        assert "a library notice" in proc.stderr and "a library warning" in proc.stderr
        assert "our own warning" in proc.stderr
    else:
        assert _lines(proc.stderr) == ["our own warning"], proc.stderr


def test_embtune_warnings_are_one_line(tmp_path: Path) -> None:
    program = ("import warnings\nfrom embtune.cli.output import configure_cli_output\n"
               "configure_cli_output()\n"
               "from embtune.corpus.ingest import read_documents\n"
               f"read_documents({str(tmp_path / 'c')!r}, show_progress=False)\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("some text here")
    (tmp_path / "c" / "b.bin").write_bytes(b"\x00\x01")
    proc = _run([sys.executable, "-c", program], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stderr)
    assert lines and all(line.startswith("embtune: warning: ") for line in lines), proc.stderr


_IMPORTS_AFTER_BAD_INPUT = """
import sys
from embtune.cli import main
sys.argv = ["embtune", *{args!r}]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "bitsandbytes", "triton", "onnx", "onnxruntime", "peft", "transformers")
               if m in sys.modules)
print(code, ",".join(heavy))
"""


@pytest.mark.parametrize("args", [
    ["from-corpus", "{tmp}/missing", "--out", "{tmp}/o", "--loss", "cosent", "--lora-compute", "exact"],
    ["train", "--data", "{tmp}/missing.jsonl", "--out", "{tmp}/o", "--loss", "triplet"],
    ["eval", "{tmp}/missing-model", "--data", "{tmp}/missing"],
])
def test_bad_input_imports_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    """A command that fails on its inputs answers before torch, PEFT, bitsandbytes, Triton or ONNX load."""
    filled = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = _run([sys.executable, "-c", _IMPORTS_AFTER_BAD_INPUT.format(args=filled)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    code, heavy = proc.stdout.split()[0], proc.stdout.strip().partition(" ")[2]
    assert code == "2", proc.stdout + proc.stderr
    assert heavy == "", f"imported {heavy} before failing on bad input"
