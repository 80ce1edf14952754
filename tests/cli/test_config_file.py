"""``--config`` files (embtune.cli.config_file): flags given on the command line override them, and a
mistake is one line naming the file, line and key."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from cli_helpers import Spy, ok, one_line_error, saved, scored_pairs


def test_config_file_with_flags_over_it(tmp_path, tiny_model, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {scored_pairs(tmp_path / 's.csv')}\nout: {tmp_path / 'run'}\nmodel: {tiny_model}\n"
                      "loss: cosent\nlora-r: 4\nmax_steps: 1\nbatch_size: 4\nmax_seq_length: 32\ndtype: fp32\n"
                      "lr: 1e-3\n")
    spy = Spy(monkeypatch)
    ok("train", "--config", config, "--loss", "cosine_mse", "--dtype", "bf16")
    from embtune.losses import CosineMSELoss

    assert type(spy.loss) is CosineMSELoss and spy.base_dtype == torch.bfloat16
    config = saved(tmp_path / "run")
    assert (config["loss"], config["dtype"], config["lora_r"], config["max_steps"], config["lr"]) == \
        ("cosine_mse", "bf16", 4, 1, 1e-3)
    assert json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_config_file_mistakes_are_one_line_naming_file_line_and_key(tmp_path):
    def config(name: str, text: str) -> Path:
        (tmp_path / name).write_text(text)
        return tmp_path / name

    bad_key = config("a.toml", "lora_r = 4\nlearning_rate = 0.1\n")
    assert f"{bad_key}:2: unknown key 'learning_rate'" in one_line_error("train", "--config", bad_key)
    assert "did you mean 'lr'" in one_line_error("train", "--config", bad_key)
    bad_value = config("b.toml", "data = 'x.jsonl'\nout = 'o'\nbatch_size = 1\n")
    assert f"{bad_value}:3: batch_size:" in one_line_error("train", "--config", bad_value)
    # the command line replaces the bad value, so its mistake no longer matters
    line = one_line_error("train", "--config", bad_value, "--batch-size", "4", "--qlora", "--full")
    assert "--qlora and --full" in line
    syntax = config("c.toml", "lora_r = = 4\n")
    assert f"{syntax}:1: invalid TOML" in one_line_error("train", "--config", syntax)
    other = config("d.json", '{"command": "from-corpus", "chunk_tokens": 64}')
    assert "not `embtune train`" in one_line_error("train", "--config", other)
    table = config("e.toml", "[train]\nlora_r = 4\n")
    assert f"{table}:1: 'train' is a table" in one_line_error("train", "--config", table)
    assert "does not exist" in one_line_error("train", "--config", tmp_path / "none.toml")
    assert "Missing option '--out'" in one_line_error("train", "--data", "x.jsonl")
    assert "--instruction and --query-prompt" in one_line_error(
        "train", "--data", "x", "--out", "o", "--instruction", "find", "--query-prompt", "q: ")
