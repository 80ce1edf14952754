"""`embtune export`: writes and reports, and bad requests are one line with exit code 2."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from embtune.cli import main


def test_cli_exports_and_reports(tiny_merged, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", "gguf", str(tiny_merged("qwen3")), "--out",
                                  str(tmp_path / "q.gguf"), "--quantization", "q8_0"])
    assert result.exit_code == 0, result.output
    assert "gguf export written to" in result.output and (tmp_path / "q.gguf").is_file()
    result = runner.invoke(main, ["export", "tei", str(tiny_merged("bert")), "--out", str(tmp_path / "tei")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "tei" / "sentence_bert_config.json").read_text())["max_seq_length"] > 0


@pytest.mark.parametrize("args,message", [
    (["gguf", "{mpnet}", "--out", "{tmp}/o"], "no MPNet"),
    (["tei", "{bert}", "--out", "{tmp}/o", "--quantization", "q8_0"], "gguf only"),
    (["tei", "{bert}", "--out", "{tmp}/file/sub"], "cannot create folder"),
    (["onnx", "{tmp}/nothing", "--out", "{tmp}/o"], "model folder not found"),
])
def test_cli_errors_are_one_line_and_exit_2(tiny_merged, tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    subs = {"mpnet": str(tiny_merged("mpnet")), "bert": str(tiny_merged("bert")), "tmp": str(tmp_path)}
    result = CliRunner().invoke(main, ["export", *[a.format(**subs) for a in args]])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("embtune: error:")]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "o").exists()
